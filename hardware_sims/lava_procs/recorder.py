"""A recorder that streams one neuron group's spikes and state to memory-mapped ``.npy`` files.

Lava's ``Monitor`` and ``Var.get`` send an array to the runtime one element per message
(``PyLoihiProcessModel._get_var`` in lava-nc 0.10.0): reading 10 steps of a 301,056-neuron
population back took 338 s here. This recorder receives the same data through Lava's ordinary
channels — spikes on an ``InPort``, ``v`` and ``u`` through ``RefPort`` s read in the management
phase after each step, as ``Monitor`` does — and writes row ``time_step − 1`` of one file per
kind, which the worker opens after the run. One process per group records every kind, because
each Lava process costs a little on every step.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

STATE_KINDS = ("v", "u")


class GroupRecorder(AbstractProcess):
    """Records ``kinds`` (``spikes``, ``v``, ``u``) of one neuron group for ``num_steps`` steps.

    ``paths[kind]`` is the ``.npy`` file written (shape ``(num_steps, size)``, ``dtypes[kind]``).
    """

    def __init__(
        self,
        *,
        spikes: OutPort,
        states: dict[str, Var],
        paths: dict[str, str],
        dtypes: dict[str, str],
        num_steps: int,
    ) -> None:
        size = int(np.prod(spikes.shape))
        super().__init__(
            size=size, paths=paths, dtypes=dtypes, num_steps=num_steps, kinds=sorted(paths)
        )
        self.a_in = InPort(shape=(size,))
        self.v_ref = RefPort(shape=(size,))
        self.u_ref = RefPort(shape=(size,))
        if "spikes" in paths:
            spikes.connect(self.a_in)
        for kind in STATE_KINDS:
            if kind in paths:
                getattr(self, f"{kind}_ref").connect_var(states[kind])


class _GroupRecorderModel(PyLoihiProcessModel):
    a_in = None
    v_ref = None
    u_ref = None

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.files = None

    def _rows(self) -> dict[str, np.memmap]:
        if self.files is None:
            p = self.proc_params
            self.files = {
                kind: np.lib.format.open_memmap(
                    p["paths"][kind],
                    mode="w+",
                    dtype=np.dtype(p["dtypes"][kind]),
                    shape=(p["num_steps"], p["size"]),
                )
                for kind in p["kinds"]
            }
        return self.files

    def run_spk(self) -> None:
        if "spikes" in self.proc_params["kinds"]:
            self._rows()["spikes"][self.time_step - 1] = self.a_in.recv()

    def post_guard(self) -> bool:
        return any(kind in self.proc_params["kinds"] for kind in STATE_KINDS)

    def run_post_mgmt(self) -> None:
        rows = self._rows()
        for kind in STATE_KINDS:
            if kind in rows:
                rows[kind][self.time_step - 1] = getattr(self, f"{kind}_ref").read()


@implements(proc=GroupRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGroupRecorderFloat(_GroupRecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, float)
    u_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, float)


@implements(proc=GroupRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGroupRecorderFixed(_GroupRecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    v_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32, precision=24)
    u_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32, precision=24)

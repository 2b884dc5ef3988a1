"""Lava-side worker: ``python -m hardware_sims.worker REQUEST_DIR``.

Runs in the Lava environment (Python 3.10, numpy<2, no torch). ``REQUEST_DIR/request.json``
names a NIR file and an ``.npz`` of inputs, the number of steps, what to record (``spikes``, ``v``,
``u``), ``dt`` (``null``: the graph's metadata), the precision (``floating_pt`` or ``fixed_pt``)
and the ``mode``:

* ``raw``: inputs ``{input_node: (steps, *shape)}``, one run of exactly ``steps`` Lava steps,
  records ``(steps, *node_shape)`` in Lava's time base (:func:`lava_backend.simulate`);
* ``images``: inputs ``{input_node: (images, steps, *shape)}``, images run back to back, records
  ``(images, steps, *node_shape)`` aligned to the discrete model
  (:func:`lava_backend.simulate_images`); ``input_ranges`` optionally bounds each input for
  fixed point;
* ``netx``: the file is a netx network (:mod:`hardware_sims.netx`), inputs ``bias/<block>``
  ``(images, size)`` and ``payload`` ``(images, T, n_in)`` integers; run by lava-dl's
  ``netx.hdf5.Network`` and by our own Lava processes (:func:`netx_backend.simulate_netx`),
  records keyed ``netx/<block>`` and ``lava/<block>``.

The worker writes ``result.npz`` (keys ``"<node>/<kind>"``) and ``status.json``; the status is
written on failure too, with the error message, and the exit code is non-zero. From its start it
also names the ``/dev/shm`` segments its processes create in
:data:`~hardware_sims.worker_protocol.SHARED_MEMORY_LIST`, so that the client can unlink them
when the worker's process group dies without releasing them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from hardware_sims.worker_protocol import SHARED_MEMORY_LIST
from lorsp_neuro.io import write_json

MODES = ("raw", "images", "netx")


def _write_status(path: Path, status: dict) -> None:
    """The status reaches the client whatever it holds: a value JSON cannot carry becomes an
    error status naming it, never a worker that dies without a status."""
    try:
        write_json(path, status)
    except (TypeError, ValueError) as exc:
        write_json(path, {"ok": False, "error": f"worker status not serialisable: {exc}"})


def _list_shared_memory(path: Path) -> None:
    """Append the name of every shared-memory segment this process (or a fork of it) creates.

    Lava's channels are ``multiprocessing.shared_memory`` segments that only its ``stop()``
    unlinks; a SIGKILL to the whole group (a timeout, the OOM killer) leaves them in ``/dev/shm``.
    Each segment is registered with multiprocessing's resource tracker as soon as it exists, so
    wrapping that registration names every segment before any kill can come, in Lava's forked
    runtime processes too; the tracker itself is in the killed group and cannot clean up.
    """
    from multiprocessing import resource_tracker

    register = resource_tracker.register

    def register_and_list(name: str, rtype: str) -> None:
        if rtype == "shared_memory":
            with open(path, "a") as listing:
                listing.write(name + "\n")
        register(name, rtype)

    resource_tracker.register = register_and_list


def handle(workdir: Path) -> dict:
    """Serve one request in ``workdir``; return the status dictionary."""
    from hardware_sims.lava_backend import LavaMappingError, simulate, simulate_images

    request = json.loads((workdir / "request.json").read_text())
    mode = request.get("mode", "raw")
    if mode not in MODES:
        raise LavaMappingError(f"unknown mode '{mode}'; expected one of {MODES}")
    graph_file = workdir / request["graph"]
    with np.load(workdir / request["inputs"]) as data:
        inputs = {name: data[name] for name in data.files}
    common = dict(
        steps=int(request["steps"]),
        record=tuple(request.get("record", ("spikes",))),
        dt=request.get("dt"),
        precision=request.get("precision", "floating_pt"),
    )
    started = time.perf_counter()
    if mode == "netx":
        from hardware_sims.netx_backend import simulate_netx

        records, info = simulate_netx(graph_file, inputs, common["record"])
    elif mode == "raw":
        records, info = simulate(graph_file, inputs, **common)
    else:
        records, info = simulate_images(
            graph_file, inputs, input_ranges=request.get("input_ranges"), **common
        )
    wall = time.perf_counter() - started
    arrays = {
        f"{node}/{kind}": value for node, kinds in records.items() for kind, value in kinds.items()
    }
    tmp = workdir / "result.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, workdir / "result.npz")
    return {"ok": True, "wall_s": wall, "mode": mode, **info}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hardware_sims.worker REQUEST_DIR", file=sys.stderr)
        return 2
    workdir = Path(argv[0])
    _list_shared_memory(workdir / SHARED_MEMORY_LIST)
    try:
        status = handle(workdir)
    except Exception as exc:  # every failure must reach the client as a status, not a traceback
        traceback.print_exc()
        status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _write_status(workdir / "status.json", status)
    sys.stdout.flush()
    # Lava's runtime can leave non-daemon threads behind; exit without waiting for them.
    os._exit(0 if status["ok"] else 1)


if __name__ == "__main__":
    main()

"""A netx file run by lava-dl's ``netx.hdf5.Network``, and by our own Lava processes (Lava env only).

Both runs play the same images with the same integers (:mod:`hardware_sims.netx`):

* **netx**: ``netx.hdf5.Network(file, reset_interval=W, reset_offset=d_0)`` builds the blocks from
  the file alone; a streamed input is a ``RingBuffer`` on ``net.inp``; before each image the host
  writes each block's bias mantissas (``neuron.bias_mant``: ``init`` before the first run,
  ``set`` between runs), then the network runs ``W = T + depth of the last block`` steps. Every
  block resets at the start of its own window (netx gives block ``j`` the reset offset
  ``d_0 + 1 + j``), so each image starts from rest and the steps outside a block's window are
  never read;
* **ours**: the same chain as a :class:`~hardware_sims.plan.LavaPlan` with its
  :class:`~hardware_sims.quantize.FixedPlan`, one image per run, built and run by
  :func:`hardware_sims.lava_backend.run_fixed_plan` (Lava ``LIFReset``, ``Dense``/``Sparse``,
  ``RingBuffer``), never touching lava-dl.

Records stream through :mod:`hardware_sims.lava_procs.recorder` and come back aligned to the
discrete model: ``{"netx/<block>" | "lava/<block>": {kind: (images, T, size)}}``, ``v``/``u`` as
Lava's integers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hardware_sims.netx import BIAS_EXP, INPUT_MESSAGE_BITS, NetxChain, NetxError, read_netx
from hardware_sims.plan import GradedSource, LavaPlan, NeuronGroup, Synapse
from hardware_sims.quantize import DECAY_UNITY, VTH_SHIFT, FixedGroup, FixedPlan, FixedSynapse

#: Request keys: ``bias/<block>`` ``(images, size)`` mantissas, ``payload`` ``(images, T, n_in)``.
BIAS_PREFIX, PAYLOAD = "bias/", "payload"


def _image_inputs(chain: NetxChain, inputs: Mapping[str, np.ndarray]):
    biases = {}
    for layer in chain.layers:
        key = BIAS_PREFIX + layer.name
        if key not in inputs:
            raise NetxError(f"no bias mantissas given for block '{layer.name}'")
        biases[layer.name] = np.asarray(inputs[key], np.int32).reshape(-1, layer.size)
    images = next(iter(biases.values())).shape[0]
    payload = None
    if chain.streamed is not None:
        if PAYLOAD not in inputs:
            raise NetxError(f"no payload given for the streamed input '{chain.streamed}'")
        payload = np.asarray(inputs[PAYLOAD], np.int32).reshape(images, chain.steps, -1)
    return biases, payload, images


def _aligned(chain: NetxChain, raw: np.ndarray, depth: int, images: int, window: int):
    """Rows ``iW + depth + s`` of a ``(images·W, size)`` record → ``(images, T, size)``."""
    blocks = raw[: images * window].reshape(images, window, -1)
    return blocks[:, depth : depth + chain.steps]


def _recorders(neurons: dict, record, scratch: Path, total: int) -> dict:
    from hardware_sims.lava_procs.recorder import GroupRecorder

    files = {}
    for name, process in neurons.items():
        paths = {kind: str(scratch / f"{name}.{kind}.npy") for kind in record}
        GroupRecorder(
            spikes=process.s_out,
            states={k: getattr(process, k) for k in record if k != "spikes"},
            paths=paths,
            dtypes={k: "bool" if k == "spikes" else "int32" for k in record},
            num_steps=total,
        )
        files[name] = paths
    return files


def run_netx(path: str | Path, inputs: Mapping[str, np.ndarray], record=("spikes", "v")):
    """lava-dl's run of the netx file ``path`` (module doc); ``(records, info)``."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    chain = read_netx(path)
    biases, payload, images = _image_inputs(chain, inputs)
    window = chain.window
    started = time.perf_counter()
    net = netx.hdf5.Network(
        net_config=str(path),
        reset_interval=window,
        reset_offset=chain.depths[0],
        input_message_bits=INPUT_MESSAGE_BITS if chain.streamed is not None else 0,
    )
    if len(net.layers) != len(chain.layers):
        raise NetxError(
            f"netx built {len(net.layers)} blocks from {path}, the file has {len(chain.layers)}"
        )
    neurons = {
        layer.name: block.neuron for layer, block in zip(chain.layers, net.layers, strict=True)
    }
    if payload is not None:
        data = np.zeros((payload.shape[2], images * window), np.int32)
        for i in range(images):
            data[:, i * window : i * window + chain.steps] = payload[i].T
        source = RingBuffer(data=data)
        source.s_out.connect(net.inp)
    for name, neuron in neurons.items():
        neuron.bias_mant.init = biases[name][0].astype(np.int16)
    config = Loihi2SimCfg(select_tag="fixed_pt")
    records = {}
    with tempfile.TemporaryDirectory(prefix="lorsp-netx-rec-") as scratch:
        files = _recorders(neurons, record, Path(scratch), images * window)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        try:
            for i in range(images):
                for name, neuron in neurons.items():
                    if i and np.any(biases[name][i] != biases[name][i - 1]):
                        neuron.bias_mant.set(biases[name][i].astype(np.int16))
                net.run(condition=RunSteps(num_steps=window), run_cfg=config)
        finally:
            net.stop()
        run_s = time.perf_counter() - started
        for layer, depth in zip(chain.layers, chain.depths, strict=True):
            records[layer.name] = {
                kind: _aligned(chain, np.load(p), depth, images, window)
                for kind, p in files[layer.name].items()
            }
    info = {
        "netx_table": str(net),
        "build_s": build_s,
        "run_s": run_s,
        "lava_steps": images * window,
    }
    return records, info


def chain_plans(chain: NetxChain, biases: Mapping[str, np.ndarray], image: int):
    """Image ``image``'s chain as our :class:`LavaPlan` and :class:`FixedPlan` (payload scale 1:
    the payload is already integer)."""
    groups, fixed_groups, synapses, fixed_synapses = {}, {}, [], []
    sources = {}
    source = None
    if chain.streamed is not None:
        src = GradedSource("input", chain.streamed, 0)
        sources[src.key] = src
        source = src.key
    for layer, depth in zip(chain.layers, chain.depths, strict=True):
        # The float fields (decays, threshold in float units) are the integers' values; a
        # fixed-point run reads only the FixedGroup.
        groups[layer.name] = NeuronGroup(
            name=layer.name,
            population=layer.name,
            index=np.arange(layer.size),
            du=layer.i_decay / DECAY_UNITY,
            dv=layer.v_decay / DECAY_UNITY,
            vth=layer.v_th_mant * 2**VTH_SHIFT / layer.scale,
            v_reset=0.0,
            bias=np.zeros(layer.size),
            v_start=np.zeros(layer.size),
            depth=depth,
        )
        fixed_groups[layer.name] = FixedGroup(
            scale=layer.scale,
            du=layer.lava_du,
            dv=layer.v_decay,
            vth=layer.v_th_mant,
            bias_mant=np.asarray(biases[layer.name][image], np.int32),
            bias_exp=np.full(layer.size, BIAS_EXP, np.int32),
        )
        if layer.weight is not None:
            graded = source in sources
            synapses.append(Synapse(source, layer.name, layer.weight, graded, None, layer.name))
            fixed_synapses.append(FixedSynapse(layer.weight, 0))
        source = layer.name
    plan = LavaPlan(
        steps=chain.steps,
        max_depth=chain.depths[-1],
        groups=groups,
        by_population={name: [name] for name in groups},
        sources=sources,
        synapses=synapses,
        population_shapes={layer.name: (layer.size,) for layer in chain.layers},
        input_shapes={chain.streamed: chain.input_shapes[chain.streamed]}
        if chain.streamed is not None
        else {},
    )
    return plan, FixedPlan(fixed_groups, fixed_synapses, {key: 1.0 for key in sources})


def run_ours(path: str | Path, inputs: Mapping[str, np.ndarray], record=("spikes", "v")):
    """Our own Lava run of the file's integers, one image per run (module doc)."""
    from hardware_sims.lava_backend import run_fixed_plan

    chain = read_netx(path)
    biases, payload, images = _image_inputs(chain, inputs)
    records: dict[str, dict[str, list]] = {
        layer.name: {k: [] for k in record} for layer in chain.layers
    }
    started = time.perf_counter()
    for i in range(images):
        plan, fixed = chain_plans(chain, biases, i)
        data = {} if payload is None else {chain.streamed: payload[i : i + 1].astype(np.float64)}
        per_group = run_fixed_plan(plan, fixed, data, 1, record)
        for layer, depth in zip(chain.layers, chain.depths, strict=True):
            for kind in record:
                raw = per_group[layer.name][kind]
                records[layer.name][kind].append(raw[depth : depth + chain.steps])
    stacked = {
        name: {kind: np.stack(rows) for kind, rows in kinds.items()}
        for name, kinds in records.items()
    }
    return stacked, {"run_s": time.perf_counter() - started}


def simulate_netx(path: str | Path, inputs: Mapping[str, np.ndarray], record=("spikes", "v")):
    """Both runs of a netx file; records keyed ``netx/<block>`` and ``lava/<block>``."""
    netx_records, netx_info = run_netx(path, inputs, record)
    our_records, our_info = run_ours(path, inputs, record)
    records = {f"netx/{name}": kinds for name, kinds in netx_records.items()}
    records.update({f"lava/{name}": kinds for name, kinds in our_records.items()})
    from importlib.metadata import version

    info = {
        "netx": netx_info,
        "lava": our_info,
        "lava_dl_version": version("lava-dl"),
        "lava_version": version("lava-nc"),
    }
    return records, info

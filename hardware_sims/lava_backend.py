"""NIR → Lava mapping and simulation (Lava environment only: imports lava, never torch).

The network is planned in numpy by :mod:`hardware_sims.plan` (neuron groups, composed synapses,
time windows, graded sources; read its module doc for every mapping decision) and, for
``fixed_pt``, quantized by :mod:`hardware_sims.quantize`. This module only instantiates Lava
processes from the plan, runs them and reads the records back:

* a neuron group is a Lava ``LIFReset`` whose ``reset_interval`` is the image window (``T``, or
  ``T + 1`` for a graph with loops): images run back to back in one Lava run, each group reset at
  the start of its own window; a recurrent connection is a plain ``Dense``/``Sparse`` from a group
  to itself or to another group of its loop;
* a synapse is a ``Dense``, a ``Sparse`` (mostly-zero matrices such as ``Scale``'s diagonal) or,
  in floating point, a Lava ``Conv`` for a lone ``Conv2d`` (NIR/torch ``(C, H, W)`` is reshaped and
  transposed to Lava's ``(X, Y, C) = (W, H, C)`` on the ports, and the kernel is flipped because
  Lava convolves where torch correlates). Lava 0.10.0's fixed-point ``Conv`` ignores
  ``weight_exp``, so in ``fixed_pt`` a ``Conv2d`` runs as its ``Sparse`` matrix;
* graded sources are ``RingBuffer`` s (``lava.proc.io.source``);
* records stream to files through :mod:`hardware_sims.lava_procs.recorder` (Lava's ``Monitor``
  reads back one value per message: minutes for a 224 × 224 prompter).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse

from hardware_sims.graph import Conv2dGeometry, GraphError, analyse, load_graph
from hardware_sims.plan import (
    LavaPlan,
    assemble,
    build_plan,
    check_inputs,
    source_data,
    source_width,
)
from hardware_sims.quantize import FixedPlan, quantize_plan, reset_pulse_current
from hardware_sims.worker_protocol import RECORDABLE
from lorsp_neuro.errors import LorspError

SUPPORTED_PRECISIONS = ("floating_pt", "fixed_pt")
#: Graded input values held by the RingBuffers of one Lava run; more images run in chunks.
MAX_RUN_VALUES = 40_000_000
#: A matrix with fewer non-zeros than this fraction runs as Lava ``Sparse``.
SPARSE_DENSITY = 0.25


class LavaMappingError(LorspError, ValueError):
    """A NIR graph or request cannot be mapped to Lava; the message names the node and reason."""


def _check_request(precision: str, record) -> None:
    if precision not in SUPPORTED_PRECISIONS:
        raise LavaMappingError(
            f"precision '{precision}' is not supported; use one of {SUPPORTED_PRECISIONS}"
        )
    unknown = set(record) - set(RECORDABLE)
    if unknown:
        raise LavaMappingError(f"cannot record {sorted(unknown)}; choose from {RECORDABLE}")


def _prepare(graph_file, steps: int, dt):
    graph = load_graph(graph_file)
    model = analyse(graph, dt)
    return model, build_plan(model, steps)


def simulate_images(
    graph_file: str | Path,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: tuple[str, ...] = ("spikes",),
    dt: float | None = None,
    precision: str = "floating_pt",
    input_ranges: Mapping[str, float] | None = None,
):
    """Run images back to back; return ``(records, info)`` aligned to the discrete model.

    ``inputs[name]`` has shape ``(images, steps, *shape)``; ``records[node][kind]`` has shape
    ``(images, steps, *node_shape)``: step ``s`` of ``records`` is step ``s`` of the discrete
    model, Lava's per-connection delay already taken out. ``v`` and ``u`` are in the graph's
    float units in both precisions. ``input_ranges`` (``fixed_pt`` only) bounds ``|x|`` per input
    for the payload quantization; by default the largest value in ``inputs``.
    """
    _check_request(precision, record)
    model, plan = _prepare(graph_file, steps, dt)
    images = check_inputs(plan, inputs)
    fixed = None
    if precision == "fixed_pt":
        ranges = {n: float(np.max(np.abs(inputs[n]), initial=0.0)) for n in plan.input_shapes}
        ranges.update(input_ranges or {})
        fixed = quantize_plan(plan, ranges)
    width = sum(source_width(plan, k) for k in plan.sources) or 1
    chunk = max(1, min(images, MAX_RUN_VALUES // (width * (plan.window + plan.max_depth))))
    started = time.perf_counter()
    parts: list[dict] = []
    timings = []
    for first in range(0, images, chunk):
        count = min(chunk, images - first)
        part_inputs = {n: np.asarray(inputs[n])[first : first + count] for n in plan.input_shapes}
        per_group, timing = _run(plan, fixed, part_inputs, count, plan.total_steps(count), record)
        timings.append(timing)
        parts.append(
            {
                pop: {
                    kind: assemble(plan, pop, {g: per_group[g][kind] for g in groups}, count)
                    for kind in record
                }
                for pop, groups in plan.by_population.items()
            }
        )
    records = {
        pop: {kind: np.concatenate([p[pop][kind] for p in parts]) for kind in record}
        for pop in plan.by_population
    }
    _to_float_units(plan, fixed, records)
    info = _info(model, plan, fixed, precision)
    info.update(
        images=images,
        steps=steps,
        lava_steps=sum(t["lava_steps"] for t in timings),
        lava_runs=len(timings),
        build_s=sum(t["build_s"] for t in timings),
        run_s=sum(t["run_s"] for t in timings),
        simulate_s=time.perf_counter() - started,
    )
    return records, info


def simulate(
    graph_file: str | Path,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: tuple[str, ...] = ("spikes",),
    dt: float | None = None,
    precision: str = "floating_pt",
):
    """Run one input sequence for exactly ``steps`` Lava steps; records in Lava's time base.

    ``inputs[name]`` has shape ``(steps, *shape)``; ``records[node][kind]`` has shape
    ``(steps, *node_shape)`` and node ``n`` runs ``info["delays"][n]`` steps behind the discrete
    model (the caller aligns). Prefer :func:`simulate_images`, which aligns and batches.
    """
    _check_request(precision, record)
    model, plan = _prepare(graph_file, steps, dt)
    batch = {}
    for name, shape in plan.input_shapes.items():
        if name not in inputs:
            raise LavaMappingError(f"no input array given for Input node '{name}'")
        data = np.asarray(inputs[name], dtype=np.float64)
        if data.shape[0] != steps or data[0].size != int(np.prod(shape)):
            raise LavaMappingError(
                f"input '{name}' has shape {data.shape}; expected ({steps}, "
                f"{', '.join(map(str, shape))})"
            )
        batch[name] = data[None]
    check_inputs(plan, batch)
    fixed = None
    if precision == "fixed_pt":
        fixed = quantize_plan(
            plan, {n: float(np.max(np.abs(batch[n]), initial=0.0)) for n in plan.input_shapes}
        )
    per_group, timing = _run(plan, fixed, batch, 1, steps, record)
    records = {}
    for pop, groups in plan.by_population.items():
        records[pop] = {}
        for kind in record:
            first = per_group[groups[0]][kind]
            flat = np.zeros((steps, int(np.prod(plan.population_shapes[pop]))), first.dtype)
            for gname in groups:
                flat[:, plan.groups[gname].index] = per_group[gname][kind]
            records[pop][kind] = flat.reshape(steps, *plan.population_shapes[pop])
    _to_float_units(plan, fixed, records, raw=True)
    info = _info(model, plan, fixed, precision)
    info.update(timing)
    return records, info


def run_fixed_plan(
    plan: LavaPlan, fixed: FixedPlan, inputs, images: int, record: tuple[str, ...] = ("spikes",)
) -> dict[str, dict[str, np.ndarray]]:
    """Run a ready fixed-point plan (e.g. :mod:`hardware_sims.netx_backend`'s) for ``images``
    images; per-group records ``(images·T + max_depth, size)`` in Lava's time base, as integers."""
    _check_request("fixed_pt", record)
    per_group, _ = _run(plan, fixed, inputs, images, plan.total_steps(images), record)
    return per_group


# --------------------------------------------------------------------------------------------


def _components(plan: LavaPlan) -> list[list[str]]:
    """Groups connected through synapses (Lava compiles only what is connected to ``run``)."""
    parent = {name: name for name in (*plan.groups, *plan.sources)}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for syn in plan.synapses:
        parent[find(syn.source)] = find(syn.target)
    components: dict[str, list[str]] = {}
    for name in plan.groups:
        components.setdefault(find(name), []).append(name)
    return list(components.values())


def _lava_weights(weight) -> tuple[str, object]:
    n_values = weight.shape[0] * weight.shape[1]
    nnz = weight.count_nonzero() if scipy.sparse.issparse(weight) else np.count_nonzero(weight)
    if nnz < SPARSE_DENSITY * n_values:
        return "sparse", scipy.sparse.csr_matrix(weight)
    dense = weight.toarray() if scipy.sparse.issparse(weight) else np.asarray(weight)
    return "dense", dense


def _run(plan: LavaPlan, fixed: FixedPlan | None, inputs, images: int, total: int, record):
    """Build and run every connected component; return per-group ``(total, size)`` records."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    precision = "fixed_pt" if fixed is not None else "floating_pt"
    build_s = run_s = 0.0
    per_group: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="lorsp-lava-rec-") as scratch:
        for component in _components(plan):
            started = time.perf_counter()
            lif = _neuron_processes(plan, fixed, component)
            # The synapses, sources and recorders stay alive through their connections to `lif`.
            _connect_synapses(plan, fixed, lif, inputs, images, total)
            files = _attach_recorders(lif, record, fixed, Path(scratch), total)
            anchor = lif[component[0]]
            build_s += time.perf_counter() - started
            started = time.perf_counter()
            try:
                anchor.run(
                    condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag=precision)
                )
            finally:
                anchor.stop()
            run_s += time.perf_counter() - started
            for (name, kind), path in files.items():
                per_group.setdefault(name, {})[kind] = np.array(np.load(path, mmap_mode="r"))
    timing = {"build_s": build_s, "run_s": run_s, "lava_steps": total}
    return per_group, timing


def _neuron_processes(plan: LavaPlan, fixed: FixedPlan | None, component: list[str]) -> dict:
    """One Lava ``LIFReset`` per group of ``component``, reset at the start of its window."""
    from lava.proc.lif.process import LIFReset

    lif = {}
    for name in component:
        g = plan.groups[name]
        common = dict(
            shape=(g.size,),
            reset_interval=plan.window,
            reset_offset=(g.depth + 1) % plan.window,
            name=name,
        )
        if fixed is None:
            lif[name] = LIFReset(du=g.du, dv=g.dv, vth=g.vth, bias_mant=g.bias, **common)
        else:
            q = fixed.groups[name]
            lif[name] = LIFReset(
                du=q.du,
                dv=q.dv,
                vth=q.vth,
                bias_mant=q.bias_mant,
                bias_exp=q.bias_exp,
                **common,
            )
    return lif


def _connect_synapses(
    plan: LavaPlan, fixed: FixedPlan | None, lif: dict, inputs, images: int, total: int
) -> None:
    """Connect every synapse into the groups ``lif`` holds.

    A graded source becomes one ``RingBuffer`` shared by its synapses; a synapse becomes a Lava
    ``Conv`` (see the module doc for when), ``Sparse`` or ``Dense``.
    """
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import Sparse

    rings = {}
    for index, syn in enumerate(plan.synapses):
        if syn.target not in lif:
            continue
        if syn.graded:
            if syn.source not in rings:
                data = source_data(plan, syn.source, inputs, images, total)
                if fixed is not None:
                    data = fixed.payload(syn.source, data)
                rings[syn.source] = RingBuffer(data=data)
            src_port = rings[syn.source].s_out
        else:
            src_port = lif[syn.source].s_out
        bits = 24 if syn.graded else 0
        if syn.conv is not None and fixed is None and syn.conv.symmetric_padding:
            _connect_conv(syn.conv, src_port, lif[syn.target].a_in, bits)
            continue
        if fixed is None:
            kind, weight = _lava_weights(syn.weight)
            extra = {}
        else:
            kind, weight = _lava_weights(fixed.synapses[index].weight)
            extra = {"weight_exp": fixed.synapses[index].weight_exp, "num_weight_bits": 8}
        cls = Sparse if kind == "sparse" else Dense
        conn = cls(weights=weight, num_message_bits=bits, **extra)
        src_port.connect(conn.s_in)
        conn.a_out.connect(lif[syn.target].a_in)


def _connect_conv(geom: Conv2dGeometry, src_port, target_port, bits: int) -> None:
    """A Lava ``Conv`` for ``geom`` between flat ports: NIR's ``(C, H, W)`` is Lava's ``(W, H, C)``."""
    from lava.proc.conv.process import Conv  # imports scipy.signal: 1.5 s

    c, h, w = geom.in_shape
    conv = Conv(
        weight=geom.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1).copy(),
        input_shape=(w, h, c),
        padding=(geom.padding[1][0], geom.padding[0][0]),
        stride=geom.stride[::-1],
        dilation=geom.dilation[::-1],
        groups=geom.groups,
        num_message_bits=bits,
    )
    src_port.reshape((c, h, w)).transpose((2, 1, 0)).connect(conv.s_in)
    n_out = int(np.prod(geom.out_shape))
    conv.a_out.transpose((2, 1, 0)).reshape((n_out,)).connect(target_port)


def _attach_recorders(
    lif: dict, record, fixed: FixedPlan | None, scratch: Path, total: int
) -> dict[tuple[str, str], str]:
    """Stream what ``record`` names of every group to a file; return ``{(group, kind): file}``."""
    from hardware_sims.lava_procs.recorder import GroupRecorder

    state_dtype = "int32" if fixed is not None else "float64"
    files = {}
    for name, process in lif.items():
        paths = {kind: str(scratch / f"{name}.{kind}.npy") for kind in record}
        dtypes = {k: "bool" if k == "spikes" else state_dtype for k in record}
        GroupRecorder(
            spikes=process.s_out,
            states={k: getattr(process, k) for k in record if k != "spikes"},
            paths=paths,
            dtypes=dtypes,
            num_steps=total,
        )
        files.update({(name, kind): path for kind, path in paths.items()})
    return files


def _to_float_units(plan: LavaPlan, fixed: FixedPlan | None, records, raw: bool = False) -> None:
    """Undo the v_reset shift, the fixed-point scale and the reset pulse in ``u`` (in place)."""
    for pop, groups in plan.by_population.items():
        kinds = records[pop]
        for kind in ("v", "u"):
            if kind not in kinds:
                continue
            flat = kinds[kind].astype(np.float64).reshape(*kinds[kind].shape[: 1 if raw else 2], -1)
            for gname in groups:
                g = plan.groups[gname]
                scale = fixed.groups[gname].scale if fixed is not None else 1.0
                flat[..., g.index] /= scale
                if kind == "v":
                    flat[..., g.index] += g.v_reset
                elif gname in plan.pulse_weights and not raw:
                    flat[:, 0, g.index] -= reset_pulse_current(plan, fixed, gname)
            kinds[kind] = flat.reshape(kinds[kind].shape)
        if "spikes" in kinds:
            kinds["spikes"] = kinds["spikes"].astype(bool)


def _info(model, plan: LavaPlan, fixed: FixedPlan | None, precision: str) -> dict:
    info = {
        "dt": model.dt,
        "precision": precision,
        "delays": {p: model.depth[p] for p in model.populations},
        "neurons": {p: list(s) for p, s in plan.population_shapes.items()},
        "groups": {p: len(g) for p, g in plan.by_population.items()},
        "synapses": [
            {
                "source": s.source,
                "target": s.target,
                "graded": s.graded,
                "lava": "Conv"
                if s.conv is not None and fixed is None and s.conv.symmetric_padding
                else ("Sparse" if _lava_weights(s.weight)[0] == "sparse" else "Dense"),
                "path": s.label,
            }
            for s in plan.synapses
        ],
        "unused_nodes": model.unused,
        "lava_version": _lava_version(),
    }
    if fixed is not None:
        info["fixed_point"] = {
            "groups": {
                n: {"scale": q.scale, "du": q.du, "dv": q.dv, "vth": q.vth}
                for n, q in fixed.groups.items()
            },
            "weight_exp": [q.weight_exp for q in fixed.synapses],
            "payload_scales": fixed.source_scales,
        }
    return info


def _lava_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lava-nc")
    except PackageNotFoundError:
        return "unknown"


__all__ = ["GraphError", "LavaMappingError", "simulate", "simulate_images"]

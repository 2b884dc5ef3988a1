r"""A numpy reference simulator for NIR graphs: a third opinion next to torch and Lava.

Runs in both environments (numpy, scipy, nir). Two models:

* :func:`simulate_float` evaluates the graph **node by node** in the discrete model of
  :mod:`exporters.semantics`: at every step each node, in topological order, gets the sum of its
  predecessors' outputs at that step (``Affine``: ``W x + b``; ``Linear``; ``Scale``; ``Conv2d``
  as torch's cross-correlation; ``Flatten``); neuron nodes are stepped with
  :func:`exporters.semantics.step`. There is no delay but on loops: an edge out of a neuron on a
  cycle carries its output of the previous step (:func:`exporters.graph_rules.evaluation_order`,
  as the torch importer). This is the model both the torch importer and Lava (after alignment)
  must reproduce. It shares only the per-node matrices with the Lava
  mapper, not the path composition, grouping, delays or windows.
* :func:`simulate_fixed` steps the integer model of :mod:`hardware_sims.quantize` on a
  :class:`~hardware_sims.plan.LavaPlan`, operation for operation as Lava's bit-accurate ``LIF``
  and ``Dense`` process models do, so Lava's ``fixed_pt`` run must match it bit for bit.

Both take ``inputs[name]`` of shape ``(images, steps, *shape)`` and return
``records[node][kind]`` of shape ``(images, steps, *node_shape)`` for ``kind`` in ``spikes``,
``v`` (after reset), ``u``. Initial state as :mod:`exporters.semantics` fixes it (``u = 0``,
``v = v_leak`` for leaky neurons, ``v_reset`` for ``IF``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import nir
import numpy as np
import scipy.sparse

from exporters.graph_rules import NIRGraphError, evaluation_order
from exporters.semantics import step
from hardware_sims.graph import (
    PASS_THROUGH,
    SYNAPSE_MAPPERS,
    GraphError,
    NetworkModel,
    analyse,
    is_neuron,
    numel,
)
from hardware_sims.plan import CONSTANT, LavaPlan, check_inputs
from hardware_sims.quantize import (
    ACT_SHIFT,
    DECAY_UNITY,
    STATE_LIMIT,
    VTH_SHIFT,
    FixedPlan,
    reset_pulse_current,
)


def _node_order(graph: nir.NIRGraph) -> tuple[list[str], frozenset[tuple[str, str]]]:
    """Evaluation order within a step (Output nodes left out) and the recurrent edges."""
    try:
        found = evaluation_order(graph)
    except NIRGraphError as exc:
        raise GraphError(str(exc)) from None
    order = [n for n in found.order if not isinstance(graph.nodes[n], nir.Output)]
    return order, found.recurrent


def _matmul(matrix, x: np.ndarray) -> np.ndarray:
    """``x @ matrix.T`` for a batch ``x`` of shape ``(images, n_in)``."""
    if scipy.sparse.issparse(matrix):
        return np.asarray((matrix @ x.T).T)
    return x @ np.asarray(matrix).T


def simulate_float(
    graph: nir.NIRGraph,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    dt: float | None = None,
    record: tuple[str, ...] = ("spikes", "v"),
) -> dict[str, dict[str, np.ndarray]]:
    """Step ``graph`` node by node in float64 (see module doc)."""
    model = analyse(graph, dt)
    images = _check(model, inputs, steps)
    order, recurrent = _node_order(graph)
    preds = {n: [s for s, d in graph.edges if d == n] for n in graph.nodes}
    shapes: dict[str, tuple[int, ...]] = dict(model.inputs)
    shapes.update({p: pop.shape for p, pop in model.populations.items()})
    maps = {}
    for name in order:
        node = graph.nodes[name]
        if name in model.inputs:
            continue
        in_shapes = [shapes[p] for p in preds[name] if p in shapes]
        if is_neuron(node):
            shapes[name] = model.populations[name].shape
        elif not in_shapes:  # fed by nothing: never produces a value
            continue
        elif type(node) in PASS_THROUGH:
            shapes[name] = PASS_THROUGH[type(node)](node, in_shapes[0], name)
        else:
            maps[name] = SYNAPSE_MAPPERS[type(node)](node, in_shapes[0], name)
            shapes[name] = maps[name].out_shape
    state = {
        p: tuple(x.reshape(images, -1) for x in pop.coeffs.initial_state((images,)))
        for p, pop in model.populations.items()
    }
    records = {
        p: {k: np.zeros((images, steps, pop.size)) for k in record}
        for p, pop in model.populations.items()
    }
    previous = {
        p: np.zeros((images, model.populations[p].size)) for p in {src for src, _ in recurrent}
    }
    for t in range(steps):
        values: dict[str, np.ndarray] = {
            n: np.asarray(inputs[n], np.float64)[:, t].reshape(images, -1) for n in model.inputs
        }
        for name in order:
            if name in model.inputs:
                continue
            arriving = [
                previous[p] if (p, name) in recurrent else values[p]
                for p in preds[name]
                if p in values or (p, name) in recurrent
            ]
            if not arriving:
                continue
            total = arriving[0] if len(arriving) == 1 else np.sum(arriving, axis=0)
            if name in model.populations:
                c = model.populations[name].coeffs
                u, v = state[name]
                spikes, u, v = step(_flat_coeffs(c), u, v, total)
                state[name] = (u, v)
                values[name] = spikes
                for kind, value in (("spikes", spikes), ("v", v), ("u", u)):
                    if kind in records[name]:
                        records[name][kind][:, t] = value
            elif name in maps:
                out = _matmul(maps[name].matrix, total)
                values[name] = out + maps[name].bias if maps[name].bias is not None else out
            else:
                values[name] = total
        previous = {p: values.get(p, previous[p] * 0) for p in previous}
    return {
        p: {
            k: (a.astype(bool) if k == "spikes" else a).reshape(images, steps, *pop.shape)
            for k, a in records[p].items()
        }
        for p, pop in model.populations.items()
    }


def _flat_coeffs(coeffs):
    return dataclasses.replace(
        coeffs, **{f.name: np.ravel(getattr(coeffs, f.name)) for f in dataclasses.fields(coeffs)}
    )


def _check(model: NetworkModel, inputs, steps: int) -> int:
    images = None
    for name, shape in model.inputs.items():
        if name not in inputs:
            raise GraphError(f"no input array given for Input node '{name}'")
        data = np.asarray(inputs[name])
        if data.ndim < 2 or data.shape[1] != steps or numel(data.shape[2:]) != numel(shape):
            raise GraphError(
                f"input '{name}' has shape {data.shape}; expected (images, {steps}, "
                f"{', '.join(map(str, shape))})"
            )
        images = data.shape[0] if images is None else images
        if data.shape[0] != images:
            raise GraphError(f"input '{name}' has {data.shape[0]} images, another has {images}")
    if images is None:
        raise GraphError("the graph has no Input node")
    return images


# --------------------------------------------------------------------------------------------
# Fixed point, as Lava's bit-accurate process models compute it


def _shift(values: np.ndarray, exp: int) -> np.ndarray:
    """Lava ``Dense``: ``a << e`` for ``e > 0``, else an arithmetic ``a >> −e``."""
    return np.left_shift(values, exp) if exp > 0 else np.right_shift(values, -exp)


def _decay(state: np.ndarray, keep: int) -> np.ndarray:
    """``sgn(x·keep) · (|x·keep| >> 12)``: Lava's decay, rounding towards zero."""
    product = state.astype(np.int64) * keep
    return np.sign(product) * np.right_shift(np.abs(product), 12)


def lif_fixed_step(
    u: np.ndarray,
    v: np.ndarray,
    activation: np.ndarray,
    du: int,
    dv: int,
    vth: int,
    bias: np.ndarray,
):
    r"""One step of Lava's ``PyLifModelBitAcc`` (see :mod:`hardware_sims.quantize` for the maths).

    ``u`` wraps around at 24 bits, ``v`` saturates at :math:`±(2^{23} − 1)`; returns
    ``(spikes, u, v)``.
    """
    u = _decay(u, DECAY_UNITY - du - 1) + np.left_shift(activation, ACT_SHIFT)
    wrapped = np.where(u > STATE_LIMIT, u - 2 * STATE_LIMIT, u)
    u = np.where(wrapped <= -STATE_LIMIT, u + 2 * STATE_LIMIT, wrapped)
    v = np.clip(_decay(v, DECAY_UNITY - dv) + u + bias, -STATE_LIMIT + 1, STATE_LIMIT - 1)
    spikes = v > (vth << VTH_SHIFT)
    v = np.where(spikes, 0, v)
    return spikes, u, v


def simulate_fixed(
    plan: LavaPlan,
    fixed: FixedPlan,
    inputs: Mapping[str, np.ndarray],
    record: tuple[str, ...] = ("spikes", "v"),
) -> dict[str, dict[str, np.ndarray]]:
    """Step the integer model of ``plan`` without Lava's delays; ``v``/``u`` in float units."""
    images = check_inputs(plan, inputs)
    steps = plan.steps
    order = sorted(plan.groups, key=lambda g: plan.groups[g].depth)
    incoming = {g: [] for g in plan.groups}
    for index, syn in enumerate(plan.synapses):
        incoming[syn.target].append(index)
    payload = {}
    for key, src in plan.sources.items():
        if src.kind == "input":
            data = np.asarray(inputs[src.name], np.float64).reshape(images, steps, -1)
            payload[key] = fixed.payload(key, data).astype(np.int64)
        elif src.name == CONSTANT:
            payload[key] = np.broadcast_to(fixed.payload(key, np.ones(1)), (images, steps, 1))
        else:  # reset pulses: channel c is on at window step c
            pulses = np.zeros((images, steps, 2 if steps > 1 else 1))
            for c in range(pulses.shape[2]):
                pulses[:, c, c] = 1.0
            payload[key] = fixed.payload(key, pulses).astype(np.int64)
    bias = {
        g: np.where(
            q.bias_exp >= 0,
            np.left_shift(q.bias_mant.astype(np.int64), np.maximum(q.bias_exp, 0)),
            np.right_shift(q.bias_mant.astype(np.int64), np.maximum(-q.bias_exp, 0)),
        )
        for g, q in fixed.groups.items()
    }
    state = {g: (np.zeros((images, plan.groups[g].size), np.int64),) * 2 for g in plan.groups}
    out = {g: {k: np.zeros((images, steps, plan.groups[g].size)) for k in record} for g in order}
    for t in range(steps):
        spikes_now: dict[str, np.ndarray] = {}
        for gname in order:
            activation = np.zeros((images, plan.groups[gname].size), np.int64)
            for index in incoming[gname]:
                syn = plan.synapses[index]
                q = fixed.synapses[index]
                x = payload[syn.source][:, t] if syn.graded else spikes_now[syn.source]
                accum = _matmul(q.weight, x.astype(np.int64)).astype(np.int64)
                activation += _shift(accum, q.weight_exp)
            q = fixed.groups[gname]
            u, v = state[gname]
            spikes, u, v = lif_fixed_step(u, v, activation, q.du, q.dv, q.vth, bias[gname])
            state[gname] = (u, v)
            spikes_now[gname] = spikes.astype(np.int64)
            g = plan.groups[gname]
            if t == 0 and gname in plan.pulse_weights:
                u_float = u / q.scale - reset_pulse_current(plan, fixed, gname)
            else:
                u_float = u / q.scale
            for kind, value in (("spikes", spikes), ("v", v / q.scale + g.v_reset), ("u", u_float)):
                if kind in record:
                    out[gname][kind][:, t] = value
    records = {}
    for pop, groups in plan.by_population.items():
        shape = plan.population_shapes[pop]
        records[pop] = {}
        for kind in record:
            flat = np.zeros((images, steps, numel(shape)))
            for gname in groups:
                flat[:, :, plan.groups[gname].index] = out[gname][kind]
            records[pop][kind] = (flat.astype(bool) if kind == "spikes" else flat).reshape(
                images, steps, *shape
            )
    return records

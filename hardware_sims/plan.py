r"""The Lava network for a NIR graph, planned in numpy (no Lava import: testable in both envs).

:func:`build_plan` turns a :class:`~hardware_sims.graph.NetworkModel` into what
:mod:`hardware_sims.lava_backend` instantiates and what the fixed-point reference
(:mod:`hardware_sims.reference`) steps bit for bit:

* **Neuron groups.** Lava's ``LIF`` holds ``du``, ``dv`` and ``vth`` once per process. A population
  whose neurons differ in ``du``, ``dv``, ``v_threshold`` or ``v_reset`` is *split* into one group
  (one Lava process) per distinct combination; synapse rows and columns are routed to the groups
  and records are put back together. More than :data:`MAX_GROUPS` groups is refused: per-neuron
  random thresholds would make one process per neuron.
* **Synapses** carry the target's input gain folded into the weights (``W' = diag(g) W``): one
  ``Dense`` (``Sparse`` for a diagonal, ``Conv`` for a lone ``Conv2d``) per (source group,
  target group) pair with a non-zero block.
* **Time.** Each image of ``T`` steps gets a window of ``T`` Lava steps; a group of depth ``k``
  sees step ``s`` of image ``i`` at Lava step ``τ = iT + s + k`` and is reset to ``u = v = 0`` at
  the start of its window (Lava ``LIFReset``, ``reset_interval = T``), so images run back to back
  without leaking state (a persistent current, ``d_u = 2**-60``, included). Graded inputs feeding
  a deeper group are held back ``extra_delay`` steps by shifting their data. Synaptic biases come
  from a constant source through their own synapse.
* **Reset and initial voltage.** Lava resets to 0, so the voltage is shifted, ``v' = v − r`` for
  ``v_reset = r`` (``vth' = v_th − r``, bias ``b' = b − d_v r``). The window reset leaves
  ``v' = 0`` where the discrete model starts from ``v' = v_0 − r`` (``v_0 = v_leak`` for leaky
  neurons, exporters.semantics); two input pulses restore that exactly in exact arithmetic:
  ``p = (1 − d_v)(v_0 − r)`` at window step 0 and ``−(1 − d_u) p`` at step 1 (which takes ``p``
  back out of the decayed current). Lava's LIF has no subtractive reset: a node with
  ``reset_mode = "subtract"`` is refused.
* **Recurrence.** A recurrent connection (:mod:`hardware_sims.graph`: source and target on one
  loop, same depth) is a plain synapse: Lava's one-step delay is the previous step the discrete
  model reads. Spikes of a window's last step would then reach the next window's step 0, where
  the model reads zeros; so a graph with a loop gets windows of ``T + 1`` Lava steps
  (``window``), and every group that a recurrent synapse reaches is driven down by
  :data:`GAP_INHIBITION` at the spare step before each of its windows (a ``gap`` source), so it
  cannot spike there; the window reset then clears ``u`` and ``v`` exactly. Floating point only:
  :mod:`hardware_sims.quantize` refuses a plan with loops, naming them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from hardware_sims.graph import Conv2dGeometry, GraphError, Matrix, NetworkModel

#: Most Lava processes one NIR neuron node may be split into.
MAX_GROUPS = 64
CONSTANT = "__constant__"
GROUP_PARAMS = ("du", "dv", "v_threshold", "v_reset")
#: Input into a looped group at the spare step before its window: it cannot spike there.
GAP_INHIBITION = 1e30


@dataclass
class NeuronGroup:
    """One Lava ``LIFReset`` process: neurons ``index`` (flat, C order) of ``population``."""

    name: str
    population: str
    index: np.ndarray
    du: float
    dv: float
    vth: float  # v_threshold − v_reset (shifted voltage)
    v_reset: float
    bias: np.ndarray  # canonical bias − dv·v_reset, per neuron
    v_start: np.ndarray  # initial voltage − v_reset, per neuron
    depth: int

    @property
    def size(self) -> int:
        return int(self.index.size)


@dataclass(frozen=True)
class GradedSource:
    """A Lava ``RingBuffer`` feeding graded values.

    ``kind``: ``input`` (the Input node ``name``, delayed ``shift`` steps), ``constant`` (ones),
    ``pulse`` (two channels that are 1 at window steps 0 and 1 of groups of depth ``shift + 1``)
    or ``gap`` (1 at the spare step before each window of groups of depth ``shift + 1``).
    """

    kind: str
    name: str
    shift: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}:{self.shift}"


@dataclass
class Synapse:
    """One Lava connection process into ``target`` (a group name)."""

    source: str  # a group name (binary spikes) or a GradedSource key (graded values)
    target: str
    weight: Matrix  # (target.size, n_source), target gain folded in
    graded: bool
    conv: Conv2dGeometry | None = None  # lone Conv2d between whole populations, gain folded in
    label: str = ""
    recurrent: bool = False  # carries the previous step's spikes (graph.Connection.recurrent)


@dataclass
class LavaPlan:
    steps: int
    max_depth: int
    groups: dict[str, NeuronGroup]
    by_population: dict[str, list[str]]
    sources: dict[str, GradedSource]
    synapses: list[Synapse]
    population_shapes: dict[str, tuple[int, ...]]
    input_shapes: dict[str, tuple[int, ...]]
    pulse_weights: dict[str, np.ndarray] = field(default_factory=dict)  # group → (n, 2)
    loops: list[str] = field(default_factory=list)  # the graph's loops, named (graph.py)
    window: int = 0  # Lava steps per image: steps, or steps + 1 with loops (module doc)

    def __post_init__(self) -> None:
        self.window = self.window or self.steps

    def total_steps(self, images: int) -> int:
        """Lava steps to run ``images`` images back to back (the last needs ``max_depth`` more)."""
        return images * self.window + self.max_depth


def _split(model: NetworkModel, name: str) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    c = model.populations[name].coeffs
    params = np.stack([np.asarray(getattr(c, p), np.float64).ravel() for p in GROUP_PARAMS], 1)
    if np.all(params == params[0]):  # the usual case, and np.unique is slow on big nodes
        return [(np.arange(len(params)), tuple(float(x) for x in params[0]))]
    unique, inverse = np.unique(params, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    if len(unique) > MAX_GROUPS:
        varying = [p for k, p in enumerate(GROUP_PARAMS) if np.ptp(params[:, k]) > 0]
        raise GraphError(
            f"node '{name}': {len(unique)} distinct ({', '.join(varying)}) combinations; Lava's LIF "
            f"holds them once per process and at most {MAX_GROUPS} processes per node are made. "
            "Share these parameters within the node or split it in the NIR graph."
        )
    # keep groups in the order of their first neuron, so a uniform node is one group, index 0..n
    firsts = [int(np.flatnonzero(inverse == k)[0]) for k in range(len(unique))]
    return [
        (np.flatnonzero(inverse == k), tuple(float(x) for x in unique[k]))
        for k in np.argsort(firsts)
    ]


def _rows(weight: Matrix, rows: np.ndarray, n_rows: int) -> Matrix:
    if rows.size == n_rows:
        return weight
    return weight[rows] if not scipy.sparse.issparse(weight) else weight.tocsr()[rows]


def _cols(weight: Matrix, cols: np.ndarray, n_cols: int) -> Matrix:
    if cols.size == n_cols:
        return weight
    return weight[:, cols] if not scipy.sparse.issparse(weight) else weight.tocsc()[:, cols].tocsr()


def _scale_rows(weight: Matrix, gain: np.ndarray) -> Matrix:
    if scipy.sparse.issparse(weight):
        return scipy.sparse.diags(gain) @ weight.tocsr()
    return np.asarray(weight) * gain[:, None]


def _nonzero(weight: Matrix) -> bool:
    return bool(weight.count_nonzero() if scipy.sparse.issparse(weight) else np.any(weight != 0))


def build_plan(model: NetworkModel, steps: int) -> LavaPlan:
    """Plan the Lava network of ``model`` for images of ``steps`` steps (see module doc)."""
    if steps < 1:
        raise GraphError(f"steps must be >= 1, got {steps}")
    groups, by_population = _neuron_groups(model)
    sources: dict[str, GradedSource] = {}
    synapses = _connection_synapses(model, groups, by_population, sources)
    synapses += _bias_synapses(model, groups, by_population, sources)
    pulse_weights = _initial_voltage_pulses(groups, steps)
    for name, weight in pulse_weights.items():
        g = groups[name]
        key = _graded_source(sources, "pulse", "window", g.depth - 1)
        label = f"initial voltage of {g.population}"
        synapses.append(Synapse(key, g.name, weight, True, None, label))
    looped = {s.target for s in synapses if s.recurrent}
    for name in sorted(looped):
        g = groups[name]
        key = _graded_source(sources, "gap", "window", g.depth - 1)
        weight = np.full((g.size, 1), -GAP_INHIBITION)
        synapses.append(Synapse(key, name, weight, True, None, f"window gap of {g.population}"))
    return LavaPlan(
        steps=steps,
        max_depth=model.max_depth,
        groups=groups,
        by_population=by_population,
        sources=sources,
        synapses=synapses,
        population_shapes={n: p.shape for n, p in model.populations.items()},
        input_shapes=dict(model.inputs),
        pulse_weights=pulse_weights,
        loops=list(model.loops),
        window=steps + 1 if model.loops else steps,
    )


def _neuron_groups(model: NetworkModel) -> tuple[dict[str, NeuronGroup], dict[str, list[str]]]:
    """Every population split into groups of shared parameters, voltages shifted by ``v_reset``."""
    groups: dict[str, NeuronGroup] = {}
    by_population: dict[str, list[str]] = {}
    for name in model.order:
        pop = model.populations[name]
        if pop.coeffs.reset_mode != "value":
            raise GraphError(
                f"node '{name}': reset_mode '{pop.coeffs.reset_mode}' has no Lava counterpart "
                "(Lava's LIF resets the voltage to a value); export it with reset_mode 'value'"
            )
        parts = _split(model, name)
        by_population[name] = []
        for k, (index, (du, dv, vth, reset)) in enumerate(parts):
            gname = name if len(parts) == 1 else f"{name}#{k}"
            bias = pop.coeffs.bias.ravel()[index] - dv * reset
            v_start = pop.coeffs.initial_state()[1].ravel()[index] - reset
            groups[gname] = NeuronGroup(
                gname, name, index, du, dv, vth - reset, reset, bias, v_start, model.depth[name]
            )
            by_population[name].append(gname)
    return groups, by_population


def _graded_source(sources: dict[str, GradedSource], kind: str, name: str, shift: int) -> str:
    """The key of graded source ``(kind, name, shift)``, added to ``sources`` on first use."""
    src = GradedSource(kind, name, shift)
    sources.setdefault(src.key, src)
    return src.key


def _connection_synapses(
    model: NetworkModel,
    groups: dict[str, NeuronGroup],
    by_population: dict[str, list[str]],
    sources: dict[str, GradedSource],
) -> list[Synapse]:
    """The synapses of every connection, one per (source group, target group) non-zero block."""
    synapses: list[Synapse] = []
    for conn in model.connections:
        pop = model.populations[conn.target]
        gain = pop.coeffs.input_gain.ravel()
        target_groups = [groups[g] for g in by_population[conn.target]]
        label = f"{conn.source} → {conn.target} ({', '.join(conn.nodes) or 'direct'})"
        if conn.recurrent:
            label += ", recurrent"
        conv = None
        if conn.conv is not None and len(target_groups) == 1 and np.all(gain == gain[0]):
            whole_source = conn.source in model.inputs or len(by_population[conn.source]) == 1
            if whole_source:
                conv = dataclasses.replace(conn.conv, weight=conn.conv.weight * gain[0])
        if conn.source in model.inputs:
            key = _graded_source(sources, "input", conn.source, conn.extra_delay)
            for g in target_groups:
                weight = _scale_rows(_rows(conn.weight, g.index, pop.size), gain[g.index])
                synapses.append(Synapse(key, g.name, weight, True, conv, label))
            continue
        if conn.extra_delay:
            raise GraphError(
                f"connection {label}: the source is {conn.extra_delay} step(s) shallower than the "
                "target's other inputs; Lava would need axonal delays, which are not supported"
            )
        source_pop = model.populations[conn.source]
        for g in target_groups:
            rows = _scale_rows(_rows(conn.weight, g.index, pop.size), gain[g.index])
            for h in (groups[x] for x in by_population[conn.source]):
                block = _cols(rows, h.index, source_pop.size)
                if _nonzero(block):
                    synapses.append(
                        Synapse(h.name, g.name, block, False, conv, label, conn.recurrent)
                    )
    return synapses


def _bias_synapses(
    model: NetworkModel,
    groups: dict[str, NeuronGroup],
    by_population: dict[str, list[str]],
    sources: dict[str, GradedSource],
) -> list[Synapse]:
    """Synaptic biases, fed from one constant source through a column per group."""
    synapses: list[Synapse] = []
    constant = None
    for name, bias in model.biases.items():
        gain = model.populations[name].coeffs.input_gain.ravel()
        for g in (groups[x] for x in by_population[name]):
            column = (gain * bias)[g.index][:, None]
            if np.any(column != 0):
                constant = constant or _graded_source(sources, "constant", CONSTANT, 0)
                synapses.append(Synapse(constant, g.name, column, True, None, f"bias of {name}"))
    return synapses


def _initial_voltage_pulses(groups: dict[str, NeuronGroup], steps: int) -> dict[str, np.ndarray]:
    """Per group whose initial voltage is not 0: the weights ``(n, 2)`` of its two window pulses.

    One column (``(n, 1)``) for one-step images, which have no window step 1.
    """
    pulse_weights = {}
    for g in groups.values():
        if not np.any(g.v_start):
            continue
        first = (1.0 - g.dv) * g.v_start
        weight = np.stack([first, -(1.0 - g.du) * first], 1) if steps > 1 else first[:, None]
        pulse_weights[g.name] = weight
    return pulse_weights


def source_width(plan: LavaPlan, key: str) -> int:
    src = plan.sources[key]
    if src.kind == "input":
        return int(np.prod(plan.input_shapes[src.name]))
    return 1 if src.kind in ("constant", "gap") else (2 if plan.steps > 1 else 1)


def source_data(
    plan: LavaPlan, key: str, inputs: dict[str, np.ndarray], images: int, total: int
) -> np.ndarray:
    """The ``(width, total)`` array a graded source plays over ``total`` Lava steps.

    This is Lava's ``RingBuffer`` layout (time last). ``inputs[name]`` has shape ``(images, steps,
    *shape)``; step ``s`` of image ``i`` is played at ``τ = iW + s + shift`` (``W = window``).
    """
    src = plan.sources[key]
    window = plan.window
    width = images * window + max(plan.max_depth, src.shift + 2)
    out = np.zeros((source_width(plan, key), width))
    starts = np.arange(images) * window + src.shift
    if src.kind == "constant":
        out[:] = 1.0
    elif src.kind == "pulse":
        for channel in range(out.shape[0]):
            out[channel, starts + channel] = 1.0
    elif src.kind == "gap":  # the step before each window, the first one's included
        out[0, np.concatenate([starts[:1] - 1, starts + plan.steps]) if images else []] = 1.0
    else:
        data = np.asarray(inputs[src.name], np.float64).reshape(images, plan.steps, -1)
        columns = (starts[:, None] + np.arange(plan.steps)).ravel()
        out[:, columns] = data.reshape(images * plan.steps, -1).T
    return out[:, :total]


def check_inputs(plan: LavaPlan, inputs: dict[str, np.ndarray]) -> int:
    """Validate ``{input: (images, steps, *shape)}``; return the number of images."""
    images = None
    for name, shape in plan.input_shapes.items():
        if name not in inputs:
            raise GraphError(f"no input array given for Input node '{name}'")
        data = np.asarray(inputs[name])
        n_values = int(np.prod(shape))
        if data.ndim < 2 or data.shape[1] != plan.steps or int(np.prod(data.shape[2:])) != n_values:
            raise GraphError(
                f"input '{name}' has shape {data.shape}; expected (images, {plan.steps}, "
                f"{', '.join(map(str, shape))})"
            )
        if images is not None and data.shape[0] != images:
            raise GraphError(
                f"input '{name}' has {data.shape[0]} images, another input has {images}"
            )
        images = data.shape[0]
        if not np.all(np.isfinite(data)):
            raise GraphError(f"input '{name}' contains NaN or Inf")
    if images is None:
        raise GraphError("the graph has no Input node")
    return images


def assemble(
    plan: LavaPlan, population: str, per_group: dict[str, np.ndarray], images: int
) -> np.ndarray:
    """Put group records ``(total_steps, group.size)`` back into ``(images, T, *shape)``, aligned.

    Group ``g`` of depth ``k`` shows step ``s`` of image ``i`` at Lava step ``iW + s + k``.
    """
    shape = plan.population_shapes[population]
    first = per_group[plan.by_population[population][0]]
    flat = np.zeros((images, plan.steps, int(np.prod(shape))), dtype=first.dtype)
    for gname in plan.by_population[population]:
        g = plan.groups[gname]
        rows = per_group[gname][g.depth : g.depth + images * plan.window]
        rows = rows.reshape(images, plan.window, g.size)[:, : plan.steps]
        flat[:, :, g.index] = rows
    return flat.reshape(images, plan.steps, *shape)

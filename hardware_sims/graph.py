r"""NIR graph analysis shared by the Lava mapper, the numpy reference simulator and the cost models.

numpy, scipy and nir only: imported in both environments.

A NIR graph is read as *populations* (the neuron nodes ``LIF``, ``CubaLIF``, ``IF``), *graded
sources* (the ``Input`` nodes) and *connections*: every path ``source → synapse … → population``
through synapse nodes (``Affine``, ``Linear``, ``Scale``, ``Conv2d``) and pass-through nodes
(``Flatten``, identity on C-order flattened vectors) is composed into one matrix
:math:`W_{path} = M_k \cdots M_1` (shape ``(n_target, n_source)``). Synapse biases are kept apart:
the bias :math:`b` of a node reaches a population through the matrices downstream of that node
only, so a bias is counted once even when the node has several inputs. Every population is
flattened to 1-D in C order (NIR and torch both use ``(C, H, W)``).

*Depth* is how many synapse hops separate a population from the inputs,
``depth = 1 + max(depth(source))`` with ``depth(Input) = 0``. Lava delays every connection by one
step, so a population of depth ``k`` runs ``k`` steps behind the discrete model; a connection from
a shallower source must be held back ``extra_delay = depth(target) − 1 − depth(source)`` steps.

*Recurrence* follows :func:`exporters.graph_rules.evaluation_order`: an edge out of a neuron that
lies on a cycle carries the neuron's output of the previous step, so a connection between two
populations of one strongly connected component (a self-loop included) is ``recurrent``. Lava's
one-step ``Dense`` delay is exactly that step when source and target have the same depth, so every
population of a component gets the component's depth, ``1 + max`` over the sources outside it, and
a recurrent connection's ``extra_delay`` is ``depth(target) − depth(source) = 0``. When the graph
has a loop every population is one step deeper still: the Lava plan needs the step before each
window free (:mod:`hardware_sims.plan`). ``loops`` names one cycle per component, as
``a → w_rec → a``. A cycle without a neuron is refused, naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import scipy.sparse

from exporters.graph_rules import NIRGraphError, _strongly_connected, recorded_dt
from exporters.semantics import (
    DT_KEY,
    INTEGRATOR_TYPES,
    NEURON_TYPES,
    DiscreteNeuron,
    discretize,
)
from exporters.validate import load_nir
from lorsp_neuro.errors import LorspError

Matrix = np.ndarray | scipy.sparse.csr_matrix


class GraphError(LorspError, ValueError):
    """A NIR graph cannot be simulated here; the message names the node and the reason."""


def load_graph(path: str | Path) -> nir.NIRGraph:
    """Read and validate a NIR file (:func:`exporters.validate.load_nir`: errors name the file)."""
    return load_nir(path)


def simulation_dt(graph: nir.NIRGraph, dt: float | None = None) -> float:
    """The simulation step: ``dt`` if given, else the step recorded in the graph's metadata."""
    if dt is None:
        try:
            dt = recorded_dt(graph)
        except NIRGraphError as exc:
            raise GraphError(str(exc)) from None
        if dt is None:
            raise GraphError(
                f"the graph's metadata has no '{DT_KEY}'; pass dt explicitly "
                "(lorsp cosim/energy: --dt SECONDS)"
            )
    if not np.isfinite(dt) or dt <= 0:
        raise GraphError(f"dt must be finite and > 0, got {dt}")
    return float(dt)


def numel(shape) -> int:
    return int(math.prod(int(s) for s in shape))


# --------------------------------------------------------------------------------------------
# Conv2d geometry and its matrix


@dataclass(frozen=True)
class Conv2dGeometry:
    """A NIR ``Conv2d`` in torch layout: activations ``(C, H, W)``, weight ``(C_out, C_in/g, kH, kW)``.

    ``padding`` is ``((top, bottom), (left, right))``; NIR's ``'same'`` pads like torch
    (``left = total // 2``), so it can be asymmetric for even kernels.
    """

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int

    @property
    def symmetric_padding(self) -> bool:
        return all(a == b for a, b in self.padding)


def _pair(value, what: str, name: str) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).astype(np.int64).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise GraphError(f"node '{name}': Conv2d {what} must be one or two integers, got {value}")
    return int(arr[0]), int(arr[1])


def conv2d_geometry(node: nir.Conv2d, in_shape: tuple[int, ...], name: str) -> Conv2dGeometry:
    """Resolve shapes and padding of a NIR ``Conv2d`` fed with ``in_shape`` (``(C, H, W)``)."""
    weight = np.asarray(node.weight, dtype=np.float64)
    if weight.ndim != 4:
        raise GraphError(f"node '{name}': Conv2d weight must be 4-D, got shape {weight.shape}")
    c_out, c_in_group, kh, kw = weight.shape
    groups = int(node.groups)
    if node.input_shape is not None:
        spatial = tuple(int(s) for s in np.atleast_1d(node.input_shape))
        expected = (c_in_group * groups, *spatial)
        if numel(expected) != numel(in_shape):
            raise GraphError(
                f"node '{name}': Conv2d expects input {expected}, but its source has shape "
                f"{tuple(in_shape)}"
            )
        in_shape = expected
    if len(in_shape) != 3:
        raise GraphError(
            f"node '{name}': Conv2d needs a (C, H, W) input; got shape {tuple(in_shape)} and no "
            "input_shape on the node"
        )
    c_in, h, w = (int(s) for s in in_shape)
    if c_in != c_in_group * groups or c_out % groups:
        raise GraphError(
            f"node '{name}': Conv2d weight {weight.shape} with groups={groups} does not fit "
            f"{c_in} input channels"
        )
    stride = _pair(node.stride, "stride", name)
    dilation = _pair(node.dilation, "dilation", name)
    if isinstance(node.padding, str):
        if node.padding == "valid":
            padding = ((0, 0), (0, 0))
        else:  # 'same', as torch: output size = input size at stride 1
            if stride != (1, 1):
                raise GraphError(f"node '{name}': Conv2d padding 'same' needs stride 1")
            totals = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
            padding = tuple((t // 2, t - t // 2) for t in totals)
    else:
        ph, pw = _pair(node.padding, "padding", name)
        padding = ((ph, ph), (pw, pw))
    out_h = (h + sum(padding[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + sum(padding[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise GraphError(f"node '{name}': Conv2d output would be empty for input {in_shape}")
    bias = np.asarray(node.bias if node.bias is not None else 0.0, np.float64)
    bias = np.broadcast_to(bias.ravel() if bias.size > 1 else bias, (c_out,)).copy()
    return Conv2dGeometry(
        in_shape=(c_in, h, w),
        out_shape=(c_out, int(out_h), int(out_w)),
        weight=weight,
        bias=bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )


def conv2d_matrix(geom: Conv2dGeometry) -> scipy.sparse.csr_matrix:
    r"""The cross-correlation of ``geom`` (torch semantics) as a sparse ``(n_out, n_in)`` matrix.

    :math:`y[o, i, j] = \sum_{c, a, b} w[o, c, a, b]\, x[g(o)·C_g + c,\ i s_h − p_t + a d_h,\
    j s_w − p_l + b d_w]`, taps that fall into the zero padding dropped.
    """
    c_in, h, w = geom.in_shape
    c_out, out_h, out_w = geom.out_shape
    _, c_group, kh, kw = geom.weight.shape
    o, c, a, b, i, j = np.meshgrid(
        np.arange(c_out),
        np.arange(c_group),
        np.arange(kh),
        np.arange(kw),
        np.arange(out_h),
        np.arange(out_w),
        indexing="ij",
    )
    in_c = (o // (c_out // geom.groups)) * c_group + c
    row = i * geom.stride[0] - geom.padding[0][0] + a * geom.dilation[0]
    col = j * geom.stride[1] - geom.padding[1][0] + b * geom.dilation[1]
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    values = geom.weight[o, c, a, b][inside]
    out_index = ((o * out_h + i) * out_w + j)[inside]
    in_index = ((in_c * h + row) * w + col)[inside]
    matrix = scipy.sparse.coo_matrix(
        (values, (out_index, in_index)), shape=(c_out * out_h * out_w, c_in * h * w)
    ).tocsr()
    matrix.sum_duplicates()
    return matrix


# --------------------------------------------------------------------------------------------
# One mapper per synapse type: (node, input shape, name) → (matrix, bias, output shape)


@dataclass
class SynapseMap:
    matrix: Matrix  # (n_out, n_in)
    bias: np.ndarray | None  # (n_out,)
    out_shape: tuple[int, ...]
    conv: Conv2dGeometry | None = None


def _check_in(name: str, kind: str, expected: int, in_shape) -> None:
    if expected != numel(in_shape):
        raise GraphError(
            f"node '{name}': {kind} expects {expected} inputs, but its source has shape "
            f"{tuple(in_shape)} ({numel(in_shape)} values)"
        )


def _weight_2d(node, name: str) -> np.ndarray:
    weight = np.asarray(node.weight, dtype=np.float64)
    if weight.ndim != 2:
        raise GraphError(
            f"node '{name}': {type(node).__name__} weight must be 2-D, got {weight.shape}"
        )
    return weight


def _map_affine(node: nir.Affine, in_shape, name: str) -> SynapseMap:
    weight = _weight_2d(node, name)
    _check_in(name, "Affine", weight.shape[1], in_shape)
    bias = np.broadcast_to(np.asarray(node.bias, np.float64).ravel(), (weight.shape[0],)).copy()
    return SynapseMap(weight, bias if np.any(bias != 0) else None, (weight.shape[0],))


def _map_linear(node: nir.Linear, in_shape, name: str) -> SynapseMap:
    weight = _weight_2d(node, name)
    _check_in(name, "Linear", weight.shape[1], in_shape)
    return SynapseMap(weight, None, (weight.shape[0],))


def _map_scale(node: nir.Scale, in_shape, name: str) -> SynapseMap:
    scale = np.asarray(node.scale, np.float64)
    _check_in(name, "Scale", scale.size, in_shape)
    out_shape = tuple(scale.shape) if scale.ndim else tuple(in_shape)
    return SynapseMap(scipy.sparse.diags(scale.ravel(), format="csr"), None, out_shape)


def _map_conv2d(node: nir.Conv2d, in_shape, name: str) -> SynapseMap:
    geom = conv2d_geometry(node, tuple(in_shape), name)
    bias = np.repeat(geom.bias, geom.out_shape[1] * geom.out_shape[2])
    return SynapseMap(
        conv2d_matrix(geom), bias if np.any(bias != 0) else None, geom.out_shape, geom
    )


#: NIR synapse type → mapper returning its matrix, bias and output shape.
SYNAPSE_MAPPERS: dict[type, Callable[..., SynapseMap]] = {
    nir.Affine: _map_affine,
    nir.Linear: _map_linear,
    nir.Scale: _map_scale,
    nir.Conv2d: _map_conv2d,
}


def _map_flatten(node: nir.Flatten, in_shape, name: str) -> tuple[int, ...]:
    return (numel(in_shape),)


#: NIR types that reshape without computing (identity on C-order flattened vectors).
PASS_THROUGH: dict[type, Callable[..., tuple[int, ...]]] = {nir.Flatten: _map_flatten}


def is_neuron(node) -> bool:
    return type(node).__name__ in NEURON_TYPES


# --------------------------------------------------------------------------------------------
# The network model


@dataclass
class Population:
    """A neuron node: its shape and canonical discrete coefficients (exporters.semantics)."""

    name: str
    shape: tuple[int, ...]
    coeffs: DiscreteNeuron

    @property
    def size(self) -> int:
        return numel(self.shape)


@dataclass
class Connection:
    """All paths from one source (Input or population) into one population, composed.

    ``conv`` is set when the path is a single ``Conv2d`` (Flatten aside): the Lava mapper can
    then use Lava's ``Conv`` instead of the matrix. ``nodes`` lists the synapse nodes passed.
    """

    source: str
    target: str
    weight: Matrix
    conv: Conv2dGeometry | None
    nodes: tuple[str, ...]
    extra_delay: int = 0
    recurrent: bool = False  # on a loop: carries the source's spikes of the previous step


@dataclass
class NetworkModel:
    dt: float
    inputs: dict[str, tuple[int, ...]]
    populations: dict[str, Population]
    connections: list[Connection]
    biases: dict[str, np.ndarray]  # population → summed synaptic bias (n,), reached every step
    depth: dict[str, int]
    order: list[str]  # populations, sources before targets
    unused: list[str] = field(default_factory=list)  # nodes that reach no population
    loops: list[str] = field(default_factory=list)  # one cycle per recurrent component, named

    @property
    def max_depth(self) -> int:
        return max((self.depth[p] for p in self.populations), default=0)

    def source_size(self, name: str) -> int:
        if name in self.inputs:
            return numel(self.inputs[name])
        return self.populations[name].size

    def incoming(self, target: str) -> list[Connection]:
        return [c for c in self.connections if c.target == target]

    def outgoing(self, source: str) -> list[Connection]:
        return [c for c in self.connections if c.source == source]

    def fan_out(self, source: str) -> np.ndarray:
        """Synapses leaving each element of ``source``: non-zero weights per column, all targets."""
        counts = np.zeros(self.source_size(source), dtype=np.int64)
        for conn in self.outgoing(source):
            counts += nonzero_per_column(conn.weight)
        return counts


def nonzero_per_column(matrix: Matrix) -> np.ndarray:
    if scipy.sparse.issparse(matrix):
        csc = scipy.sparse.csc_matrix(matrix)
        csc.eliminate_zeros()
        return np.diff(csc.indptr).astype(np.int64)
    return np.count_nonzero(matrix, axis=0).astype(np.int64)


def _input_shape(node: nir.Input, name: str) -> tuple[int, ...]:
    values = list(node.input_type.values())
    if len(values) != 1 or values[0] is None:
        raise GraphError(f"Input node '{name}' must declare exactly one shape")
    return tuple(int(s) for s in np.atleast_1d(values[0]))


def _compose(outer: SynapseMap, inner: Matrix | None) -> Matrix:
    if inner is None:
        return outer.matrix
    product = outer.matrix @ inner
    return product.tocsr() if scipy.sparse.issparse(product) else np.asarray(product)


def _add(a: Matrix, b: Matrix) -> Matrix:
    if scipy.sparse.issparse(a) and scipy.sparse.issparse(b):
        return (a + b).tocsr()
    return np.asarray(a.toarray() if scipy.sparse.issparse(a) else a) + np.asarray(
        b.toarray() if scipy.sparse.issparse(b) else b
    )


def analyse(graph: nir.NIRGraph, dt: float | None = None) -> NetworkModel:
    """Populations, composed connections, biases and depths of ``graph`` (see module doc)."""
    dt = simulation_dt(graph, dt)
    successors = _successors(graph)
    _check_node_types(graph.nodes)
    inputs = {
        n: _input_shape(node, n) for n, node in graph.nodes.items() if isinstance(node, nir.Input)
    }
    populations = _populations(graph.nodes, dt)
    component, loops = _loops(graph.nodes, successors)
    paths, biases, reached = _trace_paths(graph.nodes, successors, inputs, populations, component)
    connections = _compose_connections(paths, inputs, populations)
    order = _topological_order(populations, connections)
    depth = _depths(inputs, order, connections, lead=1 if loops else 0)
    unused = [
        n
        for n, node in graph.nodes.items()
        if n not in reached and n not in inputs and not isinstance(node, nir.Output)
    ]
    return NetworkModel(
        dt, inputs, populations, connections, biases, depth, order, unused, list(loops.values())
    )


def _cycle(start: str, members: set[str], successors: dict[str, list[str]]) -> list[str]:
    """A shortest cycle through ``start`` within ``members``: ``[start, …, start]``."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for nxt in successors[name]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [name]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if name != start else [start] * 2
                if nxt not in parent:
                    parent[nxt] = name
                    following.append(nxt)
        frontier = following
    return [start, start]


def _loops(nodes: dict, successors: dict[str, list[str]]) -> tuple[dict[str, int], dict[int, str]]:
    """Component of every node, and one named cycle per component that has one.

    Raises naming the cycle when a component has no neuron to carry values between steps.
    """
    component = _strongly_connected(nodes, successors)
    members: dict[int, list[str]] = {}
    for name in nodes:
        members.setdefault(component[name], []).append(name)
    loops: dict[int, str] = {}
    for comp, names in members.items():
        if len(names) == 1 and names[0] not in successors[names[0]]:
            continue
        neurons = [n for n in names if is_neuron(nodes[n])]
        cycle = " → ".join(_cycle((neurons or names)[0], set(names), successors))
        if not neurons:
            raise GraphError(
                f"the loop {cycle} has no neuron; every cycle needs a spiking neuron (LIF, "
                "CubaLIF, IF) to carry its values to the next step"
            )
        loops[comp] = cycle
    return component, loops


def _successors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    """Targets of every node's outgoing edges; raises on an edge naming an unknown node."""
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise GraphError(f"edge ({src} → {dst}) names unknown node '{end}'")
        successors[src].append(dst)
    return successors


def _check_node_types(nodes: dict) -> None:
    """Refuse nested graphs, integrators and every type without a mapper here."""
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise GraphError(f"node '{name}': nested NIR graphs are not supported; flatten it")
        known = (nir.Input, nir.Output, *SYNAPSE_MAPPERS, *PASS_THROUGH)
        if type(node).__name__ in INTEGRATOR_TYPES:
            raise GraphError(
                f"node '{name}': {type(node).__name__} is a non-spiking integrator whose output "
                "is its voltage; it has no spiking-network counterpart here (use LIF, CubaLIF, IF)"
            )
        if not isinstance(node, known) and not is_neuron(node):
            raise GraphError(
                f"node '{name}': NIR type {type(node).__name__} is not supported "
                f"(supported: Input, Output, {', '.join(t.__name__ for t in SYNAPSE_MAPPERS)}, "
                f"Flatten, {', '.join(NEURON_TYPES)})"
            )


def _populations(nodes: dict, dt: float) -> dict[str, Population]:
    """Every neuron node with its discrete coefficients at step ``dt``; raises if there is none."""
    populations = {}
    for name, node in nodes.items():
        if is_neuron(node):
            coeffs = discretize(node, dt, f"node '{name}'")
            populations[name] = Population(name, tuple(int(s) for s in coeffs.shape), coeffs)
    if not populations:
        raise GraphError("the graph has no spiking neuron node (LIF, CubaLIF, IF)")
    return populations


#: ``(source, target population, recurrent)`` → the paths between them: ``(matrix, conv, synapse
#: nodes)``. A path is recurrent when its first edge is (``exporters.graph_rules``: out of a neuron
#: into a node of the neuron's own loop), so it carries the previous step.
Paths = dict[tuple[str, str, bool], list[tuple[Matrix, Conv2dGeometry | None, tuple]]]


def _trace_paths(
    nodes: dict,
    successors: dict[str, list[str]],
    inputs: dict[str, tuple[int, ...]],
    populations: dict[str, Population],
    component: dict[str, int],
) -> tuple[Paths, dict[str, np.ndarray], set[str]]:
    """Walk forward from every source to the populations it reaches; return what was found.

    Returns ``(paths, biases, reached)``: the composed matrix of every path, the synaptic bias
    summed into each population, and the nodes some walk passed through.
    """
    paths: Paths = {}
    biases: dict[str, np.ndarray] = {}
    reached: set[str] = set()
    bias_walked: set[str] = set()

    def arrive(target: str, shape: tuple, what: str) -> None:
        pop = populations[target]
        if numel(shape) != pop.size:
            raise GraphError(
                f"node '{target}': receives {numel(shape)} values from {what}, but has "
                f"{pop.size} neurons (shape {pop.shape})"
            )

    def walk(source, name, matrix, bias, shape, conv, trail, visiting, rec=None):
        """Follow edges forward from synapse node ``name`` until populations are reached.

        ``rec``: whether the path is recurrent; ``None`` at the source, decided by its first edge.
        """
        for nxt in successors[name]:
            node = nodes[nxt]
            hop_rec = rec
            if rec is None:
                hop_rec = source in populations and component[source] == component[nxt]
            if nxt in visiting and not is_neuron(node):
                plain = {n for n in visiting if not is_neuron(nodes[n])}
                cycle = " → ".join(_cycle(nxt, plain, successors))
                raise GraphError(
                    f"the loop {cycle} has no neuron; every cycle needs a spiking neuron (LIF, "
                    "CubaLIF, IF) to carry its values to the next step"
                )
            if is_neuron(node):
                reached.add(nxt)
                what = f"'{source}'" if source else f"the bias of '{trail[0]}'"
                arrive(nxt, shape, what)
                if source is None:
                    biases[nxt] = biases.get(nxt, 0.0) + np.asarray(bias).ravel()
                else:
                    paths.setdefault((source, nxt, hop_rec), []).append((matrix, conv, trail))
                continue
            if isinstance(node, nir.Output):
                continue
            if isinstance(node, nir.Input):
                raise GraphError(f"node '{nxt}': an Input node cannot have incoming edges")
            reached.add(nxt)
            if type(node) in PASS_THROUGH:
                new_shape = PASS_THROUGH[type(node)](node, shape, nxt)
                walk(source, nxt, matrix, bias, new_shape, conv, trail, visiting | {nxt}, hop_rec)
                continue
            mapped = SYNAPSE_MAPPERS[type(node)](node, shape, nxt)
            if source is None:
                new_bias = mapped.matrix @ bias
                walk(None, nxt, None, new_bias, mapped.out_shape, None, trail, visiting | {nxt})
                continue
            first = matrix is None
            new_matrix = _compose(mapped, matrix)
            new_conv = mapped.conv if first else None
            walk(
                source,
                nxt,
                new_matrix,
                None,
                mapped.out_shape,
                new_conv,
                (*trail, nxt),
                visiting | {nxt},
                hop_rec,
            )
            if mapped.bias is not None and nxt not in bias_walked:  # once, whatever the fan-in
                bias_walked.add(nxt)
                walk(None, nxt, None, mapped.bias, mapped.out_shape, None, (nxt,), {nxt})

    for source in (*inputs, *populations):
        shape = inputs[source] if source in inputs else populations[source].shape
        walk(source, source, None, None, shape, None, (), frozenset({source}))
    return paths, biases, reached


def _compose_connections(
    paths: Paths, inputs: dict[str, tuple[int, ...]], populations: dict[str, Population]
) -> list[Connection]:
    """One connection per lone-Conv2d path, plus the sum of the other paths per (source, target)
    and recurrence."""
    connections = []
    for (source, target, rec), found in paths.items():
        plain = [(m, trail) for m, conv, trail in found if conv is None]
        for m, conv, trail in found:
            if conv is not None:
                connections.append(Connection(source, target, m, conv, trail, recurrent=rec))
        if plain:
            n_in = inputs[source] if source in inputs else populations[source].shape
            weight = None
            for m, _ in plain:
                m = m if m is not None else scipy.sparse.identity(numel(n_in), format="csr")
                weight = m if weight is None else _add(weight, m)
            trail = tuple(dict.fromkeys(n for _, t in plain for n in t))
            connections.append(Connection(source, target, weight, None, trail, recurrent=rec))
    return connections


def _depths(
    inputs: dict[str, tuple[int, ...]],
    order: list[str],
    connections: list[Connection],
    lead: int = 0,
) -> dict[str, int]:
    """Synapse hops from the inputs to every population; sets each connection's ``extra_delay``.

    A recurrent connection asks ``depth(target) >= depth(source)``, any other one ``>= 1 +
    depth(source)``; the smallest depths that satisfy all (relaxed until stable: ``order`` puts
    the sources of non-recurrent connections first), plus ``lead`` for every population.
    """
    depth = {name: 0 for name in inputs}
    depth.update({name: 1 for name in order})
    for _ in range(len(order) + 1):
        changed = False
        for name in order:
            for c in connections:
                if c.target == name:
                    need = depth[c.source] + (0 if c.recurrent else 1)
                    if need > depth[name]:
                        depth[name], changed = need, True
        if not changed:
            break
    for name in order:
        depth[name] += lead
    for conn in connections:
        conn.extra_delay = depth[conn.target] - (0 if conn.recurrent else 1) - depth[conn.source]
    return depth


def _topological_order(populations: dict[str, Population], connections) -> list[str]:
    """Populations, the sources of every non-recurrent connection first."""
    preds = {
        name: {c.source for c in connections if c.target == name and not c.recurrent}
        for name in populations
    }
    order, done = [], set()
    pending = list(populations)
    while pending:
        ready = [p for p in pending if all(s in done or s not in populations for s in preds[p])]
        if not ready:
            raise GraphError(f"populations {sorted(pending)} cannot be ordered")
        for p in ready:
            order.append(p)
            done.add(p)
            pending.remove(p)
    return order

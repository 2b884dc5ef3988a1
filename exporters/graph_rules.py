"""What a well-formed NIR graph is here: node shapes, evaluation order, time step (numpy and nir only).

The Lava environment uses it too, through :func:`exporters.validate.load_nir`. Every node type
this project runs has a rule in :data:`SHAPE_RULES` that checks the node against the shape entering
it and returns the shape leaving it. :func:`evaluation_order` orders the nodes of one time step: an
edge out of a stateful node on a cycle is *recurrent* (it carries the previous step's output), and
a cycle without a stateful node is refused. :func:`infer_shapes` propagates shapes from the
``Input`` nodes in that order, :func:`check_node` checks one node's name, type and parameters, and
:func:`recorded_dt` reads the time step the exporter wrote into the graph's metadata. Every failure
is a :class:`NIRGraphError` naming the node and the problem; size limits and files are
:mod:`exporters.validate`'s.

Shapes never include the batch or time dimension. ``Flatten`` counts its ``start_dim`` and
``end_dim`` in that unbatched shape, as ``nir``'s own type inference does. An ``Input`` or
``Output`` node whose declared shape differs from its neighbour's only by size-1 dimensions (other
tools write ``(1, n)`` for ``(n,)``) is accepted with a :class:`NIRShapeWarning`: an ``Input``
takes data of its declared shape and passes it on in the shape its successors' parameters fix
(a ``Linear``/``Affine`` weight, a ``Scale``/``Threshold``/``Delay`` array, a neuron population,
a ``Flatten``'s declared input); an ``Output`` gives the shape entering it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nir
import numpy as np

from exporters.semantics import (
    DT_KEY,
    RESET_KEY,
    RESET_MODES,
    STATEFUL_TYPES,
    SemanticsError,
    population_shape,
)
from lorsp_neuro.errors import LorspError

Shape = tuple[int, ...]


class NIRGraphError(LorspError, ValueError):
    """A NIR graph is malformed; the message names the node and the problem."""


class NIRShapeWarning(UserWarning):
    """An Input or Output node's declared shape differs from its neighbour's by size-1 dims."""


def differs_by_unit_dims(a: Shape, b: Shape) -> bool:
    """Whether two different shapes are equal once their size-1 dimensions are dropped."""
    return tuple(a) != tuple(b) and [n for n in a if n != 1] == [n for n in b if n != 1]


def _accept_unit_dims(what: str, declared: Shape, neighbour: Shape, used: str) -> None:
    warnings.warn(
        f"{what}: declares shape {tuple(declared)}, its neighbour has {tuple(neighbour)}; they "
        f"differ only by size-1 dimensions, so {used}",
        NIRShapeWarning,
        stacklevel=4,
    )


def node_label(name: str, node) -> str:
    """How messages name a node: ``node 'name' (Type)``."""
    return f"node '{name}' ({type(node).__name__})"


def _shape_of(value, what: str) -> Shape:
    """A shape stored in a NIR node (array, list or scalar) as a tuple of positive ints."""
    flat = np.asarray(value).ravel()
    if flat.size == 0 and np.ndim(value) == 1:
        return ()
    if not np.issubdtype(flat.dtype, np.number) or not np.all(flat == np.round(flat)):
        raise NIRGraphError(f"{what}: shape {value!r} is not a list of integers")
    shape = tuple(int(n) for n in flat)
    if any(n < 1 for n in shape):
        raise NIRGraphError(f"{what}: shape {shape} has a dimension < 1")
    return shape


def _whole(value, field: str, what: str) -> int:
    """A node's one-integer field (``groups``, ``start_dim`` …), whatever the file stored."""
    flat = np.asarray(value).ravel()
    if flat.size != 1 or not np.issubdtype(flat.dtype, np.integer):
        raise NIRGraphError(f"{what}: {field} must be one integer, got {flat.size} {flat.dtype}")
    return int(flat[0])


def _pair(value, field: str, what: str, minimum: int) -> tuple[int, int]:
    flat = np.asarray(value).ravel()
    if flat.size not in (1, 2) or not np.issubdtype(flat.dtype, np.integer):
        raise NIRGraphError(f"{what}: {field} must be one or two integers, got {value!r}")
    pair = (int(flat[0]), int(flat[-1]))
    if min(pair) < minimum:
        raise NIRGraphError(f"{what}: {field} must be >= {minimum}, got {pair}")
    return pair


def _expect(in_shape: Shape, expected: Shape, what: str, hint: str = "") -> None:
    if tuple(in_shape) != tuple(expected):
        raise NIRGraphError(
            f"{what}: expects input of shape {tuple(expected)}, but its input has shape "
            f"{tuple(in_shape)}{hint}"
        )


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution or pooling window along one axis.

    .. math:: n_{out} = \\lfloor (n + 2p - d(k - 1) - 1) / s \\rfloor + 1
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_padding(node, spatial: int, what: str) -> tuple[int, ...] | str:
    """Padding of a Conv node: ``"same"``, or a tuple of ``spatial`` non-negative ints."""
    padding = node.padding
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * spatial
        if padding == "same":
            return "same"
        raise NIRGraphError(f"{what}: padding must be 'same', 'valid' or integers, got {padding!r}")
    if spatial == 1:
        return (_pair(padding, "padding", what, 0)[0],)
    return _pair(padding, "padding", what, 0)


def _linear_shape(name, node, in_shape: Shape) -> Shape:
    what = node_label(name, node)
    weight = np.asarray(node.weight)
    if weight.ndim != 2:
        raise NIRGraphError(f"{what}: weight must be 2-D (out, in), got shape {weight.shape}")
    if isinstance(node, nir.Affine) and np.shape(node.bias) != (weight.shape[0],):
        raise NIRGraphError(
            f"{what}: bias has shape {np.shape(node.bias)}, expected ({weight.shape[0]},)"
        )
    _expect(in_shape, (weight.shape[1],), what)
    return (weight.shape[0],)


def _conv_shape(name, node, in_shape: Shape) -> Shape:
    what = node_label(name, node)
    spatial = 1 if isinstance(node, nir.Conv1d) else 2
    weight = np.asarray(node.weight)
    if weight.ndim != spatial + 2:
        raise NIRGraphError(
            f"{what}: weight must be {spatial + 2}-D (C_out, C_in/groups, kernel…), got {weight.shape}"
        )
    groups = _whole(node.groups, "groups", what)
    c_out, c_in = weight.shape[0], weight.shape[1] * groups
    if groups < 1 or c_out % groups:
        raise NIRGraphError(f"{what}: groups={groups} does not divide C_out={c_out}")
    if np.shape(node.bias) != (c_out,):
        raise NIRGraphError(f"{what}: bias has shape {np.shape(node.bias)}, expected ({c_out},)")
    if len(in_shape) != spatial + 1 or in_shape[0] != c_in:
        raise NIRGraphError(
            f"{what}: expects input (C_in={c_in}, {spatial} spatial dims), got {tuple(in_shape)}"
        )
    stride = _pair(node.stride, "stride", what, 1)[:spatial]
    dilation = _pair(node.dilation, "dilation", what, 1)[:spatial]
    padding = conv_padding(node, spatial, what)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise NIRGraphError(f"{what}: padding 'same' needs stride 1, got {stride}")
        return (c_out, *in_shape[1:])
    sizes = tuple(
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(
            in_shape[1:], weight.shape[2:], stride, padding, dilation, strict=True
        )
    )
    if min(sizes) < 1:
        raise NIRGraphError(f"{what}: input {tuple(in_shape)} is too small for the kernel")
    return (c_out, *sizes)


def _pool_shape(name, node, in_shape: Shape) -> Shape:
    what = node_label(name, node)
    if len(in_shape) != 3:
        raise NIRGraphError(f"{what}: expects input (C, H, W), got {tuple(in_shape)}")
    kernel = _pair(node.kernel_size, "kernel_size", what, 1)
    stride = _pair(node.stride, "stride", what, 1)
    padding = _pair(node.padding, "padding", what, 0)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise NIRGraphError(f"{what}: padding {padding} exceeds half the kernel {kernel}")
    sizes = tuple(
        conv_output_size(n, k, s, p, 1)
        for n, k, s, p in zip(in_shape[1:], kernel, stride, padding, strict=True)
    )
    if min(sizes) < 1:
        raise NIRGraphError(f"{what}: input {tuple(in_shape)} is too small for the kernel")
    return (in_shape[0], *sizes)


def flatten_output_shape(in_shape: Shape, start_dim: int, end_dim: int, what: str) -> Shape:
    """Shape after flattening dims ``start_dim..end_dim`` (inclusive, unbatched, negatives allowed)."""
    ndim = len(in_shape)
    start = start_dim + ndim if start_dim < 0 else start_dim
    end = end_dim + ndim if end_dim < 0 else end_dim
    if not 0 <= start <= end < ndim:
        raise NIRGraphError(
            f"{what}: start_dim={start_dim}, end_dim={end_dim} do not fit an input of shape "
            f"{tuple(in_shape)} (NIR counts Flatten dims without the batch dimension)"
        )
    return (*in_shape[:start], int(np.prod(in_shape[start : end + 1])), *in_shape[end + 1 :])


def _flatten_shape(name, node, in_shape: Shape) -> Shape:
    what = node_label(name, node)
    declared = (node.input_type or {}).get("input")
    if declared is not None:
        _expect(in_shape, _shape_of(declared, what), what)
    return flatten_output_shape(
        in_shape,
        _whole(node.start_dim, "start_dim", what),
        _whole(node.end_dim, "end_dim", what),
        what,
    )


def _elementwise_shape(field: str) -> Callable:
    def rule(name, node, in_shape: Shape) -> Shape:
        what = node_label(name, node)
        _expect(in_shape, np.shape(getattr(node, field)), what, f" (the shape of its {field})")
        return tuple(in_shape)

    return rule


def _neuron_shape(name, node, in_shape: Shape) -> Shape:
    what = node_label(name, node)
    try:
        shape = population_shape(node, what)
    except SemanticsError as exc:
        raise NIRGraphError(str(exc)) from None
    _expect(in_shape, shape, what, " (the shape of its parameters)")
    return shape


def _output_shape(name, node, in_shape: Shape) -> Shape:
    declared = (node.output_type or {}).get("output")
    if declared is not None:
        what = node_label(name, node)
        shape = _shape_of(declared, what)
        if differs_by_unit_dims(shape, in_shape):
            _accept_unit_dims(what, shape, in_shape, "the output has its input's shape")
        else:
            _expect(in_shape, shape, what)
    return tuple(in_shape)


#: Node types whose input shape is the shape of one of their parameters.
_ELEMENTWISE_FIELDS = {nir.Scale: "scale", nir.Threshold: "threshold", nir.Delay: "delay"}


def _fixed_input_shape(node) -> Shape | None:
    """The input shape ``node``'s parameters fix, or None when they do not (Conv, pooling)."""
    if isinstance(node, (nir.Linear, nir.Affine)):
        weight = np.shape(node.weight)
        return (int(weight[1]),) if len(weight) == 2 else None
    if type(node) in _ELEMENTWISE_FIELDS:
        return tuple(int(n) for n in np.shape(getattr(node, _ELEMENTWISE_FIELDS[type(node)])))
    if is_stateful(node):
        try:
            return population_shape(node)
        except SemanticsError:
            return None
    declared = (getattr(node, "input_type", None) or {}).get("input")
    if isinstance(node, nir.Flatten) and declared is not None:
        return tuple(int(n) for n in np.atleast_1d(declared))
    return None


def _input_passes_on(graph: nir.NIRGraph, name: str, declared: Shape) -> Shape:
    """The shape an Input node passes on: its declared shape, or its successors' when that differs
    only by size-1 dimensions (module doc)."""
    successors = [graph.nodes[dst] for src, dst in graph.edges if src == name]
    fixed = {_fixed_input_shape(node) for node in successors} - {None}
    if len(fixed) == 1:
        (shape,) = fixed
        if differs_by_unit_dims(declared, shape):
            what = node_label(name, graph.nodes[name])
            _accept_unit_dims(what, declared, shape, f"it passes its data on as {shape}")
            return shape
    return declared


#: NIR node type → rule ``(name, node, input_shape) -> output_shape`` that also checks the node.
SHAPE_RULES: dict[type, Callable] = {
    nir.Output: _output_shape,
    nir.Affine: _linear_shape,
    nir.Linear: _linear_shape,
    nir.Scale: _elementwise_shape("scale"),
    nir.Threshold: _elementwise_shape("threshold"),
    nir.Delay: _elementwise_shape("delay"),
    nir.Flatten: _flatten_shape,
    nir.Conv1d: _conv_shape,
    nir.Conv2d: _conv_shape,
    nir.SumPool2d: _pool_shape,
    nir.AvgPool2d: _pool_shape,
    **{getattr(nir, kind): _neuron_shape for kind in STATEFUL_TYPES},
}


def is_stateful(node) -> bool:
    return type(node).__name__ in STATEFUL_TYPES


@dataclass(frozen=True)
class GraphOrder:
    """How a graph is evaluated in one time step.

    ``order`` lists every node so that each comes after the sources of its non-recurrent edges.
    An edge is *recurrent* when its source is a stateful node and the edge lies on a cycle; it
    carries the source's output of the previous step. ``predecessors[node]`` keeps the file's
    edge order.
    """

    order: tuple[str, ...]
    predecessors: dict[str, tuple[str, ...]]
    recurrent: frozenset[tuple[str, str]]


def _strongly_connected(nodes: Iterable[str], successors: dict[str, list[str]]) -> dict[str, int]:
    """Component id of every node (Tarjan's algorithm, iterative so deep chains do not recurse)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(successors[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = index[node]
                    if member == node:
                        break
    return component


def evaluation_order(graph: nir.NIRGraph) -> GraphOrder:
    """Order of evaluation within a step; raises :class:`NIRGraphError` on a cycle without state."""
    predecessors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for edge in graph.edges:
        if len(edge) != 2:
            raise NIRGraphError(f"edge {edge!r} does not have exactly two ends")
        src, dst = edge
        for end in (src, dst):
            if end not in graph.nodes:
                raise NIRGraphError(f"edge ({src} → {dst}) names unknown node '{end}'")
        if src in predecessors[dst]:
            raise NIRGraphError(f"edge ({src} → {dst}) appears twice")
        predecessors[dst].append(src)
        successors[src].append(dst)
    component = _strongly_connected(graph.nodes, successors)
    recurrent = frozenset(
        (src, dst)
        for dst, srcs in predecessors.items()
        for src in srcs
        if component[src] == component[dst] and is_stateful(graph.nodes[src])
    )
    pending = {
        name: sum((src, name) not in recurrent for src in srcs)
        for name, srcs in predecessors.items()
    }
    ready = [name for name in graph.nodes if pending[name] == 0]
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for dst in successors[name]:
            if (name, dst) not in recurrent:
                pending[dst] -= 1
                if pending[dst] == 0:
                    ready.append(dst)
    if len(order) != len(graph.nodes):
        members: dict[int, int] = {}
        for name in graph.nodes:
            members[component[name]] = members.get(component[name], 0) + 1
        stuck = sorted(
            name
            for name in graph.nodes
            if pending[name] > 0 and (members[component[name]] > 1 or name in successors[name])
        )
        raise NIRGraphError(
            f"nodes {stuck} form a cycle without a neuron; every cycle needs a stateful node "
            f"({', '.join(STATEFUL_TYPES)}) to carry values from one step to the next"
        )
    return GraphOrder(tuple(order), {k: tuple(v) for k, v in predecessors.items()}, recurrent)


@dataclass(frozen=True)
class GraphShapes:
    """Shapes (batch excluded) entering and leaving every node, and the evaluation order."""

    inputs: dict[str, Shape]
    outputs: dict[str, Shape]
    order: GraphOrder


def infer_shapes(graph: nir.NIRGraph, order: GraphOrder | None = None) -> GraphShapes:
    """Propagate shapes from the ``Input`` nodes; every node's rule also checks its parameters."""
    order = order or evaluation_order(graph)
    ins: dict[str, Shape] = {}
    outs: dict[str, Shape] = {}
    for name in order.order:
        node = graph.nodes[name]
        srcs = order.predecessors[name]
        if isinstance(node, nir.Input):
            if srcs:
                raise NIRGraphError(
                    f"{node_label(name, node)}: an Input cannot have incoming edges"
                )
            declared = (node.input_type or {}).get("input")
            if declared is None:
                raise NIRGraphError(f"{node_label(name, node)}: has no shape")
            ins[name] = _shape_of(declared, node_label(name, node))
            outs[name] = _input_passes_on(graph, name, ins[name])
            continue
        rule = SHAPE_RULES.get(type(node))
        if rule is None:
            raise NIRGraphError(
                f"{node_label(name, node)}: node type {type(node).__name__} is not supported "
                f"(supported: Input, {', '.join(t.__name__ for t in SHAPE_RULES)})"
            )
        # A recurrent edge comes from a stateful node, whose shape is that of its parameters.
        shapes = {
            src: _neuron_population(src, graph.nodes[src])
            if (src, name) in order.recurrent
            else outs[src]
            for src in srcs
        }
        if not shapes:
            raise NIRGraphError(f"{node_label(name, node)}: has no incoming edge")
        in_shape = shapes[srcs[0]]
        if any(shape != in_shape for shape in shapes.values()):
            raise NIRGraphError(
                f"{node_label(name, node)}: its inputs have different shapes {shapes}; "
                "edges into one node are summed, so they must agree"
            )
        ins[name] = tuple(in_shape)
        outs[name] = tuple(rule(name, node, ins[name]))
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Output) and any(src == name for src, _ in graph.edges):
            raise NIRGraphError(f"{node_label(name, node)}: an Output cannot feed another node")
    return GraphShapes(ins, outs, order)


def _neuron_population(name, node) -> Shape:
    try:
        return population_shape(node, node_label(name, node))
    except SemanticsError as exc:
        raise NIRGraphError(str(exc)) from None


def check_node(name: str, node) -> int:
    """Check one node's name, type and parameters; return how many parameter values it stores."""
    if not isinstance(name, str) or not name:
        raise NIRGraphError(f"node name {name!r} is not a non-empty string")
    if isinstance(node, nir.NIRGraph):
        raise NIRGraphError(
            f"{node_label(name, node)}: nested graphs are not supported; flatten it"
        )
    if not isinstance(node, nir.NIRNode):
        raise NIRGraphError(f"node '{name}' is a {type(node).__name__}, not a NIR node")
    return _check_parameters(name, node)


def _parameter_arrays(node) -> dict[str, object]:
    skip = {"input_type", "output_type", "metadata"}
    return {
        field.name: getattr(node, field.name)
        for field in dataclasses.fields(node)
        if field.name not in skip
    }


def _check_parameters(name: str, node) -> int:
    """Check that every numeric field is numeric and finite; return the number of values."""
    count = 0
    for field, value in _parameter_arrays(node).items():
        if value is None or isinstance(value, (str, bytes)):
            continue
        array = np.asarray(value)
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.number) or array.dtype == bool
        ):
            raise NIRGraphError(f"{node_label(name, node)}: {field} is not numeric ({array.dtype})")
        if not np.all(np.isfinite(array)):
            raise NIRGraphError(f"{node_label(name, node)}: {field} contains NaN or Inf")
        count += int(array.size)
    metadata = getattr(node, "metadata", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise NIRGraphError(f"{node_label(name, node)}: metadata is not a mapping")
    mode = (metadata or {}).get(RESET_KEY)
    if mode is not None:
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if not isinstance(mode, str) or mode not in RESET_MODES:
            raise NIRGraphError(
                f"{node_label(name, node)}: metadata {RESET_KEY}={mode!r} is not one of {RESET_MODES}"
            )
    return count


def recorded_dt(graph: nir.NIRGraph) -> float | None:
    """The time step recorded in the graph's metadata, or None; raises if it is not a positive number."""
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    if DT_KEY not in metadata:
        return None
    try:
        dt = float(np.asarray(metadata[DT_KEY]))
    except (TypeError, ValueError):
        raise NIRGraphError(f"metadata['{DT_KEY}'] is not a number: {metadata[DT_KEY]!r}") from None
    if not np.isfinite(dt) or dt <= 0:
        raise NIRGraphError(f"metadata['{DT_KEY}'] must be finite and > 0, got {dt}")
    return dt

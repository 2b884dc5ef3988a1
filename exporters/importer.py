"""NIR graph → runnable torch module, stepped in the canonical discrete form.

:func:`import_nir` reads a graph (or a file, through :func:`exporters.validate.load_nir`), checks
it, and returns an :class:`ImportedGraph`: an ``nn.Module`` that runs the graph for ``T`` steps,
``forward({input_name: (T, B, *shape)}) -> GraphRun`` with the ``Output`` nodes' values and, on
request, every neuron's spikes, voltage ``v`` and current ``u`` per step. Neurons are stepped with
the coefficients of :func:`exporters.semantics.discretize` (float64 by default, so spike trains
match the numpy reference and the Norse model exactly).

Semantics (see ``docs/nir.md``): edges into a node are summed; within one step values flow from
the inputs to the outputs with **no delay** on any edge (the discrete model; Lava's one-step
``Dense`` delay is aligned by ``hardware_sims``); an edge from a stateful node that closes a cycle
carries that node's output of the previous step. ``dt`` comes from the caller or from the graph's
``metadata["dt"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from exporters.graph_rules import (
    GraphShapes,
    NIRGraphError,
    conv_padding,
    is_stateful,
    recorded_dt,
)
from exporters.layers import Scale, SumPool2d, Threshold
from exporters.overrides import with_reset_mode
from exporters.semantics import NEURON_TYPES, DiscreteNeuron, SemanticsError, discretize
from exporters.validate import DEFAULT_LIMITS, NIRLimits, load_nir, validate_graph

#: What :meth:`ImportedGraph.forward` can record per node.
RECORD_KINDS = ("spikes", "v", "u", "output")


class NIRImportError(NIRGraphError):
    """A NIR graph cannot be imported or run; the message names the node (or input) and why."""


def canonical_step(
    current: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    decay_u: torch.Tensor,
    decay_v: torch.Tensor,
    input_gain: torch.Tensor,
    bias: torch.Tensor,
    v_threshold: torch.Tensor,
    v_reset: torch.Tensor,
    subtract: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the canonical neuron (``exporters.semantics.step`` in torch).

    .. math::
        u &= (1 - d_u)\\, u + g\\, I \\\\
        v &= (1 - d_v)\\, v + u + b \\\\
        z &= [v > v_{th}], \\qquad v \\leftarrow v_{reset} \\text{ (or } v - (v_{th} - v_{reset})
        \\text{ when subtractive) where } z

    ``decay_u`` and ``decay_v`` are ``1 - d_u`` and ``1 - d_v``. Returns ``(z, u, v)``.
    """
    u = decay_u * u + input_gain * current
    v = decay_v * v + u + bias
    spikes = v > v_threshold
    v = torch.where(spikes, v - (v_threshold - v_reset) if subtract else v_reset, v)
    return spikes.to(v.dtype), u, v


class CanonicalNeurons(nn.Module):
    """A population of NIR neurons (or integrators) stepped by :func:`canonical_step`."""

    def __init__(self, coeffs: DiscreteNeuron, spiking: bool, dtype: torch.dtype):
        super().__init__()
        self.spiking = spiking
        self.subtract = coeffs.reset_mode == "subtract"

        def buffer(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype))

        buffer("decay_u", 1.0 - coeffs.du)
        buffer("decay_v", 1.0 - coeffs.dv)
        buffer("input_gain", coeffs.input_gain)
        buffer("bias", coeffs.bias)
        buffer("v_threshold", coeffs.v_threshold)
        buffer("v_reset", coeffs.v_reset)
        v0 = coeffs.v_initial if coeffs.v_initial is not None else np.zeros(coeffs.shape)
        buffer("v_initial", v0)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.v_initial.expand(batch, *self.v_initial.shape).clone()
        return torch.zeros_like(v), v

    def forward(self, current, u, v):
        """``(output, z, u, v)``: the output is ``z`` for a spiking neuron, else ``v``."""
        z, u, v = canonical_step(
            current,
            u,
            v,
            self.decay_u,
            self.decay_v,
            self.input_gain,
            self.bias,
            self.v_threshold,
            self.v_reset,
            self.subtract,
        )
        return (z if self.spiking else v), z, u, v


def _tensor(value, dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(value, dtype=np.float64), dtype=dtype)


def _affine(name, node, in_shape, out_shape, dtype):
    weight = np.asarray(node.weight)
    bias = isinstance(node, nir.Affine)
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, dtype=dtype)
    with torch.no_grad():
        module.weight.copy_(_tensor(weight, dtype))
        if bias:
            module.bias.copy_(_tensor(node.bias, dtype))
    return module


def _conv(name, node, in_shape, out_shape, dtype):
    weight = np.asarray(node.weight)
    spatial = weight.ndim - 2
    cls = nn.Conv1d if spatial == 1 else nn.Conv2d
    groups = int(np.asarray(node.groups))

    def pair(value):
        return tuple(int(v) for v in np.broadcast_to(np.asarray(value).ravel(), (spatial,)))

    padding = conv_padding(node, spatial, f"node '{name}'")
    module = cls(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=pair(node.stride),
        padding=padding,
        dilation=pair(node.dilation),
        groups=groups,
        bias=True,
        dtype=dtype,
    )
    with torch.no_grad():
        module.weight.copy_(_tensor(weight, dtype))
        module.bias.copy_(_tensor(node.bias, dtype))
    return module


def _flatten(name, node, in_shape, out_shape, dtype):
    # NIR counts dims without the batch; torch's Flatten counts it. A negative dim is the same.
    start, end = int(np.asarray(node.start_dim)), int(np.asarray(node.end_dim))
    return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def _pool(name, node, in_shape, out_shape, dtype):
    def pair(value):
        return tuple(int(v) for v in np.broadcast_to(np.asarray(value).ravel(), (2,)))

    kernel, stride, padding = pair(node.kernel_size), pair(node.stride), pair(node.padding)
    if isinstance(node, nir.SumPool2d):
        return SumPool2d(kernel, stride, padding)
    return nn.AvgPool2d(kernel, stride, padding, count_include_pad=True)


def _scale(name, node, in_shape, out_shape, dtype):
    return Scale(_tensor(node.scale, dtype))


def _threshold(name, node, in_shape, out_shape, dtype):
    return Threshold(_tensor(node.threshold, dtype))


#: NIR graded node type → builder ``(name, node, in_shape, out_shape, dtype) -> nn.Module``.
GRADED_IMPORTERS: dict[type, Callable] = {
    nir.Affine: _affine,
    nir.Linear: _affine,
    nir.Conv1d: _conv,
    nir.Conv2d: _conv,
    nir.Flatten: _flatten,
    nir.SumPool2d: _pool,
    nir.AvgPool2d: _pool,
    nir.Scale: _scale,
    nir.Threshold: _threshold,
}
#: Every NIR node type the importer runs (neurons are stepped by :class:`CanonicalNeurons`).
SUPPORTED_TYPES = (
    "Input",
    "Output",
    *(t.__name__ for t in GRADED_IMPORTERS),
    "LIF",
    "CubaLIF",
    "IF",
    "LI",
    "CubaLI",
    "I",
)


@dataclass
class GraphRun:
    """Result of :meth:`ImportedGraph.forward`; every tensor is ``(T, B, *node_shape)``."""

    outputs: dict[str, torch.Tensor]
    records: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def spikes(self, node: str) -> torch.Tensor:
        return self.records[node]["spikes"]


class ImportedGraph(nn.Module):
    """A NIR graph as a torch module; see the module docstring for the semantics."""

    def __init__(self, graph: nir.NIRGraph, shapes: GraphShapes, dt: float | None, dtype):
        super().__init__()
        self.dt = dt
        self.dtype = dtype
        self.order = shapes.order
        self.node_types = {name: type(node).__name__ for name, node in graph.nodes.items()}
        self.input_shapes = {  # as declared; passed on as shapes.outputs (graph_rules doc)
            name: shapes.inputs[name]
            for name, node in graph.nodes.items()
            if isinstance(node, nir.Input)
        }
        self.node_shapes = dict(shapes.outputs)
        self.output_names = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
        self.neuron_names = [n for n in self.order.order if is_stateful(graph.nodes[n])]
        self.layers = nn.ModuleList()
        self._index: dict[str, int] = {}
        for name in self.order.order:
            node = graph.nodes[name]
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            module = self._build(name, node, shapes)
            self._index[name] = len(self.layers)
            self.layers.append(module)

    def _build(self, name: str, node, shapes: GraphShapes) -> nn.Module:
        kind = type(node).__name__
        if is_stateful(node):
            try:
                coeffs = discretize(node, self.dt, f"node '{name}'", shape=shapes.outputs[name])
            except SemanticsError as exc:
                raise NIRImportError(str(exc)) from None
            return CanonicalNeurons(coeffs, kind in NEURON_TYPES, self.dtype)
        builder = GRADED_IMPORTERS.get(type(node))
        if builder is None:
            raise NIRImportError(
                f"node '{name}' ({kind}): not supported by the importer "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        try:
            return builder(name, node, shapes.inputs[name], shapes.outputs[name], self.dtype)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise NIRImportError(f"node '{name}' ({kind}): cannot be built: {exc}") from exc

    def layer(self, name: str) -> nn.Module:
        """The torch module that runs node ``name`` (neurons: :class:`CanonicalNeurons`)."""
        return self.layers[self._index[name]]

    def _check_inputs(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[dict, int, int, torch.device]:
        unknown = sorted(set(inputs) - set(self.input_shapes))
        if unknown:
            raise NIRImportError(
                f"no Input node named {unknown}; the graph's inputs are {sorted(self.input_shapes)}"
            )
        missing = sorted(set(self.input_shapes) - set(inputs))
        if missing:
            raise NIRImportError(f"no data given for Input node(s) {missing}")
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        data, steps, batch = {}, None, None
        for name, value in inputs.items():
            x = torch.as_tensor(value).to(device=device, dtype=self.dtype)
            expected = self.input_shapes[name]
            if x.dim() != len(expected) + 2 or tuple(x.shape[2:]) != expected:
                raise NIRImportError(
                    f"input '{name}' has shape {tuple(x.shape)}; expected (T, B, "
                    f"{', '.join(map(str, expected))})"
                )
            if steps is None:
                steps, batch = x.shape[0], x.shape[1]
            elif (x.shape[0], x.shape[1]) != (steps, batch):
                raise NIRImportError(
                    f"input '{name}' has {x.shape[0]} steps × batch {x.shape[1]}, "
                    f"but another input has {steps} × {batch}"
                )
            data[name] = x
        return data, steps, batch, device

    @torch.no_grad()
    def forward(
        self, inputs: Mapping[str, torch.Tensor], record: Iterable[str] = ("spikes",)
    ) -> GraphRun:
        """Run every step; ``inputs[name]`` is ``(T, B, *shape)`` for each ``Input`` node.

        ``record`` selects per-node records: ``spikes`` (spiking neurons), ``v`` and ``u``
        (stateful nodes), ``output`` (every node but the inputs).
        """
        record = tuple(record)
        bad = [kind for kind in record if kind not in RECORD_KINDS]
        if bad:
            raise NIRImportError(f"cannot record {bad}; choose from {RECORD_KINDS}")
        data, steps, batch, device = self._check_inputs(inputs)

        def zeros(name: str) -> torch.Tensor:
            return torch.zeros(batch, *self.node_shapes[name], dtype=self.dtype, device=device)

        state = {name: self.layer(name).initial_state(batch) for name in self.neuron_names}
        recurrent_sources = {src for src, _ in self.order.recurrent}
        previous = {name: zeros(name) for name in recurrent_sources}
        history: dict[str, dict[str, list]] = {}
        outputs: dict[str, list] = {name: [] for name in self.output_names}
        for t in range(steps):
            values: dict[str, torch.Tensor] = {}
            for name in self.order.order:
                kind = self.node_types[name]
                if kind == "Input":
                    values[name] = data[name][t].reshape(batch, *self.node_shapes[name])
                    continue
                current = None
                for src in self.order.predecessors[name]:
                    term = previous[src] if (src, name) in self.order.recurrent else values[src]
                    current = term if current is None else current + term
                if current is None:  # a neuron fed only through a loop that starts at zero
                    current = zeros(name)
                if kind == "Output":
                    values[name] = current
                    outputs[name].append(current)
                    continue
                layer = self.layer(name)
                if isinstance(layer, CanonicalNeurons):
                    u, v = state[name]
                    out, z, u, v = layer(current, u, v)
                    state[name] = (u, v)
                    kinds = {"spikes": z, "v": v, "u": u} if layer.spiking else {"v": v, "u": u}
                else:
                    out = layer(current)
                    kinds = {}
                values[name] = out
                for what in record:
                    value = out if what == "output" else kinds.get(what)
                    if value is not None:
                        history.setdefault(name, {}).setdefault(what, []).append(value)
            previous = {name: values[name] for name in recurrent_sources}
        return GraphRun(
            {name: torch.stack(seq) for name, seq in outputs.items()},
            {n: {k: torch.stack(seq) for k, seq in kinds.items()} for n, kinds in history.items()},
        )


def import_nir(
    source: nir.NIRGraph | str | Path,
    dt: float | None = None,
    dtype: torch.dtype = torch.float64,
    limits: NIRLimits = DEFAULT_LIMITS,
    reset_mode: str | None = None,
) -> ImportedGraph:
    """Build a runnable :class:`ImportedGraph` from a NIR graph or file.

    ``dt`` (seconds) defaults to the graph's ``metadata["dt"]``; a graph with neurons and neither
    raises :class:`NIRImportError`. ``reset_mode`` (``zero`` or ``subtract``, default: each
    node's metadata) sets how every spiking neuron resets (:func:`exporters.overrides.
    with_reset_mode`). Every check failure is a :class:`NIRImportError` naming the node (and the
    file, when given a path).
    """
    try:
        if isinstance(source, (str, Path)):
            graph = load_nir(source, limits)
            shapes = validate_graph(graph, limits)
        else:
            graph = source
            shapes = validate_graph(graph, limits)
        if reset_mode is not None:
            graph = with_reset_mode(graph, reset_mode)
        dt_in_metadata = recorded_dt(graph)
    except NIRImportError:
        raise
    except NIRGraphError as exc:
        raise NIRImportError(str(exc)) from exc
    if dt is None:
        dt = dt_in_metadata
    elif not np.isfinite(dt) or dt <= 0:
        raise NIRImportError(f"dt must be finite and > 0, got {dt}")
    if dt is None and any(is_stateful(node) for node in graph.nodes.values()):
        raise NIRImportError(
            "the graph has no metadata['dt'] and no dt was given; pass dt (seconds), the step "
            "the graph's neurons are to be simulated at"
        )
    return ImportedGraph(graph, shapes, None if dt is None else float(dt), dtype)

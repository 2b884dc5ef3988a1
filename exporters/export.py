"""Torch / Norse modules → NIR graph, with the time semantics of :mod:`exporters.semantics`.

:data:`EXPORTERS` is a table from module type to mapper ``(module, ExportContext) -> NIRNode``
(``None`` for a module that is the identity at inference, e.g. ``nn.Dropout``). Every neuron
parameter is written as an array of the population's shape, which the exporter learns by
propagating shapes from the graph's inputs. Norse's cells map as (DESIGN.md §2)

=============================  ==========================================================
Norse module                   NIR node
=============================  ==========================================================
``LIFCell``, ``LIF``           ``CubaLIF(tau_syn=1/τs⁻¹, tau_mem=1/τm⁻¹, r=1, w_in=1/(dt·τs⁻¹))``
``LIFBoxCell``                 ``LIF(tau=1/τm⁻¹, r=1)``; ``reset_subtract`` → ``reset_mode``
``LICell``, ``LI``             ``CubaLI(tau_syn=1/τs⁻¹, tau_mem=1/τm⁻¹, r=1, w_in=1/(dt·τs⁻¹))``
``LIBoxCell``                  ``LI(tau=1/τm⁻¹, r=1)``
``IAFCell``, ``IAF``           ``IF(r=1/dt)`` (Norse adds the input to ``v`` each step)
=============================  ==========================================================

A synaptic current that does not decay (``τs⁻¹ = 0``, a persistent current) is written with
``tau_syn = dt·N``, ``w_in = N``, ``N = 2**60`` (:data:`exporters.semantics.PERSISTENT_SYN_STEPS`):
finite, and exact in every backend. ``v_leak``, ``v_threshold`` and ``v_reset`` carry over. The
graph's metadata records ``dt``, the producer (``lorsp-neuro`` and its version) and the Norse, NIR
and torch versions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import nir
import numpy as np
import torch
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.module import iaf, leaky_integrator, leaky_integrator_box, lif, lif_box
from norse.torch.module.snn import SNN, SNNCell
from torch import nn

from exporters.graph_rules import SHAPE_RULES, NIRGraphError, Shape
from exporters.layers import Scale, SumPool2d, Threshold
from exporters.semantics import DT_KEY, PERSISTENT_SYN_STEPS, RESET_KEY
from exporters.validate import validate_graph
from lorsp_neuro import __version__
from lorsp_neuro.errors import LorspError

PRODUCER = "lorsp-neuro"


class NIRExportError(LorspError, ValueError):
    """A module or graph cannot be exported to NIR; the message names the node and the problem."""


@dataclass(frozen=True)
class ExportContext:
    """What a mapper needs besides the module: the node's name, input shape and the graph's dt."""

    name: str
    input_shape: Shape
    dt: float | None


def _numpy(value) -> np.ndarray:
    return torch.as_tensor(value).detach().cpu().to(torch.float64).numpy()


def _population(ctx: ExportContext, module, field: str) -> np.ndarray:
    """Norse parameter ``module.p.<field>`` as an array of the population's shape."""
    value = _numpy(getattr(module.p, field))
    try:
        return np.broadcast_to(value, ctx.input_shape).copy()
    except ValueError:
        raise NIRExportError(
            f"node '{ctx.name}' ({type(module).__name__}): parameter {field} of shape "
            f"{value.shape} does not broadcast to the population shape {ctx.input_shape}"
        ) from None


def _neuron_metadata(module, reset_mode: str = "value") -> dict:
    return {RESET_KEY: reset_mode, "source": f"norse.torch.{type(module).__name__}"}


def _dt(ctx: ExportContext, module) -> float:
    if ctx.dt is None or float(module.dt) != ctx.dt:
        raise NIRExportError(
            f"node '{ctx.name}' ({type(module).__name__}): its dt={module.dt} differs from the "
            f"graph's dt={ctx.dt}"
        )
    return ctx.dt


def _synaptic(dt: float, tau_syn_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tau_syn, w_in)`` of Norse's current; ``τs⁻¹ = 0`` (persistent) as semantics.py writes it.

    Norse adds the input to the current as a jump; ``w_in`` turns NIR's ``I' = w_in·S/τ_syn`` into
    that jump at this dt (semantics.py: ``g = dv·r·du·w_in = dv``).
    """
    persistent = tau_syn_inv == 0
    finite = np.where(persistent, 1.0, tau_syn_inv)
    tau_syn = np.where(persistent, dt * PERSISTENT_SYN_STEPS, 1.0 / finite)
    w_in = np.where(persistent, float(PERSISTENT_SYN_STEPS), 1.0 / (dt * finite))
    return tau_syn, w_in


def _cuba(ctx: ExportContext, module, spiking: bool):
    """Norse ``LIFCell``/``LICell``: ``i' = i + x; v += dt·τm⁻¹(v_leak − v + i'); i = (1 − dt·τs⁻¹)i'``."""
    dt = _dt(ctx, module)
    tau_syn, w_in = _synaptic(dt, _population(ctx, module, "tau_syn_inv"))
    common = {
        "tau_syn": tau_syn,
        "tau_mem": 1.0 / _population(ctx, module, "tau_mem_inv"),
        "r": np.ones(ctx.input_shape),
        "v_leak": _population(ctx, module, "v_leak"),
        "w_in": w_in,
    }
    if not spiking:
        return nir.CubaLI(**common, metadata=_neuron_metadata(module))
    return nir.CubaLIF(
        **common,
        v_threshold=_population(ctx, module, "v_th"),
        v_reset=_population(ctx, module, "v_reset"),
        metadata=_neuron_metadata(module),
    )


def _lif_cell(module, ctx: ExportContext):
    return _cuba(ctx, module, spiking=True)


def _li_cell(module, ctx: ExportContext):
    return _cuba(ctx, module, spiking=False)


def _lif_box(module, ctx: ExportContext):
    """Norse ``LIFBoxCell``: ``v += dt·τm⁻¹(x + v_leak − v)`` ≡ ``LIF(tau=1/τm⁻¹, r=1)``."""
    _dt(ctx, module)
    method = getattr(module.p, "reset_method", reset_value)
    if method is reset_value:
        mode, v_reset = "value", _population(ctx, module, "v_reset")
    elif method is reset_subtract:  # Norse subtracts v_th and ignores v_reset
        mode, v_reset = "subtract", np.zeros(ctx.input_shape)
    else:
        raise NIRExportError(
            f"node '{ctx.name}' (LIFBoxCell): reset method {method!r} has no NIR equivalent"
        )
    return nir.LIF(
        tau=1.0 / _population(ctx, module, "tau_mem_inv"),
        r=np.ones(ctx.input_shape),
        v_leak=_population(ctx, module, "v_leak"),
        v_threshold=_population(ctx, module, "v_th"),
        v_reset=v_reset,
        metadata=_neuron_metadata(module, mode),
    )


def _li_box(module, ctx: ExportContext):
    """Norse ``LIBoxCell``: ``v += dt·τm⁻¹(v_leak − v + x)`` ≡ ``LI(tau=1/τm⁻¹, r=1)``."""
    _dt(ctx, module)
    return nir.LI(
        tau=1.0 / _population(ctx, module, "tau_mem_inv"),
        r=np.ones(ctx.input_shape),
        v_leak=_population(ctx, module, "v_leak"),
        metadata=_neuron_metadata(module),
    )


def _iaf(module, ctx: ExportContext):
    """Norse ``IAFCell``: ``v += x`` (no dt) ≡ NIR ``IF`` with ``v' = r·I`` at ``r = 1/dt``."""
    dt = _dt(ctx, module)
    return nir.IF(
        r=np.full(ctx.input_shape, 1.0 / dt),
        v_threshold=_population(ctx, module, "v_th"),
        v_reset=_population(ctx, module, "v_reset"),
        metadata=_neuron_metadata(module),
    )


def _linear(module: nn.Linear, ctx: ExportContext):
    weight = _numpy(module.weight)
    if module.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=_numpy(module.bias))


def _conv(module: nn.Conv1d | nn.Conv2d, ctx: ExportContext):
    label = f"node '{ctx.name}' ({type(module).__name__})"
    if module.padding_mode != "zeros":
        raise NIRExportError(f"{label}: padding_mode={module.padding_mode!r}; NIR pads with zeros")
    spatial = module.weight.dim() - 2
    if spatial == 2 and module.kernel_size[0] != module.kernel_size[1]:
        # nir 1.0.8 infers a Conv2d's output type from weight.shape[2] for both axes.
        raise NIRExportError(
            f"{label}: kernel {tuple(module.kernel_size)} is not square; nir's type check cannot "
            "represent it"
        )
    if module.groups != 1:
        # nir 1.0.8 types a Conv's input as weight.shape[1] channels, ignoring groups.
        raise NIRExportError(
            f"{label}: groups={module.groups}; nir's type check cannot represent grouped convolutions"
        )
    if len(ctx.input_shape) != spatial + 1:
        raise NIRExportError(f"{label}: expects (C, {spatial} spatial dims), got {ctx.input_shape}")
    bias = _numpy(module.bias) if module.bias is not None else np.zeros(module.out_channels)
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    cls = nir.Conv1d if spatial == 1 else nir.Conv2d
    return cls(
        input_shape=ctx.input_shape[1] if spatial == 1 else tuple(ctx.input_shape[1:]),
        weight=_numpy(module.weight),
        stride=module.stride[0] if spatial == 1 else tuple(module.stride),
        padding=padding if isinstance(padding, str) or spatial == 2 else padding[0],
        dilation=module.dilation[0] if spatial == 1 else tuple(module.dilation),
        groups=module.groups,
        bias=bias,
    )


def _flatten(module: nn.Flatten, ctx: ExportContext):
    if module.start_dim == 0 or module.end_dim == 0:
        raise NIRExportError(
            f"node '{ctx.name}' (Flatten): flattening the batch dimension has no NIR equivalent"
        )
    # torch counts the batch dimension, NIR does not; negative dims mean the same in both.
    start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
    end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
    return nir.Flatten(
        input_type={"input": np.array(ctx.input_shape)}, start_dim=start, end_dim=end
    )


def _pair(value) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.int64).ravel(), (2,)).copy()


def _avg_pool(module: nn.AvgPool2d, ctx: ExportContext):
    padded = np.any(_pair(module.padding) > 0)
    if module.ceil_mode or module.divisor_override or (padded and not module.count_include_pad):
        raise NIRExportError(
            f"node '{ctx.name}' (AvgPool2d): ceil_mode, divisor_override and padding without "
            "count_include_pad have no NIR equivalent"
        )
    stride = module.stride if module.stride is not None else module.kernel_size
    return nir.AvgPool2d(
        kernel_size=_pair(module.kernel_size), stride=_pair(stride), padding=_pair(module.padding)
    )


def _sum_pool(module: SumPool2d, ctx: ExportContext):
    return nir.SumPool2d(
        kernel_size=_pair(module.kernel_size),
        stride=_pair(module.stride),
        padding=_pair(module.padding),
    )


def _scale(module: Scale, ctx: ExportContext):
    scale = _numpy(module.scale)
    try:
        return nir.Scale(scale=np.broadcast_to(scale, ctx.input_shape).copy())
    except ValueError:
        raise NIRExportError(
            f"node '{ctx.name}' (Scale): scale of shape {scale.shape} does not broadcast to its "
            f"input shape {ctx.input_shape}"
        ) from None


def _threshold(module: Threshold, ctx: ExportContext):
    return nir.Threshold(
        threshold=np.broadcast_to(_numpy(module.threshold), ctx.input_shape).copy()
    )


def _identity(module, ctx: ExportContext):
    return None


#: Module type → mapper ``(module, ExportContext) -> NIRNode | None`` (None: identity, skipped).
EXPORTERS: dict[type, Callable] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Flatten: _flatten,
    nn.AvgPool2d: _avg_pool,
    nn.Identity: _identity,
    nn.Dropout: _identity,
    Scale: _scale,
    SumPool2d: _sum_pool,
    Threshold: _threshold,
    lif.LIFCell: _lif_cell,
    lif.LIF: _lif_cell,
    lif_box.LIFBoxCell: _lif_box,
    leaky_integrator.LICell: _li_cell,
    leaky_integrator.LI: _li_cell,
    leaky_integrator_box.LIBoxCell: _li_box,
    iaf.IAFCell: _iaf,
    iaf.IAF: _iaf,
}


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def graph_metadata(dt: float | None, extra: Mapping | None = None) -> dict:
    """Graph metadata: ``dt`` (when known), the producer and the library versions."""
    metadata = {
        "producer": PRODUCER,
        "producer_version": __version__,
        "norse_version": _package_version("norse"),
        "nir_version": _package_version("nir"),
        "torch_version": torch.__version__.split("+")[0],
    }
    if dt is not None:
        metadata[DT_KEY] = float(dt)
    metadata.update(extra or {})
    return metadata


def resolve_dt(modules: Iterable[nn.Module], dt: float | None) -> float | None:
    """The one dt of every Norse module (or ``dt`` if given and consistent); None if none."""
    found = {float(m.dt) for m in modules if isinstance(m, (SNNCell, SNN))}
    if dt is not None:
        if not np.isfinite(dt) or dt <= 0:
            raise NIRExportError(f"dt must be finite and > 0, got {dt}")
        found.add(float(dt))
    if len(found) > 1:
        raise NIRExportError(
            f"the modules use different time steps {sorted(found)}; a NIR graph has one dt"
        )
    return found.pop() if found else None


def _topological(names: Iterable[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    names = list(names)
    pending = {name: 0 for name in names}
    for _, dst in edges:
        pending[dst] += 1
    ready = [name for name in names if pending[name] == 0]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for src, dst in edges:
            if src == name:
                pending[dst] -= 1
                if pending[dst] == 0:
                    ready.append(dst)
    if len(order) != len(names):
        stuck = sorted(n for n in names if pending[n] > 0)
        raise NIRExportError(
            f"nodes {stuck} form a cycle; export of recurrent graphs is not supported"
        )
    return order


def export_graph(
    nodes: Mapping[str, nn.Module | nir.NIRNode],
    edges: Iterable[tuple[str, str]],
    inputs: Mapping[str, Sequence[int]],
    outputs: Iterable[str] = ("output",),
    *,
    dt: float | None = None,
    metadata: Mapping | None = None,
) -> nir.NIRGraph:
    """Export an explicit graph: ``nodes`` are torch modules (mapped by :data:`EXPORTERS`) or
    ready NIR nodes; ``inputs`` maps each ``Input`` node's name to its shape (no batch);
    ``outputs`` names the ``Output`` nodes; ``edges`` connect any of these names (edges into one
    node are summed). ``dt`` defaults to the Norse modules' common ``dt``.
    """
    edges = [tuple(edge) for edge in edges]
    outputs = list(outputs)
    all_names = [*inputs, *nodes, *outputs]
    if len(set(all_names)) != len(all_names):
        raise NIRExportError(f"node names repeat across inputs, nodes and outputs: {all_names}")
    for src, dst in edges:
        for end in (src, dst):
            if end not in all_names:
                raise NIRExportError(f"edge ({src} → {dst}) names unknown node '{end}'")
    dt = resolve_dt((m for m in nodes.values() if isinstance(m, nn.Module)), dt)
    shapes: dict[str, Shape] = {}
    exported: dict[str, nir.NIRNode] = {}
    skipped: set[str] = set()
    for name in _topological(all_names, edges):
        srcs = [src for src, dst in edges if dst == name]
        if name in inputs:
            if srcs:
                raise NIRExportError(f"input '{name}' cannot have incoming edges")
            shapes[name] = tuple(int(n) for n in inputs[name])
            exported[name] = nir.Input(input_type={"input": np.array(shapes[name])})
            continue
        if not srcs:
            raise NIRExportError(f"node '{name}' has no incoming edge")
        in_shapes = {src: shapes[src] for src in srcs}
        in_shape = in_shapes[srcs[0]]
        if any(shape != in_shape for shape in in_shapes.values()):
            raise NIRExportError(f"node '{name}': its inputs have different shapes {in_shapes}")
        if name in outputs:
            shapes[name] = in_shape
            exported[name] = nir.Output(output_type={"output": np.array(in_shape)})
            continue
        node = nodes[name]
        if isinstance(node, nn.Module):
            mapper = EXPORTERS.get(type(node))
            if mapper is None:
                raise NIRExportError(
                    f"node '{name}': {type(node).__module__}.{type(node).__name__} has no NIR "
                    f"mapping (supported: {', '.join(t.__name__ for t in EXPORTERS)})"
                )
            node = mapper(node, ExportContext(name, in_shape, dt))
        if node is None:
            skipped.add(name)
            shapes[name] = in_shape
            continue
        rule = SHAPE_RULES.get(type(node))
        if rule is None:
            raise NIRExportError(f"node '{name}': NIR type {type(node).__name__} is not supported")
        try:
            shapes[name] = tuple(rule(name, node, in_shape))
        except NIRGraphError as exc:
            raise NIRExportError(str(exc)) from None
        exported[name] = node
    return _assemble(exported, _bypass(edges, skipped), graph_metadata(dt, metadata))


def _bypass(edges: list[tuple[str, str]], skipped: set[str]) -> list[tuple[str, str]]:
    """Edges with identity nodes removed: every source of a skipped node feeds its targets."""
    for name in skipped:
        into = [src for src, dst in edges if dst == name]
        out_of = [dst for src, dst in edges if src == name]
        edges = [e for e in edges if name not in e]
        edges += [(src, dst) for src in into for dst in out_of if (src, dst) not in edges]
    return edges


def _assemble(nodes: dict, edges: list, metadata: dict) -> nir.NIRGraph:
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)
    except (ValueError, AssertionError) as exc:
        raise NIRExportError(f"nir rejects the exported graph: {exc}") from exc
    try:
        validate_graph(graph)
    except NIRGraphError as exc:
        raise NIRExportError(f"the exported graph is invalid: {exc}") from exc
    return graph


def _flatten_sequential(model: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    layers = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            layers += _flatten_sequential(child, f"{full}.")
        else:
            layers.append((full, child))
    return layers


def export_sequential(
    model: nn.Sequential,
    input_shape: Sequence[int] | torch.Tensor,
    *,
    dt: float | None = None,
    metadata: Mapping | None = None,
    input_name: str = "input",
    output_name: str = "output",
) -> nir.NIRGraph:
    """Export ``nn.Sequential`` or Norse ``SequentialState`` as ``Input → layers… → Output``.

    ``input_shape`` is one sample's shape (no batch, no time), or an example tensor whose first
    dimension is the batch. Nodes take the children's names (nested ``Sequential``s joined by
    ``.``), so they match the model's ``state_dict`` keys.
    """
    if not isinstance(model, nn.Sequential):
        raise NIRExportError(
            f"export_sequential needs nn.Sequential or SequentialState, got {type(model).__name__}; "
            "use export_graph for other structures"
        )
    if isinstance(input_shape, torch.Tensor):
        input_shape = tuple(input_shape.shape[1:])
    layers = _flatten_sequential(model)
    if not layers:
        raise NIRExportError("the model has no layers")
    names = [input_name, *(name for name, _ in layers), output_name]
    return export_graph(
        dict(layers),
        list(itertools.pairwise(names)),
        {input_name: input_shape},
        (output_name,),
        dt=dt,
        metadata=metadata,
    )

r"""The spiking part of a LoRSP prompter as a NIR graph, and the prompt rebuilt from that file.

:func:`export_lorsp` writes one of two formats, chosen by the prompter (:data:`PROMPTER_FORMATS`).

**lorsp-nir/2** (``lorsp``, DESIGN.md §1 v2, value readout): the torch core
(:class:`~lorsp_neuro.prompters.LoRSPSpikingCore`) node for node (a name written twice is one
node, its inputs summed in the file's edge order, which is the core's summation order)::

    descriptor (D)  ─▶ gate_affine (Linear) ─▶ gate_neurons (r, CubaLIF) ─┬─▶ gates
    bias (1)        ─▶ gate_bias (Linear)   ─▶ gate_neurons               └─▶ gate_synapses ─▶ pixel_neurons
    image (3, h, w) ─▶ image_flat (Flatten) ─▶ image_gain (Scale) ─▶ pixel_neurons (N, CubaLIF) ─▶ pixels
    bias (1)        ─▶ pixel_bias (Linear)  ─▶ pixel_neurons

``bias`` is the constant 1; ``(h, w)`` is the image size, or ``(G, G)`` with a grid (the host
average-pools the image to the grid first); N = 3·h·w. With ``presentation = "once"`` the three
inputs are presented at step 0 and are zero afterwards (the currents are persistent); with
``"every_step"`` they are presented at each step. The host keeps the descriptor pooling and the
readout :math:`P = V \odot \rho`, ``V = value_left @ value_right`` per channel and
``ρ = mean_t pixels``, each rate repeated over its ``(H/G)×(W/G)`` cell with a grid.

**lorsp-nir/1** (``lorsp_v1``): gate neurons → ON and OFF factor synapses → ``pixel_on`` and
``pixel_off`` (``3·H·W`` each; the image enters once, one-to-one, through ``beta_on``/``beta_off``),
inputs presented at every step, ``prompt = alpha ⊙ (mean_t on − mean_t off)``.

Either way ``metadata["lorsp"]`` holds everything the host needs, so a reader needs nothing but the
file. :func:`lorsp_host` reads and checks it into a :class:`LoRSPHost` whose interface is the same
for both formats (inputs and outputs by role, :meth:`~LoRSPHost.host_inputs`,
:meth:`~LoRSPHost.prompt`); :func:`prompt_from_nir` runs a file in the importer and rebuilds the
prompt; :func:`verify_lorsp_export` compares that with the prompter, spike for spike.

Every weight is computed from a float64 copy of the prompter, as :func:`reference_spikes` runs it,
so a float64 run of the file gives the reference's spikes and prompt bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exporters.export import NIRExportError, export_graph
from exporters.importer import GraphRun, NIRImportError, import_nir
from exporters.validate import load_nir
from lorsp_neuro.prompters import (
    CHANNELS,
    DESCRIPTOR_CENTRE,
    LoRSPPrompter,
    LoRSPv1Prompter,
    low_rank_prompt,
    spike_prompt,
    value_readout,
)

METADATA_KEY = "lorsp"
FORMAT_V1, FORMAT_V2 = "lorsp-nir/1", "lorsp-nir/2"
#: How the inputs are presented over the T steps: at step 0 only (zeros after), or at every step.
PRESENTATIONS = ("once", "every_step")
#: Input roles: the pooled descriptor, the image (as the pixel neurons see it), the constant 1.
DESCRIPTOR, IMAGE, BIAS = "descriptor", "image", "bias"
#: Output roles: gate spikes; v2's pixel spikes; v1's ON and OFF pixel spikes.
GATES, PIXELS, ON, OFF = "gates", "pixels", "on", "off"
#: Most time steps a LoRSP graph's metadata may ask for: inputs are built for every step.
MAX_STEPS = 100_000


def adaptive_average_descriptor(x: torch.Tensor, pool: int, centre: float) -> torch.Tensor:
    """``(B, 3·pool²)``: ``adaptive_avg_pool2d(x, pool)`` flattened in C order, minus ``centre``."""
    return F.adaptive_avg_pool2d(x, pool).flatten(1) - centre


#: Descriptor kind (as recorded in the metadata) → ``(image, pool, centre) -> (B, D)``.
DESCRIPTORS: dict[str, Callable[[torch.Tensor, int, float], torch.Tensor]] = {
    "adaptive_avg_pool2d": adaptive_average_descriptor,
}


# --------------------------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------------------------


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()


def _float64_copy(prompter):
    """A float64 copy in eval mode: what the file's weights and the reference are computed from."""
    return copy.deepcopy(prompter).to(torch.float64).eval()


def _common_metadata(prompter, core, format_name: str) -> dict:
    height, width = prompter.image_size
    return {
        "format": format_name,
        "prompter": prompter.name,
        "channels": CHANNELS,
        "image_height": height,
        "image_width": width,
        "steps": int(core.steps),
        "cell": type(core.gate_neurons).__name__,
        "descriptor_kind": "adaptive_avg_pool2d",
        "descriptor_pool": int(prompter.config.descriptor_pool),
        "descriptor_centre": float(DESCRIPTOR_CENTRE),
    }


def _export_v2(prompter: LoRSPPrompter) -> nir.NIRGraph:
    twin = _float64_copy(prompter)
    core = twin.spiking_core
    with torch.no_grad():
        nodes = {
            "gate_affine": nir.Linear(weight=_numpy(core.gate_affine.weight)),
            "gate_bias": nir.Linear(weight=_numpy(core.gate_bias_weight())),
            "gate_neurons": core.gate_neurons,
            "gate_synapses": nir.Linear(weight=_numpy(core.gate_weight())),
            "image_flat": nn.Flatten(),
            "image_gain": nir.Scale(scale=_numpy(core.image_scale())),
            "pixel_bias": nir.Linear(weight=_numpy(core.pixel_bias_weight())),
            "pixel_neurons": core.pixel_neurons,
        }
        value_left, value_right = _numpy(core.value_left), _numpy(core.value_right)
    # Edge order is summation order (the importer sums a node's inputs in the file's edge order).
    # The core adds the gate drive to the image drive already summed with the bias,
    # ``a + (b + c)``; ``(b + c) + a`` is the same float (addition commutes exactly), the file's
    # ``(a + b) + c`` would not be, so the gate synapses come last into the pixel neurons.
    edges = [
        (DESCRIPTOR, "gate_affine"),
        (BIAS, "gate_bias"),
        ("gate_affine", "gate_neurons"),
        ("gate_bias", "gate_neurons"),
        (IMAGE, "image_flat"),
        ("image_flat", "image_gain"),
        ("image_gain", "pixel_neurons"),
        (BIAS, "pixel_bias"),
        ("pixel_bias", "pixel_neurons"),
        ("gate_neurons", "gate_synapses"),
        ("gate_synapses", "pixel_neurons"),
        ("gate_neurons", GATES),
        ("pixel_neurons", PIXELS),
    ]
    host = {
        **_common_metadata(prompter, core, FORMAT_V2),
        "presentation": "once" if core.persistent else "every_step",
        "grid": int(core.grid or 0),
        "value_left": value_left,
        "value_right": value_right,
        "descriptor_input": DESCRIPTOR,
        "image_input": IMAGE,
        "bias_input": BIAS,
        "gate_output": GATES,
        "pixel_output": PIXELS,
        "prompt": "(value_left[c] @ value_right[c])[i, j] * mean_t pixels[t, c, i, j]; pixels are "
        "(3*h*w,) per step in C order (c, i, j); with grid G > 0 (h = w = G; the image input is "
        "adaptive_avg_pool2d(x, G)) each rate covers its (H/G)x(W/G) cell",
        "config_json": json.dumps(prompter.config_dict()),
    }
    return export_graph(
        nodes,
        edges,
        {
            DESCRIPTOR: (core.gate_affine.in_features,),
            IMAGE: core.neuron_shape,
            BIAS: (1,),
        },
        (GATES, PIXELS),
        dt=core.dt,
        metadata={METADATA_KEY: host},
    )


def _export_v1(prompter: LoRSPv1Prompter) -> nir.NIRGraph:
    twin = _float64_copy(prompter)
    core = twin.spiking_core
    height, width = prompter.image_size
    pixels = CHANNELS * height * width
    with torch.no_grad():
        factor_weight = _numpy(core.factor_weight())
        pixel_scale = _numpy(core.pixel_scale())
        alpha = _numpy(twin.alpha)
    nodes = {
        "gate_affine": core.gate_affine,
        "gate_neurons": core.gate_neurons,
        "factor_on": nir.Linear(weight=factor_weight[:pixels]),
        "factor_off": nir.Linear(weight=factor_weight[pixels:]),
        "image_flat": nn.Flatten(),
        "beta_on": nir.Scale(scale=pixel_scale[:pixels]),
        "beta_off": nir.Scale(scale=pixel_scale[pixels:]),
        "pixel_on": core.pixel_neurons,
        "pixel_off": core.pixel_neurons,
    }
    # Edge order is summation order: the factor drive first, then the image, as in the core.
    edges = [
        (DESCRIPTOR, "gate_affine"),
        ("gate_affine", "gate_neurons"),
        ("gate_neurons", "factor_on"),
        ("gate_neurons", "factor_off"),
        ("factor_on", "pixel_on"),
        ("factor_off", "pixel_off"),
        (IMAGE, "image_flat"),
        ("image_flat", "beta_on"),
        ("image_flat", "beta_off"),
        ("beta_on", "pixel_on"),
        ("beta_off", "pixel_off"),
        ("gate_neurons", GATES),
        ("pixel_on", ON),
        ("pixel_off", OFF),
    ]
    host = {
        **_common_metadata(prompter, core, FORMAT_V1),
        "alpha": alpha,
        "descriptor_input": DESCRIPTOR,
        "image_input": IMAGE,
        "gate_output": GATES,
        "on_output": ON,
        "off_output": OFF,
        "prompt": "alpha[c] * (mean_t on[t, c, h, w] - mean_t off[t, c, h, w]); on/off are "
        "(3*H*W,) per step in C order (c, h, w)",
        "config_json": json.dumps(prompter.config_dict()),
    }
    return export_graph(
        nodes,
        edges,
        {DESCRIPTOR: (core.gate_affine.in_features,), IMAGE: (CHANNELS, height, width)},
        (GATES, ON, OFF),
        dt=core.dt,
        metadata={METADATA_KEY: host},
    )


def _reference_v2(twin: LoRSPPrompter, x: torch.Tensor):
    record = twin.run_core(x)
    return {GATES: record.gates, PIXELS: record.pixels}, twin.prompt_from_spikes(record.pixels)


def _reference_v1(twin: LoRSPv1Prompter, x: torch.Tensor):
    gates, on, off = twin.spiking_core(twin.descriptor_sequence(x), x)
    return {GATES: gates, ON: on, OFF: off}, twin.prompt_from_spikes(on, off)


class PrompterFormat(NamedTuple):
    """How one kind of LoRSP prompter is written, and run as the reference for its file."""

    format: str
    export: Callable[[nn.Module], nir.NIRGraph]
    reference: Callable[[nn.Module, torch.Tensor], tuple[dict, torch.Tensor]]


#: Prompter class → its NIR format (a subclass uses its nearest registered ancestor's).
PROMPTER_FORMATS: dict[type, PrompterFormat] = {
    LoRSPPrompter: PrompterFormat(FORMAT_V2, _export_v2, _reference_v2),
    LoRSPv1Prompter: PrompterFormat(FORMAT_V1, _export_v1, _reference_v1),
}


def prompter_format(prompter) -> PrompterFormat:
    """The :class:`PrompterFormat` of ``prompter``; :class:`NIRExportError` for a non-spiking one."""
    for cls in type(prompter).__mro__:
        if cls in PROMPTER_FORMATS:
            return PROMPTER_FORMATS[cls]
    name = getattr(prompter, "name", type(prompter).__name__)
    raise NIRExportError(
        f"prompter {name!r} has no spiking_core to export; only "
        f"{', '.join(repr(c.name) for c in PROMPTER_FORMATS)} prompters have a spiking part"
    )


def export_lorsp(prompter) -> nir.NIRGraph:
    """The NIR graph of a LoRSP prompter's ``spiking_core`` plus the host parts in metadata.

    ``lorsp`` writes ``lorsp-nir/2``, ``lorsp_v1`` writes ``lorsp-nir/1`` (module docstring).
    """
    return prompter_format(prompter).export(prompter)


# --------------------------------------------------------------------------------------------
# The host side of a file: metadata → LoRSPHost.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoRSPHost:
    """The host-side parts of a LoRSP graph, read back from its metadata (either format).

    ``inputs`` and ``outputs`` map roles to the graph's ``Input``/``Output`` node names:
    ``descriptor``, ``image`` (and ``bias`` in v2); ``gates`` and ``pixels`` (v2) or ``on`` and
    ``off`` (v1). ``neuron_shapes`` gives the pixel roles' population shapes (``(3, h, w)``).
    Hosts compare by identity (``eq=False``): numpy fields have no single truth value.
    """

    format: str
    image_size: tuple[int, int]
    steps: int
    presentation: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    neuron_shapes: dict[str, tuple[int, ...]]
    descriptor_kind: str
    descriptor_pool: int
    descriptor_centre: float

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: the gate descriptor of images ``x`` ``(B, 3, H, W)``, pooled on the host."""
        return DESCRIPTORS[self.descriptor_kind](x, self.descriptor_pool, self.descriptor_centre)

    def _check_images(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != (CHANNELS, *self.image_size):
            raise NIRImportError(
                f"image has shape {tuple(x.shape)}; this LoRSP graph needs (B, {CHANNELS}, "
                f"{self.image_size[0]}, {self.image_size[1]})"
            )
        return x if x.is_floating_point() else x.to(torch.float64)

    def input_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each input role presents for images ``x``: ``{role: (B, *input shape)}``."""
        raise NotImplementedError

    def host_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph's inputs for images ``x`` ``(B, 3, H, W)`` in [0, 1], in ``x``'s dtype.

        ``{Input node name: (T, B, *shape)}``; with ``presentation = "once"`` every input is zero
        after step 0.
        """
        values = self.input_values(self._check_images(x))
        inputs = {}
        for role, value in values.items():
            if self.presentation == "once":
                sequence = value.new_zeros(self.steps, *value.shape)
                sequence[0] = value
            else:
                sequence = value.unsqueeze(0).expand(self.steps, *value.shape)
            inputs[self.inputs[role]] = sequence
        return inputs

    def role_spikes(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{role: (T, B, *shape)}`` from the graph's outputs by node name ``(T, B, n)``.

        Pixel roles are reshaped to their population shape; gates stay ``(T, B, K)``.
        """
        spikes = {}
        for role, name in self.outputs.items():
            if name not in outputs:
                raise NIRImportError(f"no spikes for output '{name}' (role {role!r})")
            value = torch.as_tensor(outputs[name])
            shape = self.neuron_shapes.get(role)
            if shape is not None:
                if value.dim() < 2 or math.prod(value.shape[2:]) != math.prod(shape):
                    raise NIRImportError(
                        f"output '{name}' has shape {tuple(value.shape)}; role {role!r} needs "
                        f"(T, B, {math.prod(shape)}), the population {shape}"
                    )
                value = value.reshape(*value.shape[:2], *shape)
            spikes[role] = value
        return spikes

    def _rates(self, spikes: Mapping[str, torch.Tensor], role: str) -> torch.Tensor:
        """``(B, *shape)``: the mean over steps of role ``role``'s spikes, as floats."""
        value = torch.as_tensor(spikes[role])
        if not value.is_floating_point():
            value = value.to(torch.float64)
        return value.reshape(*value.shape[:2], *self.neuron_shapes[role]).mean(0)

    def prompt(self, spikes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 3, H, W)``: the prompt from output spikes by role, ``(T, B, n)`` or shaped."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class LoRSPv2Host(LoRSPHost):
    """``lorsp-nir/2``: ``prompt = V ⊙ ρ`` with ``V = value_left @ value_right`` per channel."""

    grid: int | None
    value_left: np.ndarray  # (3, H, r)
    value_right: np.ndarray  # (3, r, W)

    def values(self) -> torch.Tensor:
        """``V``, ``(3, H, W)``, float64."""
        return low_rank_prompt(torch.as_tensor(self.value_left), torch.as_tensor(self.value_right))

    def input_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        image = F.adaptive_avg_pool2d(x, self.grid) if self.grid is not None else x
        return {DESCRIPTOR: self.descriptor(x), IMAGE: image, BIAS: x.new_ones(x.shape[0], 1)}

    def prompt(self, spikes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rates = self._rates(spikes, PIXELS)
        return value_readout(self.values().to(rates.dtype), rates, self.grid)


@dataclass(frozen=True, eq=False)
class LoRSPv1Host(LoRSPHost):
    """``lorsp-nir/1``: ``prompt = alpha ⊙ (mean_t on − mean_t off)``."""

    alpha: np.ndarray  # (3,)

    def input_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {DESCRIPTOR: self.descriptor(x), IMAGE: x}

    def prompt(self, spikes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        on, off = self._rates(spikes, ON), self._rates(spikes, OFF)
        alpha = torch.as_tensor(self.alpha, dtype=on.dtype)
        return spike_prompt(alpha, on.unsqueeze(0), off.unsqueeze(0))


def _shown(value) -> str:
    """A metadata value for a one-line message: scalars as themselves, arrays by dtype and shape."""
    if isinstance(value, np.ndarray) and value.ndim:
        return f"an array of {value.dtype} with shape {value.shape}"
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


class _Metadata:
    """Field-by-field reader of ``metadata["lorsp"]``: each bad field is one NIRImportError."""

    def __init__(self, graph: nir.NIRGraph, host: dict):
        self.graph = graph
        self.host = host
        self.where = f"metadata['{METADATA_KEY}']"

    def fail(self, name: str, problem: str) -> NIRImportError:
        return NIRImportError(f"{self.where}['{name}'] {problem}")

    def field(self, name: str):
        if name not in self.host:
            raise NIRImportError(f"{self.where} has no '{name}'")
        value = self.host[name]
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    def text(self, name: str) -> str:
        value = self.field(name)
        if not isinstance(value, str):
            raise self.fail(name, f"must be text, got {_shown(value)}")
        return value

    def choice(self, name: str, choices) -> str:
        value = self.text(name)
        if value not in choices:
            raise self.fail(name, f"= {_shown(value)} is not one of {sorted(choices)}")
        return value

    def whole(self, name: str, minimum: int = 1, maximum: int | None = None) -> int:
        value = np.asarray(self.field(name))
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or int(value) < minimum:
            raise self.fail(name, f"must be an integer >= {minimum}, got {_shown(value)}")
        if maximum is not None and int(value) > maximum:
            raise self.fail(name, f"= {int(value)} exceeds {maximum}")
        return int(value)

    def number(self, name: str) -> float:
        value = np.asarray(self.field(name))
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {_shown(value)}")
        return float(value)

    def array(self, name: str, shape: Callable[[tuple[int, ...]], bool], expected: str):
        """A finite float64 array whose shape passes ``shape``; ``expected`` describes it."""
        value = np.asarray(self.field(name))
        if value.dtype.kind not in "iuf":
            raise self.fail(name, f"must be numbers {expected}, got {value.dtype}")
        if not shape(value.shape):
            raise self.fail(name, f"must have shape {expected}, got {value.shape}")
        value = value.astype(np.float64)
        if not np.all(np.isfinite(value)):
            raise self.fail(name, "must be finite (it holds NaN or Inf)")
        return value

    def node(self, name: str, kind: type) -> str:
        value = self.text(name)
        if not isinstance(self.graph.nodes.get(value), kind):
            raise self.fail(name, f"= {_shown(value)} is not an {kind.__name__} node")
        return value

    def roles(self, roles: Mapping[str, str], kind: type) -> dict[str, str]:
        """``{role: node name}`` from the fields named by ``roles`` (role → field)."""
        return {role: self.node(key, kind) for role, key in roles.items()}

    def check_inputs(self, inputs: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]]):
        for role, expected in shapes.items():
            name = inputs[role]
            declared = (self.graph.nodes[name].input_type or {}).get("input")
            declared = None if declared is None else tuple(np.ravel(declared).tolist())
            if declared != expected:
                raise NIRImportError(
                    f"{self.where}: Input '{name}' has shape {declared}, but the metadata implies "
                    f"{expected}"
                )


def _common_host_fields(meta: _Metadata) -> dict:
    if meta.whole("channels") != CHANNELS:
        raise meta.fail("channels", f"must be {CHANNELS}, got {_shown(meta.field('channels'))}")
    return {
        "format": meta.text("format"),
        "image_size": (meta.whole("image_height"), meta.whole("image_width")),
        "steps": meta.whole("steps", maximum=MAX_STEPS),
        "descriptor_kind": meta.choice("descriptor_kind", DESCRIPTORS),
        "descriptor_pool": meta.whole("descriptor_pool"),
        "descriptor_centre": meta.number("descriptor_centre"),
    }


def _host_v2(meta: _Metadata) -> LoRSPv2Host:
    common = _common_host_fields(meta)
    height, width = common["image_size"]
    grid = meta.whole("grid", minimum=0) or None
    if grid is not None and (height % grid or width % grid):
        raise meta.fail("grid", f"= {grid} does not divide the image size {height}×{width}")
    left = meta.array(
        "value_left",
        lambda s: len(s) == 3 and s[:2] == (CHANNELS, height) and s[2] >= 1,
        f"({CHANNELS}, {height}, r) with r >= 1",
    )
    rank = left.shape[2]
    right = meta.array(
        "value_right",
        lambda s: s == (CHANNELS, rank, width),
        f"({CHANNELS}, {rank}, {width}) (rank r = {rank} from value_left)",
    )
    inputs = meta.roles(
        {DESCRIPTOR: "descriptor_input", IMAGE: "image_input", BIAS: "bias_input"}, nir.Input
    )
    outputs = meta.roles({GATES: "gate_output", PIXELS: "pixel_output"}, nir.Output)
    neurons = (CHANNELS, grid, grid) if grid is not None else (CHANNELS, height, width)
    pool = common["descriptor_pool"]
    meta.check_inputs(inputs, {DESCRIPTOR: (CHANNELS * pool * pool,), IMAGE: neurons, BIAS: (1,)})
    return LoRSPv2Host(
        **common,
        presentation=meta.choice("presentation", PRESENTATIONS),
        inputs=inputs,
        outputs=outputs,
        neuron_shapes={PIXELS: neurons},
        grid=grid,
        value_left=left,
        value_right=right,
    )


def _host_v1(meta: _Metadata) -> LoRSPv1Host:
    common = _common_host_fields(meta)
    alpha = meta.array("alpha", lambda s: s == (CHANNELS,), f"({CHANNELS},)")
    inputs = meta.roles({DESCRIPTOR: "descriptor_input", IMAGE: "image_input"}, nir.Input)
    outputs = meta.roles({GATES: "gate_output", ON: "on_output", OFF: "off_output"}, nir.Output)
    pixels = (CHANNELS, *common["image_size"])
    pool = common["descriptor_pool"]
    meta.check_inputs(inputs, {DESCRIPTOR: (CHANNELS * pool * pool,), IMAGE: pixels})
    return LoRSPv1Host(
        **common,
        presentation="every_step",
        inputs=inputs,
        outputs=outputs,
        neuron_shapes={ON: pixels, OFF: pixels},
        alpha=alpha,
    )


#: Format (``metadata["lorsp"]["format"]``) → reader of the rest of the metadata.
HOST_READERS: dict[str, Callable[[_Metadata], LoRSPHost]] = {
    FORMAT_V1: _host_v1,
    FORMAT_V2: _host_v2,
}


def lorsp_host(graph: nir.NIRGraph) -> LoRSPHost:
    """Parse ``metadata["lorsp"]``; raise :class:`NIRImportError` naming a missing or bad field.

    The metadata may come from a stranger's file: every field is checked for its type and range,
    the named inputs and outputs must be the graph's ``Input``/``Output`` nodes, the descriptor,
    image and bias sizes must be those of the inputs (so they are within the file's validated
    limits), and v2's ``value_left``/``value_right`` must be finite, of the image's height and
    width and of one rank.
    """
    host = (graph.metadata or {}).get(METADATA_KEY)
    if not isinstance(host, dict):
        raise NIRImportError(f"not a LoRSP graph: its metadata has no '{METADATA_KEY}' section")
    meta = _Metadata(graph, host)
    format_name = meta.text("format")
    if format_name not in HOST_READERS:
        raise meta.fail("format", f"= {_shown(format_name)} is not one of {sorted(HOST_READERS)}")
    return HOST_READERS[format_name](meta)


# --------------------------------------------------------------------------------------------
# Running a file, and checking it against the prompter.
# --------------------------------------------------------------------------------------------


@dataclass
class LoRSPRun:
    """The prompt rebuilt from a NIR file and the spike trains behind it."""

    prompt: torch.Tensor  # (B, 3, H, W)
    spikes: dict[str, torch.Tensor]  # role → (T, B, *population shape)
    run: GraphRun


def prompt_from_nir(
    source: nir.NIRGraph | str | Path,
    image: torch.Tensor,
    dt: float | None = None,
    record: tuple[str, ...] = ("spikes",),
) -> LoRSPRun:
    """The LoRSP prompt of ``image`` ``(B, 3, H, W)`` in [0, 1] from a NIR graph or file alone.

    The inputs are built on the host as the metadata says (:meth:`LoRSPHost.host_inputs`), the
    graph runs in the importer (float64) and the prompt is read out (:meth:`LoRSPHost.prompt`).
    """
    graph = load_nir(source) if isinstance(source, (str, Path)) else source
    host = lorsp_host(graph)
    model = import_nir(graph, dt=dt)
    x = torch.as_tensor(image).to(model.dtype)
    run = model(host.host_inputs(x), record=record)
    spikes = host.role_spikes(run.outputs)
    return LoRSPRun(host.prompt(spikes), spikes, run)


def reference_spikes(prompter, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The prompter's own spikes by role (as :attr:`LoRSPRun.spikes`) and prompt, in float64.

    The prompter is copied and cast, so the original is untouched; float64 on both sides makes
    the comparison with :func:`prompt_from_nir` exact rather than up to float32 rounding.
    """
    reference = prompter_format(prompter).reference
    twin = _float64_copy(prompter)
    with torch.no_grad():
        return reference(twin, torch.as_tensor(image).to(torch.float64))


def verify_lorsp_export(prompter, source: nir.NIRGraph | str | Path, image: torch.Tensor) -> dict:
    """Compare the file's prompt and spikes with the prompter's on ``image``; JSON-ready report.

    ``mismatched_spikes`` counts, per role, the neuron-steps that differ (all of them when the
    shapes differ); ``matches`` also needs the prompts to be equal bit for bit.
    """
    spikes, prompt = reference_spikes(prompter, image)
    rebuilt = prompt_from_nir(source, image)
    mismatched = {}
    for role, expected in spikes.items():
        got = rebuilt.spikes.get(role)
        same_shape = got is not None and got.shape == expected.shape
        mismatched[role] = int((got != expected).sum()) if same_shape else int(expected.numel())
    comparable = rebuilt.prompt.shape == prompt.shape
    difference = float((rebuilt.prompt - prompt).abs().max()) if comparable else math.inf
    return {
        "format": prompter_format(prompter).format,
        "images": int(image.shape[0]),
        "steps": int(spikes[GATES].shape[0]),
        "spikes": {role: int(value.sum()) for role, value in spikes.items()},
        "mismatched_spikes": mismatched,
        "max_prompt_difference": difference,
        "matches": not any(mismatched.values()) and torch.equal(rebuilt.prompt, prompt),
    }

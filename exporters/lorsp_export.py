"""The spiking part of a ``lorsp`` prompter as a NIR graph, and the prompt rebuilt from that file.

:func:`export_lorsp` writes DESIGN.md §1's network with two inputs and two pixel populations::

    descriptor ─▶ gate_affine (Affine) ─▶ gate_neurons (CubaLIF | LIF) ─┬─▶ factor_on  (Linear) ─▶ pixel_on
                                                                        └─▶ factor_off (Linear) ─▶ pixel_off
    image ─▶ image_flat (Flatten) ─┬─▶ beta_on  (Scale) ─▶ pixel_on  ─▶ on
                                   └─▶ beta_off (Scale) ─▶ pixel_off ─▶ off
    gate_neurons ─▶ gates

``factor_on``/``factor_off`` are the ON and OFF halves of ``factor_weight()`` (``relu(F)`` and
``relu(−F)``), ``beta_on``/``beta_off`` the halves of ``pixel_scale()``; the prompter's one pixel
population of ``2·3·H·W`` neurons (ON block, OFF block) becomes two populations of ``3·H·W``, so
the image enters once, one-to-one, instead of duplicated. The host parts go to
``metadata["lorsp"]``: descriptor pooling (kind, size, centre), ``alpha``, image shape, ``T``
(``steps``), the cell type, the names of the inputs and outputs, and the prompter's config as JSON.
:func:`prompt_from_nir` rebuilds ``prompt = alpha ⊙ (mean_t on − mean_t off)`` from the file alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exporters.export import NIRExportError, export_graph
from exporters.importer import GraphRun, NIRImportError, import_nir
from exporters.validate import load_nir
from lorsp_neuro.prompters import CHANNELS, DESCRIPTOR_CENTRE, spike_prompt

METADATA_KEY = "lorsp"
FORMAT = "lorsp-nir/1"
DESCRIPTOR_INPUT, IMAGE_INPUT = "descriptor", "image"
GATE_OUTPUT, ON_OUTPUT, OFF_OUTPUT = "gates", "on", "off"


def adaptive_average_descriptor(x: torch.Tensor, pool: int, centre: float) -> torch.Tensor:
    """``(B, 3·pool²)``: ``adaptive_avg_pool2d(x, pool)`` flattened in C order, minus ``centre``."""
    return F.adaptive_avg_pool2d(x, pool).flatten(1) - centre


#: Descriptor kind (as recorded in the metadata) → ``(image, pool, centre) -> (B, D)``.
DESCRIPTORS: dict[str, Callable[[torch.Tensor, int, float], torch.Tensor]] = {
    "adaptive_avg_pool2d": adaptive_average_descriptor,
}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()


def export_lorsp(prompter) -> nir.NIRGraph:
    """The NIR graph of a ``lorsp`` prompter's ``spiking_core`` plus the host parts in metadata."""
    core = getattr(prompter, "spiking_core", None)
    if core is None:
        raise NIRExportError(
            f"prompter {getattr(prompter, 'name', type(prompter).__name__)!r} has no spiking_core "
            "to export; only 'lorsp' prompters have a spiking part"
        )
    height, width = prompter.image_size
    pixels = CHANNELS * height * width
    with torch.no_grad():
        factor_weight = _numpy(core.factor_weight())
        pixel_scale = _numpy(core.pixel_scale())
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
        (DESCRIPTOR_INPUT, "gate_affine"),
        ("gate_affine", "gate_neurons"),
        ("gate_neurons", "factor_on"),
        ("gate_neurons", "factor_off"),
        ("factor_on", "pixel_on"),
        ("factor_off", "pixel_off"),
        (IMAGE_INPUT, "image_flat"),
        ("image_flat", "beta_on"),
        ("image_flat", "beta_off"),
        ("beta_on", "pixel_on"),
        ("beta_off", "pixel_off"),
        ("gate_neurons", GATE_OUTPUT),
        ("pixel_on", ON_OUTPUT),
        ("pixel_off", OFF_OUTPUT),
    ]
    config = prompter.config
    host = {
        "format": FORMAT,
        "prompter": prompter.name,
        "channels": CHANNELS,
        "image_height": height,
        "image_width": width,
        "steps": int(core.steps),
        "cell": type(core.gate_neurons).__name__,
        "descriptor_kind": "adaptive_avg_pool2d",
        "descriptor_pool": int(config.descriptor_pool),
        "descriptor_centre": float(DESCRIPTOR_CENTRE),
        "alpha": _numpy(prompter.alpha),
        "descriptor_input": DESCRIPTOR_INPUT,
        "image_input": IMAGE_INPUT,
        "gate_output": GATE_OUTPUT,
        "on_output": ON_OUTPUT,
        "off_output": OFF_OUTPUT,
        "prompt": "alpha[c] * (mean_t on[t, c, h, w] - mean_t off[t, c, h, w]); on/off are "
        "(3*H*W,) per step in C order (c, h, w)",
        "config_json": json.dumps(prompter.config_dict()),
    }
    return export_graph(
        nodes,
        edges,
        {DESCRIPTOR_INPUT: (core.gate_affine.in_features,), IMAGE_INPUT: (CHANNELS, height, width)},
        (GATE_OUTPUT, ON_OUTPUT, OFF_OUTPUT),
        dt=core.dt,
        metadata={METADATA_KEY: host},
    )


@dataclass(frozen=True)
class LoRSPHost:
    """The host-side parts of a LoRSP graph, read back from its metadata."""

    image_size: tuple[int, int]
    steps: int
    descriptor: Callable[[torch.Tensor], torch.Tensor]
    alpha: np.ndarray
    inputs: tuple[str, str]  # descriptor, image
    outputs: tuple[str, str, str]  # gates, on, off


#: Most time steps a LoRSP graph's metadata may ask for: inputs are built for every step.
MAX_STEPS = 100_000


def lorsp_host(graph: nir.NIRGraph) -> LoRSPHost:
    """Parse ``metadata["lorsp"]``; raise :class:`NIRImportError` naming a missing or bad field.

    The metadata may come from a stranger's file: every field is checked for its type and range,
    the named inputs and outputs must be the graph's ``Input``/``Output`` nodes, and the image and
    descriptor sizes must be those of the inputs (so they are within the file's validated limits).
    """
    host = (graph.metadata or {}).get(METADATA_KEY)
    if not isinstance(host, dict):
        raise NIRImportError(f"not a LoRSP graph: its metadata has no '{METADATA_KEY}' section")
    where = f"metadata['{METADATA_KEY}']"

    def field(name: str):
        if name not in host:
            raise NIRImportError(f"{where} has no '{name}'")
        value = host[name]
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    def text(name: str) -> str:
        value = field(name)
        if not isinstance(value, str):
            raise NIRImportError(f"{where}['{name}'] must be text, got {value!r}")
        return value

    def whole(name: str, maximum: int | None = None) -> int:
        value = np.asarray(field(name))
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or int(value) < 1:
            raise NIRImportError(f"{where}['{name}'] must be an integer >= 1, got {value!r}")
        if maximum is not None and int(value) > maximum:
            raise NIRImportError(f"{where}['{name}'] = {int(value)} exceeds {maximum}")
        return int(value)

    def node(name: str, kind: type) -> str:
        value = text(name)
        if not isinstance(graph.nodes.get(value), kind):
            raise NIRImportError(f"{where}['{name}'] = {value!r} is not an {kind.__name__} node")
        return value

    if text("format") != FORMAT:
        raise NIRImportError(f"{where}: format {field('format')!r} is not {FORMAT}")
    kind = text("descriptor_kind")
    if kind not in DESCRIPTORS:
        raise NIRImportError(f"descriptor kind {kind!r} is unknown (known: {sorted(DESCRIPTORS)})")
    pool = whole("descriptor_pool")
    centre = np.asarray(field("descriptor_centre"))
    if centre.ndim != 0 or not np.issubdtype(centre.dtype, np.floating) or not np.isfinite(centre):
        raise NIRImportError(
            f"{where}['descriptor_centre'] must be a finite number, got {centre!r}"
        )
    alpha = np.asarray(field("alpha"))
    if alpha.shape != (CHANNELS,) or not np.issubdtype(alpha.dtype, np.number):
        raise NIRImportError(f"{where}['alpha'] must be {CHANNELS} finite values")
    alpha = alpha.astype(np.float64)
    if not np.all(np.isfinite(alpha)):
        raise NIRImportError(f"{where}['alpha'] must be {CHANNELS} finite values")
    inputs = (node("descriptor_input", nir.Input), node("image_input", nir.Input))
    outputs = tuple(node(f"{o}_output", nir.Output) for o in ("gate", "on", "off"))
    image_size = (whole("image_height"), whole("image_width"))
    for name, expected in (
        (inputs[0], (CHANNELS * pool * pool,)),
        (inputs[1], (CHANNELS, *image_size)),
    ):
        declared = tuple(np.ravel(graph.nodes[name].input_type["input"]).tolist())
        if declared != expected:
            raise NIRImportError(
                f"{where}: Input '{name}' has shape {declared}, but the metadata implies {expected}"
            )
    centre = float(centre)
    return LoRSPHost(
        image_size=image_size,
        steps=whole("steps", MAX_STEPS),
        descriptor=lambda x: DESCRIPTORS[kind](x, pool, centre),
        alpha=alpha,
        inputs=inputs,
        outputs=outputs,
    )


@dataclass
class LoRSPRun:
    """The prompt rebuilt from a NIR file and the spike trains behind it."""

    prompt: torch.Tensor  # (B, 3, H, W)
    gates: torch.Tensor  # (T, B, K)
    on: torch.Tensor  # (T, B, 3, H, W)
    off: torch.Tensor  # (T, B, 3, H, W)
    run: GraphRun


def prompt_from_nir(
    source: nir.NIRGraph | str | Path,
    image: torch.Tensor,
    dt: float | None = None,
    record: tuple[str, ...] = ("spikes",),
) -> LoRSPRun:
    """The LoRSP prompt of ``image`` ``(B, 3, H, W)`` in [0, 1] from a NIR graph or file alone.

    The descriptor is pooled on the host as the metadata says, presented (with the image) at each
    of the ``steps`` steps, the graph runs in the importer (float64), and
    ``prompt = alpha ⊙ (mean_t on − mean_t off)``.
    """
    graph = load_nir(source) if isinstance(source, (str, Path)) else source
    host = lorsp_host(graph)
    model = import_nir(graph, dt=dt)
    x = torch.as_tensor(image).to(model.dtype)
    if x.dim() != 4 or tuple(x.shape[1:]) != (CHANNELS, *host.image_size):
        raise NIRImportError(
            f"image has shape {tuple(x.shape)}; this LoRSP graph needs (B, {CHANNELS}, "
            f"{host.image_size[0]}, {host.image_size[1]})"
        )
    steps, batch = host.steps, x.shape[0]
    descriptor = host.descriptor(x)
    inputs = {
        host.inputs[0]: descriptor.unsqueeze(0).expand(steps, *descriptor.shape),
        host.inputs[1]: x.unsqueeze(0).expand(steps, *x.shape),
    }
    run = model(inputs, record=record)
    gate_name, on_name, off_name = host.outputs
    on = run.outputs[on_name].reshape(steps, batch, CHANNELS, *host.image_size)
    off = run.outputs[off_name].reshape(steps, batch, CHANNELS, *host.image_size)
    alpha = torch.as_tensor(host.alpha, dtype=model.dtype)
    return LoRSPRun(spike_prompt(alpha, on, off), run.outputs[gate_name], on, off, run)


def reference_spikes(prompter, image: torch.Tensor):
    """The prompter's own ``(gates, on, off, prompt)`` for ``image``, computed in float64.

    The prompter is copied and cast, so the original is untouched; float64 on both sides makes
    the comparison with :func:`prompt_from_nir` exact rather than up to float32 rounding.
    """
    twin = copy.deepcopy(prompter).to(torch.float64).eval()
    x = torch.as_tensor(image).to(torch.float64)
    with torch.no_grad():
        gates, on, off = twin.spiking_core(twin.descriptor_sequence(x), x)
        prompt = twin.prompt_from_spikes(on, off)
    return gates, on, off, prompt


def verify_lorsp_export(prompter, source: nir.NIRGraph | str | Path, image: torch.Tensor) -> dict:
    """Compare the file's prompt and spikes with the prompter's on ``image``; JSON-ready report."""
    gates, on, off, prompt = reference_spikes(prompter, image)
    rebuilt = prompt_from_nir(source, image)
    mismatched = {
        "gates": int((rebuilt.gates != gates).sum()),
        "on": int((rebuilt.on != on).sum()),
        "off": int((rebuilt.off != off).sum()),
    }
    return {
        "images": int(image.shape[0]),
        "steps": int(on.shape[0]),
        "spikes": {"gates": int(gates.sum()), "on": int(on.sum()), "off": int(off.sum())},
        "mismatched_spikes": mismatched,
        "max_prompt_difference": float((rebuilt.prompt - prompt).abs().max()),
        "matches": not any(mismatched.values()) and torch.equal(rebuilt.prompt, prompt),
    }

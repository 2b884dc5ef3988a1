r"""Energy study: a LoRSP prompter's SynOps and energy per image across T and the grid.

:func:`energy_study` takes a trained prompter (or a run directory) and images, and for every
variant ``(T, grid)`` of a sweep returns per image: SynOps (binary and graded), neuron updates,
spikes and host operations counted from the variant's recorded spikes
(:func:`hardware_sims.synops.count_synops`), the SNN's energy under each hardware profile, the ANN
twin's MACs and energy (:func:`hardware_sims.energy.energy_report`), and the frozen backbone's own
MACs and energy at the image size, so a table can put the prompt's cost next to the network it
prompts.

**Variants reuse the trained weights.** A variant is the same prompter class with ``steps`` and/or
``grid`` replaced in its config and the original state dict loaded strictly
(:func:`variant_prompter`). Every v2 parameter and buffer is shape-independent of T and the grid:
V's factors ``value_left``/``value_right``, the gate Affine and bias, λ (``gate_scale``), γ
(``image_gain``) and θ (``pixel_bias``); the grid only average-pools the image and the rank-1
gate → pixel synapses, and T only sets the number of steps. So a variant is the trained network
*run* at another T or grid, not one *trained* there: its firing (and so its energy) is what the
trained weights give at that setting. ``lorsp_v1`` has no grid; only T can be varied.

Spikes come from the prompter's own Norse cells in float64 (:func:`hardware_sims.cosim.norse_records`),
which ``lorsp cosim`` shows equal to Lava's in floating point, and the graded inputs from the
exported file's host (:func:`hardware_sims.cosim.presented_inputs`: v2 presents descriptor, image
and the constant 1 once). Backbone MACs are counted by :func:`backbone_macs` with forward hooks
over every ``Conv2d`` and ``Linear`` (batch norm, activations, pooling and the normalisation are
not counted: they are a small fraction of the MACs), costed at the profile's ``mac_pj`` (the
backbone runs on conventional hardware).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hardware_sims.cosim import (
    LORSP_GATE,
    CosimError,
    lorsp_prompt,
    norse_records,
    presented_inputs,
)
from hardware_sims.energy import (
    HardwareProfile,
    ann_energy_pj,
    ann_twin_macs,
    host_macs,
    load_profiles,
    snn_energy_pj,
)
from hardware_sims.graph import analyse
from hardware_sims.synops import count_synops
from lorsp_neuro.runs import is_run_dir

#: Images run through the Norse model at a time (bounds memory at 224 px).
CHUNK = 8


@dataclass
class VariantEnergy:
    """One ``(T, grid)`` variant: counts and energies per image, means over the images.

    ``per_image`` holds the spread: ``synops`` and, per profile, ``energy_pj``, one value per image.
    Rates are spikes per neuron and step; ``prompt_sparsity`` is the fraction of prompt values that
    are exactly zero.
    """

    steps: int
    grid: int | None
    pixel_neurons: int
    synops_per_image: float
    binary_synops_per_image: float
    graded_synops_per_image: float
    neuron_updates_per_image: float
    active_neuron_updates_per_image: float
    spikes_per_image: float
    host_macs_per_image: float
    gate_rate: float
    pixel_rate: float
    prompt_sparsity: float
    energy_per_image_pj: dict[str, float]
    energy_breakdown_pj: dict[str, dict[str, float]]
    ann_twin_macs_per_image: float
    ann_twin_macs_by_layer: dict[str, int]
    ann_twin_energy_pj: dict[str, float]
    snn_over_ann_energy: dict[str, float]
    per_image: dict = field(repr=False, default_factory=dict)


@dataclass
class EnergyStudy:
    """:func:`energy_study`'s result: one :class:`VariantEnergy` per ``(T, grid)``."""

    prompter: str
    image_size: tuple[int, int]
    images: int
    profiles: list[str]
    reused: list[str]  # the state-dict entries every variant loaded from the trained prompter
    backbone: str | None
    backbone_macs_per_image: int | None
    backbone_energy_pj: dict[str, float]
    variants: list[VariantEnergy]

    def variant(self, steps: int, grid: int | None) -> VariantEnergy:
        """The variant run at ``steps`` and ``grid`` (None: per pixel)."""
        for v in self.variants:
            if (v.steps, v.grid) == (steps, grid):
                return v
        raise KeyError(f"no variant with steps={steps}, grid={grid}")

    def to_dict(self) -> dict:
        return asdict(self)


def variant_prompter(prompter, **overrides):
    """``prompter`` rebuilt with config fields ``overrides`` and its state dict loaded strictly.

    Raises :class:`~lorsp_neuro.config_checks.ConfigError` for a field the config does not have or a
    value it rejects (a grid that does not divide the image), and ``RuntimeError`` if a
    parameter's shape depended on an overridden field.
    """
    import torch

    from lorsp_neuro.config_checks import ConfigError
    from lorsp_neuro.prompters import create_prompter

    fields = prompter.config_dict()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"prompter {prompter.name!r} has no config field {unknown}")
    with torch.random.fork_rng(devices=[]):  # the throwaway initialisation leaves no trace
        variant = create_prompter(prompter.name, prompter.image_size, **{**fields, **overrides})
    parameter = next(prompter.parameters())
    variant.to(device=parameter.device, dtype=parameter.dtype)
    variant.load_state_dict(prompter.state_dict())
    return variant.eval()


def backbone_macs(backbone, image_size: tuple[int, int]) -> dict[str, int]:
    """MACs per image of every ``Conv2d`` and ``Linear`` of ``backbone`` at ``image_size``.

    One forward pass of a zero image with hooks: a ``Conv2d`` costs
    ``C_out·H'·W'·(C_in/groups)·kH·kW``, a ``Linear`` ``in·out`` per output row. Returns
    ``{"conv2d": …, "linear": …, "total": …}``.
    """
    import torch
    from torch import nn

    counts = {"conv2d": 0, "linear": 0}

    def conv(module, args, output):
        kernel = math.prod(module.kernel_size)
        counts["conv2d"] += output[0].numel() * (module.in_channels // module.groups) * kernel

    def linear(module, args, output):
        counts["linear"] += output[0].numel() * module.in_features

    handles = []
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
    parameter = next(backbone.parameters())
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, *image_size, dtype=parameter.dtype, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    return {**counts, "total": counts["conv2d"] + counts["linear"]}


def _resolve(source, images, backbone):
    """``(prompter, images (B, 3, H, W) float64, backbone module or None)``."""
    import torch

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not is_run_dir(path):
            raise CosimError(f"{path}: not a run directory (with config.json)")
        from lorsp_neuro.runs import load_run, load_test_images

        model, config = load_run(path, device="cpu")
        if isinstance(images, int):
            images, _ = load_test_images(config, model, images)
        source, backbone = model.prompter, backbone if backbone is not None else model.backbone
    if getattr(source, "spiking_core", None) is None:
        raise CosimError(f"prompter '{getattr(source, 'name', source)}' has no spiking part")
    if isinstance(images, int):
        raise CosimError("give images as a (B, 3, H, W) tensor (an image count needs a run)")
    if isinstance(backbone, str):
        from lorsp_neuro.backbones import create_backbone

        backbone = create_backbone(backbone.removeprefix("timm:"), image_size=source.image_size[0])
    return source, torch.as_tensor(images, dtype=torch.float64), backbone


def _measure(variant, images, profiles: Sequence[HardwareProfile]) -> VariantEnergy:
    from exporters.lorsp_export import export_lorsp, lorsp_host

    graph = export_lorsp(variant)
    host = lorsp_host(graph)
    model = analyse(graph)
    host_ops = float(sum(host_macs(graph).values()))
    ann = ann_twin_macs(graph)
    ann_total = float(sum(ann.values()))
    reports, gate_spikes, pixel_spikes, zeros = [], 0.0, 0.0, 0
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        records = norse_records(variant, chunk)
        inputs = presented_inputs(host, chunk)
        spikes = {name: r["spikes"] for name, r in records.items()}
        for i in range(len(chunk)):
            reports.append(
                count_synops(
                    model,
                    {n: s[i : i + 1] for n, s in spikes.items()},
                    {n: v[i : i + 1] for n, v in inputs.items()},
                )
            )
        zeros += int(np.count_nonzero(lorsp_prompt(graph, host, records) == 0))
        for name, s in spikes.items():
            if name == LORSP_GATE:
                gate_spikes += float(s.sum())
            else:
                pixel_spikes += float(s.sum())
    count = len(reports)
    steps = reports[0].steps
    gates = model.populations[LORSP_GATE].size
    pixels = sum(p.size for n, p in model.populations.items() if n != LORSP_GATE)
    energies = {p.name: [snn_energy_pj(r, p, host_ops) for r in reports] for p in profiles}

    def mean(values: Iterable[float]) -> float:
        values = list(values)
        return float(sum(values) / len(values))

    ann_energy = {p.name: ann_energy_pj(ann_total, host_ops, p) for p in profiles}
    snn_energy = {name: mean(e["total"] for e in per) for name, per in energies.items()}
    return VariantEnergy(
        steps=steps,
        grid=getattr(variant.config, "grid", None),
        pixel_neurons=pixels,
        synops_per_image=mean(r.synops_per_image for r in reports),
        binary_synops_per_image=mean(r.binary_synops_per_image for r in reports),
        graded_synops_per_image=mean(r.graded_synops_per_image for r in reports),
        neuron_updates_per_image=mean(r.neuron_updates_per_image for r in reports),
        active_neuron_updates_per_image=mean(r.active_neuron_updates_per_image for r in reports),
        spikes_per_image=mean(r.spikes_per_image for r in reports),
        host_macs_per_image=host_ops,
        gate_rate=gate_spikes / (count * steps * gates),
        pixel_rate=pixel_spikes / (count * steps * pixels),
        prompt_sparsity=zeros / (count * 3 * math.prod(variant.image_size)),
        energy_per_image_pj=snn_energy,
        energy_breakdown_pj={
            name: {term: mean(e[term] for e in per) for term in per[0]}
            for name, per in energies.items()
        },
        ann_twin_macs_per_image=ann_total,
        ann_twin_macs_by_layer=ann,
        ann_twin_energy_pj=ann_energy,
        snn_over_ann_energy={
            name: snn_energy[name] / ann_energy[name] if ann_energy[name] > 0 else math.inf
            for name in snn_energy
        },
        per_image={
            "synops": [r.synops_per_image for r in reports],
            "energy_pj": {name: [e["total"] for e in per] for name, per in energies.items()},
        },
    )


def energy_study(
    source,
    images,
    *,
    steps: Sequence[int] | None = None,
    grids: Sequence[int | None] | None = None,
    profiles: Sequence[str] | None = None,
    backbone=None,
    profiles_file=None,
) -> EnergyStudy:
    """SynOps and energy per image of a LoRSP prompter over ``steps`` × ``grids`` (module doc).

    Arguments:
        source: a ``lorsp`` (or ``lorsp_v1``) prompter, or a run directory.
        images: ``(B, 3, H, W)`` in [0, 1]; with a run directory also an int, the first that many
            test images.
        steps: the T values to run (default: the prompter's own).
        grids: the grids to run, None in the list meaning per pixel, e.g. ``(None, 8)``
            (default: the prompter's own). ``lorsp_v1`` has no grid.
        profiles: hardware profile names (default: every profile).
        backbone: a module, a backbone name (built untrained at the image size: MACs do not
            depend on weights), or None (a run directory's own backbone; a prompter: none).
        profiles_file: extra profiles (:func:`hardware_sims.energy.load_profiles`).
    """
    prompter, x, backbone_module = _resolve(source, images, backbone)
    known = load_profiles(profiles_file)
    names = list(known) if profiles is None else list(profiles)
    missing = [n for n in names if n not in known]
    if missing:
        raise CosimError(f"unknown hardware profile(s) {missing}; known: {', '.join(known)}")
    chosen = [known[n] for n in names]
    own = prompter.config_dict()
    step_values = list(steps) if steps is not None else [own["steps"]]
    grid_values = list(grids) if grids is not None else [own.get("grid")]
    variants = []
    for grid in grid_values:
        for t in step_values:
            overrides = {"steps": t}
            if "grid" in own:
                overrides["grid"] = grid
            elif grid is not None:
                raise CosimError(f"prompter '{prompter.name}' has no grid option")
            variants.append(_measure(variant_prompter(prompter, **overrides), x, chosen))
    macs = None
    if backbone_module is not None:
        macs = backbone_macs(backbone_module, prompter.image_size)["total"]
    return EnergyStudy(
        prompter=prompter.name,
        image_size=tuple(prompter.image_size),
        images=len(x),
        profiles=names,
        reused=sorted(prompter.state_dict()),
        backbone=None
        if backbone_module is None
        else getattr(backbone_module, "name", type(backbone_module).__name__),
        backbone_macs_per_image=macs,
        backbone_energy_pj={p.name: macs * p.mac_pj for p in chosen} if macs is not None else {},
        variants=variants,
    )


__all__ = [
    "EnergyStudy",
    "VariantEnergy",
    "backbone_macs",
    "energy_study",
    "variant_prompter",
]

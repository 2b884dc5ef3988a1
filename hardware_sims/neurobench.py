r"""NeuroBench 2.3's workload metrics on a ``lorsp`` prompter, next to our own counts (main env).

NeuroBench sees a network only through forward hooks on the modules it knows
(``neurobench/models/neurobench_model.py``):

* ``SynapticOperations`` hooks every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and RNN module and keeps
  the input of each call. Per call it binarises the input (non-zero → 1) and a copy of the layer
  (non-zero weight → 1, bias dropped) and adds ``sum(layer_bin(input_bin))``: one operation per
  non-zero input through each non-zero synapse (*effective*; *dense* puts ones everywhere, so
  ``in · out`` per call). The call's operations are ACs when every input value is in
  ``{-1, 0, 1}`` (``metrics/utils/layers/input.py``), MACs otherwise; totals are divided by
  the samples seen.
* ``ActivationSparsity`` hooks the model's activation modules (``nn.ReLU``, ``nn.Sigmoid``,
  snnTorch's ``SpikingNeuron`` and what ``add_activation_module`` adds) and reports zero outputs
  over all outputs, over layers, calls (time steps) and samples. A module returning a tuple,
  as a Norse cell's ``(spikes, state)``, makes it fail (and the Benchmark then reports 0).

So the LoRSP v2 spiking core as trained (:class:`~lorsp_neuro.prompters.LoRSPSpikingCore`) shows
NeuroBench only its ``gate_affine``: the gate → pixel synapses are a functional ``F.linear``, the
image gain an elementwise product, the biases ``F.linear`` of a constant 1. :class:`NeuroBenchCore`
presents the same network as modules NeuroBench understands, one per NIR node of
:func:`exporters.lorsp_export.export_lorsp`: ``gate_affine``, ``gate_bias``, ``pixel_bias``,
``gate_synapses`` as ``nn.Linear`` (bias-free; the biases are synapses from the constant 1, as in
the file), ``image_gain`` as a depthwise 1×1 ``nn.Conv2d`` (one synapse per pixel, as the NIR
``Scale``), and both populations as :class:`SpikingLayer` (the Norse cell, returning its spikes
and keeping its state). The inputs are presented as the file presents them: the descriptor, the
image and the constant 1 at step 0 only (persistent currents; the input layers are not called
afterwards), or at every step with ``persistent = False``. The host parts (descriptor and grid
pooling, ``V ⊙ ρ``) stay functional, outside both counts.

:func:`compare_with_neurobench` runs NeuroBench's ``Benchmark`` on a run's held-out test images
and returns its figures with :func:`hardware_sims.estimate.estimate_energy`'s counts of the same
images. They agree (``docs/hardware.md``): effective MACs + ACs = our ``synops_per_image``, and
the activation sparsities are equal. The one difference is the split: NeuroBench calls the constant
1 of the biases a spike (ACs); we count every Input-node value as a graded event (MACs on CMOS).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hardware_sims.synops import SynOpsReport
from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import pooled_descriptor

#: The NIR input that carries the constant 1 of the biases (:data:`exporters.lorsp_export.BIAS`).
BIAS_INPUT = "bias"


class NeuroBenchError(LorspError, ValueError):
    """A prompter NeuroBench cannot be shown, or a NeuroBench metric that failed."""


class SpikingLayer(nn.Module):
    """A Norse cell that keeps its own state and returns only its spikes, once per step.

    NeuroBench's activation hooks count the zeros of a module's output; a Norse cell returns
    ``(spikes, state)``, which they cannot count.
    """

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell
        self.state = None

    def reset(self) -> None:
        self.state = None

    def forward(self, drive: torch.Tensor) -> torch.Tensor:
        spikes, self.state = self.cell(drive, self.state)
        return spikes


def _linear(weight: torch.Tensor) -> nn.Linear:
    """A bias-free ``nn.Linear`` carrying ``weight`` ``(out, in)``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    return layer


class NeuroBenchCore(nn.Module):
    """A ``lorsp`` (v2) prompter's spiking core as NeuroBench-visible modules (module doc).

    ``forward(x)`` takes images ``(B, 3, H, W)`` and returns the pixel spikes ``(B, T, N)``;
    the spikes are the prompter's own (same cells, same weights, same summation order).
    """

    def __init__(self, prompter):
        super().__init__()
        core = getattr(prompter, "spiking_core", None)
        if prompter.name != "lorsp" or core is None:
            raise NeuroBenchError(
                f"prompter '{prompter.name}' is not a lorsp (v2) prompter: NeuroBench can be "
                "shown only the lorsp spiking core"
            )
        twin = copy.deepcopy(prompter).to(torch.float64).eval()
        core = twin.spiking_core
        self.descriptor_pool = int(twin.config.descriptor_pool)
        self.grid = core.grid
        self.steps = int(core.steps)
        self.persistent = bool(core.persistent)
        with torch.no_grad():
            self.gate_affine = _linear(core.gate_affine.weight)
            self.gate_bias = _linear(core.gate_bias_weight())
            self.gate_neurons = SpikingLayer(core.gate_neurons)
            self.gate_synapses = _linear(core.gate_weight())
            self.image_gain = nn.Conv2d(3, 3, 1, groups=3, bias=False, dtype=torch.float64)
            self.image_gain.weight = nn.Parameter(
                core.image_gain.detach().clone().view(3, 1, 1, 1), requires_grad=False
            )
            self.pixel_bias = _linear(core.pixel_bias_weight())
            self.pixel_neurons = SpikingLayer(core.pixel_neurons)

    def _shown(self, step: int) -> bool:
        return step == 0 or not self.persistent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        descriptor = pooled_descriptor(x, self.descriptor_pool)
        image = F.adaptive_avg_pool2d(x, self.grid) if self.grid is not None else x
        ones = x.new_ones(x.shape[0], 1)
        self.gate_neurons.reset()
        self.pixel_neurons.reset()
        pixels = []
        for step in range(self.steps):
            if self._shown(step):
                gate_drive = self.gate_affine(descriptor) + self.gate_bias(ones)
            else:
                gate_drive = torch.zeros_like(gate_drive)
            gates = self.gate_neurons(gate_drive)
            drive = self.gate_synapses(gates)
            if self._shown(step):  # the core's order: gate drive + (image + bias)
                drive = drive + (self.image_gain(image).flatten(1) + self.pixel_bias(ones))
            pixels.append(self.pixel_neurons(drive))
        return torch.stack(pixels, dim=1)


@dataclass
class NeuroBenchMetrics:
    """NeuroBench's workload figures per image: ``SynapticOperations`` and ``ActivationSparsity``."""

    images: int
    steps: int
    effective_macs: float
    effective_acs: float
    dense: float
    activation_sparsity: float
    version: str

    @property
    def effective_synops(self) -> float:
        """Effective MACs + ACs: every non-zero input through every non-zero synapse."""
        return self.effective_macs + self.effective_acs


def neurobench_metrics(prompter, images: torch.Tensor, batch_size: int | None = None):
    """Run NeuroBench's ``Benchmark`` (``SynapticOperations``, ``ActivationSparsity``) on
    ``images`` ``(B, 3, H, W)`` through :class:`NeuroBenchCore` → :class:`NeuroBenchMetrics`.

    ``batch_size`` defaults to all images in one batch.
    """
    import neurobench
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel
    from torch.utils.data import DataLoader, TensorDataset

    net = NeuroBenchCore(prompter)
    images = torch.as_tensor(images, dtype=torch.float64)
    data = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    loader = DataLoader(data, batch_size=batch_size or len(images), shuffle=False)
    model = TorchModel(net)
    model.add_activation_module(SpikingLayer)
    benchmark = Benchmark(model, loader, [], [], [[], [SynapticOperations, ActivationSparsity]])
    hooked = {hook.name for hook in model.activation_hooks}
    if hooked != {"gate_neurons", "pixel_neurons"}:
        raise NeuroBenchError(f"NeuroBench hooked the activation layers {sorted(hooked)}")
    with torch.no_grad():
        results = benchmark.run(quiet=True)
    synops = results.get("SynapticOperations")
    sparsity = results.get("ActivationSparsity")
    # Benchmark prints a failing metric's exception and reports 0.0 in its place.
    if not isinstance(synops, dict) or not isinstance(sparsity, float) or sparsity == 0.0:
        raise NeuroBenchError(f"a NeuroBench metric failed: {results}")
    return NeuroBenchMetrics(
        images=len(images),
        steps=net.steps,
        effective_macs=float(synops["Effective_MACs"]),
        effective_acs=float(synops["Effective_ACs"]),
        dense=float(synops["Dense"]),
        activation_sparsity=float(sparsity),
        version=neurobench.__version__,
    )


@dataclass
class NeuroBenchComparison:
    """NeuroBench's figures and ours on the same images of one run directory.

    ``ours`` is :attr:`hardware_sims.estimate.EnergyEstimate.counts`; ``constant_input_synops``
    is its ``bias`` layer, graded events for us and ACs for NeuroBench.
    """

    source: str
    neurobench: NeuroBenchMetrics
    ours: SynOpsReport

    @property
    def constant_input_synops(self) -> float:
        return self.ours.layers[BIAS_INPUT].synops_per_image

    def to_dict(self) -> dict[str, Any]:
        nb, ours = self.neurobench, self.ours
        return {
            "source": self.source,
            "images": nb.images,
            "steps": nb.steps,
            "neurobench_version": nb.version,
            "neurobench": {
                "effective_macs_per_image": nb.effective_macs,
                "effective_acs_per_image": nb.effective_acs,
                "effective_synops_per_image": nb.effective_synops,
                "dense_synops_per_image": nb.dense,
                "activation_sparsity": nb.activation_sparsity,
            },
            "ours": {
                "synops_per_image": ours.synops_per_image,
                "graded_synops_per_image": ours.graded_synops_per_image,
                "binary_synops_per_image": ours.binary_synops_per_image,
                "constant_input_synops_per_image": self.constant_input_synops,
                "activation_sparsity": ours.activation_sparsity,
            },
            "agree": math.isclose(nb.effective_synops, ours.synops_per_image, rel_tol=1e-12)
            and math.isclose(nb.activation_sparsity, ours.activation_sparsity, rel_tol=1e-12),
        }


def compare_with_neurobench(
    run_dir: str | Path, images: int = 4, batch_size: int | None = None
) -> NeuroBenchComparison:
    """NeuroBench's metrics (:func:`neurobench_metrics`) and :func:`~hardware_sims.estimate.
    estimate_energy`'s counts on the first ``images`` held-out test images of ``run_dir``."""
    from hardware_sims.estimate import estimate_energy
    from lorsp_neuro.runs import load_run, load_test_images

    model, config = load_run(run_dir, device="cpu")
    x, _ = load_test_images(config, model, images)
    ours = estimate_energy(run_dir, images, backbone=False).counts
    return NeuroBenchComparison(
        source=str(run_dir),
        neurobench=neurobench_metrics(model.prompter, x, batch_size),
        ours=ours,
    )


__all__ = [
    "NeuroBenchComparison",
    "NeuroBenchCore",
    "NeuroBenchError",
    "NeuroBenchMetrics",
    "SpikingLayer",
    "compare_with_neurobench",
    "neurobench_metrics",
]

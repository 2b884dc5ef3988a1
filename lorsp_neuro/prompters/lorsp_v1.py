"""LoRSP v1 (``lorsp_v1``) and its ANN twin (``lorsp_v1_ann``): the spikes carry the prompt's values.

Kept so the comparison with the v2 default (:mod:`lorsp_neuro.prompters.lorsp`) stays
reproducible; DESIGN.md §1 describes both. ``K`` factors ``F_k = B_k A_k`` of rank ``r`` drive ON
and OFF pixel populations through ``[relu(F); relu(−F)]``, gated by K gate neurons, and the prompt
is ``alpha ⊙ (rate_on − rate_off)``: ``K·3·r·(H+W) + D·K + K + 9`` tunable parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lorsp_neuro.config_checks import (
    ConfigError,
    require_band,
    require_choice,
    require_float,
    require_int,
)
from lorsp_neuro.neurons import CELL_FACTORIES, make_cell, rate_band_penalty
from lorsp_neuro.prompters.base import (
    CHANNELS,
    Prompter,
    PromptOutput,
    descriptor_dim,
    low_rank_prompt,
    pooled_descriptor,
    register_prompter,
)


def polarity_factor_weight(factors: torch.Tensor) -> torch.Tensor:
    r"""Synaptic weights from the K gate neurons to the ON and OFF pixel neurons.

    For factors :math:`F` of shape ``(K, C, H, W)`` the ``(2·C·H·W, K)`` matrix has column k

    .. math::
        W_{:,k} = \big[\operatorname{relu}(F_k)\,;\ \operatorname{relu}(-F_k)\big]

    flattened in C order as ``(2, C, H, W)``: the ON population first, then the OFF population.
    """
    num_factors = factors.shape[0]
    on = torch.relu(factors).reshape(num_factors, -1)
    off = torch.relu(-factors).reshape(num_factors, -1)
    return torch.cat([on, off], dim=1).t()


def polarity_pixel_scale(
    beta_on: torch.Tensor, beta_off: torch.Tensor, pixels: int
) -> torch.Tensor:
    r"""One-to-one synapse gains from the image to the pixel neurons, ``(2·C·H·W,)``.

    :math:`s = [\beta_{on,c}]_{c,p} \,\Vert\, [\beta_{off,c}]_{c,p}`: every pixel of channel c has its
    channel's gain, ON block then OFF block, in the same order as :func:`polarity_factor_weight`.
    """
    return torch.cat([beta_on.repeat_interleave(pixels), beta_off.repeat_interleave(pixels)])


def spike_prompt(alpha: torch.Tensor, on_spikes: torch.Tensor, off_spikes: torch.Tensor):
    r"""The pixel prompt from ON/OFF spike trains ``(T, B, C, H, W)``.

    .. math::
        P = \alpha_c \odot \Big(\frac{1}{T}\sum_t s_{on}(t) - \frac{1}{T}\sum_t s_{off}(t)\Big)

    A pixel where neither population fired is exactly zero.
    """
    return alpha.view(1, -1, 1, 1) * (on_spikes.mean(0) - off_spikes.mean(0))


# --------------------------------------------------------------------------------------------
# LoRSP and its ANN twin.
# --------------------------------------------------------------------------------------------


@dataclass
class LoRSPv1AnnConfig:
    """Fields shared by ``lorsp_v1`` and its ReLU twin ``lorsp_v1_ann`` (DESIGN.md §1, v1).

    factors: K, the number of prompt factors (= gate neurons).
    rank: r, the rank of each factor per channel.
    descriptor_pool: the image is average-pooled to ``3×pool×pool`` (D = 3·pool²) for the gates.
    gate_gain: the gate Affine's default (Kaiming-uniform) weights are multiplied by this, so the
        descriptor moves the gate drive across threshold (prototype: 10).
    gate_bias: initial gate bias; puts the gates near threshold (prototype: 1.5).
    factor_scale: initial standard deviation of every factor entry ``F_k = B_k A_k``; B and A are
        both non-zero (a zero B gives ``relu'(0) = 0`` and so zero gradients everywhere).
    beta_init: initial one-to-one gain from a pixel to its ON and OFF neurons.
    alpha_init: initial prompt amplitude per channel; 0 starts the prompt at exactly zero.
    gate_threshold, pixel_threshold: firing thresholds (the ANN twin subtracts them before ReLU).
    gate_lr_scale: the gate's learning rate is ``base_lr·gate_lr_scale`` (gates die easily).
    alpha_lr_scale: alpha's learning rate is ``base_lr·alpha_lr_scale``; alpha is the only bound
        on the prompt's amplitude, and with Adam it grows by about one learning rate per step.
    """

    factors: int = 2
    rank: int = 2
    descriptor_pool: int = 8
    gate_gain: float = 10.0
    gate_bias: float = 1.5
    factor_scale: float = 2.0
    beta_init: float = 0.5
    alpha_init: float = 0.0
    gate_threshold: float = 1.0
    pixel_threshold: float = 1.0
    gate_lr_scale: float = 0.1
    alpha_lr_scale: float = 10.0

    def __post_init__(self):
        for name in ("factors", "rank", "descriptor_pool"):
            require_int(self, name)
        for name in ("gate_gain", "factor_scale", "gate_threshold", "pixel_threshold"):
            require_float(self, name, positive=True)
        require_float(self, "gate_lr_scale", positive=True)
        require_float(self, "alpha_lr_scale", positive=True)
        for name in ("gate_bias", "beta_init", "alpha_init"):
            require_float(self, name)


@dataclass
class LoRSPv1Config(LoRSPv1AnnConfig):
    """``lorsp_v1``: the shared fields plus the spiking dynamics and the firing-rate regulariser.

    steps: T, simulation steps per image (the descriptor is presented at every step).
    cell: ``"LIFCell"`` (current-based, NIR CubaLIF) or ``"LIFBoxCell"`` (NIR LIF).
    dt: integration step in seconds.
    tau_mem_inv, tau_syn_inv: inverse membrane and synaptic time constants in 1/s (the default
        ``dt·tau_syn_inv = 1`` lets a step's input current act for that step only, so a gain means
        the same for both cell types; ``tau_syn_inv`` is unused by ``LIFBoxCell``).
    gate_rate_band: (low, high) firing-rate band each gate neuron is pulled into.
    pixel_rate_band: band for the mean pixel-population rate, or ``None`` for no pixel term.
    rate_reg_weight: weight of the firing-rate regulariser in ``stats["reg_loss"]``.
    """

    steps: int = 8
    cell: str = "LIFCell"
    dt: float = 1e-3
    tau_mem_inv: float = 500.0
    tau_syn_inv: float = 1000.0
    gate_rate_band: tuple[float, float] = (0.05, 0.6)
    pixel_rate_band: tuple[float, float] | None = (0.0, 0.3)
    rate_reg_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "steps")
        require_choice(self, "cell", CELL_FACTORIES)
        for name in ("dt", "tau_mem_inv", "tau_syn_inv"):
            require_float(self, name, positive=True)
        if self.dt * self.tau_mem_inv > 1 or self.dt * self.tau_syn_inv > 1:
            raise ConfigError(
                f"LoRSPv1Config.dt={self.dt} is too large for tau_mem_inv={self.tau_mem_inv}, "
                f"tau_syn_inv={self.tau_syn_inv}: dt·tau_inv must be <= 1 for a stable Euler step"
            )
        require_band(self, "gate_rate_band")
        require_band(self, "pixel_rate_band", optional=True)
        require_float(self, "rate_reg_weight", nonnegative=True)


class LowRankPixelSynapses(nn.Module):
    """The weights shared by the spiking core and its ReLU twin.

    ``gate_affine`` (D→K), the factors ``F_k = B_k A_k`` (``factor_left`` ``(K, 3, H, r)``,
    ``factor_right`` ``(K, 3, r, W)``), and the one-to-one gains ``beta_on``/``beta_off`` (3,).
    """

    def __init__(self, config: LoRSPv1AnnConfig, image_size: tuple[int, int]):
        super().__init__()
        height, width = image_size
        self.image_size = image_size
        dim = descriptor_dim(config.descriptor_pool)
        self.gate_affine = nn.Linear(dim, config.factors)
        with torch.no_grad():
            self.gate_affine.weight.mul_(config.gate_gain)
            self.gate_affine.bias.fill_(config.gate_bias)
        # std(F) = sqrt(r)·std(B)·std(A); split the scale evenly between B and A.
        entry_std = math.sqrt(config.factor_scale / math.sqrt(config.rank))
        shape = (config.factors, CHANNELS)
        self.factor_left = nn.Parameter(torch.randn(*shape, height, config.rank) * entry_std)
        self.factor_right = nn.Parameter(torch.randn(*shape, config.rank, width) * entry_std)
        self.beta_on = nn.Parameter(torch.full((CHANNELS,), float(config.beta_init)))
        self.beta_off = nn.Parameter(torch.full((CHANNELS,), float(config.beta_init)))

    @property
    def num_pixel_neurons(self) -> int:
        """``2·3·H·W``: one ON and one OFF neuron per pixel and channel."""
        return 2 * CHANNELS * self.image_size[0] * self.image_size[1]

    def factors(self) -> torch.Tensor:
        """The K prompt factors ``(K, 3, H, W)``, each of rank ≤ r per channel."""
        return low_rank_prompt(self.factor_left, self.factor_right)

    def factor_weight(self) -> torch.Tensor:
        """``(2·3·H·W, K)`` gate → pixel weights ``[relu(F); relu(−F)]`` (ON block, OFF block)."""
        return polarity_factor_weight(self.factors())

    def pixel_scale(self) -> torch.Tensor:
        """``(2·3·H·W,)`` one-to-one image → pixel-neuron gains (NIR ``Scale``)."""
        pixels = self.image_size[0] * self.image_size[1]
        return polarity_pixel_scale(self.beta_on, self.beta_off, pixels)

    def image_current(self, image: torch.Tensor) -> torch.Tensor:
        """``scale ⊙ [x; x]``: the image's one-to-one drive, ``(B, 2·3·H·W)``."""
        flat = image.flatten(1)
        return self.pixel_scale() * torch.cat([flat, flat], dim=1)

    def gate_parameters(self) -> list[nn.Parameter]:
        return list(self.gate_affine.parameters())


class LoRSPSpikingCore(LowRankPixelSynapses):
    """The spiking part of LoRSP, literally the NIR graph the exporter writes.

    Per step t (descriptor ``d`` constant over the T steps, image ``x``):

    .. math::
        g(t) &= \\mathrm{LIF}_{gate}\\big(W_g d + b_g\\big) \\\\
        s(t) &= \\mathrm{LIF}_{pixel}\\big(W_f\\, g(t) + \\sigma \\odot [x; x]\\big),
        \\qquad W_f = [\\operatorname{relu}(F); \\operatorname{relu}(-F)]

    with ``W_g, b_g`` = :attr:`gate_affine`, :math:`W_f` = :meth:`factor_weight`, σ =
    :meth:`pixel_scale` (``beta_on``/``beta_off`` per channel), and one pixel population of
    ``2·3·H·W`` neurons whose first half is ON and second half OFF.
    """

    def __init__(self, config: LoRSPv1Config, image_size: tuple[int, int]):
        super().__init__(config, image_size)
        self.steps = config.steps
        self.dt = config.dt
        neuron = {
            "dt": config.dt,
            "tau_mem_inv": config.tau_mem_inv,
            "tau_syn_inv": config.tau_syn_inv,
        }
        self.gate_neurons = make_cell(config.cell, v_th=config.gate_threshold, **neuron)
        self.pixel_neurons = make_cell(config.cell, v_th=config.pixel_threshold, **neuron)

    def forward(self, descriptor_seq: torch.Tensor, image: torch.Tensor):
        """``(T, B, D)``, ``(B, 3, H, W)`` → gate ``(T, B, K)``, ON and OFF ``(T, B, 3, H, W)``."""
        weight = self.factor_weight()
        image_current = self.image_current(image)
        gate_state = pixel_state = None
        gate_spikes, pixel_spikes = [], []
        for descriptor in descriptor_seq:
            gates, gate_state = self.gate_neurons(self.gate_affine(descriptor), gate_state)
            drive = F.linear(gates, weight) + image_current
            pixels, pixel_state = self.pixel_neurons(drive, pixel_state)
            gate_spikes.append(gates)
            pixel_spikes.append(pixels)
        gates = torch.stack(gate_spikes)
        pixels = torch.stack(pixel_spikes).unflatten(2, (2, CHANNELS, *self.image_size))
        return gates, pixels[:, :, 0], pixels[:, :, 1]


class LoRSPReLUCore(LowRankPixelSynapses):
    """The ANN twin of :class:`LoRSPSpikingCore`: one pass of thresholded ReLUs instead of T steps.

    .. math::
        g = \\operatorname{relu}(W_g d + b_g - \\theta_g), \\qquad
        a = \\operatorname{relu}(W_f\\, g + \\sigma \\odot [x; x] - \\theta_p)

    (same synapses; a unit is exactly zero wherever its LIF counterpart's drive stays below
    threshold).
    """

    def __init__(self, config: LoRSPv1AnnConfig, image_size: tuple[int, int]):
        super().__init__(config, image_size)
        self.gate_threshold = config.gate_threshold
        self.pixel_threshold = config.pixel_threshold

    def forward(self, descriptor: torch.Tensor, image: torch.Tensor):
        """``(B, D)``, ``(B, 3, H, W)`` → gate ``(B, K)``, ON and OFF ``(B, 3, H, W)``."""
        gates = torch.relu(self.gate_affine(descriptor) - self.gate_threshold)
        drive = F.linear(gates, self.factor_weight()) + self.image_current(image)
        pixels = torch.relu(drive - self.pixel_threshold).unflatten(
            1, (2, CHANNELS, *self.image_size)
        )
        return gates, pixels[:, 0], pixels[:, 1]

    def mac_count(self) -> dict[str, int]:
        """Multiply-accumulates per image, by layer (the host pooling counted as adds).

        ``gate_affine``: D·K; ``factor_linear``: 2·3·H·W·K; ``pixel_scale``: 2·3·H·W;
        ``prompt_combine`` (α·(on − off)): 3·H·W; ``descriptor_pool``: 3·H·W adds.
        """
        pixels = CHANNELS * self.image_size[0] * self.image_size[1]
        in_features, factors = self.gate_affine.in_features, self.gate_affine.out_features
        return {
            "descriptor_pool": pixels,
            "gate_affine": in_features * factors,
            "factor_linear": 2 * pixels * factors,
            "pixel_scale": 2 * pixels,
            "prompt_combine": pixels,
        }


class _FactorPrompter(Prompter):
    """Host parts shared by LoRSP and its twin: the descriptor pooling and ``alpha``."""

    def __init__(self, config: LoRSPv1AnnConfig, image_size):
        super().__init__(config, image_size)
        self.alpha = nn.Parameter(torch.full((CHANNELS,), float(config.alpha_init)))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: :func:`~lorsp_neuro.prompters.base.pooled_descriptor` of ``x``."""
        return pooled_descriptor(x, self.config.descriptor_pool)

    def prompt_from_spikes(self, on: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """``alpha ⊙ (mean_t on − mean_t off)`` for ``(T, B, 3, H, W)`` spike trains."""
        return spike_prompt(self.alpha, on, off)

    def _core(self) -> LowRankPixelSynapses:
        raise NotImplementedError

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The gate Affine at ``base_lr·gate_lr_scale``, alpha at ``·alpha_lr_scale``, the rest."""
        gate = self._core().gate_parameters()
        own = {id(p) for p in [*gate, self.alpha]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        config = self.config
        return [
            {
                "name": f"prompter.{self.name}.gate",
                "params": gate,
                "lr": base_lr * config.gate_lr_scale,
            },
            {
                "name": f"prompter.{self.name}.alpha",
                "params": [self.alpha],
                "lr": base_lr * config.alpha_lr_scale,
            },
            {"name": f"prompter.{self.name}", "params": rest, "lr": base_lr},
        ]


@register_prompter("lorsp_v1")
class LoRSPv1Prompter(_FactorPrompter):
    """LoRSP v1 (DESIGN.md §1): the ON/OFF spike rates carry the prompt values.

    ``spiking_core`` is the exportable spiking network; pooling and ``alpha·(on − off)`` stay here.
    """

    Config = LoRSPv1Config

    def __init__(self, config: LoRSPv1Config, image_size):
        super().__init__(config, image_size)
        self.spiking_core = LoRSPSpikingCore(config, self.image_size)

    def _core(self) -> LowRankPixelSynapses:
        return self.spiking_core

    def descriptor_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, D)``: the descriptor presented at each of the T steps."""
        descriptor = self.descriptor(x)
        return descriptor.unsqueeze(0).expand(self.config.steps, *descriptor.shape)

    def rate_regulariser(self, gates: torch.Tensor, on: torch.Tensor, off: torch.Tensor):
        """Per-gate rates pulled into ``gate_rate_band``; the pixel rate into ``pixel_rate_band``."""
        config = self.config
        loss = rate_band_penalty(gates.mean(dim=(0, 1)), *config.gate_rate_band)
        if config.pixel_rate_band is not None:
            pixel_rate = 0.5 * (on.mean() + off.mean())
            loss = loss + rate_band_penalty(pixel_rate.reshape(1), *config.pixel_rate_band)
        return config.rate_reg_weight * loss

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        gates, on, off = self.spiking_core(self.descriptor_sequence(x), x)
        prompt = self.prompt_from_spikes(on, off)
        stats = {
            "gate_rate": gates.detach().mean(),
            "pixel_rate": 0.5 * (on.detach().mean() + off.detach().mean()),
            "on_rate": on.detach().mean(),
            "off_rate": off.detach().mean(),
            "reg_loss": self.rate_regulariser(gates, on, off),
        }
        return PromptOutput(x + prompt, prompt, stats)


@register_prompter("lorsp_v1_ann")
class LoRSPv1AnnPrompter(_FactorPrompter):
    """The ANN twin of LoRSP v1: the same synapses with thresholded ReLUs, costed in MACs.

    ``prompt = alpha ⊙ (a_on − a_off)``; the rates in ``stats`` are fractions of non-zero units.
    """

    Config = LoRSPv1AnnConfig

    def __init__(self, config: LoRSPv1AnnConfig, image_size):
        super().__init__(config, image_size)
        self.relu_core = LoRSPReLUCore(config, self.image_size)

    def _core(self) -> LowRankPixelSynapses:
        return self.relu_core

    def mac_count(self) -> dict[str, int]:
        """MACs per image by layer (see :meth:`LoRSPReLUCore.mac_count`)."""
        return self.relu_core.mac_count()

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        gates, on, off = self.relu_core(self.descriptor(x), x)
        prompt = self.prompt_from_spikes(on.unsqueeze(0), off.unsqueeze(0))
        stats = {
            "gate_rate": (gates.detach() > 0).float().mean(),
            "pixel_rate": 0.5
            * ((on.detach() > 0).float().mean() + (off.detach() > 0).float().mean()),
            "reg_loss": x.new_zeros(()),
        }
        return PromptOutput(x + prompt, prompt, stats)

r"""Visual prompters: LoRSP (the spiking low-rank prompter), its ANN twin and the VP baselines.

A prompter maps a batch of images ``x`` (``(B, 3, H, W)`` in [0, 1], not yet normalized) to a
:class:`PromptOutput` with ``prompted = x + prompt``; the frozen backbone normalizes afterwards.
Prompters are registered by name (:func:`register_prompter`) together with a dataclass ``Config``
whose ``__post_init__`` rejects a bad field, and built with :func:`create_prompter`.

=================  =========================================  ===================================
name               prompt                                     tunable parameters (H×W image)
=================  =========================================  ===================================
``linear_probe``   none                                       0
``vp_pad``         learnable border of width ``p``            3·(H·W − (H−2p)·(W−2p))
``full_dense``     one 3×H×W prompt                           3·H·W
``lor_vp``         ``bmm(B, A)`` per channel, rank r          3·r·(H+W)
``lorsp_ann``      LoRSP with ReLU units (the ANN twin)       K·3·r·(H+W) + D·K + K + 9
``lorsp``          spiking low-rank prompt (DESIGN.md §1)     K·3·r·(H+W) + D·K + K + 9
=================  =========================================  ===================================

At 224 px, ``3·(H+W) = 1344``: LoR-VP has ``1344·r`` and LoRSP ``K·1344·r + D·K + K + 9``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lorsp_neuro.configs import (
    ConfigError,
    build_config,
    require_band,
    require_choice,
    require_float,
    require_int,
)
from lorsp_neuro.errors import LorspError
from lorsp_neuro.neurons import CELL_FACTORIES, make_cell, rate_band_penalty

CHANNELS = 3
#: Subtracted from the pooled [0, 1] pixels to centre the gate descriptor.
DESCRIPTOR_CENTRE = 0.5


class PromptOutput(NamedTuple):
    """What a prompter returns: the prompted image, the prompt (``None`` for no prompt), stats.

    ``stats`` holds scalar tensors (``gate_rate``, ``pixel_rate``, ``reg_loss`` …); ``reg_loss``,
    when present, is added to the training loss.
    """

    prompted: torch.Tensor
    prompt: torch.Tensor | None
    stats: dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Pure functions: the maths of the prompts.
# --------------------------------------------------------------------------------------------


def low_rank_prompt(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    r"""Per-channel low-rank products :math:`P_{\dots c} = B_{\dots c} A_{\dots c}`.

    ``left`` is ``(..., C, H, r)``, ``right`` ``(..., C, r, W)``; the result ``(..., C, H, W)`` has
    rank at most ``r`` in every channel (LoR-VP: ``P = bmm(B, A)``).
    """
    return torch.matmul(left, right)


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


def border_mask(height: int, width: int, pad_width: int) -> torch.Tensor:
    """``(H, W)`` boolean mask that is True on the border of width ``pad_width`` (VP padding)."""
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[pad_width : height - pad_width, pad_width : width - pad_width] = False
    return mask


def descriptor_dim(pool: int) -> int:
    """Size ``D = C·pool²`` of the pooled image descriptor the gate neurons see."""
    return CHANNELS * pool * pool


# --------------------------------------------------------------------------------------------
# Registry.
# --------------------------------------------------------------------------------------------

_PROMPTERS: dict[str, type[Prompter]] = {}


def register_prompter(name: str) -> Callable[[type[Prompter]], type[Prompter]]:
    """Class decorator: register a :class:`Prompter` subclass (with a dataclass ``Config``)."""

    def decorate(cls: type[Prompter]) -> type[Prompter]:
        if name in _PROMPTERS:
            raise LorspError(f"prompter {name!r} is registered twice")
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise LorspError(f"prompter {name!r}: {cls.__name__}.Config must be a dataclass")
        cls.name = name
        _PROMPTERS[name] = cls
        return cls

    return decorate


def list_prompters() -> list[str]:
    """Names of all registered prompters, sorted."""
    return sorted(_PROMPTERS)


def prompter_class(name: str) -> type[Prompter]:
    """The class registered as ``name``; an unknown name raises :class:`LorspError`."""
    try:
        return _PROMPTERS[name]
    except KeyError:
        raise LorspError(
            f"unknown prompter {name!r}; known prompters: {', '.join(list_prompters())}"
        ) from None


def create_prompter(name: str, image_size: int | tuple[int, int], **config_fields: Any) -> Prompter:
    """Build the prompter ``name`` for ``image_size`` (int or ``(H, W)``) from config fields.

    >>> p = create_prompter("lor_vp", 224, rank=4)
    >>> p.num_tunable_parameters()
    5376
    """
    cls = prompter_class(name)
    config = build_config(cls.Config, f"prompter {name!r}", config_fields)
    return cls(config, image_size)


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and all(isinstance(s, int) for s in image_size):
        size = tuple(image_size)
    else:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size


class Prompter(nn.Module):
    """Base class: holds the config and image size; counts tunable parameters."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any, image_size: int | tuple[int, int]):
        super().__init__()
        self.config = config
        self.image_size = _as_hw(image_size)

    def num_tunable_parameters(self) -> int:
        """Number of trainable scalars (the DESIGN.md formula of each prompter)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; one group at ``base_lr`` unless a prompter says otherwise."""
        params = [p for p in self.parameters() if p.requires_grad]
        return (
            [{"name": f"prompter.{self.name}", "params": params, "lr": base_lr}] if params else []
        )

    def config_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (``create_prompter(name, size, **config_dict())``)."""
        return dataclasses.asdict(self.config)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != CHANNELS or tuple(x.shape[2:]) != self.image_size:
            raise LorspError(
                f"prompter {self.name!r}: expected images of shape (B, {CHANNELS}, "
                f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, config={self.config}"


# --------------------------------------------------------------------------------------------
# Baselines.
# --------------------------------------------------------------------------------------------


@dataclass
class NoPromptConfig:
    """``linear_probe`` has no prompt and no fields."""


@register_prompter("linear_probe")
class NoPrompt(Prompter):
    """No prompt: the image goes to the backbone unchanged (the plain probe baseline)."""

    Config = NoPromptConfig

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        return PromptOutput(x, None, {})


@dataclass
class FullDenseConfig:
    """``full_dense``: one learnable ``3×H×W`` prompt added to every image.

    init_std: standard deviation of the initial prompt (0 starts from the plain image).
    """

    init_std: float = 0.0

    def __post_init__(self):
        require_float(self, "init_std", nonnegative=True)


@register_prompter("full_dense")
class FullDensePrompt(Prompter):
    """A dense, instance-agnostic pixel prompt: ``3·H·W`` parameters."""

    Config = FullDenseConfig

    def __init__(self, config: FullDenseConfig, image_size):
        super().__init__(config, image_size)
        self.prompt = nn.Parameter(torch.randn(CHANNELS, *self.image_size) * config.init_std)

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        prompt = self.prompt.unsqueeze(0).expand_as(x)
        return PromptOutput(x + prompt, prompt, {})


@dataclass
class PadConfig:
    """``vp_pad`` (Bahng et al. 2022): a learnable border added to the image.

    pad_width: border width in pixels; ``None`` scales the paper's 30 px at 224 px to the image
        size (``round(30·min(H, W)/224)``, at least 1).
    """

    pad_width: int | None = None

    def __post_init__(self):
        if self.pad_width is not None:
            require_int(self, "pad_width", minimum=1)


def default_pad_width(height: int, width: int) -> int:
    """The paper's 30 px border at 224 px, scaled to ``min(H, W)``: ``max(1, round(30·s/224))``."""
    return max(1, round(30 * min(height, width) / 224))


@register_prompter("vp_pad")
class PadPrompt(Prompter):
    """A learnable border of width ``p``: ``3·(H·W − (H−2p)(W−2p))`` parameters (69,840 at 224)."""

    Config = PadConfig

    def __init__(self, config: PadConfig, image_size):
        super().__init__(config, image_size)
        height, width = self.image_size
        pad = config.pad_width if config.pad_width is not None else default_pad_width(height, width)
        if 2 * pad >= min(height, width):
            raise ConfigError(
                f"PadConfig.pad_width={pad} leaves no image inside a {height}×{width} border "
                f"(needs 2·pad_width < {min(height, width)})"
            )
        self.pad_width = pad
        self.register_buffer("mask", border_mask(height, width, pad), persistent=False)
        self.border = nn.Parameter(torch.zeros(CHANNELS, int(self.mask.sum())))

    def border_prompt(self) -> torch.Tensor:
        """The ``(3, H, W)`` prompt: the border values, zero inside."""
        prompt = self.border.new_zeros(CHANNELS, *self.image_size)
        return prompt.masked_scatter(self.mask.expand(CHANNELS, -1, -1), self.border)

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        prompt = self.border_prompt().unsqueeze(0).expand_as(x)
        return PromptOutput(x + prompt, prompt, {})


@dataclass
class LoRVPConfig:
    """``lor_vp`` (LoR-VP, ICLR 2025): ``P = bmm(B, A)`` per channel.

    rank: r, the rank of each channel's prompt.
    a_init_std: A ~ N(0, a_init_std²); B starts at zero, so the prompt starts at zero.
    """

    rank: int = 4
    a_init_std: float = 0.01

    def __post_init__(self):
        require_int(self, "rank")
        require_float(self, "a_init_std", positive=True)


@register_prompter("lor_vp")
class LoRVPPrompt(Prompter):
    """LoR-VP: ``B: 3×H×r`` (zero), ``A: 3×r×W`` (Gaussian); ``3·r·(H+W)`` parameters."""

    Config = LoRVPConfig

    def __init__(self, config: LoRVPConfig, image_size):
        super().__init__(config, image_size)
        height, width = self.image_size
        self.left = nn.Parameter(torch.zeros(CHANNELS, height, config.rank))
        self.right = nn.Parameter(torch.randn(CHANNELS, config.rank, width) * config.a_init_std)

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        prompt = low_rank_prompt(self.left, self.right).unsqueeze(0).expand_as(x)
        return PromptOutput(x + prompt, prompt, {})


# --------------------------------------------------------------------------------------------
# LoRSP and its ANN twin.
# --------------------------------------------------------------------------------------------


@dataclass
class LoRSPAnnConfig:
    """Fields shared by ``lorsp`` and its ReLU twin ``lorsp_ann`` (DESIGN.md §1).

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
class LoRSPConfig(LoRSPAnnConfig):
    """``lorsp``: the shared fields plus the spiking dynamics and the firing-rate regulariser.

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
                f"LoRSPConfig.dt={self.dt} is too large for tau_mem_inv={self.tau_mem_inv}, "
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

    def __init__(self, config: LoRSPAnnConfig, image_size: tuple[int, int]):
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

    def __init__(self, config: LoRSPConfig, image_size: tuple[int, int]):
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

    def __init__(self, config: LoRSPAnnConfig, image_size: tuple[int, int]):
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

    def __init__(self, config: LoRSPAnnConfig, image_size):
        super().__init__(config, image_size)
        self.alpha = nn.Parameter(torch.full((CHANNELS,), float(config.alpha_init)))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: adaptive average pool to ``3×pool×pool``, flattened, minus 0.5.

        Centring the [0, 1] pixels keeps an image-independent offset ``W_g·0.5`` out of the gate
        drive, so ``gate_bias`` alone sets where the gates start (uncentred, one gate in two
        started silent or saturated for every image).
        """
        return F.adaptive_avg_pool2d(x, self.config.descriptor_pool).flatten(1) - DESCRIPTOR_CENTRE

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


@register_prompter("lorsp")
class LoRSPPrompter(_FactorPrompter):
    """Low-Rank visual Spike Prompting: the reference design of DESIGN.md §1.

    ``spiking_core`` is the exportable spiking network; pooling and ``alpha·(on − off)`` stay here.
    """

    Config = LoRSPConfig

    def __init__(self, config: LoRSPConfig, image_size):
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


@register_prompter("lorsp_ann")
class LoRSPAnnPrompter(_FactorPrompter):
    """The ANN twin of LoRSP: the same synapses with thresholded ReLUs, costed in MACs.

    ``prompt = alpha ⊙ (a_on − a_off)``; the rates in ``stats`` are fractions of non-zero units.
    """

    Config = LoRSPAnnConfig

    def __init__(self, config: LoRSPAnnConfig, image_size):
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

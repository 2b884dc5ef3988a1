r"""LoRSP v2 (``lorsp``, the default) and its ANN twin (``lorsp_ann``): value readout (DESIGN.md §1).

The prompt's values are LoR-VP's low-rank ``V = B A`` (per channel, rank r); the spiking network
decides where and how strongly they apply::

    x ─pool(p)─▶ d(x) − 0.5 ─gate_affine─▶ gate neurons g ∈ {0,1}^r ─gate_synapses─▶ pixel neurons
    x ─(pool(G))─▶ image_gain γ_c, one-to-one ──────────────────────────────────────▶ pixel neurons
    1 ─gate_bias─▶ gate neurons;   1 ─pixel_bias (θ_c − 0.5·γ_c)─────────────────────▶ pixel neurons
    prompt(x) = V ⊙ ρ(x),   ρ = (1/T) Σ_t s(t) ∈ {0, 1/T, …, 1}

Column k of ``gate_synapses`` is ``λ_k · |b_k| |a_k|ᵀ``, V's own k-th rank-1 component (so the
synapses add no factor parameters). A pixel neuron that never fires gives a prompt of exactly 0;
if every neuron fired at every step the prompt would be LoR-VP's. With ``grid = G`` there is one
neuron per channel and cell of a ``G×G`` grid (image and synapses average-pooled), and its rate is
repeated over its cell.

**Inputs presented once** (``persistent``, the default): both populations are CubaLIF cells whose
synaptic current does not decay (``tau_syn_inv = 0``); the descriptor, the image and the constant
1 of the bias synapses enter at step 0 only, and gate spikes accumulate in the pixel current. So
the graded input SynOps are paid once per image, not T times. ``persistent = False`` presents them
at every step into a current that lasts one step (``dt·tau_syn_inv = 1``).

The torch modules here are literally the NIR graph :func:`exporters.lorsp_export.export_lorsp`
writes (nodes ``gate_affine``, ``gate_bias``, ``gate_neurons``, ``gate_synapses``, ``image_gain``,
``pixel_bias``, ``pixel_neurons``), summed in the same order, so a float64 run of the file is
bit-identical to the prompter.

**Sparsity** (``target_sparsity``): the pixel bias θ becomes a buffer steered by a σ-normalised
integral controller after each training step, per channel c,
``θ_c ← θ_c − k·σ_c·(s* − s_c)``, with ``s_c`` the fraction of channel c's pixel neurons silent over
the T steps on the batch and ``σ_c`` the batch std of ``m = max_t w_t − v_th`` (``w`` the membrane
without reset; silent ⇔ m ≤ 0). Tunable parameters: ``3·r·(H+W) + (3p²+1)·r + r + 3 (+3 for θ
without a target)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lorsp_neuro.config_checks import ConfigError, require_band, require_float, require_int
from lorsp_neuro.neurons import lif_sequence, make_cell, rate_band_penalty
from lorsp_neuro.prompters.base import (
    CHANNELS,
    Prompter,
    PromptOutput,
    descriptor_dim,
    low_rank_prompt,
    pooled_descriptor,
    register_prompter,
)

#: The image enters the pixel neurons centred: ``γ_c·(x − 0.5) + θ_c`` (folded into the bias).
IMAGE_CENTRE = 0.5


# --------------------------------------------------------------------------------------------
# Pure functions.
# --------------------------------------------------------------------------------------------


def rank_one_gate_weight(
    left: torch.Tensor, right: torch.Tensor, gate_scale: torch.Tensor, grid: int | None
) -> torch.Tensor:
    r"""Gate → pixel synapses ``(N, r)``: column k is :math:`\lambda_k\,|b_k|\,|a_k|^T` per channel.

    ``left`` B ``(3, H, r)``, ``right`` A ``(3, r, W)``, ``gate_scale`` λ ``(r,)``. With a grid the
    ``(3, H, W)`` column is average-pooled to ``(3, G, G)``; N is ``3·H·W`` or ``3·G·G``, C order.
    """
    columns = left.abs().permute(2, 0, 1).unsqueeze(-1) * right.abs().permute(1, 0, 2).unsqueeze(-2)
    columns = columns * gate_scale.view(-1, 1, 1, 1)  # (r, 3, H, W)
    if grid is not None:
        columns = F.adaptive_avg_pool2d(columns, grid)
    return columns.flatten(1).t()


def value_readout(values: torch.Tensor, rates: torch.Tensor, grid: int | None) -> torch.Tensor:
    r"""The prompt :math:`V \odot \rho`: ``values`` ``(3, H, W)``, ``rates`` ``(B, 3, h, w)``.

    With a grid (``h = w = G``) each rate is repeated over its ``(H/G)×(W/G)`` cell first.
    """
    height, width = values.shape[-2:]
    if grid is not None:
        rates = rates.repeat_interleave(height // grid, dim=-2).repeat_interleave(
            width // grid, dim=-1
        )
    return values * rates


def silence_margin(currents: torch.Tensor, dv: float, threshold: float) -> torch.Tensor:
    r"""How much bias each neuron can take and stay silent: :math:`\min_t (v_{th} - w_t)/c_t`.

    A bias θ enters every step's current, so it raises the membrane without reset
    ``w_t = (1 − d_v) w_{t−1} + d_v i_t`` by :math:`c_t\,\Delta\theta` with
    :math:`c_t = 1 - (1 - d_v)^{t+1}`; the neuron stays silent over the T steps exactly while
    :math:`\Delta\theta \le \min_t (v_{th} - w_t)/c_t`. ``currents`` ``(T, B, N)`` → ``(B, N)``.
    """
    membrane = torch.zeros_like(currents[0])
    margin = torch.full_like(currents[0], math.inf)
    for step, current in enumerate(currents):
        membrane = membrane + dv * (current - membrane)
        gain = 1.0 - (1.0 - dv) ** (step + 1)
        margin = torch.minimum(margin, (threshold - membrane) / gain)
    return margin


def no_reset_peak(currents: torch.Tensor, dv: float, threshold: float) -> torch.Tensor:
    r"""``m = max_t w_t − v_th`` for the membrane without reset ``w_t = (1 − d_v) w_{t−1} + d_v i_t``.

    ``currents`` ``(T, B, N)`` are the synaptic currents ``i_t`` after each step's input (``w_0 = 0``,
    as the cells start). A neuron is silent over the T steps exactly when ``m ≤ 0``.
    """
    membrane = torch.zeros_like(currents[0])
    peak = torch.full_like(currents[0], -math.inf)
    for current in currents:
        membrane = membrane + dv * (current - membrane)
        peak = torch.maximum(peak, membrane)
    return peak - threshold


# --------------------------------------------------------------------------------------------
# Configs.
# --------------------------------------------------------------------------------------------


@dataclass
class LoRSPAnnConfig:
    """Fields shared by ``lorsp`` and its ReLU twin ``lorsp_ann`` (DESIGN.md §1, v2).

    rank: r, the rank of the values ``V = B A`` per channel, and the number of gate neurons.
    descriptor_pool: the gates see the image average-pooled to ``3×p×p`` (D = 3·p²).
    grid: None for one pixel neuron per channel and pixel; G for a ``3×G×G`` grid of neurons, each
        driving its ``(H/G)×(W/G)`` cell (G must divide the image's height and width).
    a_init_std: A ~ N(0, a_init_std²) and B = 0, LoR-VP's init: the prompt starts at zero.
    gate_gain: the gate Affine's default (Kaiming-uniform) weights are multiplied by this.
    gate_bias: initial gate bias; puts the gates near threshold.
    gate_scale_init: λ₀, the initial scale of every rank-1 gate → pixel synapse column.
    pixel_bias_init: θ₀, the initial pixel bias (per channel).
    image_gain_init: γ₀, the initial one-to-one gain from a pixel to its neuron (per channel).
    gate_threshold, pixel_threshold: firing thresholds (the twin subtracts them before its ReLU).
    gate_lr_scale: the gate Affine's learning rate is ``base_lr·gate_lr_scale`` (gates die easily).
    """

    rank: int = 4
    descriptor_pool: int = 2
    grid: int | None = None
    a_init_std: float = 0.01
    gate_gain: float = 10.0
    gate_bias: float = 1.5
    gate_scale_init: float = 5.0
    pixel_bias_init: float = 2.2
    image_gain_init: float = 1.0
    gate_threshold: float = 1.0
    pixel_threshold: float = 1.0
    gate_lr_scale: float = 0.1

    def __post_init__(self):
        require_int(self, "rank")
        require_int(self, "descriptor_pool")
        if self.grid is not None:
            require_int(self, "grid")
        for name in ("a_init_std", "gate_gain", "gate_threshold", "pixel_threshold"):
            require_float(self, name, positive=True)
        require_float(self, "gate_lr_scale", positive=True)
        for name in ("gate_bias", "gate_scale_init", "pixel_bias_init", "image_gain_init"):
            require_float(self, name)


@dataclass
class LoRSPConfig(LoRSPAnnConfig):
    """``lorsp``: the shared fields, the spiking dynamics, the regulariser and the sparsity target.

    steps: T, simulation steps per image.
    persistent: present the inputs once, at step 0, into synaptic currents that do not decay
        (``tau_syn_inv`` is then 0); False presents them at every step with ``tau_syn_inv = 1/dt``.
    dt: integration step in seconds.
    tau_mem_inv: inverse membrane time constant in 1/s (``dt·tau_mem_inv`` ≤ 1).
    gate_rate_band: (low, high) firing-rate band each gate neuron is pulled into.
    pixel_rate_band: band for the mean pixel firing rate, or None for no pixel term.
    rate_reg_weight: weight of the firing-rate regulariser in ``stats["reg_loss"]``.
    target_sparsity: None (the natural sparsity), or s* in (0, 1): the fraction of prompt pixels
        that should be exactly zero, held by the θ controller (θ is then a buffer, not trained).
    controller_gain: k, the controller's gain (per step, in units of the batch's σ).
    """

    steps: int = 4
    persistent: bool = True
    dt: float = 1e-3
    tau_mem_inv: float = 500.0
    gate_rate_band: tuple[float, float] = (0.05, 0.6)
    pixel_rate_band: tuple[float, float] | None = (0.0, 0.5)
    rate_reg_weight: float = 1.0
    target_sparsity: float | None = None
    controller_gain: float = 2.0

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "steps")
        if not isinstance(self.persistent, bool):
            raise ConfigError(
                f"LoRSPConfig.persistent must be true or false, got {self.persistent!r}"
            )
        for name in ("dt", "tau_mem_inv", "controller_gain"):
            require_float(self, name, positive=True)
        if self.dt * self.tau_mem_inv > 1:
            raise ConfigError(
                f"LoRSPConfig.dt={self.dt} is too large for tau_mem_inv={self.tau_mem_inv}: "
                "dt·tau_mem_inv must be <= 1 for a stable Euler step"
            )
        require_band(self, "gate_rate_band")
        require_band(self, "pixel_rate_band", optional=True)
        require_float(self, "rate_reg_weight", nonnegative=True)
        if self.target_sparsity is not None:
            require_float(self, "target_sparsity")
            if not 0 < self.target_sparsity < 1:
                raise ConfigError(
                    f"LoRSPConfig.target_sparsity must be in (0, 1) or None, got "
                    f"{self.target_sparsity!r}"
                )

    @property
    def tau_syn_inv(self) -> float:
        """0 for a persistent current, else ``1/dt`` (the current lasts one step)."""
        return 0.0 if self.persistent else 1.0 / self.dt


# --------------------------------------------------------------------------------------------
# The synapses shared by the spiking core and its twin.
# --------------------------------------------------------------------------------------------


class ValueSynapses(nn.Module):
    """V's factors and every synapse of the v2 network, shared by the SNN and its ReLU twin.

    ``gate_affine`` (bias-free ``Linear`` D→r; the bias is :attr:`gate_bias`, fed by a constant
    1), ``value_left`` B ``(3, H, r)``, ``value_right`` A ``(3, r, W)``, ``gate_scale`` λ ``(r,)``,
    ``image_gain`` γ ``(3,)`` and ``pixel_bias`` θ ``(3,)`` (a buffer when a controller sets it).
    """

    def __init__(self, config: LoRSPAnnConfig, image_size: tuple[int, int], train_bias: bool):
        super().__init__()
        height, width = image_size
        grid = config.grid
        if grid is not None and (height % grid or width % grid):
            raise ConfigError(
                f"LoRSPConfig.grid={grid} must divide the image size {height}×{width}"
            )
        self.image_size = image_size
        self.grid = grid
        self.neuron_shape = (CHANNELS, *((grid, grid) if grid is not None else image_size))
        rank = config.rank
        self.gate_affine = nn.Linear(descriptor_dim(config.descriptor_pool), rank, bias=False)
        with torch.no_grad():
            self.gate_affine.weight.mul_(config.gate_gain)
        self.gate_bias = nn.Parameter(torch.full((rank,), float(config.gate_bias)))
        self.value_left = nn.Parameter(torch.zeros(CHANNELS, height, rank))
        self.value_right = nn.Parameter(torch.randn(CHANNELS, rank, width) * config.a_init_std)
        self.gate_scale = nn.Parameter(torch.full((rank,), float(config.gate_scale_init)))
        self.image_gain = nn.Parameter(torch.full((CHANNELS,), float(config.image_gain_init)))
        bias = torch.full((CHANNELS,), float(config.pixel_bias_init))
        if train_bias:
            self.pixel_bias = nn.Parameter(bias)
        else:
            self.register_buffer("pixel_bias", bias)

    @property
    def num_pixel_neurons(self) -> int:
        """``3·H·W`` (or ``3·G·G`` with a grid)."""
        return math.prod(self.neuron_shape)

    def values(self) -> torch.Tensor:
        """``V = B A``, ``(3, H, W)``: LoR-VP's low-rank prompt values."""
        return low_rank_prompt(self.value_left, self.value_right)

    def gate_weight(self) -> torch.Tensor:
        """``(N, r)`` gate → pixel synapses (:func:`rank_one_gate_weight`)."""
        return rank_one_gate_weight(self.value_left, self.value_right, self.gate_scale, self.grid)

    def per_neuron(self, per_channel: torch.Tensor) -> torch.Tensor:
        """``(N,)``: a per-channel ``(3,)`` value repeated over each channel's neurons."""
        return per_channel.repeat_interleave(self.num_pixel_neurons // CHANNELS)

    def image_scale(self) -> torch.Tensor:
        """``(N,)`` one-to-one image → pixel-neuron gains γ (NIR ``Scale``)."""
        return self.per_neuron(self.image_gain)

    def pixel_bias_weight(self) -> torch.Tensor:
        """``(N, 1)``: ``θ_c − 0.5·γ_c``, the weight from the constant 1 (the image's centring)."""
        return self.per_neuron(self.pixel_bias - IMAGE_CENTRE * self.image_gain).unsqueeze(1)

    def gate_bias_weight(self) -> torch.Tensor:
        """``(r, 1)``: the gate bias as the weight from the constant 1."""
        return self.gate_bias.unsqueeze(1)

    def neuron_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)``: the image as the pixel neurons see it (average-pooled to the grid)."""
        if self.grid is not None:
            x = F.adaptive_avg_pool2d(x, self.grid)
        return x.flatten(1)

    def gate_input(self, descriptor: torch.Tensor) -> torch.Tensor:
        """``W_g d + b_g·1``, summed as the NIR graph sums its edges."""
        ones = descriptor.new_ones(descriptor.shape[0], 1)
        return self.gate_affine(descriptor) + F.linear(ones, self.gate_bias_weight())

    def pixel_input(self, image: torch.Tensor) -> torch.Tensor:
        """``γ ⊙ x + (θ − 0.5·γ)·1``: the image and bias drive of the pixel neurons, ``(B, N)``."""
        ones = image.new_ones(image.shape[0], 1)
        return self.image_scale() * self.neuron_image(image) + F.linear(
            ones, self.pixel_bias_weight()
        )

    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.gate_affine.weight, self.gate_bias]


class CoreRecord(NamedTuple):
    """What the spiking core emits: gate ``(T, B, r)`` and pixel ``(T, B, 3, h, w)`` spikes."""

    gates: torch.Tensor
    pixels: torch.Tensor
    currents: torch.Tensor | None  # (T, B, N) pixel currents, when asked for


class LoRSPSpikingCore(ValueSynapses):
    r"""The spiking part of ``lorsp``, literally the NIR graph the exporter writes.

    Per step t, with the step-0 inputs (every step when not persistent) and CubaLIF cells:

    .. math::
        g(t) &= \mathrm{CubaLIF}_{gate}\big(W_g d + b_g\cdot 1\big) \\
        s(t) &= \mathrm{CubaLIF}_{pixel}\big(W_{gp}\, g(t) + \gamma \odot x + (\theta - 0.5\gamma)\cdot 1\big)

    (``W_gp`` = :meth:`gate_weight`; the later steps of a persistent run add ``W_gp g(t)`` only).
    """

    def __init__(self, config: LoRSPConfig, image_size: tuple[int, int]):
        super().__init__(config, image_size, train_bias=config.target_sparsity is None)
        self.steps = config.steps
        self.dt = config.dt
        self.persistent = config.persistent
        neuron = {
            "dt": config.dt,
            "tau_mem_inv": config.tau_mem_inv,
            "tau_syn_inv": config.tau_syn_inv,
        }
        self.gate_neurons = make_cell("LIFCell", v_th=config.gate_threshold, **neuron)
        self.pixel_neurons = make_cell("LIFCell", v_th=config.pixel_threshold, **neuron)
        #: Run the T steps fused (one autograd node per population) rather than cell by cell.
        self.fused = True

    def forward(
        self, descriptor: torch.Tensor, image: torch.Tensor, record_currents: bool = False
    ) -> CoreRecord:
        """``(B, D)``, ``(B, 3, H, W)`` → :class:`CoreRecord` over the ``steps`` steps.

        With :attr:`fused` (the default) each population runs its T steps in one autograd node
        (:func:`~lorsp_neuro.neurons.lif_sequence`, bit-identical spikes to the Norse cells);
        ``fused = False`` calls the Norse cells step by step (what forward hooks on
        ``gate_neurons``/``pixel_neurons`` see).
        """
        weight = self.gate_weight()
        gate_drive = self.gate_input(descriptor)
        pixel_drive = self.pixel_input(image)
        if not self.fused:
            return self._step_by_step(weight, gate_drive, pixel_drive, record_currents)
        gate_inputs = torch.stack([self._presented(gate_drive, t) for t in range(self.steps)])
        gates = lif_sequence(gate_inputs, self.gate_neurons).spikes
        drives = []
        for step, spikes in enumerate(gates):  # one product per step, as the importer sums
            drive = F.linear(spikes, weight)
            drives.append(drive + pixel_drive if self._shown(step) else drive)
        pixels = lif_sequence(torch.stack(drives), self.pixel_neurons)
        currents = pixels.currents.detach() if record_currents else None
        return CoreRecord(gates, pixels.spikes.unflatten(2, self.neuron_shape), currents)

    def _shown(self, step: int) -> bool:
        return step == 0 or not self.persistent

    def _presented(self, drive: torch.Tensor, step: int) -> torch.Tensor:
        return drive if self._shown(step) else torch.zeros_like(drive)

    def _step_by_step(self, weight, gate_drive, pixel_drive, record_currents) -> CoreRecord:
        gate_state = pixel_state = None
        gate_spikes, pixel_spikes, currents = [], [], []
        current = None
        for step in range(self.steps):
            gates, gate_state = self.gate_neurons(self._presented(gate_drive, step), gate_state)
            drive = F.linear(gates, weight)
            if self._shown(step):
                drive = drive + pixel_drive
            pixels, pixel_state = self.pixel_neurons(drive, pixel_state)
            if record_currents:
                with torch.no_grad():
                    carried = 0.0 if current is None or not self.persistent else current
                    current = carried + drive.detach()
                    currents.append(current)
            gate_spikes.append(gates)
            pixel_spikes.append(pixels)
        pixels = torch.stack(pixel_spikes).unflatten(2, self.neuron_shape)
        return CoreRecord(
            torch.stack(gate_spikes), pixels, torch.stack(currents) if record_currents else None
        )


class LoRSPReLUCore(ValueSynapses):
    r"""The ANN twin of :class:`LoRSPSpikingCore`: one pass of thresholded ReLUs clipped at 1.

    .. math::
        g = \min(1, \operatorname{relu}(W_g d + b_g - \theta_g)), \qquad
        \rho = \min(1, \operatorname{relu}(W_{gp}\, g + \gamma \odot x + \theta - 0.5\gamma - \theta_p))

    Same synapses; a unit is exactly zero wherever its LIF counterpart's drive stays below
    threshold, and clipped at 1 as a firing rate is.
    """

    def __init__(self, config: LoRSPAnnConfig, image_size: tuple[int, int]):
        super().__init__(config, image_size, train_bias=True)
        self.gate_threshold = config.gate_threshold
        self.pixel_threshold = config.pixel_threshold

    def forward(self, descriptor: torch.Tensor, image: torch.Tensor):
        """``(B, D)``, ``(B, 3, H, W)`` → gate ``(B, r)``, pixel rates ``(B, 3, h, w)``."""
        gates = (self.gate_input(descriptor) - self.gate_threshold).clamp(0.0, 1.0)
        drive = F.linear(gates, self.gate_weight()) + self.pixel_input(image)
        rates = (drive - self.pixel_threshold).clamp(0.0, 1.0)
        return gates, rates.unflatten(1, self.neuron_shape)

    def mac_count(self) -> dict[str, int]:
        """Multiply-accumulates per image, by layer (the host pooling counted as adds).

        ``descriptor_pool``: 3·H·W adds (another 3·H·W with a grid); ``gate_affine``: (D+1)·r;
        ``gate_synapses``: N·r; ``image_gain`` and ``pixel_bias``: N each; ``value_readout``
        (V ⊙ ρ): 3·H·W. V itself is image-independent and computed once, as LoR-VP's is.
        """
        pixels = CHANNELS * self.image_size[0] * self.image_size[1]
        neurons = self.num_pixel_neurons
        rank = self.gate_affine.out_features
        pool = pixels * (2 if self.grid is not None else 1)
        return {
            "descriptor_pool": pool,
            "gate_affine": (self.gate_affine.in_features + 1) * rank,
            "gate_synapses": neurons * rank,
            "image_gain": neurons,
            "pixel_bias": neurons,
            "value_readout": pixels,
        }


# --------------------------------------------------------------------------------------------
# The prompters.
# --------------------------------------------------------------------------------------------


class _ValuePrompter(Prompter):
    """Host parts shared by ``lorsp`` and ``lorsp_ann``: the descriptor and the value readout."""

    def _core(self) -> ValueSynapses:
        raise NotImplementedError

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3·p²)``: :func:`~lorsp_neuro.prompters.base.pooled_descriptor` of ``x``."""
        return pooled_descriptor(x, self.config.descriptor_pool)

    def prompt_from_rates(self, rates: torch.Tensor) -> torch.Tensor:
        """``V ⊙ ρ`` for rates ``(B, 3, h, w)`` (:func:`value_readout`)."""
        core = self._core()
        return value_readout(core.values(), rates, core.grid)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The gate Affine and bias at ``base_lr·gate_lr_scale``, everything else at ``base_lr``."""
        gate = self._core().gate_parameters()
        own = {id(p) for p in gate}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        return [
            {
                "name": f"prompter.{self.name}.gate",
                "params": gate,
                "lr": base_lr * self.config.gate_lr_scale,
            },
            {"name": f"prompter.{self.name}", "params": rest, "lr": base_lr},
        ]


@register_prompter("lorsp")
class LoRSPPrompter(_ValuePrompter):
    """Low-Rank visual Spike Prompting, v2 (value readout): DESIGN.md §1's reference design.

    ``spiking_core`` is the exportable spiking network; the descriptor pooling and ``V ⊙ ρ`` stay
    on the host. With ``target_sparsity`` set, :meth:`after_optimizer_step` runs the θ controller.
    """

    Config = LoRSPConfig

    def __init__(self, config: LoRSPConfig, image_size):
        super().__init__(config, image_size)
        self.spiking_core = LoRSPSpikingCore(config, self.image_size)
        self._silence: tuple[torch.Tensor, torch.Tensor] | None = None

    def _core(self) -> ValueSynapses:
        return self.spiking_core

    def run_core(self, x: torch.Tensor, record_currents: bool = False) -> CoreRecord:
        """The spiking core on ``x`` ``(B, 3, H, W)``: gate and pixel spikes over T steps."""
        return self.spiking_core(self.descriptor(x), x, record_currents)

    def prompt_from_spikes(self, pixels: torch.Tensor) -> torch.Tensor:
        """``V ⊙ mean_t s`` for pixel spikes ``(T, B, 3, h, w)``."""
        return self.prompt_from_rates(pixels.mean(0))

    def rate_regulariser(self, gates: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        """Per-gate rates pulled into ``gate_rate_band``; the mean pixel rate into its band.

        ``gates`` are the gate spikes ``(T, B, r)``, ``rates`` the pixel rates ``(B, 3, h, w)``.
        """
        config = self.config
        loss = rate_band_penalty(gates.mean(dim=(0, 1)), *config.gate_rate_band)
        if config.pixel_rate_band is not None:
            loss = loss + rate_band_penalty(rates.mean().reshape(1), *config.pixel_rate_band)
        return config.rate_reg_weight * loss

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        control = self.training and self.config.target_sparsity is not None
        record = self.run_core(x, record_currents=control)
        if control:
            self._silence = self._silence_statistics(record)
        rates = record.pixels.mean(0)
        prompt = self.prompt_from_rates(rates)
        observed = rates.detach()
        stats = {
            "gate_rate": record.gates.detach().mean(),
            "pixel_rate": observed.mean(),
            "silent_fraction": (observed == 0).float().mean(),
            "reg_loss": self.rate_regulariser(record.gates, rates),
        }
        return PromptOutput(x + prompt, prompt, stats)

    def _silence_statistics(self, record: CoreRecord):
        """Per channel: the fraction of pixel neurons silent over T, the std of ``m``, and the
        sums behind both (count, silent, Σm, Σm², float64) for a reduction over DDP ranks."""
        core = self.spiking_core
        with torch.no_grad():
            silent = (record.pixels.detach().amax(0) == 0).float()  # (B, 3, h, w)
            dv = self.config.dt * self.config.tau_mem_inv
            peak = no_reset_peak(record.currents, dv, self.config.pixel_threshold)
            peak = peak.unflatten(1, core.neuron_shape).transpose(0, 1).flatten(1)  # (3, B·h·w)
            wide = peak.double()
            sums = torch.stack(
                [
                    torch.full_like(wide[:, 0], wide.shape[1]),
                    silent.double().sum(dim=(0, 2, 3)),
                    wide.sum(dim=1),
                    wide.square().sum(dim=1),
                ]
            )
            return silent.mean(dim=(0, 2, 3)), peak.std(dim=1), sums

    #: Most neuron margins the calibration keeps (64 MB of float32): 512 images at 32 px, ~100
    #: at 224 px.
    CALIBRATION_NEURONS = 2**24

    def calibrate(self, batches) -> None:
        """Set θ so that exactly ``target_sparsity`` of the pixel neurons are silent on ``batches``.

        The controller holds sparsity on average while the weights move; the checkpoint chosen on
        validation can come before it settles (a short run on textures ended at 0.86 for a target
        of 0.9). With the weights frozen, silence is monotone in θ (:func:`silence_margin`), so
        per channel the θ shift that silences a fraction s* is a quantile of the margins: exact,
        one pass. Nothing happens without a target.
        """
        target = self.config.target_sparsity
        if target is None:
            return
        core, config = self.spiking_core, self.config
        dv = config.dt * config.tau_mem_inv
        margins, kept = [], 0
        with torch.no_grad():
            for x in batches:
                record = self.run_core(x, record_currents=True)
                margin = silence_margin(record.currents, dv, config.pixel_threshold)
                margin = margin.unflatten(1, core.neuron_shape).transpose(0, 1).flatten(1)
                margins.append(margin.float().cpu())
                kept += margin.numel()
                if kept >= self.CALIBRATION_NEURONS:
                    break
            if not margins:
                return
            per_channel = torch.cat(margins, dim=1)  # (3, n)
            silent = round(target * per_channel.shape[1])
            if silent == 0:
                return
            # Silent after a shift Δ ⇔ margin ≥ Δ: Δ is the ``silent``-th largest margin.
            shift = per_channel.kthvalue(per_channel.shape[1] - silent + 1, dim=1).values
            core.pixel_bias.add_(shift.to(core.pixel_bias))

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The θ controller: ``θ_c ← θ_c − k·σ_c·(s* − s_c)`` from the last training batch.

        Under DDP the statistics are those of the global batch (the ranks' sums reduced), so θ
        is the same on every rank and as in one process, up to float rounding.
        """
        if self.config.target_sparsity is None or self._silence is None:
            return
        silent, sigma, sums = self._silence
        self._silence = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
            count, silent_sum, total, squares = sums
            silent = (silent_sum / count).to(silent)
            sigma = ((squares - total.square() / count) / (count - 1)).clamp_min(0).sqrt()
            sigma = sigma.to(silent)
        error = self.config.target_sparsity - silent
        with torch.no_grad():
            self.spiking_core.pixel_bias.sub_(self.config.controller_gain * sigma * error)


@register_prompter("lorsp_ann")
class LoRSPAnnPrompter(_ValuePrompter):
    """The ANN twin of ``lorsp``: the same synapses with clipped thresholded ReLUs, costed in MACs.

    ``prompt = V ⊙ ρ`` with ρ the clipped ReLU of the pixel units; the rates in ``stats`` are
    fractions of non-zero units.
    """

    Config = LoRSPAnnConfig

    def __init__(self, config: LoRSPAnnConfig, image_size):
        super().__init__(config, image_size)
        self.relu_core = LoRSPReLUCore(config, self.image_size)

    def _core(self) -> ValueSynapses:
        return self.relu_core

    def mac_count(self) -> dict[str, int]:
        """MACs per image by layer (see :meth:`LoRSPReLUCore.mac_count`)."""
        return self.relu_core.mac_count()

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        gates, rates = self.relu_core(self.descriptor(x), x)
        prompt = self.prompt_from_rates(rates)
        stats = {
            "gate_rate": (gates.detach() > 0).float().mean(),
            "pixel_rate": (rates.detach() > 0).float().mean(),
            "reg_loss": x.new_zeros(()),
        }
        return PromptOutput(x + prompt, prompt, stats)

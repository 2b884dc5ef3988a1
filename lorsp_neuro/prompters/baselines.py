"""The visual-prompting baselines: no prompt, VP padding, a full dense prompt, LoR-VP, pruned LoR-VP.

=================  =========================================  ===================================
name               prompt                                     tunable parameters (H×W image)
=================  =========================================  ===================================
``linear_probe``   none                                       0
``vp_pad``         learnable border of width ``p``            3·(H·W − (H−2p)·(W−2p))
``full_dense``     one 3×H×W prompt                           3·H·W
``lor_vp``         ``bmm(B, A)`` per channel, rank r          3·r·(H+W)
``lor_vp_pruned``  LoR-VP, smallest-|P| pixels zeroed         3·r·(H+W)
=================  =========================================  ===================================

``lor_vp_pruned`` is the fair baseline for a sparse LoRSP prompt: the same values at the same
sparsity, chosen by a fixed magnitude mask instead of per image by spiking neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lorsp_neuro.config_checks import ConfigError, require_float, require_int
from lorsp_neuro.prompters.base import (
    CHANNELS,
    Prompter,
    PromptOutput,
    low_rank_prompt,
    register_prompter,
)


def border_mask(height: int, width: int, pad_width: int) -> torch.Tensor:
    """``(H, W)`` boolean mask that is True on the border of width ``pad_width`` (VP padding)."""
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[pad_width : height - pad_width, pad_width : width - pad_width] = False
    return mask


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


def magnitude_mask(prompt: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask of ``prompt``'s shape keeping its ``n − round(sparsity·n)`` largest |entries|.

    Exactly ``round(sparsity·n)`` entries are zeroed whatever the ties (``topk`` picks among equal
    magnitudes by index), so the prompt is exactly ``sparsity``-sparse even at a zero init.
    """
    flat = prompt.detach().abs().flatten()
    keep = flat.numel() - round(sparsity * flat.numel())
    mask = torch.zeros_like(flat)
    if keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return mask.view_as(prompt)


@dataclass
class LoRVPPrunedConfig(LoRVPConfig):
    """``lor_vp_pruned``: LoR-VP whose smallest-|P| entries are zeroed to ``target_sparsity``.

    target_sparsity: fraction of the ``3·H·W`` prompt entries that are exactly zero.
    prune_at: fraction of the training steps after which the mask is fixed (the remaining steps
        fine-tune the kept entries); before that, every forward prunes the current prompt the same
        way, so a checkpoint taken at any time is ``target_sparsity``-sparse.
    """

    target_sparsity: float = 0.9
    prune_at: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        require_float(self, "target_sparsity", nonnegative=True)
        require_float(self, "prune_at", nonnegative=True)
        if self.target_sparsity >= 1:
            raise ConfigError(
                f"LoRVPPrunedConfig.target_sparsity must be < 1, got {self.target_sparsity!r}"
            )
        if self.prune_at > 1:
            raise ConfigError(f"LoRVPPrunedConfig.prune_at must be <= 1, got {self.prune_at!r}")


@register_prompter("lor_vp_pruned")
class LoRVPPrunedPrompt(LoRVPPrompt):
    """LoR-VP with magnitude pruning: ``P ⊙ M``, ``M`` fixed after ``prune_at`` of training.

    ``mask`` and ``mask_fixed`` are buffers, saved in checkpoints, so a resumed or reloaded run
    prunes with the mask it had.
    """

    Config = LoRVPPrunedConfig

    def __init__(self, config: LoRVPPrunedConfig, image_size):
        super().__init__(config, image_size)
        self.register_buffer("mask", torch.ones(CHANNELS, *self.image_size))
        self.register_buffer("mask_fixed", torch.tensor(False))

    def current_mask(self, prompt: torch.Tensor) -> torch.Tensor:
        """The fixed mask once set, else the magnitude mask of the current ``prompt``."""
        if bool(self.mask_fixed):
            return self.mask
        return magnitude_mask(prompt, self.config.target_sparsity)

    def forward(self, x: torch.Tensor) -> PromptOutput:
        self._check_input(x)
        values = low_rank_prompt(self.left, self.right)
        prompt = (values * self.current_mask(values)).unsqueeze(0).expand_as(x)
        return PromptOutput(x + prompt, prompt, {})

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Fix the mask from the current prompt once ``step >= prune_at·total_steps``."""
        if bool(self.mask_fixed) or step < math.ceil(self.config.prune_at * total_steps):
            return
        with torch.no_grad():
            self.mask.copy_(
                magnitude_mask(low_rank_prompt(self.left, self.right), self.config.target_sparsity)
            )
            self.mask_fixed.fill_(True)

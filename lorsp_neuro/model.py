"""A prompter, a frozen backbone and a head in one module: ``logits, prompt_output = model(x)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lorsp_neuro.backbones import FrozenBackbone
from lorsp_neuro.prompters import Prompter, PromptOutput


class PromptedModel(nn.Module):
    """``x → prompter → x + prompt → frozen backbone → head → target logits``.

    Only the prompter and the head train; the backbone stays frozen and in eval mode.
    """

    def __init__(self, prompter: Prompter, backbone: FrozenBackbone, head: nn.Module):
        super().__init__()
        self.prompter = prompter
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, PromptOutput]:
        """Target-class logits ``(B, num_classes)`` and the prompter's output for ``x`` in [0, 1]."""
        output = self.prompter(x)
        if self.head.input_kind == "features":
            logits = self.head(self.backbone.forward_features(output.prompted))
        else:
            logits = self.head(self.backbone(output.prompted))
        return logits, output

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's source-class logits of the prompted image (what a label mapping reads)."""
        return self.backbone(self.prompter(x).prompted)

    @torch.no_grad()
    def update_label_mapping(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Refit an FLM/ILM head from ``(images, labels)`` batches with the current prompt.

        The prompter runs in eval mode; a linear-probe head makes this a no-op.
        """
        if not hasattr(self.head, "update_mapping"):
            return
        was_training = self.prompter.training
        self.prompter.eval()
        device = next(self.head.buffers()).device
        logits, labels = [], []
        for images, targets in batches:
            logits.append(self.source_logits(images.to(device)).float().cpu())
            labels.append(targets.cpu())
        self.prompter.train(was_training)
        self.head.update_mapping(torch.cat(logits), torch.cat(labels))

    def num_tunable_parameters(self) -> int:
        """Trainable scalars of the prompter and the head (the backbone has none)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def param_groups(self, prompt_lr: float, head_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the prompter's own (LoRSP's gate lower) and the head at ``head_lr``."""
        groups = self.prompter.param_groups(prompt_lr)
        head_params = [p for p in self.head.parameters() if p.requires_grad]
        if head_params:
            groups.append({"name": "head", "params": head_params, "lr": head_lr})
        return groups

"""A prompter, a frozen backbone and a head in one module: ``logits, prompt_output = model(x)``.

Model assembly lives here too: :func:`build_model` makes the untrained model a run config
describes (the training loop, :func:`lorsp_neuro.runs.load_run` and the benchmarks all use it),
:func:`trainable_state` / :func:`load_trainable_state` are what a checkpoint holds of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lorsp_neuro.backbones import FrozenBackbone
from lorsp_neuro.checkpoint import CheckpointError
from lorsp_neuro.errors import TrainingError
from lorsp_neuro.prompters import Prompter, PromptOutput

if TYPE_CHECKING:
    from lorsp_neuro.run_config import TrainConfig


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
        return self.classify(output.prompted), output

    def classify(self, prompted: torch.Tensor) -> torch.Tensor:
        """Target-class logits of an already prompted image (backbone, then the head)."""
        if self.head.input_kind == "features":
            return self.head(self.backbone.forward_features(prompted))
        return self.head(self.backbone(prompted))

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


def build_backbone(config: TrainConfig):
    """The frozen backbone of ``config`` (``timm:`` prefixes are accepted and dropped)."""
    from lorsp_neuro.backbones import create_backbone

    return create_backbone(
        config.backbone.removeprefix("timm:"),
        pretrained=config.pretrained,
        weights_path=config.weights_path,
        image_size=config.image_size,
        **config.backbone_options,
    )


def build_model(config: TrainConfig, num_classes: int, backbone=None):
    """The untrained :class:`~lorsp_neuro.model.PromptedModel` of ``config``, on the CPU.

    The prompter works at ``config.image_size``, or at the backbone's input size when that is unset.
    """
    from lorsp_neuro.heads import create_head
    from lorsp_neuro.prompters import create_prompter

    backbone = backbone if backbone is not None else build_backbone(config)
    if config.channels_last:
        backbone.to(memory_format=torch.channels_last)
    image_size = config.image_size or backbone.input_size[0]
    prompter = create_prompter(config.prompter, image_size, **config.prompter_options)
    head = create_head(config.head, backbone, num_classes)
    return PromptedModel(prompter, backbone, head)


def model_image_size(model) -> int:
    height, width = model.prompter.image_size
    if height != width:
        raise TrainingError(f"only square images are supported, the prompter has {height}x{width}")
    return height


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Everything of the model that training changes: the prompter's and the head's state."""
    state = {f"prompter.{k}": v for k, v in model.prompter.state_dict().items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    return state


def load_trainable_state(model, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load the ``prompter.*`` and ``head.*`` tensors of a checkpoint into ``model`` strictly."""
    for part in ("prompter", "head"):
        prefix = f"{part}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            getattr(model, part).load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{source}: does not fit this model's {part}: {first_line}"
            ) from exc


def is_spiking(model) -> bool:
    return hasattr(model.prompter, "spiking_core")


def tunable_parameter_counts(model) -> dict[str, int]:
    head = sum(p.numel() for p in model.head.parameters() if p.requires_grad)
    prompt = model.prompter.num_tunable_parameters()
    return {"tunable_params": prompt + head, "prompt_params": prompt, "head_params": head}

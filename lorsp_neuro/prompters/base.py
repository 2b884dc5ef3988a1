"""The prompter interface, its registry and the maths every low-rank prompter shares.

A prompter maps a batch of images ``x`` (``(B, 3, H, W)`` in [0, 1], not yet normalized) to a
:class:`PromptOutput` with ``prompted = x + prompt``; the frozen backbone normalizes afterwards.
Prompters are registered by name (:func:`register_prompter`) together with a dataclass ``Config``
whose ``__post_init__`` rejects a bad field, and built with :func:`create_prompter`.

A prompter that changes state outside the optimizer (a sparsity controller, a pruning mask) does
it in :meth:`Prompter.after_optimizer_step`, which the training loop calls after every step, and
in :meth:`Prompter.calibrate`, called at the end of every epoch on training images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lorsp_neuro.config_checks import ConfigError, build_config
from lorsp_neuro.errors import LorspError

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


def descriptor_dim(pool: int) -> int:
    """Size ``D = C·pool²`` of the pooled image descriptor the gate neurons see."""
    return CHANNELS * pool * pool


def pooled_descriptor(x: torch.Tensor, pool: int) -> torch.Tensor:
    """``(B, 3·pool²)``: ``x`` average-pooled to ``3×pool×pool``, flattened in C order, minus 0.5.

    Centring the [0, 1] pixels keeps an image-independent offset ``W_g·0.5`` out of the gate drive,
    so the gate bias alone sets where the gates start (uncentred, one gate in two started silent
    or saturated for every image).
    """
    return F.adaptive_avg_pool2d(x, pool).flatten(1) - DESCRIPTOR_CENTRE


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

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop after optimizer step ``step`` (1-based) of ``total_steps``.

        The default does nothing; a prompter with state outside the optimizer updates it here.
        """

    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Called by the training loop at the end of every epoch, before validation, with batches
        of a fixed set of training images (``(B, 3, H, W)``). The default does nothing; a prompter
        with a calibrated setting outside the optimizer (LoRSP's θ for a target sparsity) sets it.
        """

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

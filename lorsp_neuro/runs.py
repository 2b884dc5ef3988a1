"""Run directories, read in one place: layout, config, checkpoints, the model, the data splits.

A run directory (written by :func:`lorsp_neuro.training.train`) holds

- ``config.json``: the :class:`~lorsp_neuro.run_config.TrainConfig` with every option resolved;
- ``metrics.jsonl``: one line per finished epoch;
- ``checkpoints/epoch-NNNN.safetensors``: the newest ``keep_checkpoints`` epochs, for ``--resume``;
- ``best.safetensors``: the trainable state of the epoch best on validation;
- ``summary.json``: the test metrics of that state, written when training ends.

:func:`load_run` rebuilds the trained model; :func:`load_splits` draws the run's data splits again
(same seed, sizes and image size), so that every consumer (evaluation, export checks, co-simulation,
pictures, benchmarks) sees the same test images. Reading a run's files needs no torch; rebuilding
its model or data imports it then.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorsp_neuro.errors import CheckpointError
from lorsp_neuro.run_config import TrainConfig

if TYPE_CHECKING:
    import torch

    from lorsp_neuro.data import DatasetSplits

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
BEST_FILE = "best.safetensors"
CHECKPOINT_DIR = "checkpoints"


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it holds a ``config.json``)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def read_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    try:
        fields = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable run config: {exc}") from exc
    return TrainConfig.from_dict(fields, str(path))


def checkpoint_file(run_dir: Path, which: str) -> Path:
    if which == "best":
        path = run_dir / BEST_FILE
        if not path.is_file():
            raise CheckpointError(f"{run_dir}: no {BEST_FILE} yet (no epoch has finished)")
        return path
    if which == "last":
        from lorsp_neuro import checkpoint as ckpt

        found = ckpt.epoch_checkpoints(run_dir / CHECKPOINT_DIR)
        if not found:
            raise CheckpointError(f"{run_dir}: no per-epoch checkpoint in {CHECKPOINT_DIR}/")
        return found[-1][1]
    raise CheckpointError(f"checkpoint must be 'best' or 'last', got {which!r}")


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """``(model, config)`` of a run directory, with the ``checkpoint`` ('best' or 'last') loaded."""
    import torch

    from lorsp_neuro import checkpoint as ckpt
    from lorsp_neuro.devices import resolve_device
    from lorsp_neuro.model import build_model, load_trainable_state

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    path = checkpoint_file(run_dir, checkpoint)
    tensors, info = ckpt.load_checkpoint(path)
    # Built under the run's seed, as train() builds it, so that a backbone with random weights
    # (pretrained=False) is the same network; the caller's RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config, int(info["num_classes"]))
    load_trainable_state(model, tensors, path)
    model.to(resolve_device(device))
    model.eval()
    return model, config


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of a finished run."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {SUMMARY_FILE} (training has not finished)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable run summary: {exc}") from exc


def read_metrics(path: Path, up_to_epoch: int = math.inf) -> list[dict[str, Any]]:
    """Complete lines of a ``metrics.jsonl`` for epochs ``<= up_to_epoch`` (a line cut short by a
    crash is dropped)."""
    lines = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("epoch", math.inf) <= up_to_epoch:
                lines.append(record)
    return lines


def load_splits(config: TrainConfig, image_size: int | None = None) -> DatasetSplits:
    """The run's train/val/test splits, drawn as training drew them (same seed and sizes), at
    ``image_size`` (default: the config's)."""
    from lorsp_neuro.data import load_dataset

    return load_dataset(
        config.dataset,
        train_size=config.train_size,
        val_size=config.val_size,
        test_size=config.test_size,
        image_size=image_size or config.image_size,
        seed=config.seed,
        path=config.dataset_path,
        **config.dataset_options,
    )


def load_test_images(
    config: TrainConfig, model, count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` (default all) test images and labels of a run, at the model's size."""
    from lorsp_neuro.model import model_image_size

    test = load_splits(config, model_image_size(model)).test
    count = len(test) if count is None else count
    if len(test) < count:
        raise CheckpointError(f"the run's test split has {len(test)} images, {count} requested")
    return test.batch(slice(0, count))

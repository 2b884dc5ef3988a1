"""Evaluation: the metrics of a model on a split, and of a run directory's checkpoint.

:func:`evaluate_split` is what training validates with; :func:`evaluate` (``lorsp eval``) re-computes
a run's test metrics from its directory alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lorsp_neuro.data import ImageSet, iterate_batches
from lorsp_neuro.devices import autocast, reproducible, resolve_device
from lorsp_neuro.io import json_ready
from lorsp_neuro.metrics import SplitMetrics
from lorsp_neuro.model import is_spiking, model_image_size, tunable_parameter_counts
from lorsp_neuro.runs import load_run, load_splits, read_run_config


@torch.no_grad()
def evaluate_split(
    model,
    images: ImageSet,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    processes=None,
) -> dict[str, Any]:
    """Accuracy, loss and prompt statistics of ``model`` on ``images`` (see :class:`SplitMetrics`).

    ``processes`` (a :class:`~lorsp_neuro.training.Processes`) under DDP: each rank evaluates every
    ``world_size``-th batch and the totals are combined.
    """
    rank, world = (processes.rank, processes.world_size) if processes else (0, 1)
    was_training = model.training
    model.eval()
    metrics = SplitMetrics(spiking=is_spiking(model))
    for index, (x, y) in enumerate(iterate_batches(images, batch_size)):
        if index % world != rank:
            continue
        x, y = x.to(device), y.to(device)
        with autocast(device, amp):
            logits, output = model(x)
        loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
        metrics.update(logits, y, output.prompt, output.stats, float(loss_sum))
    metrics.all_reduce(device)
    model.train(was_training)
    return metrics.result()


def evaluate(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "auto",
    test_size: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Test-split metrics of a run's checkpoint, from the run directory alone."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if test_size is not None:
        config = config.replace(test_size=test_size)
    torch_device = resolve_device(device)
    model, _ = load_run(run_dir, checkpoint, device=str(torch_device))
    splits = load_splits(config, model_image_size(model))
    with reproducible(config, torch_device):
        test = evaluate_split(
            model,
            splits.test,
            batch_size=batch_size or config.eval_batch_size,
            device=torch_device,
            amp=config.amp and torch_device.type == "cuda",
        )
    result = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        **tunable_parameter_counts(model),
        "prompt_sparsity": test["prompt_sparsity"],
        "distinct_prompts": test["distinct_prompts"],
        "gate_firing_rate": test["gate_firing_rate"],
        "pixel_firing_rate": test["pixel_firing_rate"],
        "test_stat_means": test["stat_means"],
        "test_size": test["n"],
    }
    return json_ready(result)

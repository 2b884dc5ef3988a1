r"""Training and evaluation of a prompted model, on one device or under ``torchrun`` (DDP).

Python API (the CLI's ``lorsp train`` / ``lorsp eval`` call these):

- :func:`train` ``(config) -> summary`` trains, checkpoints every epoch, keeps the checkpoint best
  on *validation* accuracy and reports the test metrics of that checkpoint.

This module is the loop only: the model is assembled in :mod:`lorsp_neuro.model`, evaluated in
:mod:`lorsp_neuro.evaluation`, and the run directory it writes is laid out and read back in
:mod:`lorsp_neuro.runs`.

Reproducibility: the data order of epoch e is a permutation drawn from ``(seed, e)`` alone, the
global RNG state is saved with every checkpoint, and deterministic kernels are requested, so on
the CPU the same config gives bit-identical weights, whether run in one go or interrupted and
resumed. Under ``torchrun`` each rank takes every ``world_size``-th image of each global batch and
scales its summed loss so that DDP's gradient average equals the single-process gradient of the
same global batch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lorsp_neuro import checkpoint as ckpt
from lorsp_neuro.data import DatasetSplits, ImageSet, iterate_batches
from lorsp_neuro.devices import autocast, reproducible, resolve_device
from lorsp_neuro.errors import TrainingError
from lorsp_neuro.evaluation import evaluate_split
from lorsp_neuro.io import atomic_write_text, json_ready, remove_temp_files, write_json
from lorsp_neuro.model import (
    build_backbone,
    build_model,
    load_trainable_state,
    trainable_state,
    tunable_parameter_counts,
)
from lorsp_neuro.run_config import TrainConfig
from lorsp_neuro.runs import (
    BEST_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    load_splits,
    read_metrics,
)

#: Training images a prompter calibrates on at the end of every epoch (Prompter.calibrate).
CALIBRATION_IMAGES = 512


# --------------------------------------------------------------------------------------------
# Pure helpers


def cosine_lr_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    r"""Learning-rate multiplier at optimizer step ``step`` (0-based).

    .. math::
        s(t) = \begin{cases} (t + 1) / W & t < W \\
        \tfrac12\left(1 + \cos\left(\pi \frac{t - W}{\max(1, N - W)}\right)\right) & t \ge W
        \end{cases}

    with ``W`` warm-up steps and ``N`` total steps: linear warm-up, then cosine decay towards 0.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a permutation drawn from ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def global_batches(order: np.ndarray, batch_size: int, world_size: int) -> list[np.ndarray]:
    """Cut ``order`` into global batches; a last batch smaller than ``world_size`` is dropped
    (some rank would get no image)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) >= world_size]


def rank_share(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The images of a global batch that rank ``rank`` processes: every ``world_size``-th one."""
    return batch[rank::world_size]


# --------------------------------------------------------------------------------------------
# Devices and processes


@dataclass(frozen=True)
class Processes:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this process group was started by train() and is ended by it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _start_processes(config: TrainConfig) -> Processes:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes(0, 1, resolve_device(config.device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if config.batch_size < dist.get_world_size():
        raise TrainingError(
            f"batch_size {config.batch_size} is smaller than the {dist.get_world_size()} processes"
        )
    return Processes(dist.get_rank(), dist.get_world_size(), device, owns_group)


# --------------------------------------------------------------------------------------------
# Training


def _to_config(config: TrainConfig | dict[str, Any]) -> TrainConfig:
    return config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)


def prepare(config: TrainConfig) -> tuple[TrainConfig, DatasetSplits, Any]:
    """Load the splits and build the model of ``config``; return the config with the image size
    and every prompter option resolved (so ``config.json`` still describes the run if a default
    changes later)."""
    backbone = build_backbone(config)
    config = config.replace(image_size=config.image_size or backbone.input_size[0])
    splits = load_splits(config)
    for split in ("val", "test"):
        if len(getattr(splits, split)) == 0:
            raise TrainingError(
                f"dataset {config.dataset!r}: the {split} split is empty; set --{split}-size"
            )
    model = build_model(config, splits.num_classes, backbone)
    return config.replace(prompter_options=model.prompter.config_dict()), splits, model


def _check_finite(loss: torch.Tensor, epoch: int, step: int, x: torch.Tensor) -> None:
    if bool(torch.isfinite(loss)):
        return
    where = f"epoch {epoch}, optimizer step {step}"
    if not bool(torch.isfinite(x).all()):
        raise TrainingError(f"{where}: the input batch holds NaN or Inf pixels")
    raise TrainingError(
        f"{where}: the loss is {float(loss.detach())}; training diverged — lower --lr / --prompt-lr, "
        "or set max_grad_norm"
    )


def _check_parameters(model, epoch: int, step: int) -> None:
    """Stop on a NaN or Inf in a trainable tensor, naming it. A NaN can stay out of the loss (a
    NaN gate drive never crosses threshold: the gate is silent and the loss finite) while it
    spreads through the prompter, so the loss check alone does not catch it."""
    bad = [
        name
        for name, param in model.named_parameters()
        if param.requires_grad and not bool(torch.isfinite(param).all())
    ]
    if bad:
        raise TrainingError(
            f"epoch {epoch}, optimizer step {step}: NaN or Inf in the trainable tensor(s) "
            f"{', '.join(bad)}; training stopped (the checkpoints on disk are from before it)"
        )


def _make_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer | None:
    groups = model.param_groups(config.effective_prompt_lr, config.effective_head_lr)
    groups = [g for g in groups if g["params"]]
    if not groups:
        return None  # e.g. linear_probe + a label-mapping head: nothing to train
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _set_lr(optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[-1]["lr"]


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors[f"rng.cuda.{device.index}"] = torch.cuda.get_rng_state(device)
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    key = f"rng.cuda.{device.index}"
    if device.type == "cuda" and key in tensors:
        torch.cuda.set_rng_state(tensors[key], device)


EpochCallback = Callable[[int, dict[str, Any]], None]


def train(
    config: TrainConfig | dict[str, Any],
    *,
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train the model of ``config``; return (and write to ``out/summary.json``) the summary.

    ``resume=True`` continues the run in ``config.out`` from its newest complete checkpoint (the
    config must match the one stored there). ``on_epoch_end(epoch, metrics)`` is called on every
    rank after an epoch's checkpoint is written (an exception there stops training, which is how
    the tests interrupt a run).
    """
    config = _to_config(config)
    processes = _start_processes(config)
    try:
        with reproducible(config, processes.device):
            return _Run(config, processes, resume).run(on_epoch_end)
    finally:
        if processes.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _check_run_dir(config: TrainConfig, resume: bool) -> Path | None:
    """The run directory; a fresh run must not overwrite one, a resumed one must match it."""
    if config.out is None:
        if resume:
            raise TrainingError("--resume needs --out DIR: the run directory to continue")
        return None
    out = Path(config.out)
    stored = out / CONFIG_FILE
    if stored.is_file():
        if not resume:
            raise TrainingError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        try:
            previous = TrainConfig.from_dict(json.loads(stored.read_text()), str(stored))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise TrainingError(f"{stored}: unreadable run config: {exc}") from exc
        changed = config.differences(previous)
        if changed:
            raise TrainingError(
                f"{out}: --resume with a different config ({', '.join(changed)}); resume with the "
                "same settings or start a new --out"
            )
    return out


class _Run:
    """One training run on this process: the model, its data, optimizer and run directory."""

    def __init__(self, config: TrainConfig, processes: Processes, resume: bool):
        self.processes = processes
        self.device = processes.device
        self.config, self.splits, self.model = prepare(config)
        self.out = _check_run_dir(self.config, resume)
        if processes.distributed:
            dist.barrier()  # every rank has looked at the directory before rank 0 writes into it
        if self.out is not None and processes.is_main:
            (self.out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
            remove_temp_files(self.out)
            remove_temp_files(self.out / CHECKPOINT_DIR)
            write_json(self.out / CONFIG_FILE, self.config.to_dict())
        self.model.to(self.device)
        self.optimizer = _make_optimizer(self.model, self.config)
        self.use_amp = self.config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.batches_per_epoch = len(self._batches(epoch=0))
        if self.batches_per_epoch == 0:
            raise TrainingError(
                f"the training split has {len(self.splits.train)} images: too few for a batch"
            )
        self.total_steps = self.batches_per_epoch * self.config.epochs
        self.epoch, self.step = 0, 0
        self.best = {"epoch": 0, "val_accuracy": -math.inf}
        self.best_state: dict[str, torch.Tensor] | None = None
        if resume and self.out is not None:
            self._resume()
        if self.epoch == 0 and getattr(self.model.head, "remaps_each_epoch", None) is False:
            # FLM: the mapping of the untrained prompt, fitted once; ILM refits every epoch.
            self._update_label_mapping()
        trainable = any(p.requires_grad for p in self.model.parameters())
        self.net = self.model
        if processes.distributed and trainable:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        order = epoch_order(len(self.splits.train), self.config.seed, epoch)
        return global_batches(order, self.config.batch_size, self.processes.world_size)

    def _update_label_mapping(self) -> None:
        # Every rank maps the whole training split, so all ranks hold the same mapping.
        batches = (
            (x.to(self.device), y)
            for x, y in iterate_batches(self.splits.train, self.config.eval_batch_size)
        )
        self.model.update_label_mapping(batches)

    def _resume(self) -> None:
        found = ckpt.latest_complete_checkpoint(self.out / CHECKPOINT_DIR)
        if found is None:
            if self.processes.is_main and ckpt.epoch_checkpoints(self.out / CHECKPOINT_DIR):
                print(f"{self.out}: no complete checkpoint, starting afresh", file=sys.stderr)
            return
        path, tensors, info = found
        load_trainable_state(self.model, tensors, path)
        if self.optimizer is not None:
            state = ckpt.optimizer_state_from_tensors(tensors, info["optimizer"])
            self.optimizer.load_state_dict(state)
        if info.get("scaler"):
            self.scaler.load_state_dict(info["scaler"])
        _restore_rng(tensors, self.device)
        self.epoch, self.step, self.best = info["epoch"], info["step"], info["best"]
        self.best_state, _ = ckpt.load_checkpoint(self.out / BEST_FILE)
        if self.processes.is_main:
            kept = read_metrics(self.out / METRICS_FILE, self.epoch)
            lines = "".join(json.dumps(record) + "\n" for record in kept)
            atomic_write_text(self.out / METRICS_FILE, lines)
            print(
                f"resuming {self.out} after epoch {self.epoch} (step {self.step})", file=sys.stderr
            )

    def run(self, on_epoch_end: EpochCallback | None) -> dict[str, Any]:
        started = time.perf_counter()
        while self.epoch < self.config.epochs:
            self.epoch += 1
            record = self._train_epoch()
            if self.processes.is_main and self.out is not None:
                self._save(record)
            if self.processes.distributed:
                dist.barrier()  # the checkpoints are on disk before any rank goes on
            if self.processes.is_main and self.config.progress:
                print(
                    f"epoch {self.epoch}/{self.config.epochs}: train loss "
                    f"{record['train_loss']:.4f}, val accuracy {record['val_accuracy']:.4f}",
                    file=sys.stderr,
                )
            if on_epoch_end is not None:
                on_epoch_end(self.epoch, record)
        return self._finish(time.perf_counter() - started)

    def _train_epoch(self) -> dict[str, Any]:
        config, processes, device = self.config, self.processes, self.device
        started = time.perf_counter()
        if getattr(self.model.head, "remaps_each_epoch", False):
            self._update_label_mapping()
        totals = torch.zeros(3, dtype=torch.float64)  # summed loss, correct, images
        lr = 0.0
        self.model.train()
        batches = self._batches(self.epoch)
        for batch in _progress(batches, self.epoch, config, processes.is_main):
            share = rank_share(batch, processes.rank, processes.world_size)
            x, y = self.splits.train.batch(torch.from_numpy(share))
            x, y = x.to(device), y.to(device)
            if self.optimizer is not None:
                factor = cosine_lr_factor(self.step, self.total_steps, config.warmup_steps)
                lr = _set_lr(self.optimizer, factor)
            with autocast(device, self.use_amp):
                logits, output = self.net(x)
            ce_sum = F.cross_entropy(logits.float(), y, reduction="sum")
            # DDP averages gradients over ranks; scaling by world/|batch| makes that average the
            # gradient of the global batch's mean loss, as in one process.
            loss = ce_sum * (processes.world_size / len(batch))
            if "reg_loss" in output.stats:
                loss = loss + output.stats["reg_loss"].float()
            _check_finite(loss, self.epoch, self.step, x)
            if self.optimizer is not None:
                self._optimizer_step(loss)
                _check_parameters(self.model, self.epoch, self.step + 1)
            self.step += 1
            self.model.prompter.after_optimizer_step(self.step, self.total_steps)
            correct = (logits.argmax(1) == y).sum()
            totals += torch.tensor([float(ce_sum.detach()), float(correct), float(len(y))])
        if processes.distributed:
            reduced = totals.to(device)
            dist.all_reduce(reduced)
            totals = reduced.cpu()
        self._calibrate()
        val = self._evaluate(self.splits.val)
        if val["accuracy"] > self.best["val_accuracy"]:
            self.best = {"epoch": self.epoch, "val_accuracy": val["accuracy"]}
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in trainable_state(self.model).items()
            }
        return {
            "epoch": self.epoch,
            "step": self.step,
            "lr": lr,
            "train_loss": float(totals[0] / totals[2]),
            "train_accuracy": float(totals[1] / totals[2]),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_prompt_sparsity": val["prompt_sparsity"],
            "val_distinct_prompts": val["distinct_prompts"],
            "gate_firing_rate": val["gate_firing_rate"],
            "pixel_firing_rate": val["pixel_firing_rate"],
            "epoch_seconds": time.perf_counter() - started,
        }

    def _calibrate(self) -> None:
        """The prompter's end-of-epoch calibration on the first training images (same on every
        rank, so the calibrated state stays identical under DDP)."""
        images = self.splits.train
        count = min(len(images), CALIBRATION_IMAGES)
        batches = (
            images.batch(slice(start, min(start + self.config.eval_batch_size, count)))[0].to(
                self.device
            )
            for start in range(0, count, self.config.eval_batch_size)
        )
        self.model.prompter.calibrate(batches)

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _evaluate(self, images: ImageSet) -> dict[str, Any]:
        return evaluate_split(
            self.model,
            images,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            amp=self.use_amp,
            processes=self.processes,
        )

    def _save(self, record: dict[str, Any]) -> None:
        """Rank 0: the metrics line, the best checkpoint if this epoch is best, the epoch checkpoint.

        The line goes first: a kill after it but before the epoch's checkpoint resumes from the
        previous checkpoint, and the resume drops the lines of epochs it will train again
        (:func:`~lorsp_neuro.runs.read_metrics`); the other order lost the line of a checkpointed epoch.
        """
        with open(self.out / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(json_ready(record)) + "\n")
        state = trainable_state(self.model)
        num_classes = self.splits.num_classes
        if self.best["epoch"] == self.epoch:
            info = {"epoch": self.epoch, "num_classes": num_classes, "metrics": json_ready(record)}
            ckpt.save_checkpoint(self.out / BEST_FILE, self.best_state, info)
        tensors = {**state, **_rng_tensors(self.device)}
        info = {
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "num_classes": num_classes,
            "scaler": self.scaler.state_dict() if self.use_amp else None,
        }
        if self.optimizer is not None:
            opt_tensors, info["optimizer"] = ckpt.optimizer_state_to_tensors(
                self.optimizer.state_dict()
            )
            tensors.update(opt_tensors)
        checkpoints = self.out / CHECKPOINT_DIR
        ckpt.save_checkpoint(ckpt.epoch_checkpoint_path(checkpoints, self.epoch), tensors, info)
        ckpt.prune_checkpoints(checkpoints, self.config.keep_checkpoints)

    def _finish(self, seconds: float) -> dict[str, Any]:
        """Load the checkpoint best on validation, measure the test split, write the summary."""
        load_trainable_state(self.model, self.best_state, self.out or Path("best epoch"))
        val = self._evaluate(self.splits.val)
        test = self._evaluate(self.splits.test)
        config, splits = self.config, self.splits
        images_per_epoch = sum(len(b) for b in self._batches(epoch=0))
        summary = {
            "test_accuracy": test["accuracy"],
            "val_accuracy": val["accuracy"],
            "best_epoch": self.best["epoch"],
            **tunable_parameter_counts(self.model),
            "prompt_sparsity": test["prompt_sparsity"],
            "distinct_prompts": test["distinct_prompts"],
            "gate_firing_rate": test["gate_firing_rate"],
            "pixel_firing_rate": test["pixel_firing_rate"],
            "test_loss": test["loss"],
            "test_stat_means": test["stat_means"],
            "prompter": config.prompter,
            "backbone": config.backbone,
            "head": config.head,
            "dataset": config.dataset,
            "budget": {
                "steps": self.step,
                "epochs": config.epochs,
                "batch_size": config.batch_size,
                "train_images_seen": images_per_epoch * config.epochs,
                "image_size": config.image_size,
                "train_size": len(splits.train),
                "val_size": len(splits.val),
                "test_size": len(splits.test),
                "world_size": self.processes.world_size,
            },
            "train_seconds": seconds,
        }
        summary = json_ready(summary)
        if self.processes.is_main and self.out is not None:
            write_json(self.out / SUMMARY_FILE, summary)
        return summary


def _progress(batches: list[np.ndarray], epoch: int, config: TrainConfig, is_main: bool):
    if not (config.progress and is_main):
        return batches
    from tqdm.auto import tqdm

    # disable=None: no bar unless stderr is a terminal (a log file would collect every frame);
    # the line printed after each epoch still reports progress there.
    return tqdm(
        batches, desc=f"epoch {epoch}/{config.epochs}", leave=False, file=sys.stderr, disable=None
    )

"""Evaluation metrics of a prompted model: accuracy, prompt sparsity, distinct prompts, firing rates.

The pure functions compute one batch's contribution; :class:`SplitMetrics` accumulates them over a
split (and, under ``torch.distributed``, over all ranks) and reports the totals.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.distributed as dist

#: ``PromptOutput.stats`` keys reported as firing rates of a spiking prompter.
FIRING_RATE_KEYS = {"gate_firing_rate": "gate_rate", "pixel_firing_rate": "pixel_rate"}


def zero_prompt_pixels(prompt: torch.Tensor) -> int:
    """Number of prompt entries exactly zero: ``#{(b, c, h, w) : prompt[b, c, h, w] = 0}``."""
    return int((prompt == 0).sum())


def prompt_fingerprints(prompt: torch.Tensor) -> list[int]:
    """One 63-bit fingerprint per prompt in the batch: BLAKE2b-64 of its float32 bytes.

    Two prompts get the same fingerprint exactly when they are bit-identical (up to a hash
    collision, probability ~n²/2⁶⁴); ``+ 0.0`` maps ``-0.0`` to ``+0.0`` so that a zero is a zero.
    """
    flat = (prompt.detach().float() + 0.0).flatten(1).cpu().numpy()
    return [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") >> 1
        for row in flat
    ]


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of samples whose arg-max logit is the label."""
    return int((logits.argmax(dim=1) == labels).sum())


class SplitMetrics:
    """Running totals over one split; :meth:`result` gives the metrics of the whole split.

    - ``accuracy`` = correct / n; ``loss`` = mean cross-entropy;
    - ``prompt_sparsity`` = zero prompt entries / all prompt entries (``None`` with no prompt);
    - ``distinct_prompts`` = number of different prompts (0 with no prompt);
    - each ``stats`` scalar averaged over samples (``stat_means``); firing rates are reported only
      for a spiking prompter (``spiking=True``), else ``None``.
    """

    def __init__(self, spiking: bool):
        self.spiking = spiking
        self.count = 0
        self.correct = 0
        self.loss_sum = 0.0
        self.zero_pixels = 0
        self.prompt_pixels = 0
        self.fingerprints: list[int] = []
        self.stat_sums: dict[str, float] = {}

    def update(self, logits, labels, prompt, stats, loss_sum: float) -> None:
        n = int(labels.shape[0])
        self.count += n
        self.correct += correct_predictions(logits, labels)
        self.loss_sum += float(loss_sum)
        if prompt is not None:
            self.zero_pixels += zero_prompt_pixels(prompt)
            self.prompt_pixels += prompt.numel()
            self.fingerprints.extend(prompt_fingerprints(prompt))
        for key, value in stats.items():
            if key == "reg_loss":
                continue
            self.stat_sums[key] = (
                self.stat_sums.get(key, 0.0) + float(value.detach().float().mean()) * n
            )

    def all_reduce(self, device: torch.device) -> None:
        """Combine the totals of every rank (a no-op outside ``torch.distributed``).

        ``device`` is where the communication tensors live (CUDA for NCCL, CPU for gloo).
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        keys = sorted(self.stat_sums)
        totals = torch.tensor(
            [self.count, self.correct, self.loss_sum, self.zero_pixels, self.prompt_pixels]
            + [self.stat_sums[k] for k in keys],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(totals)
        totals = totals.cpu()
        self.count, self.correct = int(totals[0]), int(totals[1])
        self.loss_sum = float(totals[2])
        self.zero_pixels, self.prompt_pixels = int(totals[3]), int(totals[4])
        self.stat_sums = {k: float(v) for k, v in zip(keys, totals[5:].tolist(), strict=True)}
        self.fingerprints = _all_gather_ints(self.fingerprints, device)

    def result(self) -> dict[str, object]:
        has_prompt = self.prompt_pixels > 0
        stat_means = (
            {k: v / self.count for k, v in sorted(self.stat_sums.items())} if self.count else {}
        )
        out: dict[str, object] = {
            "n": self.count,
            "accuracy": self.correct / self.count if self.count else math.nan,
            "loss": self.loss_sum / self.count if self.count else math.nan,
            "prompt_sparsity": self.zero_pixels / self.prompt_pixels if has_prompt else None,
            "distinct_prompts": len(set(self.fingerprints)),
        }
        for name, key in FIRING_RATE_KEYS.items():
            out[name] = stat_means.get(key) if self.spiking else None
        out["stat_means"] = stat_means
        return out


def _all_gather_ints(values: list[int], device: torch.device) -> list[int]:
    """Concatenate every rank's list of ints (lists may differ in length, so pad to the longest)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(values)], dtype=torch.int64, device=device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.int64, device=device)
    padded[: len(values)] = torch.tensor(values, dtype=torch.int64, device=device)
    gathered = [torch.zeros(longest, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return np.concatenate(
        [g[: int(s)].cpu().numpy() for g, s in zip(gathered, sizes, strict=True)]
    ).tolist()

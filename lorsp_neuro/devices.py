"""Where a run computes: device names resolved and checked, reproducible settings, autocast."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from lorsp_neuro.errors import TrainingError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is present, else ``cpu``; other names checked."""
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainingError(
            f"--device {name}: not a device name (cpu, cuda, cuda:N, auto)"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        if device.index >= torch.cuda.device_count():
            raise TrainingError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise TrainingError(f"--device {name}: only cpu and cuda devices are supported")
    return device


@contextlib.contextmanager
def reproducible(config, device: torch.device) -> Iterator[None]:
    """Seed, request deterministic kernels (and restore the caller's settings afterwards)."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
    )
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace (read when it is initialised).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a kernel without a deterministic version warns instead of stopping training.
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.set_num_threads(previous[2])


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()

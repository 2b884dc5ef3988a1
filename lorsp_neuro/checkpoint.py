"""Checkpoints: one safetensors file per save, written atomically, loaded without unpickling.

A checkpoint file holds only tensors (the trainable state, the optimizer's tensors, RNG states)
plus string metadata: a format tag, a JSON ``info`` block (epoch, step, the optimizer's
hyper-parameters …) and a SHA-256 digest of every tensor. A file is written to a temporary name in
the same directory, flushed to disk and renamed over the target (``os.replace`` is atomic on POSIX),
so a reader sees either the previous complete file or the new complete file. A file that is
truncated or altered anyway (a copy cut short, a full disk) fails the safetensors length check or
the digest and is reported as a :class:`CheckpointError`, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from lorsp_neuro.errors import CheckpointError
from lorsp_neuro.io import atomic_write_bytes

FORMAT = "lorsp-checkpoint/1"
EPOCH_FILE = re.compile(r"^epoch-(\d{4,})\.safetensors$")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write ``tensors`` and the JSON-ready ``info`` to ``path`` atomically."""
    # safetensors refuses tensors that share storage (tied weights); private copies avoid that.
    own = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    metadata = {"format": FORMAT, "info": json.dumps(info), "digest": tensor_digest(own)}
    atomic_write_bytes(Path(path), safetensors_save(own, metadata=metadata))


def _header_metadata(data: bytes, path: Path) -> dict[str, str]:
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated checkpoint ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise CheckpointError(f"{path}: truncated checkpoint (header cut short)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint header: {exc}") from exc
    return header.get("__metadata__") or {}


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: ``(tensors, info)``; any defect raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    metadata = _header_metadata(data, path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a LoRSP checkpoint (format {metadata.get('format')!r})")
    try:
        tensors = safetensors_load(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: incomplete or corrupt checkpoint: {exc}") from exc
    if tensor_digest(tensors) != metadata.get("digest"):
        raise CheckpointError(f"{path}: checkpoint contents do not match their digest")
    # Training stops on a non-finite loss, so NaN/Inf here means a tampered or broken file; a NaN
    # prompt factor would otherwise only silence its neurons and go unnoticed.
    poisoned = [
        n for n, t in sorted(tensors.items()) if t.is_floating_point() and not t.isfinite().all()
    ]
    if poisoned:
        raise CheckpointError(f"{path}: holds NaN or Inf in {', '.join(poisoned)}")
    return tensors, json.loads(metadata["info"])


def epoch_checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:04d}.safetensors"


def epoch_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the per-epoch checkpoint files in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = []
    for path in Path(directory).iterdir():
        match = EPOCH_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_complete_checkpoint(
    directory: Path,
) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest per-epoch checkpoint that loads and verifies; damaged newer ones are skipped."""
    for _, path in reversed(epoch_checkpoints(directory)):
        try:
            tensors, info = load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping damaged checkpoint: {exc}", stacklevel=2)
            continue
        return path, tensors, info
    return None


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Keep only the ``keep`` newest per-epoch checkpoints."""
    for _, path in epoch_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Optimizer state as tensors + JSON (torch's own state_dict would need pickle).


def optimizer_state_to_tensors(
    state_dict: dict[str, Any], prefix: str = "optimizer."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-ready remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_tensors(
    tensors: dict[str, torch.Tensor], info: dict[str, Any], prefix: str = "optimizer."
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith(prefix):
            param_id, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in info["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}
        for group in info["param_groups"]
    ]
    return {"state": state, "param_groups": groups}

"""Inputs shared by the prompter tests (imported by path from the test modules)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = 16
# The files only: importing foolbox would pull in eagerpy and scipy.
FOOLBOX_DATA = Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"


def images(batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, size, size)


def foolbox_imagenet(name: str, size: int) -> torch.Tensor:
    image = Image.open(FOOLBOX_DATA / name).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def loss(output, target: torch.Tensor) -> torch.Tensor:
    """Distance of the prompted image to ``target``, plus the prompter's regulariser."""
    value = (output.prompted - target).square().mean()
    return value + output.stats.get("reg_loss", 0.0)

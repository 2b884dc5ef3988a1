"""Shared fixtures. Tests are imported by path (importlib mode): lava-nc ships a `tests` package."""

from __future__ import annotations

import os

# On shared CPUs OpenMP's spinning threads cost ~10x CPU time per step; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

# Reproducible and polite on a 2-core CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

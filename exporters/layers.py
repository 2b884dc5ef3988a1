"""Torch layers for NIR nodes that ``torch.nn`` lacks: ``Scale``, ``SumPool2d``, ``Threshold``.

The importer builds them from NIR nodes and the exporter maps them back, so a graph survives
import → export unchanged. Shapes exclude the batch dimension, as in NIR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Scale(nn.Module):
    """Element-wise gain, NIR ``Scale``: :math:`y = x \\odot s`.

    ``scale`` broadcasts against one sample (no batch dimension), e.g. ``(C, 1, 1)`` for a gain per
    channel; the exporter writes it at the full shape of its input.
    """

    def __init__(self, scale: torch.Tensor, trainable: bool = False):
        super().__init__()
        scale = torch.as_tensor(scale)
        if trainable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class SumPool2d(nn.Module):
    """Sum over each pooling window, NIR ``SumPool2d``, zero padding.

    Computed by ``avg_pool2d`` with divisor 1, which adds the window's values without dividing.
    """

    def __init__(self, kernel_size, stride, padding):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, divisor_override=1)


class Threshold(nn.Module):
    """Heaviside step, NIR ``Threshold``: :math:`z = [x > \\theta]`, in the input's dtype."""

    def __init__(self, threshold: torch.Tensor):
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)

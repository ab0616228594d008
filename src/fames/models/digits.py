"""A tiny CNN for scikit-learn's 8x8 handwritten digits (trains to >95% in seconds on a CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fames.models.layers import input_spec
from fames.models.registry import register_model

__all__ = ["DigitsCNN"]


class DigitsCNN(nn.Module):
    """``(N, 1, 8, 8)`` in [0, 1] -> logits ``(N, num_classes)``.

    conv3x3 1->c1 -> BN -> ReLU -> conv3x3 c1->c2 -> BN -> ReLU -> maxpool 2 -> linear (c2*4*4 -> classes).
    No input normalization: the first layer sees the [0, 1] pixels (multiples of 1/16) directly.
    """

    def __init__(self, num_classes: int = 10, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.linear = nn.Linear(c2 * 16, num_classes)
        self.input_spec = input_spec((1, 8, 8), "digits", "none (pixels 0..16 scaled to [0, 1] by the dataset)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.linear(x.flatten(1))


@register_model("digits_cnn")
def digits_cnn(num_classes: int = 10, c1: int = 16, c2: int = 32) -> DigitsCNN:
    """Small CNN for 8x8 single-channel digits (conv 1->16, conv 16->32, pool, linear)."""
    return DigitsCNN(num_classes, c1, c2)

"""SqueezeNet (Iandola et al. 2016) adapted to 32x32 inputs, with BN after every conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fames.models.layers import CIFAR10_MEAN, CIFAR10_STD, Normalize, input_spec
from fames.models.registry import register_model

__all__ = ["Fire", "SqueezeNet"]


class Fire(nn.Module):
    """squeeze 1x1 -> BN -> ReLU, then concat(expand 1x1 -> BN, expand 3x3 -> BN) -> ReLU."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1, bias=False)
        self.squeeze_bn = nn.BatchNorm2d(squeeze)
        self.expand1 = nn.Conv2d(squeeze, expand, 1, bias=False)
        self.expand1_bn = nn.BatchNorm2d(expand)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1, bias=False)
        self.expand3_bn = nn.BatchNorm2d(expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze_bn(self.squeeze(x)))
        return F.relu(torch.cat([self.expand1_bn(self.expand1(s)), self.expand3_bn(self.expand3(s))], 1))


class SqueezeNet(nn.Module):
    """``(N, 3, 32, 32)`` in [0, 1] -> logits. Stem 3x3/64, eight Fire modules (1.1 widths), 1x1 conv head.

    Fire modules 3, 5, 7, 9 add a residual (simple bypass); spatial size 32 -> 16 -> 8 -> 4.
    """

    # (in, squeeze, expand) per Fire module; output channels = 2 * expand
    FIRES = [(64, 16, 64), (128, 16, 64), (128, 32, 128), (256, 32, 128),
             (256, 48, 192), (384, 48, 192), (384, 64, 256), (512, 64, 256)]

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.fires = nn.ModuleList(Fire(*f) for f in self.FIRES)
        self.pool_after = {1: True, 3: True}  # max-pool after fire index 1 and 3 (0-based), and after the stem
        self.conv_head = nn.Conv2d(512, num_classes, 1)
        self.input_spec = input_spec((3, 32, 32), "cifar10", "CIFAR-10 mean/std normalization inside the model",
                                     CIFAR10_MEAN, CIFAR10_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(self.normalize(x)))), 2)
        for i, fire in enumerate(self.fires):
            y = fire(x)
            x = x + y if self.FIRES[i][0] == 2 * self.FIRES[i][2] else y  # a bypass where widths match
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
        x = F.dropout(x, 0.5, self.training)
        return F.adaptive_avg_pool2d(self.conv_head(x), 1).flatten(1)


@register_model("squeezenet")
def squeezenet(num_classes: int = 10) -> SqueezeNet:
    """SqueezeNet 1.1-style for CIFAR (BN after every conv, simple bypasses)."""
    return SqueezeNet(num_classes)

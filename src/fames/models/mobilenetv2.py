"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs: the stem and the first stride-2 stage run at stride 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fames.models.layers import CIFAR10_MEAN, CIFAR10_STD, Normalize, input_spec
from fames.models.registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2"]


class InvertedResidual(nn.Module):
    """expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 (groups=C) -> BN -> ReLU6 -> project 1x1 -> BN (+ x)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expansion = expansion
        if expansion != 1:
            self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand_bn(self.expand(x))) if self.expansion != 1 else x
        y = F.relu6(self.dw_bn(self.dw(y)))
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """``(N, 3, 32, 32)`` in [0, 1] -> logits; 17 inverted-residual blocks, 1280-wide head."""

    # (expansion t, output channels c, repeats n, first stride s); CIFAR: stride 1 in the stem and stage 2
    CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(8, int(round(c * width_mult / 8)) * 8)

        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        cin = w(32)
        self.conv1 = nn.Conv2d(3, cin, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        blocks = []
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                blocks.append(InvertedResidual(cin, w(c), s if i == 0 else 1, t))
                cin = w(c)
        self.blocks = nn.Sequential(*blocks)
        head = max(1280, w(1280))
        self.conv2 = nn.Conv2d(cin, head, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.linear = nn.Linear(head, num_classes)
        self.input_spec = input_spec((3, 32, 32), "cifar10", "CIFAR-10 mean/std normalization inside the model",
                                     CIFAR10_MEAN, CIFAR10_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv1(self.normalize(x))))
        x = self.blocks(x)
        x = F.relu6(self.bn2(self.conv2(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(F.dropout(x, 0.2, self.training))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 for CIFAR (depthwise 3x3 convs, ReLU6, stride-1 stem)."""
    return MobileNetV2(num_classes, width_mult)

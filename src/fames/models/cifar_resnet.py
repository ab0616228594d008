"""CIFAR ResNets of He et al. (2016) with "option A" shortcuts: ResNet-14/20/32/44/56.

Layer names follow the akamaster/pytorch_resnet_cifar10 checkpoints (conv1, bn1,
layer{1,2,3}.{i}.conv1/bn1/conv2/bn2, linear) so their weights load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fames.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize, PadChannelShortcut, input_spec
from fames.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet"]


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadChannelShortcut((planes - in_planes) // 2, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: ``(N, 3, 32, 32)`` in [0, 1] -> logits ``(N, num_classes)``."""

    def __init__(self, n: int, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers = []
        in_planes = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, w, stride))
                in_planes = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(widths[2], num_classes)
        self.depth = 6 * n + 2
        self.input_spec = input_spec((3, 32, 32), "cifar10", "ImageNet mean/std normalization inside the model",
                                     IMAGENET_MEAN, IMAGENET_STD)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


@register_model("resnet14")
def resnet14(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-14 (n=2, 16/32/64 filters, option-A shortcuts)."""
    return CifarResNet(2, num_classes)


@register_model("resnet20", default_weights="akamaster/resnet20-12fca82f.th")
def resnet20(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20 (n=3); reference weights: akamaster."""
    return CifarResNet(3, num_classes)


@register_model("resnet32", default_weights="akamaster/resnet32-d509ac18.th")
def resnet32(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-32 (n=5); reference weights: akamaster."""
    return CifarResNet(5, num_classes)


@register_model("resnet44", default_weights="akamaster/resnet44-014dd654.th")
def resnet44(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-44 (n=7); reference weights: akamaster."""
    return CifarResNet(7, num_classes)


@register_model("resnet56", default_weights="akamaster/resnet56-4bfd9763.th")
def resnet56(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-56 (n=9); reference weights: akamaster."""
    return CifarResNet(9, num_classes)

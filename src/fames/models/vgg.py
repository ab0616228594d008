"""VGG with batch norm for 32x32 inputs (the common CIFAR variant: five pooling stages, one linear head)."""

from __future__ import annotations

import torch
from torch import nn

from fames.models.layers import CIFAR10_MEAN, CIFAR10_STD, Normalize, input_spec
from fames.models.registry import register_model

__all__ = ["VGG", "VGG_CONFIGS"]

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``(N, 3, 32, 32)`` in [0, 1] -> logits; conv3x3 -> BN -> ReLU blocks, max-pool at each "M"."""

    def __init__(self, config: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        layers: list[nn.Module] = []
        cin = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)
        self.input_spec = input_spec((3, 32, 32), "cifar10", "CIFAR-10 mean/std normalization inside the model",
                                     CIFAR10_MEAN, CIFAR10_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_model("vgg19_bn")
def vgg19_bn(num_classes: int = 10) -> VGG:
    """VGG-19 with BN for CIFAR (16 conv layers + 1 linear)."""
    return VGG(VGG_CONFIGS["vgg19"], num_classes)


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 10) -> VGG:
    """VGG-16 with BN for CIFAR (13 conv layers + 1 linear)."""
    return VGG(VGG_CONFIGS["vgg16"], num_classes)


@register_model("vgg11_bn")
def vgg11_bn(num_classes: int = 10) -> VGG:
    """VGG-11 with BN for CIFAR (8 conv layers + 1 linear)."""
    return VGG(VGG_CONFIGS["vgg11"], num_classes)

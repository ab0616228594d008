"""Small parameter-free modules shared by the model zoo (input scaling, TF padding, option-A shortcut)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """Fixed per-channel ``(x - mean) / std`` on ``(N, C, H, W)``; not learned, not in the state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, " \
               f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"


class InputScale(nn.Module):
    """Fixed ``x * scale`` (e.g. 255 for models trained on raw 0-255 pixels)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class TFSamePad2d(nn.Module):
    """TensorFlow ``padding='same'`` for a following ``Conv2d(padding=0)``.

    ``out = ceil(in / stride)``; the total padding ``max((out-1)*stride + k - in, 0)`` is split with the
    smaller half before (top/left) and the rest after (bottom/right). For 3x3 stride 2 on even sizes this is
    ``(0, 1, 0, 1)``. Computed from the input size at run time, so any size works.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride = (stride, stride) if isinstance(stride, int) else tuple(stride)

    @staticmethod
    def _pad(size: int, k: int, s: int) -> tuple[int, int]:
        out = math.ceil(size / s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = self._pad(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class PadChannelShortcut(nn.Module):
    """ResNet "option A" shortcut: ``x[:, :, ::2, ::2]`` zero-padded by ``pad`` channels on each side."""

    def __init__(self, pad: int, stride: int = 2) -> None:
        super().__init__()
        self.pad = pad
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}, stride={self.stride}"


def input_spec(
    shape: tuple[int, int, int],
    dataset: str,
    preprocess: str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict:
    """The ``model.input_spec`` record: every model takes ``(N, C, H, W)`` float images in [0, 1]."""
    spec: dict = {"range": (0.0, 1.0), "shape": tuple(shape), "layout": "NCHW", "dataset": dataset,
                  "preprocess": preprocess}
    if mean is not None:
        spec["mean"], spec["std"] = tuple(mean), tuple(std or ())
    return spec

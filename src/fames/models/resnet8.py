"""MLPerf Tiny image-classification ResNet-8 (16/32/64 filters) with TensorFlow 'same' padding.

Every conv has a bias, BN uses eps=1e-3 (Keras), the two projection shortcuts (1x1, stride 2) have no BN,
and stride-2 3x3 convs pad bottom/right only (a ``TFSamePad2d`` in front of a ``Conv2d(padding=0)``).
The Keras model was trained on raw 0-255 pixels, so an ``InputScale(255)`` makes it take [0, 1] images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fames.models.layers import InputScale, TFSamePad2d, input_spec
from fames.models.registry import CheckpointError, register_model

__all__ = ["ResNet8", "keras_npz_to_state_dict"]

_BN_EPS = 1e-3


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=0.01)  # Keras momentum 0.99 == PyTorch 0.01


class Stack(nn.Module):
    """Residual stack: [pad] conv3x3(s) -> BN -> ReLU -> conv3x3 -> BN, + shortcut (identity or 1x1/s conv)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.pad: nn.Module = TFSamePad2d(3, stride) if stride != 1 else nn.Identity()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0 if stride != 1 else 1, bias=True)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=True)
        self.bn2 = _bn(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(self.pad(x))))
        y = self.bn2(self.conv2(y))
        return F.relu(self.shortcut(x) + y)


class ResNet8(nn.Module):
    """``(N, 3, 32, 32)`` in [0, 1] -> logits ``(N, num_classes)`` (the Keras model's softmax is dropped)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.scale = InputScale(255.0)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=True)
        self.bn1 = _bn(widths[0])
        self.stack1 = Stack(widths[0], widths[0], 1)
        self.stack2 = Stack(widths[0], widths[1], 2)
        self.stack3 = Stack(widths[1], widths[2], 2)
        self.linear = nn.Linear(widths[2], num_classes)
        self.input_spec = input_spec((3, 32, 32), "cifar10", "x*255 inside the model (trained on raw 0-255 RGB)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


# our parameter prefix -> Keras layer name
_CONV_MAP = {
    "conv1": "conv2d",
    "stack1.conv1": "conv2d_1", "stack1.conv2": "conv2d_2",
    "stack2.conv1": "conv2d_3", "stack2.conv2": "conv2d_4", "stack2.shortcut": "conv2d_5",
    "stack3.conv1": "conv2d_6", "stack3.conv2": "conv2d_7", "stack3.shortcut": "conv2d_8",
}
_BN_MAP = {
    "bn1": "batch_normalization",
    "stack1.bn1": "batch_normalization_1", "stack1.bn2": "batch_normalization_2",
    "stack2.bn1": "batch_normalization_3", "stack2.bn2": "batch_normalization_4",
    "stack3.bn1": "batch_normalization_5", "stack3.bn2": "batch_normalization_6",
}


def keras_npz_to_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Convert the MLPerf Tiny ``weights.npz`` (Keras layouts: conv HWIO, dense (in, out)) to our state dict."""
    try:
        arrays = dict(np.load(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read Keras weight arrays from {path}: {e}") from e

    def get(key: str) -> torch.Tensor:
        if key not in arrays:
            raise CheckpointError(f"{path} has no array {key!r}: not the MLPerf Tiny ResNet-8 weights "
                                  f"(arrays: {', '.join(sorted(arrays)[:6])}, ...); wrong --model?")
        return torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32))

    sd: dict[str, torch.Tensor] = {}
    for ours, k in _CONV_MAP.items():
        sd[f"{ours}.weight"] = get(f"{k}.kernel").permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        sd[f"{ours}.bias"] = get(f"{k}.bias")
    for ours, k in _BN_MAP.items():
        sd[f"{ours}.weight"] = get(f"{k}.gamma")
        sd[f"{ours}.bias"] = get(f"{k}.beta")
        sd[f"{ours}.running_mean"] = get(f"{k}.moving_mean")
        sd[f"{ours}.running_var"] = get(f"{k}.moving_variance")
        sd[f"{ours}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    sd["linear.weight"] = get("dense.kernel").t().contiguous()
    sd["linear.bias"] = get("dense.bias")
    return sd


@register_model(
    "resnet8",
    default_weights="resnet8_mlperf_tiny/weights.npz",
    converters={".npz": keras_npz_to_state_dict},
)
def resnet8(num_classes: int = 10) -> ResNet8:
    """MLPerf Tiny ResNet-8 (16/32/64, TF 'same' padding); reference weights: Keras arrays in .npz."""
    return ResNet8(num_classes)

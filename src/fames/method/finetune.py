"""Approximation-aware fine-tuning: retrain the weights of an approximated model with its AppMuls in the loop.

FAMES' calibration (:mod:`fames.method.calibrate`) moves only activation ranges and weight clipping, on 1,024
images. Fine-tuning trains every weight (and the quantizers' step sizes) on many more training images, the forward
through the emulated AppMuls and the backward straight-through (the gradient of the exact product, as the emulation
kernels define it), with knowledge distillation from the exact quantized model's logits. This is the
approximation-aware retraining of TFApprox/AdaPT/TorchApprox-style flows, run after the calibration and judged by
the same held-out guard (``fames.baselines.retrain`` is the same training used *instead of* calibration, FAMES'
Table IV comparison). Measured on ResNet-20 W4A4 (docs/results/table3.md): validation accuracy of one R = 0.62
assignment 80.86% before calibration, 84.20% calibrated, 85.14% fine-tuned on 20,000 images (one epoch, lr 0.002, 87
s on 2 cores).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fames.errors import ConfigError, FamesError, check_fields
from fames.train import TrainConfig, train


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune`: ``samples`` training images (drawn from the run's training part, never its
    validation split), ``epochs`` over them (fractions allowed), SGD with Nesterov momentum at ``lr`` on a cosine
    schedule, ``kd_alpha`` the weight of distillation from the exact model's logits (temperature ``kd_temperature``),
    ``hflip`` random horizontal flips (natural images only: never for digits or text)."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # how `fames run` validates a YAML finetune block

    samples: int = 20000
    epochs: float = 1.0
    lr: float = 0.002
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    batch_size: int = 128
    hflip: bool = False
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        check_fields(self)
        if self.samples < 1 or self.batch_size < 1:
            raise ConfigError(f"finetune samples={self.samples} and batch_size={self.batch_size} must be >= 1")
        if not self.epochs > 0 or not self.lr > 0:
            raise ConfigError(f"finetune epochs={self.epochs} and lr={self.lr} must be > 0 (no fine-tuning: leave "
                              "`finetune` out of the config)")
        if not 0.0 <= self.kd_alpha <= 1.0 or not self.kd_temperature > 0:
            raise ConfigError(f"finetune kd_alpha={self.kd_alpha} must be in [0, 1] and kd_temperature > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"finetune weight_decay={self.weight_decay} must be >= 0")


class ShuffledBatches:
    """Batches ``(x (B, C, H, W) channels_last, y (B,))`` of tensors in a fresh seeded order per pass, each image
    flipped left-right with probability 1/2 when ``hflip``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, hflip: bool, seed: int) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise FamesError(f"fine-tuning needs as many labels as images (got {len(x)} images, {len(y)} labels)")
        self.x, self.y, self.batch_size, self.hflip = x, y, batch_size, hflip
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), generator=self.gen)
        for i in range(0, len(order), self.batch_size):
            j = order[i : i + self.batch_size]
            xb = self.x[j]
            if self.hflip:
                flip = torch.rand(len(j), generator=self.gen) < 0.5
                xb[flip] = xb[flip].flip(-1)
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[j]


def finetune(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], cfg: FinetuneConfig,
             teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> float:
    """Train ``model`` in place on ``data`` = ``(x (N, C, H, W), y (N,))`` with its AppMuls in the loop, distilling
    from ``teacher`` (the exact model; required when ``cfg.kd_alpha > 0``). Returns the seconds it took."""
    if cfg.kd_alpha > 0 and teacher is None:
        raise FamesError("fine-tuning with kd_alpha > 0 needs the exact model as teacher (or set kd_alpha: 0)")
    t0 = time.perf_counter()
    x, y = data
    train(model, ShuffledBatches(x, y, cfg.batch_size, cfg.hflip, seed),
          TrainConfig(epochs=cfg.epochs, lr=cfg.lr, kd_alpha=cfg.kd_alpha, kd_temperature=cfg.kd_temperature,
                      weight_decay=cfg.weight_decay, seed=seed),
          teacher=teacher, progress=progress)
    return time.perf_counter() - t0

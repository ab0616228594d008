"""Retraining baseline (FAMES Table IV): straight-through fine-tuning of the approximate model, to compare
with calibration.

The model keeps its AppMuls in the loop: the forward pass is the bit-exact emulation, the backward pass goes
straight through the exact path (the quantized layers' own rule), and every weight, bias and quantizer step
size is trained with :func:`fames.train.train` (SGD, cosine learning rate, optional distillation from the
exact model). Default: 5 epochs, as the paper's comparison.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from fames.errors import FamesError
from fames.quant.convert import qlayers
from fames.train import TrainConfig, train


@dataclass
class RetrainReport:
    """What :func:`retrain` did: ``epochs`` over ``steps`` batches in ``seconds`` of wall time."""

    epochs: float
    steps: int
    seconds: float


def retrain(
    model: nn.Module,
    loader: Iterable,
    cfg: TrainConfig | None = None,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> RetrainReport:
    """Fine-tune ``model`` in place, AppMuls in the loop (default ``TrainConfig(epochs=5, lr=0.002)``).

    ``loader`` yields ``(x (B, C, H, W), y (B,))`` training batches (a loader, a list, or a generator, read once);
    ``teacher`` (e.g. the exact model) adds
    distillation when ``cfg.kd_alpha > 0``.
    """
    cfg = cfg or TrainConfig(epochs=5.0, lr=0.002)
    if cfg.epochs <= 0:
        raise FamesError(f"retraining needs epochs > 0, got {cfg.epochs}")
    if not any(m.mode == "approx" for _, m in qlayers(model)):
        raise FamesError("the model has no layer in approx mode: assign AppMuls before retraining")
    if not hasattr(loader, "__len__"):  # a generator: read once, passed over every epoch
        loader = list(loader)
    steps = max(1, int(round(cfg.epochs * len(loader))))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    train(model, loader, cfg, teacher=teacher, progress=progress)
    return RetrainReport(cfg.epochs, steps, time.perf_counter() - t0)

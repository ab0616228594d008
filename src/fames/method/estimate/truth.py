"""The quantity estimators predict, measured: the loss change when only one layer uses a candidate AppMul; and
:class:`MeasuredEstimator`, which hands that measurement to the selection as its Omega."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.method.estimate.base import Estimate, check_candidates, layer_states, recorded_pass, replaying
from fames.quant.convert import qlayers


def true_loss_changes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: dict[str, list[AppMul]], progress: bool = True,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Measured loss change (mean CE, nats) when ONLY layer k uses AppMul A (all others exact): ``(1, K)`` per layer
    (see :func:`loss_change_stats`)."""
    return loss_change_stats(model, x, y, candidates, progress, chunk)[0]


def loss_change_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: dict[str, list[AppMul]], progress: bool = True,
    chunk: int = 512,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(mean, standard error)`` of the per-image loss change (CE, nats) when ONLY layer k uses AppMul A (all others
    exact), each ``(1, K)`` per layer; the standard error is that of the mean over the ``S`` images of ``x (S, ...)``
    (:func:`per_image_loss_changes`)."""
    d = per_image_loss_changes(model, x, y, candidates, progress, chunk)
    S = x.shape[0]
    mean = {n: v.mean(1)[None] for n, v in d.items()}
    return mean, {n: (v.std(1, ddof=1) if S > 1 else np.zeros(len(v)))[None] / np.sqrt(S) for n, v in d.items()}


@torch.no_grad()
def per_image_loss_changes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: dict[str, list[AppMul]], progress: bool = True,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Loss change (CE, nats) of every image when ONLY layer k uses AppMul A (all others exact): ``(K, S)`` float64
    per layer, for the ``S`` images of ``x (S, ...)`` (paired across candidates: the same images for all).

    ``x`` runs in chunks of ``chunk`` images; the layers before k replay their outputs recorded in an exact pass (same
    numbers, no compute), unless the model calls some quantized layer more than once."""
    S = x.shape[0]
    out = {n: np.zeros((len(ms), S)) for n, ms in candidates.items()}
    with layer_states(model) as ql:
        for _, m in ql:
            m.emulation_dtype, m.gather_only = torch.float32, True
        layers = dict(ql)
        bar = tqdm(total=sum(len(v) for v in candidates.values()) * ((S + chunk - 1) // chunk),
                   desc="true loss change", disable=not progress)
        for s0 in range(0, S, chunk):
            xb, yb = x[s0 : s0 + chunk], y[s0 : s0 + chunk]
            z, outs, calls = recorded_pass(model, ql, xb)
            base = F.cross_entropy(z, yb, reduction="none").double()
            shared = len(calls) != len(set(calls))
            for n, ms in candidates.items():
                before = [] if shared else calls[: calls.index(n)]
                with replaying(layers, {b: outs[b] for b in before}):
                    for j, m in enumerate(ms):
                        layers[n].set_assignment(m)
                        d = F.cross_entropy(model(xb), yb, reduction="none").double() - base
                        out[n][j, s0 : s0 + len(yb)] = d.numpy()
                        bar.update()
                layers[n].mode = "exact"
        bar.close()
    return out


class MeasuredEstimator:
    """Omega[k, A] measured, not modelled: the loss change (nats) on the sample batch when only layer k uses AppMul A
    (:func:`loss_change_stats`, one forward pass of the batch per (layer, AppMul) pair), plus ``margin`` standard errors
    of it: an upper confidence bound, so that the selection does not favour the pairs whose loss happened to fall on
    these images (with ``margin=0``, the ILP at R = 0.95 put into 15 layers of ResNet-20 W4A4 the approximate design
    whose loss fell most on 1,024 training images, and lost 0.56 points of validation accuracy). Costlier than the
    Taylor estimate (~960 pairs: minutes instead of seconds) but free of the second-order model's error; layer
    granularity and plain AppMuls only."""

    name = "measured"

    def __init__(self, progress: bool = True, margin: float = 1.0) -> None:
        self.progress, self.margin = progress, float(margin)

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        candidates: dict[str, list],
        granularity: str = "layer",
        mean_errors: dict[str, torch.Tensor] | None = None,
    ) -> Estimate:
        """Omega ``(1, K)`` per layer from ``x (S, ...)``, ``y (S,)``; ``mean_errors`` are ignored."""
        if granularity != "layer":
            raise FamesError(f"the measured estimate is per layer: one forward pass per (group, AppMul) at granularity "
                             f"{granularity!r} would take hours; use a Taylor kind (taylor-rank1) for it")
        if any(isinstance(c, tuple) for ms in candidates.values() for c in ms):
            raise FamesError("the measured estimate takes plain AppMuls, not compensated ones: use a Taylor kind with "
                             "compensation 'auto'")
        t0 = time.perf_counter()
        check_candidates(qlayers(model), candidates, granularity)
        mean, se = loss_change_stats(model, x, y, candidates, self.progress)
        omega = {n: mean[n] + self.margin * se[n] for n in mean}
        zeros = {n: np.zeros_like(o) for n, o in omega.items()}
        return Estimate(omega, omega, zeros, candidates, "layer", "none", time.perf_counter() - t0)

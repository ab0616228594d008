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


@torch.no_grad()
def true_loss_changes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: dict[str, list[AppMul]], progress: bool = True,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Measured loss change (mean CE, nats) when ONLY layer k uses AppMul A (all others exact): ``(1, K)`` per layer.

    ``x (S, ...)`` runs in chunks of ``chunk`` images; the layers before k replay their outputs recorded in an exact
    pass (same numbers, no compute), unless the model calls some quantized layer more than once."""
    S = x.shape[0]
    out = {n: np.zeros(len(ms)) for n, ms in candidates.items()}
    with layer_states(model) as ql:
        for _, m in ql:
            m.emulation_dtype, m.gather_only = torch.float32, True
        layers = dict(ql)
        bar = tqdm(total=sum(len(v) for v in candidates.values()) * ((S + chunk - 1) // chunk),
                   desc="true loss change", disable=not progress)
        for s0 in range(0, S, chunk):
            xb, yb = x[s0 : s0 + chunk], y[s0 : s0 + chunk]
            z, outs, calls = recorded_pass(model, ql, xb)
            base = F.cross_entropy(z, yb, reduction="sum").item()
            shared = len(calls) != len(set(calls))
            for n, ms in candidates.items():
                before = [] if shared else calls[: calls.index(n)]
                with replaying(layers, {b: outs[b] for b in before}):
                    for j, m in enumerate(ms):
                        layers[n].set_assignment(m)
                        out[n][j] += F.cross_entropy(model(xb), yb, reduction="sum").item() - base
                        bar.update()
                layers[n].mode = "exact"
        bar.close()
    return {n: v[None] / S for n, v in out.items()}

class MeasuredEstimator:
    """Omega[k, A] measured, not modelled: the loss change (nats) on the sample batch when only layer k uses AppMul A
    (:func:`true_loss_changes`, one forward pass of the batch per (layer, AppMul) pair). Costlier than the Taylor
    estimate (ResNet-20 W4A4, ~520 pairs: minutes instead of seconds) and noisier per pair for small batches, but free
    of the second-order model's error; layer granularity and plain AppMuls only."""

    name = "measured"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

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
        omega = true_loss_changes(model, x, y, candidates, self.progress)
        zeros = {n: np.zeros_like(o) for n, o in omega.items()}
        return Estimate(omega, omega, zeros, candidates, "layer", "none", time.perf_counter() - t0)

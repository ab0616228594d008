"""Mean error by forward passes (our extension of the FAMES estimate), a wrapper around any estimator.

Where the wrapped estimate of a (layer, AppMul) exceeds ``forward_above`` nats, the sample mean ``mu_A`` of the
candidate's output error ``dY_A`` at every output position (its bias on this layer's data, e.g. truncation's
downward bias; from activation-code histograms, no emulation) is added to the layer's output and the loss change
measured by a forward pass of the layers after it (earlier layers replay their recorded outputs). The wrapped
estimator covers only the zero-mean remainder ``dY_A - mu_A`` (its ``residual`` terms; a data-free estimator
that cannot split the error keeps its own value). Layer granularity only: a forward per (layer, candidate).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.errors import FamesError
from fames.method.compensate import correction_means
from fames.method.estimate.base import (
    Estimate,
    Estimator,
    as_pairs,
    capture,
    check_candidates,
    layer_states,
    recorded_pass,
    replaying,
)
from fames.quant.layers import QuantLayer


class MeanForward:
    """``MeanForward(TaylorEstimator("rank1"), forward_above=0.1)``: the wrapped estimate, with the mean output
    error of every candidate whose estimate exceeds ``forward_above`` (nats) measured by a forward pass."""

    def __init__(self, inner: Estimator, forward_above: float = 0.1, chunk: int = 128, progress: bool = True):
        self.inner, self.forward_above, self.chunk, self.progress = inner, float(forward_above), chunk, progress
        self.name = f"{inner.name}+mean-forward"

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        candidates: dict[str, list],
        granularity: str = "layer",
        mean_errors: dict[str, torch.Tensor] | None = None,
    ) -> Estimate:
        """Omega ``(1, K)`` per layer (see the module docstring); ``x (S, ...)``, ``y (S,)``."""
        if granularity != "layer":
            raise FamesError("the mean-forward estimate runs a forward pass per layer and candidate: use granularity "
                             "'layer'")
        t0 = time.perf_counter()
        mu = mean_errors if mean_errors is not None else batch_mean_errors(model, x, candidates, self.chunk)
        est = self.inner.estimate(model, x, y, candidates, granularity, mean_errors=mu)
        rest = est.residual or {"omega": est.omega, "first": est.first, "second": est.second}
        omega = {n: v.copy() for n, v in est.omega.items()}
        first = {n: v.copy() for n, v in est.first.items()}
        second = {n: v.copy() for n, v in est.second.items()}
        big = {n: np.flatnonzero(omega[n][0] > self.forward_above) for n in candidates}
        clip = getattr(self.inner, "first_order", "clip") == "clip"  # a negative shift counts as 0, like g . e
        with layer_states(model) as ql:
            done = shifted_losses(model, ql, x, y, {n: mu[n][i] for n, i in big.items()}, self.chunk, self.progress)
        shift = {n: np.zeros_like(omega[n]) for n in candidates}
        for n, i in big.items():
            shift[n][0, i] = done[n][0]
            first[n][0, i], second[n][0, i] = rest["first"][n][0, i], rest["second"][n][0, i]
            omega[n][0, i] = rest["omega"][n][0, i] + (np.maximum(shift[n][0, i], 0.0) if clip else shift[n][0, i])
        return Estimate(omega, first, second, candidates, granularity, est.hessian, time.perf_counter() - t0, shift)


@torch.no_grad()
def batch_mean_errors(
    model: nn.Module, x: torch.Tensor, candidates: dict[str, list], chunk: int = 128
) -> dict[str, torch.Tensor]:
    """Per layer: the mean output error of every candidate over the batch ``x (S, ...)``, ``(K, *output[1:])``
    float64 (a compensated candidate's mean correction subtracted)."""
    S = x.shape[0]
    with layer_states(model) as ql:
        check_candidates(ql, candidates, "layer")
        layers = dict(ql)
        counts: dict[str, torch.Tensor] = {}
        corr: dict[str, torch.Tensor] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        pairs = {n: as_pairs(cs) for n, cs in candidates.items()}
        for s0 in range(0, S, chunk):  # code histograms (and mean corrections) summed over chunks
            _, ins, outs = capture(model, ql, x[s0 : s0 + chunk])
            for n, ps in pairs.items():
                h = layers[n].code_histogram(ins[n])
                counts[n] = counts[n] + h if n in counts else h
                shapes[n] = tuple(outs[n].shape[1:])
                ci = [i for i, (_, c) in enumerate(ps) if c is not None]
                if ci:
                    c = torch.zeros(len(ps), *shapes[n], dtype=torch.float64)
                    c[ci] = correction_means(layers[n], ins[n], [ps[i][1] for i in ci]) * len(ins[n]) / S
                    corr[n] = corr[n] + c if n in corr else c
        return {
            n: layers[n].histogram_errors(counts[n], S, [a for a, _ in ps], shapes[n]) - corr.get(n, 0.0)
            for n, ps in pairs.items()
        }


@torch.no_grad()
def shifted_losses(
    model: nn.Module, ql: list[tuple[str, QuantLayer]], x: torch.Tensor, y: torch.Tensor,
    shifts: dict[str, torch.Tensor], chunk: int, progress: bool,
) -> dict[str, np.ndarray]:
    """Mean CE change ``(1, K)`` per layer when only that layer's output is shifted by ``shifts[name][j]``.

    The layers that run before it replay their outputs recorded in an unshifted pass (same numbers, no
    compute), so each shift costs the forward of the rest of the network. Each quantized layer must run
    once per forward pass (no weight sharing between calls)."""
    S = x.shape[0]
    layers = dict(ql)
    out = {n: np.zeros(len(v)) for n, v in shifts.items()}
    bar = tqdm(
        total=sum(len(v) for v in shifts.values()) * ((S + chunk - 1) // chunk), desc="mean-error forwards",
        disable=not progress,
    )
    for s0 in range(0, S, chunk):
        xb, yb = x[s0 : s0 + chunk], y[s0 : s0 + chunk]
        z, outs, calls = recorded_pass(model, ql, xb)
        if len(calls) != len(set(calls)):
            raise FamesError("mean='forward' needs every quantized layer to run once per forward pass (shared layers)")
        base = F.cross_entropy(z, yb, reduction="sum").item()
        for n, mu in shifts.items():
            before = calls[: calls.index(n)]
            for j in range(len(mu)):
                bar.update()
                if not bool(mu[j].any()):
                    continue
                with replaying(layers, {**{b: outs[b] for b in before}, n: outs[n] + mu[j].to(outs[n].dtype)}):
                    out[n][j] += F.cross_entropy(model(xb), yb, reduction="sum").item() - base
    bar.close()
    return {n: v[None] / S for n, v in out.items()}

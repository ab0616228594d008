"""Estimates of compensated candidates: every AppMul of a layer with and without a control-variate correction
(Zervakis et al.), the Taylor model applied to the residual error of the corrected accumulator."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.method.compensate import Compensation, activation_histogram, fit_offline, layer_inputs, overhead_costs
from fames.method.estimate.base import Estimator
from fames.method.estimate.forward import MeanForward
from fames.method.estimate.taylor import TaylorEstimator


def estimate_with_compensation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    candidates: dict[str, list[tuple[AppMul, Compensation | None]]],
    hessian: str = "rank1",
    chunk: int = 128,
    mean: str = "taylor",
) -> dict[str, np.ndarray]:
    """Omega ``(1, K)`` per layer for candidates (AppMul, correction or None), layer granularity: the
    :class:`fames.method.estimate.TaylorEstimator` (first order clipped + Gauss-Newton, full or rank-1, or ``none``)
    applied to the residual ``dY_A - s_x s_w (beta V + alpha)`` of a compensated candidate (``mean``: see there)."""
    if mean not in ("taylor", "forward"):
        raise FamesError(f"mean={mean!r}: use 'taylor' or 'forward'")
    est: Estimator = TaylorEstimator(hessian, chunk=chunk, progress=False)
    if mean == "forward":
        est = MeanForward(est, chunk=chunk, progress=False)
    return est.estimate(model, x, y, candidates).omega


def compensated_candidates(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cands: dict[str, list[AppMul]], estimator: Estimator,
    liberty: str, macs: dict[str, int], metric: str = "pdp",
) -> tuple[dict[str, list[tuple[AppMul, Compensation]]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Compensated twin of every non-exact candidate of every layer (offline fit on the exact model's activation
    histograms of ``x``): ``(pairs, omega (1, K') per layer, overhead fJ per inference (K',) per layer)``; Omega
    from ``estimator`` (a :class:`fames.method.estimate.TaylorEstimator`, layer granularity)."""
    from fames.quant.convert import qlayers

    ql = dict(qlayers(model))
    ins = layer_inputs(model, list(cands), x)
    pairs: dict[str, list[tuple[AppMul, Compensation]]] = {}
    over: dict[str, np.ndarray] = {}
    for n, ms in cands.items():
        h = activation_histogram(ql[n], ins[n])
        pairs[n] = [(m, fit_offline(ql[n], h, appmul=m)) for m in ms if not m.is_exact()]
        over[n] = np.array([overhead_costs(ql[n], c, macs[n], liberty, h).energy(metric) for _, c in pairs[n]])
    omega = estimator.estimate(model, x, y, {n: list(p) for n, p in pairs.items()}).omega
    return pairs, omega, over

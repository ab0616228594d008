"""Data-free estimators, peers of the Taylor estimate (FAMES Fig. 5) behind the same
:class:`~fames.method.estimate.base.Estimator` protocol, and :func:`make_estimator` (every estimator by name).

* :class:`L2Estimator`: Omega[k, A] = ||E_A||_2, the Frobenius norm of the AppMul's error table
  ``E = LUT - exact`` (integer-code units), the same for every layer;
* :class:`MREEstimator`: Omega[k, A] = MRED of the AppMul under uniform operands
  (:func:`fames.appmul.metrics.error_metrics`), the same for every layer;
* first order, rank-1 and full Gauss-Newton Hessian: :class:`fames.method.estimate.TaylorEstimator`.

``scale="macs"`` multiplies a layer's value by the MACs of the group (the error a layer accumulates grows
with its products), which lets a data-free metric tell layers apart; the default ``"none"`` is the plain
metric, as in the paper's comparison. Both ignore the data ``x``, ``y`` (except for the MAC count).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.appmul.metrics import error_metrics
from fames.errors import FamesError
from fames.method.energy import MAC_SAMPLES, group_macs, layer_macs
from fames.method.estimate.base import Estimate, Estimator, check_candidates, check_granularity
from fames.method.estimate.forward import MeanForward
from fames.method.estimate.taylor import TaylorEstimator
from fames.method.estimate.truth import MeasuredEstimator
from fames.quant.convert import qlayers

SCALES = ("none", "macs")


class MetricEstimator:
    """Data-free estimate: one number per AppMul (``metric``), optionally scaled by a group's MACs."""

    name = "metric"

    def __init__(self, scale: str = "none") -> None:
        if scale not in SCALES:
            raise FamesError(f"scale {scale!r} is not one of {SCALES}")
        self.scale = scale

    def metric(self, m: AppMul) -> float:
        raise NotImplementedError

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        candidates: dict[str, list[AppMul]],
        granularity: str = "layer",
        mean_errors: dict[str, torch.Tensor] | None = None,
    ) -> Estimate:
        """Omega ``(groups, K)`` per layer; ``x (S, ...)`` is used only to count MACs (``mean_errors`` are
        ignored: a data-free metric does not split the error)."""
        check_granularity(granularity)
        t0 = time.perf_counter()
        ql = qlayers(model)
        check_candidates(ql, candidates, granularity)
        layers = dict(ql)
        macs = layer_macs(model, x[:MAC_SAMPLES]) if self.scale == "macs" else {}
        value = {m.name: self.metric(m) for ms in candidates.values() for m in ms}  # once per AppMul
        omega = {}
        for n, ms in candidates.items():
            groups = int(np.prod(layers[n].group_shape(granularity)))
            w = group_macs(layers[n], macs[n], granularity) if self.scale == "macs" else 1.0
            omega[n] = np.tile(np.array([w * value[m.name] for m in ms], dtype=np.float64), (groups, 1))
        zeros = {n: np.zeros_like(o) for n, o in omega.items()}
        return Estimate(omega, omega, zeros, candidates, granularity, "none", time.perf_counter() - t0)


class L2Estimator(MetricEstimator):
    """Frobenius norm of the error table, ``sqrt(sum_{a,w} E[a, w]^2)``."""

    name = "l2"

    def metric(self, m: AppMul) -> float:
        return float(np.sqrt((m.error().astype(np.float64) ** 2).sum()))


class MREEstimator(MetricEstimator):
    """Mean relative error distance of the AppMul under uniform operands."""

    name = "mre"

    def metric(self, m: AppMul) -> float:
        return error_metrics(m).mred


ESTIMATOR_NAMES = (
    "l2", "mre", "first-order", "taylor-rank1", "taylor-full", "taylor-rank1+forward", "taylor-full+forward", "measured"
)  # "+forward" also applies to l2, mre and first-order


def make_estimator(
    name: str, progress: bool = True, scale: str = "none", forward_above: float = 0.1, curvature: str = "own",
    bias_correction: bool = False, measured_margin: float = 1.0,
) -> Estimator:
    """Estimator by name: ``l2``, ``mre`` (``scale`` applies), ``first-order``, ``taylor-rank1``, ``taylor-full``
    (the paper's), ``measured`` (:class:`~fames.method.estimate.truth.MeasuredEstimator`: one forward pass per
    pair, ``measured_margin`` standard errors added), and any but ``measured`` with ``+forward``: wrapped in
    :class:`MeanForward` (the mean output error of a candidate forwarded where the estimate exceeds ``forward_above``
    nats). ``bias_correction`` (Taylor kinds without ``+forward``): candidates estimated with the mean-error correction
    applied."""
    base, _, mean = name.partition("+")
    if mean not in ("", "forward"):
        raise FamesError(f"estimator {name!r} is not one of {ESTIMATOR_NAMES}")
    hessian = {"first-order": "none", "taylor-rank1": "rank1", "taylor-full": "full"}.get(base)
    if base == "l2":
        inner: Estimator = L2Estimator(scale)
    elif base == "mre":
        inner = MREEstimator(scale)
    elif base == "measured":
        if mean or bias_correction:
            raise FamesError(f"estimator {name!r}: the measured estimate already forwards every candidate, so "
                             "'+forward' and the bias correction do not apply; use 'measured' alone or a Taylor kind")
        return MeasuredEstimator(progress, measured_margin)
    elif hessian is not None:
        inner = TaylorEstimator(hessian, progress=progress, curvature=curvature, bias_correction=bias_correction)
    else:
        raise FamesError(f"estimator {name!r} is not one of {ESTIMATOR_NAMES}")
    if bias_correction and (mean or hessian is None):
        raise FamesError(f"estimator {name!r} cannot estimate bias-corrected candidates: use a Taylor kind "
                         "(first-order, taylor-rank1, taylor-full) without '+forward'")
    return MeanForward(inner, forward_above, progress=progress) if mean else inner

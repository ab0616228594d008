"""Error metrics of an AppMul, under uniform operands or a given 2-D operand histogram.

Definitions (d = LUT - exact, p = probability of the operand pair, P = exact product):

* ``er``: error rate, P(d != 0)
* ``med``: mean error distance, E|d|
* ``nmed``: MED normalized by the largest exact |product| of the widths
* ``mred``: mean relative error distance, E[|d| / |P|] over pairs with P != 0 (EvoApproxLib's MRE)
* ``wce``: worst-case |d| over pairs with p > 0
* ``wcre``: worst-case |d| / |P| over pairs with P != 0 and p > 0
* ``mean_error``: E[d] (signed bias); ``var_error``: Var[d]
* ``rank``: numerical rank of the error table E (SVD, relative tolerance ``rank_tol``)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fames.appmul.core import AppMul
from fames.errors import AppMulError


@dataclass(frozen=True)
class ErrorMetrics:
    er: float
    med: float
    nmed: float
    mred: float
    wce: float
    wcre: float
    mean_error: float
    var_error: float
    rank: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def numerical_rank(e: np.ndarray, rank_tol: float = 1e-9) -> int:
    """Numerical rank of a 2-D table: singular values above ``rank_tol`` x the largest."""
    e = np.asarray(e, dtype=np.float64)
    if not e.any():
        return 0
    s = np.linalg.svd(e, compute_uv=False)
    return int((s > rank_tol * s[0]).sum())


def error_metrics(m: AppMul, hist: np.ndarray | None = None, rank_tol: float = 1e-9) -> ErrorMetrics:
    """Error metrics of ``m``; ``hist`` (shape of the LUT, non-negative counts) weights operand pairs.

    Without ``hist`` every operand pair is equally likely.
    """
    exact = m.exact().astype(np.float64)
    d = m.lut.astype(np.float64) - exact
    if hist is None:
        p = np.full(d.shape, 1.0 / d.size)
    else:
        hist = np.asarray(hist, dtype=np.float64)
        if hist.shape != d.shape:
            raise AppMulError(
                f"operand histogram of shape {hist.shape} does not match AppMul {m.name!r} "
                f"with LUT shape {d.shape} (axis 0 = activation index, axis 1 = weight index)"
            )
        if (hist < 0).any() or not np.isfinite(hist).all() or hist.sum() <= 0:
            raise AppMulError("operand histogram must be finite, non-negative and not all zero")
        p = hist / hist.sum()
    ad = np.abs(d)
    nz = exact != 0
    rel = np.where(nz, ad / np.where(nz, np.abs(exact), 1.0), 0.0)
    p_nz = p * nz
    mred = float((rel * p_nz).sum() / p_nz.sum()) if p_nz.sum() > 0 else 0.0
    support = p > 0
    mean = float((d * p).sum())
    return ErrorMetrics(
        er=float(p[d != 0].sum()),
        med=float((ad * p).sum()),
        nmed=float((ad * p).sum() / np.abs(exact).max()),
        mred=mred,
        wce=float(ad[support].max()),
        wcre=float(rel[support & nz].max()) if (support & nz).any() else 0.0,
        mean_error=mean,
        var_error=float((((d - mean) ** 2) * p).sum()),
        rank=numerical_rank(d, rank_tol),
    )

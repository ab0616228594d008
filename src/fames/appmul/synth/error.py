"""Error of a candidate multiplier against the exact product, over every operand pair, optionally weighted.

Metrics (``d`` = candidate - exact product ``P``, ``p`` = probability of the operand pair; uniform by default, or
the operand histogram of a model's layer for operand-aware synthesis):

* ``mred``: ``E[|d| / |P|]`` over pairs with ``P != 0`` (EvoApproxLib's MRE), in percent;
* ``mred0``: ``E[|d| / max(|P|, 1)]`` over every pair, in percent: MRED that also sees the zero products (an
  error there counts relative to one LSB). Operand-aware synthesis wants it: a ReLU layer's most frequent pairs
  have a zero activation, which ``mred`` leaves unconstrained;
* ``med``: ``E|d|``; ``mse``: ``E[d^2]``; ``er``: ``P(d != 0)`` in percent;
* ``wce``: worst ``|d|`` over pairs with ``p > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fames.appmul.core import exact_lut
from fames.errors import AppMulError

METRICS = ("mred", "mred0", "med", "mse", "er", "wce")


@dataclass
class ErrorModel:
    """Exact products and operand weights of one multiplier shape; :meth:`__call__` scores candidate outputs."""

    a_bits: int
    w_bits: int
    signed: bool
    metric: str = "mred"
    weights: np.ndarray | None = None  # (2**a_bits, 2**w_bits) operand-pair probabilities (None = uniform)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise AppMulError(f"unknown error metric {self.metric!r}; choose one of {METRICS}")
        self.exact = exact_lut(self.a_bits, self.w_bits, self.signed, self.signed).reshape(-1).astype(np.int64)
        shape = (1 << self.a_bits, 1 << self.w_bits)
        if self.weights is None:
            p = np.full(self.exact.shape, 1.0 / self.exact.size)
        else:
            p = np.asarray(self.weights, dtype=np.float64)
            if p.shape != shape:
                raise AppMulError(f"operand weights have shape {p.shape}, expected {shape} (a codes x w codes)")
            if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
                raise AppMulError("operand weights must be finite, non-negative and not all zero")
            p = (p / p.sum()).reshape(-1)
        self.p = p
        nz = self.exact != 0
        rel = np.where(nz, p / np.where(nz, np.abs(self.exact), 1), 0.0)
        self._rel = rel / max(p[nz].sum(), 1e-300) * 100.0  # mred in percent
        self._rel0 = p / np.maximum(np.abs(self.exact), 1) * 100.0  # mred0 in percent
        self._support = p > 0

    def __call__(self, values: np.ndarray) -> float:
        """The metric of candidate output ``values`` ``(2**(a_bits + w_bits),)`` int64 (LUT order, flattened).

        Products and sums, not ``@``: a BLAS dot product may spin threads, 30x slower on a busy machine."""
        d = values - self.exact
        if self.metric == "mred":
            return float((np.abs(d) * self._rel).sum())
        if self.metric == "mred0":
            return float((np.abs(d) * self._rel0).sum())
        if self.metric == "med":
            return float((np.abs(d) * self.p).sum())
        if self.metric == "mse":
            return float((d.astype(np.float64) ** 2 * self.p).sum())
        if self.metric == "er":
            return float(self.p[d != 0].sum()) * 100.0
        return float(np.abs(d[self._support]).max(initial=0))

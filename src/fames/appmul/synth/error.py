"""Error of a candidate multiplier against the exact product, over every operand pair, optionally weighted.

Metrics (``d`` = candidate - exact product ``P``, ``p`` = probability of the operand pair; uniform by default, or
the operand histogram of a model's layer for operand-aware synthesis):

* ``mred``: ``E[|d| / |P|]`` over pairs with ``P != 0`` (EvoApproxLib's MRE), in percent;
* ``mred0``: ``E[|d| / max(|P|, 1)]`` over every pair, in percent: MRED that also sees the zero products (an
  error there counts relative to one LSB). Operand-aware synthesis wants it: a ReLU layer's most frequent pairs
  have a zero activation, which ``mred`` leaves unconstrained;
* ``med``: ``E|d|``; ``mse``: ``E[d^2]``; ``er``: ``P(d != 0)`` in percent;
* ``wce``: worst ``|d|`` over pairs with ``p > 0``;
* ``omse``: the squared error of one layer's outputs, per product (LSB^2, the unit of ``mse``). ``weights`` are then
  ``(C, 2^a, 2^w)``: for each of the layer's C output channels, the mean number of each operand pair in one output
  (:func:`fames.quant.operands.operand_histograms` with ``per_output``; they sum to the fan-in K). With the products'
  errors taken as independent, one output's squared error is ``sum h_c d^2 + (sum h_c d)^2``: K times the mean square
  plus the channel's bias accumulated over the fan-in; ``omse`` is its mean over the channels divided by K. A design
  whose error averages b LSB in a channel of fan-in 576 pays 576 b^2 on top of its ``mse``: what a per-product metric
  cannot see, and what decides the loss of wide layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fames.appmul.core import exact_lut
from fames.errors import AppMulError

METRICS = ("mred", "mred0", "med", "mse", "er", "wce", "omse")


@dataclass
class ErrorModel:
    """Exact products and operand weights of one multiplier shape; :meth:`__call__` scores candidate outputs."""

    a_bits: int
    w_bits: int
    signed: bool
    metric: str = "mred"
    # (2**a_bits, 2**w_bits) operand-pair probabilities (None = uniform), or (C, 2**a_bits, 2**w_bits) per output
    # channel (summed over C, except by omse)
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise AppMulError(f"unknown error metric {self.metric!r}; choose one of {METRICS}")
        self.exact = exact_lut(self.a_bits, self.w_bits, self.signed, self.signed).reshape(-1).astype(np.int64)
        shape = (1 << self.a_bits, 1 << self.w_bits)
        need_channels = ("metric omse weighs a layer's output error: it needs per-output-channel operand counts "
                         f"(C, {shape[0]}, {shape[1]}) (operand_histograms(..., per_output=True); on the command line "
                         "--operands CHECKPOINT:LAYER)")
        if self.weights is None:
            if self.metric == "omse":
                raise AppMulError(need_channels)
            p = np.full(self.exact.shape, 1.0 / self.exact.size)
        else:
            q = np.asarray(self.weights, dtype=np.float64)
            if q.shape[-2:] != shape or q.ndim not in (2, 3) or (q.ndim == 3 and not len(q)):
                raise AppMulError(f"operand weights have shape {q.shape}, expected {shape} (a codes x w codes) or "
                                  f"(C, {shape[0]}, {shape[1]}) (one per output channel)")
            if not np.all(np.isfinite(q)) or (q < 0).any() or q.sum() <= 0:
                raise AppMulError("operand weights must be finite, non-negative and not all zero")
            if self.metric == "omse":
                if q.ndim != 3:
                    raise AppMulError(need_channels)
                self._per_output = q.reshape(len(q), -1)  # (C, pairs), each row summing to its fan-in
                self._fan_in = self._per_output.sum(1)
                if (self._fan_in <= 0).any():
                    empty = np.flatnonzero(self._fan_in <= 0).tolist()
                    raise AppMulError(f"operand weights: output channel(s) {empty} see no operands; count them on real "
                                      "inputs")
                # the mean-square term is linear in d^2: one vector over the pairs, not a (C, pairs) product per call
                self._square = (self._per_output / self._fan_in[:, None]).mean(0)
            p = q.reshape(-1, self.exact.size).sum(0)
            p = p / p.sum()
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
        if self.metric == "omse":
            d = d.astype(np.float64)
            bias = (self._per_output * d).sum(1)  # (C,) one output's summed error per channel
            return float((self._square * d * d).sum() + (bias * bias / self._fan_in).mean())
        if self.metric == "er":
            return float(self.p[d != 0].sum()) * 100.0
        return float(np.abs(d[self._support]).max(initial=0))

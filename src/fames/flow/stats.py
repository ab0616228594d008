"""Uncertainty of accuracies measured on a finite test set: a 95% interval for one accuracy, and for the paired
difference of two models evaluated on the same images (what a loss bound is about)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``hits / n``, in percent."""
    if n <= 0:
        raise ValueError("an interval needs at least one image")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


@dataclass
class PairedDifference:
    """Accuracy of model B minus model A on the same ``n`` images, in points, with a 95% interval (normal
    approximation of the paired difference, the standard McNemar-style interval) and the exact McNemar p-value.
    ``b_only`` / ``a_only``: images only B / only A classifies correctly."""

    points: float
    ci95: tuple[float, float]
    mcnemar_p: float
    n: int
    b_only: int
    a_only: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def paired_difference(correct_a: Any, correct_b: Any) -> PairedDifference:
    """Compare per-image correctness vectors (0/1, same images in the same order) of A and B."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired correctness vectors must have the same length > 0, got {a.shape} and {b.shape}")
    n = a.size
    b_only, a_only = int((b & ~a).sum()), int((a & ~b).sum())
    d = (b_only - a_only) / n
    var = ((b_only + a_only) / n - d * d) / n  # variance of the mean of the per-image differences
    half = Z95 * math.sqrt(max(var, 0.0))
    p = binomtest(b_only, b_only + a_only, 0.5).pvalue if b_only + a_only else 1.0
    return PairedDifference(100 * d, (100 * (d - half), 100 * (d + half)), float(p), n, b_only, a_only)

"""The intervals of the report against closed forms and simulation."""

import numpy as np
import pytest

from fames.flow.stats import paired_difference, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)  # p = 0.5, n = 100: 0.5 -/+ 0.0962 (Wilson)
    assert lo == pytest.approx(40.38, abs=0.01) and hi == pytest.approx(59.62, abs=0.01)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-9)
    assert wilson_interval(10, 10)[1] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_paired_difference_closed_form_and_coverage():
    a = np.array([1] * 80 + [0] * 20)
    b = a.copy()
    b[:5] = 0  # five images lost, two gained
    b[80:82] = 1
    d = paired_difference(a, b)
    assert (d.points, d.b_only, d.a_only, d.n) == (-3.0, 2, 5, 100)
    var = (7 / 100 - 0.03**2) / 100
    assert d.ci95[0] == pytest.approx(-3 - 100 * 1.96 * var**0.5, abs=0.01)
    assert d.mcnemar_p == pytest.approx(0.453125)  # exact two-sided binomial, 2 of 7
    # the interval covers the true difference in about 95% of simulated test sets
    rng = np.random.default_rng(0)
    cover = 0
    for _ in range(400):
        a = rng.random(2000) < 0.87
        b = np.where(rng.random(2000) < 0.03, ~a, a)  # true difference: 0.03 * (0.13 - 0.87) = -2.22 points
        lo, hi = paired_difference(a, b).ci95
        cover += lo <= -2.22 <= hi
    assert 0.92 <= cover / 400 <= 0.98
    assert paired_difference(a, a).points == 0.0 and paired_difference(a, a).mcnemar_p == 1.0

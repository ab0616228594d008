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
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(11, 10)
    for n in range(1, 3000):  # the estimate always inside (rounding put 100% above the upper end at 6,341 n)
        assert wilson_interval(n, n)[1] == 100.0 and wilson_interval(0, n)[0] == 0.0


def test_paired_difference_closed_form_and_coverage():
    a = np.array([1] * 80 + [0] * 20)
    b = a.copy()
    b[:5] = 0  # five images lost, two gained
    b[80:82] = 1
    d = paired_difference(a, b)
    assert (d.points, d.b_only, d.a_only, d.n) == (-3.0, 2, 5, 100)
    assert d.ci95[0] < -3 < d.ci95[1] and d.mcnemar_p == pytest.approx(0.453125)  # exact two-sided binomial, 2 of 7
    swapped = paired_difference(b, a)  # B vs A is A vs B negated
    assert swapped.ci95 == pytest.approx((-d.ci95[1], -d.ci95[0]))
    same = paired_difference(a, a)  # no disagreement seen is not a certainty of none
    assert same.ci95[0] < 0 < same.ci95[1]
    # where the Wald interval covered 66-89% (a few hundred images, few disagreements), Newcombe's holds 95%
    rng = np.random.default_rng(1)
    for n, (b_only, a_only) in ((360, (0.002, 0.005)), (360, (0.01, 0.02)), (1000, (0.002, 0.005))):
        true, cover = 100 * (b_only - a_only), 0
        for _ in range(300):
            both, bo, ao, neither = rng.multinomial(n, [0.85 - a_only, b_only, a_only, 0.15 - b_only])
            x = np.repeat([1, 0, 1, 0], [both, bo, ao, neither]).astype(bool)
            y = np.repeat([1, 1, 0, 0], [both, bo, ao, neither]).astype(bool)
            lo, hi = paired_difference(x, y).ci95
            cover += lo <= true <= hi
        assert cover / 300 >= 0.93, (n, b_only, a_only, cover / 300)
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

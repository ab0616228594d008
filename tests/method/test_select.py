import itertools

import numpy as np
import pytest

from fames.errors import FamesError
from fames.method.select import (
    GreedySelector,
    ILPSelector,
    InfeasibleBudget,
    SelectionProblem,
    dominated,
    lp_rounding,
    pareto_sweep,
    select,
)


def _problem(G=5, K=4, seed=0):
    rng = np.random.default_rng(seed)
    energy = np.sort(rng.uniform(0.2, 1.0, (G, K)), 1)[:, ::-1].copy()
    energy[:, 0] = 1.0  # candidate 0 = exact
    omega = np.cumsum(rng.uniform(0, 1, (G, K)), 1)
    omega[:, 0] = 0.0
    return SelectionProblem(omega, energy * rng.uniform(1, 5, (G, 1)), energy[:, 0] * 0 + 1)


def _brute(p, ratio):
    best = None
    G, K = p.omega.shape
    for ch in itertools.product(range(K), repeat=G):
        ch = np.array(ch)
        if not np.isfinite(p.omega[np.arange(G), ch]).all():
            continue
        o, r = p.evaluate(ch)
        if r <= ratio + 1e-12 and (best is None or o < best):
            best = o
    return best


@pytest.mark.parametrize("seed", range(4))
def test_ilp_equals_brute_force(seed):
    p = _problem(seed=seed)
    p.exact_energy = p.energy[:, 0].copy()
    p.omega[1, 2] = np.inf  # a candidate group 1 may not use
    for ratio in (0.5, 0.7, 0.9, 1.0):
        try:
            s = select(p, ratio)
        except InfeasibleBudget:
            assert _brute(p, ratio) is None
            continue
        assert s.ratio <= ratio + 1e-9
        assert s.omega == pytest.approx(_brute(p, ratio), abs=1e-9)
        assert s.choice[1] != 2
        g = GreedySelector().solve(p, ratio)
        assert g.omega >= s.omega - 1e-9  # the exact ILP is never worse than greedy


def test_infeasible_budget_reports_smallest_ratio():
    p = _problem()
    p.exact_energy = p.energy[:, 0].copy()
    r_min = p.min_ratio()
    with pytest.raises(InfeasibleBudget, match=f"R >= {r_min:.4f}"):
        select(p, r_min * 0.99)
    s = select(p, r_min)
    assert s.ratio == pytest.approx(r_min)
    with pytest.raises(FamesError, match=r"\(0, 1\]"):
        select(p, 1.5)
    res = pareto_sweep(p, [r_min * 0.5, 1.0])
    assert isinstance(res[0], InfeasibleBudget) and res[1].omega == 0.0


def test_ilp_many_groups_is_fast():
    rng = np.random.default_rng(1)
    G, K = 2000, 20
    energy = rng.uniform(0.1, 1, (G, K))
    energy[:, 0] = 1
    omega = rng.uniform(0, 1, (G, K)) * (1 - energy)
    p = SelectionProblem(omega, energy, np.ones(G))
    s = ILPSelector().solve(p, 0.6)
    assert s.ratio <= 0.6 + 1e-9 and s.status == "optimal"


def test_dominated_candidates():
    omega = np.array([[0.0, 1.0, 2.0, 1.0, np.inf], [0.0, 3.0, 3.0, 1.0, 0.5]])
    energy = np.array([[1.0, 0.5, 0.6, 0.5, 0.1], [1.0, 0.5, 0.5, 0.4, 0.9]])
    p = SelectionProblem(omega, energy, energy[:, 0].copy())
    # row 0: 2 loses to 1 in both; 3 ties 1 exactly (higher index); 4 is not allowed
    # row 1: 1 and 2 lose to 3; 4 is cheaper than 0 at a higher omega, so both stay
    expected = [[False, False, True, True, False], [False, True, True, False, False]]
    np.testing.assert_array_equal(dominated(p), expected)


def test_solver_output_is_silenced_at_the_file_descriptor(capfd):
    import os

    from fames.method.select.solvers import _quiet_stdout

    with _quiet_stdout():
        os.write(1, b"a C-level solver line\n")  # what HiGHS prints despite disp=False
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"


def test_solver_output_does_not_change_stage_keys():
    from fames.flow.approximate import _fields_key
    from fames.flow.config import SelectionConfig

    assert _fields_key(SelectionConfig()) == _fields_key(SelectionConfig(solver_output=True))
    assert _fields_key(SelectionConfig()) != _fields_key(SelectionConfig(granularity="filter"))


def test_lp_rounding_closed_form():
    # two groups, each: exact (energy 1, omega 0) or off (energy 0, omega 1); R = 0.75 leaves half a group to turn
    # off in the LP (bound 0.5); the rounding turns one group off whole (omega 1, R = 0.5), which is optimal here
    p = SelectionProblem(np.array([[0.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), np.ones(2))
    choice, bound = lp_rounding(p, 0.75)
    assert bound == pytest.approx(0.5)
    assert p.evaluate(choice) == pytest.approx((1.0, 0.5))


@pytest.mark.parametrize("seed", range(4))
def test_lp_rounding_is_feasible_and_brackets_the_optimum(seed):
    p = _problem(seed=seed)
    p.exact_energy = p.energy[:, 0].copy()
    p.omega[1, 2] = np.inf
    for ratio in (0.5, 0.7, 0.9):
        try:
            choice, bound = lp_rounding(p, ratio)
        except InfeasibleBudget:
            assert _brute(p, ratio) is None
            continue
        om, r = p.evaluate(choice)
        best = _brute(p, ratio)
        assert r <= ratio + 1e-9 and choice[1] != 2
        assert bound <= best + 1e-9 <= om + 2e-9  # the LP bound never beats the optimum, nor the optimum the rounding
        assert om - bound <= np.ptp(p.omega[np.isfinite(p.omega)]) + 1e-9  # at most one move above the bound


def test_ilp_time_limit_falls_back_to_a_feasible_selection():
    rng = np.random.default_rng(2)
    G, K = 3000, 10
    energy = np.sort(rng.uniform(0.05, 1, (G, K)), 1)[:, ::-1].copy()
    energy[:, 0] = 1
    omega = np.cumsum(rng.uniform(0, 1, (G, K)), 1)
    omega[:, 0] = 0
    p = SelectionProblem(omega, energy, np.ones(G))
    s = ILPSelector(time_limit=1e-3).solve(p, 0.5)  # no search finishes in a millisecond: no FamesError either
    _, bound = lp_rounding(p, 0.5)
    assert s.ratio <= 0.5 + 1e-9 and s.choice.shape == (G,)
    assert "time limit" in s.status and "gap" in s.status
    assert bound - 1e-9 <= s.omega <= bound + omega.max()

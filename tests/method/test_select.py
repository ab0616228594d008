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
    feasible_at,
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
    with pytest.raises(InfeasibleBudget, match=f"uses {r_min:.6f} .* R >= {feasible_at(r_min)}"):
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


@pytest.mark.parametrize("case", ["tiny estimates", "fJ totals", "one sensitive group", "one large gain"])
def test_ilp_is_optimal_whatever_the_magnitudes(case):
    """HiGHS' tolerances are absolute: unscaled it stopped at choices 6-590% worse than the optimum, reported
    optimal, for estimates near 1e-6, energies in fJ near 1e7-1e12, one group's excesses 1e7 times the others', or
    one very negative estimate (a loss decrease) beside estimates near 1e-3."""
    worse = 0
    for s in range(25):
        rng = np.random.default_rng(s)
        G, K = 5, 4
        per = rng.uniform(0.2, 1, K)
        per[0] = 1
        macs = rng.integers(1, 1000, G).astype(float)
        o = rng.exponential(1, (G, K))
        o[:, 0] = 0
        scale_e = 1.0
        if case == "tiny estimates":
            o *= 1e-7
        elif case == "fJ totals":
            scale_e = 1e9
        elif case == "one sensitive group":
            o *= 1e-4
            o[0] *= 1e7
        else:
            o *= 1e-3
            o[0, 1] = -1e3
        p = SelectionProblem(o, scale_e * macs[:, None] * per[None], scale_e * macs)
        ratio = p.min_ratio() + 0.6 * (1 - p.min_ratio())
        sel = ILPSelector().solve(p, ratio)
        best = _brute(p, ratio)
        assert sel.ratio <= ratio + 1e-9
        worse += sel.omega - best > 1e-9 * max(abs(best), 1e-300) + 1e-15
    assert worse == 0


def test_selection_data_that_cannot_be_selected_on_are_named():
    o, e = np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([[1.0, 0.5], [1.0, 0.5]])
    with pytest.raises(FamesError, match="-inf"):
        SelectionProblem(np.where(np.eye(2, dtype=bool), -np.inf, o), e, np.ones(2))
    with pytest.raises(FamesError, match="negative or infinite energy"):
        SelectionProblem(o, -e, np.ones(2))
    with pytest.raises(FamesError, match="sum to more than 0"):
        SelectionProblem(o, e * 0, np.zeros(2))  # no group multiplies anything
    with pytest.raises(FamesError, match="sum to more than 0"):
        SelectionProblem(o, e, np.array([1.0, np.nan]))


def test_the_suggested_budget_is_feasible():
    rng = np.random.default_rng(0)
    for _ in range(200):
        e = rng.uniform(0.1, 1, (4, 3))
        p = SelectionProblem(rng.uniform(0, 1, (4, 3)), e, e.max(1))
        with pytest.raises(InfeasibleBudget) as got:
            ILPSelector().solve(p, p.min_ratio() / 2)
        suggested = float(str(got.value).rsplit("R >= ", 1)[1])
        ILPSelector().solve(p, suggested)  # not infeasible again


@pytest.mark.parametrize("over", [5e-8, 2e-7, 2e-6])
def test_a_choice_beyond_the_budget_by_the_solvers_tolerance_is_not_taken(over):
    """The cheapest-loss choice exceeds the budget by ``over`` of the exact energy: HiGHS' feasibility tolerances took
    it (reported optimal) once the energy row was scaled to fractions of the exact energy."""
    om = np.array([[0.0, 10.0, np.inf], [0.0, 1.0, 100.0]])
    en = np.array([[1.0, 0.5, np.inf], [1.0, 2 * over, 0.0]]) * 1e6
    sel = ILPSelector().solve(SelectionProblem(om, en, np.array([1e6, 1e6])), 0.5)
    assert sel.ratio <= 0.5 and sel.omega == 11.0

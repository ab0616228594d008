"""Selectors of one AppMul per group under an energy budget: the multiple-choice knapsack ILP (HiGHS) and a
greedy baseline; :func:`select` and :func:`pareto_sweep` are the drivers."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterator

import numpy as np

from fames.errors import FamesError
from fames.method.select.problem import InfeasibleBudget, Selection, SelectionProblem, Selector, check_budget


class ILPSelector:
    """Exact solution with ``scipy.optimize.milp`` (HiGHS branch and bound). The rounded LP relaxation
    (:func:`lp_rounding`) comes first: when it is already within ``mip_rel_gap`` of the LP bound (large problems,
    e.g. kernel level, where one fractional group weighs little) it is the answer; when HiGHS reaches
    ``time_limit`` (s) it is the fallback, so a selection always comes back, its gap to the LP bound in its
    status."""

    name = "ilp"

    def __init__(self, time_limit: float = 60.0, mip_rel_gap: float = 1e-6, verbose: bool = False) -> None:
        self.time_limit, self.mip_rel_gap, self.verbose = time_limit, mip_rel_gap, verbose

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix

        check_budget(problem, ratio)
        t0 = time.perf_counter()
        allowed = problem.allowed & ~dominated(problem)
        rounded, bound = lp_rounding(problem, ratio, allowed)
        om_r, r_r = problem.evaluate(rounded)
        # the loss added above every group's own best candidate: what the choice decides (a constant such as one
        # group's very negative estimate neither loosens the gap nor swamps HiGHS' tolerances)
        best = np.where(allowed, problem.omega, np.inf).min(1)  # (G,)
        floor = float(best.sum())
        if om_r - bound <= self.mip_rel_gap * (om_r - floor):  # within the optimality gap: no search needed
            return Selection(rounded, r_r, ratio, om_r, time.perf_counter() - t0, self.name, "optimal")
        gi, ki = np.nonzero(allowed)  # one variable per allowed, undominated (group, candidate)
        n, G = len(gi), allowed.shape[0]
        # scaled for HiGHS, whose tolerances are absolute (raw fJ totals of 1e7 and estimates of 1e-6 made it stop at
        # choices 6-590% worse than the optimum, reported optimal): energy as a fraction of the exact energy, omega
        # above each group's best in units of its small excesses (a low quantile, so that a group whose excesses are
        # orders of magnitude above the others' does not push theirs below the solver's dual tolerance)
        c = problem.omega[gi, ki] - best[gi]
        if (c > 0).any():
            c = c / max(float(np.quantile(c[c > 0], 0.1)), float(c.max()) * 1e-9)
        one_per_group = coo_matrix((np.ones(n), (gi, np.arange(n))), shape=(G, n))
        e = problem.energy[gi, ki] / problem.exact_energy.sum()
        cons = [
            LinearConstraint(one_per_group, 1, 1),
            LinearConstraint(e.reshape(1, -1), -np.inf, ratio * (1 + 1e-12)),
        ]
        with contextlib.nullcontext() if self.verbose else _quiet_stdout(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unrecognized options", RuntimeWarning)  # passed on to HiGHS as they are
            res = milp(
                c,
                constraints=cons,
                integrality=np.ones(n),
                bounds=Bounds(0, 1),
                # HiGHS' absolute gap (1e-6 by default) would end the search early where groups' excesses differ by
                # orders of magnitude: only the relative gap decides
                # and its feasibility tolerances (1e-6, 1e-7), on an energy row near 1, let choices exceed the budget
                options={"time_limit": self.time_limit, "mip_rel_gap": self.mip_rel_gap, "mip_abs_gap": 0.0,
                         "mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10,
                         "disp": self.verbose},
            )
        if res.status not in (0, 1) or (res.status == 0 and res.x is None):
            raise FamesError(f"ILP solver failed ({res.message})")
        inc = None if res.x is None else np.full(G, -1, dtype=np.int64)
        if inc is not None:
            x = res.x > 0.5
            inc[gi[x]] = ki[x]
            if (inc < 0).any():
                if res.status == 0:
                    raise FamesError("ILP returned an assignment that leaves a group without a multiplier")
                inc = None  # an incomplete incumbent: the rounding stands
        why = f"time limit {self.time_limit:g} s"
        if res.status == 0:
            om, r = problem.evaluate(inc)
            if r <= ratio * (1 + 1e-9):
                return Selection(inc, r, ratio, om, time.perf_counter() - t0, self.name, "optimal")
            inc, why = None, "HiGHS' choice beyond the budget by its tolerance"  # the rounding, feasible, stands
        # HiGHS' incumbent (if any) or the rounded LP relaxation, whichever estimates less loss
        choice, how, (om, r) = rounded, "LP rounding", (om_r, r_r)
        if inc is not None and (ev := problem.evaluate(inc))[0] <= om_r:
            choice, how, (om, r) = inc, "HiGHS incumbent", ev
        gap = (om - bound) / max(om - floor, 1e-30)  # relative to the LP bound, which no assignment beats
        return Selection(choice, r, ratio, om, time.perf_counter() - t0, self.name,
                         f"{why}: {how}, gap {100 * gap:.2f}% to the LP bound")


def lp_rounding(problem: SelectionProblem, ratio: float,
                allowed: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """A feasible choice ``(G,)`` and the LP-relaxation optimum (a lower bound on every choice's omega) of the
    multiple-choice knapsack, in O(N log N) for N candidates and no solver: each group's undominated candidates on
    their lower convex hull in (energy, omega), the moves down every hull taken in increasing omega added per
    energy saved until the budget holds. The LP optimum stops inside the last move; the choice takes it whole, so
    its omega exceeds the bound by at most that one move's omega. ``allowed``: the allowed, undominated candidates
    ``(G, K)`` when the caller has them already."""
    check_budget(problem, ratio)
    if allowed is None:
        allowed = problem.allowed & ~dominated(problem)
    om, en = problem.omega, problem.energy
    G = om.shape[0]
    choice = np.empty(G, dtype=np.int64)
    moves: list[tuple[float, int, int]] = []  # (omega added per energy saved, group, candidate moved to)
    for g in range(G):
        ks = np.nonzero(allowed[g])[0]
        ks = ks[np.argsort(-en[g, ks], kind="stable")]  # energy falls, omega rises (undominated)
        hull: list[int] = []
        for k in ks:
            while len(hull) >= 2 and _slope(om, en, g, hull[-2], hull[-1]) >= _slope(om, en, g, hull[-2], k):
                hull.pop()
            hull.append(int(k))
        choice[g] = hull[0]
        moves += [(_slope(om, en, g, a, b), g, b) for a, b in zip(hull, hull[1:], strict=False)]
    budget = ratio * problem.exact_energy.sum() * (1 + 1e-12)
    total = float(en[np.arange(G), choice].sum())
    bound = float(om[np.arange(G), choice].sum())
    for _, g, b in sorted(moves, key=lambda m: m[0]):
        if total <= budget:
            break
        d_e, d_o = en[g, choice[g]] - en[g, b], om[g, b] - om[g, choice[g]]
        bound += d_o * min(1.0, (total - budget) / d_e)
        total -= d_e
        choice[g] = b
    return choice, bound


def _slope(om: np.ndarray, en: np.ndarray, g: int, a: int, b: int) -> float:
    """Omega added per energy saved moving group ``g`` from candidate ``a`` to ``b`` (less energy)."""
    return float((om[g, b] - om[g, a]) / (en[g, a] - en[g, b]))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence the process's standard output (file descriptor 1) meanwhile: HiGHS' C++ code prints some lines
    (e.g. ``HighsMipSolverData::transformNewIntegerFeasibleSolution``) even with ``disp`` off."""
    fd = 1  # where C code writes, whatever sys.stdout is
    sys.stdout.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no standard output at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class GreedySelector:
    """Baseline: start from the exact (lowest-omega) choice, then repeatedly take the move with the best
    energy saved per unit of omega added, until the budget holds."""

    name = "greedy"

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        check_budget(problem, ratio)
        t0 = time.perf_counter()
        om = np.where(problem.allowed, problem.omega, np.inf)
        en = np.where(problem.allowed, problem.energy, np.inf)
        G = om.shape[0]
        choice = np.argmin(np.where(np.isfinite(om), om + 1e-12 * en, np.inf), 1)
        budget = ratio * problem.exact_energy.sum()
        g = np.arange(G)
        while en[g, choice].sum() > budget * (1 + 1e-12):
            d_e = en[g, choice][:, None] - en  # energy saved by switching
            d_o = om - om[g, choice][:, None]  # omega added
            with np.errstate(divide="ignore", invalid="ignore"):
                score = np.where(d_e > 0, d_e / np.maximum(d_o, 1e-30), -np.inf)
            score[~np.isfinite(om)] = -np.inf
            gg, kk = np.unravel_index(np.argmax(score), score.shape)
            if not np.isfinite(score[gg, kk]) or score[gg, kk] <= 0:
                break
            choice[gg] = kk
        o, r = problem.evaluate(choice)
        return Selection(
            choice, r, ratio, o, time.perf_counter() - t0, self.name, "feasible" if r <= ratio + 1e-9 else "infeasible"
        )


def dominated(problem: SelectionProblem) -> np.ndarray:
    """``(G, K)`` bool: candidates another allowed candidate of the same group matches or beats in both omega and
    energy (strictly in one, or equal in both with a lower index). Removing them keeps every optimum's value:
    a dominated choice can be swapped for its dominator without raising energy or omega."""
    om = np.where(problem.allowed, problem.omega, np.inf)
    en = np.where(problem.allowed, problem.energy, np.inf)
    o_le = om[:, :, None] <= om[:, None, :]  # [g, j, k]: j no worse than k in omega
    e_le = en[:, :, None] <= en[:, None, :]
    strict = (om[:, :, None] < om[:, None, :]) | (en[:, :, None] < en[:, None, :])
    K = om.shape[1]
    lower = np.arange(K)[:, None] < np.arange(K)[None, :]  # j < k
    beats = o_le & e_le & (strict | lower) & problem.allowed[:, :, None]
    return beats.any(1) & problem.allowed


def select(problem: SelectionProblem, ratio: float, selector: Selector | None = None) -> Selection:
    """Solve ``problem`` at energy ratio ``ratio`` with ``selector`` (default: the ILP)."""
    return (selector or ILPSelector()).solve(problem, ratio)


def pareto_sweep(
    problem: SelectionProblem, ratios: list[float], selector: Selector | None = None
) -> list[Selection | InfeasibleBudget]:
    """Solve at every ratio; infeasible budgets are returned as their :class:`InfeasibleBudget`."""
    out: list[Selection | InfeasibleBudget] = []
    for r in ratios:
        try:
            out.append(select(problem, r, selector))
        except InfeasibleBudget as e:
            out.append(e)
    return out

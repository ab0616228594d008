"""Selectors of one AppMul per group under an energy budget: the multiple-choice knapsack ILP (HiGHS) and a
greedy baseline; :func:`select` and :func:`pareto_sweep` are the drivers."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

from fames.errors import FamesError
from fames.method.select.problem import InfeasibleBudget, Selection, SelectionProblem, Selector, check_budget


class ILPSelector:
    """Exact solution with ``scipy.optimize.milp`` (HiGHS branch and bound)."""

    name = "ilp"

    def __init__(self, time_limit: float = 60.0, mip_rel_gap: float = 1e-6, verbose: bool = False) -> None:
        self.time_limit, self.mip_rel_gap, self.verbose = time_limit, mip_rel_gap, verbose

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix

        check_budget(problem, ratio)
        t0 = time.perf_counter()
        allowed = problem.allowed & ~dominated(problem)
        gi, ki = np.nonzero(allowed)  # one variable per allowed, undominated (group, candidate)
        n, G = len(gi), allowed.shape[0]
        c = problem.omega[gi, ki]
        c = c - c.min() if n else c  # shift keeps the argmin (one candidate per group) and helps HiGHS scaling
        one_per_group = coo_matrix((np.ones(n), (gi, np.arange(n))), shape=(G, n))
        e = problem.energy[gi, ki]
        budget = ratio * problem.exact_energy.sum()
        cons = [
            LinearConstraint(one_per_group, 1, 1),
            LinearConstraint(e.reshape(1, -1), -np.inf, budget * (1 + 1e-12)),
        ]
        with contextlib.nullcontext() if self.verbose else _quiet_stdout():
            res = milp(
                c,
                constraints=cons,
                integrality=np.ones(n),
                bounds=Bounds(0, 1),
                options={"time_limit": self.time_limit, "mip_rel_gap": self.mip_rel_gap, "disp": self.verbose},
            )
        secs = time.perf_counter() - t0
        if res.x is None:
            hint = (f": no solution within the time limit of {self.time_limit:g} s; raise "
                    "ILPSelector(time_limit=...) or use a coarser granularity") if res.status == 1 else ""
            raise FamesError(f"ILP solver failed ({res.message}){hint}")
        x = res.x > 0.5
        choice = np.full(G, -1, dtype=np.int64)
        choice[gi[x]] = ki[x]
        if (choice < 0).any():
            raise FamesError("ILP returned an assignment that leaves a group without a multiplier")
        om, r = problem.evaluate(choice)
        gap = getattr(res, "mip_gap", None)  # relative gap between the solution and HiGHS' dual bound
        if res.status == 0:
            status = "optimal"
        elif gap is not None and np.isfinite(gap):
            status = f"time limit, gap {100 * gap:.2f}%"
        else:
            status = f"time limit ({res.message})"
        return Selection(choice, r, ratio, om, secs, self.name, status)


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

"""Selection of one AppMul per group under an energy budget: a multiple-choice knapsack ILP (HiGHS).

Problem (DESIGN.md): binary s[g, i] (group g uses candidate i), sum_i s[g, i] = 1 for every g,
sum_{g,i} s[g, i] energy[g, i] <= R * sum_g energy_exact[g], minimize sum_{g,i} s[g, i] omega[g, i].
Candidates that a group cannot use are given ``omega = inf`` (or listed as unavailable in ``mask``).

Problem, algorithm and driver are separate (pymoo style): :class:`SelectionProblem` holds the data, a
selector (:class:`ILPSelector`, ...) solves it, :func:`select` / :func:`pareto_sweep` drive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fames.errors import FamesError


class InfeasibleBudget(FamesError):
    """No assignment meets the energy budget; ``min_ratio`` is the smallest feasible ratio."""

    def __init__(self, ratio: float, min_ratio: float) -> None:
        super().__init__(
            f"energy budget R={ratio:.4f} is infeasible: even the cheapest AppMul in every group uses "
            f"{min_ratio:.4f} of the exact energy; choose R >= {min_ratio:.4f}"
        )
        self.ratio, self.min_ratio = ratio, min_ratio


@dataclass
class SelectionProblem:
    """Data of one selection.

    ``omega``: ``(G, K)`` estimated loss increase of group g with candidate k (inf = not allowed);
    ``energy``: ``(G, K)`` energy of group g with candidate k (any unit, e.g. pJ per inference);
    ``exact_energy``: ``(G,)`` energy of each group with the exact multiplier (the budget's reference).
    """

    omega: np.ndarray
    energy: np.ndarray
    exact_energy: np.ndarray
    group_names: list[str] = field(default_factory=list)
    candidate_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.omega = np.asarray(self.omega, dtype=np.float64)
        self.energy = np.asarray(self.energy, dtype=np.float64)
        self.exact_energy = np.asarray(self.exact_energy, dtype=np.float64)
        G, K = self.omega.shape
        if self.energy.shape != (G, K) or self.exact_energy.shape != (G,):
            raise FamesError(
                f"selection data shapes disagree: omega {self.omega.shape}, energy {self.energy.shape}, "
                f"exact_energy {self.exact_energy.shape}"
            )
        if np.isnan(self.omega).any() or np.isnan(self.energy).any():
            raise FamesError("selection data contain NaN (estimate or energy); cannot select")
        allowed = np.isfinite(self.omega)
        if not allowed.any(1).all():
            bad = [self.group_names[g] if self.group_names else g for g in np.where(~allowed.any(1))[0]]
            raise FamesError(f"groups {bad[:5]} have no allowed candidate (no AppMul of matching widths)")

    @property
    def allowed(self) -> np.ndarray:
        return np.isfinite(self.omega)

    def min_ratio(self) -> float:
        cheapest = np.where(self.allowed, self.energy, np.inf).min(1)
        return float(cheapest.sum() / self.exact_energy.sum())

    def evaluate(self, choice: np.ndarray) -> tuple[float, float]:
        """(total omega, energy ratio) of a choice vector ``(G,)`` of candidate indices."""
        g = np.arange(len(choice))
        return float(self.omega[g, choice].sum()), float(self.energy[g, choice].sum() / self.exact_energy.sum())


@dataclass
class Selection:
    """A solved selection: ``choice[g]`` = candidate index of group g."""

    choice: np.ndarray
    ratio: float  # achieved energy ratio
    budget: float
    omega: float  # objective value
    seconds: float
    solver: str
    status: str = "optimal"


class Selector(Protocol):
    name: str

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection: ...


class ILPSelector:
    """Exact solution with ``scipy.optimize.milp`` (HiGHS branch and bound)."""

    name = "ilp"

    def __init__(self, time_limit: float = 60.0, mip_rel_gap: float = 1e-6) -> None:
        self.time_limit, self.mip_rel_gap = time_limit, mip_rel_gap

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix

        _check_budget(problem, ratio)
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
        res = milp(
            c,
            constraints=cons,
            integrality=np.ones(n),
            bounds=Bounds(0, 1),
            options={"time_limit": self.time_limit, "mip_rel_gap": self.mip_rel_gap, "disp": False},
        )
        secs = time.perf_counter() - t0
        if res.x is None:
            raise FamesError(f"ILP solver failed: {res.message}")
        x = res.x > 0.5
        choice = np.full(G, -1, dtype=np.int64)
        choice[gi[x]] = ki[x]
        if (choice < 0).any():
            raise FamesError("ILP returned an assignment that leaves a group without a multiplier")
        om, r = problem.evaluate(choice)
        status = "optimal" if res.status == 0 else f"time limit ({res.message})"
        return Selection(choice, r, ratio, om, secs, self.name, status)


class GreedySelector:
    """Baseline: start from the exact (lowest-omega) choice, then repeatedly take the move with the best
    energy saved per unit of omega added, until the budget holds."""

    name = "greedy"

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        _check_budget(problem, ratio)
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


def _check_budget(problem: SelectionProblem, ratio: float) -> None:
    """Raise for a ratio outside (0, 1] or below the smallest feasible one."""
    if not (0 < ratio <= 1):
        raise FamesError(f"energy budget ratio R={ratio} must lie in (0, 1] (fraction of the exact energy)")
    min_r = problem.min_ratio()
    if ratio < min_r - 1e-12:
        raise InfeasibleBudget(ratio, min_r)


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

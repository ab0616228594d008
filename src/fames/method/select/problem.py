"""The data of a selection (pymoo style: problem, algorithm and driver are separate objects).

Problem (DESIGN.md): binary s[g, i] (group g uses candidate i), sum_i s[g, i] = 1 for every g,
sum_{g,i} s[g, i] energy[g, i] <= R * sum_g energy_exact[g], minimize sum_{g,i} s[g, i] omega[g, i].
Candidates that a group cannot use are given ``omega = inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fames.errors import FamesError


def feasible_at(min_ratio: float, digits: int = 4) -> str:
    """``min_ratio`` rounded up to ``digits`` decimals: a budget to suggest that is feasible as printed."""
    return f"{math.ceil(min_ratio * 10**digits - 1e-9) / 10**digits:.{digits}f}"


class InfeasibleBudget(FamesError):
    """No assignment meets the energy budget; ``min_ratio`` is the smallest feasible ratio."""

    def __init__(self, ratio: float, min_ratio: float) -> None:
        super().__init__(
            f"energy budget R={ratio:.4f} is infeasible: even the cheapest AppMul in every group uses "
            f"{min_ratio:.6f} of the exact energy; choose R >= {feasible_at(min_ratio)}"
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
        if np.isneginf(self.omega).any():
            raise FamesError("selection data contain an estimate of -inf (an overflow?); +inf marks a candidate a "
                             "group cannot use, -inf means nothing")
        allowed = np.isfinite(self.omega)
        bad_e = allowed & ~(np.isfinite(self.energy) & (self.energy >= 0))
        if bad_e.any():
            raise FamesError(f"selection data: {int(bad_e.sum())} allowed candidate(s) have a negative or infinite "
                             "energy; energies are non-negative (e.g. fJ per inference)")
        if not (np.isfinite(self.exact_energy).all() and (self.exact_energy >= 0).all()
                and self.exact_energy.sum() > 0):
            raise FamesError("selection data: the exact energy of the groups must be finite, non-negative and sum to "
                             f"more than 0 (got a sum of {self.exact_energy.sum()}): the budget is a fraction of it "
                             "(groups without multiply-accumulates have none)")
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


def check_budget(problem: SelectionProblem, ratio: float) -> None:
    """Raise for a ratio outside (0, 1] or below the smallest feasible one."""
    if not (0 < ratio <= 1):
        raise FamesError(f"energy budget ratio R={ratio} must lie in (0, 1] (fraction of the exact energy)")
    min_r = problem.min_ratio()
    if ratio < min_r - 1e-12:
        raise InfeasibleBudget(ratio, min_r)

"""Selection under an energy budget: the problem data, selectors (ILP, greedy) and drivers."""

from fames.method.select.problem import (
    InfeasibleBudget,
    Selection,
    SelectionProblem,
    Selector,
    check_budget,
    feasible_at,
)
from fames.method.select.solvers import GreedySelector, ILPSelector, dominated, lp_rounding, pareto_sweep, select

__all__ = [
    "GreedySelector",
    "ILPSelector",
    "InfeasibleBudget",
    "Selection",
    "SelectionProblem",
    "Selector",
    "check_budget",
    "dominated",
    "feasible_at",
    "lp_rounding",
    "pareto_sweep",
    "select",
]

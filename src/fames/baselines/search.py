"""Simple selection baselines behind the :class:`fames.method.select.Selector` interface: uniform selection (the
same family member in every layer) and random search. Greedy by estimated sensitivity is
:class:`fames.method.select.GreedySelector`.

Both rank candidates by the estimate (total omega, lower is better) unless given an ``evaluator`` (see
:mod:`fames.baselines.evaluate`), in which case they measure validation accuracy and keep the most accurate.
"""

from __future__ import annotations

import time

import numpy as np

from fames.baselines.evaluate import Evaluator, SearchSelection, choose_best
from fames.errors import FamesError
from fames.method.select import InfeasibleBudget, SelectionProblem, check_budget

CRITERIA = ("omega", "energy")


def repair_to_budget(
    problem: SelectionProblem, choice: np.ndarray, ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Copy of ``choice (G,)`` moved within energy ratio ``ratio``: while over budget, a random group that can
    get cheaper switches to a random cheaper allowed candidate. Needs ``ratio >= problem.min_ratio()``."""
    en = np.where(problem.allowed, problem.energy, np.inf)
    budget = ratio * problem.exact_energy.sum() * (1 + 1e-12)
    c = np.array(choice, dtype=np.int64)
    g_idx = np.arange(len(c))
    total = en[g_idx, c].sum()
    while total > budget:
        cur = en[g_idx, c]
        can = np.where((en < cur[:, None]).any(1))[0]
        if not len(can):
            raise InfeasibleBudget(ratio, problem.min_ratio())
        g = rng.choice(can)
        k = rng.choice(np.where(en[g] < cur[g])[0])
        total += en[g, k] - cur[g]
        c[g] = k
    return c


def random_choices(problem: SelectionProblem, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, G)`` choices drawn uniformly among every group's allowed candidates."""
    allowed = problem.allowed
    counts = allowed.sum(1)
    pick = (rng.random((n, len(counts))) * counts).astype(np.int64)
    idx = [np.where(row)[0] for row in allowed]
    return np.stack([[idx[g][p] for g, p in enumerate(row)] for row in pick]) if n else np.zeros((0, len(idx)), int)


def _score(
    problem: SelectionProblem, choices: np.ndarray, evaluator: Evaluator | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(score, accuracy)`` of ``choices (N, G)``, higher score is better: measured accuracy (%) with an
    evaluator, else minus the total estimate."""
    if evaluator is not None:
        acc = evaluator(choices)
        return acc, acc
    return -np.array([problem.evaluate(c)[0] for c in choices]), None


class UniformSelector:
    """The same family member in every group (groups without it keep the exact multiplier).

    ``labels (G, K)``: family member of every candidate (:func:`fames.baselines.evaluate.member_labels`).
    Among the members whose uniform assignment meets the budget, ``criterion="omega"`` keeps the lowest total
    estimate, ``"energy"`` the most energy (the least approximate by cost, no estimator needed); with an
    ``evaluator`` every feasible member is measured and the most accurate kept.
    """

    name = "uniform"

    def __init__(self, labels: np.ndarray, criterion: str = "omega", evaluator: Evaluator | None = None) -> None:
        if criterion not in CRITERIA:
            raise FamesError(f"criterion {criterion!r} is not one of {CRITERIA}")
        self.labels, self.criterion, self.evaluator = np.asarray(labels, dtype=object), criterion, evaluator

    def members(self, problem: SelectionProblem) -> dict[str, np.ndarray]:
        """Every member's uniform choice vector ``(G,)``."""
        labels = self.labels
        if labels.shape != problem.omega.shape:
            raise FamesError(f"labels have shape {labels.shape}, the problem {problem.omega.shape}")
        allowed = problem.allowed
        out = {}
        for lab in sorted({x for x in labels[allowed].tolist() if x != "exact"}):
            c = np.full(len(labels), -1, dtype=np.int64)
            for g in range(len(labels)):
                hit = np.where((labels[g] == lab) & allowed[g])[0]
                fallback = np.where((labels[g] == "exact") & allowed[g])[0]
                if len(hit):
                    c[g] = hit[0]
                elif len(fallback):
                    c[g] = fallback[0]
            if (c >= 0).all():
                out[lab] = c
        return out

    def solve(self, problem: SelectionProblem, ratio: float) -> SearchSelection:
        check_budget(problem, ratio)
        t0 = time.perf_counter()
        members = self.members(problem)
        feasible = {k: c for k, c in members.items() if problem.evaluate(c)[1] <= ratio + 1e-9}
        if not feasible:
            best = min((problem.evaluate(c)[1] for c in members.values()), default=1.0)
            raise InfeasibleBudget(ratio, best)
        choices = np.stack(list(feasible.values()))
        score, acc = _score(problem, choices, self.evaluator)
        if acc is None and self.criterion == "energy":
            score = np.array([problem.evaluate(c)[1] for c in choices])
        sel = choose_best(problem, choices, score, ratio, self.name, 0.0, acc, len(choices) if acc is not None else 0)
        assert sel is not None
        sel.seconds = time.perf_counter() - t0
        return sel


class RandomSearchSelector:
    """Random search: ``samples`` uniformly drawn choices, each repaired into the budget
    (:func:`repair_to_budget`); keeps the lowest total estimate, or with an ``evaluator`` the most accurate.
    Reproducible for a given ``seed``."""

    name = "random"

    def __init__(self, samples: int = 1000, seed: int = 0, evaluator: Evaluator | None = None) -> None:
        if samples < 1:
            raise FamesError(f"samples={samples}: random search needs at least one sample")
        self.samples, self.seed, self.evaluator = samples, seed, evaluator

    def solve(self, problem: SelectionProblem, ratio: float) -> SearchSelection:
        check_budget(problem, ratio)
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        draws = random_choices(problem, self.samples, rng)
        choices = np.stack([repair_to_budget(problem, c, ratio, rng) for c in draws])
        score, acc = _score(problem, choices, self.evaluator)
        evals = len({tuple(c) for c in choices.tolist()}) if acc is not None else 0
        sel = choose_best(problem, choices, score, ratio, self.name, time.perf_counter() - t0, acc, evals)
        assert sel is not None  # every repaired choice is within the budget
        return sel

"""NSGA-II selection (ALWANN / MARLIN style) with pymoo, behind the :class:`fames.method.select.Selector` interface.

Variables: one integer per group, the index into the group's allowed candidates. Objectives (both
minimized): validation error ``100 - accuracy`` (%) measured with bit-exact emulation by an
:class:`~fames.baselines.evaluate.Evaluator`, and the relative energy. Constraint: relative energy <= R;
every offspring is repaired into the budget (:func:`~fames.baselines.search.repair_to_budget`) so no
evaluation is spent on an infeasible candidate. ALWANN evaluates candidates as they are; MARLIN retrains each
one briefly: give the evaluator a :class:`~fames.baselines.evaluate.CandidateWorker` with ``retrain`` set.

One run at the loosest budget yields a whole accuracy/energy front; :meth:`NSGASelector.sweep` picks every
budget's answer from the archive of all evaluated candidates, as these tools do. Needs ``pip install
'fames[nsga]'`` (pymoo >= 0.6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fames.baselines.evaluate import Evaluator, SearchSelection, choose_best
from fames.baselines.search import repair_to_budget
from fames.errors import FamesError
from fames.method.select import InfeasibleBudget, SelectionProblem, check_budget

PAPER_POPULATION = 70  # MARLIN: population 70, 80-120 generations
PAPER_GENERATIONS = 100


def paper_evaluations(population: int = PAPER_POPULATION, generations: int = PAPER_GENERATIONS) -> int:
    """Candidate evaluations of an NSGA-II run: the initial population plus one offspring population per
    further generation (an upper bound: duplicates are not re-evaluated)."""
    return population * generations


@dataclass
class NSGAResult:
    """Every candidate one run evaluated: ``choices (N, G)``, ``accuracy (N,)`` %, ``ratio (N,)`` relative
    energy; ``seconds`` wall time of the run, ``evaluations`` distinct candidates evaluated."""

    choices: np.ndarray
    accuracy: np.ndarray
    ratio: np.ndarray
    seconds: float
    evaluations: int
    budget: float

    def best(self, problem: SelectionProblem, ratio: float, solver: str) -> SearchSelection | None:
        """The most accurate evaluated candidate within energy ratio ``ratio`` (None if there is none)."""
        return choose_best(
            problem, self.choices, self.accuracy, ratio, solver, self.seconds, self.accuracy, self.evaluations
        )

    def front(self) -> np.ndarray:
        """Indices of the non-dominated candidates (higher accuracy, lower energy), by increasing energy."""
        order = np.lexsort((-self.accuracy, self.ratio))
        keep, best = [], -np.inf
        for i in order:
            if self.accuracy[i] > best:
                keep.append(i)
                best = self.accuracy[i]
        return np.array(keep, dtype=np.int64)


def _import_pymoo() -> Any:
    try:
        import pymoo  # noqa: F401
    except ImportError as e:
        raise FamesError("NSGA-II selection needs pymoo: pip install 'fames[nsga]' (or 'pymoo>=0.6')") from e


class NSGASelector:
    """NSGA-II over per-group AppMul choices with measured accuracy (see the module docstring).

    ``population`` and ``generations`` default to MARLIN's 70 x 100 (thousands of evaluations: hours on a
    CPU); ``seed`` makes runs reproducible for a deterministic evaluator; ``name`` labels the selections
    (e.g. ``alwann`` / ``marlin``).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        population: int = PAPER_POPULATION,
        generations: int = PAPER_GENERATIONS,
        seed: int = 0,
        name: str = "nsga2",
        progress: bool = True,
    ) -> None:
        if population < 2 or generations < 1:
            raise FamesError(f"NSGA-II needs population >= 2 and generations >= 1, got {population}, {generations}")
        self.evaluator, self.population, self.generations = evaluator, population, generations
        self.seed, self.name, self.progress = seed, name, progress

    def run(self, problem: SelectionProblem, ratio: float) -> NSGAResult:
        """One NSGA-II run under energy ratio ``ratio``; returns every evaluated candidate."""
        _import_pymoo()
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.callback import Callback
        from pymoo.core.problem import Problem
        from pymoo.core.repair import Repair
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling
        from pymoo.optimize import minimize
        from tqdm.auto import tqdm

        check_budget(problem, ratio)
        t0 = time.perf_counter()
        allowed = [np.where(row)[0] for row in problem.allowed]
        rank = np.full(problem.omega.shape, -1, dtype=np.int64)  # candidate index -> variable value
        for g, idx in enumerate(allowed):
            rank[g, idx] = np.arange(len(idx))
        rng = np.random.default_rng(self.seed)
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        evaluator = self.evaluator

        def decode(X: np.ndarray) -> np.ndarray:
            V = np.clip(np.rint(X).astype(np.int64), 0, [len(a) - 1 for a in allowed])
            return np.stack([[allowed[g][v] for g, v in enumerate(row)] for row in V])

        class _Budget(Repair):
            def _do(self, _problem, X, **kwargs):  # type: ignore[no-untyped-def]
                C = np.stack([repair_to_budget(problem, c, ratio, rng) for c in decode(X)])
                return rank[np.arange(C.shape[1]), C].astype(float)

        class _Problem(Problem):
            def __init__(self) -> None:
                super().__init__(
                    n_var=len(allowed),
                    n_obj=2,
                    n_ieq_constr=1,
                    xl=0,
                    xu=np.array([len(a) - 1 for a in allowed]),
                    vtype=int,
                )

            def _evaluate(self, X, out, *args, **kwargs):  # type: ignore[no-untyped-def]
                C = decode(X)
                acc = evaluator(C)
                r = np.array([problem.evaluate(c)[1] for c in C])
                seen.append((C, acc))
                out["F"] = np.column_stack([100.0 - acc, r])
                out["G"] = (r - ratio)[:, None]

        bar = tqdm(total=self.generations, desc=f"{self.name} (pop {self.population})", disable=not self.progress)

        class _Progress(Callback):
            def notify(self, algorithm):  # type: ignore[no-untyped-def]
                bar.update()

        algorithm = NSGA2(
            pop_size=self.population,
            sampling=IntegerRandomSampling(),
            crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
            repair=_Budget(),
            eliminate_duplicates=True,
        )
        minimize(
            _Problem(), algorithm, ("n_gen", self.generations), seed=self.seed, callback=_Progress(), verbose=False
        )
        bar.close()
        C = np.concatenate([c for c, _ in seen])
        A = np.concatenate([a for _, a in seen])
        C, first = np.unique(C, axis=0, return_index=True)
        A = A[first]
        R = np.array([problem.evaluate(c)[1] for c in C])
        return NSGAResult(C, A, R, time.perf_counter() - t0, len(C), ratio)

    def solve(self, problem: SelectionProblem, ratio: float) -> SearchSelection:
        sel = self.run(problem, ratio).best(problem, ratio, self.name)
        if sel is None:  # every candidate is repaired into the budget, so this means a broken evaluator
            raise FamesError(f"NSGA-II found no candidate within R={ratio}")
        return sel

    def sweep(
        self, problem: SelectionProblem, ratios: list[float]
    ) -> tuple[list[SearchSelection | InfeasibleBudget], NSGAResult]:
        """One run at the loosest feasible budget, then the best evaluated candidate for every ratio (a
        ratio below every evaluated candidate's energy gives :class:`InfeasibleBudget`)."""
        min_r = problem.min_ratio()
        feasible = [r for r in ratios if r >= min_r - 1e-12]
        if not feasible:
            raise InfeasibleBudget(min(ratios), min_r)
        res = self.run(problem, max(feasible))
        out: list[SearchSelection | InfeasibleBudget] = []
        for r in ratios:
            sel = res.best(problem, r, self.name) if r >= min_r - 1e-12 else None
            out.append(sel if sel is not None else InfeasibleBudget(r, max(min_r, float(res.ratio.min()))))
        return out, res

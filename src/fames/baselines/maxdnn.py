"""MAx-DNN-style heuristic selection: approximate the least sensitive groups (layers, filters or kernels) first.

MAx-DNN (Leon et al.) distributes ROUP multipliers of increasing aggressiveness over layers, filters or kernels
following their error resilience. Our rendering, behind the :class:`fames.method.select.Selector` interface and on the
same :class:`~fames.method.select.SelectionProblem` as the ILP:

* every group's candidates on its energy/estimate Pareto front, most expensive first, form its approximation
  *levels*: each level saves energy at a larger estimated loss;
* a group's *sensitivity* is the estimated loss increase per unit of energy saved at its most aggressive
  level;
* starting from level 0 everywhere (the least-loss candidate, normally exact), groups move one level down in
  order of increasing sensitivity, sweep after sweep, until the energy budget holds.

It is a ranking heuristic, not an optimization: it never weighs one group's candidates against another's.
"""

from __future__ import annotations

import time

import numpy as np

from fames.method.select import Selection, SelectionProblem, check_budget


def approximation_levels(problem: SelectionProblem) -> list[np.ndarray]:
    """Per group, its energy/estimate Pareto front as candidate indices by decreasing energy and increasing
    estimate: level 0 is the least-loss candidate (normally exact), the last level the cheapest candidate."""
    out = []
    for om, en, ok in zip(problem.omega, problem.energy, problem.allowed, strict=True):
        idx = np.flatnonzero(ok)
        idx = idx[np.lexsort((om[idx], en[idx]))]  # energy ascending, then estimate ascending
        keep, best = [], np.inf
        for k in idx:
            if om[k] < best:
                keep.append(k)
                best = om[k]
        out.append(np.array(keep[::-1], dtype=np.int64))
    return out


class MaxDNNSelector:
    """Sensitivity-ranked, level-by-level approximation (see the module docstring)."""

    name = "maxdnn"

    def solve(self, problem: SelectionProblem, ratio: float) -> Selection:
        check_budget(problem, ratio)
        t0 = time.perf_counter()
        levels = approximation_levels(problem)
        en, om = problem.energy, problem.omega
        saved = np.array([en[g, lv[0]] - en[g, lv[-1]] for g, lv in enumerate(levels)])
        worse = np.array([om[g, lv[-1]] - om[g, lv[0]] for g, lv in enumerate(levels)])
        sensitivity = np.where(saved > 0, worse / np.where(saved > 0, saved, 1.0), np.inf)
        order = np.argsort(sensitivity, kind="stable")
        level = np.zeros(len(levels), dtype=np.int64)
        choice = np.array([lv[0] for lv in levels])
        g_idx = np.arange(len(levels))
        total = en[g_idx, choice].sum()
        budget = ratio * problem.exact_energy.sum() * (1 + 1e-12)
        deepest = max(len(lv) for lv in levels)
        for _ in range(1, deepest):
            if total <= budget:
                break
            for g in order:
                lv = levels[g]
                if level[g] + 1 < len(lv):
                    level[g] += 1
                    total += en[g, lv[level[g]]] - en[g, choice[g]]
                    choice[g] = lv[level[g]]
                    if total <= budget:
                        break
        o, r = problem.evaluate(choice)
        return Selection(choice, r, ratio, o, time.perf_counter() - t0, self.name, "feasible")

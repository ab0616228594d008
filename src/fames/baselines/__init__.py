"""Baselines to compare FAMES with, side by side on the same model, library, budget and machine.

* selection (:class:`fames.select.Selector` interface): NSGA-II with measured accuracy, ALWANN / MARLIN
  style (:mod:`.nsga`), uniform selection and random search (:mod:`.search`), greedy by estimated sensitivity
  (:class:`fames.select.GreedySelector`), MAx-DNN-style least-sensitive-first approximation (:mod:`.maxdnn`);
* estimators (:class:`fames.estimate.TaylorEstimator` interface): L2 norm of the error table and MRE
  (:mod:`.estimators`);
* retraining instead of calibration (:mod:`.retrain`);
* shared: a model's selection problem, applying a choice, parallel accuracy evaluation (:mod:`.evaluate`).
"""

from fames.baselines.estimators import ESTIMATOR_NAMES, L2Estimator, MREEstimator, make_estimator
from fames.baselines.evaluate import (
    AccuracyEvaluator,
    CandidateWorker,
    ModelProblem,
    SearchSelection,
    apply_choice,
    build_problem,
    member_labels,
)
from fames.baselines.maxdnn import MaxDNNSelector, approximation_levels
from fames.baselines.nsga import NSGAResult, NSGASelector, paper_evaluations
from fames.baselines.retrain import RetrainReport, retrain
from fames.baselines.search import RandomSearchSelector, UniformSelector, repair_to_budget
from fames.select import GreedySelector

__all__ = [
    "ESTIMATOR_NAMES",
    "AccuracyEvaluator",
    "CandidateWorker",
    "GreedySelector",
    "L2Estimator",
    "MaxDNNSelector",
    "MREEstimator",
    "ModelProblem",
    "NSGAResult",
    "NSGASelector",
    "RandomSearchSelector",
    "RetrainReport",
    "SearchSelection",
    "UniformSelector",
    "apply_choice",
    "approximation_levels",
    "build_problem",
    "make_estimator",
    "member_labels",
    "paper_evaluations",
    "repair_to_budget",
    "retrain",
]

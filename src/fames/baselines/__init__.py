"""Baselines to compare FAMES with, side by side on the same model, library, budget and machine.

* selection (:class:`fames.method.select.Selector` interface): NSGA-II with measured accuracy, ALWANN / MARLIN
  style (:mod:`.nsga`), uniform selection and random search (:mod:`.search`), greedy by estimated sensitivity
  (:class:`fames.method.select.GreedySelector`), MAx-DNN-style least-sensitive-first approximation (:mod:`.maxdnn`);
* estimators: the data-free L2 and MRE peers live beside the Taylor estimate in :mod:`fames.method.estimate`;
* retraining instead of calibration (:mod:`.retrain`);
* shared: parallel accuracy evaluation of choice vectors (:mod:`.evaluate`).
"""

from fames.baselines.evaluate import (
    AccuracyEvaluator,
    CandidateWorker,
    SearchSelection,
    member_labels,
)
from fames.baselines.maxdnn import MaxDNNSelector, approximation_levels
from fames.baselines.nsga import NSGAResult, NSGASelector, paper_evaluations
from fames.baselines.retrain import RetrainReport, retrain
from fames.baselines.search import RandomSearchSelector, UniformSelector, repair_to_budget
from fames.method.select import GreedySelector

__all__ = [
    "AccuracyEvaluator",
    "CandidateWorker",
    "GreedySelector",
    "MaxDNNSelector",
    "NSGAResult",
    "NSGASelector",
    "RandomSearchSelector",
    "RetrainReport",
    "SearchSelection",
    "UniformSelector",
    "approximation_levels",
    "member_labels",
    "paper_evaluations",
    "repair_to_budget",
    "retrain",
]

"""Shared pieces of the baselines: a model's selection problem, applying a choice vector to a model, and the
validation accuracy of choice vectors with bit-exact emulation (serially, in worker processes on one machine,
or as Ray tasks on a cluster).

Choice vectors and :class:`~fames.method.problem.ModelProblem` are those of :mod:`fames.method.problem`.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.cluster import connect_ray
from fames.errors import FamesError
from fames.method.problem import ModelProblem, apply_choice
from fames.method.select import Selection, SelectionProblem
from fames.quant.convert import qlayers

START_METHODS = ("spawn", "fork", "forkserver")


@dataclass
class SearchSelection(Selection):
    """A :class:`Selection` found by a search that measured accuracy (``accuracy`` in % on its validation
    set; None when it searched on the estimate) after ``evaluations`` distinct candidate evaluations."""

    accuracy: float | None = None
    evaluations: int = 0


class Evaluator(Protocol):
    """Maps choice vectors ``(N, G)`` to validation accuracies ``(N,)`` in %."""

    def __call__(self, choices: np.ndarray) -> np.ndarray: ...


def member_labels(mp: ModelProblem) -> np.ndarray:
    """``(G, K)`` object array: the family member of every candidate, independent of its widths (family and
    parameters from its provenance, else its name without the ``_AxWs`` suffix); ``None`` for padding."""
    G, K = mp.problem.omega.shape
    out = np.full((G, K), None, dtype=object)
    for g, (n, _) in enumerate(mp.groups):
        for k, m in enumerate(mp.candidates[n]):
            out[g, k] = _member(m)
    return out


def _member(m: AppMul) -> str:
    if m.is_exact():
        return "exact"
    prov = getattr(m, "provenance", None) or {}
    if "family" in prov and "params" in prov:
        return prov["family"] + "(" + ", ".join(f"{k}={v}" for k, v in sorted(prov["params"].items())) + ")"
    return re.sub(r"_\d+x\d+[su]*$", "", m.name)


# ---------------------------------------------------------------------------------------------- accuracy
class CandidateWorker:
    """Accuracy (%) of one choice on a fixed validation set ``x (N, C, H, W)``, ``y (N,)``.

    With ``retrain`` (MARLIN style), a copy of the model is first fine-tuned with :func:`fames.train.train`
    on ``retrain_data`` (a list of ``(x, y)`` batches) with its AppMuls in the loop. Without retraining the
    layers emulate by gathering from the LUTs (``gather_only``): a candidate is used for one evaluation, so
    factorizing its tables would cost more than it saves (~5x for 8-bit tables). Picklable: this is what
    worker processes and Ray tasks receive.
    """

    def __init__(
        self,
        model: nn.Module,
        mp: ModelProblem,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 500,
        retrain: Any = None,
        retrain_data: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise FamesError(f"validation set: {len(x)} images and {len(y)} labels (need equal, non-zero counts)")
        if retrain is not None and not retrain_data:
            raise FamesError("retraining each candidate (MARLIN style) needs retrain_data: a list of (x, y) batches")
        self.model, self.mp, self.x, self.y, self.batch_size = model, mp, x, y, batch_size
        self.retrain, self.retrain_data = retrain, list(retrain_data or [])

    def accuracy(self, choice: np.ndarray) -> tuple[float, float]:
        """``(accuracy %, seconds)`` of ``choice (G,)``."""
        from fames.train import evaluate, train

        t0 = time.perf_counter()
        model = copy.deepcopy(self.model) if self.retrain is not None else self.model
        apply_choice(model, self.mp, choice)
        if self.retrain is not None:
            train(model, self.retrain_data, self.retrain, progress=False)
        layers = [m for _, m in qlayers(model)]
        saved = [m.gather_only for m in layers]
        bs = self.batch_size
        batches = [(self.x[i : i + bs], self.y[i : i + bs]) for i in range(0, len(self.x), bs)]
        try:
            for m in layers:
                m.gather_only = self.retrain is None
            acc = evaluate(model, batches, progress=False)["accuracy"]
        finally:
            for m, g in zip(layers, saved, strict=True):
                m.gather_only = g
        return acc, time.perf_counter() - t0


_WORKER: CandidateWorker | None = None


def _init_worker(worker: CandidateWorker, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = worker


def _worker_accuracy(choice: np.ndarray) -> tuple[float, float]:
    assert _WORKER is not None, "worker process not initialized"
    return _WORKER.accuracy(choice)


def _ray_accuracy(worker: CandidateWorker, choice: np.ndarray, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    return worker.accuracy(choice)


@dataclass
class AccuracyEvaluator:
    """Validation accuracy of choice vectors, memoized by choice (a search never pays twice for one).

    ``workers`` > 1 evaluates in that many local processes (``start_method``; ``threads`` torch threads
    each); ``ray_address`` (``"auto"``, ``"local"`` or ``host:port``) sends each evaluation to Ray as a task
    instead, so the same command scales out to a cluster (needs ``pip install 'fames[ray]'``).
    ``seconds`` sums the per-evaluation times measured inside the workers (CPU-bound seconds of work).
    """

    worker: CandidateWorker
    workers: int = 1
    threads: int = 1
    start_method: str = "spawn"
    ray_address: str | None = None
    cache: dict[tuple[int, ...], float] = field(default_factory=dict)
    seconds: float = 0.0
    _pool: Any = field(default=None, repr=False)
    _ray: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise FamesError(f"workers={self.workers}: need at least 1")
        if self.start_method not in START_METHODS:
            raise FamesError(f"start_method {self.start_method!r} is not one of {START_METHODS}")

    @property
    def evaluations(self) -> int:
        return len(self.cache)

    def __call__(self, choices: np.ndarray) -> np.ndarray:
        """Accuracies (%) ``(N,)`` of ``choices (N, G)``."""
        choices = np.atleast_2d(np.asarray(choices, dtype=np.int64))
        keys = [tuple(c.tolist()) for c in choices]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if todo:
            for k, (acc, secs) in zip(todo, self._map([np.array(k) for k in todo]), strict=True):
                self.cache[k] = acc
                self.seconds += secs
        return np.array([self.cache[k] for k in keys])

    def _map(self, choices: list[np.ndarray]) -> list[tuple[float, float]]:
        if self.ray_address is not None:
            return self._map_ray(choices)
        if self.workers == 1 or len(choices) == 1:
            return [self.worker.accuracy(c) for c in choices]
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context(self.start_method),
                initializer=_init_worker,
                initargs=(self.worker, self.threads),
            )
        return list(self._pool.map(_worker_accuracy, choices))

    def _map_ray(self, choices: list[np.ndarray]) -> list[tuple[float, float]]:
        if self._ray is None:
            ray = connect_ray(self.ray_address, "--ray-address")
            task = ray.remote(num_cpus=self.threads)(_ray_accuracy)
            self._ray = (ray, task, ray.put(self.worker))
        ray, task, ref = self._ray
        return ray.get([task.remote(ref, c, self.threads) for c in choices])

    def close(self) -> None:
        """Stop the worker processes (the Ray connection is left to its owner)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> AccuracyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def choose_best(
    problem: SelectionProblem,
    choices: np.ndarray,
    score: np.ndarray,
    ratio: float,
    solver: str,
    seconds: float,
    accuracy: np.ndarray | None = None,
    evaluations: int = 0,
) -> SearchSelection | None:
    """Among ``choices (N, G)`` within energy ratio ``ratio``, the one with the highest ``score (N,)``
    (ties: the lowest energy); None when none is within the budget."""
    ratios = np.array([problem.evaluate(c)[1] for c in choices])
    ok = np.where(ratios <= ratio + 1e-9)[0]
    if not len(ok):
        return None
    best = ok[np.lexsort((ratios[ok], -np.asarray(score)[ok]))[0]]
    om, r = problem.evaluate(choices[best])
    acc = None if accuracy is None else float(accuracy[best])
    return SearchSelection(choices[best].copy(), r, ratio, om, seconds, solver, "feasible", acc, evaluations)

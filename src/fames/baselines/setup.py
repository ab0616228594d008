"""One model set up for side-by-side comparisons: the exact quantized model, its costed library and
candidates, MACs and exact costs (what ``fames run`` prepares), plus fixed image sets for search and test."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.baselines.evaluate import ModelProblem, build_problem
from fames.pipeline import RunConfig, _loader, _sample_batch, prepare_library, prepare_model
from fames.quant.convert import qlayers


@dataclass
class Setup:
    """``model`` (exact mode), ``library``, ``candidates[layer]`` (every AppMul of the layer's widths),
    ``macs[layer]`` per inference and ``exact_cost[widths]`` energy per op (fJ) of the exact multiplier."""

    cfg: RunConfig
    model: nn.Module
    library: list[AppMul]
    candidates: dict[str, list[AppMul]]
    macs: dict[str, int]
    exact_cost: dict[tuple[int, int, bool, bool], float]

    def problem(self, omega: dict[str, np.ndarray]) -> ModelProblem:
        return build_problem(
            self.model,
            omega,
            self.candidates,
            self.macs,
            self.exact_cost,
            self.cfg.energy_metric,
            self.cfg.granularity,
        )

    def train_images(self, n: int, seed_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random training images and labels (``seed_offset`` draws a different, fixed set)."""
        return _sample_batch(dataclasses.replace(self.cfg, seed=self.cfg.seed + seed_offset), n)

    def test_images(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` test images (all when None): a fixed random subset (``cfg.seed``), since the test split may be
        stored sorted by class."""
        xs, ys, have = [], [], 0
        for x, y in _loader(self.cfg, "test", self.cfg.batch_size, shuffle=True):
            xs.append(x)
            ys.append(y)
            have += len(y)
            if n is not None and have >= n:
                break
        return torch.cat(xs)[:n], torch.cat(ys)[:n]


def load_setup(cfg: RunConfig, progress: bool = True) -> Setup:
    """Model, costed library and candidates of ``cfg`` (:func:`fames.pipeline.prepare_model` /
    :func:`~fames.pipeline.prepare_library`)."""
    from fames.energy import exact_costs, layer_macs

    model, _ = prepare_model(cfg, progress)
    layers = qlayers(model)
    lib = prepare_library(cfg, {m.widths for _, m in layers}, progress)
    cands = {n: [m for m in lib if m.widths == layer.widths] for n, layer in layers}
    x, _ = next(iter(_loader(cfg, "test", 1)))
    return Setup(cfg, model, lib, cands, layer_macs(model, tuple(x.shape[1:])), exact_costs(lib, cfg.energy_metric))

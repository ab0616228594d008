"""``fames run CONFIG.yaml`` (Python: ``fames.run(config)``): load the model and data a :class:`RunConfig` names,
run :func:`fames.approximate_` with every stage kept in ``<output>/stages`` (keyed by content, so an interrupted
run resumes and a changed input is recomputed), and write the report, plots, assignments and models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fames.flow.approximate import FamesResult, approximate_
from fames.flow.config import RunConfig
from fames.flow.inputs import load_inputs
from fames.flow.stages import Stages


def as_run_config(cfg: RunConfig | dict[str, Any] | str | Path) -> RunConfig:
    """A :class:`RunConfig` from itself, a mapping or a YAML file."""
    if isinstance(cfg, RunConfig):
        return cfg
    return RunConfig.from_file(cfg) if isinstance(cfg, (str, Path)) else RunConfig.from_dict(cfg)


def run(cfg: RunConfig | dict[str, Any] | str | Path, progress: bool = True) -> FamesResult:
    """Run FAMES as configured; writes ``<output>/report.md`` and the rest, returns the result."""
    cfg = as_run_config(cfg)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    inputs = load_inputs(cfg, progress)
    result = approximate_(
        inputs.model, inputs.samples, cfg.library, cfg, eval_data=inputs.test, liberty=cfg.liberty,
        families=cfg.families, stages=Stages(out / "stages"), float_accuracy=inputs.float_accuracy,
        progress=progress,
    )
    result.model_name = cfg.model
    result.config = cfg
    result.timings["total_s"] = time.perf_counter() - t0
    result.save(out, per_budget=True)
    return result

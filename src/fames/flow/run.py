"""``fames run CONFIG.yaml`` (Python: ``fames.run(config)``): load the model and data a :class:`RunConfig` names,
run :func:`fames.approximate_` with every stage kept in ``<output>/stages`` (keyed by content, so an interrupted
run resumes and a changed input is recomputed), and write the report, plots, assignments and models."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from fames.errors import FamesError
from fames.flow.approximate import FamesResult, approximate_, headline
from fames.flow.config import RunConfig
from fames.flow.inputs import load_inputs
from fames.flow.outdir import check_output
from fames.flow.stages import Stages
from fames.io import atomic_write_text


def as_run_config(cfg: RunConfig | dict[str, Any] | str | Path) -> RunConfig:
    """A :class:`RunConfig` from itself, a mapping or a YAML file."""
    if isinstance(cfg, RunConfig):
        return cfg
    return RunConfig.from_file(cfg) if isinstance(cfg, (str, Path)) else RunConfig.from_dict(cfg)


def run(cfg: RunConfig | dict[str, Any] | str | Path, progress: bool = True, force: bool = False) -> FamesResult:
    """Run FAMES as configured; writes ``<output>/report.md`` and the rest, returns the result.

    The output folder is locked while the run writes (a second run on it fails at once, naming the holder); a
    folder holding files fames did not write is refused unless ``force``; files of an earlier run in the folder that
    this run does not write again (e.g. ``model_R0.5.pt`` of a budget no longer swept) are removed, so the folder
    never mixes runs. ``run.json`` records the content keys of the inputs and the files written."""
    from filelock import FileLock, Timeout

    cfg = as_run_config(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.output)
    if isinstance(cfg.library, str) and Path(cfg.library).resolve() == (out / "library").resolve():
        raise FamesError(f"library: {cfg.library} is this run's own output library, which the run replaces with its "
                         "candidates (designs of other widths would be lost): copy it to another folder and name "
                         "that one")
    check_output(out, force)  # now, not after the work
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".fames-run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = (out / ".fames-run.pid").read_text().strip() if (out / ".fames-run.pid").is_file() else "?"
        raise FamesError(f"output folder {out} is in use by another fames run (pid {holder}); wait for it to finish "
                         "or choose another output") from None
    try:
        atomic_write_text(out / ".fames-run.pid", f"{os.getpid()}\n")
        results = []
        for seed in cfg.seeds or [cfg.seed]:  # the first seed's run is the one reported and saved
            c = dataclasses.replace(cfg, seed=seed)
            torch.manual_seed(seed)
            inputs = load_inputs(c, progress)
            results.append(approximate_(
                inputs.model, inputs.samples, c.library, c, eval_data=inputs.test, liberty=c.liberty,
                families=c.families, stages=Stages(out / "stages"), float_accuracy=inputs.float_accuracy,
                progress=progress, synth=c.synth,
            ))
        result = results[0]
        if cfg.seeds:
            result.seed_runs = [headline(r, s) for s, r in zip(cfg.seeds, results, strict=True)]
        result.model_name = cfg.model
        result.config = dataclasses.replace(cfg, seed=(cfg.seeds or [cfg.seed])[0])
        result.timings["total_s"] = time.perf_counter() - t0 + result.timings.get("reused_s", 0.0)
        result.save(out, per_budget=True, force=True, record={"config": result.to_dict()["config"],
                                                               "inputs": result.keys})
    finally:
        (out / ".fames-run.pid").unlink(missing_ok=True)  # (the lock file stays: removing it would race a waiter)
        lock.release()
    return result

"""``fames.approximate_``: FAMES on any quantized model, in one call.

    fames.quantize(model, "W4A4"); fames.calibrate_ptq(model, loader)
    result = fames.approximate_(model, loader, library="generate", config=fames.FamesConfig(budget=0.7))

Steps: the candidate AppMuls of every layer's widths (costed) -> estimate Omega on ``estimator.samples`` training
images -> per budget R: ILP selection, calibration with the AppMuls in the loop (undone when it loses accuracy on
held-out training images), optional control-variate compensation, accuracy on ``eval_data`` -> the cheapest budget
within ``max_accuracy_loss`` points of the exact quantized model is put into ``model`` (in place).

Every stage can be kept in a :class:`~fames.flow.stages.Stages` folder, keyed by the content of what it reads:
the model's tensors, the candidates' tables and costs, the images, and the config fields of that stage.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fames.allocator import keep_freed_memory
from fames.appmul.core import AppMul
from fames.appmul.library import Library
from fames.errors import FamesError
from fames.flow.config import DEFAULT_VALIDATION_IMAGES, FamesConfig, SearchConfig
from fames.flow.handoff import without_circuit
from fames.flow.library import candidate_appmuls, liberty_path, synth_operand_weights
from fames.flow.sources import (
    DatasetSamples,
    Samples,
    as_samples,
    batches_hash,
    eval_batches,
    holdout,
    shared_images,
    tensors_hash,
)
from fames.flow.stages import Stages
from fames.flow.stats import Z95, paired_difference, wilson_interval
from fames.hw.cost import liberty_hash
from fames.io import content_hash
from fames.method.assignment import current_assignment, substitute
from fames.method.calibrate import STALE_CORRECTIONS, calibrate
from fames.method.compensate import compensate_model, model_overhead
from fames.method.compensate.bias import set_live
from fames.method.energy import MAC_SAMPLES
from fames.method.estimate import compensated_candidates, make_estimator, true_loss_changes
from fames.method.finetune import finetune
from fames.method.problem import ModelProblem, ModelSetup, apply_choice
from fames.method.select import ILPSelector, InfeasibleBudget, feasible_at
from fames.models import save_checkpoint
from fames.quant.convert import expect_plain_module, float_layers, qlayers
from fames.train import check_fits, evaluate

ESTIMATE_VERSION = "3"  # changes with the estimators' numerics, so that a stored estimate of older code is redone
PROBE_IMAGES = 1000  # evaluation images whose logits feed the output-difference histograms


@dataclass
class BudgetRow:
    """The outcome at one energy ratio ``budget``; energies in fJ per inference, accuracies in %."""

    budget: float
    infeasible: bool = False
    min_ratio: float | None = None
    message: str | None = None
    relative_energy: float | None = None
    energy_reduction: float | None = None
    energy_fj: float | None = None
    exact_energy_fj: float | None = None
    accuracy_uncalibrated: float | None = None
    accuracy_before_compensation: float | None = None
    accuracy: float | None = None
    compensated_layers: list[str] = field(default_factory=list)
    compensation_overhead_fj: float = 0.0
    compensation_kept: bool | None = None  # the compensation's guard kept it (None: no compensation fitted)
    select_s: float = 0.0
    calibrate_s: float = 0.0  # calibration and fine-tuning together
    finetune_s: float = 0.0  # of which fine-tuning
    calibration_kept: bool = False
    calibration_skipped: bool = False  # target mode: within the bound before calibration, so not calibrated here
    beyond_reach: bool = False  # target mode: too far below the bound before calibration to calibrate
    granularity_used: str | None = None  # "layer" where the layer-level fallback beat the finer selection
    accuracy_finer: float | None = None  # with the fallback: the finer selection's accuracy before calibration
    ilp_status: str | None = None
    within_bound: bool | None = None  # by the run's criterion (the search's: with its margin of standard errors)
    stage_s: float = 0.0  # wall time of this budget's stage (select, apply, evaluate, calibrate)
    accuracy_ci95: list[float] | None = None  # Wilson interval of ``accuracy`` on the evaluation images
    paired_difference: dict[str, Any] | None = None  # vs the exact quantized model on the same images (points)
    assignment: dict[str, Any] = field(default_factory=dict)
    per_layer_energy: dict[str, dict[str, float]] = field(default_factory=dict)
    output_difference: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetRow:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FamesResult:
    """What :func:`approximate_` found: one :class:`BudgetRow` per budget, the headline ``best``, and what the
    report needs. ``save(out)`` writes report.json/.md, plots, assignment.json, model.pt, library/ and the hand-off
    for hardware (hardware.json, hardware.npz, hardware_tables/). Accuracies
    (rows, ``accuracy``, ``exact_accuracy``) are on the data budgets are judged on: ``eval_data``, or the validation
    split in the target mode, whose test figures are in ``test``."""

    rows: list[BudgetRow]
    best: BudgetRow
    exact_accuracy: float
    float_accuracy: float | None
    layers: list[dict[str, Any]]
    library: list[AppMul]
    config: FamesConfig
    estimator: str
    spearman: float | None
    scatter: dict[str, Any] | None
    timings: dict[str, float]
    model: nn.Module
    model_name: str = "model"
    liberty: str = "synthetic"
    within_bound: bool = True
    keys: dict[str, str] = field(default_factory=dict)  # content keys of the inputs: model, library, samples, eval
    exact_correct: list[int] = field(default_factory=list, repr=False)  # per evaluation image, exact model
    test: dict[str, Any] | None = None  # target mode: the chosen model evaluated once on the test data
    seed_runs: list[dict[str, Any]] | None = None  # headline of every seed of a repeated run (fames.run seeds)
    states: dict[float, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    float_macs: dict[str, Any] = field(default_factory=dict)  # see float_mac_report

    @property
    def assignment(self) -> dict[str, Any]:
        """Layer -> AppMul name (or a filter/kernel spec) of the headline budget."""
        return self.best.assignment

    @property
    def energy_reduction(self) -> float:
        """1 - multiplier energy / exact multiplier energy at the headline budget."""
        return float(self.best.energy_reduction)

    @property
    def accuracy(self) -> float:
        """Accuracy (%) of the headline model on the data budgets are judged on: ``eval_data``, or in the target
        mode (``budget="search"``) the validation split; the test figures of that mode are in ``test``."""
        return float(self.best.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """The report (``report.json``)."""
        b = self.best
        return {
            "config": _config_dict(self.config),
            "model": self.model_name,
            "quant": getattr(self.model, "fames_quant_config", None),
            "layers": self.layers,
            "float_layers": float_layers(self.model),
            "without_circuit": without_circuit(b.assignment, self.library),
            "float_macs": self.float_macs,
            "library": {"size": len(self.library), "liberty": self.liberty,
                        "energy_metric": self.config.selection.energy_metric},
            "accuracy": {
                "float": self.float_accuracy,
                "exact_quant": self.exact_accuracy,
                "approx_uncalibrated": b.accuracy_uncalibrated,
                "approx": b.accuracy,
            },
            "accuracy_ci95": b.accuracy_ci95,
            "paired_difference": b.paired_difference,
            "eval_images": len(self.exact_correct) if self.exact_correct else None,
            "relative_energy": b.relative_energy,
            "energy_reduction": b.energy_reduction,
            "chosen_on": "validation" if self.test else "evaluation data",
            "seeds": _spread(self.seed_runs) if self.seed_runs else None,
            "test": self.test,
            "budget": b.budget,
            "within_bound": self.within_bound,
            "estimator": self.estimator,
            "estimator_spearman": self.spearman,
            "timing": {**self.timings, "select_s": b.select_s, "calibrate_s": b.calibrate_s,  # the headline's
                       "finetune_s": b.finetune_s,
                       "calibrate_all_s": sum(r.calibrate_s for r in self.rows if not r.infeasible)},
            "assignment": b.assignment,
            "runs": [asdict(r) for r in self.rows],
            "estimator_scatter": self.scatter,
        }

    def report(self) -> str:
        """The Markdown report (a Table III with the headline first)."""
        from fames.flow.report import markdown

        return markdown(self.to_dict())

    def save(self, out: str | Path, per_budget: bool = False, force: bool = False,
             record: dict[str, Any] | None = None) -> list[Path]:
        """Write the report, plots, ``assignment.json``, ``model.pt`` (headline), ``library/`` and the hand-off for
        hardware (``hardware.json``, ``hardware.npz``, ``hardware_tables/``: :mod:`fames.flow.handoff`) into ``out``
        (every file atomically); with ``per_budget`` also ``model_R*.pt`` and ``assignment_R*.json``. Returns the
        paths written, ``out/report.md`` first. A folder holding files fames did not write is refused unless
        ``force``; output files of an earlier result there that this one does not write again are removed;
        ``run.json`` lists the files (and ``record``, e.g. the content keys of a run's inputs)."""
        from fames.flow.handoff import write_handoff
        from fames.flow.outdir import check_output, finish_output, start_output
        from fames.flow.report import write_report
        from fames.method.assignment import save_assignment

        out = Path(out)
        previous = check_output(out, force)
        out.mkdir(parents=True, exist_ok=True)
        start_output(out, previous)
        written = [(lib := Library(self.library)).save(out / "library")]
        rows = [r for r in self.rows if not r.infeasible] if per_budget else []
        for suffix, r in [(f"_R{r.budget:g}", r) for r in rows] + [("", self.best)]:
            written.append(save_assignment({"format": "fames-assignment", "layers": r.assignment},
                                           out / f"assignment{suffix}.json", lib))
            meta = {"quant": getattr(self.model, "fames_quant_config", None), "accuracy": r.accuracy,
                    "assignment": f"assignment{suffix}.json"}
            if (data := getattr(self.config, "data", None)) is not None:  # a `fames run`: `fames eval` defaults to it
                meta.update(run_dataset=data.dataset, run_model=self.config.model, run_channels=data.channels)
            written.append(save_checkpoint(self.model, out / f"model{suffix}.pt", meta=meta,
                                           state_dict=self.states[r.budget], require_arch=False))
        # the headline as hardware builds it: per layer its design(s), quantization parameters and weight codes
        restore(head := copy.deepcopy(self.model), self.states[self.best.budget], self.best.assignment, lib)
        written += write_handoff(head, self.best.assignment, lib, out, self.best.per_layer_energy,
                                 self.config.selection.energy_metric)
        if missing := without_circuit(self.best.assignment, self.library):
            warnings.warn(f"the headline uses {', '.join(missing)}, known only by their tables: no Verilog to build "
                          "them (hardware_tables/ holds truth-table modules) and no costs of a circuit; import their "
                          "Verilog (fames lib import) to build and cost them like the others", stacklevel=2)
        written = write_report(self.to_dict(), out) + written
        finish_output(out, previous, written, record)
        return written


def headline(result: FamesResult, seed: int) -> dict[str, Any]:
    """The numbers of ``result`` that a repeated run compares across seeds (test figures in the target mode)."""
    t = result.test or {}
    pd = t.get("paired_difference") or result.best.paired_difference or {}
    return {"seed": seed, "budget": result.best.budget, "energy_reduction": result.energy_reduction,
            "accuracy": t.get("accuracy", result.accuracy), "paired_points": pd.get("points")}


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (n - 1), min and max of the headline numbers over seeds."""
    out: dict[str, Any] = {"runs": runs}
    for key in ("energy_reduction", "accuracy", "paired_points", "budget"):
        v = np.array([r[key] for r in runs if r[key] is not None], dtype=float)
        if v.size:
            out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                        "min": float(v.min()), "max": float(v.max())}
    return out


def _config_dict(cfg: FamesConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


# ---------------------------------------------------------------------------------------------- keys
def model_key(model: nn.Module) -> str:
    """Content key of a model: every tensor of its state dict, its quantization config and its code: the module tree
    as printed and the source of every module class outside torch (a model differing only in its forward, e.g.
    average for max pooling, was served the other's figures from the cache)."""
    sd = model.state_dict()
    code = [repr(model), torch.__version__]
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: (c.__module__, c.__qualname__)):
        code.append(f"{cls.__module__}.{cls.__qualname__}")
        if not cls.__module__.startswith("torch."):
            try:
                code.append(inspect.getsource(cls))
            except (OSError, TypeError):  # no source kept (a notebook cell, exec): the methods' bytecode
                code += [f"{k}:{f.__code__.co_code.hex()}:{[c for c in f.__code__.co_consts if not inspect.iscode(c)]}"
                         for k, f in sorted(vars(cls).items()) if hasattr(f, "__code__")]
    return content_hash(tensors_hash(*sd.values()), json.dumps(list(sd)),
                        json.dumps(getattr(model, "fames_quant_config", None), sort_keys=True, default=str), *code)


def appmuls_key(appmuls: list[AppMul], costs: bool = True) -> str:
    """Content key of AppMuls: names, tables and (unless not ``costs``) cost records."""
    parts: list[bytes | str] = []
    for m in appmuls:
        parts += [m.name, m.signature(), np.ascontiguousarray(m.lut).tobytes()]
        if costs:
            parts.append(json.dumps(None if m.cost is None else m.cost.to_dict(), sort_keys=True, default=str))
    return content_hash(*parts)


# settings that change what is printed, or which budgets are measured, not what one budget computes
UNKEYED_FIELDS = {"solver_output", "stop_at_loss"}


def _fields_key(*objs: Any) -> str:
    def fields(o: Any) -> Any:
        if not hasattr(o, "__dataclass_fields__"):
            return o
        return {k: v for k, v in asdict(o).items() if k not in UNKEYED_FIELDS}

    return content_hash(*(json.dumps(fields(o), sort_keys=True, default=str) for o in objs))


# ---------------------------------------------------------------------------------------------- the verb
def approximate_(
    model: nn.Module,
    data: Any,
    library: Any = "generate",
    config: FamesConfig | None = None,
    *,
    eval_data: Any = None,
    liberty: str | Path = "synthetic",
    families: tuple[str, ...] | list[str] = ("all",),
    stages: Stages | None = None,
    float_accuracy: float | None = None,
    progress: bool = True,
    synth: Any = None,
) -> FamesResult:
    """Put the cheapest AppMul assignment within the loss bound into ``model`` (in place) and return the result.

    ``model``: an ``nn.Module`` quantized by :func:`fames.quantize` (exact mode); ``data``: training images (a
    DataLoader or iterable of ``(x, y)``, a pair of tensors, or :class:`~fames.flow.sources.Samples`) for the
    estimate and the calibration; ``library``: ``"generate"``, ``"evoapprox"``, ``"synth"``, ``"generate+synth"``, a
    directory, a ``Library`` or a list of AppMuls (the exact multiplier of each width is added); ``eval_data``:
    images the accuracies are measured on (default: a fifth of ``data``, at most 1,000 images, held out from the
    estimate and the calibration); ``liberty``: cell library for
    designs without a cost; ``synth``: a :class:`~fames.flow.config.SynthOptions` for the synthesized libraries.
    Sets glibc's allocator to keep freed memory for the rest of the process (:mod:`fames.allocator`; ``FAMES_MALLOC=0``
    in the environment leaves it alone).
    """
    t_all = time.perf_counter()
    keep_freed_memory()  # large activations reuse heap memory instead of faulting in fresh pages
    cfg = config or FamesConfig()
    if not isinstance(cfg, FamesConfig):
        raise FamesError(f"config must be a fames.FamesConfig, not {type(cfg).__name__}")
    expect_plain_module(model, "approximate_")
    layers = qlayers(model)
    if not layers:
        raise FamesError("the model has no quantized layer: call fames.quantize(model, 'W4A4') and "
                         "fames.calibrate_ptq(model, data) first")
    approx = [n for n, m in layers if m.mode == "approx"]
    if approx:  # its accuracy would be taken for the exact model's
        raise FamesError(
            f"the model already computes with AppMuls in {len(approx)} layer(s) ({', '.join(approx[:3])}"
            f"{', ...' if len(approx) > 3 else ''}), e.g. from an earlier fames.approximate_, which also calibrates "
            "in place: start from the exact quantized model (keep a copy.deepcopy(model) before approximating), or "
            "call fames.quant.set_mode(model, 'exact') to take its current state as the exact model")
    kept_float = [n for n, m in layers if m.mode == "float"]
    if kept_float:  # the selection would give them multipliers and the exact model's figures would not be theirs
        raise FamesError(
            f"layers {kept_float[:5]} are quantized but set to float mode: approximate_ selects for every quantized "
            "layer; to keep a layer float, leave it out of the quantization (its bits None in the config's "
            "`layers`), or call fames.quant.set_mode(model, 'exact') to quantize it")
    families = (families,) if isinstance(families, str) else tuple(families)  # "trunc" is one family
    if not families:
        raise FamesError("families=() leaves no generated design; name families (fames lib families lists them) or "
                         "leave the argument out for all")
    stages = stages or Stages(None)
    est_cfg, sel_cfg, cal_cfg = cfg.estimator, cfg.selection, cfg.calibration
    searching = cfg.searching
    record = (getattr(model, "checkpoint_meta", None) or {}).get("holdout")
    samples: Samples = as_samples(data, limit=max(est_cfg.samples, _calibration_count(cfg), _finetune_count(cfg)) * 2
                                  + PROBE_IMAGES + (_validation_count(cfg, record) if searching else 0))
    if searching and record and not isinstance(samples, DatasetSamples):
        warnings.warn(f"the checkpoint records {record.get('n')} held-out training images, but the data is not a "
                      "registered dataset's train split fames can index: the validation split is a random draw of the "
                      "data, which the checkpoint may have trained on (the report says so); to validate on the "
                      "held-out images give data=fames.flow.sources.DatasetSamples(fames.data.get_dataset(NAME, "
                      "'train')), or use `fames run`", stacklevel=2)
    samples, val = split_samples(samples, cfg, record)
    if eval_data is None:
        samples, eval_data = _default_eval(samples, cfg)
    validation_source = "" if val is None else (
        f"held out from the checkpoint's training, but not from that of its --init {record['seen_by_init']}"
        if record and record.get("seen_by_init") and isinstance(samples, DatasetSamples)
        else "held out from the checkpoint's training" if record and isinstance(samples, DatasetSamples)
        else "training data the checkpoint may have seen")
    if est_cfg.samples > len(samples):
        raise FamesError(f"the estimate needs estimator.samples={est_cfg.samples} training images but the data holds "
                         f"{len(samples)}: give more data or lower it (FamesConfig(estimator=EstimatorConfig("
                         f"samples={len(samples)})), or `estimator: {{samples: {len(samples)}}}` in a run config)")
    x, y = samples.draw(est_cfg.samples, cfg.seed)
    check_fits(model, x[:2], y[:2])
    cx, cy = calibration_draw(samples, cfg)
    tune = finetune_draw(samples, cfg)
    # judges a calibration: the validation split in the target mode, else as many training images again, the next
    # ones of the calibration's own seeded order (a draw is a prefix of it), so never the images it was fitted on
    guarded = cfg.calibration is not None or cfg.finetune is not None or sel_cfg.compensation != "none"
    hx, hy = val if val is not None else guard_draw(samples, cfg, cx) if guarded else (cx[:0], cy[:0])
    test = eval_batches(eval_data)
    if shared := shared_images(test, [x, cx]):
        warnings.warn(f"{shared} of the evaluation images are among the estimate's and calibration's training images "
                      "(eval_data the same data as data?): the accuracies are measured on images fitted to and look "
                      "better than they are; give held-out images as eval_data", stacklevel=2)
    judge = eval_batches(val) if val is not None else test  # the images every budget's accuracy is measured on
    probe = _head(judge, PROBE_IMAGES)
    model.eval()

    lib = candidate_appmuls(library, {m.widths for _, m in layers}, liberty, families, progress, synth,
                            synth_operand_weights(model, cx, synth))
    setup = ModelSetup.build(model, lib, x[:MAC_SAMPLES], sel_cfg.energy_metric)
    outside = float_mac_report(model, setup)
    if outside:
        shown = ", ".join(f"{k} {v:,}" for k, v in list(outside["modules"].items())[:4])
        warnings.warn(f"{100 * outside['share']:.1f}% of the model's multiply-accumulates run in floating point "
                      f"outside the quantized layers (no AppMul, outside the energy figures; MACs per inference): "
                      f"{shown}{', ...' if len(outside['modules']) > 4 else ''}", stacklevel=2)
    cands = setup.candidates
    mkey = model_key(model)
    lkey = appmuls_key([m for ms in cands.values() for m in ms])
    fkey = appmuls_key([m for ms in cands.values() for m in ms], costs=False)  # what the estimate reads
    skey, tkey = tensors_hash(x, y), batches_hash(test)
    jkey = batches_hash(judge) if val is not None else tkey
    exact = stages.json("exact", content_hash(mkey, jkey, "per-sample"),
                        lambda: evaluate(model, judge, progress, "eval exact", per_sample=True))

    # ------------------------------------------------------------------ estimate (and its validation)
    bias = sel_cfg.compensation == "bias"
    estimator = make_estimator(est_cfg.kind, progress, forward_above=est_cfg.forward_above,
                               curvature=est_cfg.curvature, bias_correction=bias,
                               measured_margin=est_cfg.measured_margin)
    measured = [f"margin={est_cfg.measured_margin!r}"] if est_cfg.kind == "measured" else []

    def estimate_key(granularity: str) -> str:
        return content_hash(mkey, fkey, skey, ESTIMATE_VERSION,
                            _fields_key(est_cfg.kind, est_cfg.forward_above, est_cfg.curvature, granularity,
                                        *(["bias"] if bias else []), *measured))

    def estimated(granularity: str) -> tuple[dict[str, np.ndarray], float, bool]:
        """``(Omega per layer, estimate seconds, computed now)`` at ``granularity``, a stage of its own."""
        fresh: list[bool] = []

        def compute() -> dict[str, np.ndarray]:
            fresh.append(True)
            est = estimator.estimate(model, x, y, cands, granularity=granularity)
            return {**est.omega, "__seconds__": np.array(est.seconds)}

        got = stages.arrays("estimate", estimate_key(granularity), compute)
        return {n: got[n] for n in cands}, float(got["__seconds__"]), bool(fresh)

    ekey = estimate_key(sel_cfg.granularity)
    omega, est_seconds, fresh = estimated(sel_cfg.granularity)
    reused_s = 0.0 if fresh else est_seconds  # total_s counts the time of stages an earlier invocation computed
    spearman, scatter = _validation(model, x, y, cands, omega, stages, content_hash(mkey, fkey, skey), progress) \
        if est_cfg.validate else (None, None)

    # ------------------------------------------------------------------ the selection problem
    liberty_file = str(liberty_path(liberty)) if sel_cfg.compensation in ("control_variate", "auto") else None
    if sel_cfg.compensation == "auto":  # candidates k >= K_l: the layer's AppMuls with their corrections
        pairs, c_omega, c_over = compensated_candidates(model, x, y, cands, estimator, liberty_file, setup.macs,
                                                        sel_cfg.energy_metric)
        omega = {n: np.concatenate([omega[n], c_omega[n]], 1) for n in cands}
        mp = setup.problem(
            omega, sel_cfg.granularity,
            candidates={n: cands[n] + [m for m, _ in pairs[n]] for n in cands},
            compensations={n: [None] * len(cands[n]) + [c for _, c in pairs[n]] for n in cands},
            overhead={n: np.concatenate([np.zeros(len(cands[n])), c_over[n]]) for n in cands},
        )
    else:
        mp = setup.problem(omega, sel_cfg.granularity)
    # the layer-level problem of the fallback: the layer-level estimate itself (a stage of its own), so that at every
    # budget the fallback is exactly the selection a layer-level run makes there
    coarse = setup.problem(estimated("layer")[0], "layer") \
        if sel_cfg.granularity != "layer" and sel_cfg.layer_fallback else None

    # ------------------------------------------------------------------ per budget
    def budget_key_base(sel: Any, estimate: str) -> str:  # a layer-level run of the same settings shares its stages
        if sel.granularity == "layer":  # the fallback to the layer level has nothing to do there
            sel = replace(sel, layer_fallback=True)
        guard = {"bias": "-live-guard", "control_variate": "-guard-energy", "auto": "-guard-energy"}
        return content_hash("v4" + guard.get(  # v4: exact stand-ins' energy, corrections in per-layer energy
                            sel.compensation, ""), estimate, lkey, jkey,
                            _fields_key(sel, cal_cfg, cfg.seed),
                            tensors_hash(cx, cy, hx, hy) if cal_cfg is not None or sel.compensation != "none"
                            else "", liberty_hash(liberty_file) if liberty_file else "", *_finetune_key(cfg, tune))

    budgets = sorted(cfg.budgets, reverse=True) if sel_cfg.stop_at_loss else cfg.budgets
    rows: list[BudgetRow] = []
    states: dict[float, dict[str, torch.Tensor]] = {}

    def measurer(ctx: _BudgetContext, base: str, kept: dict[float, dict[str, torch.Tensor]]):  # type: ignore[no-untyped-def]
        def measure(ratio: float, lazy: bool = False) -> BudgetRow:
            """The row of one budget (from its stage when there), its calibrated state kept in ``kept``. ``lazy``: a
            model already within the bound before calibration is not calibrated (the search's decision is the
            same)."""
            nonlocal reused_s
            # a lazy row has a key of its own, calibrated or not: a rerun's search then reads what the first one did
            # (it read the calibrated row of the chosen budget, measured after the search, and took another path)
            key = lazy_budget_key(base, ratio, cfg) if lazy else content_hash(base, repr(float(ratio)))
            row, state = stages.load_json("budget", key), stages.tensors("budget", key)
            if isinstance(row, dict) and (state is not None or row.get("infeasible")):
                reused_s += float(row.get("stage_s") or 0.0)
            else:
                row, state = ctx.run(ratio, exact["accuracy"] - cfg.max_accuracy_loss if lazy else None)
                stages.save_json("budget", key, row)
                if state is not None:
                    stages.save_tensors("budget", key, state)
            if state is not None:
                kept[float(ratio)] = state
            return BudgetRow.from_dict(row)
        return measure

    held = None if val is not None else (hx, hy)
    measure = measurer(_BudgetContext(model, setup, mp, judge, probe, (cx, cy), held, cfg, liberty_file, progress,
                                      exact["correct"], coarse, tune), budget_key_base(sel_cfg, ekey), states)

    def within_bound(r: BudgetRow) -> bool:  # target mode: with search.margin standard errors of the paired loss
        if not r.infeasible and r.energy_reduction is not None and r.energy_reduction <= 1e-12:
            return True  # nothing approximated: the exact model itself, whatever the interval of a paired difference
        se = _paired_se(r.paired_difference) if searching else 0.0
        return not r.infeasible and exact["accuracy"] - r.accuracy + cfg.search.margin * se <= cfg.max_accuracy_loss

    def calibrated_within(row: BudgetRow, measure_fn: Any, kept: dict[float, dict[str, torch.Tensor]]) -> BudgetRow:
        """The chosen ``row``, calibrated after all if the search skipped that (it was within the bound before), when
        the calibrated model is within the bound too: calibration can change which images are right and so widen
        the paired interval past the margin; else ``row`` as it was, uncalibrated."""
        if not row.calibration_skipped:
            return row
        before = kept[row.budget]
        calibrated = measure_fn(row.budget)
        if within_bound(calibrated) or not within_bound(row):
            return calibrated
        kept[row.budget] = before
        return row

    if searching:
        rows = _search(lambda r: measure(r, lazy=True), within_bound, mp.problem.min_ratio(), cfg.search)
    for ratio in budgets:
        if sel_cfg.stop_at_loss and any(not r.infeasible and not within_bound(r) for r in rows):
            break
        rows.append(measure(ratio))

    feasible = [r for r in rows if not r.infeasible]
    if not feasible:
        raise FamesError(f"every budget was infeasible: even the cheapest AppMuls use {rows[0].min_ratio:.6f} of the "
                         f"exact energy; choose budgets R >= {feasible_at(rows[0].min_ratio)}")
    within = [r for r in feasible if within_bound(r)]
    # none within the bound: the most accurate of the budgets measured (the user asked for approximation), named
    best = min(within, key=lambda r: (r.relative_energy, -r.accuracy)) if within else max(
        feasible, key=lambda r: -math.inf if r.accuracy is None else r.accuracy)
    if searching and coarse is not None:
        # the final choice between granularities on the validation split: the layer-level search (its stages are
        # those of a layer-level run with these settings, so after one it costs nothing) wins when it reaches less
        # energy within the bound; a finer granularity thus never ends below the layer level on validation
        layer_states: dict[float, dict[str, torch.Tensor]] = {}
        layer_sel = replace(sel_cfg, granularity="layer")
        measure_layer = measurer(_BudgetContext(model, setup, coarse, judge, probe, (cx, cy), held, replace(
            cfg, selection=layer_sel), liberty_file, progress, exact["correct"], tune=tune),
            budget_key_base(layer_sel, estimate_key("layer")), layer_states)
        got = [r for r in _search(lambda r: measure_layer(r, lazy=True), within_bound, coarse.problem.min_ratio(),
                                  cfg.search) if not r.infeasible and within_bound(r)]
        layer_best = min(got, key=lambda r: r.relative_energy) if got else None
        if layer_best is not None and (not within or layer_best.relative_energy < best.relative_energy - 1e-12):
            layer_best = calibrated_within(layer_best, measure_layer, layer_states)
            best = replace(layer_best, granularity_used="layer")
            rows.append(best)
            within.append(best)
            states, mp = {**states, best.budget: layer_states[best.budget]}, coarse
    if mp is not coarse:  # the chosen budget of this granularity's own search or list
        rows[rows.index(best)] = best = calibrated_within(best, measure, states)
    test_result = None
    if searching:  # the exact model on the test data (before the chosen assignment goes in)
        ex_test = stages.json("exact", content_hash(mkey, tkey, "per-sample"),
                              lambda: evaluate(model, test, progress, "eval exact (test)", per_sample=True))
    restore(model, states[best.budget], best.assignment,
            Library(list({m.name: m for ms in mp.candidates.values() for m in ms}.values())))
    if searching:  # the chosen model, once, on the test data
        got = evaluate(model, test, progress, "eval chosen (test)", per_sample=True)
        test_result = {
            "images": got["n"], "exact_accuracy": ex_test["accuracy"], "accuracy": got["accuracy"],
            "accuracy_ci95": list(wilson_interval(int(sum(got["correct"])), got["n"])),
            "paired_difference": paired_difference(ex_test["correct"], got["correct"]).to_dict(),
            "validation": {"images": len(val[1]), "source": validation_source},
        }
    if best.relative_energy > best.budget + 1e-9:  # only a control variate's accumulators can do that
        why = ("compensation 'control_variate' corrects every approximate layer after selection; with 'auto' the "
               "ILP weighs the overhead inside the budget" if sel_cfg.compensation == "control_variate" else
               "the ILP weighed it as estimated on the estimate's samples, the correction fitted after calibration "
               "costs more")
        warnings.warn(
            f"the control-variate overhead ({100 * best.compensation_overhead_fj / best.exact_energy_fj:.1f}% of the "
            f"exact energy) takes the total beyond the budget R = {best.budget:g}: {best.relative_energy:.3f} of the "
            f"exact energy ({why})", stacklevel=2)
    if not within:
        warnings.warn(
            f"no budget keeps the accuracy within {cfg.max_accuracy_loss:g} points of the exact quantized model "
            f"({exact['accuracy']:.2f}%): the model holds the most accurate one measured, R = {best.budget:g} at "
            f"{best.accuracy:.2f}%; try larger budgets or milder AppMuls (in Python, "
            "fames.quant.set_mode(model, 'exact') undoes it)",
            stacklevel=2)
    judged = {id(r): replace(r, within_bound=within_bound(r)) for r in rows + [best]}  # as the choice saw them
    rows, best = [judged[id(r)] for r in rows], judged[id(best)]
    return FamesResult(
        rows=rows, best=best, exact_accuracy=exact["accuracy"], float_accuracy=float_accuracy,
        layers=[{"name": n, "widths": list(m.widths), "macs": setup.macs[n]} for n, m in layers],
        float_macs=outside, library=lib, config=cfg, estimator=est_cfg.kind, spearman=spearman, scatter=scatter,
        timings={"estimate_s": est_seconds, "total_s": time.perf_counter() - t_all + reused_s,
                 "threads": torch.get_num_threads(),
                 "reused_s": reused_s}, model=model,
        liberty=str(liberty), within_bound=bool(within), states=states,
        keys={"model": mkey, "candidates": lkey, "samples": skey, "eval": tkey}, exact_correct=exact["correct"],
        test=test_result, model_name=type(model).__name__,  # (`fames run` names it after its config's model)
    )


def float_mac_report(model: nn.Module, setup: ModelSetup) -> dict[str, Any]:
    """``{"modules": {"name (Type)": MACs per inference}, "share": fraction of all MACs}`` of what the forward
    multiplies in floating point outside the quantized layers, largest first; ``{}`` when nothing."""
    if not setup.float_macs:
        return {}
    mods = dict(model.named_modules())
    rows = sorted(setup.float_macs.items(), key=lambda kv: -kv[1])
    total = sum(setup.float_macs.values())
    return {"modules": {f"{k or '(model)'} ({type(mods[k]).__name__ if k in mods else 'module'})": v for k, v in rows},
            "share": total / (total + sum(setup.macs.values()))}


def lazy_budget_key(base: str, ratio: float, cfg: FamesConfig) -> str:
    """Stage key of a budget row measured lazily (the search's: calibration skipped, or judged beyond reach, before
    calibrating, or calibrated when neither): both decisions depend on the bound (``max_accuracy_loss``,
    ``search.margin``) and ``search.calibrate_within``, so they are part of the key (a row skipped under a 4-point
    bound is no answer under a 1-point one)."""
    return content_hash(base, repr(float(ratio)), "lazy", repr(cfg.search.calibrate_within),
                        repr(float(cfg.max_accuracy_loss)), repr(float(cfg.search.margin)))


def _default_eval(samples: Samples, cfg: FamesConfig) -> tuple[Samples, Any]:
    """``(the rest, (x, y))``: evaluation images held out from the training ``samples`` when no ``eval_data`` is
    given, so that the estimate and the calibration never draw them: up to 1,000, a fifth of the data or what
    the calibration does not need, leaving the estimate's and fine-tuning's images. Data too small for that is
    evaluated on a draw the others may share, with a warning."""
    need = max(cfg.estimator.samples, _finetune_count(cfg))
    n = min(PROBE_IMAGES, max(len(samples) // 5, len(samples) - max(need, _calibration_count(cfg))),
            len(samples) - need)
    if n >= 1:
        return holdout(samples, n, cfg.seed + 2)
    warnings.warn(f"no eval_data, and the {len(samples)} training images are all needed by the estimate: accuracies "
                  "are measured on images it also uses; pass eval_data (a test split)", stacklevel=3)
    return samples, samples.draw(min(len(samples), PROBE_IMAGES), cfg.seed + 2)


def _calibration_count(cfg: FamesConfig) -> int:
    return cfg.calibration.samples if cfg.calibration is not None else 1024


def _validation_count(cfg: FamesConfig, record: Any) -> int:
    return cfg.search.validation_images or (int(record["n"]) if record else DEFAULT_VALIDATION_IMAGES)


def split_samples(samples: Samples, cfg: FamesConfig, record: Any = None) -> tuple[Samples, Any]:
    """``(training samples, validation split (x, y) or None)``: in the target mode the validation split that chooses
    R is held out (from the checkpoint's held-out images when ``record`` names them); nothing else is drawn from it."""
    if not cfg.searching:
        return samples, None
    n = _validation_count(cfg, record)
    need = max(cfg.estimator.samples, _calibration_count(cfg), _finetune_count(cfg))
    if cfg.search.validation_images is None and not record and len(samples) - n < need:
        # the default would leave too little to estimate and calibrate on: what they leave, at least a fifth
        n = min(n, max(len(samples) // 5, len(samples) - need, 1))
        warnings.warn(f"the search validates on {n} of the {len(samples)} training images given, not the default "
                      f"{DEFAULT_VALIDATION_IMAGES}: on so few, one standard error of the paired loss is large and the "
                      "search is conservative; give more data or set search.validation_images", stacklevel=3)
    return holdout(samples, n, cfg.seed, record)


def calibration_draw(samples: Samples, cfg: FamesConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The calibration images ``(x (N, C, H, W), y (N,))`` of a run: a seeded draw of the training samples."""
    return samples.draw(min(_calibration_count(cfg), len(samples)), cfg.seed)


def guard_draw(samples: Samples, cfg: FamesConfig, calib_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images that judge a calibration when there is no validation split, ``(x (M, ...), y (M,))``: up to as many
    training images as the calibration's ``calib_x`` (its seeded draw), the next ones of the same draw, so disjoint
    from them; data too small for that, or a ``Samples`` whose larger draw does not begin with its smaller one (the
    built-in ones do), is judged on images the calibration may share, with a warning."""
    calib_n = len(calib_x)
    m = min(calib_n, len(samples) - calib_n)
    if m < min(calib_n, 100):
        warnings.warn(f"the calibration takes {calib_n} of the {len(samples)} training images, leaving too few to "
                      "judge it on images it was not fitted on: its guard shares them (give more data, or fewer "
                      "calibration.samples)", stacklevel=3)
        return samples.draw(calib_n, cfg.seed + 1)
    x, y = samples.draw(calib_n + m, cfg.seed)
    if not torch.equal(x[:calib_n], calib_x):
        warnings.warn(f"{type(samples).__name__}.draw(n, seed) does not begin its larger draws with its smaller ones, "
                      "so the images that judge the calibration may include the calibration's own", stacklevel=3)
    return x[calib_n:], y[calib_n:]


def _finetune_count(cfg: FamesConfig) -> int:
    return cfg.finetune.samples if cfg.finetune is not None else 0


def finetune_draw(samples: Samples, cfg: FamesConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fine-tuning images ``(x (N, C, H, W), y (N,))`` of a run (a seeded draw of the training samples, never
    the validation split), None without fine-tuning. Fewer images than ``finetune.samples`` is an error, not a
    silently smaller run."""
    if cfg.finetune is None:
        return None
    if cfg.finetune.samples > len(samples):
        raise FamesError(f"finetune.samples={cfg.finetune.samples} but the training data holds {len(samples)} images "
                         f"(after the validation split): give more data or set `finetune: {{samples: {len(samples)}}}`")
    return samples.draw(cfg.finetune.samples, cfg.seed + 3)


def _finetune_key(cfg: FamesConfig, tune: tuple[torch.Tensor, torch.Tensor] | None) -> list[str]:
    """Stage-key parts of the fine-tuning (none without it, so runs without fine-tuning keep their stages)."""
    return [] if tune is None else ["finetune", _fields_key(cfg.finetune), tensors_hash(*tune)]


def _search(measure, within, min_ratio: float, search: SearchConfig) -> list[BudgetRow]:  # type: ignore[no-untyped-def]
    """Rows of the target mode's search, sorted by R: every R of ``search.grid`` (plus R = 1 when none of them is
    within the bound), else a bisection to ``search.resolution``."""
    if search.grid is None:
        return _bisect(measure, within, min_ratio, search.resolution)
    rows = [measure(r) for r in sorted(set(search.grid), reverse=True)]
    if not any(within(r) for r in rows) and 1.0 not in search.grid:
        rows.append(measure(1.0))
    return sorted(rows, key=lambda r: r.budget)


def _bisect(measure, within, min_ratio: float, resolution: float) -> list[BudgetRow]:  # type: ignore[no-untyped-def]
    """Rows of a bisection over R in [min_ratio, 1] for the smallest R within the bound, to ``resolution``: the
    cheapest feasible R first (done if it is within), then halving the interval between the largest R beyond the
    bound and the smallest within (R = 1, the exact multipliers, is within by definition)."""
    def grid(r: float) -> float:
        return round(round(r / resolution) * resolution, 6)

    lo = min(1.0, max(resolution, round(math.ceil(min_ratio / resolution - 1e-9) * resolution, 6)))
    rows = [measure(lo)]
    if within(rows[-1]):
        return rows
    hi, best = 1.0, None
    while hi - lo > resolution + 1e-9:
        mid = grid((lo + hi) / 2)
        if mid <= lo or mid >= hi:
            break
        row = measure(mid)
        rows.append(row)
        if within(row):
            hi, best = mid, row
        else:
            lo = mid
    if best is None:  # nothing below R = 1 held: the exact assignment
        rows.append(measure(1.0))
    return sorted(rows, key=lambda r: r.budget)


def _head(batches: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, have = [], 0
    for x, y in batches:
        if have >= n:
            break
        out.append((x[: n - have], y[: n - have]))
        have += len(out[-1][0])
    return out


def _validation(model, x, y, cands, omega, stages, key, progress):  # type: ignore[no-untyped-def]
    """Spearman rho between estimated and measured single-layer loss changes, and the scatter for the plot."""
    from scipy.stats import spearmanr

    true = stages.json(
        "true_loss", key, lambda: {n: v.tolist() for n, v in true_loss_changes(model, x, y, cands, progress).items()}
    )
    est_v = np.concatenate([omega[n].sum(0).ravel() for n in cands])
    tru_v = np.concatenate([np.asarray(true[n]).ravel() for n in cands])
    keep = np.isfinite(est_v) & np.isfinite(tru_v)
    spearman = float(spearmanr(est_v[keep], tru_v[keep])[0])
    return spearman, {"estimated": est_v.tolist(), "true": tru_v.tolist(),
                      "layer": [n for n in cands for _ in cands[n]]}


def restore(model: nn.Module, state: dict[str, torch.Tensor], assignment: dict[str, Any], library: Library) -> None:
    """Put a budget's calibrated tensors and AppMuls (names of ``library``) into ``model``; a layer assigned one exact
    design runs in exact mode (same integers, no emulation cost), a layer the assignment leaves out the reference
    exact multiplier."""
    model.load_state_dict(state)
    for n, layer in qlayers(model):
        if n not in assignment:
            layer.clear_assignment()
    substitute(model, {"layers": assignment}, library)


@dataclass
class _BudgetContext:
    """Everything one budget's stage reads; :meth:`run` returns ``(row dict, calibrated state dict)``."""

    model: nn.Module
    setup: ModelSetup
    mp: ModelProblem
    test: list
    probe: list
    calib: tuple[torch.Tensor, torch.Tensor]
    held_out: tuple[torch.Tensor, torch.Tensor] | None  # judges a calibration; None: the evaluation images
    cfg: FamesConfig
    liberty: str | None
    progress: bool
    exact_correct: list[int]
    coarse: ModelProblem | None = None  # the layer-level problem of the fallback (finer granularities)
    tune: tuple[torch.Tensor, torch.Tensor] | None = None  # the fine-tuning images (None: no fine-tuning)
    last_correct: list[int] = field(default_factory=list)  # 1/0 per image of the latest evaluation

    def evaluate(self, m: nn.Module, desc: str) -> float:
        """Accuracy (%) of ``m`` on the evaluation images, remembering which images it got right."""
        r = evaluate(m, self.test, self.progress, desc, per_sample=True)
        self.last_correct = r["correct"]
        return r["accuracy"]

    def _corrected(self, m: nn.Module) -> nn.Module:
        """``m`` with the bias correction of every approximate layer fitted on the calibration images (compensation
        ``bias``: what the estimate and the selection assumed), else ``m`` as it is."""
        if self.cfg.selection.compensation == "bias":
            compensate_model(m, self.calib[0], calibrated=True, method="bias")
        return m

    def run(self, ratio: float, floor: float | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """Row and calibrated state of budget ``ratio``; with ``floor`` (accuracy, %) a model at or above it before
        calibration is not calibrated (the calibration guard can only raise accuracy: the decision stands), nor one
        more than ``search.calibrate_within`` points below it."""
        t0 = time.perf_counter()
        row, state = self._run(ratio, floor)
        row["stage_s"] = time.perf_counter() - t0
        return row, state

    def _run(self, ratio: float, floor: float | None) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        cfg, progress = self.cfg, self.progress
        try:
            sel = ILPSelector(verbose=cfg.selection.solver_output).solve(self.mp.problem, ratio)
        except InfeasibleBudget as e:
            return asdict(BudgetRow(ratio, infeasible=True, min_ratio=e.min_ratio, message=str(e))), None
        mp = self.mp
        m = self._corrected(apply_choice(copy.deepcopy(self.model), mp, sel.choice))
        acc_u = self.evaluate(m, f"eval R={ratio}")
        hits_u = self.last_correct
        used, acc_finer = None, None
        if self.coarse is not None:  # the layer-level selection of the same budget, kept when more accurate
            sel_l = ILPSelector(verbose=cfg.selection.solver_output).solve(self.coarse.problem, ratio)
            m_l = self._corrected(apply_choice(copy.deepcopy(self.model), self.coarse, sel_l.choice))
            acc_l = self.evaluate(m_l, f"eval R={ratio} layer level")
            hits_l = self.last_correct
            used, acc_finer = cfg.selection.granularity, acc_u
            # the target mode compares as its bound does: accuracy less `margin` standard errors of the paired loss
            k = cfg.search.margin if cfg.searching else 0.0
            if acc_l - k * _paired_se(paired_difference(self.exact_correct, hits_l).to_dict()) > \
                    acc_u - k * _paired_se(paired_difference(self.exact_correct, hits_u).to_dict()):
                used, mp, sel, m, acc_u = "layer", self.coarse, sel_l, m_l, acc_l
                hits_u = self.last_correct
            else:
                self.last_correct = hits_u
        to_compensate = [n for n, q in qlayers(m) if q.compensation is not None]
        e, e_exact, per_layer = self.setup.energy(m)
        z_exact, z_unc = _logits(self.model, m, self.probe)
        acc_c, calib_s, tune_s, z_cal, calib_kept = acc_u, 0.0, 0.0, None, False
        held_acc = None  # held-out accuracy (%) of m as it stands, once measured
        margin = cfg.search.margin * _paired_se(paired_difference(self.exact_correct, hits_u).to_dict())
        # a step that can raise accuracy, when some layer is approximate (R = 1 can keep every layer exact)
        recovers = (cfg.calibration is not None or cfg.finetune is not None) and any(
            q.mode == "approx" for _, q in qlayers(m))
        skip = recovers and floor is not None and acc_u - margin >= floor
        out_of_reach = recovers and floor is not None and acc_u < floor - cfg.search.calibrate_within
        if recovers and not skip and not out_of_reach:
            t1 = time.perf_counter()
            before = copy.deepcopy(m.state_dict())
            acc_before = acc_u if self.held_out is None else 100 * _accuracy(m, *self.held_out)
            set_live(m, True)  # bias corrections follow the scales calibration changes (refitted below)
            if cfg.calibration is not None:
                c = cfg.calibration
                with warnings.catch_warnings():  # the corrections are refitted below, after calibration
                    warnings.filterwarnings("ignore", f".*{STALE_CORRECTIONS}")
                    calibrate(m, self.calib, c.__class__(**{**asdict(c), "samples": len(self.calib[0]),
                                                            "seed": cfg.seed, "progress": progress}))
            if cfg.finetune is not None and self.tune is not None:
                tune_s = finetune(m, self.tune, cfg.finetune, teacher=self.model, seed=cfg.seed, progress=progress)
            self._corrected(m)  # refitted to the calibrated scales before the guard judges
            calib_s = time.perf_counter() - t1
            if self.held_out is None:  # the guard judges on the evaluation images themselves
                acc_c = self.evaluate(m, f"eval R={ratio} calibrated")
                calib_kept = acc_c >= acc_before
            else:
                held_acc = 100 * _accuracy(m, *self.held_out)
                calib_kept = held_acc >= acc_before
                if calib_kept:
                    acc_c = self.evaluate(m, f"eval R={ratio} calibrated")
            if not calib_kept:  # undo a calibration that loses held-out accuracy
                m.load_state_dict(before)
                acc_c, self.last_correct = acc_u, hits_u
                held_acc = None if self.held_out is None else acc_before
            z_cal = _logits(self.model, m, self.probe)[1]
        overhead: dict[str, float] = {}
        acc_before_comp, comp_kept = acc_c, None
        comp = cfg.selection.compensation
        if comp != "none":
            names = to_compensate if comp == "auto" else None
            if names is None or names:
                hits_before = self.last_correct
                # the control variate's guard before the refit: the held-out images (measured here unless calibration
                # just did), else the evaluation images (acc_c); the bias guard compares with and without instead
                judge_before = acc_c if self.held_out is None or comp == "bias" else held_acc if held_acc is not None \
                    else 100 * _accuracy(m, *self.held_out)
                refit: dict[str, float] = {}  # the refit control variates' overhead, fJ per inference
                before = {n: q.compensation for n, q in qlayers(m)}  # `auto`: the selection's offline corrections
                compensate_model(m, self.calib[0], calibrated=True, layers=names,
                                 method="bias" if comp == "bias" else "auto")

                def guard() -> float:  # accuracy on the guard's images as the model stands
                    return (100 * _accuracy(m, *self.held_out) if self.held_out is not None
                            else self.evaluate(m, f"eval R={ratio} compensation guard"))

                if comp == "bias":
                    # no hardware cost, but it can lose: the estimate assumed it, so it stays unless the same
                    # assignment does better without it (a W3A5 layer's correction took a model from 99.3% to 88%)
                    with_it, hits_with = guard(), self.last_correct
                    fitted = {n: q.compensation for n, q in qlayers(m)}
                    for _, q in qlayers(m):
                        q.compensation = None
                    without = guard()
                    comp_kept = with_it >= without
                    if comp_kept:
                        for n, q in qlayers(m):
                            q.compensation = fitted[n]
                    if self.held_out is None:  # the guard measured the evaluation images themselves
                        acc_c, self.last_correct = (with_it, hits_with) if comp_kept else (without, self.last_correct)
                    else:
                        acc_c = self.evaluate(m, f"eval R={ratio} {'compensated' if comp_kept else 'uncorrected'}")
                    z_cal = _logits(self.model, m, self.probe)[1]
                else:
                    # the guard of calibration: the refit is kept only if its accumulators' energy stays within the
                    # budget (a correction costing 78% of the exact energy made R = 0.7 a 1.18 row, the headline) and
                    # it does not lose accuracy on the guard's images, else the model goes back to what was measured
                    # before it
                    refit = model_overhead(m, self.setup.macs, self.liberty, self.calib[0], cfg.selection.energy_metric)
                    fits = e + sum(refit.values()) <= ratio * e_exact * (1 + 1e-9)
                    now = guard() if fits else None
                    comp_kept = fits and now >= judge_before
                    if comp_kept:
                        acc_c = now if self.held_out is None else self.evaluate(m, f"eval R={ratio} compensated")
                        z_cal = _logits(self.model, m, self.probe)[1]
                if not comp_kept and comp != "bias":
                    for n, q in qlayers(m):
                        q.compensation = before[n]
                    self.last_correct = hits_before
                if comp_kept and comp != "bias":
                    overhead = refit  # (measured above, on these very corrections)
                elif any(q.compensation is not None for _, q in qlayers(m)):
                    overhead = model_overhead(m, self.setup.macs, self.liberty, self.calib[0],
                                              cfg.selection.energy_metric)
            e += sum(overhead.values())
        held = current_assignment(m)["layers"]
        # layers whose choice is the exact multiplier run in exact mode; list them by name all the same
        chosen = {n: mp.candidates[n][k].name for (n, _g), k in zip(mp.groups, sel.choice.tolist(), strict=True)}
        assignment = {n: held.get(n, chosen[n]) for n, _ in qlayers(self.model) if n in chosen}
        diffs = {"uncalibrated": _hist(z_unc - z_exact)}
        if z_cal is not None:
            diffs["calibrated"] = _hist(z_cal - z_exact)
        row = BudgetRow(
            budget=ratio, relative_energy=e / e_exact, energy_reduction=1 - e / e_exact, energy_fj=e,
            exact_energy_fj=e_exact, accuracy_uncalibrated=acc_u, accuracy_before_compensation=acc_before_comp,
            accuracy=acc_c, compensated_layers=sorted(overhead), compensation_overhead_fj=sum(overhead.values()),
            compensation_kept=comp_kept,
            select_s=sel.seconds, calibrate_s=calib_s, finetune_s=tune_s, calibration_kept=calib_kept,
            calibration_skipped=skip, beyond_reach=out_of_reach, ilp_status=sel.status, granularity_used=used,
            accuracy_finer=acc_finer,
            assignment=assignment,
            # a layer's energy includes its correction's accumulators, as the total does
            per_layer_energy={n: {"energy_fj": v[0] + overhead.get(n, 0.0), "exact_fj": v[1],
                                  **({"compensation_fj": overhead[n]} if n in overhead else {})}
                              for n, v in per_layer.items()},
            output_difference=diffs,
            accuracy_ci95=list(wilson_interval(int(sum(self.last_correct)), len(self.last_correct))),
            paired_difference=paired_difference(self.exact_correct, self.last_correct).to_dict(),
        )
        return asdict(row), {k: v.detach().clone() for k, v in m.state_dict().items()}


def _paired_se(pd: dict[str, Any] | None) -> float:
    """Standard error (points) of a paired difference from its 95% interval (0 without one)."""
    if not pd or not pd.get("ci95"):
        return 0.0
    lo, hi = pd["ci95"]
    return (hi - lo) / (2 * Z95)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``(x, y)``."""
    model.eval()
    hits = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


@torch.no_grad()
def _logits(ref: nn.Module, model: nn.Module, batches: list) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the exact reference and of ``model`` over ``batches`` (flattened)."""
    za, zb = [], []
    for x, _ in batches:
        za.append(ref(x).flatten())
        zb.append(model(x).flatten())
    return torch.cat(za).numpy(), torch.cat(zb).numpy()


def _hist(d: np.ndarray, bins: int = 60) -> dict[str, Any]:
    lim = float(np.abs(d).max()) or 1.0
    h, edges = np.histogram(d, bins=bins, range=(-lim, lim))
    return {"counts": h.tolist(), "edges": edges.tolist(), "mean_abs": float(np.abs(d).mean()), "std": float(d.std())}

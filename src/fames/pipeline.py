"""``fames run``: quantized model -> costed AppMul library -> estimate -> ILP selection -> calibration -> report.

Every stage writes its result into ``<output>/stages/`` (atomically, keyed by a hash of the configuration it
depends on), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.io import atomic_write_bytes, atomic_write_json, content_hash

ESTIMATORS = {"taylor-rank1": "rank1", "taylor-full": "full", "first-order": "none"}


@dataclass
class RunConfig:
    """Configuration of one ``fames run`` (YAML keys are these field names)."""

    model: str = "digits_cnn"
    checkpoint: str | None = None  # fames .pt (float or quantized), 'default' (zoo weights) or a weights path
    float_checkpoint: str | None = None  # float model for accuracy.float when checkpoint is quantized
    dataset: str = "digits"
    data_root: str | None = None
    quant: Any = None  # quantize a float checkpoint (PTQ): 'W4A4', a dict or a YAML/JSON file
    library: str = "generate"  # a library directory, 'generate' (our families) or 'evoapprox'
    families: list[str] = field(default_factory=lambda: ["all"])
    liberty: str = "synthetic"
    budgets: list[float] = field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6])
    max_accuracy_loss: float = 1.0  # points; the headline run is the cheapest within this loss
    stop_at_loss: bool = False  # sweep budgets from the largest down; stop after the first beyond max_accuracy_loss
    estimator: str = "taylor-rank1"
    estimator_mean: str = "taylor"  # 'taylor' (the paper's) | 'forward' (layer granularity; see TaylorEstimator)
    estimator_forward_above: float = 0.1  # nats: with 'forward', forward the mean error above this Taylor estimate
    samples: int = 256
    validate_estimator: bool = True
    granularity: str = "layer"  # layer | filter | kernel (output x input channel pair)
    curvature: str = "bound"  # second-order term of a filter/kernel: 'bound' (cross terms bounded) or 'own'
    energy_metric: str = "pdp"
    calibrate: bool = True
    calib_samples: int = 1024
    calib_epochs: int = 5
    calib_lr: float = 0.1
    calib_quantile_step: float = 0.01
    calib_quantile_max: float = 0.5
    calib_search_samples: int | None = None  # samples for the quantile search's error (None = all)
    eval_images: int | None = None  # evaluate on a class-stratified subset of the test split (None = all of it)
    batch_size: int = 500
    compensation: str = "none"  # none | control_variate (every approximate layer) | auto (ILP decides per layer)
    output: str = "fames-out"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise FamesError(f"estimator {self.estimator!r} is not one of {list(ESTIMATORS)}")
        if not self.budgets:
            raise FamesError("budgets: give at least one energy ratio in (0, 1]")
        for r in self.budgets:
            if not isinstance(r, (int, float)) or not 0 < r <= 1:
                raise FamesError(f"energy budget {r!r} must lie in (0, 1] (fraction of the exact energy)")
        if self.granularity not in ("layer", "filter", "kernel"):
            raise FamesError(f"granularity {self.granularity!r}: use 'layer', 'filter' or 'kernel'")
        if self.estimator_mean not in ("forward", "taylor"):
            raise FamesError(f"estimator_mean {self.estimator_mean!r}: use 'forward' or 'taylor'")
        if self.estimator_mean == "forward" and self.granularity != "layer":
            raise FamesError("estimator_mean 'forward' runs a forward pass per layer and candidate: it needs "
                             "granularity 'layer' (use estimator_mean: taylor for filters or kernels)")
        if self.curvature not in ("bound", "own"):
            raise FamesError(f"curvature {self.curvature!r}: use 'bound' or 'own'")
        if self.compensation not in ("none", "control_variate", "auto"):
            raise FamesError(f"compensation {self.compensation!r}: use 'none', 'control_variate' or 'auto'")
        if self.compensation != "none" and self.granularity != "layer":
            raise FamesError("compensation shares one control variate per layer: it needs granularity 'layer'")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FamesError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise FamesError(f"run config {p} not found")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise FamesError(f"{p}: a run config is a mapping of keys to values")
        return cls.from_dict(data)


class Stages:
    """Resumable stage results under ``<output>/stages``: JSON or npz files keyed by a content hash."""

    def __init__(self, root: Path) -> None:
        self.root = root / "stages"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, key: str, ext: str) -> Path:
        return self.root / f"{name}-{key}.{ext}"

    def json(self, name: str, key: str, fn):  # type: ignore[no-untyped-def]
        p = self.path(name, key, "json")
        if p.is_file():
            return json.loads(p.read_text())
        val = fn()
        atomic_write_json(p, val)
        return val


def _loader(cfg: RunConfig, split: str, batch: int, **kw):  # type: ignore[no-untyped-def]
    from fames.data import get_loader

    return get_loader(cfg.dataset, split, batch, root=cfg.data_root, channels_last=True, seed=cfg.seed, **kw)


def _test_loader(cfg: RunConfig, n: int | None = None):  # type: ignore[no-untyped-def]
    """Test batches: all of the split, or ``n`` images with equal counts per class (sources may be class-sorted)."""
    from fames.data import get_dataset, get_loader, stratified_indices

    ds = get_dataset(cfg.dataset, "test", root=cfg.data_root)
    if n is not None and n < len(ds):
        if not hasattr(ds, "subset"):
            raise FamesError(f"eval_images: the {cfg.dataset} test split cannot be subset; leave eval_images unset")
        ds = ds.subset(stratified_indices(ds.labels, n))
    return get_loader(ds, "test", cfg.batch_size, channels_last=True, seed=cfg.seed)


def _held_out_batch(cfg: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training samples drawn with another seed than :func:`_sample_batch` (to judge a calibration)."""
    from fames.data import get_loader

    loader = get_loader(
        cfg.dataset, "train", n, root=cfg.data_root, channels_last=True, seed=cfg.seed + 1, shuffle=True
    )
    return next(iter(loader))


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``(x, y)``."""
    model.eval()
    hits = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def _sample_batch(cfg: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from fames.data import get_dataset

    ds = get_dataset(cfg.dataset, "train", root=cfg.data_root)
    if n > len(ds):
        raise FamesError(
            f"{n} samples requested but the {cfg.dataset} train split has only {len(ds)}; lower 'samples' / "
            "'calib_samples'"
        )
    loader = _loader(cfg, "train", n, shuffle=True)
    return next(iter(loader))


def prepare_model(cfg: RunConfig, progress: bool = True) -> tuple[nn.Module, float | None]:
    """The exact quantized model (and the float accuracy when the float model is at hand)."""
    from fames.quant import calibrate_ptq, qlayers, quantize
    from fames.train import evaluate, load_model

    model = load_model(cfg.model, cfg.checkpoint)
    test = _test_loader(cfg, cfg.eval_images)
    float_acc = None
    if not qlayers(model):
        if cfg.quant is None:
            raise FamesError("the checkpoint is a float model: give 'quant' (e.g. W8A8) to quantize it (PTQ)")
        float_acc = evaluate(model, test, progress, "eval float")["accuracy"]
        quantize(model, cfg.quant)
        calibrate_ptq(model, _loader(cfg, "train", 128, shuffle=True), num_batches=8)
    elif cfg.float_checkpoint:
        fm = load_model(cfg.model, cfg.float_checkpoint)
        float_acc = evaluate(fm, test, progress, "eval float")["accuracy"]
    model.eval()
    return model, float_acc


def prepare_library(cfg: RunConfig, widths: set[tuple[int, int, bool, bool]], progress: bool = True) -> list[AppMul]:
    """Costed candidate AppMuls for the given widths (plus an exact one per widths)."""
    from fames.appmul.families import build, build_family
    from fames.appmul.importers import import_evoapprox
    from fames.appmul.library import Library
    from fames.cli import _liberty_arg
    from fames.hw.cost import cost_library

    if cfg.library == "generate":
        ms = []
        for a, w, sa, _sw in sorted(widths):
            for fam in cfg.families:
                ms += [m for m in build_family(fam, a, w, sa) if m.name not in {x.name for x in ms}]
    elif cfg.library == "evoapprox":
        ms = [m for m in import_evoapprox() if m.widths in widths]
    else:
        ms = [m for m in Library.load(cfg.library) if m.widths in widths]
    missing = widths - {m.widths for m in ms}
    if missing:
        shown = [f"{a}x{w} {'signed' if s else 'unsigned'}" for a, w, s, _ in sorted(missing)]
        raise FamesError(
            f"library {cfg.library!r} has no AppMul for the layer widths {shown}; add designs of these widths "
            "(fames lib build --bits A W) or use library: generate"
        )
    have = {m.widths for m in ms if m.is_exact()}
    for key in sorted(widths - have):  # the exact multiplier is always a candidate (the budget's reference)
        ms.insert(0, build("exact", *key))
    if any(m.cost is None for m in ms) or cfg.library == "generate":
        need = [m for m in ms if m.cost is None or m.cost.source != "published"]
        done = {m.name: m for m in cost_library(need, _liberty_arg(cfg.liberty), progress=progress)} if need else {}
        ms = [done.get(m.name, m) for m in ms]
    return ms


def run(cfg: RunConfig | dict[str, Any] | str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the whole FAMES flow; returns the report dict (also written to ``<output>/report.json``)."""
    from scipy.stats import spearmanr

    from fames.energy import exact_costs, layer_macs, model_energy
    from fames.estimate import TaylorEstimator, true_loss_changes
    from fames.quant import qlayers
    from fames.report import write_report
    from fames.select import ILPSelector, InfeasibleBudget
    from fames.substitute import current_assignment, save_assignment
    from fames.train import evaluate

    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_file(cfg) if isinstance(cfg, (str, Path)) else RunConfig.from_dict(cfg)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    stages = Stages(out)
    t_all = time.perf_counter()
    key = content_hash(json.dumps(asdict(cfg), sort_keys=True, default=str))

    model, float_acc = prepare_model(cfg, progress)
    test = _test_loader(cfg, cfg.eval_images)
    probe = _test_loader(cfg, 1000)  # logit differences for the report's histograms
    exact_acc = stages.json("exact", key, lambda: evaluate(model, test, progress, "eval exact"))
    layers = qlayers(model)
    lib = prepare_library(cfg, {m.widths for _, m in layers}, progress)
    from fames.appmul.library import Library

    Library(lib).save(out / "library")
    exact_cost = exact_costs(lib, cfg.energy_metric)
    sample_shape = tuple(next(iter(test))[0].shape[1:])
    macs = layer_macs(model, sample_shape)

    # ------------------------------------------------------------------ estimate
    x, y = _sample_batch(cfg, cfg.samples)
    cands = {n: [m for m in lib if m.widths == layer.widths] for n, layer in layers}
    estimator = TaylorEstimator(
        ESTIMATORS[cfg.estimator], progress=progress, curvature=cfg.curvature, mean=cfg.estimator_mean,
        forward_above=cfg.estimator_forward_above,
    )
    est_file = stages.path("estimate", key, "npz")
    if est_file.is_file():
        npz = np.load(est_file)
        omega = {n: npz[n] for n in cands}
        est_seconds = float(npz["__seconds__"])
    else:
        est = estimator.estimate(model, x, y, cands, granularity=cfg.granularity)
        omega, est_seconds = est.omega, est.seconds
        import io

        buf = io.BytesIO()
        np.savez(buf, __seconds__=np.array(est_seconds), **omega)
        atomic_write_bytes(est_file, buf.getvalue())
    spearman, scatter = None, None
    if cfg.validate_estimator:
        true = stages.json(
            "true_loss",
            key,
            lambda: {n: v.tolist() for n, v in true_loss_changes(model, x, y, cands, progress).items()},
        )
        est_v = np.concatenate([omega[n].sum(0).ravel() for n in cands])
        tru_v = np.concatenate([np.asarray(true[n]).ravel() for n in cands])
        keep = np.isfinite(est_v) & np.isfinite(tru_v)
        spearman = float(spearmanr(est_v[keep], tru_v[keep])[0])
        scatter = {"estimated": est_v.tolist(), "true": tru_v.tolist(), "layer": [n for n in cands for _ in cands[n]]}

    # ------------------------------------------------------------------ compensated candidates (auto)
    from fames.cli import _liberty_arg

    liberty = str(_liberty_arg(cfg.liberty))
    pairs: dict[str, list] = {n: [] for n in cands}
    if cfg.compensation == "auto":
        from fames.compensate import compensated_candidates

        pairs, c_omega, c_over = compensated_candidates(
            model, x, y, cands, estimator, liberty, macs, cfg.energy_metric
        )
        omega = {n: np.concatenate([omega[n], c_omega[n]], 1) for n in cands}

    # ------------------------------------------------------------------ selection problem
    from fames.problem import apply_choice, build_problem

    if cfg.compensation == "auto":  # candidates k >= K_l: the layer's AppMuls with their corrections
        all_cands = {n: cands[n] + [m for m, _ in pairs[n]] for n in cands}
        comps = {n: [None] * len(cands[n]) + [c for _, c in pairs[n]] for n in cands}
        extra = {n: np.concatenate([np.zeros(len(cands[n])), c_over[n]]) for n in cands}
    else:
        all_cands, comps, extra = cands, None, None
    mp = build_problem(model, omega, all_cands, macs, exact_cost, cfg.energy_metric, cfg.granularity, comps, extra)

    # ------------------------------------------------------------------ per budget
    runs: list[dict[str, Any]] = []
    for ratio in sorted(cfg.budgets, reverse=True) if cfg.stop_at_loss else cfg.budgets:
        if cfg.stop_at_loss and any(
            not r["infeasible"] and exact_acc["accuracy"] - r["accuracy"] > cfg.max_accuracy_loss for r in runs
        ):
            break
        rkey = content_hash(key, str(ratio))

        def one(ratio: float = ratio) -> dict[str, Any]:
            try:
                sel = ILPSelector().solve(mp.problem, ratio)
            except InfeasibleBudget as e:
                return {"budget": ratio, "infeasible": True, "min_ratio": e.min_ratio, "message": str(e)}
            m = apply_choice(copy.deepcopy(model), mp, sel.choice)
            to_compensate = [n for n, q in qlayers(m) if q.compensation is not None]
            e, e_exact, per_layer = model_energy(m, macs, exact_cost, cfg.energy_metric)
            acc_u = evaluate(m, test, progress, f"eval R={ratio}")["accuracy"]
            z_exact, z_unc = _logits(model, m, probe)
            acc_c, calib_s, z_cal, calib_kept = acc_u, 0.0, None, False
            if cfg.calibrate:
                from fames.calibrate import CalibrationConfig, calibrate

                t1 = time.perf_counter()
                cx, cy = _sample_batch(cfg, min(cfg.calib_samples, _train_len(cfg)))
                hx, hy = _held_out_batch(cfg, min(cfg.calib_samples, _train_len(cfg)))
                before, acc_before = copy.deepcopy(m.state_dict()), _accuracy(m, hx, hy)
                calibrate(
                    m,
                    (cx, cy),
                    CalibrationConfig(
                        quantile_step=cfg.calib_quantile_step,
                        quantile_max=cfg.calib_quantile_max,
                        search_samples=cfg.calib_search_samples,
                        epochs=cfg.calib_epochs,
                        lr=cfg.calib_lr,
                        samples=len(cx),
                        seed=cfg.seed,
                        progress=progress,
                    ),
                )
                calib_kept = _accuracy(m, hx, hy) >= acc_before  # undo a calibration that loses held-out accuracy
                if not calib_kept:
                    m.load_state_dict(before)
                calib_s = time.perf_counter() - t1
                acc_c = evaluate(m, test, progress, f"eval R={ratio} calibrated")["accuracy"] if calib_kept else acc_u
                z_cal = _logits(model, m, probe)[1]
            overhead: dict[str, float] = {}
            acc_before_comp = acc_c
            if cfg.compensation != "none":
                from fames.compensate import compensate_model, model_overhead

                cx, _ = _sample_batch(cfg, min(cfg.calib_samples, _train_len(cfg)))
                names = to_compensate if cfg.compensation == "auto" else None
                if names is None or names:
                    compensate_model(m, cx, calibrated=True, layers=names)
                    overhead = model_overhead(m, macs, liberty, cx, cfg.energy_metric)
                    acc_c = evaluate(m, test, progress, f"eval R={ratio} compensated")["accuracy"]
                    z_cal = _logits(model, m, probe)[1]
                e += sum(overhead.values())
            assignment = current_assignment(m)
            # layers whose choice is the exact multiplier run in exact mode; list them by name all the same
            chosen = {n: mp.candidates[n][k].name for (n, _g), k in zip(mp.groups, sel.choice.tolist(), strict=True)}
            held = assignment["layers"]
            assignment["layers"] = {n: held.get(n, chosen[n]) for n, _ in layers if n in chosen}
            save_assignment(assignment, out / f"assignment_R{ratio:g}.json")
            from fames.models import save_checkpoint

            save_checkpoint(
                m,
                out / f"model_R{ratio:g}.pt",
                meta={
                    "quant": getattr(m, "fames_quant_config", None),
                    "accuracy": acc_c,
                    "dataset": cfg.dataset,
                    "assignment": f"assignment_R{ratio:g}.json",
                },
            )
            diffs = {"uncalibrated": _hist(z_unc - z_exact)}
            if z_cal is not None:
                diffs["calibrated"] = _hist(z_cal - z_exact)
            return {
                "budget": ratio,
                "infeasible": False,
                "relative_energy": e / e_exact,
                "energy_reduction": 1 - e / e_exact,
                "energy_fj": e,
                "exact_energy_fj": e_exact,
                "accuracy_uncalibrated": acc_u,
                "accuracy_before_compensation": acc_before_comp,
                "accuracy": acc_c,
                "compensated_layers": sorted(overhead),
                "compensation_overhead_fj": sum(overhead.values()),
                "select_s": sel.seconds,
                "calibrate_s": calib_s,
                "calibration_kept": calib_kept,
                "ilp_status": sel.status,
                "assignment": assignment["layers"],
                "per_layer_energy": {n: {"energy_fj": v[0], "exact_fj": v[1]} for n, v in per_layer.items()},
                "output_difference": diffs,
            }

        runs.append(stages.json("budget", rkey, one))

    feasible = [r for r in runs if not r["infeasible"]]
    if not feasible:
        raise FamesError(f"every budget was infeasible; smallest feasible ratio {runs[0]['min_ratio']:.4f}")
    within = [r for r in feasible if exact_acc["accuracy"] - r["accuracy"] <= cfg.max_accuracy_loss]
    best = min(within, key=lambda r: r["relative_energy"]) if within else feasible[0]
    report = {
        "config": asdict(cfg),
        "model": cfg.model,
        "quant": getattr(model, "fames_quant_config", None),
        "layers": [{"name": n, "widths": list(layer.widths), "macs": macs[n]} for n, layer in layers],
        "library": {"size": len(lib), "liberty": cfg.liberty, "energy_metric": cfg.energy_metric},
        "accuracy": {
            "float": float_acc,
            "exact_quant": exact_acc["accuracy"],
            "approx_uncalibrated": best["accuracy_uncalibrated"],
            "approx": best["accuracy"],
        },
        "relative_energy": best["relative_energy"],
        "energy_reduction": best["energy_reduction"],
        "budget": best["budget"],
        "estimator": cfg.estimator,
        "estimator_spearman": spearman,
        "timing": {
            "estimate_s": est_seconds,
            "select_s": best["select_s"],
            "calibrate_s": best["calibrate_s"],
            "total_s": time.perf_counter() - t_all,
        },
        "assignment": best["assignment"],
        "runs": runs,
        "estimator_scatter": scatter,
    }
    save_assignment({"format": "fames-assignment", "layers": best["assignment"]}, out / "assignment.json")
    import shutil

    shutil.copyfile(out / f"model_R{best['budget']:g}.pt", out / "model.pt")
    write_report(report, out)
    return report


def _train_len(cfg: RunConfig) -> int:
    from fames.data import get_dataset

    return len(get_dataset(cfg.dataset, "train", root=cfg.data_root))


@torch.no_grad()
def _logits(ref: nn.Module, model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Logits of the exact reference and of ``model`` over ``loader`` (flattened)."""
    za, zb = [], []
    for x, _ in loader:
        za.append(ref(x).flatten())
        zb.append(model(x).flatten())
    return torch.cat(za).numpy(), torch.cat(zb).numpy()


def _hist(d: np.ndarray, bins: int = 60) -> dict[str, Any]:
    lim = float(np.abs(d).max()) or 1.0
    h, edges = np.histogram(d, bins=bins, range=(-lim, lim))
    return {"counts": h.tolist(), "edges": edges.tolist(), "mean_abs": float(np.abs(d).mean()), "std": float(d.std())}

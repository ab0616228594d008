"""MAx-DNN granularities: ROUP multipliers per layer, per filter and per kernel, ILP vs MAx-DNN-style heuristic.

Usage: python bench/granularity.py --search [--models resnet8 resnet20 resnet32] [--losses 1 4] [--calibrate]
       python bench/granularity.py [--models resnet8 resnet20] [--budgets 0.8 0.7 0.6 0.5] [--samples 512] [--merge]
       [--eval-images 1000] [--calibrate] [--calib-samples 256] [--calib-epochs 1] [--out docs/results/granularity.md]

``--search`` (the held-out protocol): for every model, granularity and accuracy-loss bound, ``fames.run`` in its
target mode bisects the energy ratio R on a validation split (held out of the checkpoint's training where the
checkpoint records it, ``fames train --holdout``; otherwise training images the checkpoint may have seen) and tests
the chosen model once on the full test split (paired difference with its 95% interval). Filter and kernel level
keep the layer-level selection at a budget where it is more accurate on validation (``selection.layer_fallback``).
Models: ResNet-8 and ResNet-20 W8A8 (our QAT checkpoints; ResNet-20 with 5,000 training images held out) and
ResNet-32 W8A8 by PTQ from the akamaster weights. Results go to ``granularity_search_<model>.json`` and the first
section of the report; a re-run resumes (each run's stages are kept under ``--work``).

Without ``--search``, the grid sweep below:

For each W8A8 model on JPEG CIFAR-10: a library of signed 8x8 ROUP designs (default (P, R) grid) plus the exact
multiplier, costed on the NanGate 45 nm liberty (PDP); a rank-1 Taylor estimate per layer, filter and kernel
(``curvature="bound"`` for filters and kernels); at every energy budget, the ILP and the MAx-DNN-style heuristic
(:class:`fames.baselines.MaxDNNSelector`) choose; accuracy is measured with bit-exact emulation on a
class-stratified test subset, before and (``--calibrate``) after calibration. Writes the Markdown table at 1%, 2%
and 4% accuracy loss, accuracy/energy curves and a per-filter heat map of the chosen multipliers.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {"resnet8": "resnet8_w8a8.pt", "resnet20": "resnet20_w8a8.pt"}
SEARCH_MODELS = {  # (checkpoint, quant): PTQ when quant is given
    "resnet8": ("checkpoints/resnet8_w8a8.pt", None),
    "resnet20": ("checkpoints/holdout5k/resnet20_w8a8.pt", None),
    "resnet32": ("default", "W8A8"),
}
TARGET_MAXDNN = 0.54  # MAx-DNN: 54% at <= 4 points loss on ResNet-8
GRANULARITIES = ("layer", "filter", "kernel")
LOSSES = (1.0, 2.0, 4.0)
MARK = "<!-- granularity -->"  # the generated report sits between two of these; hand-written notes outside stay


def recorded_command(script: str) -> str:
    """The command line to record with a result: where the run's files went (``--work``, ``--out``) is dropped, being
    machine-local and without effect on the figures."""
    args, out = sys.argv[1:], []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in ("--work", "--out"):
            skip = True
        elif not a.startswith(("--work=", "--out=")):
            out.append(a)
    return " ".join([f"python bench/{script}", *out])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None, choices=list(SEARCH_MODELS))
    ap.add_argument("--search", action="store_true", help="the held-out protocol (see the module docstring)")
    ap.add_argument("--losses", nargs="+", type=float, default=[1.0, 4.0], help="with --search: loss bounds (points)")
    ap.add_argument("--granularities", nargs="+", choices=GRANULARITIES, default=list(GRANULARITIES),
                    help="with --search: the granularities to run (a later call adds the others to the same json)")
    ap.add_argument("--compensation", choices=["none", "bias"], default="none",
                    help="with --search: 'bias' corrects every approximate layer's mean error in its bias (no hardware "
                         "cost, any granularity), in the estimate, the selection and the model")
    ap.add_argument("--curvature", choices=["bound", "covariance", "own"], default="bound",
                    help="with --search: how the filter/kernel estimate splits a layer's second-order term "
                         "(estimator.curvature; finer-granularity runs are keyed and labelled with it)")
    ap.add_argument("--validation-images", type=int, default=None,
                    help="with --search: validation split (default: all the checkpoint held out, else 2000)")
    ap.add_argument("--work", default=str(REPO / "out" / "granularity"), help="with --search: run folders")
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.8, 0.7, 0.6, 0.5])
    ap.add_argument("--samples", type=int, default=512, help="training samples of the estimate")
    ap.add_argument("--eval-images", type=int, default=1000, help="class-stratified test subset")
    ap.add_argument("--calibrate", action="store_true", help="also calibrate every ILP selection")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--calib-epochs", type=int, default=1)
    ap.add_argument("--ilp-gap", type=float, default=1e-4, help="relative MIP gap of the ILP")
    ap.add_argument("--ilp-time", type=float, default=120.0, help="ILP time limit per budget (s)")
    ap.add_argument("--roup-grid", choices=["default", "full"], default="default",
                    help="ROUP designs: the family's default grid (P 0-2 x R 0, 2, 4) or every (P, R) (P 0-3 x R 0-6 "
                    "at 8 bits: MAx-DNN's own space); use another --out (and --work) for each, e.g. "
                    "docs/results/granularity_full.md")
    ap.add_argument("--liberty", default=str(REPO.parent / "shared" / "liberty" / "nangate45_typ.lib.gz"))
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "granularity.md"))
    ap.add_argument("--report-only", action="store_true", help="rebuild the Markdown and plots from the JSON files")
    ap.add_argument("--merge", action="store_true", help="add these budgets to a model's earlier runs")
    args = ap.parse_args()
    if not (REPO.parent / "shared" / "data" / "cifar10").is_dir():
        print("SKIP: ../shared/data/cifar10 is absent (this benchmark needs JPEG CIFAR-10)")
        return 0
    import torch

    from fames.io import atomic_write_text, write_section

    out = Path(args.out)
    if args.search and not args.report_only:
        for name in args.models:
            search_model(name, args, out)
    torch.set_num_threads(1)
    args.models = args.models or (list(SEARCH_MODELS) if args.search else list(MODELS))
    for name in [] if args.report_only or args.search else args.models:
        res = bench_model(name, args)
        res["command"] = recorded_command("granularity.py")
        res["roup_grid"] = args.roup_grid
        res["date"] = dt.date.today().isoformat()
        path = out.with_name(f"{out.stem}_{name}.json")
        if args.merge and path.is_file():  # keep the earlier runs at other budgets
            old = json.loads(path.read_text())
            res["runs"] = sorted(
                [r for r in old["runs"] if r["budget"] not in args.budgets] + res["runs"],
                key=lambda r: (GRANULARITIES.index(r["granularity"]), r["selector"], -r["budget"]),
            )
            res["command"] = f"{old['command']}` + `{res['command']}"
        atomic_write_text(path, json.dumps(res, indent=1))
        plot_curves(res, out.with_name(f"{out.stem}_{name}.png"))
        plot_heatmap(res, out.with_name(f"{out.stem}_{name}_filters.png"))
    # every model benchmarked so far (runs of different models may go in parallel processes)
    results = {n: json.loads(p.read_text()) for n in MODELS if (p := out.with_name(f"{out.stem}_{n}.json")).is_file()}
    for name, res in results.items() if args.report_only else ():
        plot_curves(res, out.with_name(f"{out.stem}_{name}.png"))
        plot_heatmap(res, out.with_name(f"{out.stem}_{name}_filters.png"))
    searched = {n: json.loads(p.read_text()) for n in SEARCH_MODELS
                if (p := out.with_name(f"{out.stem}_search_{n}.json")).is_file()}
    write_section(out, MARK, search_report(searched) + report(results, out))
    print(f"wrote {out}")
    return 0


def search_model(name: str, args: argparse.Namespace, out: Path) -> None:
    """The held-out protocol on one model: ``fames.run`` in target mode per granularity and loss bound; every
    finished run is stored at once (``granularity_search_<model>.json``), so an interrupted bench resumes."""
    import torch

    from fames.flow.config import RunConfig
    from fames.flow.run import run
    from fames.io import atomic_write_text

    torch.set_num_threads(os.cpu_count() or 1)
    ck, quant = SEARCH_MODELS[name]
    path = out.with_name(f"{out.stem}_search_{name}.json")
    res = json.loads(path.read_text()) if path.is_file() else {"model": name, "runs": {}}
    from fames.flow.library import liberty_path

    liberty = str(liberty_path(args.liberty))  # a missing path is an error, not the synthetic liberty
    if res["runs"] and res.get("roup_grid", "default") != args.roup_grid:
        raise SystemExit(f"{path} holds runs with the {res.get('roup_grid', 'default')} ROUP grid; pass another --out "
                         f"for --roup-grid {args.roup_grid}")
    res["command"] = recorded_command("granularity.py")
    res["roup_grid"] = args.roup_grid
    res["liberty"] = Path(liberty).name
    for gran in args.granularities:
        for loss in args.losses:
            comp = args.compensation
            curv = None if gran == "layer" else args.curvature  # one group per layer: no split to make
            key = (f"{gran}{'+' + comp if comp != 'none' else ''}{'/' + curv if curv else ''}"
                   f"{'' if args.calibrate else '~uncalibrated'}@{loss:g}")
            if key in res["runs"]:
                continue
            cfg = {
                "model": name, "checkpoint": ck if ck == "default" else str(REPO / ck), "quant": quant,
                "data": {"dataset": "cifar10"}, "families": ["exact", _roup(args)], "liberty": liberty,
                "budget": "search", "max_accuracy_loss": loss,
                "search": {"validation_images": args.validation_images},
                "estimator": {"kind": "taylor-rank1", "samples": args.samples, "validate": False,
                              "curvature": curv or "bound"},
                "selection": {"granularity": gran, "compensation": comp},
                "output": str(Path(args.work) / name),  # one folder: its stages (estimates) serve every run
            }
            if not args.calibrate:
                cfg["calibration"] = False
            t0 = time.perf_counter()
            r = run(RunConfig.from_dict(cfg)).to_dict()
            res["runs"][key] = {
                "command": res["command"], "date": dt.date.today().isoformat(),
                "granularity": gran, "compensation": comp, "curvature": curv, "calibrated": args.calibrate,
                "loss": loss, "budget": r["budget"],
                "energy_reduction": r["energy_reduction"],
                "validation": r["accuracy"], "test": r["test"], "estimate_s": r["timing"].get("estimate_s"),
                "seconds": time.perf_counter() - t0,
                # the chosen row: the last one of its budget (a layer-level row that won the final choice between
                # granularities is appended after the finer row of the same budget)
                "granularity_used": [x for x in r["runs"] if x["budget"] == r["budget"]][-1].get("granularity_used"),
                "runs": [{k: x[k] for k in ("budget", "relative_energy", "accuracy", "accuracy_uncalibrated",
                                            "granularity_used", "accuracy_finer") if k in x} for x in r["runs"]],
            }
            res["date"] = dt.date.today().isoformat()
            atomic_write_text(path, json.dumps(res, indent=1))
            t = r["test"] or {}
            print(f"{name} {key}: R={r['budget']:g}, reduction {100 * r['energy_reduction']:.2f}%, test paired "
                  f"{(t.get('paired_difference') or {}).get('points', float('nan')):+.2f}", flush=True)


_GRIDS = {"default": "default grid P 0-2 x R 0, 2, 4", "full": "every (P, R): P 0-3 x R 0-6"}


def _kind(run: dict) -> str:
    """A held-out run's granularity (:func:`_finer`), with its compensation when it has one and a mark when its
    selections were not calibrated."""
    comp = run.get("compensation", "none")
    return (_finer(run) + ("" if comp == "none" else f" + {comp}")
            + ("" if run.get("calibrated", True) else ", uncalibrated"))


def _variant(run: dict) -> str:
    """What a finer-granularity run is compared with layer level under: its compensation and calibration (runs
    before 2026-12-03 were all calibrated)."""
    comp = run.get("compensation", "none")
    return ", ".join(([] if comp == "none" else [f"compensation {comp}"])
                     + ([] if run.get("calibrated", True) else ["uncalibrated"]))


def _finer(run: dict) -> str:
    """A run's granularity, for filters and kernels with the curvature split of its estimate (runs before
    2026-12-03 have no record of it: bound)."""
    return run["granularity"] + ("" if run["granularity"] == "layer" else f" ({run.get('curvature') or 'bound'})")


def _roup(args: argparse.Namespace) -> str:
    """The ROUP entry of the run config's families for ``--roup-grid``."""
    return "roup:full" if args.roup_grid == "full" else "roup"


def search_report(searched: dict[str, dict]) -> str:
    """The held-out section of the report: per model, granularity and loss bound the chosen R, its energy
    reduction, validation and test figures; then the issue's targets."""
    if not searched:
        return ""
    lines = [
        "# Layer, filter and kernel granularity under the held-out protocol",
        "",
        "Commands: " + "; ".join(f"`{c}` ({d})" for c, d in dict.fromkeys(
            (run.get("command", r["command"]), run.get("date", r.get("date", "?")))
            for r in searched.values() for run in r["runs"].values())),
        "",
        "Per model, granularity and loss bound L: `fames run` in target mode (R bisected to 0.01 on the validation "
        "split; a budget counts when its validation loss plus one standard error stays within L), the chosen model "
        "tested once on the 10,000 test images. Library: exact + ROUP (MAx-DNN; "
        + ", ".join(sorted({_GRIDS[r.get("roup_grid", "default")] for r in searched.values()}))
        + "), PDP on " + ", ".join(sorted({r.get("liberty", "nangate45_typ.lib.gz") for r in searched.values()}))
        + ". (L) = at that budget the layer-level selection was more accurate on validation and "
        "was kept; uncalibrated = without calibration of the selections (`--calibrate` not given), a search of its "
        "own.",
        "",
    ]
    verdict = []
    for name, res in searched.items():
        runs = res["runs"]
        src = next((((r.get("test") or {}).get("validation") or {}).get("source") for r in runs.values()), "?")
        lines += [f"## {name} W8A8 (validation: {src})", "",
                  "| granularity | L | R | energy reduction | validation: approx / exact | test paired difference "
                  "[95%] | estimate s | run s |",
                  "|---|---:|---:|---:|---|---|---:|---:|"]
        for r in runs.values():
            t = r.get("test") or {}
            pdiff = t.get("paired_difference") or {}
            ci = pdiff.get("ci95") or [float("nan")] * 2
            v = r["validation"]
            fb = " (L)" if r.get("granularity_used") == "layer" and r["granularity"] != "layer" else ""
            lines.append(
                f"| {_kind(r)}{fb} | {r['loss']:g} | {r['budget']:g} | {100 * r['energy_reduction']:.2f}% | "
                f"{v['approx']:.2f} / {v['exact_quant']:.2f} | {pdiff.get('points', float('nan')):+.2f} "
                f"[{ci[0]:+.2f}, {ci[1]:+.2f}] | {r['estimate_s'] or 0:.0f} | {r['seconds']:.0f} |")
        lines.append("")
        red = {(_finer(r), _variant(r), r["loss"]): r["energy_reduction"] for r in runs.values()}
        for comp in sorted({c for _, c, _ in red}):  # finer against layer level with the same compensation
            tag = f" ({comp})" if comp else ""
            finer = sorted({g for g, c, _ in red if c == comp and g != "layer"})
            for loss in sorted({r["loss"] for r in runs.values()}):
                lay = red.get(("layer", comp, loss))
                for g in finer:
                    if lay is not None and (g, comp, loss) in red:  # equal within half the resolution of R (0.01)
                        got = red[(g, comp, loss)]
                        verdict.append((f"{name}: {g} >= layer at <= {loss:g} points{tag}", got >= lay - 0.005,
                                        f"{100 * got:.2f}% vs {100 * lay:.2f}%"))
            for g in [g for g in finer if g.startswith("filter")]:
                gains = [red[(g, comp, loss)] / red[("layer", comp, loss)] - 1 for loss in (1.0, 4.0)
                         if red.get(("layer", comp, loss)) and (g, comp, loss) in red]
                if gains:
                    verdict.append((f"{name}: {g} >= 1.1x layer reduction (best of the bounds){tag}",
                                    max(gains) >= 0.1, f"{100 * max(gains):+.0f}%"))
        if name == "resnet8" and any(g.startswith("filter") and loss == 4.0 for g, _, loss in red):
            best = max(v for (_, _, loss), v in red.items() if loss == 4.0)
            verdict.append(("resnet8: >= 54% at <= 4 points (MAx-DNN)", best >= TARGET_MAXDNN, f"{100 * best:.2f}%"))
        if name == "resnet20":
            est: dict[str, float] = {}  # the fastest estimate of each granularity (timings move with the load)
            for r in runs.values():
                if r.get("estimate_s") and r.get("compensation", "none") == "none":
                    est[r["granularity"]] = min(est.get(r["granularity"], math.inf), r["estimate_s"])
            if est.get("layer") and est.get("filter"):
                ratio = est["filter"] / est["layer"]
                verdict.append(("resnet20: filter estimate <= 1.5x layer", ratio <= 1.5, f"{ratio:.2f}x"))
    lines += ["## Targets (issue 18)", "", "| target | value | status |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'met' if ok else 'NOT met'} |" for t, ok, v in verdict]
    return "\n".join(lines) + "\n\n"


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Every (granularity, selector, budget) run of one model: energy gain and accuracy (%)."""
    import numpy as np

    from fames.baselines import MaxDNNSelector
    from fames.flow.config import RunConfig
    from fames.flow.inputs import prepare
    from fames.flow.library import liberty_path
    from fames.method.estimate import TaylorEstimator
    from fames.method.problem import apply_choice
    from fames.method.select import ILPSelector, InfeasibleBudget
    from fames.quant import qlayers
    from fames.train import evaluate

    liberty = str(liberty_path(args.liberty))  # a missing path is an error, not the synthetic liberty
    cfg = RunConfig.from_dict(
        {
            "model": name,
            "checkpoint": str(REPO / "checkpoints" / MODELS[name]),
            "data": {"dataset": "cifar10", "batch_size": 250, "eval_images": args.eval_images},
            "families": ["exact", _roup(args)],
            "liberty": liberty,
        }
    )
    prep = prepare(cfg, progress=False)  # model, costed ROUP library, MACs, exact costs; stratified test subset
    model = prep.model
    layers = qlayers(model)
    lib = prep.library
    cands = prep.candidates
    test = prep.inputs.test
    exact_acc = evaluate(model, test, False)["accuracy"]
    x, y = prep.train_images(args.samples)
    cx, cy = prep.train_images(args.calib_samples) if args.calibrate else (None, None)
    print(f"{name}: exact {exact_acc:.2f}%, {len(lib)} candidates", flush=True)
    res: dict = {"exact_accuracy": exact_acc, "library": [_label(m) for m in cands[layers[0][0]]], "runs": [],
                 "liberty": Path(liberty).name}
    res["pdp_relative"] = [float(m.cost.relative.get("pdp", 1.0)) for m in cands[layers[0][0]]]
    res["layers"] = [(n, list(layer.group_shape("kernel"))) for n, layer in layers]
    selectors = [ILPSelector(args.ilp_time, args.ilp_gap), MaxDNNSelector()]
    for gran in GRANULARITIES:
        est = TaylorEstimator("rank1", progress=False, curvature="bound").estimate(model, x, y, cands, gran)
        mp = prep.setup.problem(est.omega, gran)
        print(f"  {gran}: {len(mp.groups)} groups, estimate {est.seconds:.1f} s", flush=True)
        res[f"estimate_s_{gran}"] = est.seconds
        res[f"groups_{gran}"] = len(mp.groups)
        for sel in selectors:
            for ratio in args.budgets:
                try:
                    s = sel.solve(mp.problem, ratio)
                except InfeasibleBudget:
                    continue
                m = apply_choice(copy.deepcopy(model), mp, s.choice)
                acc = evaluate(m, test, False)["accuracy"]
                row = {
                    "granularity": gran,
                    "selector": sel.name,
                    "budget": ratio,
                    "energy_gain": 1 - s.ratio,
                    "accuracy": acc,
                    "select_s": s.seconds,
                    "status": s.status,
                }
                if args.calibrate and sel.name == "ilp":
                    row["accuracy_calibrated"] = _calibrated(m, cx, cy, args, test)
                if gran == "filter" and sel.name == "ilp":
                    row["choice"] = np.asarray(s.choice).tolist()
                res["runs"].append(row)
                cal = f", calibrated {row['accuracy_calibrated']:.2f}%" if "accuracy_calibrated" in row else ""
                print(
                    f"    {sel.name:6s} R={ratio:.2f}: gain {row['energy_gain']:.3f}, acc {acc:.2f}%{cal}, "
                    f"select {s.seconds:.2f} s ({s.status})",
                    flush=True,
                )
    return res


def _calibrated(model, cx, cy, args, test) -> float:  # type: ignore[no-untyped-def]
    from fames.method.calibrate import CalibrationConfig, calibrate
    from fames.train import evaluate

    conf = CalibrationConfig(
        quantile_step=0.05, samples=len(cx), epochs=args.calib_epochs, search_samples=128, progress=False
    )
    calibrate(model, (cx, cy), conf)
    return evaluate(model, test, False)["accuracy"]


def _label(m) -> str:  # type: ignore[no-untyped-def]
    p = (m.provenance or {}).get("params", {})
    return "exact" if m.is_exact() else f"ROUP P={p.get('P')} R={p.get('R')}"


def best_gain(runs: list[dict], exact: float, loss: float, key: str = "accuracy") -> float | None:
    """Largest energy gain among runs within ``loss`` points of the exact accuracy (None: no such run)."""
    ok = [r["energy_gain"] for r in runs if key in r and exact - r[key] <= loss]
    return max(ok) if ok else None


def _pct(g: float | None) -> str:
    return "-" if g is None else f"{100 * g:.1f}%"


def plot_curves(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["accuracy"] + (["accuracy_calibrated"] if any("accuracy_calibrated" in r for r in res["runs"]) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for gran, color in zip(GRANULARITIES, ("C0", "C1", "C2"), strict=True):
            for sel, style in (("ilp", "-o"), ("maxdnn", "--s")):
                rows = sorted(
                    (r for r in res["runs"] if r["granularity"] == gran and r["selector"] == sel and key in r),
                    key=lambda r: r["energy_gain"],
                )
                if rows:
                    ax.plot(
                        [100 * r["energy_gain"] for r in rows],
                        [r[key] for r in rows],
                        style,
                        color=color,
                        label=f"{gran} ({sel})",
                    )
        ax.axhline(res["exact_accuracy"], color="k", lw=0.8, ls=":", label="exact W8A8")
        ax.set_xlabel("multiplier energy gain (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("calibrated" if key == "accuracy_calibrated" else "uncalibrated")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(res: dict, path: Path) -> None:
    """Chosen candidate per filter and layer for the filter-level ILP at its largest gain within 4% loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in res["runs"] if "choice" in r and res["exact_accuracy"] - r["accuracy"] <= LOSSES[-1]]
    rows = rows or [r for r in res["runs"] if "choice" in r]
    if not rows:
        return
    run = max(rows, key=lambda r: r["energy_gain"])
    width = max(o for _, (o, _) in res["layers"])
    grid = np.full((len(res["layers"]), width), np.nan)
    pos = 0
    for i, (_, (o, _)) in enumerate(res["layers"]):
        grid[i, :o] = run["choice"][pos : pos + o]
        pos += o
    lib = res["library"]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(res["layers"]) + 1.5))
    cmap = plt.get_cmap("viridis", len(lib))
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(lib) - 0.5, interpolation="nearest")
    ax.set_yticks(range(len(res["layers"])), [n for n, _ in res["layers"]], fontsize=7)
    ax.set_xlabel("filter (output channel)")
    ax.set_title(f"filter-level ILP, energy gain {100 * run['energy_gain']:.1f}%, accuracy {run['accuracy']:.2f}%")
    bar = fig.colorbar(im, ticks=range(len(lib)))
    bar.ax.set_yticklabels(lib, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict, out: Path) -> str:
    if not results:
        return ""
    cmds = "; ".join(f"`{r['command']}`" for r in results.values())
    lines = [
        "# Layer, filter and kernel granularity with ROUP multipliers (MAx-DNN)",
        "",
        f"{cmds} on {', '.join(sorted({r.get('date', '2026-11-22') for r in results.values()}))} (2 CPU cores "
        "shared with other jobs, 1 torch thread each).",
        "",
        "Library: the exact signed 8x8 multiplier and `roup` (radix-4 Booth, the P least significant partial "
        "products perforated, the activation operand rounded at bit R) at the family's default grid "
        "P in {0, 1, 2} x R in {0, 2, 4} minus (0, 0) (for 4-bit operands R <= 2, P <= 1), costed with Yosys + ABC "
        f"on {', '.join(sorted({r.get('liberty', 'nangate45_typ.lib.gz') for r in results.values()}))}; energy per "
        "operation = PDP. Energy of a group = its MACs x PDP of its multiplier; "
        "energy gain = 1 - energy / exact energy (multipliers only).",
        "",
        'Estimate: rank-1 Taylor on `--samples` training images, `curvature="bound"` for filters and kernels '
        "(the second-order term of a group bounded with the cross terms of its layer). Selection: the exact ILP "
        "(HiGHS, relative gap `--ilp-gap`, time limit `--ilp-time`) and the MAx-DNN-style heuristic (least "
        "sensitive group first, one approximation level at a time). Accuracy on a class-stratified "
        "`--eval-images` JPEG CIFAR-10 test subset with bit-exact emulation; with `--calibrate`, every ILP "
        "selection is also calibrated (`--calib-samples` samples, `--calib-epochs` LWC epochs, quantile step "
        "0.05, search on 128 samples).",
        "",
    ]
    for name, res in results.items():
        lib = res["library"]
        lines += [f"## {name} W8A8 (exact {res['exact_accuracy']:.2f}%)", ""]
        lines.append(
            "Candidates and PDP relative to exact: "
            + ", ".join(f"{lab} {p:.3f}" for lab, p in zip(lib, res["pdp_relative"], strict=True))
            + "."
        )
        lines.append("")
        lines.append("| granularity | groups | estimate (s) | ILP time (s), per budget |")
        lines.append("|---|---:|---:|---|")
        for gran in GRANULARITIES:
            t = [
                f"{r['select_s']:.1f}" + ("" if r["status"] == "optimal" else "*")
                for r in res["runs"]
                if r["granularity"] == gran and r["selector"] == "ilp"
            ]
            lines.append(f"| {gran} | {res[f'groups_{gran}']} | {res[f'estimate_s_{gran}']:.1f} | {', '.join(t)} |")
        lines += ["", "Largest energy gain (%) within the accuracy loss (points against exact W8A8):", ""]
        cols = [("ilp", "accuracy", "ILP"), ("maxdnn", "accuracy", "heuristic")]
        if any("accuracy_calibrated" in r for r in res["runs"]):
            cols.append(("ilp", "accuracy_calibrated", "ILP + calibration"))
        lines.append("| granularity | " + " | ".join(f"{c[2]} @{loss:g}%" for c in cols for loss in LOSSES) + " |")
        lines.append("|---|" + "---:|" * (len(cols) * len(LOSSES)))
        for gran in GRANULARITIES:
            cells = []
            for sel, key, _ in cols:
                runs = [r for r in res["runs"] if r["granularity"] == gran and r["selector"] == sel]
                for loss in LOSSES:
                    g = best_gain(runs, res["exact_accuracy"], loss, key)
                    cells.append("-" if g is None else f"{100 * g:.1f}")
            lines.append(f"| {gran} | " + " | ".join(cells) + " |")
        lines += ["", "Targets (ILP, uncalibrated): filter-level gain relative to layer-level gain at equal loss:", ""]
        runs = {g: [r for r in res["runs"] if r["granularity"] == g and r["selector"] == "ilp"] for g in GRANULARITIES}
        for loss in LOSSES:
            lay, fil, ker = (best_gain(runs[g], res["exact_accuracy"], loss) for g in GRANULARITIES)
            rel = "n/a" if not lay or fil is None else f"{100 * (fil / lay - 1):+.0f}%"
            lines.append(
                f"- {loss:g}% loss: layer {_pct(lay)}, filter {_pct(fil)}, kernel {_pct(ker)}; filter vs layer {rel}"
                + (" (MAx-DNN reports 54% at 4% loss on ResNet-8)" if loss == 4.0 else "")
            )
        lines += [
            "",
            "All runs:",
            "",
            "| granularity | selector | budget | energy gain (%) | accuracy (%) | calibrated (%) | select (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in res["runs"]:
            cal = f"{r['accuracy_calibrated']:.2f}" if "accuracy_calibrated" in r else ""
            lines.append(
                f"| {r['granularity']} | {r['selector']} | {r['budget']:g} | {100 * r['energy_gain']:.1f} | "
                f"{r['accuracy']:.2f} | {cal} | {r['select_s']:.2f} |"
            )
        lines += [
            "",
            f"![accuracy vs energy gain]({out.stem}_{name}.png)",
            "",
            f"![chosen multiplier per filter]({out.stem}_{name}_filters.png)",
            "",
        ]
    if any(r.get("status") not in (None, "optimal") for res in results.values() for r in res["runs"]):
        lines += ["(* ILP stopped at its time limit: best solution found.)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

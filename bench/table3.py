"""Our FAMES Table III: energy reduction at <= 1% accuracy loss, ResNet-20 on JPEG CIFAR-10.

Usage: python bench/table3.py [--configs w8a8 w4a4 w3a3 w2a2 mixed48 w8a8-evo] [--liberty PATH] [--out DIR]

Each configuration runs the whole flow (``fames.flow.run.run``: rank-1 Taylor estimate (with the mean output
error by forward passes with ``--estimator-mean forward``), ILP over a sweep of
energy budgets, calibration) from the committed checkpoint; the headline of each is the cheapest budget whose
accuracy is within ``--max-loss`` points of the exact quantized model of the same widths. ``w8a8-evo`` uses
EvoApproxLib's signed 8x8 designs (published PDK45 power x delay) instead of our generated library.
Writes docs/results/table3.md and table3.json (+ one run folder per configuration under --work). Rows of
configurations not run this time are kept from table3.json, each with the command and date that measured it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "w8a8": ("resnet20_w8a8.pt", "generate"),
    "w4a4": ("resnet20_w4a4.pt", "generate+synth"),
    "w3a3": ("resnet20_w3a3.pt", "generate+synth"),
    "w2a2": ("resnet20_w2a2.pt", "generate+synth"),
    "mixed48": ("resnet20_mixed48.pt", "generate"),
    "w8a8-evo": ("resnet20_w8a8.pt", "evoapprox"),
    "w4a4-aware": ("resnet20_w4a4.pt", "generate+synth"),  # the synthesized designs tailored to the model's operands
    "w4a4-bias": ("resnet20_w4a4.pt", "generate+synth"),  # with the mean-error correction folded into the biases
    "w4a4-filter": ("resnet20_w4a4.pt", "generate+synth"),  # one AppMul per filter instead of per layer
    "w3a3-filter": ("resnet20_w3a3.pt", "generate+synth"),
    "w4a4-rich": ("resnet20_w4a4.pt", "generate+synth"),  # a longer synthesis keeping more designs
    "w4a4-grid": ("resnet20_w4a4.pt", "generate+synth"),  # every R of a grid measured on validation, no bisection
    "w4a4-cv": ("resnet20_w4a4.pt", "generate+synth"),  # the grid with control-variate compensation where it pays
    "w4a4-measured": ("resnet20_w4a4.pt", "generate+synth"),  # the grid with every pair's loss change measured
    "w4a4-finetune": ("resnet20_w4a4.pt", "generate+synth"),  # approximation-aware retraining after calibration
    "w3a3-finetune": ("resnet20_w3a3.pt", "generate+synth"),
    "w4a4-finetune-full": ("resnet20_w4a4.pt", "generate+synth"),  # one epoch over all 45,000 training images
    "w3a3-finetune-full": ("resnet20_w3a3.pt", "generate+synth"),
    "w4a4-layer": ("resnet20_w4a4.pt", "generate+synth"),  # one synthesized library per layer, by its output error
    "w3a3-layer": ("resnet20_w3a3.pt", "generate+synth"),
}
SYNTH = {  # `synth:` options of a configuration (else defaults) and their label
    "w4a4-aware": ({"operands": True, "metric": "mred0"}, " (operand-aware, mred0)"),
    "w4a4-rich": ({"rounds": 3, "designs": 48}, " (3 search rounds, 48 designs)"),
    **{f"{c}-layer": ({"operands": "layer", "metric": "omse", "methods": ["cgp"], "max_error": 100.0},
                      " (one CGP library per layer, omse)") for c in ("w4a4", "w3a3")},
}
SELECTION = {  # `selection:` options of a configuration (else layer level, no compensation) and their label
    "w4a4-bias": ({"compensation": "bias"}, " + bias correction"),
    "w4a4-filter": ({"granularity": "filter"}, ", filter level"),
    "w3a3-filter": ({"granularity": "filter"}, ", filter level"),
    "w4a4-cv": ({"compensation": "auto"}, " + control variate where the ILP takes it"),
}
SEARCH = {  # `search:` options of a configuration with --search (else bisection) and their label
    "w4a4-grid": ({"grid": [0.8, 0.78, 0.76, 0.74, 0.72, 0.7, 0.68, 0.66, 0.64, 0.62]}, ", R on a grid"),
    "w4a4-cv": ({"grid": [0.8, 0.76, 0.72, 0.7, 0.68, 0.66, 0.64, 0.62]}, ", R on a grid"),
    "w4a4-measured": ({"grid": [0.8, 0.78, 0.76, 0.74, 0.72, 0.7, 0.68, 0.66, 0.64, 0.62]}, ", R on a grid"),
}
ESTIMATOR = {  # `estimator:` options of a configuration (else the rank-1 Taylor estimate) and their label
    "w4a4-measured": ({"kind": "measured", "samples": 1024}, ", measured loss changes + 1 SE (1,024 images)"),
}
_TUNE = ({"samples": 20000, "epochs": 1, "lr": 0.002, "kd_alpha": 0.5, "hflip": True},
         " + fine-tuning with the AppMuls (20,000 images, 1 epoch)")
FINETUNE = {  # `finetune:` of a configuration (else none, FAMES as published) and its label
    "w4a4-finetune": _TUNE,
    "w3a3-finetune": _TUNE,
    **{f"{c}-finetune-full": ({**_TUNE[0], "samples": 45000, "lr": 0.005},
                              " + fine-tuning with the AppMuls (45,000 images, 1 epoch, lr 0.005)")
       for c in ("w4a4", "w3a3")},
}
VARIANTS = set(SYNTH) | set(SELECTION) | set(SEARCH) | set(ESTIMATOR) | set(FINETUNE)  # variants: not in the mean


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--liberty", default=str(REPO.parent / "shared" / "liberty" / "nangate45_typ.lib.gz"))
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5])
    ap.add_argument("--max-loss", type=float, default=1.0)
    ap.add_argument(
        "--estimator-mean", default="taylor", choices=["taylor", "forward"],
        help="mean output error in the Taylor model (the paper's, default) or by forward passes",
    )
    ap.add_argument("--calib-step", type=float, default=0.01, help="activation quantile search step (paper 0.01)")
    ap.add_argument("--calib-max", type=float, default=0.5, help="largest clipping quantile searched (paper 0.5)")
    ap.add_argument("--search-samples", type=int, default=None, help="samples for the quantile search's error")
    ap.add_argument(
        "--eval-images", type=int, default=None, help="class-stratified test subset for every evaluation (default: all)"
    )
    ap.add_argument(
        "--search", action="store_true",
        help="the held-out protocol: R bisected on a validation split of the training data, the chosen model tested "
        "once on the test split (accuracy and paired difference with 95%% intervals); --budgets is then unused",
    )
    ap.add_argument("--validation-images", type=int, default=None,
                    help="with --search: held-out training images (default: all the checkpoint held out)")
    ap.add_argument("--resolution", type=float, default=0.01, help="with --search: resolution of R")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="repeat each configuration with these seeds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument(
        "--time-calibration", action="store_true",
        help="only time one calibration per configuration: its chosen assignment (from --work) calibrated afresh "
        "with the settings given, on an otherwise idle machine; prints seconds and adds them to the table",
    )
    ap.add_argument("--render-only", action="store_true",
                    help="rebuild --out from its stored rows (the .json beside it) without running anything")
    ap.add_argument("--checkpoints", default=str(REPO / "checkpoints" / "holdout5k"),
                    help="folder of the checkpoints (resnet20_float.pt, resnet20_w8a8.pt, ...); the default ones hold "
                    "5,000 training images out of training, the validation split of --search")
    ap.add_argument("--work", default=str(REPO / "out" / "table3"))
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "table3.md"))
    args = ap.parse_args()
    if not (REPO.parent / "shared" / "data" / "cifar10").is_dir():
        print("SKIP: ../shared/data/cifar10 is absent (this benchmark needs JPEG CIFAR-10)")
        return 0
    from fames.flow.library import liberty_path

    liberty = str(liberty_path(args.liberty))  # a missing path is an error, not the synthetic liberty

    import torch

    from fames.flow.config import RunConfig
    from fames.flow.run import run
    from fames.io import atomic_write_text

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    store = Path(args.out).with_suffix(".json")
    kept = json.loads(store.read_text()) if store.is_file() else {}
    rows: dict[str, dict] = kept.get("rows", {})
    notes: list[str] = kept.get("notes", [])  # hand-written remarks on earlier rows, kept with them
    if args.render_only:
        args.configs = []
    if args.time_calibration:
        for name in args.configs:
            if name in rows:
                rows[name]["calibration_idle_s"] = time_calibration(name, args, liberty)
        atomic_write_text(store, json.dumps({"rows": rows, "notes": notes}, indent=1))
        args.configs = []
    budgets = " ".join(f"{b:g}" for b in args.budgets)
    cmd = (
        f"python bench/table3.py --configs {' '.join(args.configs)} --checkpoints "
        f"{os.path.relpath(args.checkpoints, REPO)} --budgets {budgets} --calib-step "
        f"{args.calib_step:g} --calib-max {args.calib_max:g} --search-samples {args.search_samples} "
        f"--estimator-mean {args.estimator_mean}"
        + (f" --eval-images {args.eval_images}" if args.eval_images else "")
        + (f" --search --resolution {args.resolution:g}" if args.search else "")
        + (f" --validation-images {args.validation_images}" if args.search and args.validation_images else "")
        + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
    )
    for name in args.configs:
        ck, library = CONFIGS[name]
        path = Path(args.checkpoints) / ck
        if not path.is_file():
            print(f"skip {name}: {path} not found (checkpoints/train_all.sh trains it)")
            continue
        t0 = time.perf_counter()
        r = run(
            RunConfig.from_dict({
                "model": "resnet20",
                "checkpoint": str(path),
                "float_checkpoint": str(Path(args.checkpoints) / "resnet20_float.pt"),
                "data": {"dataset": "cifar10", "eval_images": args.eval_images},
                "library": library,
                **({"synth": SYNTH[name][0]} if name in SYNTH else {}),
                "liberty": liberty,
                "budget": "search" if args.search else args.budgets,
                "search": {"validation_images": args.validation_images, "resolution": args.resolution,
                           **SEARCH.get(name, ({}, ""))[0]},
                "seeds": args.seeds,
                "max_accuracy_loss": args.max_loss,
                # --estimator-mean forward: the mean output error by forward passes (MeanForward), Taylor on the rest
                "estimator": {
                    "kind": "taylor-rank1" + ("+forward" if args.estimator_mean == "forward" else ""),
                    "validate": False,
                    **ESTIMATOR.get(name, ({}, ""))[0],
                },
                "calibration": {
                    "quantile_step": args.calib_step,
                    "quantile_max": args.calib_max,
                    "search_samples": args.search_samples,
                },
                "selection": {"stop_at_loss": not args.search, **SELECTION.get(name, ({}, ""))[0]},
                **({"finetune": FINETUNE[name][0]} if name in FINETUNE else {}),
                "output": str(Path(args.work) / name),
            })
        ).to_dict()
        within = [
            x
            for x in r["runs"]
            if not x["infeasible"] and r["accuracy"]["exact_quant"] - x["accuracy"] <= args.max_loss
        ]
        a = r["accuracy"]
        rows[name] = {
            "library": library + SYNTH.get(name, ({}, ""))[1]
            + SELECTION.get(name, ({}, ""))[1] + SEARCH.get(name, ({}, ""))[1] + ESTIMATOR.get(name, ({}, ""))[1]
            + FINETUNE.get(name, ({}, ""))[1],
            "checkpoint": ck, "float": a["float"], "exact_quant": a["exact_quant"],
            "approx": a["approx"], "approx_uncalibrated": a["approx_uncalibrated"],
            "relative_energy": r["relative_energy"], "energy_reduction": r["energy_reduction"],
            "within": bool(within), "seconds": time.perf_counter() - t0, "command": cmd,
            "date": dt.date.today().isoformat(), "eval_images": args.eval_images,
            "budget": r["budget"], "test": r.get("test"), "seeds": r.get("seeds"),
            "calibrate_s": {f"{x['budget']:g}": x["calibrate_s"] for x in r["runs"] if not x["infeasible"]},
            "validation": {f"{x['budget']:g}": x["accuracy"] for x in r["runs"] if not x["infeasible"]},
        }
        print(f"{name}: calibration seconds per budget: " + ", ".join(
            f"R={k}: {v:.0f} s" for k, v in rows[name]["calibrate_s"].items()))
        print(
            f"{name}: energy reduction {100 * r['energy_reduction']:.2f}% at {a['approx']:.2f}% "
            f"(exact {a['exact_quant']:.2f}%)"
        )
        atomic_write_text(store, json.dumps({"rows": rows, "notes": notes}, indent=1))
    if rows:
        text = render(rows, notes, args, liberty)
        print(text)
        atomic_write_text(args.out, text)
    return 0


def render(rows: dict[str, dict], notes: list[str], args: argparse.Namespace, liberty: str) -> str:
    """docs/results/table3.md from the stored rows: the held-out protocol's rows first, then any grid-sweep rows."""
    from fames.flow.report import paired_text

    lines = [
        f"# Table III (ours): ResNet-20, JPEG CIFAR-10, energy reduction at <= {args.max_loss:g} point accuracy loss",
        "",
        "Commands (each row names the one that measured it):",
        "",
    ]
    commands = sorted({(r["command"], r["date"]) for r in rows.values()})
    lines += [f"{i + 1}. `{c}` ({d})" for i, (c, d) in enumerate(commands)]
    lines += [
        "",
        f"{os.cpu_count()} CPU cores; liberty for our library: {Path(liberty).name}; EvoApproxLib: published PDK45 "
        "power x delay. Energy = multiplier energy (MACs x PDP per op) relative to the exact multiplier of the same "
        "widths.",
    ]
    held = [n for n in CONFIGS if n in rows and rows[n].get("test")]
    if held:
        lines += [
            "",
            "Held-out protocol (`--search`): R is bisected to the resolution given on a validation split held out "
            "from the training data (the estimate and calibration never see it; the calibration guard judges on it) "
            "for the smallest R whose calibrated model stays within the bound of the exact quantized model there, "
            "with a margin of one standard error of the paired difference (`search.margin`; without it the chosen R "
            "only just touches the bound on validation and is optimistic by selection); "
            "the chosen model is then evaluated once on the full test split (10,000 images): Wilson 95% interval, "
            "and the paired difference to the exact quantized model on the same images (95% interval, exact McNemar "
            "p). The checkpoints of `checkpoints/holdout5k` were trained from scratch on 45,000 of the 50,000 "
            "training images; the validation split comes from the other 5,000 (recorded in each checkpoint, "
            "`fames train --holdout`), so validation accuracy estimates test accuracy without bias. A validation "
            "cell marked `seen` was drawn from images the checkpoint was trained on (optimistic).",
            "",
            "| config | library | chosen R | validation %: approx / exact | test % [95%] | exact test % | paired "
            "difference, points [95%], p | within on test | reduced energy | seeds: reduction mean +/- sd | "
            "calibration s per budget | command |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in held:
            r, t = rows[n], rows[n]["test"]
            pd, ci = t["paired_difference"], t["accuracy_ci95"]
            sd = r.get("seeds") or {}
            spread = (f"{100 * sd['energy_reduction']['mean']:.2f}% +/- {100 * sd['energy_reduction']['std']:.2f} "
                      f"({len(sd['runs'])} seeds)" if sd else "-")
            cal = ", ".join(f"{v:.0f}" for v in r.get("calibrate_s", {}).values() if v > 0) or "-"
            if r.get("calibration_idle_s"):
                cal += f" (idle: {r['calibration_idle_s']:.0f})"
            seen = "may have seen" in (t.get("validation") or {}).get("source", "may have seen")
            lines.append(
                f"| {n} | {r['library']} | {r['budget']:g} | {r['approx']:.2f} / {r['exact_quant']:.2f}"
                f"{' seen' if seen else ''} | "
                f"{t['accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] | {t['exact_accuracy']:.2f} | "
                f"{paired_text(pd)}, {pd['mcnemar_p']:.2g} | "
                f"{'yes' if -pd['points'] <= args.max_loss else 'NO'} | {100 * r['energy_reduction']:.2f}% | "
                f"{spread} | {cal} | {1 + [c for c, _ in commands].index(r['command'])} |"
            )
        main = [n for n in held if n not in VARIANTS]  # a variant of a row is not counted twice
        ok = [-rows[n]["test"]["paired_difference"]["points"] <= args.max_loss for n in main]
        red = [100 * rows[n]["energy_reduction"] if o else 0.0 for n, o in zip(main, ok, strict=True)]
        lines.append(
            f"\nMean energy reduction over the {len(main)} configurations {', '.join(main)} at a paired test loss "
            f"of at most {args.max_loss:g} point (a row beyond it counted as 0%): {sum(red) / len(red):.2f}% "
            "(paper: 28.67%); "
            f"every chosen model within the bound on the test split: "
            f"{'yes' if all(ok) else 'no'}."
        )
    grid = [n for n in CONFIGS if n in rows and not rows[n].get("test")]
    if grid:
        lines += [
            "",
            "Grid sweep (budgets from the largest down, stopping after the first beyond the bound; the headline is the "
            "cheapest budget within it, judged on the test images it is reported on):",
            "",
            "| config | library | checkpoint | float % | exact quant % | FAMES % | before calib. % | relative energy "
            "| reduced energy | within loss | test images | command |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in grid:
            r = rows[name]
            lines.append(
                f"| {name} | {r['library']} | {r['checkpoint']} | {r['float']:.2f} | {r['exact_quant']:.2f} | "
                f"{r['approx']:.2f} | {r['approx_uncalibrated']:.2f} | {r['relative_energy']:.4f} | "
                f"{100 * r['energy_reduction']:.2f}% | {'yes' if r['within'] else 'NO'} | "
                f"{r.get('eval_images') or 'all'} | {1 + [c for c, _ in commands].index(r['command'])} |"
            )
    lines += [f"\n{n}" for n in notes]
    return "\n".join(lines) + "\n"


def time_calibration(name: str, args: argparse.Namespace, liberty: str) -> float:
    """Seconds of one FAMES calibration of ``name``'s chosen assignment (from its run folder under ``--work``)
    on 1,024 training images, with the calibration settings of the command line."""
    from fames.appmul.library import Library
    from fames.flow.config import RunConfig
    from fames.flow.inputs import prepare
    from fames.method.assignment import load_assignment, substitute
    from fames.method.calibrate import CalibrationConfig, calibrate

    ck, library = CONFIGS[name]
    run_dir = Path(args.work) / name
    p = prepare(RunConfig.from_dict({"model": "resnet20", "checkpoint": str(Path(args.checkpoints) / ck),
                                     "data": {"dataset": "cifar10"}, "library": library, "liberty": liberty,
                                     **({"synth": SYNTH[name][0]} if name in SYNTH else {})}),
                progress=False)
    substitute(p.model, load_assignment(run_dir / "assignment.json"), Library.load(run_dir / "library"))
    cfg = CalibrationConfig(quantile_step=args.calib_step, quantile_max=args.calib_max,
                            search_samples=args.search_samples, progress=False)
    x, y = p.train_images(cfg.samples)
    t0 = time.perf_counter()
    rep = calibrate(p.model, (x, y), cfg)
    seconds = time.perf_counter() - t0
    print(f"{name}: one calibration of the chosen assignment: {seconds:.1f} s (quantile search "
          f"{rep.seconds_search:.1f} s, LWC {rep.seconds_lwc:.1f} s)")
    return seconds


if __name__ == "__main__":
    sys.exit(main())

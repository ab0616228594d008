"""``fames demo``: the whole flow on embedded data, in a few minutes on 2 CPU cores.

Trains the small digits CNN (scikit-learn's bundled 8x8 digits), quantizes it (QAT) at W4A4 and at a mixed
4/8-bit configuration, builds our AppMul families for those widths, costs them on the project's synthetic
liberty, and runs FAMES for each: estimate -> the smallest energy budget (ILP and calibration at each step of a
bisection) within the loss bound on validation images held out from training -> that model tested once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fames.io import atomic_write_text

HOLDOUT = 300  # digits training images held out for validation (of 1,437)
BOUND = 2.0  # points of accuracy loss: 300 validation images resolve a paired loss to about +/- 1 point (95%)
CONFIGS = {
    "W4A4": "W4A4",
    "mixed": {"w_bits": 4, "a_bits": 4, "layers": {"conv1": "W8A8", "linear": "W8A8"}},
}


def train_digits(out: Path, progress: bool = True) -> dict[str, Path]:
    """Float and QAT checkpoints of ``digits_cnn`` (reused when already in ``out``), trained on the digits training
    split less ``HOLDOUT`` images held out for validation (recorded in the checkpoints, as ``fames train --holdout``
    does), so that the run chooses its budget on images the model never saw."""
    from fames.data import get_dataset, get_loader, held_out, holdout_record, subset
    from fames.models import create_model, save_checkpoint
    from fames.train import TrainConfig, evaluate, qat, train

    data = get_dataset("digits", "train", augment=True)
    record = holdout_record(len(data), HOLDOUT)

    def fresh() -> Any:  # each training draws as in a run from scratch, whichever checkpoints are on disk already
        torch.manual_seed(0)
        return get_loader(subset(data, held_out(record, len(data))[1]), "train", 64, seed=0)

    test = get_loader("digits", "test", 500)
    meta = {"accuracy": None, "dataset": "digits", "holdout": record}
    paths = {"float": out / "digits_float.pt"}
    if not paths["float"].is_file():
        tl = fresh()
        model = create_model("digits_cnn")
        train(model, tl, TrainConfig(epochs=10, lr=0.05, seed=0), progress=progress)
        acc = evaluate(model, test, progress=False)["accuracy"]
        save_checkpoint(model, paths["float"], meta={**meta, "quant": None, "accuracy": acc})
    for label, qcfg in CONFIGS.items():
        p = out / f"digits_{label}.pt"
        paths[label] = p
        if p.is_file():
            continue
        from fames.train import load_model

        tl = fresh()
        model = load_model("digits_cnn", paths["float"])
        qat(model, qcfg, tl, TrainConfig(epochs=4, lr=0.01, seed=0), progress=progress)
        acc = evaluate(model, test, progress=False)["accuracy"]
        save_checkpoint(model, p, meta={**meta, "quant": model.fames_quant_config, "accuracy": acc})
    return paths


def run_demo(out: str | Path = "fames-demo", progress: bool = True) -> dict[str, Any]:
    """Train, quantize and run FAMES on digits; writes ``<out>/<config>/report.md`` and ``<out>/summary.md``."""
    from fames.flow.config import DataConfig, EstimatorConfig, RunConfig, SearchConfig
    from fames.flow.report import paired_text
    from fames.flow.run import run
    from fames.method.calibrate import CalibrationConfig

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = train_digits(out, progress)
    reports = {}
    for label in CONFIGS:
        cfg = RunConfig(
            model="digits_cnn",
            checkpoint=str(ck[label]),
            float_checkpoint=str(ck["float"]),
            data=DataConfig(dataset="digits"),
            library="generate",
            liberty="synthetic",
            budget="search",  # the cheapest R within the bound on the held-out images, then tested once
            max_accuracy_loss=BOUND,
            search=SearchConfig(resolution=0.02),
            estimator=EstimatorConfig(kind="taylor-rank1", samples=256, validate=True),
            # demo-sized calibration (paper: 1,024 samples, 5 epochs, q step 0.01 up to 0.5)
            calibration=CalibrationConfig(samples=512, epochs=3, quantile_step=0.02, quantile_max=0.3,
                                          search_samples=256),
            output=str(out / label),
        )
        reports[label] = run(cfg, progress=progress).to_dict()
    lines = [
        "# fames demo: digits CNN, our AppMul families, synthetic 45 nm-like liberty",
        "",
        f"R: the smallest energy ratio whose model stays within {BOUND:g} points of the exact quantized one (plus one "
        f"standard error) on {HOLDOUT} training images held out from the checkpoints' training (validation); that "
        "model is then tested once on the digits test split.",
        "",
        "| config | R | energy reduction | validation %: FAMES / exact | test %: float / exact quantized / FAMES "
        "[95%] | paired test difference, points [95%] | Spearman (rank-1) | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in reports.items():
        a, t = r["accuracy"], r["test"]
        lo, hi = t["accuracy_ci95"]
        lines.append(
            f"| {label} | {r['budget']:g} | {100 * r['energy_reduction']:.1f}% | {a['approx']:.2f} / "
            f"{a['exact_quant']:.2f} | {a['float']:.2f} / {t['exact_accuracy']:.2f} / {t['accuracy']:.2f} "
            f"[{lo:.1f}, {hi:.1f}] | {paired_text(t['paired_difference'])} | {r['estimator_spearman']:.3f} | "
            f"{label}/report.md |"
        )
    lines.append(f"\nTotal {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} torch thread(s) (training and "
                 "calibration repeat exactly at the same count; another count rounds their sums otherwise).")
    summary = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {"summary": summary, "reports": reports}

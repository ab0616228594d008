"""``fames demo``: the whole flow on embedded data, in a few minutes on 2 CPU cores.

Trains the small digits CNN (scikit-learn's bundled 8x8 digits), quantizes it (QAT) at W4A4 and at a mixed
4/8-bit configuration, builds our AppMul families for those widths, costs them on the project's synthetic
liberty, and runs FAMES (estimate -> ILP over a sweep of energy budgets -> calibration) for each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fames.io import atomic_write_text

CONFIGS = {
    "W4A4": "W4A4",
    "mixed": {"w_bits": 4, "a_bits": 4, "layers": {"conv1": "W8A8", "linear": "W8A8"}},
}


def train_digits(out: Path, progress: bool = True) -> dict[str, Path]:
    """Float and QAT checkpoints of ``digits_cnn`` (reused when already in ``out``)."""
    from fames.data import get_loader
    from fames.models import create_model, save_checkpoint
    from fames.train import TrainConfig, evaluate, qat, train

    torch.manual_seed(0)
    tl = get_loader("digits", "train", 64, augment=True, seed=0)
    test = get_loader("digits", "test", 500)
    paths = {"float": out / "digits_float.pt"}
    if not paths["float"].is_file():
        model = create_model("digits_cnn")
        train(model, tl, TrainConfig(epochs=10, lr=0.05, seed=0), progress=progress)
        acc = evaluate(model, test, progress=False)["accuracy"]
        save_checkpoint(model, paths["float"], meta={"quant": None, "accuracy": acc, "dataset": "digits"})
    for label, qcfg in CONFIGS.items():
        p = out / f"digits_{label}.pt"
        paths[label] = p
        if p.is_file():
            continue
        from fames.train import load_model

        model = load_model("digits_cnn", paths["float"])
        qat(model, qcfg, tl, TrainConfig(epochs=4, lr=0.01, seed=0), progress=progress)
        acc = evaluate(model, test, progress=False)["accuracy"]
        save_checkpoint(model, p, meta={"quant": model.fames_quant_config, "accuracy": acc, "dataset": "digits"})
    return paths


def run_demo(out: str | Path = "fames-demo", progress: bool = True) -> dict[str, Any]:
    """Train, quantize and run FAMES on digits; writes ``<out>/<config>/report.md`` and ``<out>/summary.md``."""
    from fames.flow.config import DataConfig, EstimatorConfig, RunConfig
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
            budget=[0.9, 0.75, 0.6, 0.45],
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
        "| config | float % | exact quantized % | FAMES % | before calibration % | energy reduction | "
        "Spearman (rank-1) | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in reports.items():
        a = r["accuracy"]
        lines.append(
            f"| {label} | {a['float']:.2f} | {a['exact_quant']:.2f} | {a['approx']:.2f} | "
            f"{a['approx_uncalibrated']:.2f} | {100 * r['energy_reduction']:.1f}% | {r['estimator_spearman']:.3f} | "
            f"{label}/report.md |"
        )
    lines.append(f"\nTotal {time.perf_counter() - t0:.0f} s.")
    summary = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {"summary": summary, "reports": reports}

"""Calibration vs retraining (FAMES Table IV): accuracy and seconds of FAMES calibration against straight-through
fine-tuning of the same approximate model for N epochs (default 5), for the configurations of our Table III.

Usage: python bench/calibration.py [--configs w8a8 w4a4 w3a3 w2a2 mixed48] [--budget 0.7] [--retrain-epochs 5]
       [--retrain-images 50000] [--calib-samples 1024] [--test-images 10000]

For each configuration: rank-1 Taylor estimate on --samples training images and the ILP at --budget give one
approximate ResNet-20; then (a) FAMES calibration (quantile search + learnable weight clipping, --calib-samples
images, 5 epochs) and (b) retraining of every weight and step size, AppMuls in the loop, for --retrain-epochs
epochs over --retrain-images training images (augmented, batch 128, SGD lr --retrain-lr, cosine), each from the
same starting model. With --retrain-images below the 50,000 of the split, the retraining time is ALSO given
extrapolated to full epochs (seconds x 50,000 / images; said so in the table). Writes docs/results/calibration.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "w8a8": "resnet20_w8a8.pt",
    "w4a4": "resnet20_w4a4.pt",
    "w3a3": "resnet20_w3a3.pt",
    "w2a2": "resnet20_w2a2.pt",
    "mixed48": "resnet20_mixed48.pt",
}
TRAIN_SPLIT = 50000
MARK = "<!-- calibration -->"  # the generated section of --out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--budget", type=float, default=0.7)
    ap.add_argument("--liberty", default="synthetic")
    ap.add_argument("--samples", type=int, default=256, help="images for the Taylor estimate")
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--calib-epochs", type=int, default=5)
    ap.add_argument("--calib-step", type=float, default=0.01, help="activation quantile search step (paper 0.01)")
    ap.add_argument("--calib-max", type=float, default=0.5, help="largest clipping quantile searched (paper 0.5)")
    ap.add_argument("--search-samples", type=int, default=None, help="samples for the quantile search's error")
    ap.add_argument("--retrain-epochs", type=float, default=5.0)
    ap.add_argument("--retrain-images", type=int, default=TRAIN_SPLIT)
    ap.add_argument("--retrain-lr", type=float, default=0.002)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "calibration.md"))
    args = ap.parse_args()
    if not (REPO.parent / "shared" / "data" / "cifar10").is_dir():
        print("SKIP: ../shared/data/cifar10 is absent (this benchmark needs JPEG CIFAR-10)")
        return 0

    import torch

    from fames.baselines import retrain
    from fames.data import get_loader
    from fames.flow.config import RunConfig
    from fames.flow.inputs import prepare
    from fames.io import write_section
    from fames.method.calibrate import CalibrationConfig, calibrate
    from fames.method.estimate import TaylorEstimator
    from fames.method.problem import apply_choice
    from fames.method.select import ILPSelector
    from fames.train import TrainConfig, evaluate

    torch.set_num_threads(1)
    rows = []
    for name in args.configs:
        ck = REPO / "checkpoints" / CONFIGS[name]
        if not ck.is_file():
            print(f"skip {name}: {ck} not found (checkpoints/train_all.sh trains it)")
            continue
        cfg = RunConfig.from_dict(
            {"model": "resnet20", "checkpoint": str(ck), "data": {"dataset": "cifar10"}, "liberty": args.liberty}
        )
        s = prepare(cfg)
        tx, ty = s.test_images(args.test_images)
        test = [(tx[i : i + 500], ty[i : i + 500]) for i in range(0, len(tx), 500)]
        exact = evaluate(s.model, test, False)["accuracy"]
        x, y = s.train_images(args.samples)
        mp = s.problem(TaylorEstimator("rank1").estimate(s.model, x, y, s.candidates).omega)
        sel = ILPSelector().solve(mp.problem, args.budget)
        start = apply_choice(copy.deepcopy(s.model), mp, sel.choice)
        before = evaluate(start, test, False)["accuracy"]

        cal = copy.deepcopy(start)
        cx, cy = s.train_images(args.calib_samples, seed_offset=3)
        t0 = time.perf_counter()
        ccfg = CalibrationConfig(
            epochs=args.calib_epochs,
            samples=len(cx),
            quantile_step=args.calib_step,
            quantile_max=args.calib_max,
            search_samples=args.search_samples,
            progress=True,
        )
        calibrate(cal, (cx, cy), ccfg)
        cal_s = time.perf_counter() - t0
        cal_acc = evaluate(cal, test, False)["accuracy"]

        ret = copy.deepcopy(start)
        if args.retrain_images >= TRAIN_SPLIT:
            loader = get_loader(
                cfg.data.dataset,
                "train",
                128,
                root=cfg.data.root,
                shuffle=True,
                augment=True,
                seed=cfg.seed,
                channels_last=True,
            )
        else:
            rx, ry = s.train_images(args.retrain_images, seed_offset=4)
            loader = [(rx[i : i + 128], ry[i : i + 128]) for i in range(0, len(rx), 128)]
        rep = retrain(ret, loader, TrainConfig(epochs=args.retrain_epochs, lr=args.retrain_lr))
        ret_acc = evaluate(ret, test, False)["accuracy"]
        full_s = rep.seconds * TRAIN_SPLIT / min(args.retrain_images, TRAIN_SPLIT)
        rows.append((name, exact, sel.ratio, before, cal_acc, cal_s, ret_acc, rep.seconds, full_s))
        # after every configuration (an interrupted run keeps them), between the markers: hand-written notes below stay
        write_section(args.out, MARK, _render(args, rows))
        print(
            f"{name}: R={sel.ratio:.3f} exact {exact:.2f} approx {before:.2f} calibrated {cal_acc:.2f} "
            f"({cal_s:.0f} s) retrained {ret_acc:.2f} ({rep.seconds:.0f} s; full epochs ~{full_s:.0f} s)"
        )
    if rows:
        print(_render(args, rows))
    return 0


def _render(args: argparse.Namespace, rows: list[tuple]) -> str:
    """The Markdown table of the configurations measured so far."""
    cmd = "python bench/calibration.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    sub = args.retrain_images < TRAIN_SPLIT
    lines = [
        "# Calibration vs retraining (FAMES Table IV), ResNet-20 on JPEG CIFAR-10",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {dt.date.today().isoformat()}; {os.cpu_count()} CPU cores (shared with other jobs), 1 torch thread; "
        f"ILP at R = {args.budget:g} on a rank-1 estimate ({args.samples} images); calibration: {args.calib_samples} "
        f"images, quantiles 0..{args.calib_max:g} step {args.calib_step:g} (error on {args.search_samples or 'all'} "
        f"images), {args.calib_epochs} epochs of LWC; retraining: {args.retrain_epochs:g} epochs over "
        f"{min(args.retrain_images, TRAIN_SPLIT)} training images, lr {args.retrain_lr:g}; accuracy on "
        f"{args.test_images} test images (fixed random subset).",
        "",
        "| config | relative energy | exact % | approx. % | calibrated % | calibration s | retrained % | retraining s "
        f"| retraining s, {args.retrain_epochs:g} full epochs{' (extrapolated)' if sub else ''} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, exact, r, before, ca, cs, ra, rs, fs in rows:
        lines.append(
            f"| {name} | {r:.4f} | {exact:.2f} | {before:.2f} | {ca:.2f} | {cs:.0f} | {ra:.2f} | {rs:.0f} | {fs:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

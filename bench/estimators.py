"""Estimators side by side (FAMES Fig. 5): test loss vs energy ratio of the ILP selection made with each estimator.

Usage: python bench/estimators.py [--settings w4a4 w8a8 mixed] [--estimators l2 mre first-order taylor-rank1
       taylor-full taylor-rank1+forward taylor-full+forward] [--budgets ...] [--samples 128] [--test-images 1000]

For each setting (ResNet-20 uniform 4-bit, uniform 8-bit, mixed 4/8-bit; JPEG CIFAR-10) and estimator: Omega on
--samples training images, one ILP per budget on it, then the cross-entropy loss and accuracy of the selected
model on --test-images test images (bit-exact emulation, no calibration). The better estimator gives the lower
curve. L2 = Frobenius norm of the error table, MRE = mean relative error distance of the AppMul (the same in
every layer, as in the paper's comparison). Writes docs/results/estimators.md and estimators.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"w4a4": "resnet20_w4a4.pt", "w8a8": "resnet20_w8a8.pt", "mixed": "resnet20_mixed48.pt"}
NAMES = ("l2", "mre", "first-order", "taylor-rank1", "taylor-full", "taylor-rank1+forward", "taylor-full+forward")


def _loss_acc(model, x, y, batch: int = 500) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(mean cross-entropy, accuracy %) of ``model`` on ``x``, ``y``, emulating by LUT gathers (each selected
    model is evaluated once, so factorizing its tables would not pay)."""
    import torch
    import torch.nn.functional as F

    from fames.quant import qlayers

    for _, layer in qlayers(model):
        layer.gather_only = True
    loss = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z = model(x[i : i + batch])
            loss += F.cross_entropy(z, y[i : i + batch], reduction="sum").item()
            correct += (z.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(x), 100 * correct / len(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--estimators", nargs="+", default=list(NAMES), choices=list(NAMES))
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5])
    ap.add_argument("--liberty", default="synthetic")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "estimators.md"))
    args = ap.parse_args()
    if not (REPO.parent / "shared" / "data" / "cifar10").is_dir():
        print("SKIP: ../shared/data/cifar10 is absent (this benchmark needs JPEG CIFAR-10)")
        return 0

    import numpy as np
    import torch

    from fames.flow.config import RunConfig
    from fames.flow.inputs import prepare
    from fames.io import atomic_write_text
    from fames.method.estimate import make_estimator
    from fames.method.problem import apply_choice
    from fames.method.select import InfeasibleBudget, pareto_sweep

    torch.set_num_threads(1)
    curves: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    est_s: dict[tuple[str, str], float] = {}
    for setting in args.settings:
        ck = REPO / "checkpoints" / SETTINGS[setting]
        if not ck.is_file():
            print(f"skip {setting}: {ck} not found (checkpoints/train_all.sh trains it)")
            continue
        s = prepare(
            RunConfig.from_dict(
                {"model": "resnet20", "checkpoint": str(ck), "data": {"dataset": "cifar10"}, "liberty": args.liberty}
            )
        )
        x, y = s.train_images(args.samples)
        tx, ty = s.test_images(args.test_images)
        base = _loss_acc(s.model, tx, ty)
        curves[setting] = {"exact": [(1.0, *base, 0.0)]}
        for name in args.estimators:
            est = make_estimator(name).estimate(s.model, x, y, s.candidates)
            est_s[(setting, name)] = est.seconds
            mp = s.problem(est.omega)
            pts = []
            for sel in pareto_sweep(mp.problem, args.budgets):
                if isinstance(sel, InfeasibleBudget):
                    continue
                apply_choice(s.model, mp, sel.choice)
                pts.append((sel.ratio, *_loss_acc(s.model, tx, ty), sel.budget))
            curves[setting][name] = pts
            print(
                f"{setting} {name}: estimate {est.seconds:.1f} s; "
                + ", ".join(f"R={b:g}: loss {lo:.3f} acc {a:.2f}" for _, lo, a, b in pts)
            )

    if not curves:
        return 0
    cmd = "python bench/estimators.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Estimators side by side (FAMES Fig. 5): ResNet-20 on JPEG CIFAR-10, ILP selection per estimator",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {dt.date.today().isoformat()}; {os.cpu_count()} CPU cores (shared); estimate on {args.samples} "
        f"training images; loss (mean cross-entropy) and accuracy on {args.test_images} test images (a fixed random "
        f"subset); no calibration; liberty {Path(args.liberty).name}.",
        "",
    ]
    for setting, cs in curves.items():
        lo0, a0 = cs["exact"][0][1:3]
        lines += [
            f"## {setting} (exact: loss {lo0:.3f}, accuracy {a0:.2f}%)",
            "",
            "| estimator | estimate s | " + " | ".join(f"R={b:g}" for b in args.budgets) + " | mean loss |",
            "|---|---|" + "---|" * (len(args.budgets) + 1),
        ]
        for name in args.estimators:
            by_b = {b: (lo, a) for _, lo, a, b in cs[name]}
            cells = [f"{by_b[b][0]:.3f} ({by_b[b][1]:.1f}%)" if b in by_b else "infeasible" for b in args.budgets]
            mean = np.mean([v[0] for v in by_b.values()]) if by_b else float("nan")
            lines.append(f"| {name} | {est_s[(setting, name)]:.1f} | " + " | ".join(cells) + f" | {mean:.3f} |")
        lines.append("")
    lines.append("Cells: test loss (accuracy) of the ILP selection at budget R. Lower loss = better estimator.")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    for ax, (setting, cs) in zip(axes[0], curves.items(), strict=True):
        for name in args.estimators:
            if cs[name]:
                r, lo, _, _ = zip(*cs[name], strict=True)
                ax.plot(r, lo, marker="o", label=name)
        ax.axhline(cs["exact"][0][1], color="k", ls="--", lw=0.8, label="exact")
        ax.set_yscale("log")
        ax.set_xlabel("relative multiplier energy")
        ax.set_ylabel("test loss")
        ax.set_title(f"ResNet-20 {setting}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(args.out).with_suffix(".png"), dpi=110)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

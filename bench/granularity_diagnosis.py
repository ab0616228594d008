"""Why a finer granularity can lose: estimated against true loss changes of layer- and filter-level ILP selections.

Usage: python bench/granularity_diagnosis.py [--models resnet32] [--budgets 0.7 0.6 0.5 0.4 0.3]
       [--compensation none bias] [--curvatures bound covariance] [--samples 512] [--validation-images 2000]
       [--out docs/results/granularity.md] [--report-only]

For each model (W8A8; ResNet-32 by PTQ from the akamaster weights, as in ``bench/granularity.py --search``; or
``--checkpoint`` / ``--library`` for another one) and compensation: one rank-1 Taylor estimate at layer level and
one at filter level per ``--curvatures`` split of the second-order term (``bound``: the triangle bound, ``fames
run``'s default; ``covariance``: each filter's measured share), the exact ILP at every energy budget R on each, and
for every selection

* the estimate: the ILP objective, sum over groups of the estimated loss change (nats);
* the truth: the measured mean cross-entropy change against the exact quantized model on validation images
  (training images not used by the estimate; uncalibrated, so the estimate alone is judged), and the accuracy;
* the layer-level selection re-scored with the filter-level estimate (it is a feasible point of the filter ILP):
  if the filter ILP's objective is lower but its true loss change higher, the per-filter estimate misleads the ILP.

With ``bias`` every approximate layer gets the mean-error correction (fitted on 256 other training images), in the
estimate and in the model. Writes a section of ``--out`` (between ``<!-- granularity_diagnosis -->`` marks) and
``granularity_diagnosis_<model>.json`` / ``.png`` beside it. No test image is used.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from granularity import SEARCH_MODELS, recorded_command  # noqa: E402  (the granularity bench's models and checkpoints)

MARK = "<!-- granularity_diagnosis -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet32"], choices=list(SEARCH_MODELS))
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.7, 0.6, 0.5, 0.4, 0.3])
    ap.add_argument("--compensation", nargs="+", choices=["none", "bias"], default=["none", "bias"])
    ap.add_argument("--curvatures", nargs="+", choices=["bound", "covariance", "own"], default=["bound", "covariance"],
                    help="how the filter-level estimate splits a layer's second-order term (TaylorEstimator)")
    ap.add_argument("--samples", type=int, default=512, help="training images of the estimate")
    ap.add_argument("--validation-images", type=int, default=2000, help="training images the truth is measured on")
    ap.add_argument("--ilp-time", type=float, default=120.0, help="ILP time limit per budget (s)")
    ap.add_argument("--liberty", default=str(REPO.parent / "shared" / "liberty" / "nangate45_typ.lib.gz"))
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "granularity.md"))
    ap.add_argument("--report-only", action="store_true", help="rebuild the section and plots from the JSON files")
    ap.add_argument("--checkpoint", default=None,
                    help="another checkpoint for the (single) model, e.g. checkpoints/holdout5k/resnet20_w4a4.pt")
    ap.add_argument("--library", default=None, help="another library than exact + ROUP, e.g. generate+synth")
    ap.add_argument("--tag", default=None, help="name of the result (default: the model's)")
    args = ap.parse_args()
    if not (REPO.parent / "shared" / "data" / "cifar10").is_dir():
        raise SystemExit("skipped: ../shared/data/cifar10 is missing (this bench needs JPEG CIFAR-10)")
    from fames.io import atomic_write_text, write_section

    out = Path(args.out)
    command = recorded_command("granularity_diagnosis.py")
    if (args.checkpoint or args.library or args.tag) and len(args.models) != 1:
        raise SystemExit("--checkpoint, --library and --tag apply to one model: give one --models")
    for name in [] if args.report_only else args.models:
        res = diagnose(name, args)
        res.update(command=command, date=dt.date.today().isoformat())
        path = out.with_name(f"granularity_diagnosis_{args.tag or name}.json")
        atomic_write_text(path, json.dumps(res, indent=1))
        plot(res, path.with_suffix(".png"))
    results = {p.stem.removeprefix("granularity_diagnosis_"): json.loads(p.read_text())
               for p in sorted(out.parent.glob("granularity_diagnosis_*.json"))}
    for name, res in results.items() if args.report_only else ():
        plot(res, out.with_name(f"granularity_diagnosis_{name}.png"))
    write_section(out, MARK, report(results, out))
    print(f"wrote {out}")
    return 0


def diagnose(name: str, args: argparse.Namespace) -> dict:
    """Every (compensation, granularity, budget) selection of one model: estimated and true loss change."""
    import numpy as np
    import torch

    from fames.flow.config import RunConfig
    from fames.flow.inputs import prepare
    from fames.method.compensate import compensate_model
    from fames.method.estimate import TaylorEstimator
    from fames.method.problem import apply_choice
    from fames.method.select import ILPSelector, InfeasibleBudget
    from fames.train import evaluate

    torch.set_num_threads(2)
    ck, quant = SEARCH_MODELS[name]
    if args.checkpoint:
        ck, quant = args.checkpoint, None
    from fames.flow.library import liberty_path

    liberty = str(liberty_path(args.liberty))  # a missing path is an error, not the synthetic liberty
    lib = {"library": args.library} if args.library else {"families": ["exact", "roup"]}
    cfg = RunConfig.from_dict({
        "model": name, "checkpoint": ck if ck == "default" else str(REPO / ck), "quant": quant,
        "data": {"dataset": "cifar10"}, "liberty": liberty, **lib,
    })
    prep = prepare(cfg, progress=True)
    model, cands = prep.model, prep.candidates
    n_est, n_cal = args.samples, 256
    xa, ya = prep.train_images(n_est + n_cal + args.validation_images)
    x, y = xa[:n_est], ya[:n_est]
    cx = xa[n_est:n_est + n_cal]
    vx, vy = xa[n_est + n_cal:], ya[n_est + n_cal:]
    val = [(vx[i:i + 250], vy[i:i + 250]) for i in range(0, len(vy), 250)]
    exact = evaluate(model, val, False)
    print(f"{name}: exact validation {exact['accuracy']:.2f}%, loss {exact['loss']:.4f}", flush=True)
    res: dict = {"model": name, "checkpoint": ck, "library": args.library or "exact + roup", "exact": exact,
                 "validation_images": len(vy), "samples": n_est, "rows": []}
    ilp = ILPSelector(args.ilp_time, 1e-4)
    for comp in args.compensation:
        mps = {}
        for gran, curv in [("layer", "bound")] + [("filter", c) for c in args.curvatures]:
            e = TaylorEstimator("rank1", progress=False, curvature=curv, bias_correction=comp == "bias")
            est = e.estimate(model, x, y, cands, gran)
            key = gran if gran == "layer" else f"filter/{curv}"
            res[f"estimate_s_{key}_{comp}"] = est.seconds
            mps[key] = prep.setup.problem(est.omega, gran)
        # filter groups of each layer, in problem order, to expand a layer-level choice to filter level
        layer_of = [n for n, _ in mps[f"filter/{args.curvatures[0]}"].groups]
        for ratio in args.budgets:
            sel = {}
            for key, mp in mps.items():
                try:
                    sel[key] = ilp.solve(mp.problem, ratio)
                except InfeasibleBudget:
                    continue
            lay = {n: int(k) for (n, _), k in zip(mps["layer"].groups, sel["layer"].choice, strict=True)} \
                if "layer" in sel else None
            for key, s in sel.items():
                gran = key.partition("/")[0]
                m = apply_choice(copy.deepcopy(model), mps[key], s.choice)
                if comp == "bias":
                    compensate_model(m, cx, calibrated=True, method="bias")
                t0 = time.perf_counter()
                ev = evaluate(m, val, False)
                row = {"compensation": comp, "granularity": key, "budget": ratio, "relative_energy": s.ratio,
                       "estimate": float(s.omega), "true": ev["loss"] - exact["loss"], "accuracy": ev["accuracy"],
                       "status": s.status, "eval_s": time.perf_counter() - t0,
                       "approximate_groups": sum(not mps[key].appmul(g, k).is_exact() for g, k in enumerate(s.choice)),
                       "groups": len(s.choice)}
                if gran == "filter" and lay is not None:
                    expanded = np.array([lay[n] for n in layer_of])
                    om = mps[key].problem.omega
                    row["layer_choice_filter_estimate"] = float(om[np.arange(len(expanded)), expanded].sum())
                    # per-layer split of both estimates, to see where the filter ILP spends its budget
                    row["per_layer"] = _per_layer(mps[key], s.choice, expanded)
                res["rows"].append(row)
                print(f"  {comp:4s} {key:17s} R={ratio:.2f}: est {row['estimate']:+.4f}, true {row['true']:+.4f}, "
                      f"acc {row['accuracy']:.2f}%" + (f", layer choice under filter estimate "
                      f"{row['layer_choice_filter_estimate']:+.4f}" if "layer_choice_filter_estimate" in row else ""),
                      flush=True)
    return res


def _per_layer(mp, choice, expanded) -> dict:  # type: ignore[no-untyped-def]
    """Per layer: filter-level estimate of the filter choice and of the expanded layer choice, and the energy of
    each (fraction of the exact total)."""
    om, en, ex = mp.problem.omega, mp.problem.energy, mp.problem.exact_energy.sum()
    out: dict = {}
    for i, (n, _) in enumerate(mp.groups):
        d = out.setdefault(n, [0.0, 0.0, 0.0, 0.0])
        d[0] += om[i, choice[i]]
        d[1] += om[i, expanded[i]]
        d[2] += en[i, choice[i]] / ex
        d[3] += en[i, expanded[i]] / ex
    return {n: [float(v) for v in d] for n, d in out.items()}


def plot(res: dict, path: Path) -> None:
    """Estimated against true loss change, one panel per compensation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = sorted({r["compensation"] for r in res["rows"]})
    fig, axes = plt.subplots(1, len(comps), figsize=(5 * len(comps), 4), squeeze=False)
    for ax, comp in zip(axes[0], comps, strict=True):
        for gran, mk in zip(_keys(res), "os^v", strict=False):
            rows = [r for r in res["rows"] if r["compensation"] == comp and r["granularity"] == gran]
            ax.scatter([r["estimate"] for r in rows], [r["true"] for r in rows], marker=mk, label=gran)
            for r in rows:
                ax.annotate(f"{r['budget']:g}", (r["estimate"], r["true"]), fontsize=7)
        mine = [v for r in res["rows"] if r["compensation"] == comp for v in (r["estimate"], r["true"])]
        lim = [min(0.0, *mine), max(mine)]
        ax.plot(lim, lim, "k:", lw=0.8, label="estimate = truth")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_xlabel("estimated loss change (nats)")
        ax.set_ylabel("true loss change on validation (nats)")
        ax.set_title(f"{_title(res)}, compensation {comp} (labels: R)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(res: dict) -> str:
    """``resnet32 W8A8`` for the bench's own models, else the model, checkpoint and library."""
    if "checkpoint" not in res or res["checkpoint"] == SEARCH_MODELS[res["model"]][0]:
        return f"{res['model']} W8A8"
    return f"{res['model']}, {Path(res['checkpoint']).name}, library {res['library']}"


def _keys(res: dict) -> list[str]:
    """The selections compared: ``layer`` first, then ``filter/<curvature>`` in run order."""
    return list(dict.fromkeys(r["granularity"] for r in res["rows"]))


def report(results: dict, out: Path) -> str:
    lines = ["", "## Estimated against true loss change of layer- and filter-level selections", ""]
    for name, res in results.items():
        lines += [f"### {_title(res)}", "", f"Command: `{res['command']}` ({res['date']}). Validation: "
                  f"{res['validation_images']} training images not used by the estimate ({res['samples']} images), "
                  f"uncalibrated; exact {res['exact']['accuracy']:.2f}%, loss {res['exact']['loss']:.4f} nats. "
                  "Estimate = ILP objective (nats); true = measured mean cross-entropy change; `layer@filter` = the "
                  "layer-level selection scored by the filter-level estimate.", "",
                  "| compensation | R | " + " | ".join(f"{k}: est / true / acc %" for k in _keys(res))
                  + " | " + " | ".join(f"layer@{k} est" for k in _keys(res)[1:]) + " |",
                  "|---|---:|" + "---|" * (2 * len(_keys(res)) - 1)]
        for comp in sorted({r["compensation"] for r in res["rows"]}):
            for b in sorted({r["budget"] for r in res["rows"]}, reverse=True):
                rs = {r["granularity"]: r for r in res["rows"] if r["compensation"] == comp and r["budget"] == b}
                cells = [f"{r['estimate']:+.3f} / {r['true']:+.3f} / {r['accuracy']:.2f}" if (r := rs.get(k)) else "-"
                         for k in _keys(res)]
                lfs = [rs.get(k, {}).get("layer_choice_filter_estimate") for k in _keys(res)[1:]]
                cells += ["-" if v is None else f"{v:+.3f}" for v in lfs]
                lines.append(f"| {comp} | {b:g} | " + " | ".join(cells) + " |")
        est_s = ", ".join(f"{k.removeprefix('estimate_s_')} {v:.0f} s" for k, v in res.items()
                          if k.startswith("estimate_s_"))
        lines += ["", f"Estimate time: {est_s}.", "",
                  f"![estimated vs true loss change]({out.with_name(f'granularity_diagnosis_{name}.png').name})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Operand-aware synthesis: designs whose error is weighted by one layer's operand pairs against designs with the
uniform error, compared by the true loss change they cause in that layer at equal PDP.

Usage: python bench/als_operands.py [--checkpoint checkpoints/resnet20_w4a4.pt] [--layers L1 L2 L3]
       [--generations G] [--seeds S] [--images N] [--loss-images M] [--metric M] [--out docs/results/als.md]

For each layer: the exact operand-pair counts of the layer on N training images weight the error of a CGP-only
synthesis (same seeds, generations and thresholds as the uniform one; with --metric omse the layer's per-channel
counts weight its output error, against a uniform mse library); every design of both libraries is costed on
NanGate (PDP relative to our exact multiplier). Per PDP level p each library offers, as a user would choose without
seeing any loss, its design of smallest own error (uniform, or weighted by the layer's operands) among those with
PDP/exact <= p; each offer is put alone into its layer and its loss change measured per image on --loss-images other
training images; the table compares the two offers by their paired difference on the same images, with its 95%
interval (an aware offer of lower PDP whose interval lies above 0 is a trade-off, cheaper with more loss, not a loss at
equal PDP), and per layer the mean loss change of each library's offers over the levels. Writes the section
between the `<!-- als_operands -->` markers of docs/results/als.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MARK = "<!-- als_operands{} -->"  # one section per metric: "" for mred, "_mred0", ...
# MRED in %, MED in LSB, MSE in LSB^2; omse's bound is in the uniform mse's unit, mapped to each layer (synthesize)
MAX_ERROR = {"mred": 20.0, "mred0": 20.0, "med": 8.0, "mse": 100.0, "omse": 100.0}
LEVELS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "resnet20_w4a4.pt"))
    ap.add_argument("--layers", nargs="+", default=["layer1.0.conv1", "layer2.0.conv2", "layer3.2.conv2"])
    ap.add_argument("--generations", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--images", type=int, default=4096,
                    help="training images the operand pairs are counted on")
    ap.add_argument("--loss-images", type=int, default=16384,
                    help="other training images the loss changes are measured on, paired (same images for both "
                         "offers); at 4,096 a W4A4 loss change has a standard error of ~0.008 nat")
    ap.add_argument("--metric", default="mred", choices=["mred", "mred0", "med", "mse", "omse"],
                    help="error metric of both libraries (mred0: zero products counted; omse: the layer's output "
                         "error, each channel's bias accumulated over its fan-in, against a uniform mse library; "
                         "see fames.appmul.synth.error)")
    ap.add_argument("--max-error", type=float, default=None,
                    help="error bound of both libraries (default: 20 for mred/mred0, 8 for med, 100 for mse, the "
                         "range of the 4x4 family designs with MRED <= 20%%); the CGP thresholds scale with it")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--liberty", default=str(SHARED / "liberty" / "nangate45_typ.lib.gz"))
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "als.md"))
    args = ap.parse_args()
    if not Path(args.liberty).is_file() or not (SHARED / "data" / "cifar10").is_dir():
        print("SKIP: ../shared/liberty or ../shared/data/cifar10 is absent (this benchmark needs ../shared)")
        return 0

    import itertools

    import torch

    from fames.appmul.synth.library import (
        SynthConfig,
        gate_costs,
        synthesize,
        threshold_scale,
    )
    from fames.data import get_loader
    from fames.flow.library import for_layer, pdp_costs
    from fames.hw.cost import cost_library
    from fames.io import write_section
    from fames.method.estimate.truth import per_image_loss_changes
    from fames.quant.convert import qlayers
    from fames.quant.operands import operand_histograms
    from fames.train import load_model

    model = load_model("resnet20", args.checkpoint).eval()
    layers = dict(qlayers(model))
    widths = {layers[n].widths for n in args.layers}
    if len(widths) != 1:
        raise SystemExit(f"the layers {args.layers} have different widths {widths}")
    a, w, signed, _ = widths.pop()
    loader = get_loader("cifar10", "train", 128, shuffle=False)
    batches = list(itertools.islice(loader, -(-(args.images + max(args.loss_images, args.images)) // 128)))
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    # operand pairs from images [N, 2N) (as since 2026-12-03, so the synthesis jobs keep their keys); the loss changes
    # on the first N and those after 2N: never the images the operand pairs were counted on
    hists = operand_histograms(model, xs[args.images : 2 * args.images], args.layers, per_output=args.metric == "omse")
    keep = torch.cat([torch.arange(args.images), torch.arange(2 * args.images, len(ys))])[: args.loss_images]
    x, y = xs[keep].contiguous(memory_format=torch.channels_last), ys[keep]
    gc = gate_costs(args.liberty)
    bound = args.max_error or MAX_ERROR[args.metric]
    # omse has no uniform form (it needs a layer's channels): its uniform counterpart is mse
    uniform_metric = "mse" if args.metric == "omse" else args.metric
    cfg = SynthConfig(a, w, signed, methods=("cgp",), metric=uniform_metric, generations=args.generations,
                      seeds=args.seeds, max_error=bound)  # the default CGP grid, scaled to the bound
    aware = replace(cfg, metric=args.metric)
    t0 = time.perf_counter()
    real = pdp_costs(args.liberty)  # both libraries' fronts chosen on the same real PDP
    libs = {"uniform": synthesize(cfg, gate_cost=gc, workers=args.workers, cost=real)}
    for n in args.layers:  # unique names across the layers' libraries
        libs[n] = [for_layer(m, n) for m in synthesize(aware, weights=hists[n], gate_cost=gc, workers=args.workers,
                                                        cost=real)]
    synth_s = time.perf_counter() - t0
    scales = ", ".join(f"{n} x{threshold_scale(aware, hists[n]):.3g}" for n in args.layers)
    pdp = {}
    for ms in libs.values():
        for m in cost_library(ms, args.liberty, jobs=args.workers):
            pdp[m.name] = m.cost.relative["pdp"]
    lines = [f"## Operand-aware synthesis (`bench/als_operands.py`, {args.metric})", "",
             f"`python bench/als_operands.py {' '.join(shlex.quote(s) for s in sys.argv[1:])}` "
             f"({dt.date.today().isoformat()}; synthesis {synth_s:.0f} s): {a}x{w} "
             f"{'signed' if signed else 'unsigned'} CGP libraries, {uniform_metric} <= {bound:g}"
             + (" (omse: the bound mapped like the thresholds)" if args.metric == "omse" else "")
             + f"; loss change (nat) of {args.checkpoint.split('/')[-1]} on {len(y)} training images when only that "
             "layer uses the design. Per PDP/exact level each library offers its design of smallest own error among "
             f"those at or below it (chosen without the loss): the uniform {uniform_metric} against the "
             f"{args.metric} weighted by the layer's own operand pairs (counted on {args.images} other training "
             f"images; CGP thresholds mapped to the weighted metric by `threshold_scale`: {scales}). "
             "`aware - uniform`: the paired difference of "
             "the two offers' loss changes on the same images, mean [95% interval]; `worse` when the interval lies "
             "above 0 and the aware offer costs as much or more, `cheaper, more loss` when it costs less.", "",
             "| layer | PDP/exact <= | uniform: design | loss change | operand-aware: design | loss change | "
             "aware - uniform, nat [95%] | aware better |", "|---|---|---|---|---|---|---|---|"]
    wins = total = worse = cheaper = 0
    per_layer = []
    for n in args.layers:
        cands = libs["uniform"] + libs[n]
        names = [m.name for m in cands]
        k = len(libs["uniform"])
        offers = []
        for p in LEVELS:
            picks = []
            for part in (range(k), range(k, len(names))):
                v = [i for i in part if pdp[names[i]] <= p]
                picks.append(min(v, key=lambda i: (cands[i].provenance["error"], pdp[names[i]])) if v else None)
            offers.append(picks)
        offered = sorted({i for ps in offers for i in ps if i is not None})
        changes = dict(zip(offered, per_image_loss_changes(model, x, y, {n: [cands[i] for i in offered]})[n],
                           strict=True))  # (S,) per offered design, the same images for every one
        layer_wins, means = 0, ([], [])
        for p, picks in zip(LEVELS, offers, strict=True):
            cells = " | ".join("- | -" if i is None else
                               f"{cands[i].provenance['error']:.3g} @ {pdp[names[i]]:.3f} | {changes[i].mean():.4f}"
                               for i in picks)
            if None in picks:
                lines.append(f"| {n} | {p:g} | {cells} | - | - |")
                continue
            d = changes[picks[1]] - changes[picks[0]]
            half = 1.96 * float(d.std(ddof=1)) / len(d) ** 0.5 if picks[0] != picks[1] else 0.0
            lo, hi = float(d.mean()) - half, float(d.mean()) + half
            total += 1
            layer_wins += d.mean() <= 0
            for m, i in zip(means, picks, strict=True):
                m.append(float(changes[i].mean()))
            # a loss comparison is a fair one at equal PDP: an aware offer that costs less is a trade-off, not a loss
            less = pdp[names[picks[1]]] < pdp[names[picks[0]]]
            if d.mean() <= 0:
                verdict = "yes"
            elif lo <= 0:
                verdict = "no (within noise)"
            elif less:
                cheaper += 1
                verdict = "no: cheaper, more loss"
            else:
                worse += 1
                verdict = "no, worse"
            lines.append(f"| {n} | {p:g} | {cells} | {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] | {verdict} |")
        wins += layer_wins
        if means[0]:  # a layer where one library offers nothing at any level has no row
            per_layer.append(f"| {n} | {layer_wins} of {len(means[0])} | {sum(means[0]) / len(means[0]):+.4f} | "
                             f"{sum(means[1]) / len(means[1]):+.4f} |")
    lines += ["", f"Operand-aware at least as good at {wins} of {total} (layer, level) points; significantly worse "
              f"(paired 95% interval above 0) at equal or higher PDP at {worse}, cheaper but with more loss at "
              f"{cheaper}.", "", "Per layer: levels where the operand-aware offer is at least as good, and the mean "
              "loss change (nat) of each library's offers over the levels:", "",
              "| layer | aware at least as good | uniform: mean loss change | operand-aware: mean loss change |",
              "|---|---|---|---|", *per_layer]
    write_section(args.out, MARK.format("" if args.metric == "mred" else f"_{args.metric}"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

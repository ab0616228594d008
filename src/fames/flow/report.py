"""Run reports: ``report.json``, ``report.md`` (a table like FAMES' Table III) and plots (PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from fames.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fames.method.assignment import describe_spec


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table3_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per feasible budget: bits, multipliers, accuracy, relative accuracy, energy."""
    exact = report["accuracy"]["exact_quant"]
    q = report.get("quant") or {}
    bits = "?"
    if q:
        first_last = {"8bit": " (first/last W8A8)", "float": " (first/last float)"}.get(q.get("first_last"), "")
        layers = q.get("layers") or {}
        n_float = sum(v == "float" for v in layers.values())  # (layers the forward never ran are recorded float)
        bits = f"W{q.get('w_bits')}A{q.get('a_bits')}" + ("+mixed" if len(layers) > n_float else "") \
            + (f"+{n_float} float" if n_float else "") + first_last
    rows = []
    for r in report["runs"]:
        if r["infeasible"]:
            continue
        # the designs the assignment uses, whatever the layer or group (the per-layer table says where)
        names = sorted({a for v in r["assignment"].values() for a in ([v] if isinstance(v, str) else v["appmuls"])})
        rows.append(
            {
                "bits": bits,
                "budget": r["budget"],
                "multipliers": ", ".join(names),
                "accuracy": r["accuracy"],
                "accuracy_uncalibrated": r["accuracy_uncalibrated"],
                "calibration_skipped": bool(r.get("calibration_skipped")),
                "beyond_reach": bool(r.get("beyond_reach")),
                "layer_fallback": r.get("granularity_used") == "layer",
                "relative_accuracy": r["accuracy"] / exact if exact else None,
                "relative_energy": r["relative_energy"],
                "energy_reduction": r["energy_reduction"],
                "paired_difference": r.get("paired_difference"),
                "accuracy_ci95": r.get("accuracy_ci95"),
                "within_bound": r.get("within_bound"),
            }
        )
    return rows


def paired_text(pd: dict[str, Any] | None) -> str:
    """``-0.41 [-0.86, +0.04]``: a paired accuracy difference in points with its 95% interval."""
    return "-" if not pd else f"{pd['points']:+.2f} [{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}]"


def _on_validation(report: dict[str, Any]) -> str:
    if not report.get("test"):  # list mode: where the budget was chosen among several, it was on these images
        several = len([r for r in report["runs"] if not r["infeasible"]]) > 1
        return (", chosen on the same images it is measured on: optimistic by selection; `budget: search` chooses "
                "on a validation split and tests once" if several else "")
    m = (report["config"].get("search") or {}).get("margin") or 0
    return " on the validation split" + (f", with a margin of {m:g} standard error(s) of the paired loss" if m else "")


def _headline_row(report: dict[str, Any]) -> dict[str, Any]:
    return next((r for r in report["runs"] if r["budget"] == report["budget"] and not r["infeasible"]), {})


def _undone(report: dict[str, Any], r: dict[str, Any]) -> bool:
    """A budget whose calibration ran and was undone (it lost accuracy on the images it is judged on)."""
    return (bool(report["config"].get("calibration")) and not r.get("infeasible") and r.get("calibration_kept") is False
            and not r.get("calibration_skipped") and not r.get("beyond_reach"))


def markdown(report: dict[str, Any], figures: list[str] | None = None) -> str:
    acc = report["accuracy"]
    t = report["timing"]
    calibrations = [r.get("calibrate_s") or 0.0 for r in report["runs"] if not r["infeasible"]]
    undone = [r["budget"] for r in report["runs"] if _undone(report, r)]
    lines = [
        f"# fames run: {report['model']}",
        "",
        (f"Headline (cheapest budget within {report['config']['max_accuracy_loss']} point(s) of the exact quantized "
         f"model{_on_validation(report)}): " if report.get("within_bound", True) else
         f"**No budget stayed within {report['config']['max_accuracy_loss']} point(s) of the exact quantized model**;"
         " the most accurate one: ")
        + f"budget R = {report['budget']}, **energy reduction {100 * report['energy_reduction']:.2f}%**, "
        f"accuracy {acc['approx']:.2f}% (exact quantized {acc['exact_quant']:.2f}%, "
        + ("" if report.get("test") or acc["float"] is None else f"float {acc['float']:.2f}%, ")  # a test figure
        + f"before calibration {acc['approx_uncalibrated']:.2f}%"
        + ("; calibration undone: it lost accuracy where it is judged" if _undone(report, _headline_row(report))
           else "")
        + ").",
        "",
        *_uncertainty(report),
        *_seeds(report),
        *([f"Layers computed in floating point (no AppMul, outside the energy figures): "
           f"{', '.join(report['float_layers'])}.", ""] if report.get("float_layers") else []),
        *([f"**Designs chosen without a circuit** (known only by their table; no Verilog of a circuit, only a "
           f"truth-table module in `hardware_tables/`, and no cost of a circuit): "
           f"{', '.join(report['without_circuit'])}. Import their Verilog (`fames lib import`) to build them and cost "
           "them like the others.", ""]
          if report.get("without_circuit") else []),
        "A saved result holds the hand-off for hardware: `hardware.json` (conventions, per layer its AppMul(s) and "
        "their Verilog, widths, quantization parameters, corrections), `hardware.npz` (weight codes and scales).", "",
        *([f"Multiply-accumulates in floating point outside the quantized layers (no AppMul, outside the energy "
           f"figures): {100 * report['float_macs']['share']:.1f}% of the model's; per inference: "
           + ", ".join(f"{k} {v:,}" for k, v in report["float_macs"]["modules"].items()) + ".", ""]
          if report.get("float_macs") else []),
        f"Estimator {report['estimator']}: Spearman rho between estimated and true loss change "
        + (f"{report['estimator_spearman']:.3f}" if report.get("estimator_spearman") is not None
           else "not measured (estimator.validate)") + f". Timing: estimate {t['estimate_s']:.2f} s, select "
        f"{t['select_s']:.3f} s, calibrate {t['calibrate_s']:.2f} s"
        + (f" (the headline budget's; all {len(calibrations)} budgets "
           f"{t.get('calibrate_all_s', sum(calibrations)):.1f} s)"
           if len(calibrations) > 1 else "")
        + (f" (of which fine-tuning {t['finetune_s']:.1f} s)" if t.get("finetune_s") else "")
        + f", total {t['total_s']:.1f} s"
        + (f" on {t['threads']} torch thread(s) (calibration repeats exactly at the same count)" if "threads" in t
           else "") + ".",
        "",
    ]
    rows = table3_rows(report)
    paired = any(r["paired_difference"] for r in rows)  # the target mode: each R judged by its paired loss
    judged = any(r["within_bound"] is not None for r in rows)
    lines += [
        "| bits | R | multipliers | accuracy % [95%] | before calib. % | rel. accuracy | rel. energy | reduced energy |"
        + (" paired difference to exact, points [95%] |" if paired else "") + (" within the bound |" if judged else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if paired else "") + ("---|" if judged else ""),
    ]
    for r in rows:
        ci = f" [{r['accuracy_ci95'][0]:.1f}, {r['accuracy_ci95'][1]:.1f}]" if r["accuracy_ci95"] else ""
        lines.append(
            f"| {r['bits']} | {r['budget']:g}{' (L)' if r['layer_fallback'] else ''} | {r['multipliers']} | "
            f"{r['accuracy']:.2f}{'*' if r['calibration_skipped'] else ''}{'+' if r['beyond_reach'] else ''}{ci} | "
            f"{r['accuracy_uncalibrated']:.2f} | {_fmt(r['relative_accuracy'], '.4f')} | {r['relative_energy']:.4f} "
            f"| {100 * r['energy_reduction']:.2f}% |" + (f" {paired_text(r['paired_difference'])} |" if paired else "")
            + (f" {'yes' if r['within_bound'] else 'no'} |" if judged else "")
        )
    if judged and report.get("test") and (report["config"].get("search") or {}).get("margin"):
        lines.append(f"\nWithin the bound: the paired validation loss plus {report['config']['search']['margin']:g} "
                     "standard error(s) of it is at most the bound (`search.margin`).")
    if any(r["calibration_skipped"] for r in rows):
        lines.append("\n\\* within the bound before calibration: the search did not calibrate this R (calibration "
                     "cannot move it out of the bound).")
    if undone:
        lines.append("\nCalibration undone at R = " + ", ".join(f"{b:g}" for b in undone) + ": it lost accuracy on "
                     "the held-out images it is judged on, so those rows are the models before it.")
    if any(r["beyond_reach"] for r in rows):
        within = report["config"]["search"]["calibrate_within"]
        lines.append(f"\n\\+ more than {within:g} points below the bound before calibration: judged beyond it "
                     "without calibrating (`search.calibrate_within`).")
    if any(r["layer_fallback"] for r in rows):
        lines.append(f"\n(L): the layer-level selection of this budget scored better than the "
                     f"{report['config']['selection']['granularity']}-level one before calibration and replaced it "
                     "(`selection.layer_fallback`).")
    over = [r for r in report["runs"] if not r["infeasible"] and r["relative_energy"] > r["budget"] + 1e-9]
    if over:
        lines.append("\nThe relative energy exceeds the budget at R = " + ", ".join(f"{r['budget']:g}" for r in over)
                     + ": the energy of the control-variate corrections (`selection.compensation`) is in the total "
                     "and takes it beyond the budget (`control_variate` corrects every approximate layer after "
                     "selection; `auto` weighs an estimate of it inside the budget).")
    dropped = [r for r in report["runs"] if r.get("compensation_kept") is False]
    if dropped and report["config"]["selection"].get("compensation") == "bias":
        lines.append("\nThe bias corrections lost accuracy on the guard images at R = "
                     + ", ".join(f"{r['budget']:g}" for r in dropped)
                     + " (the same assignment did better without them) and were not kept there.")
    elif dropped:
        lines.append("\nThe control-variate corrections fitted after calibration lost held-out accuracy, or their "
                     "accumulators took the energy beyond the budget, at R = "
                     + ", ".join(f"{r['budget']:g}" for r in dropped)
                     + " and were not kept there: those rows are the models as measured before them (with "
                     "`compensation: auto`, the offline corrections the selection chose; else none).")
    for r in report["runs"]:
        if r["infeasible"]:
            lines.append(f"\nBudget R = {r['budget']:g}: infeasible (smallest feasible R = {r['min_ratio']:.6f}).")
        elif (r.get("ilp_status") or "optimal") != "optimal":
            lines.append(f"\nBudget R = {r['budget']:g}: the ILP stopped at its {r['ilp_status']} (best solution "
                         "found is used).")
    lines += ["", "## Assignment of the headline run", "", "| layer | AppMul |", "|---|---|"]
    for n, v in report["assignment"].items():
        lines.append(f"| {n} | {describe_spec(v)} |")
    if figures:
        lines += ["", "Plots: " + ", ".join(f"`{f}`" for f in figures) + "."]
    data = report["config"].get("data") or {}
    if data.get("dataset"):
        subset = f" --eval-images {data['eval_images']}" if data.get("eval_images") else ""
        what = "test accuracy" if report.get("test") else "headline accuracy"
        lines.append(f"Reproduce the {what}: `fames eval --checkpoint model.pt --dataset {data['dataset']}{subset}` "
                     "(from this folder; the AppMuls of assignment.json and library/ come with it).")
    return "\n".join(lines) + "\n"


def _uncertainty(report: dict[str, Any]) -> list[str]:
    """The headline's 95% intervals (accuracy, and the paired difference to the exact quantized model)."""
    t = report.get("test")
    if t:  # target mode: chosen on the validation split, measured once on the test data
        pd, ci, v = t["paired_difference"], t["accuracy_ci95"], t.get("validation") or {}
        split = f"the validation split ({v['images']} images, {v['source']})" if v else "the validation split"
        return [
            f"**Test** ({t['images']} images, measured once after choosing R on {split}): accuracy "
            f"{t['accuracy']:.2f}% (95% interval {ci[0]:.2f}-{ci[1]:.2f}%), exact quantized {t['exact_accuracy']:.2f}%"
            + (f", float {report['accuracy']['float']:.2f}%" if report["accuracy"].get("float") is not None else "")
            + ";"
            f" paired difference {pd['points']:+.2f} points (95% interval {pd['ci95'][0]:+.2f} to "
            f"{pd['ci95'][1]:+.2f}; McNemar p = {pd['mcnemar_p']:.3g}). The rows below are validation accuracies.",
            "",
        ]
    ci, pd = report.get("accuracy_ci95"), report.get("paired_difference")
    if not ci or not pd:
        return []
    return [
        f"On the {pd['n']} evaluation images: accuracy {report['accuracy']['approx']:.2f}% (95% interval "
        f"{ci[0]:.2f}-{ci[1]:.2f}%); paired difference to the exact quantized model {pd['points']:+.2f} points (95% "
        f"interval {pd['ci95'][0]:+.2f} to {pd['ci95'][1]:+.2f}; {pd['b_only']} images gained, {pd['a_only']} lost; "
        f"McNemar p = {pd['mcnemar_p']:.3g}).",
        "",
    ]


def _seeds(report: dict[str, Any]) -> list[str]:
    """The spread of the headline over repeated seeds."""
    sp = report.get("seeds")
    if not sp:
        return []
    e, a = sp["energy_reduction"], sp["accuracy"]
    line = (f"Over {len(sp['runs'])} seeds ({', '.join(str(r['seed']) for r in sp['runs'])}): energy reduction "
            f"{100 * e['mean']:.2f}% +/- {100 * e['std']:.2f} (min {100 * e['min']:.2f}%, max {100 * e['max']:.2f}%), "
            f"accuracy {a['mean']:.2f}% +/- {a['std']:.2f}")
    if "paired_points" in sp:
        p = sp["paired_points"]
        line += f", paired difference {p['mean']:+.2f} +/- {p['std']:.2f} points"
    return [line + " (mean +/- standard deviation).", ""]


def _save(fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Fig. 4-, 3-, 2-like plots and the per-layer assignment; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sc = report.get("estimator_scatter")
    if sc:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        layers = sorted(set(sc["layer"]), key=sc["layer"].index)
        est, tru = np.array(sc["estimated"]), np.array(sc["true"])
        for n in layers:
            sel = np.array([x == n for x in sc["layer"]])
            ax.scatter(tru[sel], est[sel], s=14, label=n, alpha=0.8)
        lim = [min(est.min(), tru.min()), max(est.max(), tru.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("true loss change")
        ax.set_ylabel("estimated loss change")
        ax.set_title(f"{report['estimator']}: Spearman {report['estimator_spearman']:.3f}")
        if len(layers) <= 12:
            ax.legend(fontsize=7)
        _save(fig, out / "fig_estimator.png")
        written.append(out / "fig_estimator.png")
    runs = [r for r in report["runs"] if not r["infeasible"]]
    t = report.get("test")
    if runs and t:  # target mode: the searched frontier on the validation split, the choice and its test result
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        e, a = [r["relative_energy"] for r in runs], [r["accuracy"] for r in runs]
        ax.plot(e, a, "o", label="searched R (validation)")
        best = _headline_row(report)
        ax.plot([best["relative_energy"]], [best["accuracy"]], "*", ms=14, label=f"chosen R = {best['budget']:g}")
        lo, hi = t["accuracy_ci95"]
        ax.errorbar([best["relative_energy"]], [t["accuracy"]], yerr=[[t["accuracy"] - lo], [hi - t["accuracy"]]],
                    fmt="s", color="tab:red", capsize=4, label=f"test ({t['images']} images, 95%)")
        ax.axhline(report["accuracy"]["exact_quant"] - report["config"]["max_accuracy_loss"], color="k", ls="--",
                   lw=0.8, label="loss bound (validation)")
        ax.set_xlabel("relative multiplier energy")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        _save(fig, out / "fig_frontier.png")
        written.append(out / "fig_frontier.png")
    if runs:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        e = [r["relative_energy"] for r in runs]
        ax.plot(e, [r["accuracy"] for r in runs], "o-", label="FAMES (calibrated)")
        ax.plot(e, [r["accuracy_uncalibrated"] for r in runs], "s--", label="before calibration")
        ax.axhline(report["accuracy"]["exact_quant"], color="k", lw=0.8, label="exact quantized")
        ax.set_xlabel("relative multiplier energy")
        ax.set_ylabel("accuracy (%)")
        ax.legend()
        ax.grid(alpha=0.3)
        _save(fig, out / "fig_pareto.png")
        written.append(out / "fig_pareto.png")
        best = _headline_row(report)
        names = list(best["per_layer_energy"])
        rel = [best["per_layer_energy"][n]["energy_fj"] / best["per_layer_energy"][n]["exact_fj"] for n in names]
        fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(names)), 4))
        ax.bar(range(len(names)), rel, color="tab:green")
        for i, n in enumerate(names):
            v = best["assignment"].get(n, "exact")
            label = v if isinstance(v, str) else f"{len(v['appmuls'])} AppMuls"
            ax.text(i, rel[i], label, rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_ylim(0, 1.6)
        ax.set_ylabel("layer energy / exact")
        ax.set_title(f"chosen AppMul per layer (R = {best['budget']:g})")
        _save(fig, out / "fig_assignment.png")
        written.append(out / "fig_assignment.png")
        d = dict(best["output_difference"])
        if _undone(report, best):  # the "calibrated" model is the uncalibrated one
            d.pop("calibrated", None)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for k, style in (("uncalibrated", "tab:red"), ("calibrated", "tab:blue")):
            if k in d:
                h = d[k]
                centers = 0.5 * (np.array(h["edges"][1:]) + np.array(h["edges"][:-1]))
                ax.plot(centers, h["counts"], color=style, label=f"{k} (mean |d| {h['mean_abs']:.3f})")
        ax.set_xlabel("logit difference, approximate - exact quantized")
        ax.set_ylabel("count")
        ax.set_title("output difference before / after calibration" if "calibrated" in d
                     else "output difference (calibration undone)" if _undone(report, best)
                     else "output difference (not calibrated)")
        ax.legend(fontsize=8)
        _save(fig, out / "fig_calibration.png")
        written.append(out / "fig_calibration.png")
    return written


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write report.json, report.md and the plots into ``out``; returns the files written (report.md first)."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    figs = plots(report, out)
    return [atomic_write_text(out / "report.md", markdown(report, [f.name for f in figs])), out / "report.json",
            *figs]

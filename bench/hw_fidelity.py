"""Hardware-cost fidelity: our cost engine against EvoApproxLib's published PDK45 figures (Synopsys DC).

Usage: python bench/hw_fidelity.py [--liberties nangate45_typ gscl45nm] [--out docs/results/hw_cost.md]

Imports the EvoApproxLib 8x8 unsigned gate-level netlists of ../shared/evoapproxlib/verilog_dev in one batch,
costs each under every liberty, energy model (zero-delay, glitch-aware or propagated toggles), product-bit load
and accounting of primary-input switching (`input_nets`), and prints
Spearman and log-Pearson correlations of power, delay, area and PDP against the published figures of
../shared/evoapproxlib/index.csv, pooled and on the near-exact designs (published MRED < 0.5%), plus the
fames/published power ratio of the smallest designs (<= 6 cells). Writes the section between the
`<!-- hw_fidelity -->` markers of docs/results/hw_cost.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MARK = "<!-- hw_fidelity -->"
QUANTITIES = (("power", "power_uw", "pwr_mW", 1e-3), ("delay", "delay_ns", "delay_ns", 1.0),
              ("area", "area_um2", "area_um2", 1.0), ("PDP", "pdp_fj", "pdp_pJ", 1e-3))


def correlations(ours: list[float], published: list[float]) -> tuple[float, float]:
    """Spearman rho and Pearson r of the logs (pairs with a non-positive value left out of the latter)."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    rho = float(spearmanr(ours, published)[0])
    pos = [(a, b) for a, b in zip(ours, published, strict=True) if a > 0 and b > 0]
    r = float(pearsonr(np.log([a for a, _ in pos]), np.log([b for _, b in pos]))[0]) if len(pos) > 2 else float("nan")
    return rho, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--liberties", nargs="+", default=["nangate45_typ", "gscl45nm"])
    ap.add_argument("--input-nets", nargs="+", default=["all", "none"])
    ap.add_argument("--output-loads", nargs="+", type=float, default=[3.9, 0.0], help="fF on every product bit")
    ap.add_argument("--energy", nargs="+", default=["zero-delay", "glitch", "propagated"],
                    choices=["zero-delay", "glitch", "propagated"])
    ap.add_argument("--near-exact", type=float, default=0.5, help="MRED (%%) bound of the near-exact subset")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "hw_cost.md"))
    args = ap.parse_args()
    src = SHARED / "evoapproxlib" / "verilog_dev"
    libs = {n: SHARED / "liberty" / f"{n}.lib.gz" for n in args.liberties}
    if not src.is_dir() or not all(p.is_file() for p in libs.values()):
        print("SKIP: ../shared/evoapproxlib/verilog_dev or a liberty is absent (this benchmark needs ../shared)")
        return 0

    import concurrent.futures as cf
    import warnings

    from fames.appmul.importers import import_design
    from fames.hw.cost import cost_appmul
    from fames.hw.energy import INPUT_NETS_DEFAULT
    from fames.hw.timing import OUTPUT_LOAD_FF
    from fames.io import write_section

    with open(SHARED / "evoapproxlib" / "index.csv", encoding="utf-8") as f:
        pub = {r["name"]: r for r in csv.DictReader(f)}
    files = sorted(src.glob("*.v"))
    t0 = time.perf_counter()
    with warnings.catch_warnings(), cf.ThreadPoolExecutor() as ex:
        warnings.simplefilter("ignore")  # the constant-zero design imports with a warning
        designs = list(ex.map(lambda p: import_design(p, 8, 8, False, top=p.stem, ports=None), files))
    import_s = time.perf_counter() - t0
    names = [m.name for m in designs]
    near = [n for n in names if float(pub[n]["calc_mred_pct"]) < args.near_exact]
    lines = ["## Fidelity against EvoApproxLib's published PDK45 figures (`bench/hw_fidelity.py`)", "",
             f"`python bench/hw_fidelity.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}` "
             f"({dt.date.today().isoformat()}): {len(designs)} EvoApproxLib 8x8 unsigned netlists imported in one "
             f"batch in {import_s:.1f} s; near-exact subset (published MRED < {args.near_exact:g}%): "
             f"{len(near)} designs. `input_nets`: how switching of nets no cell drives counts (all = pin loads and "
             "output-port loads they reach directly; pins = cell input pins only; none = left to the upstream "
             "driver). Spearman rho / Pearson r of logs against the published values.", "",
             "| liberty | energy | input_nets | output load fF | subset | power | delay | area | PDP | small designs: "
             "power fames/published |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    variants = [(ln, lp, md, ol, en) for ln, lp in libs.items() for en in args.energy for ol in args.output_loads
                for md in args.input_nets]
    ratios: dict[str, dict[str, tuple[int, float]]] = {}  # default recipe: design -> liberty -> (cells, ours/pub)
    for lname, lpath, mode, oload, energy in variants:
        with cf.ThreadPoolExecutor() as ex:
            costs = dict(zip(names, ex.map(
                lambda m, lp=lpath, md=mode, ol=oload, en=energy: cost_appmul(
                    m, lp, input_nets=md, output_load_ff=ol, activity=en), designs), strict=True))
        if (mode, oload, energy) == (INPUT_NETS_DEFAULT, OUTPUT_LOAD_FF, "zero-delay"):
            for n in names:
                if float(pub[n]["pwr_mW"]) > 0:
                    ratios.setdefault(n, {})[lname] = (costs[n].cells or 0,
                                                       costs[n].power_uw * 1e-3 / float(pub[n]["pwr_mW"]))
        small = [n for n in names if (costs[n].cells or 0) <= 6 and float(pub[n]["pwr_mW"]) > 0]
        ratio = ", ".join(f"{n} {costs[n].power_uw * 1e-3 / float(pub[n]['pwr_mW']):.1f}x" for n in small)
        for subset, sel in (("all", names), ("near-exact", near)):
            cells = []
            for _, ours_key, pub_key, scale in QUANTITIES:
                ours = [getattr(costs[n], ours_key) * scale for n in sel]
                theirs = [float(pub[n][pub_key]) for n in sel]
                rho, r = correlations(ours, theirs)
                cells.append(f"{rho:.3f} / {r:.3f}")
            lines.append(f"| {lname} | {energy} | {mode} | {oload:g} | {subset} ({len(sel)}) | " + " | ".join(cells)
                         + f" | {ratio if subset == 'all' else ''} |")
        print(lines[-2], lines[-1], sep="\n", flush=True)

    if ratios:
        lines += ["", "Power fames/published per design, default recipe (zero-delay, primary inputs not counted, no "
                  "product-bit load), by size:", "",
                  "| design | published mW | " + " | ".join(f"{ln}: cells, ratio" for ln in libs) + " |",
                  "|---|---|" + "---|" * len(libs)]
        for n in sorted(ratios, key=lambda n: float(pub[n]["pwr_mW"])):
            lines.append(f"| {n} | {float(pub[n]['pwr_mW']):.4f} | " + " | ".join(
                f"{ratios[n][ln][0]}, {ratios[n][ln][1]:.2f}x" if ln in ratios[n] else "" for ln in libs) + " |")
    write_section(args.out, MARK, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hardware-cost fidelity: our cost engine against EvoApproxLib's published PDK45 figures (Synopsys DC).

Usage: python bench/hw_fidelity.py [--liberties nangate45_typ gscl45nm] [--toggle-rates 0.5 0.1]
       [--energy ...] [--input-nets ...] [--output-loads ...] [--wire-loads ...] [--mappings gates adders]
       [--extra-netlists DIR [--as-mapped]] [--out docs/results/hw_cost.md]

Imports the EvoApproxLib 8x8 unsigned gate-level netlists of ../shared/evoapproxlib/verilog_dev in one batch,
costs each under every liberty, energy model (zero-delay, glitch-aware or propagated toggles), product-bit load
and accounting of primary-input switching (`input_nets`), and prints
Spearman and log-Pearson correlations of power, delay, area and PDP against the published figures of
../shared/evoapproxlib/index.csv, pooled and on the near-exact designs (published MRED < 0.5%), plus the
fames/published power ratio of the smallest designs (<= 6 cells). Writes the section between the
`<!-- hw_fidelity -->` markers of docs/results/hw_cost.md (`<!-- hw_fidelity_all -->` with --extra-netlists).
With --as-mapped, the designs whose authors' mapped netlist (`<name>_pdk45.v`, OSU FreePDK45 cells) lies under the
--extra-netlists folder are also costed as mapped (`fames lib import --liberty`), under gscl45nm, and compared with
their re-synthesis: what of the gap to the published figures is mapping and what is the cost model.
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
MARK_ALL = "<!-- hw_fidelity_all -->"  # the section of a run with --extra-netlists
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


def half_unit(text: str) -> float:
    """Half the last printed digit of a published figure (its rounding interval), e.g. '0.391' -> 0.0005."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** -decimals


def rank_floor(ours: list[float], rows: list[dict], target: float, draws: int = 20000) -> tuple[float, float, float]:
    """How far the published PDPs of ``rows`` can be ranked: ``(scatter, P_perfect, P_ours)``.

    ``scatter``: sd of log(ours / published PDP) over the designs (design-to-design error of our model, its common
    scale removed). P_perfect / P_ours: Monte-Carlo probability that Spearman against the published PDPs reaches
    ``target`` for a model equal to the unrounded published figures (power and delay drawn within their printed
    rounding) / the same times iid log-normal errors of our ``scatter``."""
    import numpy as np
    from scipy.stats import spearmanr

    pw = np.array([float(r["pwr_mW"]) for r in rows])
    de = np.array([float(r["delay_ns"]) for r in rows])
    hp, hd = np.array([half_unit(r["pwr_mW"]) for r in rows]), np.array([half_unit(r["delay_ns"]) for r in rows])
    scatter = float(np.std(np.log(np.asarray(ours) / (pw * de)), ddof=1))
    rng = np.random.default_rng(0)
    hits = np.zeros(2)
    for _ in range(draws):
        true = (pw + rng.uniform(-hp, hp)) * (de + rng.uniform(-hd, hd))
        for i, model in enumerate((true, true * np.exp(rng.normal(0.0, scatter, len(rows))))):
            hits[i] += spearmanr(model, pw * de)[0] >= target
    return scatter, float(hits[0] / draws), float(hits[1] / draws)


def as_mapped_lines(designs: list, pub: dict, folder: Path, liberty: Path, toggle_rates: list[float]) -> list[str]:
    """Table lines: the designs with a ``<name>_pdk45.v`` under ``folder``, costed as their authors mapped them and
    as fames re-synthesises them (default recipe, ``liberty``), against the published figures."""
    import concurrent.futures as cf
    import warnings

    import numpy as np

    from fames.appmul.importers import import_design
    from fames.hw.cost import cost_appmul

    found = {p.name[: -len("_pdk45.v")]: p for p in sorted(folder.rglob("*_pdk45.v"))}
    ours = {m.name: m for m in designs if m.name in found}
    if not ours:
        return []
    with warnings.catch_warnings(), cf.ThreadPoolExecutor() as ex:
        warnings.simplefilter("ignore")
        mapped = dict(zip(ours, ex.map(lambda n: import_design(found[n], 8, 8, pub[n]["signed"] == "True", top=n,
                                                               ports=None, liberty=liberty), ours), strict=True))
    for n, m in mapped.items():
        if not np.array_equal(m.lut, ours[n].lut):
            raise SystemExit(f"{found[n]} computes another function than {n}.v")
    lines = ["", f"As mapped by the authors (`<name>_pdk45.v`, imported with `--liberty {liberty.name}`) against "
             f"re-synthesised by fames (Yosys + ABC), both costed with the default recipe under {liberty.name}, "
             f"{len(ours)} designs: median fames/published, sd of its log (design-to-design scatter), Spearman:", "",
             "| netlist | toggle | cells (median) | power | delay | area | PDP |", "|---|---|---|---|---|---|---|"]
    for rate in toggle_rates:
        kw = {"stream": "uniform"} if rate == 0.5 else {"stream": "toggle", "toggle_rate": rate}
        for what, group in (("as mapped", mapped), ("re-synthesised", ours)):
            with cf.ThreadPoolExecutor() as ex:
                costs = dict(zip(group, ex.map(lambda m, kw=kw: cost_appmul(m, liberty, **kw), group.values()),
                                 strict=True))
            cells = []
            for _, key, pkey, scale in QUANTITIES:
                x = np.array([getattr(costs[n], key) * scale for n in group])
                y = np.array([float(pub[n][pkey]) for n in group])
                rho = correlations(list(x), list(y))[0]
                cells.append(f"{np.median(x / y):.2f}, {np.std(np.log(x / y), ddof=1):.3f}, {rho:.3f}")
            med_cells = int(np.median([costs[n].cells for n in group]))
            lines.append(f"| {what} | {rate:g} | {med_cells} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--liberties", nargs="+", default=["nangate45_typ", "gscl45nm"])
    ap.add_argument("--input-nets", nargs="+", default=["all", "none"])
    ap.add_argument("--output-loads", nargs="+", type=float, default=[3.9, 0.0], help="fF on every product bit")
    ap.add_argument("--energy", nargs="+", default=["zero-delay", "glitch", "propagated"],
                    choices=["zero-delay", "glitch", "propagated"])
    ap.add_argument("--toggle-rates", nargs="+", type=float, default=[0.5, 0.1],
                    help="probability that an operand bit flips between consecutive operations: 0.5 = independent "
                    "uniform operands (fames' default stream), 0.1 = the default toggle rate of Synopsys' vector-free "
                    "power analysis, which the published figures appear to use (docs/results/hw_cost.md)")
    ap.add_argument("--mappings", nargs="+", default=["gates"], choices=["gates", "adders", "kept"],
                    help="adders = map full and half adders to the liberty's adder cells before ABC maps the rest "
                    "(fames lib cost --adder-cells); gates = ABC re-synthesises and maps everything (the default "
                    "recipe); kept = the netlist's own gates mapped without restructuring, smallest cell of each "
                    "function (fames lib cost --keep-structure)")
    ap.add_argument("--wire-loads", nargs="+", default=["none"], choices=["none", "liberty"],
                    help="liberty = add the liberty's default wire-load capacitance per net fanout (NanGate: "
                    "5K_hvratio_1_1; gscl45nm names none), as Design Compiler does before layout")
    ap.add_argument("--near-exact", type=float, default=0.5, help="MRED (%%) bound of the near-exact subset")
    ap.add_argument("--target", type=float, default=0.9, help="near-exact PDP Spearman target (issue 17)")
    ap.add_argument("--extra-netlists", default=None, metavar="DIR",
                    help="also import every other 8x8 design of index.csv found under DIR (its <name>.v, searched "
                    "recursively; e.g. a checkout of github.com/ehw-fit/evoapproxlib, branch v2022), signed included; "
                    "they get their own subsets")
    ap.add_argument("--as-mapped", action="store_true",
                    help="with --extra-netlists: also cost the authors' mapped netlists (<name>_pdk45.v) as mapped, "
                    "under gscl45nm, against their re-synthesis")
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
    found = {p.stem: p for p in sorted(Path(args.extra_netlists).rglob("*.v"))} if args.extra_netlists else {}
    extra = [n for n, r in pub.items() if r["folder"].startswith("multiplers/8x8") and n in found
             and n not in {p.stem for p in files}]

    def load(paths: list[Path], keep: bool) -> list:
        """Import ``paths`` in one batch (``keep``: gates kept as written)."""
        with warnings.catch_warnings(), cf.ThreadPoolExecutor() as ex:
            warnings.simplefilter("ignore")  # the constant-zero design imports with a warning
            return list(ex.map(lambda p: import_design(p, 8, 8, p.stem in pub and pub[p.stem]["signed"] == "True",
                                                       top=p.stem, ports=None, keep_structure=keep), paths))

    t0 = time.perf_counter()
    designs = load(files, False)
    import_s = time.perf_counter() - t0
    designs += load([found[n] for n in extra], False)
    kept = load(files + [found[n] for n in extra], True) if "kept" in args.mappings else designs  # mapping "kept"
    names = [m.name for m in designs]
    near = [n for n in names if float(pub[n]["calc_mred_pct"]) < args.near_exact]
    subsets = [("all", names), ("near-exact", near)]
    if extra:
        subsets += [("extra", extra), ("extra near-exact", [n for n in extra if n in near]),
                    ("unsigned", [n for n in names if pub[n]["signed"] != "True"]),
                    ("signed", [n for n in names if pub[n]["signed"] == "True"])]
    lines = ["## Fidelity against EvoApproxLib's published PDK45 figures (`bench/hw_fidelity.py`)"
             + (": all 8x8 designs, signed included" if extra else ""), "",
             f"`python bench/hw_fidelity.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}` "
             f"({dt.date.today().isoformat()}): {len(files)} EvoApproxLib 8x8 unsigned netlists of ../shared "
             f"imported in one batch in {import_s:.1f} s"
             + (f", plus {len(extra)} more (signed included) from {args.extra_netlists} (subset `extra`)" if extra
                else "") + f"; near-exact subset (published MRED < {args.near_exact:g}%): "
             f"{len(near)} designs. `input_nets`: how switching of nets no cell drives counts (all = pin loads and "
             "output-port loads they reach directly; pins = cell input pins only; none = left to the upstream "
             "driver); `toggle`: input toggle rate per operation (0.5: independent uniform operands); `wire`: the "
             "liberty's default wire-load model added per net fanout (liberty) or not (none); `mapping`: ABC "
             "re-synthesises and maps all logic (gates), full and half adders go to the liberty's adder cells first "
             "(adders), or the netlist's own gates are mapped without restructuring to the smallest cell of each "
             "function (kept). Spearman "
             "rho / Pearson r of logs against the published values.", "",
             "| liberty | energy | input_nets | output load fF | toggle | wire | mapping | subset | power | delay | "
             "area | PDP | small designs: power fames/published |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    variants = [(ln, lp, md, ol, en, tr, wl, mp) for ln, lp in libs.items() for tr in args.toggle_rates
                for en in args.energy for ol in args.output_loads for md in args.input_nets for wl in args.wire_loads
                for mp in args.mappings]
    default: dict[str, dict] = {}  # "liberty, toggle rate[, wire][, mapping]" -> design -> Cost, default recipe else
    targets: dict[tuple, dict[str, tuple[float, float, float]]] = {}  # recipe -> liberty -> PDP rho all, near, small
    with cf.ThreadPoolExecutor() as ex:  # "small": at most 6 cells under the default recipe of either liberty
        small = sorted({n for lp in libs.values() for n, c in zip(names, ex.map(lambda m, lp=lp: cost_appmul(m, lp),
                                                                                designs), strict=True)
                        if (c.cells or 0) <= 6 and float(pub[n]["pwr_mW"]) > 0}, key=names.index)
    for lname, lpath, mode, oload, energy, rate, wire, mapping in variants:
        with cf.ThreadPoolExecutor() as ex:
            costs = dict(zip(names, ex.map(
                lambda m, lp=lpath, md=mode, ol=oload, en=energy, tr=rate, wl=wire, mp=mapping: cost_appmul(
                    m, lp, input_nets=md, output_load_ff=ol, activity=en, stream="uniform" if tr == 0.5 else "toggle",
                    toggle_rate=tr, wire_load=wl, adder_cells=mp == "adders",
                    structure="keep" if mp == "kept" else "resynthesise"), kept if mapping == "kept" else designs),
                strict=True))
        if (mode, oload, energy) == (INPUT_NETS_DEFAULT, OUTPUT_LOAD_FF, "zero-delay"):
            default[f"{lname}, toggle {rate:g}" + (f", wire {wire}" if len(args.wire_loads) > 1 else "")
                    + (f", {mapping}" if len(args.mappings) > 1 else "")] = costs
        ratios = {n: costs[n].power_uw * 1e-3 / float(pub[n]["pwr_mW"]) for n in small}
        ratio = ", ".join(f"{n} {v:.1f}x" for n, v in ratios.items())
        pdp = [correlations([costs[n].pdp_fj for n in sel], [float(pub[n]["pdp_pJ"]) for n in sel])[0]
               for sel in (names, near)]
        targets.setdefault((energy, mode, oload, rate, wire, mapping), {})[lname] = (
            *pdp, max(max(ratios.values(), default=1.0), 1.0 / min(ratios.values(), default=1.0)))
        for subset, sel in subsets:
            cells = []
            for _, ours_key, pub_key, scale in QUANTITIES:
                ours = [getattr(costs[n], ours_key) * scale for n in sel]
                theirs = [float(pub[n][pub_key]) for n in sel]
                rho, r = correlations(ours, theirs)
                cells.append(f"{rho:.3f} / {r:.3f}")
            lines.append(f"| {lname} | {energy} | {mode} | {oload:g} | {rate:g} | {wire} | {mapping} | {subset} "
                         f"({len(sel)}) | "
                         + " | ".join(cells)
                         + f" | {ratio if subset == 'all' else ''} |")
        print(*lines[-len(subsets):], sep="\n", flush=True)

    lines += ["", f"Issue 17's targets per recipe: PDP Spearman on all {len(names)} >= 0.98, on the {len(near)} "
              f"near-exact >= {args.target:g}, power of the designs of <= 6 cells under the default recipe "
              f"({', '.join(small)}) within 3x of published (the worst ratio either way), under every liberty:", "",
              "| energy | input_nets | output load fF | toggle | wire | mapping | "
              + " | ".join(f"{ln}: PDP all / near-exact / small" for ln in libs) + " | all met |",
              "|---|---|---|---|---|---|" + "---|" * len(libs) + "---|"]
    for (energy, mode, oload, rate, wire, mapping), per in targets.items():
        met = all(a >= 0.98 and b >= args.target and sm <= 3.0 for a, b, sm in per.values())
        lines.append(f"| {energy} | {mode} | {oload:g} | {rate:g} | {wire} | {mapping} | "
                     + " | ".join(f"{a:.3f} / {b:.3f} / {sm:.2f}x" for a, b, sm in per.values())
                     + f" | {'yes' if met else 'no'} |")

    if default:
        import numpy as np

        shown = [n for n in names if float(pub[n]["pwr_mW"]) > 0]
        lines += ["", "Power fames/published per design, default recipe (zero-delay, primary inputs not counted, no "
                  "product-bit load) at each input toggle rate, by published power:", "",
                  "| design | signed | published mW | " + " | ".join(f"{ln}: cells, ratio" for ln in default) + " |",
                  "|---|---|---|" + "---|" * len(default)]
        for n in sorted(shown, key=lambda n: float(pub[n]["pwr_mW"])):
            lines.append(f"| {n} | {pub[n]['signed']} | {float(pub[n]['pwr_mW']):.4f} | " + " | ".join(
                f"{c[n].cells}, {c[n].power_uw * 1e-3 / float(pub[n]['pwr_mW']):.2f}x" for c in default.values())
                + " |")
        lines += ["", "Median fames/published by kind, default recipe at each input toggle rate:", "",
                  "| liberty, toggle | designs | power | delay | area | PDP |", "|---|---|---|---|---|---|"]
        for lname, c in default.items():
            for kind in ("False", "True"):
                sel = [n for n in shown if pub[n]["signed"] == kind]
                if sel:
                    med = [float(np.median([getattr(c[n], k) * sc / float(pub[n][pk]) for n in sel]))
                           for _, k, pk, sc in QUANTITIES]
                    lines.append(f"| {lname} | {'signed' if kind == 'True' else 'unsigned'} ({len(sel)}) | "
                                 + " | ".join(f"{v:.2f}" for v in med) + " |")
        lines += ["", "How far the near-exact PDPs can be ranked: the published figures are printed to 3 digits "
                  "(power, mW) and 0.01 ns (delay), and the near-exact PDPs differ by a few percent. Per default "
                  "recipe: our design-to-design scatter (sd of log fames/published PDP over the near-exact subset), "
                  "the Spearman we get, and the Monte-Carlo probability (20,000 draws) that Spearman >= "
                  f"{args.target:g} for a model that reproduces Design Compiler exactly up to the printed rounding, "
                  "and for one with our scatter:",
                  "", "| liberty, toggle | designs | PDP scatter | Spearman | P(>= target), exact model | "
                  "P(>= target), our scatter |", "|---|---|---|---|---|---|"]
        for lname, c in default.items():
            sel = [n for n in near if float(pub[n]["pwr_mW"]) > 0]
            ours = [c[n].pdp_fj * 1e-3 for n in sel]
            rho = correlations(ours, [float(pub[n]["pdp_pJ"]) for n in sel])[0]
            scatter, p_exact, p_ours = rank_floor(ours, [pub[n] for n in sel], args.target)
            lines.append(f"| {lname} | {len(sel)} | {scatter:.3f} | {rho:.3f} | {p_exact:.3f} | {p_ours:.3f} |")
    if args.as_mapped and args.extra_netlists and "gscl45nm" in libs:
        lines += as_mapped_lines(designs, pub, Path(args.extra_netlists), libs["gscl45nm"], args.toggle_rates)
    write_section(args.out, MARK_ALL if extra else MARK, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hardware-cost benchmark: synthesis speed and PDP relative to exact of every generated 8x8 design.

Usage: python bench/hw_cost.py [--liberty ../shared/liberty/nangate45_typ.lib.gz] [--out docs/results/hw_cost.md]

Prints, measured in one run (cache disabled): seconds to cost the exact 8x8 (after one warm-up
synthesis), seconds to cost a 40-design 8x8 library, and PDP/area/delay relative to exact for every
member of every generated 8x8 family (unsigned and signed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--liberty", default=str(REPO.parent / "shared" / "liberty" / "nangate45_typ.lib.gz"))
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "hw_cost.md"))
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    lib_path = Path(args.liberty)
    if not lib_path.is_file():
        print(f"SKIP: liberty {lib_path} not found (this benchmark needs ../shared/liberty beside the checkout)")
        return 0
    os.environ["FAMES_CACHE"] = tempfile.mkdtemp(prefix="fames-bench-cache-")  # measure real synthesis

    from fames.appmul.families import build, build_family
    from fames.appmul.summary import appmul_row
    from fames.hw.cost import cost_appmul, cost_library
    from fames.hw.liberty import read_liberty

    t0 = time.perf_counter()
    read_liberty(lib_path)
    cost_appmul(build("exact", 4, 4, False, False), lib_path, cache=False)  # warm-up: liberty parse, yosys start
    warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    exact = cost_appmul(build("exact", 8, 8, False, False), lib_path, cache=False)
    t_exact = time.perf_counter() - t0
    exact4 = cost_appmul(build("exact", 4, 4, False, False), lib_path, cache=False)
    # Engine calibration: Yosys' own multiplier from `assign y = a * w;` (the DESIGN notes' reference point)
    from fames.appmul.core import AppMul, exact_lut

    behav = AppMul(
        "yosys_mul8x8u",
        8,
        8,
        False,
        False,
        exact_lut(8, 8),
        top="yosys_mul8x8u",
        verilog="module yosys_mul8x8u(input [7:0] a, input [7:0] w, output [15:0] y);\n"
        "  assign y = a * w;\nendmodule\n",
    )
    yosys = cost_appmul(behav, lib_path, cache=False)
    from fames.appmul.arith import structure

    with structure("fast"):
        fast = cost_appmul(build("exact", 8, 8, False, False), lib_path, cache=False)

    designs = build_family("all", 8, 8, False) + build_family("all", 8, 8, True)
    forty = designs[:40]
    t0 = time.perf_counter()
    cost_library(forty, lib_path, progress=False, jobs=args.jobs, cache=False)
    t_forty = time.perf_counter() - t0
    costed = cost_library(designs, lib_path, progress=True, jobs=args.jobs, cache=True)

    lines = [
        "# Hardware cost of the generated 8x8 AppMuls",
        "",
        f"Command: `python bench/hw_cost.py --liberty {os.path.relpath(args.liberty, REPO)}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores; liberty: {lib_path.name}",
        "",
        "Recipe: Yosys (pyosys) `synth -flatten` + `abc -liberty`, inputs driven by the smallest buffer, no output "
        "load; energy/op from zero-delay toggle simulation of 4,096 uniform operand pairs, primary-input switching "
        "left to the upstream driver; power at a 1 ns clock; PDP = power x delay.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| warm-up (liberty parse + first synthesis) | {warm:.2f} s |",
        f"| cost exact 8x8 unsigned | {t_exact:.2f} s |",
        f"| cost a 40-design 8x8 library (target < 180 s) | {t_forty:.1f} s |",
        f"| exact 8x8u area / delay / energy | {exact.area_um2:.1f} um^2 / {exact.delay_ns:.3f} ns / "
        f"{exact.energy_fj:.1f} fJ |",
        f"| exact 4x4u area / delay / energy | {exact4.area_um2:.1f} um^2 / {exact4.delay_ns:.3f} ns / "
        f"{exact4.energy_fj:.1f} fJ |",
        f"| Yosys `assign y = a*w` 8x8u (engine calibration) | {yosys.area_um2:.1f} um^2 / {yosys.delay_ns:.3f} ns / "
        f"{yosys.energy_fj:.1f} fJ |",
        f"| exact 8x8u, `--structure fast` (arrival-ordered tree + prefix adder) | {fast.area_um2:.1f} um^2 / "
        f"{fast.delay_ns:.3f} ns / {fast.energy_fj:.1f} fJ |",
        "",
        "Designs use the default `textbook` structure (Dadda tree + ripple-carry adder), the baseline of the "
        "approximate-multiplier literature; every ratio is against the exact design of the same structure.",
        "",
        "| design | bits | MRED % | WCE | area um^2 | delay ns | energy fJ | PDP fJ | area/exact | delay/exact "
        "| PDP/exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in costed:
        r, c = appmul_row(m), m.cost
        rel = c.relative
        lines.append(
            f"| {m.name} | {m.signature()} | {r['mred_pct']:.3f} | {r['wce']:.0f} | {c.area_um2:.1f} | "
            f"{c.delay_ns:.3f} | {c.energy_fj:.1f} | {c.pdp_fj:.1f} | {rel['area']:.3f} | {rel['delay']:.3f} | "
            f"{rel['pdp']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    from fames.io import write_section

    write_section(args.out, "<!-- hw_cost -->", text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``fames`` command line. Every subcommand has a Python equivalent named in its help."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fames.errors import FamesError

SIGNEDNESS = {"unsigned": (False,), "signed": (True,), "both": (False, True)}


def _liberty_arg(value: str) -> Path:
    """``synthetic`` means the project's own small liberty (written to the cache); else a path."""
    if value == "synthetic":
        from fames.hw.synthetic import default_synthetic_liberty

        return default_synthetic_liberty()
    return Path(value)


# --------------------------------------------------------------------------- lib
def cmd_lib_build(args: argparse.Namespace) -> int:
    from fames.appmul.families import FAMILIES, build_family
    from fames.appmul.library import Library

    if args.family != "all" and args.family not in FAMILIES:
        raise FamesError(f"unknown family {args.family!r}; choose one of: all, {', '.join(FAMILIES)}")
    signs = (True,) if args.signed else SIGNEDNESS[args.signedness]
    lib = Library()
    for a_bits, w_bits in args.bits or [(8, 8)]:
        for s in signs:
            lib.extend(build_family(args.family, a_bits, w_bits, s))
    lib.save(args.out)
    print(f"wrote {len(lib)} AppMuls to {args.out}")
    return 0


def cmd_lib_import_evoapprox(args: argparse.Namespace) -> int:
    from fames.appmul.importers import import_evoapprox
    from fames.appmul.library import Library

    lib = Library(import_evoapprox(args.src))
    lib.save(args.out)
    print(f"wrote {len(lib)} EvoApproxLib AppMuls (published PDK45 costs) to {args.out}")
    return 0


def cmd_lib_import(args: argparse.Namespace) -> int:
    from fames.appmul.importers import import_design, read_text_lut
    from fames.appmul.library import Library

    lib = Library.load(args.out) if (Path(args.out) / "index.json").is_file() else Library()
    for f in args.files:
        p = Path(f)
        if p.suffix.lower() in (".v", ".sv", ".blif"):
            if not args.bits:
                raise FamesError(f"{p}: importing a design needs --bits A W (operand widths)")
            a_bits, w_bits = args.bits[0]
            m = import_design(p, a_bits, w_bits, args.signed, top=args.top, ports=tuple(args.ports))
        else:
            bits = args.bits[0] if args.bits else (None, None)
            m = read_text_lut(p, a_bits=bits[0], w_bits=bits[1], signed=True if args.signed else None)
        lib.add(m)
        print(f"imported {m.name} ({m.signature()}) from {p}")
    lib.save(args.out)
    return 0


def cmd_lib_cost(args: argparse.Namespace) -> int:
    from fames.appmul.library import Library
    from fames.hw.cost import cost_library

    lib = Library.load(args.dir)
    liberty = _liberty_arg(args.liberty)
    costed = cost_library(
        list(lib),
        liberty,
        stream=args.stream,
        hold=args.hold,
        n_vectors=args.vectors,
        seed=args.seed,
        clock_ns=args.clock_ns,
    )
    out = Library(costed)
    out.save(args.out or args.dir)
    print(f"costed {len(out)} AppMuls with {liberty}; saved to {args.out or args.dir}")
    return 0


def cmd_lib_show(args: argparse.Namespace) -> int:
    from fames.appmul.library import Library
    from fames.appmul.summary import appmul_row, format_table

    rows = [appmul_row(m) for m in Library.load(args.dir)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0


def cmd_lib_plot(args: argparse.Namespace) -> int:
    from fames.appmul.library import Library
    from fames.appmul.summary import appmul_row, plot_pdp_vs_mred

    rows = [appmul_row(m) for m in Library.load(args.dir)]
    print(f"wrote {plot_pdp_vs_mred(rows, args.out)}")
    return 0


def cmd_hw_liberty(args: argparse.Namespace) -> int:
    from fames.hw.synthetic import write_synthetic_liberty

    print(f"wrote {write_synthetic_liberty(args.out)}")
    return 0


# --------------------------------------------------------------------------- parser
def _bits(values: list[str]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fames",
        description="Approximate multipliers for quantized neural networks: build and cost AppMul libraries.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lib = sub.add_parser("lib", help="build, import, cost, show and plot AppMul libraries")
    ls = lib.add_subparsers(dest="lib_command", required=True, metavar="SUBCOMMAND")

    b = ls.add_parser(
        "build",
        help="generate a family of AppMuls (LUT + structural Verilog)",
        description="Python: fames.appmul.families.build_family(family, a_bits, w_bits, signed)",
    )
    b.add_argument("--family", default="all", help="family name or 'all' (see `fames lib families`)")
    b.add_argument(
        "--bits",
        nargs=2,
        type=int,
        action="append",
        metavar=("A", "W"),
        help="activation and weight widths, 2..8; repeat for several (default 8 8)",
    )
    b.add_argument("--signed", action="store_true", help="two's-complement operands (same as --signedness signed)")
    b.add_argument("--signedness", choices=list(SIGNEDNESS), default="unsigned")
    b.add_argument("--out", required=True, help="library directory to write (replaced atomically)")
    b.set_defaults(func=cmd_lib_build)

    fam = ls.add_parser("families", help="list the generated families and their definitions")
    fam.set_defaults(func=cmd_lib_families)

    e = ls.add_parser(
        "import-evoapprox",
        help="import EvoApproxLib (table folder like ../shared/evoapproxlib, or a git checkout of C models)",
        description="Python: fames.appmul.importers.import_evoapprox(src)",
    )
    e.add_argument("--src", help="folder with index.csv + luts.npz, or an EvoApproxLib checkout (default: ../shared)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_lib_import_evoapprox)

    im = ls.add_parser(
        "import",
        help="add designs to a library: text LUTs (`a b product` lines), Verilog (.v) or BLIF (.blif)",
        description="Python: fames.appmul.importers.read_text_lut / import_design",
    )
    im.add_argument("files", nargs="+")
    im.add_argument("--bits", nargs=2, type=int, action="append", metavar=("A", "W"))
    im.add_argument("--signed", action="store_true")
    im.add_argument("--top", help="top module of a Verilog design (default: the file stem)")
    im.add_argument(
        "--ports",
        nargs=3,
        default=["a", "w", "y"],
        metavar=("A", "W", "Y"),
        help="names of the activation, weight and product ports (default a w y)",
    )
    im.add_argument("--out", required=True, help="library directory (created or extended)")
    im.set_defaults(func=cmd_lib_import)

    c = ls.add_parser(
        "cost",
        help="synthesize every AppMul with Yosys+ABC on a liberty; area, delay, energy/op, PDP (cached)",
        description="Python: fames.hw.cost.cost_library(appmuls, liberty)",
    )
    c.add_argument("dir")
    c.add_argument(
        "--liberty",
        required=True,
        help="liberty file (.lib or .lib.gz), or 'synthetic' for the project's own test library",
    )
    c.add_argument("--stream", choices=["uniform"], default="uniform", help="operand stream for energy")
    c.add_argument("--hold", type=int, default=1, help="hold each weight for M operations (weight-stationary)")
    c.add_argument("--vectors", type=int, default=4096, help="operand pairs simulated for energy")
    c.add_argument("--clock-ns", type=float, default=1.0, help="clock period for power and leakage (ns)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", help="write the costed library here instead of updating DIR")
    c.set_defaults(func=cmd_lib_cost)

    s = ls.add_parser("show", help="one row per AppMul: bits, MRED, WCE, area, delay, energy/op, PDP")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_lib_show)

    pl = ls.add_parser("plot", help="PDP (relative to exact) vs MRED with the Pareto front marked")
    pl.add_argument("dir")
    pl.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    pl.set_defaults(func=cmd_lib_plot)

    hw = sub.add_parser("hw", help="hardware helpers")
    hs = hw.add_subparsers(dest="hw_command", required=True, metavar="SUBCOMMAND")
    wl = hs.add_parser("write-liberty", help="write the project's small synthetic liberty (for tests and demos)")
    wl.add_argument("--out", required=True)
    wl.set_defaults(func=cmd_hw_liberty)
    return p


def cmd_lib_families(args: argparse.Namespace) -> int:
    from fames.appmul.families import FAMILIES

    for name, f in FAMILIES.items():
        print(f"{name:10s} {f.definition}  (parameters: {', '.join(f.params)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FamesError as e:
        print(f"fames: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"fames: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

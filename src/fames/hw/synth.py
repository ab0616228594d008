"""Synthesis with Yosys (pyosys) + ABC: ONE fixed recipe, versioned by :data:`RECIPE_VERSION`.

With a liberty::

    read_verilog -sv design.v          (or: read_blif -wideports design.blif)
    synth -flatten -top TOP
    abc -liberty LIB                   (a .lib.gz is uncompressed to a scratch file first)
    opt_clean
    write_json netlist.json

``structure="keep"`` replaces ``synth`` and ``abc`` above by ``synth -flatten -noabc -top TOP`` and ``abc -liberty
LIB -script keep.abc -dont_use ...`` (``strash; map``: ABC's cut-based mapper covers the design's own AND-inverter
structure, without the restructuring passes of the default script (``fraig``, ``dc2``, ``dch``), and only the smallest
cell of each function is allowed): the design costed close to the netlist it is rather than as its function (local
covering may still choose other cells than the written gates, e.g. AOI/OAI pairs for an XOR under NanGate).

A design that already instantiates cells of the liberty (a netlist mapped by another tool) keeps them as they are:
``read_liberty -lib LIB`` declares them first, and ABC maps only the logic around them (``mapping="keep"`` leaves
that logic as Yosys gates; ``mapping="generic"`` replaces the cells by their functions instead, so the netlist can be
re-synthesised with any liberty).

Constant outputs are not mapped to tie cells: they stay constant nets (0/1) of the :class:`Netlist` and
cost nothing. Without a liberty the recipe stops after ``synth -flatten -top TOP; opt_clean`` and the
netlist holds Yosys internal gates (``$_AND_``, ``$_XOR_``, ``$_MUX_``, ...): good for simulating a
design to a LUT, not for costing.

Yosys terminates its process on any error, so every run happens in a child Python process (about
0.2 s for an 8x8 multiplier) inside its own scratch directory; its log is kept for error messages.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from fames.errors import HardwareError
from fames.hw.liberty import Liberty, read_liberty
from fames.hw.netlist import Netlist

RECIPE_VERSION = "yosys-abc-1"
_WORKER = Path(__file__).with_name("_yosys_worker.py")


MappingMode = Literal["liberty", "keep", "generic"]
Structure = Literal["resynthesise", "keep"]
KEEP_SCRIPT = "keep.abc"  # ABC script of structure="keep": cover the design's own AND-inverter graph, no restructuring
_KEEP_ABC = "strash\nmap\n"
_NOT_IN_DESIGN = re.compile(r"Module `\\?([^']+)' referenced in module `\\?([^']+)'.* is not part of the design")


def recipe(top: str, liberty_file: str | None, fmt: str = "verilog", adders_map: str | None = None,
           cells: Literal["none", "keep", "generic"] = "none", include_dirs: tuple[str, ...] = (),
           structure: Structure = "resynthesise", dont_use: tuple[str, ...] = ()) -> list[str]:
    """The Yosys commands of the fixed recipe (file names relative to the scratch directory); with ``adders_map``
    (a techmap file of ``$fa`` to the liberty's adder cells) every full and half adder Yosys finds is mapped to those
    cells before ABC maps the rest. ``cells``: how the design's instances of the liberty's cells are read (``keep``:
    as black boxes that stay as they are; ``generic``: as their functions; ``none``: the design names none), and
    ``liberty_file`` is the ABC target only when ``cells`` is not ``generic``; ``include_dirs``: where Verilog
    `` `include`` files are looked up. ``structure="keep"`` keeps the design's own gate structure: no generic ABC
    pass in ``synth`` (``-noabc``) and, with a liberty, ABC's structural mapper (``strash; map``, script
    ``keep.abc``) with the cells ``dont_use`` names barred."""
    incs = "".join(f" -I{d}" for d in include_dirs)
    read = f"read_verilog -sv{incs} design.v" if fmt == "verilog" else "read_blif -wideports design.blif"
    cmds = []
    if cells != "none":
        cmds.append(f"read_liberty {'-lib' if cells == 'keep' else '-ignore_miss_func'} cells.lib")
        read = read.replace("read_verilog", "read_verilog -overwrite")  # the design's own modules win over cells
    cmds += [read, f"synth -flatten -top {top}" + (" -noabc" if structure == "keep" else "")]
    if adders_map is not None:
        cmds += ["extract_fa", f"techmap -map {adders_map}"]
    if liberty_file is not None and cells != "generic":
        if structure == "keep":
            barred = "".join(f" -dont_use {c}" for c in dont_use)
            cmds.append(f"abc -liberty {liberty_file} -script {KEEP_SCRIPT}{barred}")
        else:
            cmds.append(f"abc -liberty {liberty_file}")
    cmds += ["opt_clean", "write_json netlist.json"]
    return cmds


def liberty_cells_in(source: str, liberty: Liberty) -> list[str]:
    """Names of ``liberty``'s cells that ``source`` (Verilog or BLIF text) mentions, sorted: the cells a netlist
    mapped to that liberty instantiates (a word that merely equals a cell name also counts, harmlessly)."""
    return sorted(set(re.findall(r"[A-Za-z_][\w$]*", source)) & set(liberty.cells))


def run_yosys(commands: list[str], workdir: Path, what: str, timeout_s: float = 900.0) -> str:
    """Run Yosys ``commands`` in ``workdir`` in a child process; return the log.

    Raises :class:`HardwareError` quoting the first Yosys ``ERROR`` line when it fails.
    """
    script = workdir / "commands.ys"
    script.write_text("\n".join(commands) + "\n", encoding="utf-8")
    try:
        r = subprocess.run(
            [sys.executable, str(_WORKER), script.name],
            cwd=workdir, capture_output=True, text=True, timeout=timeout_s,
            # TMPDIR: Yosys caches each liberty it converts for ABC (an .scl file per scratch liberty path) under it;
            # in the scratch folder, that cache goes with it instead of piling up in /tmp (one file per synthesis)
            env={**os.environ, "PYTHONIOENCODING": "utf-8", "TMPDIR": str(workdir.resolve())},
        )
    except subprocess.TimeoutExpired as e:
        raise HardwareError(f"synthesis of {what} took more than {timeout_s:.0f} s and was stopped") from e
    log = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0:
        lines = [ln.strip() for ln in log.splitlines() if "ERROR" in ln]
        msg = lines[0] if lines else (log.strip().splitlines() or ["(no output)"])[-1]
        raise HardwareError(f"synthesis of {what} failed: {msg}")
    return log


def adders_techmap(cells: dict[str, tuple[str, dict[str, str]]]) -> str:
    """A Yosys techmap of ``$fa`` (``X`` carry, ``Y`` sum) to the cells of :meth:`Liberty.adder_cells`: a half-adder
    cell where the third input is constant 0 (when the library has one), else the full-adder cell."""
    fa, p = cells["fa"]
    full = f"{fa} f (.{p['A']}(A[i]), .{p['B']}(B[i]), .{p['C']}(C[i]), .{p['S']}(Y[i]), .{p['CO']}(X[i]));"
    if "ha" in cells:
        ha, q = cells["ha"]
        body = (f"if (_TECHMAP_CONSTMSK_C_[i] && !_TECHMAP_CONSTVAL_C_[i])\n"
                f"      {ha} h (.{q['A']}(A[i]), .{q['B']}(B[i]), .{q['S']}(Y[i]), .{q['CO']}(X[i]));\n"
                f"    else\n      {full}")
    else:
        body = full
    return ("module \\$fa (A, B, C, X, Y);\n  parameter WIDTH = 1;\n  parameter _TECHMAP_CONSTMSK_C_ = 0;\n"
            "  parameter _TECHMAP_CONSTVAL_C_ = 0;\n  input [WIDTH-1:0] A, B, C;\n  output [WIDTH-1:0] X, Y;\n"
            f"  genvar i;\n  generate for (i = 0; i < WIDTH; i = i + 1) begin : g\n    {body}\n  end endgenerate\n"
            "endmodule\n")


def adder_cells_of(liberty: str | os.PathLike) -> dict[str, tuple[str, dict[str, str]]]:
    """:meth:`Liberty.adder_cells` of the liberty at ``liberty``; a :class:`HardwareError` when it has no full adder."""
    cells = read_liberty(liberty).adder_cells()
    if "fa" not in cells:
        raise HardwareError(f"adder cells asked for, but liberty {liberty} has no full-adder cell (3 inputs, sum and "
                            "carry outputs); cost without them")
    return cells


def synthesize(
    source: str,
    top: str,
    liberty: str | os.PathLike | None = None,
    fmt: Literal["verilog", "blif"] = "verilog",
    adder_cells: bool = False,
    mapping: MappingMode = "liberty",
    include_dirs: tuple[str | os.PathLike, ...] = (),
    structure: Structure = "resynthesise",
) -> Netlist:
    """Synthesise ``source`` (Verilog or BLIF text) with top module ``top`` by the fixed recipe.

    With ``liberty`` (a .lib or .lib.gz path) the netlist is mapped to its cells (``mapping="liberty"``); the design's
    own instances of the liberty's cells stay as they are. ``mapping="keep"`` keeps those instances and leaves the
    rest as Yosys internal gates; ``mapping="generic"`` replaces them by their functions, so that everything is Yosys
    internal gates (as without a liberty). ``adder_cells``: map full and half adders to the liberty's adder cells
    first (an option; the default recipe leaves all mapping to ABC, see docs/results/hw_cost.md). ``include_dirs``:
    folders searched for Verilog `` `include`` files (e.g. the design file's own). ``structure="keep"``: the design's
    gates are not restructured (``synth -noabc``) and, with a liberty, ABC's cut-based mapper covers them as they
    stand, with only the smallest cell of each function (:meth:`Liberty.larger_drives` barred: without timing
    constraints there is no reason to upsize, and libraries whose tables start far above a pin's load, like OSU
    FreePDK45's at 100 fF for most cells, make larger cells look faster at small loads); the default re-synthesises
    them. Raises :class:`HardwareError` naming the module for unparsable/unsynthesisable input, a cell the design
    instantiates but neither defines nor finds in the liberty, or a liberty without a full-adder cell when
    ``adder_cells`` asks for one.
    """
    if fmt not in ("verilog", "blif"):
        raise HardwareError(f"unknown design format {fmt!r}; use 'verilog' or 'blif'")
    if mapping not in ("liberty", "keep", "generic"):
        raise HardwareError(f"unknown mapping {mapping!r}; use 'liberty', 'keep' or 'generic'")
    if structure not in ("resynthesise", "keep"):
        raise HardwareError(f"unknown structure {structure!r}; use 'resynthesise' or 'keep'")
    lib = read_liberty(liberty) if liberty is not None else None
    cells = adder_cells_of(liberty) if liberty is not None and adder_cells and mapping == "liberty" else {}
    named = lib is not None and bool(liberty_cells_in(source, lib))
    with tempfile.TemporaryDirectory(prefix="fames-synth-") as tmp:
        work = Path(tmp)
        (work / ("design.v" if fmt == "verilog" else "design.blif")).write_text(source, encoding="utf-8")
        lib_file = None
        if liberty is not None:
            raw = Path(liberty).read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            (work / "cells.lib").write_bytes(raw)
            lib_file = "cells.lib" if mapping == "liberty" else None
        adders_map = None
        dont_use: tuple[str, ...] = ()
        if structure == "keep" and lib_file is not None:
            (work / KEEP_SCRIPT).write_text(_KEEP_ABC, encoding="utf-8")
            dont_use = tuple(lib.larger_drives())
        if cells:
            (work / "adders.v").write_text(adders_techmap(cells), encoding="utf-8")
            adders_map = "adders.v"
        how = ("keep" if mapping != "generic" else "generic") if named else "none"
        try:
            incs = []
            for k, d in enumerate(include_dirs):  # linked under plain names: Yosys cannot quote a path with spaces
                (work / f"inc{k}").symlink_to(Path(d).resolve(), target_is_directory=True)
                incs.append(f"inc{k}")
            run_yosys(recipe(top, lib_file, fmt, adders_map, how, tuple(incs), structure, dont_use), work,
                      f"module {top!r}")
        except HardwareError as e:
            m = _NOT_IN_DESIGN.search(str(e))
            if m is None:
                raise
            where = (f"is neither defined in the design nor a cell of liberty {lib.name}" if lib is not None
                     else "the design does not define, and no liberty was given to define it as a cell")
            raise HardwareError(
                f"module {m.group(2)!r} instantiates {m.group(1)!r}, which {where}: a "
                "netlist mapped to standard cells is read with the liberty it was mapped to (fames lib import "
                "--liberty L; fames lib cost with that liberty)") from None
        data = json.loads((work / "netlist.json").read_text(encoding="utf-8"))
    return Netlist.from_yosys_json(data, top, lib)


def lut_to_verilog(appmul, top: str | None = None) -> str:
    """Truth-table Verilog (one ``case`` statement) of an AppMul known only by its LUT.

    Port convention: ``module TOP(input [a_bits-1:0] a, input [w_bits-1:0] w, output [n-1:0] y)``,
    ``y`` two's complement (as a bit pattern) when an operand is signed.
    """
    from fames.appmul.core import sanitize_name

    top = top or appmul.top or sanitize_name(appmul.name)
    a, w = appmul.a_bits, appmul.w_bits
    n = a + w
    lut = np.asarray(appmul.lut, dtype=np.int64) & ((1 << n) - 1)
    lines = [
        f"module {top}(input [{a - 1}:0] a, input [{w - 1}:0] w, output reg [{n - 1}:0] y);",
        "  always @* begin",
        "    case ({a, w})",
    ]
    flat = lut.reshape(-1)
    for idx in np.nonzero(flat)[0]:
        lines.append(f"      {n}'d{int(idx)}: y = {n}'d{int(flat[idx])};")
    lines += [f"      default: y = {n}'d0;", "    endcase", "  end", "endmodule", ""]
    return "\n".join(lines)

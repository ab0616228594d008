"""Importers: EvoApproxLib (shared tables or a user's checkout), plain-text LUTs, Verilog/BLIF designs."""

from __future__ import annotations

import concurrent.futures as cf
import csv
import gzip
import io
import os
import re
import shutil
import subprocess
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fames.appmul.core import AppMul, Cost, exact_lut, operand_values, output_range, sanitize_name
from fames.errors import AppMulError

EVO_CITE = (
    "V. Mrazek, R. Hrbacek, Z. Vasicek, L. Sekanina, EvoApprox8b: Library of approximate adders and "
    "multipliers for circuit design and benchmarking of approximation methods, DATE 2017"
)
EVO_LIBERTY = "EvoApproxLib published PDK45"


def default_evoapprox_dir() -> Path | None:
    """``../shared/evoapproxlib`` next to the repository or the working directory, if present."""
    env = os.environ.get("FAMES_EVOAPPROX")
    cands = [Path(env)] if env else []
    here = Path(__file__).resolve()
    cands += [p.parent / "shared" / "evoapproxlib" for p in here.parents[:6]]
    cands += [Path.cwd().parent / "shared" / "evoapproxlib", Path.cwd() / "shared" / "evoapproxlib"]
    for c in cands:
        if (c / "index.csv").is_file() and (c / "luts.npz").is_file():
            return c
    return None


def _published_cost(pwr_mw: float, area: float, delay: float) -> Cost:
    return Cost(
        area_um2=area,
        delay_ns=delay,
        power_uw=pwr_mw * 1e3,
        pdp_fj=pwr_mw * delay * 1e3,  # mW x ns = pJ
        source="published",
        liberty=EVO_LIBERTY,
    )


def _set_relative(ms: list[AppMul]) -> None:
    """Fill ``cost.relative`` against the exact member of each widths group (published figures)."""
    groups: dict[tuple, list[AppMul]] = {}
    for m in ms:
        groups.setdefault(m.widths, []).append(m)
    for members in groups.values():
        ref = next((m for m in members if m.is_exact() and m.cost is not None), None)
        if ref is None:
            continue
        for m in members:
            if m.cost is None:
                continue
            rel = {}
            for key, attr in (("area", "area_um2"), ("delay", "delay_ns"), ("power", "power_uw"), ("pdp", "pdp_fj")):
                a, b = getattr(m.cost, attr), getattr(ref.cost, attr)
                if a is not None and b:
                    rel[key] = a / b
            m.cost.relative = rel


def import_evoapprox_tables(src: str | Path | None = None) -> list[AppMul]:
    """Load EvoApproxLib from a folder holding ``index.csv`` + ``luts.npz`` (the layout of ../shared/evoapproxlib).

    Costs are the published PDK45 figures (power mW -> uW, PDP = power x delay).
    """
    src = Path(src) if src is not None else default_evoapprox_dir()
    if src is None:
        raise AppMulError(
            "EvoApproxLib tables not found: pass --src PATH (a folder with index.csv + luts.npz, or an "
            "EvoApproxLib git checkout), or set FAMES_EVOAPPROX"
        )
    index, npz = src / "index.csv", src / "luts.npz"
    for f in (index, npz):
        if not f.is_file():
            raise AppMulError(f"{f} is missing: an EvoApproxLib table folder holds index.csv and luts.npz")
    try:
        luts = np.load(npz, allow_pickle=False)
        with open(index, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise AppMulError(f"{src}: cannot read the EvoApproxLib tables ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); is the folder complete?") from None
    need = {"name", "signed", "lut_key", "bits_a", "bits_b"}
    if not rows or not need <= set(rows[0]):
        raise AppMulError(f"{index}: expected a CSV with columns {sorted(need)}, got {sorted(rows[0]) if rows else []}")
    out = []
    for ln, row in enumerate(rows, 2):
        signed = row["signed"].strip().lower() == "true"
        key = row["lut_key"]
        try:
            lut = luts[key]
            a_bits, w_bits = int(row["bits_a"]), int(row["bits_b"])
            cost = _published_cost(float(row["pwr_mW"]), float(row["area_um2"]), float(row["delay_ns"]))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
            raise AppMulError(f"{index} line {ln}: bad row ({type(e).__name__}: {e}); LUT {key!r} in {npz}") \
                from None
        m = _evo_appmul(row["name"], a_bits, w_bits, signed, lut, cost, str(row.get("folder", "")),
                        axis0=row.get("axis0_c_arg", ""), axis1=row.get("axis1_c_arg", ""),
                        cite=row.get("cite") or EVO_CITE,
                        license="MIT, Copyright 2018 EHW@FIT, Brno University of Technology")
        out.append(m)
    _set_relative(out)
    return out


def _evo_appmul(name: str, a_bits: int, w_bits: int, signed: bool, lut: np.ndarray, cost: Cost | None, source: str,
                **provenance: str) -> AppMul:
    """An EvoApproxLib design as an AppMul (table only: its costs are the published ones)."""
    return AppMul(name=name, a_bits=a_bits, w_bits=w_bits, a_signed=signed, w_signed=signed, lut=lut,
                  structural=False, cost=cost, provenance={"family": "evoapproxlib", "source": source, **provenance})


# --------------------------------------------------------------------------- C checkout
_FOLDER_RE = re.compile(r"(\d+)x(\d+)_(un)?signed")
_SIG_RE = re.compile(r"^\s*(?:static\s+)?([a-z0-9_]+)\s+(mul\w+)\s*\(([^)]*)\)\s*\{?", re.M)
_PDK = {k: re.compile(rf"PDK45_{k}\s*=\s*([0-9.eE+-]+)") for k in ("PWR", "AREA", "DELAY")}


def _c_value(var: str, bits: int) -> str:
    """C expression: the two's-complement value of the index ``var``."""
    return f"({var} < {1 << (bits - 1)} ? {var} : {var} - {1 << bits})"


def _compile_and_tabulate(cfile: Path, a_bits: int, w_bits: int, signed: bool, cc: str, work: Path) -> np.ndarray:
    text = cfile.read_text(errors="replace")
    sig = _SIG_RE.search(text)
    if sig is None:
        raise AppMulError(f"{cfile}: no multiplier function `<type> mul...(..., ...)` found")
    ret, fname = sig.group(1), sig.group(2)
    arg_t = "int64_t" if signed else "uint64_t"
    # The driver passes operand values (signed: the value of the bit pattern); reads the result
    # as a two's-complement word of a_bits + w_bits bits when signed.
    nout = a_bits + w_bits
    driver = f"""
#include <stdint.h>
#include <stdio.h>
{text}
int main(void) {{
  for (long i = 0; i < {1 << a_bits}; ++i) for (long j = 0; j < {1 << w_bits}; ++j) {{
    {arg_t} x = {_c_value("i", a_bits) if signed else "i"};
    {arg_t} y = {_c_value("j", w_bits) if signed else "j"};
    uint64_t r = (uint64_t)({ret})({fname}(x, y));
    int64_t v = (int64_t)(r & ((1ULL << {nout}) - 1));
    {f"if (v >= (1LL << {nout - 1})) v -= (1LL << {nout});" if signed else ""}
    int32_t o = (int32_t)v; fwrite(&o, 4, 1, stdout);
  }}
  return 0;
}}
"""
    src = work / f"{fname}_drv.c"
    exe = work / f"{fname}_drv"
    src.write_text(driver)
    r = subprocess.run([cc, "-O1", "-w", "-o", str(exe), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise AppMulError(f"{cfile}: C compiler {cc!r} failed: {r.stderr.strip().splitlines()[:3]}")
    r2 = subprocess.run([str(exe)], capture_output=True, timeout=60)
    if r2.returncode != 0:
        raise AppMulError(f"{cfile}: compiled model exited with status {r2.returncode}")
    lut = np.frombuffer(r2.stdout, dtype=np.int32)
    if lut.size != (1 << (a_bits + w_bits)):
        raise AppMulError(f"{cfile}: model printed {lut.size} products, expected {1 << (a_bits + w_bits)}")
    return lut.reshape(1 << a_bits, 1 << w_bits).copy()


def import_evoapprox_checkout(root: str | Path, cc: str | None = None, jobs: int | None = None) -> list[AppMul]:
    """Import the multipliers of a user's EvoApproxLib git checkout.

    Every ``multiplers/<N>x<M>_(un)signed/**/*.c`` model (deduplicated by name) is compiled with the
    system C compiler and evaluated on all input pairs; the first C argument is axis 0. The published
    PDK45 power/area/delay are read from the header comments.
    """
    root = Path(root)
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise AppMulError("no C compiler found: install gcc or set CC to import an EvoApproxLib checkout")
    files: dict[str, tuple[Path, int, int, bool]] = {}
    for cfile in sorted(root.rglob("*.c")):
        m = next((_FOLDER_RE.fullmatch(p) for p in cfile.parts if _FOLDER_RE.fullmatch(p)), None)
        if m is None or not cfile.stem.startswith("mul"):
            continue
        files.setdefault(cfile.stem, (cfile, int(m.group(1)), int(m.group(2)), m.group(3) is None))
    if not files:
        raise AppMulError(
            f"{root}: no EvoApproxLib multiplier C models found (expected multiplers/<N>x<M>_unsigned/.../mul*.c)"
        )
    out: list[AppMul] = []
    with (
        tempfile.TemporaryDirectory(prefix="fames-evo-") as work,
        cf.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as ex,
    ):
        futs = {
            name: ex.submit(_compile_and_tabulate, f, a, w, s, cc, Path(work)) for name, (f, a, w, s) in files.items()
        }
        for name, (cfile, a_bits, w_bits, signed) in files.items():
            lut = futs[name].result()
            text = cfile.read_text(errors="replace")
            vals = {k: rx.search(text) for k, rx in _PDK.items()}
            cost = None
            if all(vals.values()):
                cost = _published_cost(*(float(vals[k].group(1)) for k in ("PWR", "AREA", "DELAY")))
            out.append(_evo_appmul(name, a_bits, w_bits, signed, lut, cost, str(cfile.relative_to(root)),
                                   cite=EVO_CITE))
    _set_relative(out)
    return out


def import_evoapprox(src: str | Path | None = None) -> list[AppMul]:
    """EvoApproxLib from a table folder (index.csv + luts.npz) or from a git checkout (C models)."""
    if src is not None and (Path(src) / "evoapproxlib" / "index.csv").is_file():
        src = Path(src) / "evoapproxlib"  # the shared folder itself (../shared): its evoapproxlib/ subfolder
    if src is not None and not (Path(src) / "index.csv").is_file():
        if not Path(src).is_dir():
            raise AppMulError(f"{src}: no such directory (an EvoApproxLib table folder or git checkout)")
        return import_evoapprox_checkout(src)
    return import_evoapprox_tables(src)


# --------------------------------------------------------------------------- text LUT
def _infer_width(vals: np.ndarray, signed: bool) -> int:
    if signed:
        m = max(int(vals.max()), -int(vals.min()) - 1, 1)
        return int(m).bit_length() + 1
    return max(int(vals.max()).bit_length(), 1)


def design_kind(path: Path) -> tuple[str, str]:
    """``(kind, stem)`` of a file to import: kind ``verilog``, ``blif``, ``npy`` or ``text`` from its suffix, a
    ``.gz`` after it ignored (``mul.v.gz`` is Verilog ``mul``)."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, suffix.lower()) if dot and stem else (name, "")
    kind = {"v": "verilog", "sv": "verilog", "blif": "blif", "npy": "npy"}.get(suffix, "text")
    return kind, stem


def read_text_file(path: Path, what: str) -> str:
    """The text of ``path``, gunzipped if it is gzip (a leading byte-order mark, as Windows editors write, dropped);
    a binary or undecodable file is an :class:`AppMulError` naming it."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise AppMulError(f"{path}: a damaged gzip file ({e})") from None
    npz = "; a numpy .npz archive holds several arrays: save the one LUT with np.save(path.npy, lut)" \
        if data[:2] == b"PK" else ""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AppMulError(f"{path} is not a text file (a {what} is UTF-8 text){npz}") from None
    if "\x00" in text:
        raise AppMulError(f"{path} is not a text file (a {what} is UTF-8 text){npz}")
    return text


def _int_field(text: str) -> int:
    """An integer field: ``12``, ``-0x1f`` (hex, octal or binary with its prefix), or an integer written as a float
    (``12.0``, ``1.2e+01``, as ``np.savetxt`` writes)."""
    try:
        return int(text)
    except ValueError:
        if re.fullmatch(r"[+-]?0[xXoObB][0-9A-Fa-f_]+", text):
            return int(text, 0)
        v = float(text)
        if not np.isfinite(v) or v != int(v):
            raise ValueError(text) from None
        return int(v)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return bool(re.fullmatch(r"[+-]?0[xXoObB][0-9A-Fa-f_]+", text))
    return True


def signedness_pair(signed: bool | tuple[bool | None, bool | None] | None) -> tuple[bool | None, bool | None]:
    """``(a_signed, w_signed)`` from ``signed``: None (infer both), a bool for both, or a pair (None: infer)."""
    if signed is None or isinstance(signed, (bool, np.bool_)):
        return signed, signed
    if isinstance(signed, (tuple, list)) and len(signed) == 2:
        return signed[0], signed[1]
    raise AppMulError(f"signed={signed!r}: give None (inferred), True/False for both operands, or a pair "
                      "(a_signed, w_signed)")


def _int_table(rows: list[list[int]], path: Path) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=np.int64)
    except OverflowError:
        raise AppMulError(f"{path}: a value does not fit a 64-bit integer; a LUT holds operands and products of at "
                          "most 8-bit operands") from None


def _operand_grid(a: np.ndarray, w: np.ndarray) -> bool:
    """Whether the columns ``a`` and ``w`` hold every pair of their (at least two) distinct values exactly once: the
    operand columns of `a w product` records. A multiplier's matrix never does (its first column, the products with
    weight 0, is constant)."""
    na, nw = len(np.unique(a)), len(np.unique(w))
    return na > 1 and nw > 1 and na * nw == len(a) == len(np.unique(np.stack([a, w], 1), axis=0))


def read_text_lut(
    path: str | Path,
    name: str | None = None,
    a_bits: int | None = None,
    w_bits: int | None = None,
    signed: bool | tuple[bool | None, bool | None] | None = None,
) -> AppMul:
    """Read a LUT given as ``a b product`` per line (spaces, tabs, commas or semicolons; ``#`` comments; header lines
    without numbers allowed), or as a matrix: ``2^a_bits`` lines of ``2^w_bits`` products, line i and column j for the
    operand bit patterns i and j (two's complement when signed), as ``np.savetxt(lut)`` writes it, or that matrix in a
    ``.npy`` file (``np.save``). A signed matrix whose rows look ordered by value (-8 first) is warned about.

    ``signed``: None infers it, a bool applies to both operands, a pair ``(a_signed, w_signed)`` to each (None in it:
    inferred). Operands of ``a b product`` lines are values (negative for signed): an operand is signed if any of
    its values is negative. A matrix with negative products is taken with the signedness (signed x signed, unsigned x
    signed or signed x unsigned) under which it is closest to an exact multiplier; a mixed one is said in a warning.
    Widths are the smallest that hold the operands (of a matrix: its shape). Every operand pair must appear exactly
    once. Integers written as floats (``12.0``) or with a ``0x``/``0b``/``0o`` prefix are read as integers.
    """
    path = Path(path)
    if not path.is_file():
        raise AppMulError(f"{path}: no such LUT file")
    sa, sw = signedness_pair(signed)
    kind, stem = design_kind(path)
    if kind == "npy":  # np.save(lut): the same matrix, binary
        try:
            data = path.read_bytes()
            lut = np.load(io.BytesIO(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise AppMulError(f"{path}: not a numpy .npy array of numbers (np.save(path, lut) writes one)") from None
        if lut.ndim != 2:
            raise AppMulError(f"{path}: a LUT array is 2-D, (2^a_bits, 2^w_bits), this one has shape {lut.shape}")
        if lut.dtype.kind not in "iuf":
            raise AppMulError(f"{path}: a LUT array holds integer products; this one's dtype is {lut.dtype}")
        return _matrix_lut(path, lut, name or sanitize_name(stem), a_bits, w_bits, (sa, sw))
    rows: list[list[int]] = []
    width = 0  # fields per line: 3 for `a b product` lines, 2^w_bits for a matrix
    header = False
    for ln, line in enumerate(read_text_file(path, "text LUT").splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        parts = re.split(r"[,\s;]+", s)
        if not rows and not any(_is_number(p) for p in parts):  # a header line
            header = True
            continue
        try:
            vals = [_int_field(p) for p in parts]
        except ValueError:
            raise AppMulError(f"{path}:{ln}: non-integer field in {line!r}") from None
        width = width or len(vals)
        if len(vals) != width or width < 3:
            raise AppMulError(f"{path}:{ln}: expected {max(width, 3)} fields (`a b product` lines, or a matrix row of "
                              f"2^w_bits products), got {len(vals)}: {line!r}")
        rows.append(vals)
    if not rows:
        raise AppMulError(f"{path}: no `a b product` lines or matrix rows found")
    arr = _int_table(rows, path)
    if width > 3 and _operand_grid(arr[:, 0], arr[:, 1]):
        raise AppMulError(f"{path}: {width} fields per line{' under a header' if header else ''}, and the first two "
                          "columns look like operands (every pair of their values once): a LUT of `a w product` lines "
                          "has exactly three fields; keep the operand columns and the product column (a header-less "
                          f"matrix of 2^a_bits rows of 2^w_bits products is the other form)")
    if width > 3:
        return _matrix_lut(path, arr, name or sanitize_name(stem), a_bits, w_bits, (sa, sw))
    sa = bool((arr[:, 0] < 0).any()) if sa is None else bool(sa)
    sw = bool((arr[:, 1] < 0).any()) if sw is None else bool(sw)
    a_bits = a_bits or _infer_width(arr[:, 0], sa)
    w_bits = w_bits or _infer_width(arr[:, 1], sw)
    a_bits, w_bits = max(a_bits, 2), max(w_bits, 2)
    av, wv = operand_values(a_bits, sa), operand_values(w_bits, sw)
    # signed operands written as bit patterns (0..15 for 4 bits) instead of values (-8..7)
    patterns = [c for c, sg in ((0, sa), (1, sw)) if sg and arr[:, c].min() >= 0]
    hint = (f"; operands of `a w product` lines are values (negative for signed), and the signed column(s) "
            f"{'/'.join('aw'[c] for c in patterns)} hold no negative one: bit patterns? Write values (pattern - "
            "2^bits for the patterns of the top half)" if patterns else "")
    for col, vals, bits, sg in ((0, av, a_bits, sa), (1, wv, w_bits, sw)):
        bad = (arr[:, col] < vals.min()) | (arr[:, col] > vals.max())
        if bad.any():
            raise AppMulError(
                f"{path}: operand {'aw'[col]}={arr[bad][0, col]} does not fit {bits} "
                f"{'signed' if sg else 'unsigned'} bits{hint}"
            )
    ai = arr[:, 0] % (1 << a_bits)
    wi = arr[:, 1] % (1 << w_bits)
    seen = np.zeros((1 << a_bits, 1 << w_bits), dtype=np.int64)
    np.add.at(seen, (ai, wi), 1)
    if (seen > 1).any():
        i, j = np.argwhere(seen > 1)[0]
        raise AppMulError(f"{path}: operand pair ({av[i]}, {wv[j]}) appears {seen[i, j]} times")
    if (seen == 0).any():
        i, j = np.argwhere(seen == 0)[0]
        raise AppMulError(
            f"{path}: {(seen == 0).sum()} operand pairs missing, e.g. ({av[i]}, {wv[j]}); "
            f"a {a_bits}x{w_bits} LUT needs all {seen.size} pairs{hint}"
        )
    lut = np.zeros_like(seen)
    lut[ai, wi] = arr[:, 2]
    return AppMul(
        name=name or sanitize_name(stem),
        a_bits=a_bits,
        w_bits=w_bits,
        a_signed=sa,
        w_signed=sw,
        lut=lut,
        structural=False,
        provenance={"family": "text", "source": str(path)},
    )


def _matrix_lut(path: Path, lut: np.ndarray, name: str, a_bits: int | None, w_bits: int | None,
                signed: tuple[bool | None, bool | None]) -> AppMul:
    """The AppMul of a LUT read as a matrix (rows: activation bit patterns, columns: weight bit patterns)."""
    rows, cols = lut.shape
    shape_bits = [int(n).bit_length() - 1 if n >= 4 and n & (n - 1) == 0 else None for n in (rows, cols)]
    if None in shape_bits:
        raise AppMulError(f"{path}: a LUT matrix has 2^a_bits rows of 2^w_bits products (a, w in 2..8); this one is "
                          f"{rows} x {cols}")
    for given, got, what in ((a_bits, shape_bits[0], "rows: a_bits"), (w_bits, shape_bits[1], "columns: w_bits")):
        if given is not None and given != got:
            raise AppMulError(f"{path}: the matrix has 2^{got} {what} = {got}, but {given} was asked for")
    sa, sw = _matrix_signedness(path, lut, *shape_bits, signed)
    if lut.dtype.kind in "iu":  # an .npy array in a dtype too narrow for the products has wrapped them
        lo, hi = output_range(*shape_bits, sa, sw)
        info = np.iinfo(lut.dtype)
        if info.min > lo or info.max < hi:
            raise AppMulError(f"{path}: its dtype {lut.dtype} cannot hold every {shape_bits[0]}x{shape_bits[1]} "
                              f"product ({lo}..{hi}), so wrapped products would pass for approximations: save the "
                              "table as int32 (np.save(path, lut.astype(np.int32)))")
        u_hi = output_range(*shape_bits, False, False)[1]
        if (sa or sw) and None in signed and info.max < u_hi:
            unwrapped = lut.astype(np.int64) % (1 << (8 * lut.dtype.itemsize))  # as unsigned products before wrapping
            d_u = float(np.abs(unwrapped - exact_lut(*shape_bits)).mean())
            d_s = min(_distances(lut, *shape_bits, sa, sw)[:2])
            if d_u * 4 < d_s or d_u == d_s == 0:
                raise AppMulError(f"{path}: its dtype {lut.dtype} wrapped unsigned products into negative values: "
                                  f"read back modulo 2^{8 * lut.dtype.itemsize} it is {d_u:.1f} from an unsigned "
                                  f"multiplier on average, {d_s:.1f} read as signed; save the table as int32 "
                                  "(np.save(path, lut.astype(np.int32)) before the products wrap), or give the "
                                  "signedness to read it as it is")
            warnings.warn(f"{path}: read as signed from its negative values, but its dtype {lut.dtype} would also "
                          f"have wrapped unsigned products (up to {u_hi}) into negative ones: if the table is "
                          "unsigned, save it as int32; give the signedness to silence this", stacklevel=3)
    if sa or sw:  # rows and columns follow bit patterns 0..2^(b-1)-1, -2^(b-1)..-1, not values in increasing order
        as_is, by_value, shift = _distances(lut, *shape_bits, sa, sw)
        if by_value * 4 < as_is:
            warnings.warn(f"{path}: its rows and columns look ordered by operand value (the negative values first), "
                          "but a LUT matrix is indexed by bit pattern (0, 1, ..., then the negative values): reorder "
                          f"it with np.roll(lut, {shift}, axis=(0, 1))", stacklevel=3)
    return AppMul(name=name, a_bits=shape_bits[0], w_bits=shape_bits[1], a_signed=sa,
                  w_signed=sw, lut=lut, structural=False,
                  provenance={"family": "text", "source": str(path), "format": "matrix"})


def _matrix_signedness(path: Path, lut: np.ndarray, a_bits: int, w_bits: int,
                       signed: tuple[bool | None, bool | None]) -> tuple[bool, bool]:
    """The operands' signedness of a LUT matrix: as given, unsigned without negative products, else the signed
    combination whose exact table (also read by value, see the warning above) is closest to the matrix."""
    sa, sw = signed
    if sa is not None and sw is not None:
        return bool(sa), bool(sw)
    if not (lut < 0).any():
        return bool(sa), bool(sw)
    options = [(a, w) for a in ((sa,) if sa is not None else (True, False))
               for w in ((sw,) if sw is not None else (True, False)) if a or w]
    if len(options) == 1:
        return options[0]

    best = min(options, key=lambda o: min(_distances(lut, a_bits, w_bits, *o)[:2]))
    if best != (True, True):
        kind = f"{a_bits}{'s' if best[0] else 'u'}x{w_bits}{'s' if best[1] else 'u'}"
        warnings.warn(f"{path}: read as {kind} ({'activation' if best[0] else 'weight'} signed only), the signedness "
                      "under which it is closest to an exact multiplier; give the signedness to choose otherwise "
                      "(--signed, --signed-only a|w; read_text_lut(signed=(a_signed, w_signed)))", stacklevel=4)
    return best


def _distances(lut: np.ndarray, a_bits: int, w_bits: int, a_signed: bool, w_signed: bool
               ) -> tuple[float, float, tuple[int, int]]:
    """Mean distance of a LUT matrix to the exact table of that signedness, read by bit pattern (as it should be)
    and read as ordered by operand value (negative values first), and the ``np.roll`` shift between the two."""
    exact = exact_lut(a_bits, w_bits, a_signed, w_signed)
    shift = ((1 << (a_bits - 1)) if a_signed else 0, (1 << (w_bits - 1)) if w_signed else 0)
    by_value = np.roll(lut, (-shift[0], -shift[1]), axis=(0, 1))
    return float(np.abs(lut - exact).mean()), float(np.abs(by_value - exact).mean()), shift


def write_text_lut(m: AppMul, path: str | Path) -> Path:
    """Write ``m`` in the ``a b product`` text format (values, not indices)."""
    from fames.io import atomic_write_text

    av, wv = operand_values(m.a_bits, m.a_signed), operand_values(m.w_bits, m.w_signed)
    lines = [f"# {m.name} {m.signature()}: a w product"]
    for i, a in enumerate(av):
        lines.extend(f"{a} {w} {m.lut[i, j]}" for j, w in enumerate(wv))
    return atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- Verilog / BLIF
def import_design(
    path: str | Path,
    a_bits: int | None = None,
    w_bits: int | None = None,
    signed: bool | tuple[bool | None, bool | None] | None = None,
    top: str | None = None,
    ports: tuple[str, str, str] | None = None,
    name: str | None = None,
    liberty: str | os.PathLike | None = None,
    remap: bool = False,
    keep_structure: bool = False,
) -> AppMul:
    """Import a combinational multiplier from Verilog (``.v``/``.sv``) or BLIF (``.blif``).

    The design is synthesized to generic gates (Yosys ``synth``, whose ABC pass optimises the logic; with
    ``keep_structure`` only elaborated, ``synth -noabc``, so the gates stay as written), simulated on all input pairs
    to obtain its LUT, and re-emitted as structural Verilog with the fames port convention, so that it can be costed
    by synthesis (re-synthesised, or mapped as it stands with ``fames lib cost --keep-structure``).
    ``ports`` names the activation, weight and product ports of the design; None detects them in a module with
    exactly two inputs and one output (inputs matched to the widths, else in declaration order; the
    choice is kept in ``provenance["ports"]``: EvoApproxLib's 8x8 tables index their axis 0 by port ``B``, so
    ``("B", "A", "O")`` reproduces a table's orientation from its Verilog).
    ``a_bits``/``w_bits`` default to the widths of the activation and weight ports. ``signed`` None takes each
    operand's signedness from its port declaration (``input signed [3:0] a``); True reads both operands as two's
    complement even where the ports are declared plain (EvoApproxLib's ``mul8s_*``); False refuses ports declared
    ``signed``, whose bits the design itself treats as two's complement; a pair ``(a_signed, w_signed)`` says it per
    operand (None in it: from the declaration).
    A product that is the same constant for every pair (e.g. EvoApproxLib's ``mul8u_TD3``) is imported with a
    warning; an undriven product port is an error.

    A netlist already mapped to standard cells is read with ``liberty``, the .lib(.gz) whose cells it instantiates
    (their functions give the LUT): its cells are kept as they are, so costing with that liberty takes the
    netlist as mapped (only logic around the cells is mapped by ABC), and costing with another liberty is refused;
    ``remap`` replaces the cells by their functions instead, to re-synthesise the design with any liberty.
    """
    from fames.hw.netlist import netlist_to_verilog
    from fames.hw.synth import synthesize

    path = Path(path)
    if not path.is_file():
        raise AppMulError(f"{path}: no such design file")
    kind, stem = design_kind(path)
    fmt = "blif" if kind == "blif" else "verilog"
    if keep_structure and fmt == "blif":
        raise AppMulError(f"{path}: a BLIF file's .names tables are read as look-up tables (no gates to keep); import "
                          "it without --keep-structure, or as structural Verilog")
    source = read_text_file(path, "design")
    top = top_module(source, fmt, path, top, stem)
    mapped = False
    if liberty is not None:
        from fames.hw.liberty import read_liberty
        from fames.hw.synth import liberty_cells_in

        mapped = bool(liberty_cells_in(source, read_liberty(liberty)))
    netlist = synthesize(source, top, liberty, fmt=fmt, mapping="generic" if remap else "keep",
                         include_dirs=(path.parent,), structure="keep" if keep_structure else "resynthesise")
    pa, pw, py = ports or _detect_ports(netlist.inputs, netlist.outputs, a_bits, w_bits, path, top)
    for p in (pa, pw):
        if p not in netlist.inputs:
            raise AppMulError(f"{path}: module {top!r} has no input port {p!r} (ports: {sorted(netlist.inputs)}); "
                              "pass --ports")
    a_bits = len(netlist.inputs[pa]) if a_bits is None else a_bits
    w_bits = len(netlist.inputs[pw]) if w_bits is None else w_bits
    for p, width in ((pa, a_bits), (pw, w_bits)):
        if len(netlist.inputs[p]) != width:
            raise AppMulError(f"{path}: port {p!r} is {len(netlist.inputs[p])} bits wide, but --bits asks for {width}")
    declared = [p for p in (pa, pw) if p in netlist.signed_ports]
    sa, sw = signedness_pair(signed)
    refused = [p for p, sg in ((pa, sa), (pw, sw)) if sg is False and p in netlist.signed_ports]
    if refused:
        raise AppMulError(f"{path}: port(s) {refused} of module {top!r} are declared signed, so the design treats "
                          "their bits as two's complement; import it as signed (--signed, or leave signedness to "
                          "the port declarations)")
    a_signed = bool(sa) or pa in netlist.signed_ports
    w_signed = bool(sw) or pw in netlist.signed_ports
    if py in netlist.undriven:
        raise AppMulError(f"{path}: the product port {py!r} of module {top!r} is not (fully) driven; an undriven "
                          "output would import as a constant")
    if py not in netlist.outputs:
        raise AppMulError(f"{path}: module {top!r} has no output port {py!r} (outputs: {sorted(netlist.outputs)})")
    if len(netlist.outputs[py]) != a_bits + w_bits:
        raise AppMulError(
            f"{path}: product port {py!r} is {len(netlist.outputs[py])} bits wide; a {a_bits}x{w_bits} multiplier "
            f"has a {a_bits + w_bits}-bit product"
        )
    av = np.arange(1 << a_bits).repeat(1 << w_bits)
    wv = np.tile(np.arange(1 << w_bits), 1 << a_bits)
    y = netlist.simulate({pa: av, pw: wv})[py]
    n = a_bits + w_bits
    y = y & ((1 << n) - 1)
    if sa is None and sw is None and not declared:  # plain ports: a signed design read as unsigned is wrong silently
        _warn_if_signed(y, a_bits, w_bits, path)
    if a_signed or w_signed:
        y = np.where(y >= (1 << (n - 1)), y - (1 << n), y)
    if np.all(y == y[0]):
        warnings.warn(f"{path}: the product port {py!r} is the constant {int(y[0])} for every input pair",
                      stacklevel=2)
    name = name or sanitize_name(stem)
    tname = sanitize_name(name)
    verilog = netlist_to_verilog(netlist, tname, {pa: "a", pw: "w", py: "y"})
    return AppMul(
        name=name,
        a_bits=a_bits,
        w_bits=w_bits,
        a_signed=a_signed,
        w_signed=w_signed,
        lut=y.reshape(1 << a_bits, 1 << w_bits),
        verilog=verilog,
        top=tname,
        structural=True,
        provenance={"family": "imported", "source": str(path), "format": fmt, "top": top,
                    "ports": {"activation": pa, "weight": pw, "product": py},
                    **({"structure": "as written"} if keep_structure else {}),
                    **({"cells_of": Path(liberty).name, "mapping": "re-synthesised" if remap else "as imported"}
                       if mapped else {})},
    )


def _warn_if_signed(y: np.ndarray, a_bits: int, w_bits: int, path: Path) -> None:
    """Warn when the products ``y`` (bit patterns, AppMul index order) are far closer to a multiplier with one or
    both operands in two's complement than to an unsigned one's, as EvoApproxLib's ``mul8s_*`` (ports declared
    without ``signed``) or ``$signed(a) * $signed({1'b0, w})`` behind plain ports."""
    n = a_bits + w_bits
    ys = np.where(y >= (1 << (n - 1)), y - (1 << n), y)
    unsigned_err = np.abs(y - exact_lut(a_bits, w_bits).ravel()).mean()
    fixes = {(True, True): "--signed (signed=True)", (True, False): "--signed-only a (signed=(True, False))",
             (False, True): "--signed-only w (signed=(False, True))"}
    errs = {k: np.abs(ys - exact_lut(a_bits, w_bits, *k).ravel()).mean() for k in fixes}
    best = min(errs, key=errs.get)
    if errs[best] * 4 < unsigned_err:
        what = "two's complement" if best == (True, True) else f"the {'activation' if best[0] else 'weight'} " \
                                                              "operand in two's complement"
        warnings.warn(f"{path}: read as unsigned, its products are off by {unsigned_err:.1f} on average; read with "
                      f"{what}, by {errs[best]:.1f}: import it with {fixes[best]}", stacklevel=3)


_ESCAPED_OR_PLAIN = r"(?:\\(\S+)|([A-Za-z_][\w$]*))"  # a Verilog identifier: \escaped-name or plain


def top_module(source: str, fmt: str, path: Path, top: str | None = None, stem: str | None = None) -> str:
    """The top module of a design file: ``top`` when given (it must be defined there), else the module marked
    ``(* top *)``, else the one module no other module of the file instantiates (the one named after the file when
    several are not instantiated; ``stem`` defaults to the file's)."""
    stem = stem or path.stem
    if fmt == "blif":
        names = re.findall(r"^\s*\.model\s+(\S+)", source, re.M)
        text, marked, heads = source, [], []
    else:
        text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", source, flags=re.S)  # comments can name modules
        text = re.sub(r"\bendmodule\s*:\s*" + _ESCAPED_OR_PLAIN, "endmodule", text)  # SystemVerilog end labels
        heads = re.findall(r"^\s*((?:\(\*[^)]*?\*\)\s*)*)(?:macro)?module\s+" + _ESCAPED_OR_PLAIN, text, re.M)
        names = [esc or plain for _, esc, plain in heads]
        marked = [esc or plain for attrs, esc, plain in heads if re.search(r"\btop\b", attrs)]
        text = re.sub(r"\(\*[^)]*?\*\)", " ", text)  # attributes can name modules too
    if not names:  # let the synthesis say what is wrong with the file
        return top or stem
    if top is not None:
        top = top.removeprefix("\\")
        if top not in names:
            raise AppMulError(f"{path}: no module {top!r} in the file; it defines {names}: name one with --top")
        return top
    if len(marked) == 1:
        return marked[0]
    escaped = {esc for _, esc, _ in heads if esc} if fmt != "blif" else set()

    def uses(m: str) -> int:  # occurrences of the name: its definition and every instance
        pattern = rf"\\{re.escape(m)}(?=\s)" if m in escaped else rf"(?<![\w$\\]){re.escape(m)}(?![\w$])"
        return len(re.findall(pattern, text))

    used = {m for m in names if uses(m) > 1}
    roots = [m for m in names if m not in used]
    # a module without ports (`module tb;`) is a testbench, not a multiplier: its design is among the others
    bare = {m for m in names if fmt != "blif" and re.search(rf"\bmodule\s+\\?{re.escape(m)}\s*(\(\s*\))?\s*;", text)}
    if bare and len(ported := [m for m in roots if m not in bare] or [m for m in names if m not in bare]) == 1:
        return ported[0]
    if bare & set(roots):
        raise AppMulError(f"{path}: module(s) {sorted(bare & set(roots))} have no ports (a testbench?); of the modules "
                          f"with ports, {[m for m in names if m not in bare]}, name the multiplier with --top")
    if len(roots) == 1:
        return roots[0]
    if stem in roots:
        return stem
    raise AppMulError(f"{path}: the file defines modules {names}, of which {roots or names} are not instantiated by "
                      "another module; name the multiplier with --top")


def _detect_ports(inputs: dict[str, list[int]], outputs: dict[str, list[int]], a_bits: int | None, w_bits: int | None,
                  path: Path, top: str) -> tuple[str, str, str]:
    """``(activation, weight, product)`` port names: ``a``, ``w`` and ``y`` (any case) when the module has them,
    else those of a module with exactly two inputs and one output (inputs matched to the widths, else in declaration
    order)."""
    by_name = {n.lower(): n for n in (*inputs, *outputs)}
    if {"a", "w"} <= by_name.keys() and by_name["a"] in inputs and by_name["w"] in inputs:
        out = by_name.get("y") if by_name.get("y") in outputs else (next(iter(outputs)) if len(outputs) == 1 else None)
        if out is not None:
            return by_name["a"], by_name["w"], out
    if len(inputs) != 2 or len(outputs) != 1:
        raise AppMulError(f"{path}: module {top!r} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; ports "
                          "are detected only with two inputs and one output, or inputs a, w: name them "
                          "(--ports A W Y)")
    (i0, n0), (i1, n1) = inputs.items()
    pa, pw = (i1, i0) if len(n0) == w_bits != a_bits and len(n1) == a_bits else (i0, i1)
    return pa, pw, next(iter(outputs))

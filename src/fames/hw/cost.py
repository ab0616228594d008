"""Hardware cost of AppMuls: synthesis -> area (um^2), delay (ns), energy/op (fJ), power (uW), PDP (fJ).

Recipe (versioned by :data:`COST_VERSION`): :func:`fames.hw.synth.synthesize` with the liberty, static
timing by :func:`fames.hw.timing.analyze` (BUF_X1-like input drivers, no output-port load unless
``output_load_ff``), zero-delay energy by :func:`fames.hw.energy.energy_per_op` under a seeded operand stream
(primary-input switching left to the upstream driver), leakage over ``clock_ns``.
``power_uw = energy_fj / clock_ns`` (fJ/ns = uW), ``pdp_fj = power_uw x delay_ns``.

Results are cached on disk under ``cache_dir()/hw/`` keyed by the content hash of (Verilog, top,
liberty file bytes, recipe version, stream parameters), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fames.appmul.core import AppMul, Cost
from fames.errors import HardwareError, expect
from fames.hw.energy import DEFAULT_VECTORS, INPUT_NETS_DEFAULT, energy_per_op, make_stream
from fames.hw.liberty import read_liberty
from fames.hw.netlist import simulate_lut
from fames.hw.synth import RECIPE_VERSION, adder_cells_of, liberty_cells_in, lut_to_verilog, synthesize
from fames.hw.timing import OUTPUT_LOAD_FF, analyze
from fames.io import cache_dir, content_hash, read_checked_json, write_cache_json

COST_VERSION = f"{RECIPE_VERSION}/sta-2/energy-zd-2"  # sta-2: an input slew is its driver's transition
RELATIVE_KEYS = {"area": "area_um2", "delay": "delay_ns", "energy": "energy_fj", "power": "power_uw",
                 "pdp": "pdp_fj"}
# a design known only by its LUT is synthesized from the truth table; measured on our exact multipliers, that costs
# 1.0x the structural design at 2x2 but 0.59-4.0x at 3x3 and 4x4 (synthetic and NanGate liberties): only 2x2 compares
_TABLE_COMPARABLE_MAX_BITS = 2


@lru_cache(maxsize=32)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def liberty_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a liberty file's bytes (memoised per path, size and mtime)."""
    p = Path(path).resolve()
    if not p.is_file():
        raise HardwareError(f"liberty file {path} does not exist; pass the path of a .lib or .lib.gz file")
    st = p.stat()
    return _file_hash(str(p), st.st_mtime_ns, st.st_size)


def design_of(appmul: AppMul) -> tuple[str, str, bool, str]:
    """``(verilog, top, comparable, note)`` used to cost ``appmul``."""
    from fames.appmul.core import sanitize_name

    if appmul.verilog is not None:
        top = appmul.top or sanitize_name(appmul.name)
        verilog, structural = appmul.verilog, appmul.structural
    else:
        top = sanitize_name(appmul.name)
        verilog, structural = lut_to_verilog(appmul, top), False
    wide = max(appmul.a_bits, appmul.w_bits) > _TABLE_COMPARABLE_MAX_BITS
    if not structural and wide:
        return verilog, top, False, "from truth table, not comparable"
    return verilog, top, True, "" if structural else "from truth table"


def cost_appmul(
    appmul: AppMul,
    liberty_path: str | os.PathLike,
    *,
    stream: str = "uniform",
    hold: int = 1,
    n_vectors: int = DEFAULT_VECTORS,
    seed: int = 0,
    clock_ns: float = 1.0,
    hist: np.ndarray | None = None,
    check: bool = True,
    cache: bool = True,
    input_nets: str = INPUT_NETS_DEFAULT,
    output_load_ff: float = OUTPUT_LOAD_FF,
    activity: str = "zero-delay",
    toggle_rate: float = 0.1,
    wire_load: str = "none",
    adder_cells: bool = False,
    structure: str = "resynthesise",
) -> Cost:
    """Cost one AppMul with the liberty at ``liberty_path`` (see the module docstring for the recipe).

    ``stream``/``hold``/``n_vectors``/``seed``/``hist``/``toggle_rate`` choose the operand stream for energy
    (:func:`fames.hw.energy.make_stream`). With ``check`` the synthesised netlist must reproduce
    ``appmul.lut`` exactly (else :class:`HardwareError`). ``input_nets``: how primary-input switching counts
    (:func:`fames.hw.energy.energy_per_op`); ``output_load_ff``: the load on every product bit (fF), for timing and
    energy; ``activity``: how toggles are counted (:func:`fames.hw.energy.energy_per_op`); ``wire_load``:
    ``"liberty"`` adds the liberty's default wire-load capacitance to every net, for timing and energy
    (:func:`fames.hw.timing.net_loads`); ``adder_cells``: map full and half adders to the liberty's adder cells before
    ABC maps the rest (:func:`fames.hw.synth.synthesize`; not the default, see docs/results/hw_cost.md);
    ``structure="keep"``: map a structural design's own gates without restructuring them, with the smallest cell of
    each function (:func:`fames.hw.synth.synthesize`; a design known only by its table has no structure to keep and
    is re-synthesised, and its recipe says so).
    """
    if clock_ns <= 0:
        raise HardwareError(f"clock_ns must be positive (got {clock_ns})")
    lib_hash = liberty_hash(liberty_path)
    verilog, top, comparable, note = design_of(appmul)
    if structure not in ("resynthesise", "keep"):
        raise HardwareError(f"unknown structure {structure!r}; use 'resynthesise' or 'keep'")
    structure = structure if appmul.verilog is not None and appmul.structural else "resynthesise"
    kept = liberty_cells_in(verilog, read_liberty(liberty_path))  # a netlist mapped to these cells: costed as mapped
    params = {
        "widths": list(appmul.widths), "stream": stream, "hold": int(hold), "n_vectors": int(n_vectors),
        "seed": int(seed), "clock_ns": float(clock_ns), "check": bool(check),
        "hist": None if hist is None else content_hash(np.ascontiguousarray(hist, dtype=np.float64).tobytes()),
        "lut": content_hash(np.ascontiguousarray(appmul.lut, dtype=np.int64).tobytes()) if check else None,
        "input_nets": input_nets, "output_load_ff": float(output_load_ff),
        "activity": activity, **({"toggle_rate": float(toggle_rate)} if stream == "toggle" else {}),
        **({"wire_load": wire_load} if wire_load != "none" else {}),
        **({"adder_cells": True} if adder_cells else {}),
        **({"structure": structure} if structure != "resynthesise" else {}),
        **({"kept_cells": kept} if kept else {}),
    }
    key = content_hash(verilog, top, lib_hash, COST_VERSION, json.dumps(params, sort_keys=True))
    # what a reader of the figures needs to reproduce them (not the design's own widths, table or histogram)
    recipe = {"version": COST_VERSION, **{k: v for k, v in params.items() if k not in ("widths", "lut", "check")},
              "liberty_sha256": lib_hash}  # liberties of one name (corners, edited copies) are told apart
    path = cache_dir() / "hw" / f"{key}.json"
    cached = read_checked_json(path) if cache else None  # an edited or damaged entry is recomputed
    if cached is not None:
        try:
            return replace(Cost.from_dict(cached), recipe=recipe, comparable=comparable, note=note)
        except (ValueError, TypeError, KeyError):
            pass
    try:
        netlist = synthesize(verilog, top, liberty_path, adder_cells=adder_cells, structure=structure)
    except HardwareError as e:
        mapped = appmul.provenance.get("cells_of")
        if mapped is None or mapped == Path(liberty_path).name or "is neither defined" not in str(e):
            raise
        raise HardwareError(f"{appmul.name!r} was imported as a netlist of {mapped}'s cells: cost it with that "
                            f"liberty, or import it again with --remap to re-synthesise it for any liberty "
                            f"({e})") from None
    if check:
        got = simulate_lut(netlist, *appmul.widths)
        if not np.array_equal(got, appmul.lut.astype(np.int64)):
            bad = int(np.count_nonzero(got != appmul.lut))
            raise HardwareError(
                f"AppMul {appmul.name!r}: the synthesised Verilog (module {top}) disagrees with its LUT in {bad} "
                "of the entries; check the Verilog, the port convention and the signedness flags"
            )
    timing = analyze(netlist, output_load_ff=output_load_ff, wire_load=wire_load)
    a, w = make_stream(stream, appmul.a_bits, appmul.w_bits, n_vectors, seed, hold, hist, toggle_rate)
    e = energy_per_op(netlist, netlist.liberty, a, w, clock_ns=clock_ns, timing=timing, input_nets=input_nets,
                      activity=activity)
    power = e.total_fj / clock_ns
    lib = netlist.liberty
    cost = Cost(
        area_um2=netlist.area(),
        delay_ns=timing.delay_ns,
        energy_fj=e.total_fj,
        power_uw=power,
        pdp_fj=power * timing.delay_ns,
        clock_ns=clock_ns,
        source="synthesis",
        liberty=lib.name if lib is not None else None,
        comparable=comparable,
        note=note,
        cells=len(netlist.cells),
        recipe=recipe,
    )
    if cache:
        write_cache_json(path, cost.to_dict())
    return cost


def relative_cost(cost: Cost, ref: Cost) -> dict[str, float]:
    """Ratios ``cost / ref`` for area, delay, energy, power and PDP (NaN when the reference is 0)."""
    out: dict[str, float] = {}
    for k, attr in RELATIVE_KEYS.items():
        x, r = getattr(cost, attr), getattr(ref, attr)
        if x is not None and r is not None:
            out[k] = float(x) / float(r) if r else float("nan")
    return out


def _default_reference(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> AppMul:
    try:
        from fames.appmul import families
    except ImportError as e:  # pragma: no cover - depends on the colleague's module
        raise HardwareError(
            "no exact reference design: fames.appmul.families is not available; pass reference=callable"
        ) from e
    return families.build("exact", a_bits, w_bits, a_signed, w_signed)


def cost_library(
    appmuls: Iterable[AppMul],
    liberty_path: str | os.PathLike,
    reference: Callable[[int, int, bool, bool], AppMul] | None = None,
    progress: bool = True,
    jobs: int | None = None,
    failures: dict[str, str] | None = None,
    **kw: Any,
) -> list[AppMul]:
    """Cost every AppMul and the exact multiplier of each distinct widths key; fill ``cost.relative``.

    ``reference(a_bits, w_bits, a_signed, w_signed) -> AppMul`` gives the exact design (it must be exact; default:
    ``fames.appmul.families.build("exact", ...)``); it is costed by the same recipe and keyword
    arguments ``kw`` (those of :func:`cost_appmul`); ``jobs`` designs are costed at once (default: CPU count).
    Returns new AppMul objects, in the input order (``appmuls``: a list, a :class:`fames.Library` or any iterable of
    AppMuls). With a ``failures`` dict, a design that fails synthesis or verification is recorded there (name ->
    error) and left out; without, the first failure raises.
    """
    if not isinstance(appmuls, (str, bytes, os.PathLike)) and isinstance(appmuls, Iterable):
        appmuls = list(appmuls)
    expect(appmuls, (list, tuple), "cost_library: appmuls")
    for m in appmuls:
        expect(m, AppMul, "cost_library: every AppMul")
    expect(liberty_path, (str, os.PathLike), "cost_library: liberty_path")
    if str(liberty_path) == "synthetic":  # as everywhere else: the project's own liberty
        from fames.hw.synthetic import default_synthetic_liberty

        liberty_path = default_synthetic_liberty()
    import concurrent.futures as cf

    from tqdm.auto import tqdm

    if kw.get("adder_cells"):
        adder_cells_of(liberty_path)  # refused before any work when the liberty has no full adder
    ref_fn = reference or _default_reference
    keys = list(dict.fromkeys(m.widths for m in appmuls))
    designs = [ref_fn(*k) for k in keys] + list(appmuls)
    for k, ref in zip(keys, designs, strict=False):
        if ref.widths != k or not ref.is_exact():
            raise HardwareError(f"reference {ref.name!r} ({ref.signature()}) is not an exact multiplier of the widths "
                                f"{k}: relative figures are taken against an exact design, because the energy of the "
                                "exact multiplier (every budget's baseline) is derived from them")
    jobs = max(1, jobs or os.cpu_count() or 1)
    costs: list[Cost | None] = [None] * len(designs)
    # Synthesis runs in a child process per design, so threads overlap the work of several designs.
    with (
        tqdm(total=len(designs), desc="hardware cost", unit="design", disable=not progress) as bar,
        cf.ThreadPoolExecutor(max_workers=jobs) as ex,
    ):
        futs = {ex.submit(cost_appmul, d, liberty_path, **kw): i for i, d in enumerate(designs)}
        try:
            for f in cf.as_completed(futs):
                i = futs[f]
                try:
                    costs[i] = f.result()
                except HardwareError as e:
                    if failures is None or i < len(keys):  # a reference must cost
                        raise
                    failures[designs[i].name] = str(e)
                bar.set_postfix_str(designs[i].name[:30], refresh=False)  # drawn at the bar's own interval
                bar.update()
        except BaseException:  # Ctrl-C or an error: only the designs being costed finish, the queue is dropped
            for f in futs:
                f.cancel()
            raise
    refs = {(k, c.recipe.get("structure")): c for k, c in zip(keys, costs[: len(keys)], strict=True)}
    ref_designs = dict(zip(keys, designs, strict=False))
    out: list[AppMul] = []
    for m, c in zip(appmuls, costs[len(keys) :], strict=True):
        if c is None:
            continue
        # a design known only by its table has no structure to keep: it is compared with the reference re-synthesised
        key = (m.widths, c.recipe.get("structure"))
        if key not in refs:
            refs[key] = cost_appmul(ref_designs[m.widths], liberty_path, **{**kw, "structure": "resynthesise"})
        c.relative = relative_cost(c, refs[key])
        c.recipe = {**c.recipe, "reference": ref_designs[m.widths].name}
        out.append(m.with_cost(c))
    optimised = [m.name for m in out if kw.get("structure") == "keep" and m.provenance.get("family") == "imported"
                 and m.provenance.get("structure") != "as written" and m.cost.recipe.get("structure") == "keep"]
    if optimised:
        warnings.warn(f"{len(optimised)} design(s) ({', '.join(optimised[:5])}{', ...' * (len(optimised) > 5)}) were "
                      "optimised by Yosys/ABC when imported: --keep-structure keeps that optimised netlist, not the "
                      "source's gates; import them again with --keep-structure (and --replace) for the gates as "
                      "written (a BLIF source as structural Verilog: its tables have no gates to keep)", stacklevel=2)
    return out

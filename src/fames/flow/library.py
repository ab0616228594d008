"""The candidate AppMuls of a model: a library in any form the user has, narrowed to the model's layer widths,
with the exact multiplier of every width added and every design costed on the liberty."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fames.appmul.core import AppMul, sanitize_name
from fames.appmul.families import build, build_family
from fames.appmul.importers import import_evoapprox
from fames.appmul.library import Library
from fames.errors import FamesError
from fames.hw.cost import cost_appmul, cost_library, liberty_hash
from fames.hw.synthetic import default_synthetic_liberty
from fames.io import read_checked_json
from fames.method.problem import check_widths

Widths = tuple[int, int, bool, bool]


def liberty_path(value: str | Path) -> Path:
    """``synthetic`` means the project's own small liberty (written to the cache); else a liberty path."""
    if str(value) == "synthetic":
        return default_synthetic_liberty()
    p = Path(value)
    if not p.is_file():
        raise FamesError(f"liberty {p} not found; give a .lib/.lib.gz path or 'synthetic'")
    return p


def synthesized_appmuls(widths: set[Widths], liberty: str | Path, options: Any = None,
                        progress: bool = True, operand_weights: dict[Widths, Any] | None = None,
                        ) -> list[AppMul]:
    """Approximate logic synthesis for every width pair (``options``: a ``SynthOptions``, default settings when
    None), NanGate-style gate costs from ``liberty``; each library is cached by its settings, the liberty and the
    operand weights. ``operand_weights`` (needed when ``options.operands``, :func:`synth_operand_weights`): per width
    pair, operand-pair counts ``(2^a, 2^w)`` weighting the error, or ``{layer: counts}`` for one library per layer
    (each design named after its layer; a function found for two layers is kept once)."""
    from dataclasses import asdict

    from filelock import FileLock

    from fames.appmul.synth.library import SynthConfig, gate_costs, synthesize
    from fames.io import cache_dir, content_hash, write_checked_json

    opts = asdict(options) if options is not None else {}
    max_bits = opts.pop("max_bits", 6)
    if opts.pop("operands", False) and operand_weights is None:
        raise FamesError("synth.operands weights the error by the model's operand pairs: it needs the model "
                         "(fames.approximate_ or fames run), not a bare library")
    if "methods" in opts:
        opts["methods"] = tuple(opts["methods"])
    lib_file = liberty_path(liberty)
    out: list[AppMul] = []
    for a, w, sa, sw in sorted(widths):
        if max(a, w) > max_bits:
            continue
        if sa != sw:
            raise FamesError(f"library synth: layers with {a}x{w} bits mix signed and unsigned operands; synthesis "
                             "needs both signed or both unsigned")
        cfg = SynthConfig(a, w, sa, **opts)
        entry = None if operand_weights is None else operand_weights[(a, w, sa, sw)]
        seen: set[bytes] = set()
        for layer, weights in (entry if isinstance(entry, dict) else {"": entry}).items():
            tag = "" if weights is None else content_hash(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
            where = cache_dir() / "synth" / content_hash(repr(cfg), liberty_hash(lib_file), "synth-4", tag)
            where.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{where}.lock"):  # two runs of one synthesis: the second waits, then reads the first's
                lib = _cached_library(where)
                if lib is None:
                    if layer and progress:
                        print(f"synthesizing {a}x{w} designs for layer {layer}")
                    made = synthesize(cfg, weights, gate_cost=gate_costs(lib_file), progress=progress,
                                      cost=pdp_costs(lib_file))
                    lib = Library(cheapest_implementations(made, lib_file))
                    lib.save(where, force=True)
                    write_checked_json(where / _SUMS, _file_sums(where))
            for m in lib:
                key = np.asarray(m.lut, dtype=np.int64).tobytes()
                if key in seen:
                    continue
                seen.add(key)
                out.append(for_layer(m, layer) if layer else m)
    return out


_SUMS = "sums.json"  # a cached synthesized library's file checksums


def _file_sums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a library folder but the checksum file itself."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != _SUMS}


def _cached_library(where: Path) -> Library | None:
    """The synthesized library cached at ``where``, or None (absent, or damaged or edited since: warned)."""
    if not where.exists():
        return None
    sums = read_checked_json(where / _SUMS)
    try:
        if sums is not None and sums == _file_sums(where):
            return Library.load(where)
    except (FamesError, OSError):
        pass
    warnings.warn(f"the cached synthesized library {where} is incomplete, damaged or was edited: synthesizing it "
                  "again", stacklevel=3)
    return None


def for_layer(m: AppMul, layer: str) -> AppMul:
    """Synthesized design ``m`` named after the layer it was made for (``synth_<layer>_...``), its Verilog module
    too, so that the libraries of several layers can share one library (one module per name)."""
    from dataclasses import replace

    name = m.name.replace("synth_", f"synth_{sanitize_name(layer)}_", 1)
    if m.verilog is None or m.top is None:
        return replace(m, name=name)
    top = sanitize_name(name)
    return replace(m, name=name, top=top, verilog=re.sub(rf"\b{re.escape(m.top)}\b", top, m.verilog))


def synth_operand_weights(model: Any, x: Any, options: Any) -> dict[Widths, Any] | None:
    """What ``options.operands`` (a ``SynthOptions``) asks :func:`synthesized_appmuls` to weight the error by, counted
    exactly on the images ``x (N, C, H, W)``: None (uniform), per width pair the model's operand-pair counts
    (``true``), or per width pair ``{layer: per-output counts (O, 2^a, 2^w)}`` (``layer``)."""
    from fames.quant.convert import qlayers
    from fames.quant.operands import operand_histograms

    how = getattr(options, "operands", False)
    if not how:
        return None
    if how != "layer":
        return model_operand_weights(model, x)
    layers = dict(qlayers(model))
    out: dict[Widths, dict[str, np.ndarray]] = {}
    for name, h in operand_histograms(model, x, per_output=True).items():
        out.setdefault(layers[name].widths, {})[name] = h
    return out


def model_operand_weights(model: Any, x: Any) -> dict[Widths, np.ndarray]:
    """Operand-pair counts ``(2^a, 2^w)`` per layer width pair of a quantized ``model``, summed over its layers of
    those widths, counted exactly over the images ``x (N, C, H, W)``."""
    from fames.quant.convert import qlayers
    from fames.quant.operands import operand_histograms

    hists = operand_histograms(model, x)
    out: dict[Widths, np.ndarray] = {}
    for name, layer in qlayers(model):
        out[layer.widths] = out[layer.widths] + hists[name] if layer.widths in out else hists[name]
    return out


def is_library_keyword(value: Any) -> bool:
    """``evoapprox``, or ``generate`` / ``synth`` / both joined by ``+`` (a library built on the fly, not a folder)."""
    if not isinstance(value, str):
        return False
    parts = value.split("+")
    return value == "evoapprox" or (len(parts) == len(set(parts)) and set(parts) <= {"generate", "synth"})


def pdp_costs(liberty: str | Path, progress: bool = False) -> Callable[[list[AppMul]], list[float]]:
    """``appmuls -> PDP (fJ)`` on ``liberty`` by the cost engine (designs costed in parallel, cached by content):
    the real cost :func:`fames.appmul.synth.library.synthesize` chooses its front on."""
    def pdp(appmuls: list[AppMul]) -> list[float]:
        return [m.cost.pdp_fj for m in cost_library(appmuls, str(liberty), progress=progress)]
    return pdp


def cheapest_implementations(appmuls: list[AppMul], liberty: str | Path) -> list[AppMul]:
    """Synthesized designs whose function (LUT) equals a family design's take the family's circuit when that one
    has the lower PDP on ``liberty`` (the search may reach a family function through a circuit the cell mapping
    likes less); provenance ``implementation`` names it. Other designs are returned unchanged."""
    from dataclasses import replace

    fams: dict[tuple, dict[bytes, AppMul]] = {}
    out = []
    for m in appmuls:
        if m.widths not in fams:
            a, w, sa, _ = m.widths
            fams[m.widths] = {np.asarray(f.lut, dtype=np.int64).tobytes(): f for f in build_family("all", a, w, sa)}
        f = fams[m.widths].get(np.asarray(m.lut, dtype=np.int64).tobytes())
        if f is not None and cost_appmul(f, liberty).pdp_fj < cost_appmul(m, liberty).pdp_fj:
            m = replace(m, verilog=f.verilog, top=f.top, provenance={**m.provenance, "implementation": f.name})
        out.append(m)
    return out


def _unique_names(ms: list[AppMul]) -> list[AppMul]:
    """``ms`` without repeats of a design (same name and function); two different designs of one name (an
    assignment names AppMuls) are a :class:`FamesError`."""
    seen: dict[str, AppMul] = {}
    for m in ms:
        if m.name not in seen:
            seen[m.name] = m
        elif not seen[m.name].same_function_and_netlist(m):
            raise FamesError(f"library: two different AppMuls are named {m.name!r}; an assignment names designs, so "
                             "rename one")
    return list(seen.values())


def candidate_appmuls(
    library: Any,
    widths: set[Widths],
    liberty: str | Path = "synthetic",
    families: Iterable[str] = ("all",),
    progress: bool = True,
    synth: Any = None,
    operand_weights: dict[Widths, np.ndarray] | None = None,
) -> list[AppMul]:
    """Costed candidates for ``widths`` (plus an exact multiplier per widths).

    ``library``: ``"generate"`` (our families, ``families`` of them), ``"evoapprox"`` (EvoApproxLib from
    ``../shared``, published costs), ``"synth"`` (approximate logic synthesis, ``synth`` options), ``"generate+synth"``
    (both), a library directory, a :class:`Library` or a list of AppMuls. Designs without a cost are synthesized and
    costed on ``liberty`` (cached by content), and then so is every design without a published cost, so that all
    ratios come from one liberty. ``operand_weights``: for ``synth.operands`` (:func:`synthesized_appmuls`)."""
    generated = is_library_keyword(library) and library != "evoapprox"
    parts = set(library.split("+")) if generated else set()
    if generated:
        ms: list[AppMul] = []
        if "generate" in parts:
            for a, w, sa, _sw in sorted(widths):
                for fam in families:
                    ms += [m for m in build_family(fam, a, w, sa) if m.name not in {x.name for x in ms}]
        if "synth" in parts:
            have = {np.asarray(m.lut, dtype=np.int64).tobytes() for m in ms}  # the families' functions
            # a family design the searches started from (method "seed") or another circuit of a family function
            # ("implementation") is a candidate already when the families are
            ms += [m for m in synthesized_appmuls(widths, liberty, synth, progress, operand_weights)
                   if ("implementation" not in m.provenance and m.provenance.get("method") != "seed")
                   or np.asarray(m.lut, dtype=np.int64).tobytes() not in have]
    elif isinstance(library, str) and library == "evoapprox":
        ms = [m for m in import_evoapprox() if m.widths in widths]
    elif isinstance(library, (str, Path)):
        ms = [m for m in Library.load(library) if m.widths in widths]
    elif isinstance(library, (Library, list, tuple)):
        bad = [type(m).__name__ for m in library if not isinstance(m, AppMul)]
        if bad:
            raise FamesError(f"library: a list of AppMuls was expected, it holds {sorted(set(bad))}")
        ms = [m for m in library if m.widths in widths]
    else:
        raise FamesError(f"library must be 'generate', 'evoapprox', a directory, a Library or a list of AppMuls, not "
                         f"{type(library).__name__}")
    if not generated:
        name = library if isinstance(library, (str, Path)) else type(library).__name__
        check_widths(widths, ms, f"library {str(name)!r}")
    have = {m.widths for m in ms if m.is_exact()}
    for key in sorted(widths - have):  # the exact multiplier is always a candidate (the budget's reference)
        ms.insert(0, build("exact", *key))
    ms = _unique_names(ms)
    lib_file = liberty_path(liberty)
    own = liberty_hash(lib_file)
    # one liberty for all but published figures: the run's (a library costed on another one is costed again; by
    # content: a liberty of the same name but other cells was taken for the run's)
    if generated or any(m.cost is None or (m.cost.source != "published" and m.cost.recipe.get("liberty_sha256") != own)
                        for m in ms):
        need = [m for m in ms if m.cost is None or m.cost.source != "published"]
        done = {m.name: m for m in cost_library(need, lib_file, progress=progress)}
        ms = [done.get(m.name, m) for m in ms]
    return ms

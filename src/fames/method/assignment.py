"""``fames.method.assignment``: put AppMuls into the quantized layers of a model according to an assignment.

Assignment file (JSON): ``{"format": "fames-assignment", "layers": {layer_name: spec}}`` where ``spec`` is an
AppMul name (the whole layer), or ``{"granularity": "filter"|"kernel", "appmuls": [names], "index":
nested list}`` (``index`` has shape ``(O,)`` for filters and ``(O, C // groups)`` for kernels), or
``{"granularity": "layer", "appmuls": [name], "compensation": {...}}`` for a layer whose accumulated error is
corrected by a control variate (:class:`fames.method.compensate.Compensation`, integers stored exactly).
Layers not listed keep their current mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.appmul.library import Library
from fames.errors import AppMulError, FamesError, expect
from fames.io import atomic_write_json, content_hash, read_json
from fames.quant.convert import qlayers

FORMAT = "fames-assignment"


def substitute(model: nn.Module, assignment: dict[str, Any], library: Library) -> nn.Module:
    """Assign AppMuls (by name from ``library``) to the named quantized layers; they switch to ``approx``, except those
    given one exact design (for every group): they run in ``exact`` mode, charged that design's energy, as
    :func:`~fames.method.problem.apply_choice` leaves them (the exact quantized model's own float computation, which
    can round differently from emulating the exact LUT's integers, so a reloaded model would not give the reported
    outputs otherwise)."""
    expect(model, nn.Module, "substitute: model")
    expect(library, Library, "substitute: library")
    layers = dict(qlayers(model))
    spec = assignment.get("layers", assignment) if isinstance(assignment, dict) else assignment
    if not isinstance(spec, dict):
        raise FamesError(f"an assignment maps layer names to AppMuls ({{'layers': {{name: spec}}}}), got "
                         f"{type(spec).__name__}")
    tables = assignment.get("tables", {}) if isinstance(assignment, dict) and "layers" in assignment else {}
    unknown = [n for n in spec if n not in layers]
    if unknown and not layers:
        raise FamesError(f"the model has no quantized layers, so an assignment (of {unknown[:5]}...) cannot go in: "
                         "give the quantized checkpoint of the run (its model.pt), or quantize the model first "
                         "(fames.quantize) with the run's quantization config")
    if unknown:
        raise FamesError(f"assignment names layers the model does not have: {unknown}; layers: {list(layers)}")
    for name, s in spec.items():
        try:
            _assign_one(layers[name], name, s, library, tables)
        except AppMulError as e:  # a design of other widths: which layer it was given to
            raise AppMulError(f"layer {name!r}: {e}") from None
    return model


def _assign_one(layer: nn.Module, name: str, s: Any, library: Library, tables: dict[str, str]) -> None:
    """:func:`substitute` for one layer ``name`` and its spec ``s``."""
    if isinstance(s, str):
        ms = [_lookup(library, s, name, tables)]
        layer.set_assignment(ms[0])
    elif isinstance(s, dict):
        ms = [_lookup(library, n, name, tables) for n in s.get("appmuls", [])]
        gran = s.get("granularity", "filter")
        if gran == "layer" and len(ms) == 1:
            layer.set_assignment(ms[0])
        elif gran in ("filter", "kernel") and "index" in s:
            layer.set_assignment(ms, torch.as_tensor(s["index"], dtype=torch.long), gran)
        else:
            raise FamesError(
                f"assignment of layer {name}: keys {sorted(s)} with granularity {gran!r} and {len(ms)} AppMul(s) is"
                " neither {'granularity': 'layer', 'appmuls': [one name]} "
                "nor {'granularity': 'filter'|'kernel', 'appmuls': [...], 'index': [...]}"
            )
        if s.get("compensation") is not None:
            from fames.method.compensate import BiasCorrection, Compensation, attach
            from fames.method.compensate.bias import METHOD as BIAS

            rec = s["compensation"]
            attach(layer, (BiasCorrection if rec.get("method") == BIAS else Compensation).from_dict(rec))
    else:
        raise FamesError(f"assignment of layer {name}: expected an AppMul name or a dict, got {s!r}")
    if (exact := exact_stand_in(ms)) is not None and layer.compensation is None:
        layer.clear_assignment(exact)


def exact_stand_in(appmuls: list[AppMul]) -> AppMul | None:
    """The one exact design a layer's groups all use (the layer then runs in exact mode, its energy that design's),
    else None (several designs, or an approximate one: the layer emulates them)."""
    names = {m.name for m in appmuls}
    return appmuls[0] if len(names) == 1 and appmuls[0].is_exact() else None


def _lookup(library: Library, name: str, layer: str, tables: dict[str, str]) -> Any:
    if name not in library:
        raise FamesError(f"layer {layer}: AppMul {name!r} is not in the library ({len(library)} AppMuls); an "
                         "assignment a run wrote names the designs of that run's own library, RUN/library")
    if name in tables and table_key(library[name]) != tables[name]:
        raise FamesError(f"layer {layer}: AppMul {name!r} of the library is not the design this assignment was saved "
                         "with (its table was replaced since): the model would not compute what was reported; use "
                         "the run's own library as it was saved")
    return library[name]


def current_assignment(model: nn.Module) -> dict[str, Any]:
    """The assignment held by a model's approx-mode layers and its exact-mode layers that stand for an exact design
    other than the reference (:meth:`QuantLayer.clear_assignment`), in the file format."""
    out: dict[str, Any] = {}
    for name, layer in qlayers(model):
        a = layer.assignment
        if layer.mode == "exact" and getattr(layer, "exact_design", None) is not None:
            out[name] = layer.exact_design.name
        if a is None or layer.mode != "approx":
            continue
        comp = getattr(layer, "compensation", None)
        if a.granularity == "layer" and comp is not None:
            out[name] = {"granularity": "layer", "appmuls": [a.appmuls[0].name], "compensation": comp.to_dict()}
        elif a.granularity == "layer":
            out[name] = a.appmuls[0].name
        else:
            out[name] = {
                "granularity": a.granularity,
                "appmuls": [m.name for m in a.appmuls],
                "index": a.index.tolist(),
                **({"compensation": comp.to_dict()} if comp is not None else {}),
            }
    return {"format": FORMAT, "layers": out}


def describe_spec(spec: Any) -> str:
    """One line for a layer's assignment ``spec`` (file format): the AppMul name; a compensated layer's AppMul with
    its control variate or bias correction; at filter or kernel level each AppMul with the number of groups using it,
    most used first."""
    if isinstance(spec, str):
        return spec
    names = spec["appmuls"]
    comp = spec.get("compensation")
    tail = ""
    if comp:
        tail = f" + bias correction ({comp['fit']})" if comp["method"] == "bias" else \
            f" + control variate ({comp['method']}, {comp['fit']})"
    if spec["granularity"] == "layer":
        return names[0] + tail
    counts = torch.bincount(torch.as_tensor(spec["index"]).flatten(), minlength=len(names)).tolist()
    unit = "filters" if spec["granularity"] == "filter" else "kernels"
    used = sorted(((c, n) for c, n in zip(counts, names, strict=True) if c), key=lambda t: (-t[0], t[1]))
    return f"{sum(counts)} {unit}: " + ", ".join(f"{n} x{c}" for c, n in used) + tail


def table_key(m: Any) -> str:
    """Content key of an AppMul's table (widths, signedness and every product)."""
    import numpy as np

    return content_hash(repr(m.widths), np.ascontiguousarray(m.lut, dtype=np.int64).tobytes())


def spec_names(spec: Any) -> list[str]:
    """AppMul names a layer's assignment spec (a name, or a dict with ``appmuls``) uses."""
    return [spec] if isinstance(spec, str) else list(spec.get("appmuls", [])) if isinstance(spec, dict) else []


def save_assignment(assignment: dict[str, Any], path: str | Path, library: Library | None = None) -> Path:
    """Write an assignment file; with ``library``, the content key of every design it names too (``tables``), so
    that loading it against a library whose design of that name was replaced is refused."""
    if library is not None:
        names = {n for spec in assignment["layers"].values() for n in spec_names(spec)}
        assignment = {**assignment, "tables": {n: table_key(library[n]) for n in sorted(names) if n in library}}
    return atomic_write_json(path, assignment)


def load_assignment(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    data = read_json(p, FamesError)
    if not isinstance(data, dict) or "layers" not in data:
        raise FamesError(f"{p}: an assignment file holds {{'format': '{FORMAT}', 'layers': {{...}}}}")
    return data

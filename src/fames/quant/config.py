"""Quantization configuration: bit widths per layer, weight/activation schemes, first/last layer policy.

A config is given uniformly (``QuantConfig(w_bits=4, a_bits=4)``) or per layer through ``layers``, a mapping
from layer name (as in ``model.named_modules()``; ``fnmatch`` patterns allowed) to ``{"w_bits": W,
"a_bits": A}`` or the string ``"W4A8"``; it can be read from a JSON/YAML file (:func:`load_config`).
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fames.errors import FamesError, check_fields
from fames.io import read_config_file, read_json

WEIGHT_SCHEMES = ("symmetric", "affine")
CALIBRATIONS = ("minmax", "percentile", "mse")
FIRST_LAST = ("same", "8bit", "float")
ACT_QAT = ("lsq", "pact")


@dataclass(frozen=True)
class LayerBits:
    w_bits: int
    a_bits: int

    def __str__(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"


@dataclass
class QuantConfig:
    """How to quantize a model.

    * ``w_bits``/``a_bits``: default widths, 2..8.
    * ``weight_scheme``: ``symmetric`` (signed codes, zero point 0; the layer's AppMul is signed x signed)
      or ``affine`` (unsigned codes with a per-channel zero point; the AppMul is unsigned x unsigned).
      Activations use the same code domain, per tensor, with their own zero point.
    * ``layers``: per-layer overrides (name or pattern -> ``{"w_bits", "a_bits"}``, ``"W4A8"`` or ``"float"``).
    * ``first_last``: ``same`` (as configured), ``8bit`` (first and last layer at W8A8) or ``float``; the first and
      last are the layers the forward calls first and last, and ``quantize`` records their names in
      ``first_last_layers`` so that the saved config quantizes the same layers again.
    * ``calibration``: PTQ activation range method; ``percentile`` uses ``percentile`` (e.g. 99.99).
    * ``act_qat``: how QAT learns activation ranges: ``lsq`` (learned step size) or ``pact`` (learned clipping
      bounds that get gradient only from clipped values, Choi et al. 2018).
    """

    w_bits: int = 8
    a_bits: int = 8
    weight_scheme: str = "symmetric"
    layers: dict[str, Any] = field(default_factory=dict)
    first_last: str = "same"
    calibration: str = "minmax"
    percentile: float = 99.99
    fold_bn: bool = True
    act_qat: str = "lsq"
    first_last_layers: list[str] | None = None  # what `first_last` resolved to, recorded by quantize

    def __post_init__(self) -> None:
        check_fields(self)
        _check_bits(self.w_bits, "w_bits")
        _check_bits(self.a_bits, "a_bits")
        if not 0 < self.percentile <= 100:
            raise FamesError(f"quantization percentile={self.percentile} must lie in (0, 100] (e.g. 99.99)")
        for key, val, allowed in (
            ("weight_scheme", self.weight_scheme, WEIGHT_SCHEMES),
            ("first_last", self.first_last, FIRST_LAST),
            ("calibration", self.calibration, CALIBRATIONS),
            ("act_qat", self.act_qat, ACT_QAT),
        ):
            if val not in allowed:
                raise FamesError(f"quantization {key}={val!r} is not one of {list(allowed)}")
        self.layers = {k: parse_layer_bits(v, k) for k, v in self.layers.items()}

    @property
    def signed(self) -> bool:
        """Whether the layers' integer codes (and AppMuls) are two's-complement signed."""
        return self.weight_scheme == "symmetric"

    def bits_for(self, name: str, position: str = "middle") -> LayerBits | None:
        """Widths of layer ``name``; ``position`` is ``first``, ``last`` or ``middle``. None means float.

        Precedence: a ``layers`` entry naming the layer exactly; then patterns naming it float; then ``first_last``
        for the first and last layer; then the first pattern listed that matches (with a warning when later ones
        would give other widths); then ``w_bits``/``a_bits``."""
        if name in self.layers:
            return self.layers[name]
        matched = {p: b for p, b in self.layers.items() if fnmatch.fnmatchcase(name, p)}
        if None in matched.values():
            return None  # named float
        if position in ("first", "last") and self.first_last != "same":
            return None if self.first_last == "float" else LayerBits(8, 8)
        if len(set(matched.values())) > 1:
            found = ", ".join(f"{p!r}: {b}" for p, b in matched.items())
            warnings.warn(f"layer {name!r} matches patterns with different widths ({found}): the first listed applies; "
                          "name the layer exactly in `layers` (an exact name wins) to say which", stacklevel=3)
        return next(iter(matched.values()), LayerBits(self.w_bits, self.a_bits))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = {k: "float" if v is None else str(v) for k, v in self.layers.items()}
        return d


def differences(have: Any, want: Any) -> dict[str, tuple[Any, Any]]:
    """What quantizes differently in two configs (names, dicts, files or QuantConfigs): ``{key: (have's, want's)}``
    over the widths, weight scheme and first/last rule and the per-layer settings, float included (a checkpoint
    with a layer at W4A4 is not what a config naming it float asks for); ``have``'s float entries that ``want`` does
    not name are left out (layers the forward never ran, recorded float by :func:`calibrate_ptq`)."""
    def widths(d: dict[str, Any], keep: Any = None) -> dict[str, Any]:
        layers = {n: v for n, v in (d.get("layers") or {}).items() if keep is None or v != "float" or n in keep}
        return {**{k: d.get(k) for k in ("w_bits", "a_bits", "weight_scheme", "first_last")}, "layers": layers}

    have_d = load_config(have).to_dict()
    b = widths(load_config(want).to_dict())
    a = widths(have_d, b["layers"])
    if have_d.get("first_last") == "float":  # naming float a first/last layer the checkpoint left float: the same
        for n in have_d.get("first_last_layers") or []:
            if b["layers"].get(n) == "float" and n not in a["layers"]:
                del b["layers"][n]
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _check_bits(b: Any, what: str) -> None:
    if not isinstance(b, int) or isinstance(b, bool) or not 2 <= b <= 8:
        raise FamesError(f"{what}={b!r}: bit widths must be integers from 2 to 8")


_WA = re.compile(r"^W(\d)A(\d)$", re.I)


def parse_layer_bits(v: Any, where: str = "") -> LayerBits | None:
    """``"W4A8"``, ``{"w_bits": 4, "a_bits": 8}``, ``[4, 8]`` or a LayerBits -> LayerBits; ``"float"`` -> None (the
    layer stays in floating point)."""
    if isinstance(v, LayerBits):
        return v
    if v is None or (isinstance(v, str) and v.strip().lower() == "float"):
        return None
    if isinstance(v, str) and (m := _WA.match(v.strip())):
        w, a = int(m.group(1)), int(m.group(2))
    elif isinstance(v, dict) and {"w_bits", "a_bits"} <= set(v):
        w, a = v["w_bits"], v["a_bits"]
    elif isinstance(v, (list, tuple)) and len(v) == 2:
        w, a = v
    else:
        raise FamesError(f"layer {where!r}: bit widths {v!r} not understood; use 'W4A8', {{w_bits: 4, a_bits: 8}} or "
                         "'float'")
    _check_bits(w, f"{where}.w_bits")
    _check_bits(a, f"{where}.a_bits")
    return LayerBits(int(w), int(a))


def load_config(source: str | Path | dict[str, Any] | QuantConfig) -> QuantConfig:
    """Build a QuantConfig from a dict, a JSON/YAML file, or a ``W4A4``-style string."""
    if isinstance(source, QuantConfig):
        return source
    if isinstance(source, str) and (m := _WA.match(source.strip())):
        return QuantConfig(w_bits=int(m.group(1)), a_bits=int(m.group(2)))
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise FamesError(f"quantization config {p} not found (give a JSON/YAML file or e.g. 'W4A4')")
        json_file = p.suffix.lower() == ".json"
        source = read_json(p, FamesError) if json_file else read_config_file(p, "quantization config")
    if not isinstance(source, dict):
        raise FamesError(f"quantization config must be a mapping, got {type(source).__name__}")
    known = {f.name for f in fields(QuantConfig)}
    unknown = set(source) - known
    if unknown:
        raise FamesError(f"unknown quantization config keys {sorted(unknown)}; known keys: {sorted(known)}")
    return QuantConfig(**source)

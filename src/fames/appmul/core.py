"""The approximate multiplier (AppMul) as data.

Conventions (see DESIGN.md):

* ``lut[i, j]`` is the product the circuit returns for activation index ``i`` (axis 0, ``a_bits`` wide) and
  weight index ``j`` (axis 1, ``w_bits`` wide).
* A signed operand is indexed by its two's-complement bit pattern: index ``i`` means ``i`` if
  ``i < 2**(n-1)`` else ``i - 2**n``. An unsigned operand's index is its value.
* The output is ``a_bits + w_bits`` wide, two's complement if either operand is signed.
* Structural Verilog, when present, has the port list
  ``module <top>(input [a_bits-1:0] a, input [w_bits-1:0] w, output [a_bits+w_bits-1:0] y)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fames.errors import AppMulError

MIN_BITS, MAX_BITS = 2, 8
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def operand_values(bits: int, signed: bool) -> np.ndarray:
    """Values of the operand indices ``0 .. 2**bits - 1`` (int64, shape ``(2**bits,)``)."""
    idx = np.arange(1 << bits, dtype=np.int64)
    if signed:
        idx = np.where(idx < (1 << (bits - 1)), idx, idx - (1 << bits))
    return idx


def exact_lut(a_bits: int, w_bits: int, a_signed: bool = False, w_signed: bool = False) -> np.ndarray:
    """Exact product table, shape ``(2**a_bits, 2**w_bits)``, int64."""
    return np.multiply.outer(operand_values(a_bits, a_signed), operand_values(w_bits, w_signed))


def output_range(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> tuple[int, int]:
    """Inclusive range of values an ``a_bits + w_bits`` wide product word can hold."""
    n = a_bits + w_bits
    if a_signed or w_signed:
        return -(1 << (n - 1)), (1 << (n - 1)) - 1
    return 0, (1 << n) - 1


def _json_scalar(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    raise TypeError(f"{type(v).__name__} {v!r} is not JSON data")


def sanitize_name(name: str) -> str:
    """A Verilog-safe identifier made from ``name``."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if re.match(r"^[A-Za-z_]", s) else f"m_{s}"


@dataclass
class Cost:
    """Hardware cost of one AppMul.

    Units: area um^2, delay ns (critical path), energy fJ per operation, power uW at ``clock_ns``,
    PDP fJ (= power x delay). ``relative`` holds the same quantities divided by those of the exact
    multiplier of the same widths and signedness, costed by the same recipe.
    """

    area_um2: float | None = None
    delay_ns: float | None = None
    energy_fj: float | None = None
    power_uw: float | None = None
    pdp_fj: float | None = None
    clock_ns: float | None = None
    source: str = "synthesis"  # "synthesis" | "published"
    liberty: str | None = None
    comparable: bool = True
    note: str = ""
    cells: int | None = None
    relative: dict[str, float] = field(default_factory=dict)
    # the costing settings (engine version, operand stream, energy accounting, mapping options) the figures come from
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cost:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class AppMul:
    """An approximate (or exact) integer multiplier given by its full look-up table.

    ``lut`` has shape ``(2**a_bits, 2**w_bits)``; ``verilog`` is optional structural Verilog whose
    top module is ``top`` (see the module docstring for the port convention). ``structural`` says
    whether the Verilog describes the real structure (True) or was derived from the table (False).
    """

    name: str
    a_bits: int
    w_bits: int
    a_signed: bool
    w_signed: bool
    lut: np.ndarray
    verilog: str | None = None
    top: str | None = None
    structural: bool = True
    cost: Cost | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lut = np.asarray(self.lut)
        if self.top is None and self.verilog is not None:
            self.top = sanitize_name(self.name)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "") -> None:
        """Raise :class:`AppMulError` naming the problem if this AppMul is malformed."""
        at = f" ({where})" if where else ""
        if (not isinstance(self.name, str) or not self.name or len(self.name) > 128
                or any(ord(c) < 32 or ord(c) == 127 for c in self.name)):
            raise AppMulError(f"AppMul name {self.name!r}{at} must be a non-empty string of <= 128 printable "
                              "characters")
        for label, b in (("a_bits", self.a_bits), ("w_bits", self.w_bits)):
            if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)) or not MIN_BITS <= b <= MAX_BITS:
                raise AppMulError(f"AppMul {self.name!r}{at}: {label}={b!r} must be an integer in 2..8")
        self.a_bits, self.w_bits = int(self.a_bits), int(self.w_bits)
        for label, v in (("a_signed", self.a_signed), ("w_signed", self.w_signed)):
            if not isinstance(v, (bool, np.bool_)) and v not in (0, 1):
                raise AppMulError(f"AppMul {self.name!r}{at}: {label}={v!r} must be True or False")
        self.a_signed, self.w_signed = bool(self.a_signed), bool(self.w_signed)
        self._validate_attachments(at)
        expected = (1 << self.a_bits, 1 << self.w_bits)
        if self.lut.shape != expected:
            raise AppMulError(
                f"AppMul {self.name!r}{at}: LUT shape {self.lut.shape} does not match a_bits={self.a_bits}, "
                f"w_bits={self.w_bits}; expected {expected} (axis 0 = activation, axis 1 = weight)"
            )
        if np.issubdtype(self.lut.dtype, np.floating) and self.lut.size:
            bad = np.flatnonzero(~np.isfinite(self.lut) | (self.lut != np.round(self.lut)))
            if bad.size:
                i, j = np.unravel_index(bad[0], self.lut.shape)
                raise AppMulError(
                    f"AppMul {self.name!r}{at}: LUT[{i}, {j}] = {float(self.lut[i, j])} is not an integer ({bad.size} "
                    "such entries); a multiplier table holds integer products"
                )  # integer values held in floats (e.g. a table read by np.loadtxt) pass: cast below
        elif not np.issubdtype(self.lut.dtype, np.integer):
            raise AppMulError(
                f"AppMul {self.name!r}{at}: LUT dtype {self.lut.dtype} is not an integer type; "
                "a multiplier table holds integer products"
            )
        lo, hi = output_range(self.a_bits, self.w_bits, self.a_signed, self.w_signed)
        mn, mx = int(self.lut.min()), int(self.lut.max())
        if mn < lo or mx > hi:
            kind = "signed" if (self.a_signed or self.w_signed) else "unsigned"
            raise AppMulError(
                f"AppMul {self.name!r}{at}: LUT values span [{mn}, {mx}], outside the {kind} "
                f"{self.a_bits + self.w_bits}-bit product range [{lo}, {hi}]; check the signedness flags "
                "and the operand index convention (two's-complement bit patterns for signed operands)"
            )
        self.lut = self.lut.astype(np.int32, copy=False)

    def _validate_attachments(self, at: str) -> None:
        """Check (and normalize) what comes with the table: Verilog and its module name, cost, provenance."""
        if self.verilog is not None and (not isinstance(self.verilog, str) or not self.verilog.strip()):
            raise AppMulError(f"AppMul {self.name!r}{at}: verilog must be the module's source text or None, not "
                              f"{self.verilog!r}")
        if self.top is not None and (not isinstance(self.top, str) or not _NAME_RE.match(self.top)):
            raise AppMulError(f"AppMul {self.name!r}{at}: top={self.top!r} is not a plain Verilog module name "
                              "(letters, digits, _; it also names the file verilog/<top>.v of a library)")
        if isinstance(self.cost, dict):
            self.cost = Cost.from_dict(self.cost)
        if self.cost is not None and not isinstance(self.cost, Cost):
            raise AppMulError(f"AppMul {self.name!r}{at}: cost must be a fames Cost (or its dict), not "
                              f"{type(self.cost).__name__}")
        if not isinstance(self.provenance, dict):
            raise AppMulError(f"AppMul {self.name!r}{at}: provenance must be a dict, not "
                              f"{type(self.provenance).__name__}")
        try:  # stored in index.json: numpy scalars become numbers, anything else JSON cannot hold is refused
            self.provenance = json.loads(json.dumps(self.provenance, default=_json_scalar))
        except (TypeError, ValueError) as e:
            raise AppMulError(f"AppMul {self.name!r}{at}: provenance must hold JSON data (str, numbers, lists, "
                              f"dicts): {e}") from None

    # ------------------------------------------------------------------ views
    @property
    def signed(self) -> bool:
        return self.a_signed or self.w_signed

    @property
    def widths(self) -> tuple[int, int, bool, bool]:
        """``(a_bits, w_bits, a_signed, w_signed)``: the key AppMuls must share to be interchangeable."""
        return (self.a_bits, self.w_bits, self.a_signed, self.w_signed)

    def exact(self) -> np.ndarray:
        """The exact product table of the same widths (int64)."""
        return exact_lut(*self.widths)

    def error(self) -> np.ndarray:
        """Error table ``E = LUT - exact`` (int64), shape ``(2**a_bits, 2**w_bits)``."""
        return self.lut.astype(np.int64) - self.exact()

    def is_exact(self) -> bool:
        return bool(np.array_equal(self.lut, self.exact()))

    def same_function_and_netlist(self, other: AppMul) -> bool:
        """Whether ``other`` has the same widths, LUT and Verilog (what a cost depends on), whatever its cost."""
        return (self.widths == other.widths and self.verilog == other.verilog and self.top == other.top
                and bool(np.array_equal(self.lut, other.lut)))

    def with_cost(self, cost: Cost | None) -> AppMul:
        return replace(self, cost=cost)

    def signature(self) -> str:
        """Short text form of the widths, e.g. ``8x8s`` or ``4ux4s``."""
        if self.a_signed == self.w_signed:
            return f"{self.a_bits}x{self.w_bits}{'s' if self.a_signed else 'u'}"
        return f"{self.a_bits}{'s' if self.a_signed else 'u'}x{self.w_bits}{'s' if self.w_signed else 'u'}"

"""Liberty (.lib / .lib.gz) reader.

Parses the generic Liberty syntax (groups, simple attributes ``name : value ;``, complex attributes
``name (a, b, ...) ;``, quoted strings, ``\\`` line continuations, ``/* */`` and ``//`` comments) into
:class:`Group` trees, then extracts the combinational cells into :class:`Cell` objects.

Internal units, whatever the file declares: time ns, capacitance fF, energy fJ, leakage power nW,
area as in the file (um^2 for the libraries we use), voltage V. Internal-power tables hold energy per
transition in ``voltage_unit^2 x capacitive_load_unit`` (Liberty's definition), converted to fJ.

Sequential cells (``ff``/``latch``/``statetable`` groups) and cells whose outputs have no ``function``
are skipped.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fames.errors import HardwareError

# --------------------------------------------------------------------------------------------- syntax


@dataclass
class Group:
    """One Liberty group ``kind (args) { ... }``."""

    kind: str
    args: list[str]
    simple: dict[str, str] = field(default_factory=dict)
    complex: dict[str, list[list[str]]] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    line: int = 0

    @property
    def name(self) -> str:
        return self.args[0] if self.args else ""

    def children(self, kind: str) -> list[Group]:
        return [g for g in self.groups if g.kind == kind]


_TOKEN_RE = re.compile(
    r"""
    (?P<str>"(?:[^"\\]|\\.)*")        # quoted string (may contain escaped characters)
  | (?P<com>/\*.*?\*/)                # block comment
  | (?P<lcom>//[^\n]*)                # line comment
  | (?P<cont>\\[ \t]*\r?\n)           # line continuation
  | (?P<nl>\n)
  | (?P<ws>[ \t\r\f]+)
  | (?P<punct>[(){}:;,])
  | (?P<word>[^\s(){}:;,"]+)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokenize(text: str, source: str) -> list[tuple[str, str, int]]:
    """Tokens ``(kind, text, line)`` with kind in ``str``, ``punct``, ``word``, ``nl``."""
    out: list[tuple[str, str, int]] = []
    line = 1
    pos = 0
    n = len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise HardwareError(f"malformed liberty {source}: cannot read line {line}: {text[pos:pos + 40]!r}")
        kind = m.lastgroup
        tok = m.group()
        if kind == "str":
            out.append(("str", tok[1:-1].replace("\\\n", "").replace("\\\r\n", ""), line))
        elif kind in ("punct", "word"):
            out.append((kind, tok, line))
        elif kind == "nl":
            out.append(("nl", "\n", line))
        line += tok.count("\n")
        pos = m.end()
    return out


def parse_liberty_text(text: str, source: str = "<text>") -> Group:
    """Parse Liberty text into its top-level ``library`` group (raises :class:`HardwareError`)."""
    toks = _tokenize(text, source)
    i = 0
    n = len(toks)

    def err(msg: str, at: int) -> HardwareError:
        line = toks[min(at, n - 1)][2] if n else 0
        return HardwareError(f"malformed liberty {source} at line {line}: {msg}")

    def skip_nl(j: int) -> int:
        while j < n and toks[j][0] == "nl":
            j += 1
        return j

    def parse_body(j: int, grp: Group, closing: bool) -> int:
        while True:
            j = skip_nl(j)
            if j >= n:
                if closing:
                    raise err(f"group {grp.kind}({', '.join(grp.args)}) is not closed by '}}'", n - 1)
                return j
            kind, tok, _ = toks[j]
            if kind == "punct" and tok == "}":
                if not closing:
                    raise err("unexpected '}'", j)
                return j + 1
            if kind == "punct" and tok == ";":
                j += 1
                continue
            if kind not in ("word", "str"):
                raise err(f"expected an attribute or group name, found {tok!r}", j)
            name = tok
            j = skip_nl(j + 1)
            if j >= n:
                raise err(f"unexpected end of file after {name!r}", n - 1)
            kind, tok, _ = toks[j]
            if kind == "punct" and tok == ":":
                j += 1
                vals: list[str] = []
                while j < n:
                    k2, t2, _ = toks[j]
                    if k2 == "nl" or (k2 == "punct" and t2 in ";}"):
                        break
                    if k2 == "punct":
                        raise err(f"unexpected {t2!r} in the value of {name!r}", j)
                    vals.append(t2)
                    j += 1
                if not vals:
                    raise err(f"attribute {name!r} has no value", j)
                if j < n and toks[j][1] == ";":
                    j += 1
                grp.simple[name] = " ".join(vals)
            elif kind == "punct" and tok == "(":
                line0 = toks[j][2]
                j += 1
                args: list[str] = []
                while True:
                    j = skip_nl(j)
                    if j >= n:
                        raise err(f"unclosed '(' after {name!r}", n - 1)
                    k2, t2, _ = toks[j]
                    if k2 == "punct" and t2 == ")":
                        j += 1
                        break
                    if k2 == "punct" and t2 == ",":
                        j += 1
                        continue
                    if k2 == "punct":
                        raise err(f"unexpected {t2!r} in the arguments of {name!r}", j)
                    args.append(t2)
                    j += 1
                j2 = skip_nl(j)
                if j2 < n and toks[j2][:2] == ("punct", "{"):
                    sub = Group(name, args, line=line0)
                    j = parse_body(j2 + 1, sub, True)
                    grp.groups.append(sub)
                else:
                    if j < n and toks[j][1] == ";":
                        j += 1
                    grp.complex.setdefault(name, []).append(args)
            else:
                raise err(f"expected ':' or '(' after {name!r}, found {tok!r}", j)

    root = Group("<root>", [])
    i = parse_body(i, root, False)
    libs = root.children("library")
    if not libs:
        raise HardwareError(f"malformed liberty {source}: no 'library (...) {{ ... }}' group found")
    return libs[0]


# ------------------------------------------------------------------------------------ boolean functions

BoolFn = Callable[[dict[str, Any]], Any]


class _FnParser:
    """Recursive-descent parser of Liberty ``function`` strings.

    Precedence (Liberty reference): inversion (``!`` prefix, ``'`` postfix) binds tightest, then XOR
    (``^``), then AND (``*``, ``&`` or juxtaposition), then OR (``+``, ``|``). Constants ``0``/``1``.
    """

    _TOK = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_\[\]\.]*)|([01])|(.))")

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, str]] = []
        pos = 0
        s = text.strip()
        while pos < len(s):
            m = self._TOK.match(s, pos)
            if m is None or m.end() == pos:
                break
            if m.group(1):
                self.toks.append(("id", m.group(1)))
            elif m.group(2):
                self.toks.append(("const", m.group(2)))
            elif m.group(3):
                c = m.group(3)
                if c not in "!'*&+|^()":
                    raise HardwareError(f"cannot parse liberty function {text!r}: unexpected {c!r}")
                self.toks.append(("op", c))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> tuple:
        if not self.toks:
            raise HardwareError(f"empty liberty function {self.text!r}")
        node = self.or_()
        if self.peek() is not None:
            raise HardwareError(f"cannot parse liberty function {self.text!r}: trailing {self.peek()[1]!r}")
        return node

    def or_(self) -> tuple:
        node = self.and_()
        while self.peek() in (("op", "+"), ("op", "|")):
            self.i += 1
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.xor_()
        while True:
            t = self.peek()
            if t in (("op", "*"), ("op", "&")):
                self.i += 1
                node = ("and", node, self.xor_())
            elif t is not None and (t[0] in ("id", "const") or t in (("op", "("), ("op", "!"))):
                node = ("and", node, self.xor_())  # juxtaposition = AND
            else:
                return node

    def xor_(self) -> tuple:
        node = self.unary()
        while self.peek() == ("op", "^"):
            self.i += 1
            node = ("xor", node, self.unary())
        return node

    def unary(self) -> tuple:
        t = self.peek()
        if t is None:
            raise HardwareError(f"cannot parse liberty function {self.text!r}: unexpected end")
        self.i += 1
        if t == ("op", "!"):
            node: tuple = ("not", self.unary())
        elif t == ("op", "("):
            node = self.or_()
            if self.peek() != ("op", ")"):
                raise HardwareError(f"cannot parse liberty function {self.text!r}: missing ')'")
            self.i += 1
        elif t[0] == "id":
            node = ("var", t[1])
        elif t[0] == "const":
            node = ("const", int(t[1]))
        else:
            raise HardwareError(f"cannot parse liberty function {self.text!r}: unexpected {t[1]!r}")
        while self.peek() == ("op", "'"):
            self.i += 1
            node = ("not", node)
        return node


def parse_function(text: str) -> tuple:
    """Abstract syntax tree of a Liberty boolean function string."""
    return _FnParser(text).parse()


def function_inputs(tree: tuple) -> list[str]:
    """Variable names used in a function tree, in first-use order."""
    if tree[0] == "var":
        return [tree[1]]
    if tree[0] == "const":
        return []
    out: list[str] = []
    for sub in tree[1:]:
        for v in function_inputs(sub):
            if v not in out:
                out.append(v)
    return out


def compile_function(tree_or_text: tuple | str) -> BoolFn:
    """Compile a function into ``f(env) -> value`` using ``~ & | ^`` on the values in ``env``.

    Works on numpy bool arrays and on packed unsigned integer words alike. The constants evaluate to
    ``env["__0__"]`` / ``env["__1__"]`` when present (all-zeros / all-ones of the right dtype), else 0/1.
    """
    tree = parse_function(tree_or_text) if isinstance(tree_or_text, str) else tree_or_text
    op = tree[0]
    if op == "var":
        name = tree[1]
        return lambda env: env[name]
    if op == "const":
        key, dflt = ("__1__", True) if tree[1] else ("__0__", False)
        return lambda env: env.get(key, dflt)
    if op == "not":
        f = compile_function(tree[1])
        return lambda env: ~f(env)
    a, b = compile_function(tree[1]), compile_function(tree[2])
    if op == "and":
        return lambda env: a(env) & b(env)
    if op == "or":
        return lambda env: a(env) | b(env)
    return lambda env: a(env) ^ b(env)


def truth_table(tree_or_text: tuple | str, inputs: list[str]) -> tuple[int, ...]:
    """Output of the function for every input combination (input 0 = most significant bit)."""
    f = compile_function(tree_or_text)
    k = len(inputs)
    rows = np.array(list(itertools.product([False, True], repeat=k)), dtype=bool).reshape(2**k, k)  # k = 0: tie cell
    env: dict[str, Any] = {name: rows[:, i] for i, name in enumerate(inputs)}
    env["__0__"] = np.zeros(len(rows), dtype=bool)
    env["__1__"] = np.ones(len(rows), dtype=bool)
    out = np.broadcast_to(np.asarray(f(env), dtype=bool), (len(rows),))
    return tuple(int(x) for x in out)


# ---------------------------------------------------------------------------------------------- tables

_SLEW_VARS = {"input_net_transition", "input_transition_time"}
_LOAD_VARS = {"total_output_net_capacitance"}


@dataclass
class Table:
    """An NLDM look-up table in internal units: ``values[i, j]`` at ``slew[i]`` ns and ``load[j]`` fF.

    A missing axis (1-D or scalar table) is ``None`` and the matching dimension of ``values`` has size 1.
    """

    values: np.ndarray
    slew: np.ndarray | None = None
    load: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._sl = None if self.slew is None else [float(x) for x in self.slew]
        self._ld = None if self.load is None else [float(x) for x in self.load]
        self._v = self.values.tolist()

    def at(self, slew_ns: float, load_ff: float) -> float:
        """Scalar version of :meth:`__call__` (pure Python, fast for timing analysis)."""
        i, fi = _bracket1(self._sl, slew_ns)
        j, fj = _bracket1(self._ld, load_ff)
        v = self._v
        i1 = i + 1 if self._sl is not None and len(self._sl) > 1 else i
        j1 = j + 1 if self._ld is not None and len(self._ld) > 1 else j
        return (1 - fi) * ((1 - fj) * v[i][j] + fj * v[i][j1]) + fi * ((1 - fj) * v[i1][j] + fj * v[i1][j1])

    def __call__(self, slew_ns: Any, load_ff: Any) -> Any:
        """Bilinear interpolation (linear extrapolation outside the grid); broadcasts over arrays."""
        s = np.asarray(slew_ns, dtype=float)
        c = np.asarray(load_ff, dtype=float)
        v = self.values
        i0, fi = _bracket(self.slew, s)
        j0, fj = _bracket(self.load, c)
        i1 = i0 + (1 if self.slew is not None and len(self.slew) > 1 else 0)
        j1 = j0 + (1 if self.load is not None and len(self.load) > 1 else 0)
        v00, v01, v10, v11 = v[i0, j0], v[i0, j1], v[i1, j0], v[i1, j1]
        out = (1 - fi) * ((1 - fj) * v00 + fj * v01) + fi * ((1 - fj) * v10 + fj * v11)
        return float(out) if np.ndim(out) == 0 else out


def _bracket1(axis: list[float] | None, x: float) -> tuple[int, float]:
    if axis is None or len(axis) == 1:
        return 0, 0.0
    i = min(max(bisect.bisect_right(axis, x) - 1, 0), len(axis) - 2)
    lo, hi = axis[i], axis[i + 1]
    return i, (x - lo) / (hi - lo)


def _bracket(axis: np.ndarray | None, x: np.ndarray) -> tuple[Any, Any]:
    """Lower index and fraction of ``x`` on ``axis`` (fraction < 0 or > 1 extrapolates)."""
    if axis is None or len(axis) == 1:
        return np.zeros(x.shape, dtype=int), np.zeros(x.shape)
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
    lo, hi = axis[i], axis[i + 1]
    return i, (x - lo) / (hi - lo)


@dataclass
class TimingArc:
    """Delay arc from ``related_pin`` to an output pin; tables in ns (None when absent)."""

    related_pin: str
    sense: str  # positive_unate | negative_unate | non_unate
    when: str | None = None
    cell_rise: Table | None = None
    cell_fall: Table | None = None
    rise_transition: Table | None = None
    fall_transition: Table | None = None


@dataclass
class PowerArc:
    """Internal energy (fJ per output transition) for an output pin; ``related_pin`` None = any input."""

    related_pin: str | None
    when: str | None = None
    rise: Table | None = None
    fall: Table | None = None


@dataclass
class OutputPin:
    name: str
    function: str
    tree: tuple
    arcs: list[TimingArc] = field(default_factory=list)
    power: list[PowerArc] = field(default_factory=list)


@dataclass
class InputPin:
    name: str
    cap_ff: float
    power: list[PowerArc] = field(default_factory=list)  # "hidden" energy per input transition


@dataclass
class Cell:
    """A combinational cell: area um^2, leakage nW, input pins (fF) and output pins (function, arcs)."""

    name: str
    area: float
    leakage_nw: float
    inputs: dict[str, InputPin]
    outputs: dict[str, OutputPin]
    dont_use: bool = False

    def truth(self, out: str | None = None) -> tuple[int, ...]:
        """Truth table of output ``out`` (default: the only one) over ``inputs`` in declaration order."""
        pin = self.outputs[out] if out else next(iter(self.outputs.values()))
        return truth_table(pin.tree, list(self.inputs))


@dataclass
class WireLoad:
    """A liberty ``wire_load`` model: the capacitance (fF) of a net estimated from its fanout before layout.

    ``length(fanout)``: the ``fanout_length`` table, linear between its entries and extrapolated with ``slope``
    (length per extra fanout) beyond the last one, as Design Compiler does; ``cap_ff = capacitance x length``.
    The model's resistance is not used (a few ohms per net: below 0.1 ps at these loads).
    """

    name: str
    cap_per_length_ff: float
    slope: float
    fanout_length: tuple[tuple[float, float], ...]

    def cap_ff(self, fanout: int) -> float:
        """Wire capacitance (fF) of a net with ``fanout`` loads (0 for an unloaded net)."""
        if fanout <= 0 or not self.fanout_length:
            return 0.0
        f = np.array([p[0] for p in self.fanout_length])
        ln = np.array([p[1] for p in self.fanout_length])
        beyond = fanout > f[-1]
        length = ln[-1] + self.slope * (fanout - f[-1]) if beyond else float(np.interp(fanout, f, ln))
        return float(self.cap_per_length_ff * length)


@dataclass
class Liberty:
    """A parsed cell library with its unit conversions (factors from file units to internal units).

    ``wire_load``: the library's ``default_wire_load`` model, None when it names none.
    """

    name: str
    path: str
    time_to_ns: float
    cap_to_ff: float
    voltage_to_v: float
    leakage_to_nw: float
    energy_to_fj: float
    nom_voltage: float
    cells: dict[str, Cell]
    skipped: list[str] = field(default_factory=list)
    wire_load: WireLoad | None = None

    def cell(self, name: str) -> Cell:
        try:
            return self.cells[name]
        except KeyError:
            raise HardwareError(
                f"cell {name!r} is not a combinational cell of liberty {self.name} ({self.path})"
            ) from None

    def find(self, truth: tuple[int, ...], n_inputs: int) -> Cell | None:
        """Smallest-area usable single-output cell with ``n_inputs`` inputs realising ``truth``."""
        best: Cell | None = None
        for c in self.cells.values():
            if c.dont_use or len(c.inputs) != n_inputs or len(c.outputs) != 1:
                continue
            if c.truth() == truth and (best is None or c.area < best.area):
                best = c
        return best

    def adder_cells(self) -> dict[str, tuple[str, dict[str, str]]]:
        """The smallest usable full- and half-adder cells: ``{"fa": (cell, {"A", "B", "C", "S", "CO" -> pin}),
        "ha": (cell, {"A", "B", "S", "CO" -> pin})}`` (a kind is absent when the library has no such cell)."""
        wanted = {"fa": (3, (0, 1, 1, 0, 1, 0, 0, 1), (0, 0, 0, 1, 0, 1, 1, 1)), "ha": (2, (0, 1, 1, 0), (0, 0, 0, 1))}
        found: dict[str, tuple[str, dict[str, str]]] = {}
        for kind, (n, sum_t, carry_t) in wanted.items():
            best: Cell | None = None
            for c in self.cells.values():
                if c.dont_use or len(c.inputs) != n or len(c.outputs) != 2:
                    continue
                outs = {c.truth(o): o for o in c.outputs}  # sum and carry are symmetric in their inputs
                if sum_t in outs and carry_t in outs and (best is None or c.area < best.area):
                    best, pins = c, {**dict(zip("ABC", c.inputs, strict=False)), "S": outs[sum_t], "CO": outs[carry_t]}
            if best is not None:
                found[kind] = (best.name, pins)
        return found

    def larger_drives(self) -> list[str]:
        """Usable cells that are not the smallest-area cell of their function (same inputs, same output truth tables):
        the drive-strength variants (``AND2X2``, ``INV_X4``, ...), sorted by name."""
        groups: dict[tuple, list[Cell]] = {}
        for c in self.cells.values():
            if c.dont_use or not c.outputs:
                continue
            groups.setdefault((len(c.inputs), tuple(sorted(c.truth(o) for o in c.outputs))), []).append(c)
        return sorted(c.name for cs in groups.values() for c in sorted(cs, key=lambda c: (c.area, c.name))[1:])

    def inverter(self) -> Cell | None:
        return self.find((1, 0), 1)

    def buffer(self) -> Cell | None:
        return self.find((0, 1), 1)

    def require_basic_cells(self) -> None:
        """Raise :class:`HardwareError` unless an inverter and a 2-input NAND/NOR/AND/OR cell exist."""
        missing = []
        if self.inverter() is None:
            missing.append("an inverter (function !A)")
        if not any(self.find(t, 2) for t in [(1, 1, 1, 0), (1, 0, 0, 0), (0, 0, 0, 1), (0, 1, 1, 1)]):
            missing.append("a 2-input NAND/NOR/AND/OR")
        if missing:
            raise HardwareError(
                f"liberty {self.name} ({self.path}) lacks {' and '.join(missing)}; it cannot map logic. "
                f"Combinational cells found: {sorted(self.cells)[:20]}"
            )


# ------------------------------------------------------------------------------------- unit handling

_TIME = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0, "ps": 1e-3, "fs": 1e-6}
_CAP = {"f": 1e15, "mf": 1e12, "uf": 1e9, "nf": 1e6, "pf": 1e3, "ff": 1.0}
_VOLT = {"v": 1.0, "mv": 1e-3, "kv": 1e3}
_POWER = {"w": 1e9, "mw": 1e6, "uw": 1e3, "nw": 1.0, "pw": 1e-3, "fw": 1e-6}


def _unit(text: str | None, table: dict[str, float], default: str, what: str, source: str) -> float:
    if text is None:
        text = default
    m = re.fullmatch(r"\s*([0-9.eE+-]*)\s*([A-Za-z]+)\s*", text.strip('"'))
    if not m or m.group(2).lower() not in table:
        raise HardwareError(f"liberty {source}: cannot understand {what} {text!r}")
    scale = float(m.group(1)) if m.group(1) else 1.0
    return scale * table[m.group(2).lower()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.replace(",", " ").split()]


# ------------------------------------------------------------------------------------------ extraction


def _read_text(path: Path) -> str:
    if not path.exists():
        raise HardwareError(f"liberty file {path} does not exist; pass the path of a .lib or .lib.gz file")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8", errors="replace")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise HardwareError(f"cannot read liberty file {path}: {e}") from e


def liberty_text(path: str | os.PathLike) -> str:
    """Uncompressed text of a .lib or .lib.gz file (raises :class:`HardwareError` if absent)."""
    return _read_text(Path(path))


class _Builder:
    def __init__(self, lib: Group, source: str) -> None:
        self.source = source
        s = lib.simple
        self.t = _unit(s.get("time_unit"), _TIME, "1ns", "time_unit", source)
        self.v = _unit(s.get("voltage_unit"), _VOLT, "1V", "voltage_unit", source)
        self.p = _unit(s.get("leakage_power_unit"), _POWER, "1nW", "leakage_power_unit", source)
        cl = lib.complex.get("capacitive_load_unit")
        if cl:
            a = cl[0]
            self.c = float(a[0]) * _unit("1" + a[1], _CAP, "1pf", "capacitive_load_unit", source)
        else:
            self.c = 1e3  # Liberty's default is 1 pF
        self.e = self.v * self.v * self.c  # fJ per (voltage_unit^2 x cap_unit)
        self.templates: dict[str, Group] = {}
        for g in lib.groups:
            if g.kind in ("lu_table_template", "power_lut_template"):
                self.templates[g.name] = g
        self.default_cap = float(s.get("default_input_pin_cap", "0") or 0)

    def table(self, g: Group, scale: float) -> Table:
        tpl = self.templates.get(g.name)
        variables: list[str] = []
        idx: dict[int, list[float]] = {}
        if tpl is not None:
            for k in (1, 2, 3):
                if f"variable_{k}" in tpl.simple:
                    variables.append(tpl.simple[f"variable_{k}"])
                if f"index_{k}" in tpl.complex:
                    idx[k] = _floats(",".join(tpl.complex[f"index_{k}"][0]))
        elif g.name not in ("scalar", ""):
            raise HardwareError(f"liberty {self.source} line {g.line}: unknown table template {g.name!r}")
        for k in (1, 2, 3):
            if f"index_{k}" in g.complex:
                idx[k] = _floats(",".join(g.complex[f"index_{k}"][0]))
        vals = g.complex.get("values")
        if not vals:
            raise HardwareError(f"liberty {self.source} line {g.line}: table {g.kind} has no values")
        rows = [_floats(r) for r in vals[0]]
        if tpl is None or not variables:
            return Table(np.array([[rows[0][0] * scale]]))
        if len(variables) > 2:
            raise HardwareError(f"liberty {self.source} line {g.line}: 3-D tables are not supported")
        axes: dict[str, np.ndarray] = {}
        for k, var in enumerate(variables, start=1):
            if var in _SLEW_VARS:
                axes["slew"] = np.array(idx.get(k, []), dtype=float) * self.t
            elif var in _LOAD_VARS:
                axes["load"] = np.array(idx.get(k, []), dtype=float) * self.c
            else:
                raise HardwareError(
                    f"liberty {self.source} line {g.line}: unsupported table variable {var!r} in {g.kind}"
                )
        arr = np.array(rows, dtype=float) * scale
        if len(variables) == 1:
            arr = arr.reshape(-1)
            arr = arr[:, None] if "slew" in axes else arr[None, :]
        else:
            n1 = len(idx.get(1, []))
            arr = arr.reshape(n1, -1)
            if variables[0] in _LOAD_VARS:  # stored as [load, slew]: transpose to [slew, load]
                arr = arr.T
        for name in ("slew", "load"):
            ax = axes.get(name)
            if ax is not None and (len(ax) == 0 or np.any(np.diff(ax) <= 0)):
                raise HardwareError(
                    f"liberty {self.source} line {g.line}: {name} index of {g.kind} is empty or not increasing"
                )
        exp = (len(axes["slew"]) if "slew" in axes else 1, len(axes["load"]) if "load" in axes else 1)
        if arr.shape != exp:
            raise HardwareError(
                f"liberty {self.source} line {g.line}: {g.kind} has {arr.shape} values, index says {exp}"
            )
        return Table(arr, axes.get("slew"), axes.get("load"))

    def power_arcs(self, pin: Group) -> list[PowerArc]:
        out = []
        for ip in pin.children("internal_power"):
            rp = ip.simple.get("related_pin")
            tabs = {g.kind: self.table(g, self.e) for g in ip.groups if g.kind in ("rise_power", "fall_power")}
            if not tabs:
                continue
            out.append(PowerArc(rp.strip() if rp else None, ip.simple.get("when"), tabs.get("rise_power"),
                                tabs.get("fall_power")))
        return out

    def cell(self, g: Group) -> Cell | None:
        if any(g.children(k) for k in ("ff", "latch", "ff_bank", "latch_bank", "statetable")):
            return None
        pins: list[Group] = []
        for p in g.groups:
            if p.kind == "pin":
                pins.extend(Group(p.kind, [a], p.simple, p.complex, p.groups, p.line) for a in p.args)
            elif p.kind == "bus":
                return None
        inputs: dict[str, InputPin] = {}
        outputs: dict[str, OutputPin] = {}
        for p in pins:
            d = p.simple.get("direction", "")
            if d == "input":
                cap = float(p.simple.get("capacitance", self.default_cap)) * self.c
                inputs[p.name] = InputPin(p.name, cap, self.power_arcs(p))
            elif d in ("output", "inout"):
                fn = p.simple.get("function")
                if fn is None or p.simple.get("three_state"):
                    return None
                tree = parse_function(fn)
                arcs = []
                for t in p.children("timing"):
                    rp = t.simple.get("related_pin", "")
                    tt = t.simple.get("timing_type", "combinational")
                    if tt not in ("combinational", "combinational_rise", "combinational_fall"):
                        continue
                    tabs = {
                        x.kind: self.table(x, self.t)
                        for x in t.groups
                        if x.kind in ("cell_rise", "cell_fall", "rise_transition", "fall_transition")
                    }
                    for r in rp.split():
                        arcs.append(TimingArc(r, t.simple.get("timing_sense", "non_unate"), t.simple.get("when"),
                                              **tabs))
                outputs[p.name] = OutputPin(p.name, fn, tree, arcs, self.power_arcs(p))
        if not outputs:
            return None
        for o in outputs.values():
            unknown = [v for v in function_inputs(o.tree) if v not in inputs]
            if unknown:
                return None  # function of internal state or of other outputs: not purely combinational
        return Cell(
            g.name,
            float(g.simple.get("area", 0.0)),
            float(g.simple.get("cell_leakage_power", 0.0)) * self.p,
            inputs,
            outputs,
            dont_use=g.simple.get("dont_use", "false").lower() == "true",
        )


def parse_liberty(text: str, source: str = "<text>", path: str = "") -> Liberty:
    """Build a :class:`Liberty` from Liberty text."""
    lib = parse_liberty_text(text, source)
    b = _Builder(lib, source)
    cells: dict[str, Cell] = {}
    skipped: list[str] = []
    for g in lib.children("cell"):
        try:
            c = b.cell(g)
        except HardwareError:
            raise
        except (ValueError, IndexError) as e:
            raise HardwareError(f"malformed liberty {source} at line {g.line} (cell {g.name}): {e}") from e
        if c is None:
            skipped.append(g.name)
        else:
            cells[c.name] = c
    untimed = [f"{c.name}.{o.name} from {sorted(missing)}" for c in cells.values() for o in c.outputs.values()
               if (missing := set(function_inputs(o.tree)) - {a.related_pin for a in o.arcs})]
    if untimed:
        raise HardwareError(f"liberty {source}: outputs with no timing arc from inputs their function reads: "
                            f"{untimed[:4]}; timing would take them as zero delay: add the timing groups or remove "
                            "the cells")
    nom = float(lib.simple.get("nom_voltage", "0") or 0) * b.v
    if nom <= 0:
        oc = lib.children("operating_conditions")
        nom = float(oc[0].simple.get("voltage", "1.0")) * b.v if oc else 1.0
    return Liberty(lib.name, path or source, b.t, b.c, b.v, b.p, b.e, nom, cells, skipped, _wire_load(lib, b.c, source))


def _wire_load(lib: Group, cap_to_ff: float, source: str) -> WireLoad | None:
    """The ``wire_load`` group named by ``default_wire_load`` (None without one); a name with no such group is an
    error."""
    name = lib.simple.get("default_wire_load")
    if not name:
        return None
    for g in lib.children("wire_load"):
        if g.name == name:
            try:
                pts = sorted((float(a[0]), float(a[1])) for a in g.complex.get("fanout_length", []))
                return WireLoad(name, float(g.simple.get("capacitance", "0")) * cap_to_ff,
                                float(g.simple.get("slope", "0")), tuple(pts))
            except (ValueError, IndexError) as e:
                raise HardwareError(f"malformed liberty {source}: wire_load {name!r} at line {g.line}: {e}") from e
    raise HardwareError(f"malformed liberty {source}: default_wire_load names {name!r} but no wire_load group has "
                        "that name; fix the file or remove the default_wire_load line")


@lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int, require_basic: bool) -> Liberty:
    lib = parse_liberty(_read_text(Path(path)), source=path, path=path)
    if require_basic:
        lib.require_basic_cells()
    return lib


def read_liberty(path: str | os.PathLike, require_basic: bool = True) -> Liberty:
    """Parse a .lib or .lib.gz file (memoised per path, size and mtime).

    Raises :class:`HardwareError` for a missing or malformed file, or (with ``require_basic``) a
    library lacking an inverter or a 2-input NAND/NOR/AND/OR.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise HardwareError(f"liberty file {path} does not exist; pass the path of a .lib or .lib.gz file")
    st = p.stat()
    return _read_cached(str(p), st.st_mtime_ns, st.st_size, require_basic)

"""Generated AppMul families: every design comes with its look-up table and structural Verilog.

Each family builds a gate-level :class:`~fames.appmul.circuit.Circuit` for ``a_bits x w_bits`` operands
(2..8 bits, both unsigned or both signed two's complement); the LUT is the simulation of that circuit, so
table and Verilog always agree. The output word is ``a_bits + w_bits`` bits; all arithmetic is modulo
``2**(a_bits + w_bits)``.

Public API: :data:`FAMILIES`, :class:`Family`, :func:`build`, :func:`build_family`, :func:`family_names`.
Notation below: ``k = a_bits``, ``m = w_bits``, ``n = k + m``, ``a_i``/``w_j`` operand bits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fames.appmul import arith
from fames.appmul.arith import BitMatrix, Word
from fames.appmul.circuit import ONE, ZERO, Circuit
from fames.appmul.core import MAX_BITS, MIN_BITS, AppMul, exact_lut, sanitize_name
from fames.errors import AppMulError, expect

__all__ = ["FAMILIES", "Family", "build", "build_family", "family_names"]

# ====================================================================== family circuits


def _exact(c: Circuit, signed: bool) -> Word:
    """exact: unsigned = AND array + Dadda tree + fast final adder; signed = radix-4 Booth + the same tree and adder,
    the narrower operand recoded (fewer partial products of the wider one: a 2x6 multiplier costs 0.42x with the
    2-bit operand recoded instead of the 6-bit one, synthetic liberty)."""
    n = c.out_bits
    if not signed:
        return arith.multiply_exact_array(c, c.a, c.w, n, False)
    mat = BitMatrix(c, n)
    x, recoded = (c.w, c.a) if len(c.a) < len(c.w) else (c.a, c.w)
    arith.booth_pp(c, mat, x, recoded, True)
    return mat.reduce()


def _matrix_bias(dropped: list[tuple[int, int, bool]]) -> int:
    """Round-half-up expected value of dropped matrix bits (AND bit: P=1/4, NAND bit: P=3/4)."""
    quarters = sum((3 if nand else 1) << (i + j) for i, j, nand in dropped)
    return (quarters + 2) // 4


def _trunc(c: Circuit, signed: bool, k: int, comp: bool = False) -> Word:
    """trunc: drop the partial-product bits in columns ``i + j < k``.

    Matrix: AND array (unsigned) or modified Baugh-Wooley array (signed: bits with exactly one sign operand
    enter as NAND, plus the correction constant, which is always kept). ``comp``: add the round-half-up
    expected value of the dropped bits (uniform independent operand bits: AND bit 1/4, NAND bit 3/4).
    """
    mat = BitMatrix(c, c.out_bits)
    dropped = arith.array_pp(c, mat, c.a, c.w, signed, keep=lambda i, j: i + j >= k)
    if comp:
        mat.add_const(_matrix_bias(dropped))
    return mat.reduce()


def _bam(c: Circuit, signed: bool, vbl: int, hbl: int) -> Word:
    """bam: broken-array multiplier: omit PP bits with ``i + j < vbl`` or row ``j < hbl`` (same arrays as trunc)."""
    mat = BitMatrix(c, c.out_bits)
    arith.array_pp(c, mat, c.a, c.w, signed, keep=lambda i, j: i + j >= vbl and j >= hbl)
    return mat.reduce()


def _perf(c: Circuit, signed: bool, p: int, s: int = 0) -> Word:
    """perf: drop PP rows ``s .. s+p-1`` (bits of w): ``y = a * w'`` with those w bits cleared.

    Same array as exact-array (AND / Baugh-Wooley); a removed sign row (signed, ``j = m-1``) makes
    ``w'`` non-negative.
    """
    w = [ZERO if s <= j < s + p else b for j, b in enumerate(c.w)]
    return arith.multiply_exact_array(c, c.a, w, c.out_bits, signed)


def _roup(c: Circuit, signed: bool, P: int, R: int) -> Word:
    """roup: ``y = round_R(a) * sum_{j >= P} d_j 4**j`` with radix-4 Booth digits ``d_j`` of ``w``.

    ``round_R(a) = ((a >> R) + a_{R-1}) << R`` (round half up, computed one bit wider so it never
    overflows). Unsigned operands are zero-extended by one bit for the Booth encoding; the unsigned result
    saturates at ``2**n - 1`` (reached only for ``round_R(a) = 2**k`` and ``D = 2**m``).
    """
    n = c.out_bits
    x = list(c.a) if signed else list(c.a) + [ZERO]  # signed word holding a
    if R > 0:
        hi = x[R:]
        x = arith.increment(c, hi + [hi[-1]], c.a[R - 1])
    width = n if signed else n + 1
    mat = BitMatrix(c, width)
    arith.booth_pp(c, mat, x, c.w, signed, skip=P, shift=R)
    y = mat.reduce()
    if not signed:
        y = [c.OR(b, y[n]) for b in y[:n]]
    return y


def _drum_operand(c: Circuit, x: Word, k: int) -> tuple[Word, Word]:
    """DRUM segment of ``x`` (k bits from the leading one, LSB forced to 1 when bits were dropped) and
    the one-hot shift ``sel[v]`` (segment = ``x >> v``)."""
    n = len(x)
    if k >= n:
        return list(x), [ONE]
    h, _ = arith.leading_one(c, x)
    sel = [arith.is_zero(c, x[k:])] + [h[v + k - 1] for v in range(1, n - k + 1)]
    seg = arith.shift_right_onehot(c, x, sel, k)
    seg[0] = c.OR(seg[0], c.NOT(sel[0]))
    return seg, sel


def _drum_core(k: int) -> Callable[[Circuit, Word, Word], Word]:
    def core(c: Circuit, a: Word, w: Word) -> Word:
        sa, va = _drum_operand(c, a, k)
        sw, vw = _drum_operand(c, w, k)
        p = arith.multiply_exact_array(c, sa, sw, len(sa) + len(sw), False)
        p = arith.shift_left_onehot(c, p, va, len(p) + len(va) - 1)
        return arith.shift_left_onehot(c, p, vw, c.out_bits)

    return core


def _drum(c: Circuit, signed: bool, k: int) -> Word:
    """drum: DRUM-k (Hashemi et al.), on magnitudes for signed operands (sign-magnitude wrapper).

    Per operand ``x`` with leading one at ``t``: if ``t < k``, ``x' = x``; else ``v = t - k + 1``,
    ``x' = ((x >> v) | 1) << v``. ``y = x'_a * x'_w`` (the ``k x k`` product is exact).
    """
    return _unsigned_or_signmag(c, signed, _drum_core(k))


def _mitchell_core(t: int) -> Callable[[Circuit, Word, Word], Word]:
    def core(c: Circuit, a: Word, w: Word) -> Word:
        F = max(len(a), len(w)) - 1
        parts = []
        for x in (a, w):
            h, nz = arith.leading_one(c, x)
            # left-aligned mantissa: bit F of (x << (F - t)) is the leading one; keep the F bits below it
            mant = [
                c.or_all(c.AND(h[tt], x[i - F + tt]) for tt in range(len(x)) if 0 <= i - F + tt < tt) for i in range(F)
            ]
            mant = [ZERO if i < F - t else b for i, b in enumerate(mant)]
            parts.append((arith.encode_onehot(c, h), mant, nz))
        (ta, ma, nza), (tw, mw, nzw) = parts
        S = arith.ripple_add(c, ma, mw, F + 1)
        cy = S[F]
        M = [c.MUX(cy, S[i], S[i - 1] if i > 0 else ZERO) for i in range(F)]
        M += [c.MUX(cy, ONE, S[F - 1]), cy]
        T = arith.ripple_add(c, ta, tw, max(len(ta), len(tw)) + 1)
        n = c.out_bits
        y = arith.shift_left(c, M, T, F + n)[F:]
        nz = c.AND(nza, nzw)
        return [c.AND(b, nz) for b in y]

    return core


def _mitchell(c: Circuit, signed: bool, t: int) -> Word:
    """mitchell: Mitchell's logarithmic multiplier, mantissas truncated to ``t`` fraction bits.

    For ``x > 0``: characteristic ``c_x = floor(log2 x)``, mantissa ``f_x = (x - 2**c_x) << (F - c_x)``
    (``F = max(a_bits, w_bits) - 1`` fraction bits) with its low ``F - t`` bits cleared. ``S = f_a + f_w``;
    ``M = 2**F + S`` if ``S < 2**F`` else ``2 S``; ``y = (M << (c_a + c_w)) >> F`` (floor). Zero operand
    gives 0. Signed via sign-magnitude.
    """
    return _unsigned_or_signmag(c, signed, _mitchell_core(t))


def _kulkarni_core(levels: int) -> Callable[[Circuit, Word, Word], Word]:
    def core(c: Circuit, a: Word, w: Word) -> Word:
        a = arith.extend(a, len(a) + len(a) % 2, False)
        w = arith.extend(w, len(w) + len(w) % 2, False)
        mat = BitMatrix(c, c.out_bits)
        for j in range(len(w) // 2):
            for i in range(len(a) // 2):
                a0, a1, w0, w1 = a[2 * i], a[2 * i + 1], w[2 * j], w[2 * j + 1]
                col = 2 * (i + j)
                if i + j < levels:  # Kulkarni block: 3 x 3 = 7 (the middle bit is an OR)
                    mat.add_bit(col, c.AND(a0, w0))
                    mat.add_bit(col + 1, c.OR(c.AND(a1, w0), c.AND(a0, w1)))
                    mat.add_bit(col + 2, c.AND(a1, w1))
                else:  # exact 2x2 block: its four partial products go straight into the tree
                    for bi, ab in enumerate((a0, a1)):
                        for bj, wb in enumerate((w0, w1)):
                            mat.add_bit(col + bi + bj, c.AND(ab, wb))
        return mat.reduce()

    return core


def _kulkarni(c: Circuit, signed: bool, levels: int) -> Word:
    """kulkarni: recursive multiplier of 2x2 blocks ``A_i * W_j * 4**(i+j)`` (2-bit digits, odd widths
    zero-extended), summed exactly. Blocks of significance level ``i + j < levels`` are Kulkarni's
    approximate 2x2 block (``3 x 3 = 7``, 3-bit output; all other products exact); others are exact.
    Signed via sign-magnitude.
    """
    return _unsigned_or_signmag(c, signed, _kulkarni_core(levels))


def _orc_core(k: int) -> Callable[[Circuit, Word, Word], Word]:
    def core(c: Circuit, a: Word, w: Word) -> Word:
        mat = BitMatrix(c, c.out_bits)
        low: list[Word] = [[] for _ in range(min(k, c.out_bits))]
        for j, wb in enumerate(w):
            for i, ab in enumerate(a):
                bit = c.AND(ab, wb)
                if i + j < k:
                    low[i + j].append(bit)
                else:
                    mat.add_bit(i + j, bit)
        for col, bits in enumerate(low):
            mat.add_bit(col, c.or_all(bits))
        return mat.reduce()

    return core


def _orc(c: Circuit, signed: bool, k: int) -> Word:
    """orc: OR-accumulated columns: the AND-array bits of each column ``i + j < k`` are ORed into one bit (no
    carries into or out of them); columns ``>= k`` are summed exactly (Dadda tree). ``k = a_bits + w_bits`` gives a
    carry-free multiplier. Signed via sign-magnitude.
    """
    return _unsigned_or_signmag(c, signed, _orc_core(k))


def _unsigned_or_signmag(c: Circuit, signed: bool, core: Callable[[Circuit, Word, Word], Word]) -> Word:
    if signed:
        return arith.sign_magnitude(c, c.a, c.w, core, c.out_bits)
    return core(c, list(c.a), list(c.w))


# ====================================================================== grids and labels


def _digits(bits: int, signed: bool) -> int:
    """Number of radix-4 Booth digits of a ``bits`` wide multiplier."""
    m = bits + (0 if signed else 1)
    return (m + 1) // 2


def _kul_levels(a_bits: int, w_bits: int) -> int:
    return (a_bits + 1) // 2 + (w_bits + 1) // 2 - 1


def _grid_exact(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    return [{}]


def _grid_trunc(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    n = a + w
    ks = sorted({max(1, n // 4), max(1, 5 * n // 16), max(1, 3 * n // 8), max(1, n // 2)})
    return [{"k": k, "comp": comp} for k in ks for comp in (False, True)]


def _grid_bam(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    n = a + w
    pairs = [(n // 4, 1), (3 * n // 8, 1), (3 * n // 8, 2), (n // 2, 2), (n // 2, 3)]
    # skip pairs whose broken rows already lie entirely below vbl (they equal trunc k=vbl)
    return [{"vbl": v, "hbl": h} for v, h in dict.fromkeys(pairs) if h < w and v <= h + a - 2]


def _grid_perf(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    return [{"p": p, "s": 0} for p in (1, 2, 3, 4) if p < w]


def _grid_roup(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    return [
        {"P": pp, "R": rr}
        for pp in (0, 1, 2)
        for rr in (0, 2, 4)
        if (pp, rr) != (0, 0) and pp < _digits(w, s) and rr <= a - 2
    ]


def _full_roup(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    """Every perforation P below the digit count and every rounding bit R up to ``a - 2`` (MAx-DNN's own space)."""
    return [{"P": pp, "R": rr} for pp in range(_digits(w, s)) for rr in range(a - 1) if (pp, rr) != (0, 0)]


def _grid_drum(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    return [{"k": k} for k in (3, 4, 5, 6) if k < max(a, w)]


def _grid_mitchell(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    F = max(a, w) - 1
    return [{"t": t} for t in sorted({F} | {t for t in (4, 2) if t < F}, reverse=True)]


def _grid_orc(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    n = a + w
    return [{"k": k} for k in sorted({n // 2, 5 * n // 8, 3 * n // 4, n}) if k >= 2]


def _grid_kulkarni(a: int, w: int, s: bool) -> list[dict[str, Any]]:
    nl = _kul_levels(a, w)
    return [{"levels": lv} for lv in sorted({min(2, nl), nl // 2 + 1, nl})]


# ====================================================================== parameter checks


def _int_param(params: dict[str, Any], key: str, lo: int, hi: int, fam: str) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise AppMulError(f"family {fam!r}: parameter {key}={v!r} must be an integer in {lo}..{hi}")
    return int(v)


def _canon_trunc(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(p["comp"], bool):
        raise AppMulError(f"family 'trunc': parameter comp={p['comp']!r} must be True or False")
    return {"k": _int_param(p, "k", 0, a + w, "trunc"), "comp": p["comp"]}


def _canon_bam(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    return {"vbl": _int_param(p, "vbl", 0, a + w, "bam"), "hbl": _int_param(p, "hbl", 0, w, "bam")}


def _canon_perf(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    st = _int_param(p, "s", 0, w - 1, "perf")
    return {"p": _int_param(p, "p", 0, w - st, "perf"), "s": st}


def _canon_roup(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    return {"P": _int_param(p, "P", 0, _digits(w, s), "roup"), "R": _int_param(p, "R", 0, a - 1, "roup")}


def _canon_drum(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    return {"k": _int_param(p, "k", 3, MAX_BITS, "drum")}


def _canon_mitchell(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    F = max(a, w) - 1
    return {"t": F if p["t"] is None else min(F, _int_param(p, "t", 0, 64, "mitchell"))}


def _canon_orc(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    return {"k": _int_param(p, "k", 0, a + w, "orc")}


def _canon_kulkarni(a: int, w: int, s: bool, p: dict[str, Any]) -> dict[str, Any]:
    nl = _kul_levels(a, w)
    if p["levels"] == "all":
        return {"levels": nl}
    return {"levels": min(nl, _int_param(p, "levels", 0, 64, "kulkarni"))}


# ====================================================================== registry


@dataclass(frozen=True)
class Family:
    """A parametric AppMul family.

    ``circuit(c, signed, **params)`` returns the output bits of the design built into ``c``;
    ``grid_fn(a_bits, w_bits, signed)`` lists the default parameter sets; ``canon(a, w, signed, params)``
    checks and normalizes parameters; ``label(params)`` is the parameter part of the design name;
    ``params`` names the parameters and ``defaults`` gives the optional ones; ``full_fn`` (optional) lists every
    meaningful parameter set (``"<family>:full"`` in :func:`build_family`).
    """

    name: str
    definition: str
    circuit: Callable[..., Word]
    grid_fn: Callable[[int, int, bool], list[dict[str, Any]]]
    canon: Callable[[int, int, bool, dict[str, Any]], dict[str, Any]]
    label: Callable[[dict[str, Any]], str]
    params: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    full_fn: Callable[[int, int, bool], list[dict[str, Any]]] | None = None

    @property
    def doc(self) -> str:
        return self.circuit.__doc__ or self.definition

    def grid(self, a_bits: int, w_bits: int, signed: bool, full: bool = False) -> list[dict[str, Any]]:
        """Default parameter grid for these widths (``full``: every meaningful parameter set)."""
        _check_widths(a_bits, w_bits)
        if full and self.full_fn is None:
            with_full = [f.name for f in FAMILIES.values() if f.full_fn is not None]
            raise AppMulError(f"family {self.name!r} has no full grid; families with one: {', '.join(with_full)}")
        return [dict(p) for p in (self.full_fn if full else self.grid_fn)(a_bits, w_bits, signed)]

    def name_for(self, a_bits: int, w_bits: int, signed: bool, params: dict[str, Any]) -> str:
        lab = self.label(params)
        sig = f"{a_bits}x{w_bits}{'s' if signed else 'u'}"
        return f"{self.name}_{lab}_{sig}" if lab else f"{self.name}_{sig}"

    def build(self, a_bits: int, w_bits: int, signed: bool, **params: Any) -> AppMul:
        """Build the circuit, simulate it into the LUT and emit its structural Verilog."""
        _check_widths(a_bits, w_bits)
        signed = bool(signed)
        unknown = set(params) - set(self.params)
        if unknown:
            raise AppMulError(
                f"family {self.name!r} does not take parameter(s) {sorted(unknown)}; "
                f"its parameters are {list(self.params)}"
            )
        params = dict(self.defaults) | params
        missing = [k for k in self.params if k not in params]
        if missing:
            raise AppMulError(f"family {self.name!r} needs parameter(s) {missing}")
        canon = self.canon(a_bits, w_bits, signed, dict(params))
        name = self.name_for(a_bits, w_bits, signed, canon)
        c = Circuit(a_bits, w_bits, name)
        c.set_output(self.circuit(c, signed, **canon), signed=signed)
        top = sanitize_name(name)
        return AppMul(
            name=name,
            a_bits=a_bits,
            w_bits=w_bits,
            a_signed=signed,
            w_signed=signed,
            lut=c.simulate(signed),
            verilog=c.to_verilog(top),
            top=top,
            structural=True,
            provenance={
                "family": self.name,
                "params": canon,
                "generator": "fames",
                "definition": self.definition,
                "gates": c.gate_count(),
                "structure": arith.current_structure(),
            },
        )


def _check_widths(a_bits: int, w_bits: int) -> None:
    for label, b in (("a_bits", a_bits), ("w_bits", w_bits)):
        if isinstance(b, bool) or not isinstance(b, int) or not MIN_BITS <= b <= MAX_BITS:
            raise AppMulError(f"{label}={b!r} must be an integer in {MIN_BITS}..{MAX_BITS}")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "exact",
            "exact product; unsigned: AND array + Dadda tree + prefix/ripple final adder; signed: radix-4 Booth",
            lambda c, signed: _exact(c, signed),
            _grid_exact,
            lambda a, w, s, p: {},
            lambda p: "",
        ),
        Family(
            "trunc",
            "drop PP bits of columns i+j<k (AND / Baugh-Wooley array); comp adds round(E[dropped])",
            _trunc,
            _grid_trunc,
            _canon_trunc,
            lambda p: f"k{p['k']}{'c' if p['comp'] else ''}",
            ("k", "comp"),
            {"comp": False},
        ),
        Family(
            "bam",
            "broken array: omit PP bits with i+j<vbl or row j<hbl (AND / Baugh-Wooley array)",
            _bam,
            _grid_bam,
            _canon_bam,
            lambda p: f"v{p['vbl']}h{p['hbl']}",
            ("vbl", "hbl"),
        ),
        Family(
            "perf",
            "perforation: y = a * w' with w bits s..s+p-1 cleared (AND / Baugh-Wooley array)",
            _perf,
            _grid_perf,
            _canon_perf,
            lambda p: f"p{p['p']}" + (f"s{p['s']}" if p["s"] else ""),
            ("p", "s"),
            {"s": 0},
        ),
        Family(
            "roup",
            "MAx-DNN ROUP: y = round_R(a) * sum_{j>=P} d_j 4^j, radix-4 Booth digits d_j of w "
            "(round half up; unsigned saturates at 2^n-1)",
            _roup,
            _grid_roup,
            _canon_roup,
            lambda p: f"p{p['P']}r{p['R']}",
            ("P", "R"),
            full_fn=_full_roup,
        ),
        Family(
            "drum",
            "DRUM-k: k bits from the leading one of each operand, LSB set when bits dropped, exact k x k "
            "product shifted back; signed via sign-magnitude",
            _drum,
            _grid_drum,
            _canon_drum,
            lambda p: f"k{p['k']}",
            ("k",),
        ),
        Family(
            "mitchell",
            "Mitchell log multiplier, mantissas truncated to t fraction bits, floor antilog; signed via sign-magnitude",
            _mitchell,
            _grid_mitchell,
            _canon_mitchell,
            lambda p: f"t{p['t']}",
            ("t",),
            {"t": None},
        ),
        Family(
            "kulkarni",
            "2x2-block recursive multiplier; blocks of level i+j<levels use Kulkarni's 3x3=7 block; "
            "signed via sign-magnitude",
            _kulkarni,
            _grid_kulkarni,
            _canon_kulkarni,
            lambda p: f"l{p['levels']}",
            ("levels",),
        ),
        Family(
            "orc",
            "OR-accumulated columns: the AND-array bits of each column i+j<k are ORed into one bit (carry-free), "
            "columns >= k summed exactly; signed via sign-magnitude",
            _orc,
            _grid_orc,
            _canon_orc,
            lambda p: f"k{p['k']}",
            ("k",),
        ),
    )
}


def family_names() -> list[str]:
    return list(FAMILIES)


def _family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise AppMulError(f"unknown AppMul family {name!r}; known families: {', '.join(FAMILIES)}") from None


def _exact_mixed(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> AppMul:
    """The exact multiplier of one unsigned and one two's-complement operand (imported designs can be such), as
    Verilog ``*`` that synthesis maps (our families' structures take operands of one signedness)."""
    _check_widths(a_bits, w_bits)
    name = f"exact_{a_bits}{'s' if a_signed else 'u'}x{w_bits}{'s' if w_signed else 'u'}"
    ext = {True: "{x}", False: "{{1'b0, {x}}}"}
    verilog = (f"module {name}(input [{a_bits - 1}:0] a, input [{w_bits - 1}:0] w, output [{a_bits + w_bits - 1}:0] y);"
               f"\n  assign y = $signed({ext[a_signed].format(x='a')}) * $signed({ext[w_signed].format(x='w')});\n"
               "endmodule\n")
    return AppMul(name=name, a_bits=a_bits, w_bits=w_bits, a_signed=a_signed, w_signed=w_signed,
                  lut=exact_lut(a_bits, w_bits, a_signed, w_signed),
                  verilog=verilog, top=name, structural=True,
                  provenance={"family": "exact", "structure": "Verilog '*' (operands of mixed signedness)"})


def build(family: str, a_bits: int, w_bits: int, a_signed: bool, w_signed: bool, **params: Any) -> AppMul:
    """Build one design of ``family``; both operands must have the same signedness, except for the exact
    multiplier (:func:`_exact_mixed`)."""
    if bool(a_signed) != bool(w_signed) and family == "exact" and not params:
        return _exact_mixed(a_bits, w_bits, bool(a_signed), bool(w_signed))
    if bool(a_signed) != bool(w_signed):
        raise AppMulError(
            f"generated families need both operands of the same signedness, got a_signed={a_signed}, "
            f"w_signed={w_signed}; use signed=True for both (symmetric) or False for both (affine)"
        )
    return _family(family).build(a_bits, w_bits, bool(a_signed), **params)


def build_family(family: str, a_bits: int, w_bits: int, signed: bool) -> list[AppMul]:
    """Every design of the default grid of ``family`` (or of all families with ``"all"``, exact first);
    ``"<family>:full"`` (e.g. ``"roup:full"``): every meaningful parameter set of that family instead.

    Designs whose LUT equals the exact product (outside the exact family) or an earlier design are dropped.
    """
    expect(family, str, "build_family: family")
    expect(a_bits, (int, np.integer), "build_family: a_bits")
    expect(w_bits, (int, np.integer), "build_family: w_bits")
    expect(signed, (bool, np.bool_), "build_family: signed")
    name, _, grid = family.partition(":")
    if grid not in ("", "full"):
        raise AppMulError(f"family {family!r}: the only grid suffix is ':full' (every parameter set), e.g. 'roup:full'")
    fams = list(FAMILIES.values()) if name == "all" else [_family(name)]
    out: list[AppMul] = []
    seen: set[bytes] = set()
    exact_key: bytes | None = None
    for fam in fams:
        for params in fam.grid(a_bits, w_bits, signed, full=grid == "full"):
            m = fam.build(a_bits, w_bits, signed, **params)
            key = m.lut.tobytes()
            if exact_key is None:
                exact_key = m.exact().astype(m.lut.dtype).tobytes()
            if key in seen or (fam.name != "exact" and key == exact_key):
                continue
            seen.add(key)
            out.append(m)
    return out

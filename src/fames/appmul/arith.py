"""Arithmetic building blocks on :class:`~fames.appmul.circuit.Circuit` signals.

Words are lists of signals, least-significant bit first. A signed word is two's complement (its last bit
is the sign). :class:`BitMatrix` collects weighted bits (partial products, constants) and sums them
modulo ``2**width`` with a Dadda tree and a final carry-propagate adder; every multiplier family is built on it.

Two structures (:data:`STRUCTURES`, chosen with :func:`structure`):

* ``textbook`` (default): Dadda tree fed in column order, ripple-carry final adder -- the reference structure
  of the approximate-multiplier literature, so relative figures compare with published ones.
* ``fast``: arrival-ordered Dadda tree (early bits into the counters, the latest on the full adders' carry-in)
  and an arrival-aware ripple/parallel-prefix hybrid final adder (:func:`fast_add`); about 12% shorter
  critical path for the exact 8x8 under NanGate 45 nm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from fames.appmul.circuit import ONE, ZERO, Circuit, Signal
from fames.errors import AppMulError

Word = list[Signal]

STRUCTURES = {"textbook": (False, "ripple"), "fast": (True, "fast")}  # name -> (arrival-ordered, final adder)
_structure = "textbook"


def current_structure() -> str:
    """Name of the structure new circuits are built with (see :data:`STRUCTURES`)."""
    return _structure


@contextlib.contextmanager
def structure(name: str) -> Iterator[None]:
    """Build circuits with structure ``name`` (``textbook`` or ``fast``) inside the ``with`` block."""
    global _structure
    if name not in STRUCTURES:
        raise AppMulError(f"unknown multiplier structure {name!r}; use one of {list(STRUCTURES)}")
    saved, _structure = _structure, name
    try:
        yield
    finally:
        _structure = saved


def _order(c: Circuit, bits: list[Signal]) -> list[Signal]:
    """``bits`` by estimated arrival (earliest first) in the ``fast`` structure, unchanged otherwise."""
    return sorted(bits, key=c.arrival) if STRUCTURES[_structure][0] else list(bits)


# ---------------------------------------------------------------------- adders
def half_adder(c: Circuit, x: Signal, y: Signal) -> tuple[Signal, Signal]:
    """``(sum, carry)`` of two bits."""
    return c.XOR(x, y), c.AND(x, y)


def full_adder(c: Circuit, x: Signal, y: Signal, z: Signal) -> tuple[Signal, Signal]:
    """``(sum, carry)`` of three bits; constant inputs reduce it to cheaper logic."""
    ins = [s for s in (x, y, z) if s != ZERO]
    ones = sum(1 for s in ins if s == ONE)
    var = _order(c, [s for s in ins if s != ONE])  # latest input last: it passes only the final XOR and AND-OR
    if ones == 0:
        if len(var) < 3:
            var += [ZERO] * (2 - len(var))
            return half_adder(c, var[0], var[1])
        p = c.XOR(var[0], var[1])
        return c.XOR(p, var[2]), c.OR(c.AND(var[0], var[1]), c.AND(var[2], p))
    if ones == 1:  # x + y + 1
        var += [ZERO] * (2 - len(var))
        return c.XNOR(var[0], var[1]), c.OR(var[0], var[1])
    if ones == 2:  # x + 2
        return (var[0] if var else ZERO), ONE
    return ONE, ONE


def ripple_add(c: Circuit, xs: Sequence[Signal], ys: Sequence[Signal], width: int, cin: Signal = ZERO) -> Word:
    """``(xs + ys + cin) mod 2**width`` (inputs zero-extended)."""
    out: Word = []
    carry = cin
    for i in range(width):
        x = xs[i] if i < len(xs) else ZERO
        y = ys[i] if i < len(ys) else ZERO
        s, carry = full_adder(c, x, y, carry)
        out.append(s)
    return out


# ---------------------------------------------------------------------- parallel-prefix adders
PREFIX_NETWORKS = ("ripple", "sklansky", "brent_kung", "kogge_stone")

GP = tuple[Signal, Signal]  # (generate, propagate) of a bit group


def _gp_combine(c: Circuit, hi: GP, lo: GP) -> GP:
    """Prefix operator: group ``hi`` (more significant) followed by group ``lo``."""
    return c.OR(hi[0], c.AND(hi[1], lo[0])), c.AND(hi[1], lo[1])


def prefix_scan(c: Circuit, nodes: Sequence[GP], network: str = "sklansky") -> list[GP]:
    """Inclusive prefix of ``nodes`` (LSB first): element ``i`` is the group ``(G, P)`` of ``nodes[0..i]``.

    ``network``: ``ripple`` (serial, n-1 operators), ``sklansky`` (divide and conquer, log2 n levels,
    fan-out up to n/2), ``brent_kung`` (2 log2 n - 1 levels, about 2n operators) or ``kogge_stone``
    (log2 n levels, fan-out 2, n log2 n operators).
    """
    cur = list(nodes)
    n = len(cur)
    if network == "ripple":
        for i in range(1, n):
            cur[i] = _gp_combine(c, cur[i], cur[i - 1])
    elif network == "sklansky":
        d = 1
        while d < n:
            for i in range(n):
                if i & d:
                    cur[i] = _gp_combine(c, cur[i], cur[(i & ~(d - 1)) - 1])
            d *= 2
    elif network == "kogge_stone":
        d = 1
        while d < n:
            cur = [_gp_combine(c, cur[i], cur[i - d]) if i >= d else cur[i] for i in range(n)]
            d *= 2
    elif network == "brent_kung":
        d = 1
        while d < n:
            for i in range(2 * d - 1, n, 2 * d):
                cur[i] = _gp_combine(c, cur[i], cur[i - d])
            d *= 2
        d //= 2
        while d >= 1:
            for i in range(3 * d - 1, n, 2 * d):
                cur[i] = _gp_combine(c, cur[i], cur[i - d])
            d //= 2
    else:
        raise AppMulError(f"unknown prefix network {network!r}; use one of {list(PREFIX_NETWORKS)}")
    return cur


def prefix_add(
    c: Circuit,
    xs: Sequence[Signal],
    ys: Sequence[Signal],
    width: int,
    cin: Signal = ZERO,
    network: str = "sklansky",
    split: int = 0,
) -> Word:
    """``(xs + ys + cin) mod 2**width`` (inputs zero-extended): ripple-carry over bits ``[0, split)``, then a
    parallel-prefix carry network of kind ``network`` (see :func:`prefix_scan`) over ``[split, width)``
    whose carry-in is the ripple carry."""
    x, y = extend(xs, width, False), extend(ys, width, False)
    split = max(0, min(int(split), width))
    out: Word = []
    carry = cin
    for i in range(split):
        s, carry = full_adder(c, x[i], y[i], carry)
        out.append(s)
    if split == width:
        return out
    p = [c.XOR(x[i], y[i]) for i in range(split, width)]
    g = [c.AND(x[i], y[i]) for i in range(split, width)]
    # position -1 holds the carry-in (G = cin, P = 0): every prefix from it is a carry.
    pref = prefix_scan(c, [(carry, ZERO)] + list(zip(g, p, strict=True))[:-1], network)
    out += [c.XOR(p[k], pref[k][0]) for k in range(len(p))]
    return out


def fast_add(
    c: Circuit, xs: Sequence[Signal], ys: Sequence[Signal], width: int, cin: Signal = ZERO, slack: float = 1.0
) -> Word:
    """Arrival-aware ``(xs + ys + cin) mod 2**width`` for the non-uniform arrival profile of a compressor
    tree: the early low columns ripple, the late middle and high columns get a prefix network.

    Every :func:`prefix_add` split point and prefix network (not pure ripple) is built; among those whose
    latest sum bit (:meth:`Circuit.arrival`) is within ``slack`` unit delays of the fastest, the one with
    the fewest new gates wins (then the lowest split). Rejected candidates stay as dead gates, which
    :meth:`Circuit.to_verilog` and :meth:`Circuit.simulate` never emit or evaluate."""
    base = c.cone([*xs, *ys, cin])
    cands = []
    for network in PREFIX_NETWORKS[1:]:
        for split in range(width + 1):
            out = prefix_add(c, xs, ys, width, cin, network, split)
            t = max((c.arrival(s) for s in out), default=0.0)
            cands.append((t, len(c.cone(out) - base), split, out))
    tmin = min(x[0] for x in cands)
    return min((x for x in cands if x[0] <= tmin + slack), key=lambda x: x[1:3])[3]


def increment(c: Circuit, xs: Sequence[Signal], inc: Signal) -> Word:
    """``(xs + inc) mod 2**len(xs)`` with a half-adder chain."""
    out: Word = []
    carry = inc
    for x in xs:
        s, carry = half_adder(c, x, carry)
        out.append(s)
    return out


def cond_negate(c: Circuit, xs: Sequence[Signal], neg: Signal) -> Word:
    """``-xs`` when ``neg`` else ``xs``, modulo ``2**len(xs)`` (two's complement)."""
    return increment(c, [c.XOR(x, neg) for x in xs], neg)


def negate(c: Circuit, xs: Sequence[Signal]) -> Word:
    """Two's complement negation modulo ``2**len(xs)``."""
    return cond_negate(c, xs, ONE)


def abs_value(c: Circuit, xs: Sequence[Signal]) -> tuple[Word, Signal]:
    """Magnitude (unsigned, same width) and sign of a signed word; ``-2**(n-1)`` maps to ``2**(n-1)``."""
    sign = xs[-1]
    return cond_negate(c, xs, sign), sign


def extend(xs: Sequence[Signal], width: int, signed: bool) -> Word:
    """Sign- or zero-extend (or cut) a word to ``width`` bits."""
    fill = xs[-1] if (signed and xs) else ZERO
    return (list(xs) + [fill] * width)[:width]


def is_zero(c: Circuit, xs: Sequence[Signal]) -> Signal:
    return c.NOT(c.or_all(xs))


def equal_const(c: Circuit, xs: Sequence[Signal], value: int) -> Signal:
    """1 when the unsigned word equals ``value``."""
    return c.and_all(x if (value >> i) & 1 else c.NOT(x) for i, x in enumerate(xs))


def less_than(c: Circuit, xs: Sequence[Signal], ys: Sequence[Signal]) -> Signal:
    """Unsigned comparator ``xs < ys`` (MSB-first priority chain)."""
    n = max(len(xs), len(ys))
    xs, ys = extend(xs, n, False), extend(ys, n, False)
    lt = ZERO
    for x, y in zip(xs, ys, strict=True):  # from LSB: higher bits override lower ones
        lt = c.MUX(c.XOR(x, y), lt, y)
    return lt


# ---------------------------------------------------------------------- bit matrix


class BitMatrix:
    """Weighted bits summed modulo ``2**width``: ``sum(bit * 2**col) + const``."""

    def __init__(self, c: Circuit, width: int) -> None:
        self.c, self.width = c, int(width)
        self.cols: list[Word] = [[] for _ in range(self.width)]
        self.const = 0

    def add_bit(self, col: int, s: Signal, negative: bool = False) -> None:
        """Add ``s * 2**col`` (``negative``: subtract it, as ``~s * 2**col - 2**col``)."""
        if col < 0:
            raise AppMulError(f"bit matrix column {col} is negative")
        if negative:
            s = self.c.NOT(s)
            self.const -= 1 << col
        if col >= self.width or s == ZERO:
            return
        if s == ONE:
            self.const += 1 << col
        else:
            self.cols[col].append(s)

    def add_const(self, value: int) -> None:
        self.const += int(value)

    def add_word(self, xs: Sequence[Signal], shift: int = 0, signed: bool = False, negate: bool = False) -> None:
        """Add (or with ``negate`` subtract) the value of word ``xs`` times ``2**shift``."""
        last = len(xs) - 1
        for i, x in enumerate(xs):
            neg = signed and i == last
            self.add_bit(shift + i, x, negative=neg != negate)

    def heights(self) -> list[int]:
        return [len(col) for col in self.cols]

    def reduce(self, adder: str | None = None) -> Word:
        """Sum everything: Dadda tree to two rows, then a carry-propagate adder. Returns ``width`` bits.

        ``adder``: ``"fast"`` (:func:`fast_add`, arrival-aware ripple + prefix hybrid), ``"ripple"`` or a
        prefix network name (:data:`PREFIX_NETWORKS`) over the full width; default: the current structure's.
        """
        c, n = self.c, self.width
        cols = [list(col) for col in self.cols]
        k = self.const % (1 << n) if n else 0
        for i in range(n):
            if (k >> i) & 1:
                cols[i].append(ONE)
        cols = dadda(c, cols)
        xs = [col[0] if col else ZERO for col in cols]
        ys = [col[1] if len(col) > 1 else ZERO for col in cols]
        adder = STRUCTURES[_structure][1] if adder is None else adder
        if adder == "fast":
            return fast_add(c, xs, ys, n)
        if adder == "ripple":
            return ripple_add(c, xs, ys, n)
        return prefix_add(c, xs, ys, n, network=adder)


def dadda(c: Circuit, cols: list[Word]) -> list[Word]:
    """Reduce a bit matrix (list of columns) to at most two bits per column (carries out of the top dropped).

    Dadda's stage heights and counter placement. In the ``fast`` structure the earliest-arriving bits of a
    column (:meth:`Circuit.arrival`) feed the counters and the latest pass on, and each full adder takes its
    latest input on the fast (carry-in) pin; in ``textbook`` bits are taken in column order."""
    n = len(cols)
    seq = [2]
    while seq[-1] < max((len(col) for col in cols), default=0):
        seq.append(seq[-1] * 3 // 2)
    targets = [d for d in reversed(seq[:-1])]
    while True:
        hmax = max((len(col) for col in cols), default=0)
        if hmax <= 2:
            return cols
        targets = [d for d in targets if d < hmax] or [2]
        d = targets.pop(0)
        new: list[Word] = [[] for _ in range(n)]
        for i in range(n):
            pend = _order(c, cols[i])  # fast: earliest bits into the compressors, late ones pass on
            while len(pend) + len(new[i]) > d and len(pend) >= 2:
                if len(pend) + len(new[i]) - d >= 2 and len(pend) >= 3:
                    s, co = full_adder(c, pend[0], pend[1], pend[2])
                    del pend[:3]
                else:
                    s, co = half_adder(c, pend[0], pend[1])
                    del pend[:2]
                new[i].append(s)
                if i + 1 < n:
                    new[i + 1].append(co)
            new[i].extend(pend)
        cols = new


# ---------------------------------------------------------------------- partial products
def array_pp(
    c: Circuit,
    mat: BitMatrix,
    a: Sequence[Signal],
    w: Sequence[Signal],
    signed: bool,
    keep: Callable[[int, int], bool] | None = None,
) -> list[tuple[int, int, bool]]:
    """Add the AND-array (unsigned) or modified Baugh-Wooley (signed) matrix of ``a * w`` to ``mat``.

    Bit ``(i, j)`` sits in column ``i + j``. Signed: the bits with exactly one sign operand
    (``i == len(a)-1`` xor ``j == len(w)-1``) enter as ``NAND(a_i, w_j)``, and the constant
    ``-sum(2**(i+j))`` over those positions is always added, also when the bit itself is dropped.
    Bits for which ``keep(i, j)`` is false are dropped. Returns the dropped positions as
    ``(i, j, nand)`` for bias computations.
    """
    ka, kw = len(a), len(w)
    dropped: list[tuple[int, int, bool]] = []
    for j in range(kw):
        for i in range(ka):
            nand = signed and ((i == ka - 1) != (j == kw - 1))
            if nand:
                mat.add_const(-(1 << (i + j)))
            if keep is not None and not keep(i, j):
                dropped.append((i, j, nand))
                continue
            bit = c.AND(a[i], w[j])
            mat.add_bit(i + j, c.NOT(bit) if nand else bit)
    return dropped


def multiply_exact_array(c: Circuit, a: Sequence[Signal], w: Sequence[Signal], width: int, signed: bool) -> Word:
    """Exact ``a * w`` modulo ``2**width`` with an AND / Baugh-Wooley array and a Dadda tree."""
    mat = BitMatrix(c, width)
    array_pp(c, mat, a, w, signed)
    return mat.reduce()


def booth_digits(c: Circuit, w: Sequence[Signal], signed: bool) -> list[tuple[Signal, Signal, Signal]]:
    """Radix-4 Booth encoding of ``w``: per digit ``(neg, one, two)``, ``d_j = -2 b_{2j+1} + b_{2j} + b_{2j-1}``.

    Unsigned ``w`` is zero-extended by one bit (and signed ``w`` sign-extended) to an even width, so
    ``w == sum(d_j * 4**j)``. ``|d_j| == 1`` when ``one``, ``2`` when ``two``; ``neg`` is ``b_{2j+1}``.
    """
    m = len(w) + (0 if signed else 1)
    m += m % 2
    wx = extend(w, m, signed)
    digits = []
    for j in range(m // 2):
        b0 = wx[2 * j - 1] if j > 0 else ZERO
        b1, b2 = wx[2 * j], wx[2 * j + 1]
        one = c.XOR(b1, b0)
        two = c.AND(c.XNOR(b1, b0), c.XOR(b2, b1))
        digits.append((b2, one, two))
    return digits


def booth_pp(
    c: Circuit,
    mat: BitMatrix,
    x: Sequence[Signal],
    w: Sequence[Signal],
    w_signed: bool,
    skip: int = 0,
    shift: int = 0,
) -> None:
    """Add ``x * sum_{j >= skip} d_j 4**j * 2**shift`` to ``mat`` (radix-4 Booth).

    ``x`` is a signed (two's complement) word; zero-extend unsigned values first. Each partial product is
    ``sel XOR neg`` over ``len(x) + 1`` bits (sign handled by the constant-correction form of
    :meth:`BitMatrix.add_word`) plus ``neg`` in its least-significant column.
    """
    xe = extend(x, len(x) + 1, True)
    for j, (neg, one, two) in enumerate(booth_digits(c, w, w_signed)):
        if j < skip:
            continue
        pp = []
        for i in range(len(xe)):
            prev = xe[i - 1] if i > 0 else ZERO
            sel = c.OR(c.AND(one, xe[i]), c.AND(two, prev))
            pp.append(c.XOR(sel, neg))
        mat.add_word(pp, shift + 2 * j, signed=True)
        mat.add_bit(shift + 2 * j, neg)


# ---------------------------------------------------------------------- shifting and detection
def leading_one(c: Circuit, xs: Sequence[Signal]) -> tuple[Word, Signal]:
    """One-hot leading-one vector ``h`` (``h[t] = 1`` iff the highest set bit is ``t``) and ``xs != 0``."""
    h: Word = [ZERO] * len(xs)
    above = ZERO
    for t in reversed(range(len(xs))):
        h[t] = c.AND(xs[t], c.NOT(above))
        above = c.OR(above, xs[t])
    return h, above


def encode_onehot(c: Circuit, h: Sequence[Signal]) -> Word:
    """Binary index of a one-hot vector (0 when all bits are 0)."""
    nb = max(1, (len(h) - 1).bit_length())
    return [c.or_all(h[t] for t in range(len(h)) if (t >> b) & 1) for b in range(nb)]


def shift_left(c: Circuit, xs: Sequence[Signal], amount: Sequence[Signal], width: int) -> Word:
    """``(xs << amount) mod 2**width``: mux-based logarithmic barrel shifter (``amount`` binary)."""
    cur = extend(xs, width, False)
    for b, s in enumerate(amount):
        d = 1 << b
        cur = [c.MUX(s, cur[i], cur[i - d] if i >= d else ZERO) for i in range(width)]
    return cur


def shift_right(c: Circuit, xs: Sequence[Signal], amount: Sequence[Signal], signed: bool = False) -> Word:
    """``xs >> amount`` (logical, or arithmetic with ``signed``): mux-based barrel shifter."""
    cur = list(xs)
    n = len(cur)
    fill = cur[-1] if signed else ZERO
    for b, s in enumerate(amount):
        d = 1 << b
        cur = [c.MUX(s, cur[i], cur[i + d] if i + d < n else fill) for i in range(n)]
    return cur


def shift_left_onehot(c: Circuit, xs: Sequence[Signal], sel: Sequence[Signal], width: int) -> Word:
    """``xs << v`` where ``sel[v]`` is a one-hot shift amount (AND-OR selection)."""
    return [c.or_all(c.AND(sel[v], xs[i - v]) for v in range(len(sel)) if 0 <= i - v < len(xs)) for i in range(width)]


def shift_right_onehot(c: Circuit, xs: Sequence[Signal], sel: Sequence[Signal], width: int) -> Word:
    """Low ``width`` bits of ``xs >> v`` where ``sel[v]`` is a one-hot shift amount."""
    return [c.or_all(c.AND(sel[v], xs[i + v]) for v in range(len(sel)) if i + v < len(xs)) for i in range(width)]


def sign_magnitude(
    c: Circuit,
    a: Sequence[Signal],
    w: Sequence[Signal],
    core: Callable[[Circuit, Word, Word], Word],
    width: int,
) -> Word:
    """Signed product via an unsigned ``core``: ``sign(a) sign(w) core(|a|, |w|)`` modulo ``2**width``.

    Magnitudes keep the operand widths (``-2**(n-1)`` becomes ``2**(n-1)``); ``core`` must return the
    unsigned product in ``width`` bits.
    """
    ma, sa = abs_value(c, a)
    mw, sw = abs_value(c, w)
    p = extend(core(c, ma, mw), width, False)
    return cond_negate(c, p, c.XOR(sa, sw))

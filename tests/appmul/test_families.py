"""Generated AppMul families: circuit LUTs against independent behavioural models, Verilog checks."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from fames.appmul import arith
from fames.appmul.circuit import ONE, ZERO, Circuit
from fames.appmul.families import FAMILIES, build, build_family
from fames.errors import AppMulError

WIDTHS = [(2, 2), (3, 5), (4, 4), (8, 4), (4, 8), (8, 8)]


# ====================================================================== behavioural models (numpy, integers)
def _operands(a_bits: int, w_bits: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Operand values on the LUT grid: A[i, j] = value of index i, W[i, j] = value of index j."""

    def vals(n: int) -> np.ndarray:
        v = np.arange(2**n, dtype=np.int64)
        return np.where(v >= 2 ** (n - 1), v - 2**n, v) if signed else v

    return np.meshgrid(vals(a_bits), vals(w_bits), indexing="ij")


def _bit(x: np.ndarray, i: int) -> np.ndarray:
    """Bit i of the two's-complement pattern of x (python/numpy >> is arithmetic)."""
    return (x >> i) & 1 if i >= 0 else np.zeros_like(x)


def _bitlen(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for t in range(20):
        out = np.where(x >= 2**t, t + 1, out)
    return out


def _signmag(A, W, signed, f):
    """Apply an unsigned model f to magnitudes and restore the sign."""
    if not signed:
        return f(A, W)
    return np.sign(A) * np.sign(W) * f(np.abs(A), np.abs(W))


def m_exact(ab, wb, signed, A, W):
    return A * W


def _dropped_model(ab, wb, signed, A, W, keep, comp):
    """Exact product minus the dropped matrix bits (signed: mixed-sign bits are NAND, constant kept)."""
    y = A * W
    bias4 = 0
    for i in range(ab):
        for j in range(wb):
            if keep(i, j):
                continue
            nand = signed and ((i == ab - 1) != (j == wb - 1))
            bit = _bit(A, i) * _bit(W, j)
            y = y - ((1 - bit) if nand else bit) * 2 ** (i + j)
            bias4 += (3 if nand else 1) * 2 ** (i + j)
    if comp:
        y = y + int(np.floor(bias4 / 4 + 0.5))
    return y


def m_trunc(ab, wb, signed, A, W, k, comp=False):
    return _dropped_model(ab, wb, signed, A, W, lambda i, j: i + j >= k, comp)


def m_bam(ab, wb, signed, A, W, vbl, hbl):
    return _dropped_model(ab, wb, signed, A, W, lambda i, j: i + j >= vbl and j >= hbl, False)


def m_perf(ab, wb, signed, A, W, p, s=0):
    mask = sum(2**j for j in range(s, s + p))
    pat = (W % 2**wb) & ~mask
    Wp = np.where(pat >= 2 ** (wb - 1), pat - 2**wb, pat) if signed else pat
    return A * Wp


def booth_value(W, w_bits, signed, P):
    m = w_bits + (0 if signed else 1)
    m += m % 2
    pat = W % 2**m  # zero- or sign-extended to m bits
    D = np.zeros_like(W)
    for j in range(P, m // 2):
        D = D + (-2 * _bit(pat, 2 * j + 1) + _bit(pat, 2 * j) + _bit(pat, 2 * j - 1)) * 4**j
    return D


def m_roup(ab, wb, signed, A, W, P, R):
    ar = A if R == 0 else np.floor_divide(A + 2 ** (R - 1), 2**R) * 2**R
    y = ar * booth_value(W, wb, signed, P)
    return y if signed else np.minimum(y, 2 ** (ab + wb) - 1)


def m_drum(ab, wb, signed, A, W, k):
    def approx(x):
        v = np.maximum(_bitlen(x) - k, 0)
        return np.where(v > 0, ((x >> v) | 1) << v, x)

    return _signmag(A, W, signed, lambda a, w: approx(a) * approx(w))


def m_mitchell(ab, wb, signed, A, W, t=None):
    F = max(ab, wb) - 1
    t = F if t is None else min(t, F)

    def f(a, w):
        ca, cw = _bitlen(a) - 1, _bitlen(w) - 1
        fa = ((a - 2 ** np.maximum(ca, 0)) << np.maximum(F - ca, 0)) >> (F - t) << (F - t)
        fw = ((w - 2 ** np.maximum(cw, 0)) << np.maximum(F - cw, 0)) >> (F - t) << (F - t)
        S = fa + fw
        M = np.where(S < 2**F, 2**F + S, 2 * S)
        y = (M << np.maximum(ca + cw, 0)) >> F
        return np.where((a == 0) | (w == 0), 0, y)

    return _signmag(A, W, signed, f)


def m_kulkarni(ab, wb, signed, A, W, levels):
    def f(a, w):
        y = np.zeros_like(a)
        for i in range((ab + 1) // 2):
            for j in range((wb + 1) // 2):
                da, dw = (a >> 2 * i) & 3, (w >> 2 * j) & 3
                blk = np.where((i + j < levels) & (da == 3) & (dw == 3), 7, da * dw)
                y = y + blk * 4 ** (i + j)
        return y

    return _signmag(A, W, signed, f)


def m_orc(ab, wb, signed, A, W, k):
    def f(a, w):
        y = np.zeros_like(a)
        for col in range(ab + wb):
            bits = [_bit(a, i) * _bit(w, col - i) for i in range(ab) if 0 <= col - i < wb]
            if not bits:
                continue
            y = y + (np.maximum.reduce(bits) if col < k else sum(bits)) * 2**col  # OR of 0/1 bits = max
        return y

    return _signmag(A, W, signed, f)


MODELS = {
    "exact": m_exact,
    "trunc": m_trunc,
    "bam": m_bam,
    "perf": m_perf,
    "roup": m_roup,
    "drum": m_drum,
    "mitchell": m_mitchell,
    "kulkarni": m_kulkarni,
    "orc": m_orc,
}


def _extra(family: str, ab: int, wb: int, signed: bool) -> list[dict]:
    """Parameter sets beyond the default grid (edge cases), valid for these widths."""
    n = ab + wb
    ex = {
        "exact": [],
        "trunc": [{"k": 0}, {"k": 1, "comp": True}, {"k": n - 1, "comp": True}, {"k": n}],
        "bam": [{"vbl": 0, "hbl": 0}, {"vbl": 2, "hbl": wb - 1}, {"vbl": n - 1, "hbl": 1}],
        "perf": [{"p": 0}, {"p": 1, "s": wb - 1}, {"p": wb - 1, "s": 1}, {"p": wb}],
        "roup": [{"P": 0, "R": 0}, {"P": 1, "R": 1}, {"P": 0, "R": ab - 1}, {"P": 1, "R": 3 if ab > 3 else 1}],
        "drum": [{"k": 3}, {"k": 8}],
        "mitchell": [{"t": 0}, {"t": 1}, {}],
        "kulkarni": [{"levels": 0}, {"levels": 1}, {"levels": 64}],
        "orc": [{"k": 0}, {"k": 1}, {"k": n - 1}],
    }[family]
    return ex


# ====================================================================== tests: models are sound
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("ab, wb", [(3, 5), (4, 4), (5, 2)])
def test_models_reduce_to_exact(ab, wb, signed):
    A, W = _operands(ab, wb, signed)
    ex = A * W
    assert np.array_equal(booth_value(W, wb, signed, 0), W)
    for fam, params in [
        ("trunc", {"k": 0}),
        ("bam", {"vbl": 0, "hbl": 0}),
        ("perf", {"p": 0}),
        ("roup", {"P": 0, "R": 0}),
        ("drum", {"k": 8}),
        ("kulkarni", {"levels": 0}),
        ("orc", {"k": 1}),
    ]:
        assert np.array_equal(MODELS[fam](ab, wb, signed, A, W, **params), ex), fam
    # Mitchell is exact when one operand is a power of two; never above the exact magnitude
    mit = m_mitchell(ab, wb, signed, A, W)
    pow2 = (np.abs(A) & (np.abs(A) - 1)) == 0
    assert np.array_equal(mit[pow2], ex[pow2])
    assert (np.abs(mit) <= np.abs(ex)).all()


# ====================================================================== tests: circuits against models
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("signed", [False, True], ids=["u", "s"])
@pytest.mark.parametrize("ab, wb", WIDTHS)
def test_family_matches_behavioural_model(family, ab, wb, signed):
    A, W = _operands(ab, wb, signed)
    fam = FAMILIES[family]
    params_list = fam.grid(ab, wb, signed) + _extra(family, ab, wb, signed)
    assert fam.grid(ab, wb, signed) or max(ab, wb) < 4, f"{family} has an empty grid for {ab}x{wb}"
    for params in params_list:
        m = build(family, ab, wb, signed, signed, **params)
        expected = MODELS[family](ab, wb, signed, A, W, **params)
        bad = np.argwhere(m.lut != expected)
        assert bad.size == 0, (
            f"{m.name} {params}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
            f"lut={m.lut[tuple(bad[0])]} model={expected[tuple(bad[0])]}"
        )
        assert m.widths == (ab, wb, signed, signed)


@pytest.mark.parametrize("signed", [False, True], ids=["u", "s"])
def test_every_width_pair_matches_models(signed):
    """All 49 width pairs 2..8: every design of the "all" grid equals its behavioural model."""
    for ab in range(2, 9):
        for wb in range(2, 9):
            A, W = _operands(ab, wb, signed)
            for m in build_family("all", ab, wb, signed):
                fam, params = m.provenance["family"], m.provenance["params"]
                assert np.array_equal(m.lut, MODELS[fam](ab, wb, signed, A, W, **params)), m.name


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("ab, wb", WIDTHS + [(7, 3), (5, 6)])
def test_exact_family_is_exact(ab, wb, signed):
    (m,) = build_family("exact", ab, wb, signed)
    assert m.is_exact() and m.name == f"exact_{ab}x{wb}{'s' if signed else 'u'}"


def test_approximations_are_approximate_and_ordered():
    """Sanity on error sizes: more aggressive parameters give larger mean error (8x8 unsigned)."""

    def mae(fam, **p):
        return np.abs(build(fam, 8, 8, False, False, **p).error()).mean()

    assert 0 < mae("trunc", k=4) < mae("trunc", k=6) < mae("trunc", k=8)
    assert mae("trunc", k=6, comp=True) < mae("trunc", k=6)
    assert 0 < mae("drum", k=6) < mae("drum", k=4) < mae("drum", k=3)
    assert 0 < mae("mitchell", t=7) < mae("mitchell", t=2)
    assert 0 < mae("kulkarni", levels=2) < mae("kulkarni", levels=7)
    assert build("kulkarni", 8, 8, False, False, levels="all").name == "kulkarni_l7_8x8u"
    # Kulkarni fully approximate 8x8: mean error is exactly 2/16 * (sum 4^i)^2 = 903.125
    assert mae("kulkarni", levels=7) == pytest.approx(2 / 16 * 85**2)
    assert mae("roup", P=0, R=2) < mae("roup", P=0, R=4)


# ====================================================================== tests: the whole grid
@pytest.mark.parametrize("signed", [False, True], ids=["u", "s"])
@pytest.mark.parametrize("ab, wb", [(2, 2), (3, 3), (4, 4), (8, 4), (4, 8), (8, 8)])
def test_build_family_all(ab, wb, signed):
    t0 = time.perf_counter()
    ms = build_family("all", ab, wb, signed)
    assert time.perf_counter() - t0 < 10
    names = [m.name for m in ms]
    assert len(set(names)) == len(names)
    assert names[0].startswith("exact_") and ms[0].is_exact()
    assert sum(m.is_exact() for m in ms) == 1
    assert len({m.lut.tobytes() for m in ms}) == len(ms)  # duplicates dropped
    fams = {m.provenance["family"] for m in ms}
    assert fams == set(FAMILIES) if ab + wb >= 8 else {"exact", "trunc"} <= fams
    if (ab, wb) == (8, 8):
        assert 35 <= len(ms) <= 60
    for m in ms:
        m.validate()
        assert m.structural and m.top == re.sub(r"[^A-Za-z0-9_]", "_", m.name)
        assert m.provenance["generator"] == "fames" and m.provenance["definition"]
        assert set(m.provenance["params"]) == set(FAMILIES[m.provenance["family"]].params)
        ports = f"(input [{ab - 1}:0] a, input [{wb - 1}:0] w, output [{ab + wb - 1}:0] y);"
        assert f"module {m.top}{ports}" in m.verilog


def test_build_is_deterministic():
    a = build("mitchell", 6, 5, True, True, t=3)
    b = build("mitchell", 6, 5, True, True, t=3)
    assert a.verilog == b.verilog and np.array_equal(a.lut, b.lut) and a.provenance == b.provenance


def test_build_family_single_drops_exact_duplicates():
    ms = build_family("trunc", 2, 2, False)
    assert ms and not any(m.is_exact() for m in ms)
    assert [m.provenance["family"] for m in ms] == ["trunc"] * len(ms)


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda: build("trunc", 8, 8, True, False, k=4), "same signedness"),
        (lambda: build("nope", 8, 8, False, False), "unknown AppMul family"),
        (lambda: build("trunc", 8, 8, False, False, k=4, bogus=1), "does not take"),
        (lambda: build("trunc", 8, 8, False, False), "needs parameter"),
        (lambda: build("trunc", 9, 8, False, False, k=4), "2..8"),
        (lambda: build("roup", 8, 8, False, False, P=1, R=8), "R=8"),
        (lambda: build("drum", 8, 8, False, False, k=2), "k=2"),
        (lambda: build("trunc", 8, 8, False, False, k=4, comp="yes"), "comp"),
        (lambda: build_family("nope", 4, 4, False), "known families"),
    ],
)
def test_bad_requests_raise_clear_errors(call, msg):
    with pytest.raises(AppMulError, match=msg):
        call()


# ====================================================================== tests: Verilog
_ASSIGN = re.compile(r"^\s*assign (\w+) = (.+);$")


def _eval_verilog(text: str, ab: int, wb: int, signed: bool) -> np.ndarray:
    """Evaluate our structural Verilog subset (single-bit ~ & | ^ ?:) on all input pairs."""
    idx = np.arange(2 ** (ab + wb), dtype=np.int64)
    env = {f"a[{i}]": ((idx >> (wb + i)) & 1).astype(bool) for i in range(ab)}
    env |= {f"w[{i}]": ((idx >> i) & 1).astype(bool) for i in range(wb)}
    env["1'b0"], env["1'b1"] = np.zeros(idx.size, bool), np.ones(idx.size, bool)
    y = None
    for line in text.splitlines():
        mt = _ASSIGN.match(line)
        if not mt:
            continue
        lhs, rhs = mt.groups()
        if lhs == "y":
            bits = [env[b.strip()] for b in rhs.strip("{}").split(",")]
            y = sum(b.astype(np.int64) << k for k, b in enumerate(reversed(bits)))
            continue
        tok = rhs.split()
        if len(tok) == 1:
            assert tok[0].startswith("~")
            env[lhs] = ~env[tok[0][1:]]
        elif len(tok) == 3:
            x, op, z = env[tok[0]], tok[1], env[tok[2]]
            env[lhs] = {"&": x & z, "|": x | z, "^": x ^ z}[op]
        else:
            assert tok[1] == "?" and tok[3] == ":"
            env[lhs] = np.where(env[tok[0]], env[tok[2]], env[tok[4]])
    assert y is not None
    n = ab + wb
    if signed:
        y = np.where(y >= 2 ** (n - 1), y - 2**n, y)
    return y.reshape(2**ab, 2**wb)


@pytest.mark.parametrize("ab, wb, signed", [(3, 5, True), (4, 4, False), (4, 3, True)])
def test_verilog_text_computes_the_lut(ab, wb, signed):
    for m in build_family("all", ab, wb, signed):
        assert np.array_equal(_eval_verilog(m.verilog, ab, wb, signed), m.lut), m.name


_YOSYS_SCRIPT = """
import sys
from pyosys import libyosys as ys
d = ys.Design()
ys.run_pass("tee -q read_verilog -sv " + sys.argv[1], d)
ys.run_pass("tee -q -o " + sys.argv[2] + " ls", d)
"""


def test_verilog_parses_in_yosys(tmp_path):
    pytest.importorskip("pyosys")
    ms = build_family("all", 8, 8, True) + build_family("all", 3, 5, False) + build_family("all", 2, 2, True)
    src, listing = tmp_path / "all.v", tmp_path / "ls.txt"
    src.write_text("".join(m.verilog for m in ms))
    # yosys exits the process on a syntax error: run it in a child process
    r = subprocess.run(
        [sys.executable, "-c", _YOSYS_SCRIPT, str(src), str(listing)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = listing.read_text()
    assert f"{len(ms)} modules:" in text
    assert all(m.top in text for m in ms)


# ====================================================================== tests: circuit builder and helpers
def test_circuit_folding_and_hashing():
    c = Circuit(2, 2)
    a0, a1, w0 = c.a[0], c.a[1], c.w[0]
    assert c.AND(a0, w0) == c.AND(w0, a0)
    assert c.NOT(c.NOT(a0)) == a0
    assert c.XOR(a0, a0) == ZERO and c.XOR(a0, c.NOT(a0)) == ONE and c.XOR(a0, ONE) == c.NOT(a0)
    assert c.AND(a0, c.NOT(a0)) == ZERO and c.OR(a0, c.NOT(a0)) == ONE
    assert c.AND(a0, ONE) == a0 and c.OR(a0, ZERO) == a0 and c.AND(a1, ZERO) == ZERO
    assert c.MUX(ONE, a0, a1) == a1 and c.MUX(w0, a0, a0) == a0 and c.MUX(w0, ZERO, ONE) == w0
    c.set_output([c.MUX(w0, a0, c.NOT(a0)), c.MUX(a1, c.NOT(w0), a0), c.MUX(a1, ONE, a0), c.MUX(a1, a0, ZERO)])
    A, W = _operands(2, 2, False)
    a0v, a1v, w0v = A & 1, A >> 1, W & 1
    expected = (a0v ^ w0v) + 2 * np.where(a1v, a0v, 1 - w0v) + 4 * np.where(a1v, a0v, 1) + 8 * (a0v & (1 - a1v))
    assert np.array_equal(c.simulate(), expected)
    before = len(c._nodes)
    assert c.MUX(w0, a0, a1) == c.MUX(w0, a0, a1) and len(c._nodes) == before + 1


def _random_circuit(seed: int) -> tuple[Circuit, list]:
    rng = random.Random(seed)
    c = Circuit(3, 2)
    sig = [ZERO, ONE, *c.a, *c.w]
    ops = ["NOT", "AND", "OR", "XOR", "NAND", "NOR", "XNOR", "MUX"]
    recipe = []
    for _ in range(60):
        op = rng.choice(ops)
        args = [rng.randrange(len(sig)) for _ in range(1 if op == "NOT" else 3 if op == "MUX" else 2)]
        recipe.append((op, args))
        sig.append(getattr(c, op)(*(sig[i] for i in args)))
    outs = [rng.randrange(len(sig)) for _ in range(5)]
    c.set_output([sig[i] for i in outs])
    return c, [recipe, outs]


@pytest.mark.parametrize("seed", range(5))
def test_circuit_simulation_matches_python_evaluation(seed):
    c, (recipe, outs) = _random_circuit(seed)
    fns = {
        "NOT": lambda x: 1 - x,
        "AND": lambda x, y: x & y,
        "OR": lambda x, y: x | y,
        "XOR": lambda x, y: x ^ y,
        "NAND": lambda x, y: 1 - (x & y),
        "NOR": lambda x, y: 1 - (x | y),
        "XNOR": lambda x, y: 1 - (x ^ y),
        "MUX": lambda s, d0, d1: d1 if s else d0,
    }
    lut = c.simulate()
    for i in range(8):
        for j in range(4):
            vals = [0, 1] + [(i >> b) & 1 for b in range(3)] + [(j >> b) & 1 for b in range(2)]
            for op, args in recipe:
                vals.append(fns[op](*(vals[k] for k in args)))
            assert lut[i, j] == sum(vals[o] << k for k, o in enumerate(outs))
    assert np.array_equal(_eval_verilog(c.to_verilog("r"), 3, 2, False), lut)


def test_output_extension_and_modulo():
    c = Circuit(2, 2)
    c.set_output([c.a[0], c.a[1]], signed=True)  # sign-extend a (2 bits) to 4 bits
    assert np.array_equal(c.simulate(signed=True)[:, 0], [0, 1, -2, -1])
    c.set_output([c.a[0], c.a[1]], signed=False)
    assert np.array_equal(c.simulate()[:, 0], [0, 1, 2, 3])
    c.set_output([ONE] * 6)  # extra bits dropped: modulo 2**4
    assert (c.simulate() == 15).all()


def test_arith_helpers():
    c = Circuit(4, 3)
    A, W = _operands(4, 3, False)
    cases = {
        "lt": ([arith.less_than(c, c.a, c.w)], (A < W).astype(int)),
        "eq5": ([arith.equal_const(c, c.a, 5)], (A == 5).astype(int)),
        "shr": (arith.shift_right(c, c.a, c.w[:2]), A >> (W & 3)),
        "sar": (arith.shift_right(c, c.a, c.w[:2], signed=True), ((A ^ 8) - 8) >> (W & 3) & 15),
        "shl": (arith.shift_left(c, c.a, c.w[:2], 7), (A << (W & 3)) & 127),
        "neg": (arith.negate(c, c.a), (-A) & 15),
        "enc": (arith.encode_onehot(c, arith.leading_one(c, c.a)[0]), np.maximum(_bitlen(A) - 1, 0)),
    }
    for name, (bits, expected) in cases.items():
        c.set_output(bits)
        assert np.array_equal(c.simulate(), expected), name


# ====================================================================== tests: final adders
_ADDERS = [(net, split) for net in arith.PREFIX_NETWORKS for split in (0, 1, 3)] + [("fast", 0)]


def _adder(c: Circuit, xs, ys, width: int, cin, net: str, split: int):
    if net == "fast":
        return arith.fast_add(c, xs, ys, width, cin)
    return arith.prefix_add(c, xs, ys, width, cin, network=net, split=split)


@pytest.mark.parametrize("nx,ny,width", [(1, 1, 2), (2, 3, 4), (4, 4, 5), (5, 3, 4), (3, 3, 6), (6, 1, 7)])
def test_prefix_adders_exhaustive(nx, ny, width):
    """Every network and split, with and without carry-in (the top bit of ``a``), on every input pair."""
    c = Circuit(nx + 1, ny)
    A, W = _operands(nx + 1, ny, False)
    x, cin = A & ((1 << nx) - 1), A >> nx
    for net, split in _ADDERS:
        for with_cin in (False, True):
            c.set_output(_adder(c, c.a[:nx], c.w, width, c.a[nx] if with_cin else ZERO, net, split))
            expected = (x + W + (cin if with_cin else 0)) & ((1 << width) - 1)
            assert np.array_equal(c.simulate(), expected), (net, split, with_cin)


def test_prefix_adders_random_16_bits():
    rng = np.random.default_rng(1)
    c = Circuit(17, 16)
    a = rng.integers(0, 1 << 17, 3000)
    w = rng.integers(0, 1 << 16, 3000)
    a[:4], w[:4] = [0, (1 << 17) - 1, (1 << 16) - 1, 1 << 16], [0, (1 << 16) - 1, 1, (1 << 16) - 1]
    x, cin = a & 0xFFFF, a >> 16
    for net, split in _ADDERS + [("sklansky", 9), ("brent_kung", 16)]:
        c.set_output(_adder(c, c.a[:16], c.w, 17, c.a[16], net, split))
        assert np.array_equal(c.evaluate(a, w), x + w + cin), (net, split)
    with pytest.raises(AppMulError, match="unknown prefix network"):
        arith.prefix_add(c, c.a, c.w, 8, network="carry_skip")


def test_prefix_adders_are_logarithmic():
    c = Circuit(16, 16)

    def depth(net):
        return max(c.arrival(s) for s in arith.prefix_add(c, c.a, c.w, 16, network=net))

    ripple = max(c.arrival(s) for s in arith.ripple_add(c, c.a, c.w, 16))
    assert depth("ripple") == ripple > 2 * depth("sklansky")
    assert depth("kogge_stone") == depth("sklansky") < depth("brent_kung") < ripple
    fast = max(c.arrival(s) for s in arith.fast_add(c, c.a, c.w, 16))
    assert fast <= depth("sklansky") + 1.0
    # a late carry-in: the fast adder stays within its slack of the best prefix adder
    late = c.XOR(c.XOR(c.XOR(c.a[0], c.w[1]), c.XOR(c.a[2], c.w[3])), c.a[5])
    best = min(max(c.arrival(s) for s in arith.prefix_add(c, c.a, c.w, 16, late, network=net, split=k))
               for net in arith.PREFIX_NETWORKS for k in range(17))
    assert max(c.arrival(s) for s in arith.fast_add(c, c.a, c.w, 16, late)) <= best + 1.0


@pytest.mark.parametrize("adder", ["fast", "ripple", *arith.PREFIX_NETWORKS])
@pytest.mark.parametrize("ab,wb,signed", [(5, 4, False), (4, 5, True), (3, 3, True)])
def test_bit_matrix_final_adders_exact(adder, ab, wb, signed):
    c = Circuit(ab, wb)
    mat = arith.BitMatrix(c, c.out_bits)
    arith.array_pp(c, mat, c.a, c.w, signed)
    c.set_output(mat.reduce(adder=adder), signed=signed)
    A, W = _operands(ab, wb, signed)
    assert np.array_equal(c.simulate(signed), A * W)


def test_full_roup_grid_holds_every_parameter_set_and_the_default_grid():
    full = build_family("roup:full", 8, 8, True)
    default = build_family("roup", 8, 8, True)
    # radix-4 Booth of a signed 8-bit weight: 4 digits (P = 0..3); rounding bit R = 0..6; (0, 0) is exact
    assert len(full) == 4 * 7 - 1
    assert {m.name for m in default} < {m.name for m in full}
    by_name = {m.name: m for m in full}
    assert np.array_equal(by_name["roup_p3r6_8x8s"].lut, build("roup", 8, 8, True, True, P=3, R=6).lut)
    with pytest.raises(AppMulError, match="has no full grid; families with one: roup"):
        build_family("trunc:full", 8, 8, True)
    with pytest.raises(AppMulError, match="only grid suffix is ':full'"):
        build_family("roup:fine", 8, 8, True)

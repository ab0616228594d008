"""Integer execution of an AppMul layer: uint8 activation planes x int8 weights, int32 sums (oneDNN).

Any integer table ``T[x, w]`` over ``a_bits <= 8`` activation bits is a sum of products of the activation index's
bits (its Moebius transform: ``T[x, w] = sum_S c_S(w) prod_{i in S} bit_i(x)``, ``S`` a subset of the bits). Each
monomial with a non-zero coefficient vector becomes one *plane* (a function of the index with values 0..255: the
AND of its bits, times a common factor of its coefficients up to 255), and its coefficients become int8 weights.
With the index plane (the activation value, offset to 0..255) as one more plane, the exact product costs one term;
the columns of an integer factorization of the table are planes too. Coefficients beyond int8 are split into
digits: the high digit's factor on the plane, else base-256 digits carried by oneDNN's per-channel weight scale.

At run time one ``index_select`` of a packed table (8 planes per int64 word) gives up to 8 planes side by side,
which is the input of oneDNN's quantized convolution (``qconv2d_pointwise``: uint8 x int8 products summed in int32,
float32 output) as it is; the blocks of planes accumulate through its sum post-op. On a CPU with AVX512-VNNI a
plane costs 0.24-0.34 of the float32 convolution of the layer (measured at ResNet-20 shapes).

The empty monomial (a weight-only term) is returned as ``const`` for the caller's bias and border correction; an
unsigned 8-bit weight ``w`` enters the index plane as ``w - 128``, plus 128 times the index plane summed over the
taps (a sum pool of the codes). Exact: integer arithmetic throughout; the float32 result is exact while every
partial sum (of a block, and over the blocks in order) stays below ``2**24`` (the float32 contract of
:mod:`fames.emulate.kernels`); :func:`int8_available` checks once per process that the CPU's int8 kernels are exact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from math import gcd

import numpy as np
import torch
import torch.nn.functional as F

from fames.emulate.memo import KeyedCache

__all__ = ["Int8Plan", "int8_available", "int8_conv", "lower", "window_sums"]

KEEP_PLANE = -1  # a plane that is not a monomial (the index plane, a factor column): never dropped
INT8_CHUNK_BYTES = 1 << 26  # planes of one chunk (scratch buffers are reused, so chunks can be large)
# time of the int8 path in multiples of the float32 exact convolution: INT8_FIXED_COST + INT8_PLANE_COST per plane
# (measured on ResNet-20 layers, 200 images, one thread: 1.0-1.4 at 2 planes, 1.9-2.6 at 5, 3.7-4.9 at 12)
INT8_FIXED_COST = 0.6
INT8_PLANE_COST = 0.3


@dataclass(frozen=True)
class Int8Plan:
    """``T[x, w] == sum_t U[x, t] * V[w, t] + const[w] + row * U[x, 0]`` on the used weight keys.

    ``U``: ``(2**a_bits, T)`` uint8 plane values per activation index; ``masks[t]``: the monomial (bit mask) of
    term ``t``, ``KEEP_PLANE`` for other planes (the index plane: the activation value plus ``2**(a_bits - 1)``
    if signed; a factor column); ``V``: ``(n_keys, T)`` int8; ``scales[t]``: the factor term ``t``'s products
    are multiplied by (a power of 256: a digit of a weight too large for int8, applied as oneDNN's per-channel
    weight scale); ``const``: ``(n_keys,)`` int64 or None; ``row``: the multiplier of the row term (plane 0, the
    index plane, summed over the taps), 0 for none; ``offset``: the index plane's offset (``2**(a_bits - 1)`` for
    signed activations, else 0).
    """

    masks: tuple[int, ...]
    U: np.ndarray
    V: np.ndarray
    scales: tuple[int, ...]
    const: np.ndarray | None
    row: int
    offset: int = 0
    _packed: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def terms(self) -> int:
        return len(self.masks)

    def _groups(self, keep: tuple[int, ...]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for t in keep:
            groups.setdefault(self.scales[t], []).append(t)
        return groups

    def kept(self, top: int) -> tuple[int, ...]:
        """The terms whose planes can be non-zero for table indices below ``top`` (a power of two): those a batch
        whose largest index is below it needs (the others are left out, exactly)."""
        return tuple(t for t, mask in enumerate(self.masks) if mask < top) or (0,) * bool(self.terms)

    def partial_rows(self, keep: tuple[int, ...]) -> np.ndarray:
        """Per activation index, the largest ``|value|`` the path forms from one product with the terms ``keep``,
        ``(2**a_bits,)`` float64: each block's own int32 sum (oneDNN turns it into float32 before scaling it) and the
        running total after each block (the constant joins the last), over the weights; float32 holds a sum of such
        values exactly below ``2**24``."""
        key = ("rows", keep)
        if key not in self._packed:
            acc = np.zeros((self.U.shape[0], self.V.shape[0]), np.int64)
            rows = np.zeros(self.U.shape[0], np.int64)
            for scale, ts in sorted(self._groups(keep).items(), reverse=True):  # the order of :meth:`packed`
                off = 0
                for w in _blocks(len(ts)):
                    part = ts[off : off + w]
                    block = self.U[:, part].astype(np.int64) @ self.V[:, part].astype(np.int64).T
                    acc += scale * block
                    rows = np.maximum(rows, np.maximum(np.abs(block).max(1), np.abs(acc).max(1)))
                    off += w
            if self.const is not None:
                rows = np.maximum(rows, np.abs(acc + self.const[None, :]).max(1))
            self._packed[key] = rows.astype(np.float64)
        return self._packed[key]

    def rounds(self, fan_in: int) -> bool:
        """Whether the float32 sums of the blocks over ``fan_in`` products may round to another integer for some
        input: a block or a running total can pass ``2**24`` although the layer's final sums stay below it
        (mul8u_1A0M, fan-in 279: 512 of 65,536 outputs 1 too low); the kernels then check the batch at hand."""
        return float(self.partial_rows(tuple(range(self.terms))).max()) * fan_in >= 1 << 24

    def cost(self) -> float:
        """Estimated time in multiples of the float32 exact convolution."""
        planes = sum(sum(_blocks(len(ts))) for ts in self._groups(tuple(range(self.terms))).values())
        return INT8_FIXED_COST + INT8_PLANE_COST * max(planes, 1)

    def packed(self, keep: tuple[int, ...]) -> tuple[list[tuple[torch.Tensor, int, int]], torch.Tensor]:
        """Terms ``keep`` as blocks of packed planes ``[(table (2**a_bits,), bytes per entry, scale)]`` (one
        ``index_select`` yields up to 8 planes side by side; the terms of a block share their scale), and the
        weights of the blocks' planes side by side, ``(n_keys, planes)`` int32 (zero for padding planes)."""
        hit = self._packed.get(keep)
        if hit is None:
            blocks, cols = [], []
            # largest scale first: partial sums of scaled blocks are multiples of 256, exact in float32 up to 2**32
            for scale, ts in sorted(self._groups(keep).items(), reverse=True):
                off = 0
                for w in _blocks(len(ts)):
                    part = ts[off : off + w]
                    U = np.pad(self.U[:, part], ((0, 0), (0, w - len(part))))
                    cols.append(np.pad(self.V[:, part].astype(np.int32), ((0, 0), (0, w - len(part)))))
                    word = np.ascontiguousarray(U.astype(np.uint8)).view(_WORD[w]).reshape(-1)
                    blocks.append((torch.from_numpy(word.copy()), w, scale))
                    off += w
            hit = self._packed[keep] = (blocks, torch.as_tensor(np.concatenate(cols, axis=1)))
        return hit


_WORD = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def _blocks(n: int) -> list[int]:
    """Bytes per packed table entry for ``n`` planes: 8-plane words, then at most two blocks for the rest (a padded
    plane costs one stacked term of convolution, an extra block a convolution call: 3 -> [4], 7 -> [8])."""
    rest = [[], [1], [2], [4], [4], [4, 1], [4, 2], [8]][n % 8]
    return [8] * (n // 8) + rest or [1]


def _moebius(T: np.ndarray, bits: int) -> np.ndarray:
    """Coefficients ``C[S]`` with ``T[x] == sum_{S subset of x} C[S]`` (rows: subsets of the index bits)."""
    C = T.astype(np.int64).copy()
    idx = np.arange(1 << bits)
    for i in range(bits):
        hi = idx[(idx >> i) & 1 == 1]
        C[hi] -= C[hi ^ (1 << i)]
    return C


def _digits(c: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Balanced base-256 digits of an integer vector: ``c == sum_j e_j * 256**j`` with int8 ``e_j``."""
    out, scale = [], 1
    while True:
        e = (c + 128) % 256 - 128
        out.append((e, scale))
        c = (c - e) // 256
        if not c.any():
            return out
        scale *= 256


def _split(c: np.ndarray) -> list[tuple[int, np.ndarray, int]]:
    """``c == sum_j m_j * e_j * s_j`` with plane multipliers ``m_j`` in 1..255, int8 ``e_j`` and scales ``s_j``:
    one digit if a common divisor of ``c`` up to 255 brings it into int8; else two digits of scale 1 with the high
    one's factor on the plane; else base-256 digits scaled by oneDNN's weight scale."""
    g = reduce(gcd, np.abs(c[c != 0]).tolist(), 0)
    divisors = [d for d in range(255, 0, -1) if g % d == 0]
    for a in divisors:
        if np.abs(c // a).max() <= 127:
            return [(a, c // a, 1)]
    for a in divisors:
        s = 255 // a
        if s < 2:
            continue
        hi = np.round(c // a / s).astype(np.int64)
        lo = c // a - s * hi
        if np.abs(hi).max() <= 127 and np.abs(lo).max() <= 127:
            return [(a, lo, 1), (a * s, hi, 1)]
    return [(divisors[0], e, scale) for e, scale in _digits(c // divisors[0])]


def _terms(C: np.ndarray) -> tuple[list[int], list[int], list[np.ndarray], list[int]]:
    masks, mult, cols, scales = [], [], [], []
    for S in np.flatnonzero(np.abs(C[1:]).sum(1)) + 1:
        for m, e, scale in _split(C[S]):
            masks.append(int(S))
            mult.append(m)
            cols.append(e)
            scales.append(scale)
    return masks, mult, cols, scales


def _factor_terms(Uf: np.ndarray, Vf: np.ndarray, index: np.ndarray) -> tuple[list, list, list, np.ndarray, int]:
    """Planes ``(us, vs, scales, const, row)`` of an integer factorization ``T = Uf Vf^T`` (columns: arbitrary
    functions of the index, looked up): each column offset to start at 0 (the offset times its weights joins
    ``const``), common factors moved to the side with room; then one term if it fits uint8 x int8; the index plane
    ``index`` with weights spanning 0..255 becomes the row term (weights - 128); else two weight digits with the high
    one's factor on the plane; else base-256 digits of both sides, scaled by oneDNN's weight scale."""
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    scales: list[int] = []
    const = np.zeros(Vf.shape[0], dtype=np.int64)
    row = 0
    for u, v in zip(Uf.T.astype(np.int64), Vf.T.astype(np.int64), strict=True):
        a = int(u.min())
        u = u - a
        const += a * v
        if not u.any() or not v.any():
            continue
        g = reduce(gcd, u[u != 0].tolist(), 0)
        u, v = u // g, v * g
        gv = reduce(gcd, np.abs(v[v != 0]).tolist(), 0)
        m = max((d for d in range(1, 256) if gv % d == 0 and d * int(u.max()) <= 255), default=1)
        u, v = u * m, v // m
        u_max, v_max = int(u.max()), int(np.abs(v).max())
        if u_max <= 255 and v_max <= 127:
            us.append(u)
            vs.append(v)
            scales.append(1)
        elif not row and np.array_equal(u, index) and v.min() >= 0 and v.max() <= 255:
            us.insert(0, u)
            vs.insert(0, v - 128)
            scales.insert(0, 1)
            row = 128
        elif u_max <= 127 and 127 * (255 // u_max) >= v_max:  # two weight digits, the high one's factor on the plane
            s = 255 // u_max
            hi = np.round(v / s).astype(np.int64)
            us += [u, s * u]
            vs += [v - s * hi, hi]
            scales += [1, 1]
        else:
            for i in range((u_max.bit_length() + 7) // 8):
                for e, scale in _digits(v):
                    us.append((u >> (8 * i)) & 255)
                    vs.append(e)
                    scales.append(scale << (8 * i))
    return us, vs, scales, const, row


def lower(
    table: np.ndarray,
    a_bits: int,
    a_signed: bool,
    w_values: np.ndarray,
    w_bits: int,
    used: np.ndarray | None = None,
    factors: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> Int8Plan | None:
    """The cheapest :class:`Int8Plan` of ``table (2**a_bits, n_keys)`` (integer), None for more than 8 bits.

    ``w_values``: ``(n_keys,)`` weight value of each column; ``used``: bool ``(n_keys,)``, columns that occur (the
    others are zeroed); ``factors``: integer factorizations ``(U, V)`` of the table, if known. Candidates: the
    monomials of the table; the index plane (activation value plus ``2**(a_bits - 1)`` if signed; coefficient: the
    weight value) plus the monomials of the rest; each factorization's columns as looked-up planes. The one with
    the lowest :meth:`Int8Plan.cost` wins.
    """
    if a_bits > 8 or w_bits > 8:
        return None
    T = np.asarray(table, dtype=np.int64)
    keep = np.ones(T.shape[1], dtype=bool) if used is None else np.asarray(used, dtype=bool)
    T = np.where(keep[None, :], T, 0)
    w_values = np.where(keep, w_values, 0)
    offset = 1 << (a_bits - 1) if a_signed else 0
    x0 = np.arange(1 << a_bits, dtype=np.int64)
    x = x0 ^ offset  # the index plane's value per index
    row_off = 128 if int(w_values.max(initial=0)) > 127 else 0
    cands: list[Int8Plan] = []
    for with_index in (False, True):
        v_index = w_values - row_off
        if with_index and (int(v_index.min(initial=0)) < -128 or int(v_index.max(initial=0)) > 127):
            continue
        C = _moebius(T - np.outer(x, w_values) if with_index else T, a_bits)
        masks, mult, cols, scales = _terms(C)
        us = [m * ((x0 & k) == k) for k, m in zip(masks, mult, strict=True)]
        if with_index:
            masks, us, cols, scales = [KEEP_PLANE, *masks], [x, *us], [v_index, *cols], [1, *scales]
        cands.append(_plan(masks, us, cols, scales, C[0], row_off if with_index else 0, offset, T.shape))
    for Uf, Vf in factors:
        us, vs, scales, const, row = _factor_terms(np.asarray(Uf), np.where(keep[:, None], np.asarray(Vf), 0), x)
        cands.append(_plan([KEEP_PLANE] * len(us), us, vs, scales, const, row, offset, T.shape))
    return min(cands, key=Int8Plan.cost, default=None)


def _plan(
    masks: list[int], us: list, vs: list, scales: list[int], const: np.ndarray, row: int, offset: int,
    shape: tuple[int, int],
) -> Int8Plan:
    U = np.stack(us, axis=1) if us else np.zeros((shape[0], 0), np.int64)
    V = np.stack(vs, axis=1) if vs else np.zeros((shape[1], 0), np.int64)
    assert U.min(initial=0) >= 0 and U.max(initial=0) <= 255 and np.abs(V).max(initial=0) <= 128
    const_or_none = const if np.any(const) else None
    return Int8Plan(tuple(masks), U.astype(np.uint8), V.astype(np.int8), tuple(scales), const_or_none, row, offset)


@lru_cache(maxsize=1)
def int8_available() -> bool:
    """Whether oneDNN's quantized convolution is present and exact here (u8 x s8 products at full range summed in
    int32: checked once against float64 on a worst-case probe; CPUs without VNNI may saturate int16 pairs).
    ``FAMES_INT8=0`` disables the path."""
    if os.environ.get("FAMES_INT8", "1") == "0":
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(200, 256, (2, 32, 6, 6), generator=g, dtype=torch.uint8)  # sums below 2**24
        w = torch.randint(100, 128, (8, 32, 3, 3), generator=g, dtype=torch.int8)
        w[1::2] = -128
        args = ((1, 1), (1, 1), (1, 1), 1)
        xc = x.contiguous(memory_format=torch.channels_last)
        y = _qconv(xc, _pack(w, args), 8, None, args)
        ref = F.conv2d(x.double(), w.double(), None, 1, 1)
        # weight scale and sum post-op (values kept below 2**24)
        x1, w1 = (x[:, :1] // 64).contiguous(memory_format=torch.channels_last), w[:, :1].contiguous()
        y2 = _qconv(x1, _pack(w1, args, 256), 8, None, args, torch.full_like(y, 3.0), 256)
        ref2 = 3 + 256 * F.conv2d(x1.double(), w1.double(), None, 1, 1)
        return bool(torch.equal(y.double(), ref)) and bool(torch.equal(y2.double(), ref2))
    except (RuntimeError, AttributeError):
        return False


def conv_output_hw(hw: tuple[int, int], kernel_size: tuple[int, int], conv_args: tuple) -> tuple[int, int]:
    """Output height and width of a convolution of an ``hw`` input (``conv_args``: stride, padding, dilation, ...)."""
    stride, padding, dilation = conv_args[:3]
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation, strict=True)
    )


def _pack(w: torch.Tensor, conv_args: tuple, scale: int = 1) -> torch.Tensor:
    """oneDNN's packed form of int8 weights ``(O, C / groups, kh, kw)`` (weight scale ``scale``, no zero points)."""
    stride, padding, dilation, groups = conv_args
    scales = torch.full((w.shape[0],), float(scale))
    return torch.ops.onednn.qconv_prepack(w, scales, 1.0, 0, list(stride), list(padding), list(dilation), groups, None)


def _qconv(
    x: torch.Tensor,
    packed: torch.Tensor,
    O: int,
    bias: torch.Tensor | None,
    conv_args: tuple,
    accum: torch.Tensor | None = None,
    scale: int = 1,
) -> torch.Tensor:
    """``scale * conv(x, w) + bias`` (``+ accum``, in place) for uint8 ``x (N, C, H, W)`` (channels_last) and the
    packed int8 ``w`` (:func:`_pack` with the same ``scale``), float32 output."""
    stride, padding, dilation, groups = conv_args
    scales = torch.full((O,), float(scale))
    zeros = torch.zeros(O, dtype=torch.int64)
    geometry = (list(stride), list(padding), list(dilation), groups)
    if accum is None:
        return torch.ops.onednn.qconv2d_pointwise(
            x, 1.0, 0, packed, scales, zeros, bias, *geometry, 1.0, 0, torch.float32, "none", [], ""
        )
    return torch.ops.onednn.qconv2d_pointwise.binary(
        x,
        1.0,
        0,
        packed,
        scales,
        zeros,
        accum,
        bias,
        *geometry,
        1.0,
        0,
        torch.float32,
        1.0,
        0,
        "sum",
        1.0,
        "none",
        [],
        "",
    )


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A reusable scratch tensor of ``shape`` (grown as needed, kept for the next call): a fresh large tensor costs
    its page faults on every call (measured here: ~0.6 ms per MB, as much as the convolution of a ResNet-20 layer).
    """
    n = math.prod(shape)
    buf = _SCRATCH.get((name, dtype))
    if buf is None or buf.numel() < n:
        buf = _SCRATCH[(name, dtype)] = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)


_SCRATCH: dict[tuple[str, torch.dtype], torch.Tensor] = {}
PACKED_WEIGHTS = KeyedCache(1 << 27)  # oneDNN's packed int8 weights per plan, planes kept and weight keys


def int8_conv(
    x_codes: torch.Tensor,
    index_mask: int | None,
    wkey: torch.Tensor,
    plan: Int8Plan,
    conv_args: tuple,
    max_bytes: int,
    bias: torch.Tensor | None = None,
    may_round: Callable[[tuple[int, ...], int, torch.Tensor], bool] | None = None,
    tap_sums: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """``sum_t conv(U[X, t], V[W, t]) (+ row term) + bias`` -> float32 ``(N, O, H', W')`` (channels_last), or None
    when ``may_round(terms kept, top, table indices (N, H, W, C) int32)`` says its float32 sums may round there.

    ``x_codes``: ``(N, C, H, W)`` integer-valued activation codes (float); ``index_mask``: ``2**a_bits - 1`` for
    signed codes (table index = value mod ``2**a_bits``), else None; ``wkey``: ``(O, Cg, kh, kw)`` rows of
    ``plan.V``; ``max_bytes``: bound of a chunk's planes; ``bias``: float32 ``(O,)``. The caller adds
    ``plan.const``. ``tap_sums()``: the codes' sums over each output's taps (:func:`window_sums`), where the caller
    has them, for the row term of a plan without offset. Each block of packed planes is one ``index_select`` whose
    output is the convolution's input as it is (channel-major ``(channel, plane)`` bytes, so every group keeps its
    channels together); the blocks accumulate through oneDNN's sum post-op (measured: 7% slower than one
    convolution of all planes stacked, against 80% for copying the blocks into one input). Indices and planes live
    in reused scratch buffers.
    """
    stride, padding, dilation, groups = conv_args
    O, Cg, kh, kw = wkey.shape
    N, C, H, W = x_codes.shape

    def row_sums() -> torch.Tensor:
        if tap_sums is not None and not plan.offset:
            return tap_sums()
        return window_sums(x_codes, (kh, kw), conv_args, O, offset=plan.offset)

    xi = _buffer("index", (N, H, W, C), torch.int32)
    xi.copy_(x_codes.permute(0, 2, 3, 1))  # float -> int32 table indices, NHWC
    if index_mask is not None:
        xi.bitwise_and_(index_mask)
    # planes of monomials with a bit above the batch's largest index are zero: left out (exact)
    top = 1 << int(xi.max()).bit_length() if xi.numel() else 1
    keep = plan.kept(top)  # KEEP_PLANE < 0: always kept
    if may_round is not None and may_round(keep, top, xi):
        return None
    if not keep:  # no plane: the weight-only term (bias) and the row term are all
        y = torch.zeros(N, *conv_output_hw((H, W), (kh, kw), conv_args), O).permute(0, 3, 1, 2)
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        if plan.row:
            y.add_(row_sums(), alpha=plan.row)
        return y
    tables, V = plan.packed(keep)

    def pack() -> tuple[list[torch.Tensor], int]:
        wt = F.embedding(wkey, V)  # (O, Cg, kh, kw, T) int32
        packed, off = [], 0
        for _, w, scale in tables:  # weights in the layout of the block's input: per group, (channel, plane)
            wb = wt[..., off : off + w].permute(0, 1, 4, 2, 3).reshape(O, Cg * w, kh, kw)
            packed.append(_pack(wb.to(torch.int8).contiguous(memory_format=torch.channels_last), conv_args, scale))
            off += w
        return packed, wt.numel()  # about their bytes as int8

    # packing the weights is most of a small batch's time (batch 1: 0.27 of 0.70 s over a ResNet-20 forward)
    packed = PACKED_WEIGHTS.get(plan, wkey, (keep, conv_args), pack)
    step = max(1, min(N, max_bytes // max(1, H * W * C * max(w for _, w, _ in tables))))
    outs = []
    for s in range(0, N, step):
        e = min(N, s + step)
        flat = xi[s:e].reshape(-1)
        y = None
        for b, ((tab, w, scale), packed_w) in enumerate(zip(tables, packed, strict=True)):
            planes = _buffer("planes", (flat.numel(),), tab.dtype)
            torch.index_select(tab, 0, flat, out=planes)
            xb = planes.view(torch.uint8).view(e - s, H, W, C * w).permute(0, 3, 1, 2)
            last = b == len(tables) - 1  # the bias joins the smallest scale's block
            y = _qconv(xb, packed_w, O, bias if last else None, conv_args, y, scale)
        outs.append(y)
    y = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    if plan.row:  # row * (plane 0 summed over the taps), the same for every output channel of a group
        y.add_(row_sums(), alpha=plan.row)
    return y


def window_sums(
    x_codes: torch.Tensor,
    kernel_size: tuple[int, int],
    conv_args: tuple,
    out_channels: int,
    dtype: torch.dtype = torch.float32,
    offset: int = 0,
) -> torch.Tensor:
    """``sum over a window's taps of (code + offset)`` per output position and group, ``(N, O or 1, H', W')`` in
    ``dtype``: channels summed per group, then one box filter (``(N, 1, H', W')`` for one group; padded taps add 0).
    ``conv_args``: ``(stride, padding, dilation, groups)`` pairs as in the convolution."""
    stride, padding, dilation, groups = conv_args
    N, C, H, W = x_codes.shape
    kh, kw = kernel_size
    xs = x_codes.to(dtype).view(N, groups, C // groups, H, W).sum(2)
    if offset:
        xs += offset * (C // groups)
    pool_ok = tuple(dilation) == (1, 1) and 2 * padding[0] <= kh and 2 * padding[1] <= kw  # avg_pool2d's limits
    if pool_ok:  # a sum pool (exact: small integers); 4x faster than a one-channel convolution
        s = F.avg_pool2d(xs, (kh, kw), stride, padding, count_include_pad=True, divisor_override=1)
    else:
        box = torch.ones(groups, 1, kh, kw, dtype=dtype, device=xs.device)
        s = F.conv2d(xs, box, None, stride, padding, dilation, groups)
    return s if groups == 1 else s.repeat_interleave(out_channels // groups, dim=1)

"""Integer execution of an AppMul layer: uint8 activation planes x int8 weights, int32 accumulation (oneDNN).

Any integer table ``T[x, w]`` over ``a_bits <= 8`` activation bits is a sum of products of the activation index's
bits (its Moebius transform: ``T[x, w] = sum_S c_S(w) prod_{i in S} bit_i(x)``, ``S`` a subset of the bits). Each
monomial with a non-zero coefficient vector becomes one *plane*, the AND of its bits shifted out of the uint8
codes (no table lookup), optionally times a small integer absorbed from its coefficients, and the coefficients
become int8 weights (split in two digits where they exceed int8). With the activation index itself as one more
plane (its coefficient the weight value) the exact product costs one term, so a table close to the exact product
needs few planes. All planes are stacked along the input channels into ONE quantized convolution (oneDNN's
``qconv2d_pointwise``: uint8 x int8 products summed in int32, returned as float32), which runs 3-4x faster than
the float32 convolution of the same shape on CPUs with AVX512-VNNI/AMX (measured: 0.24-0.34x of one float32
convolution per term at ResNet-20 shapes).

The empty monomial (a weight-only term) is returned as ``const`` for the caller's bias and border correction;
an unsigned 8-bit weight ``w`` enters the index plane as ``w - 128`` plus one extra output channel that sums the
index plane over the taps (times 128). Exact: integer arithmetic throughout, the float32 result is exact while it
and the convolution's outputs stay below ``2**24`` (the float32 contract of :mod:`fames.emulate.kernels`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from math import gcd

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Int8Plan", "int8_available", "int8_conv", "lower"]

INDEX_PLANE = -1  # pseudo monomial: the activation index itself
INT8_TERM_COST = 0.3  # one stacked int8 term, in multiples of the float32 exact convolution (measured 0.24-0.34)


@dataclass(frozen=True)
class Int8Plan:
    """``T[x, w] == sum_t U[x, t] * V[w, t] + const[w] + row * (x ^ offset)`` on the used weight keys.

    ``U``: ``(2**a_bits, T)`` uint8 plane values per activation index; ``masks[t]``: the monomial (bit mask) of
    term ``t``, ``INDEX_PLANE`` for the index plane (term 0: the activation value plus ``2**(a_bits - 1)`` if
    signed); ``V``: ``(n_keys, T)`` int8; ``const``: ``(n_keys,)`` int64 or None; ``row``: the multiplier of the
    extra output channel (the index plane summed over the taps), 0 for none.
    """

    masks: tuple[int, ...]
    U: np.ndarray
    V: np.ndarray
    const: np.ndarray | None
    row: int
    _packed: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def terms(self) -> int:
        return len(self.masks)

    def cost(self) -> float:
        """Estimated time in multiples of the float32 exact convolution."""
        return INT8_TERM_COST * sum(_blocks(max(self.terms, 1)))

    def packed(self, keep: tuple[int, ...]) -> tuple[list[tuple[torch.Tensor, int]], torch.Tensor]:
        """Terms ``keep`` as lookup tables of packed planes, ``[(table (2**a_bits,), bytes per entry)]`` (one
        ``index_select`` yields up to 8 planes side by side), and their weights ``(n_keys, padded T)`` int32."""
        hit = self._packed.get(keep)
        if hit is None:
            widths = _blocks(len(keep))
            pad = sum(widths) - len(keep)
            U = np.pad(self.U[:, keep], ((0, 0), (0, pad)))
            V = np.pad(self.V[:, keep], ((0, 0), (0, pad)))
            tables, off = [], 0
            for w in widths:
                word = np.ascontiguousarray(U[:, off : off + w].astype(np.uint8)).view(_WORD[w]).reshape(-1)
                tables.append((torch.from_numpy(word.copy()), w))
                off += w
            hit = self._packed[keep] = (tables, torch.as_tensor(V.astype(np.int32)))
        return hit


_WORD = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def _blocks(n: int) -> list[int]:
    """Bytes per packed table entry for ``n`` planes: 8-plane words, then at most two blocks for the rest (a padded
    plane costs one stacked term of convolution, an extra block a strided copy: 3 -> [4], 7 -> [8])."""
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


def _split(c: np.ndarray) -> list[tuple[int, np.ndarray]] | None:
    """``c == sum_j m_j * e_j`` with plane multipliers ``m_j`` in 1..255 and int8 ``e_j`` (one digit, else two,
    trying every common divisor ``m_0`` of ``c`` up to 255); None when two digits do not suffice."""
    g = reduce(gcd, np.abs(c[c != 0]).tolist(), 0)
    divisors = [d for d in range(255, 0, -1) if g % d == 0]
    for a in divisors:
        if np.abs(c // a).max() <= 127:
            return [(a, c // a)]
    for a in divisors:
        s = 255 // a
        if s < 2:
            continue
        hi = np.round(c // a / s).astype(np.int64)
        lo = c // a - s * hi
        if np.abs(hi).max() <= 127 and np.abs(lo).max() <= 127:
            return [(a, lo), (a * s, hi)]
    return None


def _terms(C: np.ndarray) -> tuple[list[int], list[int], list[np.ndarray]] | None:
    masks, mult, cols = [], [], []
    for S in np.flatnonzero(np.abs(C[1:]).sum(1)) + 1:
        parts = _split(C[S])
        if parts is None:
            return None
        for m, e in parts:
            masks.append(int(S))
            mult.append(m)
            cols.append(e)
    return masks, mult, cols


def lower(
    table: np.ndarray,
    a_bits: int,
    a_signed: bool,
    w_values: np.ndarray,
    w_bits: int,
    used: np.ndarray | None = None,
) -> Int8Plan | None:
    """The cheapest :class:`Int8Plan` of ``table (2**a_bits, n_keys)`` (integer) or None if none fits int8.

    ``w_values``: ``(n_keys,)`` weight value of each column; ``used``: bool ``(n_keys,)``, columns that occur (the
    others are zeroed). Candidates: the monomials of the table, and the index plane (activation value plus
    ``2**(a_bits - 1)`` if signed; coefficient: the weight value) plus the monomials of the rest; the one with
    fewer terms wins.
    """
    if a_bits > 8 or w_bits > 8:
        return None
    T = np.asarray(table, dtype=np.int64)
    if used is not None:
        T = np.where(np.asarray(used, dtype=bool)[None, :], T, 0)
        w_values = np.where(np.asarray(used, dtype=bool), w_values, 0)
    offset = 1 << (a_bits - 1) if a_signed else 0
    x0 = np.arange(1 << a_bits, dtype=np.int64)
    x = (x0 ^ offset)[:, None]  # the index plane's value per index
    best: Int8Plan | None = None
    row_off = 128 if int(w_values.max(initial=0)) > 127 else 0
    for with_index in (False, True):
        v_index = w_values - row_off
        if with_index and (int(v_index.min(initial=0)) < -128 or int(v_index.max(initial=0)) > 127):
            continue
        rest = T - x * w_values[None, :] if with_index else T
        C = _moebius(rest, a_bits)
        found = _terms(C)
        if found is None:
            continue
        masks, mult, cols = found
        if with_index:
            masks, mult, cols = [INDEX_PLANE, *masks], [1, *mult], [v_index, *cols]
        V = np.stack(cols, axis=1).astype(np.int8) if cols else np.zeros((T.shape[1], 0), np.int8)
        U = (
            np.stack(
                [x[:, 0] if k == INDEX_PLANE else m * ((x0 & k) == k) for k, m in zip(masks, mult, strict=True)], axis=1
            )
            if masks
            else np.zeros((x.shape[0], 0))
        )
        const = C[0] if np.any(C[0]) else None
        plan = Int8Plan(tuple(masks), U.astype(np.uint8), V, const, row_off if with_index else 0)
        if best is None or plan.terms + (plan.row > 0) < best.terms + (best.row > 0):
            best = plan
    return best


@lru_cache(maxsize=1)
def int8_available() -> bool:
    """Whether oneDNN's quantized convolution is present and exact here (u8 x s8 products at full range summed in
    int32: checked once against float64 on a worst-case probe; CPUs without VNNI may saturate int16 pairs).
    ``FAMES_INT8=0`` disables the path."""
    if os.environ.get("FAMES_INT8", "1") == "0":
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(200, 256, (2, 64, 6, 6), generator=g, dtype=torch.uint8)
        w = torch.randint(100, 128, (8, 64, 3, 3), generator=g, dtype=torch.int8)
        w[1::2] = -128
        y = _qconv(x.contiguous(memory_format=torch.channels_last), w, None, ((1, 1), (1, 1), (1, 1), 1))
        ref = F.conv2d(x.double(), w.double(), None, 1, 1)
        return bool(torch.equal(y.double(), ref))
    except (RuntimeError, AttributeError):
        return False


def _qconv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, conv_args: tuple) -> torch.Tensor:
    """``conv(x, w) + bias`` for uint8 ``x (N, C, H, W)`` (channels_last) and int8 ``w``, float32 output."""
    stride, padding, dilation, groups = conv_args
    O = w.shape[0]
    ones = torch.ones(O, dtype=torch.float32)
    zeros = torch.zeros(O, dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(w, ones, 1.0, 0, list(stride), list(padding), list(dilation), groups, None)
    return torch.ops.onednn.qconv2d_pointwise(
        x,
        1.0,
        0,
        packed,
        ones,
        zeros,
        bias,
        list(stride),
        list(padding),
        list(dilation),
        groups,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )


def _stack(xi: torch.Tensor, tables: list[tuple[torch.Tensor, int]], groups: int) -> torch.Tensor:
    """Stacked uint8 planes ``(n, H, W, C * T)`` of NHWC int32 indices ``xi``: per group, block ``b`` of the
    packed tables holds channel-major ``(channel, plane)`` bytes (one ``index_select`` per block)."""
    n, H, W, C = xi.shape
    flat = xi.reshape(-1)
    if len(tables) == 1:
        tab, w = tables[0]
        return tab.index_select(0, flat).view(torch.uint8).view(n, H, W, C * w)
    Cg = C // groups
    tot = sum(w for _, w in tables)
    out = torch.empty(n, H, W, groups, tot * Cg, dtype=torch.uint8)
    off = 0
    for tab, w in tables:
        out[..., off * Cg : (off + w) * Cg].copy_(
            tab.index_select(0, flat).view(torch.uint8).view(n, H, W, groups, Cg * w)
        )
        off += w
    return out.view(n, H, W, tot * C)


def int8_conv(
    xi: torch.Tensor,
    wkey: torch.Tensor,
    plan: Int8Plan,
    conv_args: tuple,
    chunks: list[tuple[int, int]],
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_t conv(U[X, t], V[W, t]) (+ row term) + bias`` -> float32 ``(N, O, H', W')`` (channels_last).

    ``xi``: ``(N, H, W, C)`` int32 activation indices (NHWC), ``wkey``: ``(O, Cg, kh, kw)`` rows of ``plan.V``;
    ``chunks``: sample ranges (bounded memory); ``bias``: float32 ``(O,)``. The caller adds ``plan.const``.
    """
    stride, padding, dilation, groups = conv_args
    O, Cg, kh, kw = wkey.shape
    # planes of monomials with a bit above the batch's largest index are zero: left out (exact)
    top = 1 << int(xi.max()).bit_length() if xi.numel() else 1
    keep = tuple(t for t, mask in enumerate(plan.masks) if mask < top) or (0,)  # (INDEX_PLANE < 0)
    tables, V = plan.packed(keep)
    wt = F.embedding(wkey, V)  # (O, Cg, kh, kw, T) int32
    if plan.row:  # one more output channel: the index plane (term 0) summed over the taps
        extra = torch.zeros(1, *wt.shape[1:], dtype=wt.dtype)
        extra[..., 0] = 1
        wt = torch.cat([wt, extra], 0)
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros(1)])
    parts, off = [], 0
    for _, w in tables:  # the weight layout of _stack: per group, per block, (channel, plane)
        parts.append(wt[..., off : off + w].permute(0, 1, 4, 2, 3).reshape(wt.shape[0], Cg * w, kh, kw))
        off += w
    ws = torch.cat(parts, 1).to(torch.int8).contiguous(memory_format=torch.channels_last)
    outs = []
    for s, e in chunks:
        y = _qconv(_stack(xi[s:e], tables, groups).permute(0, 3, 1, 2), ws, bias, conv_args)
        if plan.row:
            y = y[:, :O] + plan.row * y[:, O:]
        outs.append(y)
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)

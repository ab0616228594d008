"""Fast bit-exact AppMul convolution and linear kernels.

The layer's accumulator for output ``o`` is ``sum_i LUT[x_i, w_i]`` over the products of a convolution (or
a linear layer), where ``x_i``/``w_i`` are integer codes (operand *values*; a signed operand's table index is
its value mod ``2**bits``). With an exact factorization ``T = U V^T`` (see :mod:`fames.emulate.decompose`) of
either the error tables (plus the exact product as one extra term) or the LUTs themselves,

    sum_i T[x_i, w_i] = sum_r conv(u_r(X), v_r(W)),

and all ``r`` terms are stacked into ONE convolution with ``r`` times the input channels: channel
``c * r_total + k`` holds ``u_k(x_c)``, so every group of a grouped/depthwise convolution keeps its channels
together. The factor tensor is zero-padded *after* the lookup (a padded position is no product).
Several AppMuls (per-layer, per-filter or per-kernel assignment) share the activation basis ``U`` (a
factorization of the tables side by side), so mixed assignments are still one convolution. In float32 on a CPU
whose oneDNN int8 kernels are exact, the same sums usually run as uint8 planes x int8 weights
(:mod:`fames.emulate.int8`), 3-4x cheaper per term; high-rank tables take the LUT gather.

Backward is the straight-through estimator: the gradient of the exact convolution of the codes. With
``error_table=`` a differentiable error table enters the graph instead, and one backward pass yields
``dL/dE`` (the counting-matrix gradient, FAMES Eq. (10)).

Precision: float64 results are bit-exact (integers below ``2**53``); float32 results are exact up to
float32 accumulation rounding (exact whenever partial sums stay below ``2**24``).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fames.appmul.core import AppMul, operand_values
from fames.emulate.decompose import Factors, decompose_table
from fames.emulate.int8 import (
    INT8_CHUNK_BYTES,
    PACKED_WEIGHTS,
    Int8Plan,
    conv_output_hw,
    int8_available,
    int8_conv,
    lower,
    window_sums,
)
from fames.emulate.memo import KeyedCache

__all__ = [
    "EmulationPlan",
    "approx_conv2d",
    "approx_linear",
    "cached_plan",
    "choose_method",
    "error_plan",
    "plan_layer",
]

IntPair = int | tuple[int, int]
# 16 MB: below glibc's mmap threshold cap, so chunk buffers are reused without fresh page faults (measured: 1.6x
# vs 2.6x exact for W4A4 ResNet-20 at 256 MB chunks)
DEFAULT_CHUNK_BYTES = 1 << 24
GATHER_MIN_R = 2  # up to this many looked-up terms the stacked convolution always wins
LINEAR_STACKED_MAX_R = 8  # a Linear of up to this many terms stays a stacked matrix product (small layers)
# gather path / exact convolution, per output pixel: one looked-up row of O/groups floats per (input channel, tap)
# against O/groups multiply-adds: about GATHER_ROW_COST / (O/groups) + GATHER_FLOAT_COST, times GATHER_LLC_PENALTY
# when the layer's table (float32) outgrows GATHER_LLC_BYTES (measured 2026-12-04, 8-bit EvoApproxLib tables,
# ResNet-20 shapes, 200 images, one thread of an EPYC with 32 MB L3: 6-9.5x at 16 outputs, 4.2-4.8x at 32, 7-9x at
# 64 with a 38 MB table)
GATHER_ROW_COST = 80.0
GATHER_FLOAT_COST = 2.0
GATHER_LLC_BYTES = 32 << 20
GATHER_LLC_PENALTY = 2.3
# a float64 gather against the stacked path's float32 channel groups (_float32_parts): 88-97x against 3.7-23x the
# float32 convolution, 64 x 64 x 3 x 3 at 10 x 10, 200 images, EvoApproxLib r = 2-16 (measured 2026-12-06)
GATHER_FLOAT64_PENALTY = 10.0
LOOKUP_MACS = 50.0  # one activation-term lookup costs about this many convolution multiply-adds (measured)
GATHER_MAX_TABLE_BYTES = 1 << 29  # a 1x1 conv of 1,024 inputs (134 MB) gathers: 68-237x where stacked took 1,120-1,411x


@dataclass
class EmulationPlan:
    """Stacked factor tables for one layer: ``LUT_m[x, w] == sum_k U[x, k] * V[m * 2**w_bits + w, k]``.

    ``U``: ``(2**a_bits, r)``, ``V``: ``(n_appmuls * 2**w_bits, r)`` float64 (exact on used weight values).
    ``mode``: ``"err"`` (exact product term + factorization of the error tables) or ``"lut"`` (factorization
    of the LUTs). ``integer``: the factors hold integers (no rounding needed).
    """

    a_bits: int
    w_bits: int
    a_signed: bool
    w_signed: bool
    n_appmuls: int
    U: np.ndarray
    V: np.ndarray
    mode: str
    kind: str
    integer: bool
    exact_only: bool = False
    luts: np.ndarray | None = field(default=None, repr=False)  # (2**a_bits, n_appmuls * 2**w_bits) int64
    # Bit-plane activation basis: ``U[x, k] == (x | 2**a_bits) >> shifts[k] & 1`` (shift ``a_bits`` is the
    # constant 1), so the stacked activations come from shifts instead of table lookups.
    shifts: np.ndarray | None = None
    # the same tables as uint8 planes x int8 weights (fames.emulate.int8); None above 8 bits
    int8: Int8Plan | None = None
    _torch: dict = field(default_factory=dict, repr=False)

    @property
    def term_rows(self) -> np.ndarray:
        """Per activation index, the bound of ``|sum over any terms k of U[x, k] V[w, k]|`` over the weights,
        ``sum_k |U[x, k]| max_w |V[w, k]|``, ``(2**a_bits,)`` float64 (an integer factorization's terms can be far
        larger than the products they sum to)."""
        if "term_rows" not in self._torch:
            self._torch["term_rows"] = np.abs(self.U) @ np.abs(self.V).max(0) if self.r else np.zeros(len(self.U))
        return self._torch["term_rows"]

    @property
    def term_peak(self) -> float:
        """The largest partial sum one product contributes on the stacked path: the largest of :attr:`term_rows`."""
        return float(self.term_rows.max()) if self.r else 0.0

    @property
    def r(self) -> int:
        """Number of stacked terms (input-channel multiplier of the emulating convolution)."""
        return int(self.U.shape[1])

    def tables(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V)`` as tensors on ``device`` in ``dtype`` (cached)."""
        key = (str(device), dtype)
        hit = self._torch.get(key)
        if hit is None:
            hit = (  # row-major: a column-major U (an SVD's) made every lookup 10-20x slower (measured)
                torch.as_tensor(np.ascontiguousarray(self.U), dtype=dtype, device=device).contiguous(),
                torch.as_tensor(np.ascontiguousarray(self.V), dtype=dtype, device=device).contiguous(),
            )
            self._torch[key] = hit
        return hit

    def shift_table(self, device: torch.device) -> torch.Tensor:
        """``shifts`` as an int16 tensor (cached); only for a bit-plane plan."""
        assert self.shifts is not None
        key = ("shifts", str(device))
        hit = self._torch.get(key)
        if hit is None:
            hit = self._torch[key] = torch.as_tensor(self.shifts, dtype=torch.int16, device=device)
        return hit

    def lut_table(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The LUTs side by side, ``(2**a_bits, n_appmuls * 2**w_bits)`` tensor (cached)."""
        if self.luts is None:
            raise ValueError("this plan holds no LUTs (build it with plan_layer)")
        key = ("lut", str(device), dtype)
        hit = self._torch.get(key)
        if hit is None:
            hit = self._torch[key] = torch.as_tensor(self.luts, dtype=dtype, device=device)
        return hit


def _as_appmuls(appmul: AppMul | Sequence[AppMul]) -> list[AppMul]:
    ams = [appmul] if isinstance(appmul, AppMul) else list(appmul)
    if not ams:
        raise ValueError("need at least one AppMul")
    w0 = ams[0].widths
    for m in ams[1:]:
        if m.widths != w0:
            raise ValueError(
                "AppMuls of one layer must share widths and signedness: "
                f"{ams[0].name} is {ams[0].signature()}, "
                f"{m.name} is {m.signature()}"
            )
    return ams


def plan_layer(
    appmul: AppMul | Sequence[AppMul], used: np.ndarray | None = None, allow_float_lut: bool = True
) -> EmulationPlan:
    """Choose the cheapest exact stacked factorization for a layer's AppMul(s).

    ``used``: optional bool ``(n_appmuls * 2**w_bits,)``: which (AppMul, weight index) pairs occur; tables
    need only be exact there. Compares factoring the error tables (+1 exact term) with factoring the LUTs;
    ``allow_float_lut=False`` rejects a non-integer (SVD) factorization of the LUTs, whose large entries
    would cost float32 precision (the error tables are much smaller).
    """
    ams = _as_appmuls(appmul)
    a_bits, w_bits = ams[0].a_bits, ams[0].w_bits
    M = len(ams)
    E = np.concatenate([m.error() for m in ams], axis=1)  # (2**a, M * 2**w)
    L = np.concatenate([m.lut.astype(np.int64) for m in ams], axis=1)
    sig = (ams[0].a_signed, ams[0].w_signed)
    f_err = decompose_table(E, used)
    av = operand_values(a_bits, ams[0].a_signed).astype(np.float64)[:, None]
    wv = np.tile(operand_values(w_bits, ams[0].w_signed), M).astype(np.float64)[:, None]
    if f_err.r == 0:
        return EmulationPlan(a_bits, w_bits, *sig, M, av, wv, "err", "zero", True, exact_only=True, luts=L)
    f_lut: Factors = decompose_table(L, used)
    U_err, V_err = np.concatenate([av, f_err.U], axis=1), np.concatenate([wv, f_err.V], axis=1)
    if f_lut.r < f_err.r + 1 and (f_lut.integer or allow_float_lut):
        plan = EmulationPlan(a_bits, w_bits, *sig, M, f_lut.U, f_lut.V, "lut", f_lut.kind, f_lut.integer, luts=L)
    else:
        plan = EmulationPlan(a_bits, w_bits, *sig, M, U_err, V_err, "err", f_err.kind, f_err.integer, luts=L)
    plan = _to_bit_planes(plan)
    factors = [(f.U, f.V) for f in (plan, f_lut) if f.integer] + [(U_err, V_err)] * f_err.integer
    plan.int8 = lower(L, a_bits, sig[0], wv[:, 0].astype(np.int64), w_bits, used, factors)
    return plan


def lut_plan(appmul: AppMul | Sequence[AppMul], error: bool = False) -> EmulationPlan:
    """A plan for the gather backend only: the LUTs side by side, no factorization (no SVD/QR cost).

    Exact for any LUT; used where many AppMuls are each evaluated a few times (estimation), so planning
    would dominate. ``approx_conv2d`` and ``approx_linear`` gather directly from the LUTs for it. With
    ``error`` the tables are the error tables ``LUT - a*w``: the kernels then return ``sum_i E[x_i, w_i]``.
    """
    ams = _as_appmuls(appmul)
    a_bits, w_bits, sa, sw = ams[0].widths
    L = np.concatenate([(m.error() if error else m.lut).astype(np.int64) for m in ams], axis=1)
    empty_u, empty_v = np.zeros((1 << a_bits, 0)), np.zeros((len(ams) << w_bits, 0))
    exact = not error and all(m.is_exact() for m in ams)
    return EmulationPlan(
        a_bits, w_bits, sa, sw, len(ams), empty_u, empty_v, "lut", "gather-only", True, exact_only=exact, luts=L
    )


_PLANS: OrderedDict[tuple, tuple[list[np.ndarray], EmulationPlan]] = OrderedDict()
_PLANS_SIZE = 128


def _memo(ams: list[AppMul], extra: tuple, make: Callable[[], EmulationPlan]) -> EmulationPlan:
    """``make()`` cached per LUT content: keyed by the LUT arrays' identities, widths and ``extra``, and valid
    only while every LUT still equals the copy taken when the plan was made (so an AppMul whose table is
    edited in place is planned afresh). A hit costs one comparison per table instead of a factorization
    and hashing (8-40 ms per 8x8 layer and forward, measured)."""
    key = (tuple((id(m.lut), m.widths) for m in ams), *extra)
    hit = _PLANS.get(key)
    if hit is not None and all(np.array_equal(m.lut, c) for m, c in zip(ams, hit[0], strict=True)):
        _PLANS.move_to_end(key)
        return hit[1]
    plan = make()
    _PLANS[key] = ([m.lut.copy() for m in ams], plan)
    while len(_PLANS) > _PLANS_SIZE:
        _PLANS.popitem(last=False)
    return plan


def cached_plan(
    appmul: AppMul | Sequence[AppMul], used: np.ndarray | None = None, allow_float_lut: bool = True
) -> EmulationPlan:
    """:func:`plan_layer`, cached per LUT content and set of used weight values."""
    ams = _as_appmuls(appmul)
    used_key = None if used is None else np.packbits(used).tobytes()
    return _memo(ams, ("layer", used_key, allow_float_lut), lambda: plan_layer(ams, used, allow_float_lut))


def error_plan(appmul: AppMul) -> EmulationPlan:
    """A factorized plan of ``appmul``'s error table ``E = LUT - a*w`` alone (the kernels then return
    ``sum_i E[x_i, w_i]``): bit planes or a low-rank product where the table has them (one convolution of a few
    terms), the LUT gather otherwise (:func:`choose_method`). Exact on every weight value; cached per table, so a
    candidate evaluated in many layers is factorized once. The int8 lowering (:mod:`fames.emulate.int8`) is
    attached as for :func:`plan_layer`."""

    def make() -> EmulationPlan:
        E = appmul.error().astype(np.int64)
        f = decompose_table(E)
        a_bits, w_bits, sa, sw = appmul.widths
        plan = _to_bit_planes(EmulationPlan(a_bits, w_bits, sa, sw, 1, f.U, f.V, "lut", f.kind if f.r else "zero",
                                            f.integer, exact_only=False, luts=E))
        factors = [(g.U, g.V) for g in (plan, f) if g.integer]
        plan.int8 = lower(E, a_bits, sa, operand_values(w_bits, sw), w_bits, None, factors)
        return plan

    return _memo([appmul], ("error",), make)


BIT_PLANE_EXTRA_TERMS = 1  # bit planes cost no lookup: accept up to this many more terms than the factor rank


def _to_bit_planes(plan: EmulationPlan) -> EmulationPlan:
    """Re-express an integer plan in the bit-plane activation basis if ``U``'s columns are affine in the bits
    of the activation index (truncation-like errors, exact products): ``U = P B`` with ``P[x] = [1, bits(x)]``,
    so ``U V^T = P (V B^T)^T`` and the activation terms are shifts of the codes instead of table lookups."""
    if not plan.integer:
        return plan
    a = plan.a_bits
    x = np.arange(1 << a)
    P = np.stack([np.ones_like(x)] + [(x >> b) & 1 for b in range(a)], axis=1).astype(np.float64)  # (A, a+1)
    B = np.concatenate([plan.U[:1], plan.U[1 << np.arange(a)] - plan.U[:1]], axis=0)  # (a+1, r), integer
    if not np.array_equal(P @ B, plan.U):
        return plan
    keep = np.flatnonzero(np.any(B != 0, axis=1))
    if keep.size > plan.r + BIT_PLANE_EXTRA_TERMS:
        return plan
    Vb = plan.V @ B[keep].T  # integer: exact in float64
    shifts = np.where(keep == 0, a, keep - 1).astype(np.int64)
    return EmulationPlan(
        plan.a_bits,
        plan.w_bits,
        plan.a_signed,
        plan.w_signed,
        plan.n_appmuls,
        P[:, keep],
        Vb,
        plan.mode,
        plan.kind,
        True,
        luts=plan.luts,
        shifts=shifts,
    )


# ---------------------------------------------------------------------------------------------- helpers
def _pair(v: IntPair) -> tuple[int, int]:
    if isinstance(v, str):
        raise ValueError("padding must be an int or a pair of ints (string modes are not supported)")
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _indices(codes: torch.Tensor, bits: int, signed: bool, exact_round: bool = False, byte: bool = False
             ) -> torch.Tensor:
    """Table index (two's-complement bit pattern) of integer codes stored as float: ``value mod 2**bits``.

    int32 (``byte`` and ``bits <= 8``: uint8, converted directly from float, several times cheaper), same shape and
    memory format. Codes must be integer-valued (``exact_round`` rounds first).
    """
    c = codes.detach()
    if exact_round:
        c = torch.round(c)
    if byte and bits <= 8:
        idx = c.to(torch.int8).view(torch.uint8) if signed else c.to(torch.uint8)
        return idx.bitwise_and((1 << bits) - 1) if signed and bits < 8 else idx
    idx = c.to(torch.int32)
    return idx.bitwise_and_((1 << bits) - 1) if signed else idx


def _weight_keys(w_idx: torch.Tensor, assign: torch.Tensor | int | None, n_appmuls: int, w_bits: int) -> torch.Tensor:
    """Row of the stacked ``V`` for each weight: ``m * 2**w_bits + w_index``, shape of ``w_idx``.

    ``assign``: None / scalar (per layer), ``(O,)`` (per filter) or ``(O, C_in_per_group)`` (per kernel).
    """
    if assign is None:
        if n_appmuls != 1:
            raise ValueError(f"{n_appmuls} AppMuls given but no assignment: pass assign=")
        return w_idx
    a = torch.as_tensor(assign, device=w_idx.device).to(torch.int64)
    if a.numel() and (int(a.min()) < 0 or int(a.max()) >= n_appmuls):
        raise ValueError(f"assignment indices must lie in 0..{n_appmuls - 1}")
    O = w_idx.shape[0]
    if a.dim() == 0:
        a = a.expand(O)
    if a.dim() == 1:
        if a.shape[0] != O:
            raise ValueError(f"per-filter assignment has {a.shape[0]} entries for {O} output channels")
        a = a.view(O, *([1] * (w_idx.dim() - 1)))
    elif a.dim() == 2:
        if tuple(a.shape) != tuple(w_idx.shape[:2]):
            raise ValueError(f"per-kernel assignment shape {tuple(a.shape)} != weight {tuple(w_idx.shape[:2])}")
        a = a.view(*a.shape, *([1] * (w_idx.dim() - 2)))
    else:
        raise ValueError(f"assignment must be 0-, 1- or 2-D, got shape {tuple(a.shape)}")
    return w_idx + (a << w_bits)


def _used(wkey: torch.Tensor, n: int) -> np.ndarray:
    return (torch.bincount(wkey.reshape(-1).long(), minlength=n) > 0).cpu().numpy()


def _chunks(n: int, per_sample_bytes: int, max_bytes: int) -> list[tuple[int, int]]:
    step = max(1, min(n, max_bytes // max(per_sample_bytes, 1)))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _live_planes(
    xi: torch.Tensor, U: torch.Tensor, V: torch.Tensor, shifts: torch.Tensor | None, a_bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(U, V, shifts)`` without the bit planes that are zero for every activation index in ``xi``: a plane of bit
    ``b`` is empty when the largest index is below ``2**b`` (e.g. the sign plane of ReLU outputs under signed
    quantization, or the top planes of a layer whose codes stay small). Exact: an empty plane adds nothing. A lookup
    plan (``shifts`` None) is returned unchanged."""
    if shifts is None or xi.numel() == 0:
        return U, V, shifts
    top = int(xi.max())
    keep = [r for r, s in enumerate(shifts.tolist()) if s >= a_bits or top >= 1 << s]
    if len(keep) == len(shifts) or not keep:
        return U, V, shifts
    idx = torch.as_tensor(keep, device=U.device)
    return U[:, idx], V[:, idx], shifts[idx]


def _stacked_conv(
    x_idx: torch.Tensor,
    wkey: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    max_bytes: int,
    shifts: torch.Tensor | None = None,
    a_bits: int = 0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_k conv(U[X, k], V[W, k])`` (+ ``bias (O,)``) as one convolution -> ``(N, O, H', W')``.

    ``x_idx``: ``(N, C, H, W)`` activation indices, ``wkey``: ``(O, Cg, kh, kw)`` rows of ``V``.

    Differentiable w.r.t. ``U`` and ``V`` (used for the counting-matrix gradient). With ``shifts`` (a bit-plane
    plan) the activation terms are computed by shifts of the indices instead of lookups in ``U``.
    """
    N, C, H, W = x_idx.shape
    O, Cg, kh, kw = wkey.shape
    R = U.shape[1]
    # stacked channels in the order _act_terms writes them: (group, term, channel) for bit planes, (group,
    # channel, term) for lookups
    order = (0, 4, 1, 2, 3) if shifts is not None else (0, 1, 4, 2, 3)
    ws = F.embedding(wkey, V).permute(*order).reshape(O, R * Cg, kh, kw)
    ws = ws.contiguous(memory_format=torch.channels_last)
    xi = x_idx.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C); lookups on a strided index are ~10x slower
    outs = []
    for s, e in _chunks(N, H * W * C * R * U.element_size(), max_bytes):
        xs = _act_terms(xi[s:e], U, shifts, a_bits, groups)
        xs = xs.reshape(e - s, H, W, C * R).permute(0, 3, 1, 2)  # channels_last view
        outs.append(F.conv2d(xs, ws, bias, stride, padding, dilation, groups))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def _act_terms(
    xi: torch.Tensor, U: torch.Tensor, shifts: torch.Tensor | None, a_bits: int, groups: int = 1
) -> torch.Tensor:
    """Activation terms ``U[xi, r]`` for indices ``xi (..., C)`` in ``U.dtype``.

    A bit-plane plan computes term r as bit ``shifts[r]`` of ``xi | 2**a_bits`` from uint8 codes
    (``a_bits <= 8``, else int32), without lookups, term-major within a group so that every term is written
    over contiguous channels: ``(..., groups, r, C / groups)``. Otherwise one embedding lookup gives all terms
    of an activation at once (differentiable in ``U``): ``(..., C, r)``, channel-major (measured: 2 ns per
    term against 10 ns for one advanced-indexing pass per term).
    """
    *lead, C = xi.shape
    if shifts is None:
        return F.embedding(xi, U)
    xg = xi.reshape(*lead, groups, C // groups)
    out = torch.empty(*lead, groups, U.shape[1], C // groups, dtype=U.dtype, device=xi.device)
    x8 = xg.to(torch.uint8 if a_bits <= 8 else torch.int32)
    for r, s in enumerate(shifts.tolist()):
        if s >= a_bits:
            out[..., r, :].fill_(1)
        else:
            out[..., r, :].copy_(torch.bitwise_right_shift(x8, s).bitwise_and_(1))
    return out


def _stacked_linear(
    x_idx: torch.Tensor,
    wkey: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    max_bytes: int,
    shifts: torch.Tensor | None = None,
    a_bits: int = 0,
):
    """``sum_k U[X, k] @ V[W, k].T``; ``x_idx`` ``(N, K)``, ``wkey`` ``(O, K)`` -> ``(N, O)``."""
    N, K = x_idx.shape
    O = wkey.shape[0]
    R = U.shape[1]
    wt = F.embedding(wkey, V)  # (O, K, R): (input, term) order, matching _act_terms' lookups
    ws = (wt.transpose(1, 2) if shifts is not None else wt).reshape(O, R * K)
    outs = []
    for s, e in _chunks(N, K * R * U.element_size(), max_bytes):
        outs.append(_act_terms(x_idx[s:e], U, shifts, a_bits).reshape(e - s, R * K) @ ws.t())
    if not outs:  # no rows (a layer the data routed nothing to)
        return ws.new_zeros(0, O)
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


class _SteConvFn(torch.autograd.Function):
    """Forward: ``compute()`` (the emulation); backward: gradient of the exact convolution (STE)."""

    @staticmethod
    def forward(ctx, x, w, compute, conv_args, dtype):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.conv_args = conv_args
        ctx.dtype = dtype
        return compute()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = None
        if need_x or need_w:
            dt = ctx.dtype
            gx, gw, _ = torch.ops.aten.convolution_backward(
                g.to(dt),
                x.to(dt),
                w.to(dt),
                None,
                list(stride),
                list(padding),
                list(dilation),
                False,
                [0, 0],
                groups,
                [need_x, need_w, False],
            )
            gx = gx.to(x.dtype) if need_x else None
            gw = gw.to(w.dtype) if need_w else None
        return gx, gw, None, None, None


class _SteLinearFn(torch.autograd.Function):
    """Forward: ``compute()`` (the emulation); backward: gradient of the exact product (STE)."""

    @staticmethod
    def forward(ctx, x, w, compute, dtype):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.dtype = dtype
        return compute()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        dt = ctx.dtype
        g = g.to(dt)
        gx = (g @ w.to(dt)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = (g.t() @ x.to(dt)).to(w.dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None


GATHER_CACHE_BYTES = 1 << 29  # per-layer gather tables kept between calls (an eval or calibration reuses them)
_GATHER_TABLES = KeyedCache(GATHER_CACHE_BYTES)


def _gather_table(L: torch.Tensor, wkey: torch.Tensor, G: int) -> torch.Tensor:
    """The gather path's tables, one per kernel tap ``k``: row ``c * (A + 1) + x`` of ``T[k]`` holds
    ``L[x, wkey[o, c, k]]`` for the outputs ``o`` of the group of input channel ``c`` (row ``A`` of each block zero:
    padding), ``(kh * kw, C * (A + 1), O / G)``.

    Building it costs up to ~100 ms for a 64 x 64 x 3 x 3 layer at 8 bits, so tables are cached per LUT tensor and
    weight keys (:class:`fames.emulate.memo.KeyedCache`, at most ``GATHER_CACHE_BYTES``).
    """
    O, Cg, kh, kw = wkey.shape
    A, KK, Og = L.shape[0], kh * kw, O // G

    def make() -> tuple[torch.Tensor, int]:
        T = L[:, wkey.reshape(O, Cg * KK)]  # (A, O, Cg*KK)
        T = T.reshape(A, G, Og, Cg, KK).permute(4, 1, 3, 0, 2)  # (KK, G, Cg, A, Og)
        T = F.pad(T, (0, 0, 0, 1)).reshape(KK, G * Cg * (A + 1), Og)
        return T, T.numel() * T.element_size()

    return _GATHER_TABLES.get(L, wkey, (G, "taps"), make)


def _gather_conv(
    x_idx: torch.Tensor,
    wkey: torch.Tensor,
    L: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    max_bytes: int,
) -> torch.Tensor:
    """``sum_i L[x_i, w_i]`` by ``embedding_bag`` over the LUTs (cost independent of the factor rank).

    ``L``: LUTs side by side ``(2**a_bits, n_appmuls * 2**w_bits)``; tables of :func:`_gather_table`. With stride 1
    one bag per (position, group) and kernel tap over that tap's table, read straight from the padded codes (every
    position of the padded map as if it were an output: a tap's inputs are then the codes ``i * dh * Wp + j * dw``
    further on, one contiguous run; the outputs that wrap past a row's end are dropped), the taps' sums added; this
    builds no window index tensor (9 int32 per code: 23% of the time, and 1.7-2.2x slower in all, measured on
    ResNet-20's layers). Other strides: one bag of all taps per output over the unfolded windows. Returns
    ``(N, O, H', W')`` (channels_last).
    """
    N, C, H, W = x_idx.shape
    O, Cg, kh, kw = wkey.shape
    G, A, KK = groups, L.shape[0], kh * kw
    dev = x_idx.device
    T = _gather_table(L, wkey, G)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = conv_output_hw((H, W), (kh, kw), (stride, padding, dilation))
    Hp, Wp = H + 2 * ph, W + 2 * pw
    blk = A + 1
    c_off = torch.arange(C, device=dev, dtype=torch.int32) * blk  # (C,)
    per_tap = (sh, sw) == (1, 1)
    per_sample = Hp * Wp * (C + 2 * O) * 4 if per_tap else Ho * Wo * C * KK * 4
    outs = []
    for s, e in _chunks(N, per_sample, max_bytes):
        n = e - s
        # padded NHWC indices with the channel block offset folded in; pads point at the zero row
        xp = (A + c_off).expand(n, Hp, Wp, C).contiguous()
        torch.add(x_idx[s:e].permute(0, 2, 3, 1), c_off, out=xp[:, ph : ph + H, pw : pw + W])
        if per_tap:
            bags = xp.view(n * Hp * Wp * G, Cg)
            span = (kh - 1) * dh * Wp + (kw - 1) * dw  # the last tap's offset, in positions
            P = n * Hp * Wp - span  # positions whose every tap lies inside this chunk's maps
            y = None
            for k in range(KK):
                off = (k // kw) * dh * Wp + (k % kw) * dw
                part = F.embedding_bag(bags[off * G : (off + P) * G], T[k], mode="sum")  # (P * G, Og)
                y = part if y is None else y.add_(part)
            y = torch.as_strided(y, (n, Ho, Wo, O), (Hp * Wp * O, Wp * O, O, 1))  # output (b, h, w) at b*Hp*Wp+h*Wp+w
            outs.append(y.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
            continue
        k_off = (torch.arange(KK, device=dev, dtype=torch.int32) * (C * blk)).view(kh, kw, 1)
        win = xp.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
        win = win.reshape(n, Ho, Wo, G, Cg, kh, kw).permute(0, 1, 2, 3, 5, 6, 4)  # (n, Ho, Wo, G, kh, kw, Cg)
        idx = torch.empty((n, Ho, Wo, G, kh, kw, Cg), dtype=torch.int32, device=dev)
        torch.add(win, k_off, out=idx)
        y = F.embedding_bag(idx.view(n * Ho * Wo * G, KK * Cg), T.view(-1, O // G), mode="sum")  # (n*Ho*Wo*G, Og)
        outs.append(y.view(n, Ho, Wo, O).permute(0, 3, 1, 2))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def _error_tables(error_table: torch.Tensor | Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    if isinstance(error_table, torch.Tensor):
        E = error_table if error_table.dim() == 3 else error_table.unsqueeze(0)
    else:
        E = torch.stack(list(error_table))
    return E.to(dtype)


def _counting_tables(E: torch.Tensor, x_idx: torch.Tensor, wkey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable ``(U, V)`` with ``sum_k U[x, k] V[m * 2**w + w, k] = E[m, x, w]`` on the codes present.

    One-hot on whichever side has fewer distinct codes present: activation values (``V`` gathers
    ``E[m, a, w]``) or (AppMul, weight value) pairs (``U`` gathers the columns ``E[m, :, w]``).
    """
    M, A, Wn = E.shape
    dev = E.device
    a_present = torch.unique(x_idx).long()
    w_present = torch.unique(wkey)
    if a_present.numel() <= w_present.numel():
        Ra = a_present.numel()
        U = torch.zeros(A, Ra, dtype=E.dtype, device=dev)
        U[a_present, torch.arange(Ra, device=dev)] = 1.0
        V = E[:, a_present, :].permute(0, 2, 1).reshape(M * Wn, Ra)
    else:
        Rw = w_present.numel()
        U = E.permute(1, 0, 2).reshape(A, M * Wn)[:, w_present]
        V = torch.zeros(M * Wn, Rw, dtype=E.dtype, device=dev)
        V[w_present, torch.arange(Rw, device=dev)] = 1.0
    return U, V


def _prepare(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    appmul: AppMul | Sequence[AppMul] | EmulationPlan,
    assign: torch.Tensor | int | None,
    dtype: torch.dtype,
    need_plan: bool,
) -> tuple[Callable[..., torch.Tensor], torch.Tensor, EmulationPlan | None, int, int, int]:
    if isinstance(appmul, EmulationPlan):
        plan: EmulationPlan | None = appmul
        ams = None
        a_bits, w_bits, M = appmul.a_bits, appmul.w_bits, appmul.n_appmuls
        sa, sw = appmul.a_signed, appmul.w_signed
    else:
        ams = _as_appmuls(appmul)
        plan = None
        a_bits, w_bits, sa, sw = ams[0].widths
        M = len(ams)
    wkey = _weight_keys(_indices(w_codes, w_bits, sw, exact_round=True).long(), assign, M, w_bits)
    if need_plan and plan is None and ams is not None:
        plan = cached_plan(ams, _used(wkey, M << w_bits), allow_float_lut=dtype == torch.float64)

    def x_idx(byte: bool = False) -> torch.Tensor:
        """Activation indices (computed only by the path that needs them; ``byte``: uint8 for bit planes)."""
        return _indices(x_codes, a_bits, sa, byte=byte)

    return x_idx, wkey, plan, a_bits, w_bits, M


def _check_error_table(error_table, dtype, M, a_bits, w_bits) -> torch.Tensor:  # type: ignore[no-untyped-def]
    E = _error_tables(error_table, dtype)
    if tuple(E.shape) != (M, 1 << a_bits, 1 << w_bits):
        raise ValueError(f"error_table shape {tuple(E.shape)} != {(M, 1 << a_bits, 1 << w_bits)}")
    return E


def choose_method(
    plan: EmulationPlan,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    groups: int = 1,
    stride: IntPair = 1,
    dtype: torch.dtype = torch.float32,
    allow_int8: bool = True,
    stacked_exact: bool = False,
) -> str:
    """``"int8"`` (uint8 planes x int8 weights, :mod:`fames.emulate.int8`), ``"conv"`` (stacked float factors:
    ``r`` times the exact convolution's work plus, unless the plan uses bit planes, one table lookup per
    activation and term) or ``"gather"`` (one ``embedding_bag`` over the LUTs, cost independent of ``r``) for a
    convolution.

    Cost model in multiples of the exact float32 convolution (measured on CPU, 8-bit EvoApproxLib tables,
    ResNet-20 shapes, one thread): the gather path costs about
    ``(GATHER_ROW_COST / (O/groups) + GATHER_FLOAT_COST)``, times ``GATHER_LLC_PENALTY`` for a table beyond
    ``GATHER_LLC_BYTES``; a lookup plan about
    ``r (1 + LOOKUP_MACS / (O/groups * kh * kw / stride**2))`` (a lookup costs about as much as ``LOOKUP_MACS``
    multiply-adds of the convolution), a bit-plane plan ``r``, the int8 plan ``INT8_FIXED_COST`` plus
    ``INT8_PLANE_COST`` per plane (float32 output only, ``allow_int8`` and oneDNN's int8 convolution exact here). A
    plan whose float32 sums may round (:func:`stacked_rounds`: float (SVD) factors, measured on mul8u_1A0M in
    ResNet-20, or factor terms whose partial sums pass ``2**24``) uses the gather (or int8) unless ``dtype`` is
    float64 (a ``method="conv"`` forced by the caller then sums in float64).
    """
    O, Cg, kh, kw = w_shape
    Og = O // groups
    gather_ratio = GATHER_ROW_COST / Og + GATHER_FLOAT_COST
    if Cg * groups * kh * kw * ((1 << plan.a_bits) + 1) * Og * 4 > GATHER_LLC_BYTES:
        gather_ratio *= GATHER_LLC_PENALTY
    if dtype == torch.float64 and _float32_parts(plan, w_shape, groups):  # the stacked sums stay float32 (parts)
        gather_ratio *= GATHER_FLOAT64_PENALTY
    if plan.luts is not None and not stacked_exact and stacked_rounds(plan, dtype, Cg * kh * kw):
        method, cost = "gather", gather_ratio
    elif plan.luts is None or plan.shifts is not None or plan.r <= GATHER_MIN_R:
        method, cost = "conv", float(plan.r)
    else:
        sh, sw = _pair(stride)
        macs_per_lookup = (O // groups) * kh * kw / (sh * sw)  # exact multiply-adds per activation element
        conv_ratio = plan.r * (1 + LOOKUP_MACS / macs_per_lookup)
        table_bytes = Cg * groups * kh * kw * ((1 << plan.a_bits) + 1) * (O // groups) * 8
        if table_bytes > GATHER_MAX_TABLE_BYTES or conv_ratio < gather_ratio:
            method, cost = "conv", conv_ratio
        else:
            method, cost = "gather", gather_ratio
    p8 = plan.int8
    if (
        allow_int8
        and p8 is not None
        and dtype == torch.float32
        and p8.cost() < cost
        and Cg > 1  # depthwise: the planes' packing outweighs a convolution this small (382-894x, gather 66-123x)
        and int8_available()
    ):
        return "int8"
    return method


# ---------------------------------------------------------------------------------------------- public API
def approx_conv2d(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    appmul: AppMul | Sequence[AppMul] | EmulationPlan,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    assign: torch.Tensor | int | None = None,
    dtype: torch.dtype = torch.float32,
    error_table: torch.Tensor | Sequence[torch.Tensor] | None = None,
    method: str = "auto",
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    x_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """Emulated integer convolution ``sum_i LUT[x_i, w_i]``, shape ``(N, O, H', W')`` in ``dtype``.

    ``x_codes``: ``(N, C, H, W)`` activation codes, ``w_codes``: ``(O, C // groups, kh, kw)`` weight codes
    (integer-valued operand values stored as float; a signed operand's index is its value mod ``2**bits``).
    ``appmul``: one AppMul, a list of AppMuls of equal widths (with ``assign``: scalar, ``(O,)`` per filter
    or ``(O, C // groups)`` per kernel), or a prebuilt :class:`EmulationPlan`. Padded positions contribute
    nothing. Gradients w.r.t. the codes are those of the exact convolution (straight-through).
    ``method``: ``"int8"`` (uint8 planes x int8 weights in oneDNN's quantized convolution, float32 output,
    :mod:`fames.emulate.int8`), ``"conv"`` (stacked factor convolution), ``"gather"`` (``embedding_bag`` over the
    LUTs) or ``"auto"`` (:func:`choose_method`). The output is channels_last in memory.

    ``error_table``: a float tensor ``(2**a_bits, 2**w_bits)`` (or ``(M, 2**a_bits, 2**w_bits)`` with
    ``assign``) used as the error table instead of the AppMul's; the output is
    ``conv(X, W) + sum_i E[x_i, w_i]`` and is differentiable w.r.t. ``error_table`` (the counting-matrix
    gradient) as well as (straight-through) the codes.

    ``x_sums``: the sums of ``x_codes`` over each output's taps as :func:`fames.emulate.int8.window_sums` gives
    them, ``(N, 1 or O, H', W')``, when the caller has them (a layer with a weight zero point does): the int8 path's
    row term and the per-batch bounds of unsigned codes use them instead of summing again.
    """
    if x_codes.dim() != 4 or w_codes.dim() != 4:
        raise ValueError(f"expected x (N, C, H, W) and w (O, C/groups, kh, kw), got {x_codes.shape}, {w_codes.shape}")
    if x_codes.shape[1] != w_codes.shape[1] * groups:
        raise ValueError(f"input has {x_codes.shape[1]} channels; weight expects {w_codes.shape[1]} x {groups} groups")
    if method not in ("auto", "conv", "gather", "int8"):
        raise ValueError(f"method must be 'auto', 'conv', 'gather' or 'int8', not {method!r}")
    conv_args = (_pair(stride), _pair(padding), _pair(dilation), int(groups))
    x_idx, wkey, plan, a_bits, w_bits, M = _prepare(
        x_codes, w_codes, appmul, assign, dtype, need_plan=error_table is None
    )
    if error_table is not None:
        E = _check_error_table(error_table, dtype, M, a_bits, w_bits)
        xi = x_idx()
        U, V = _counting_tables(E, xi, wkey)
        exact = F.conv2d(x_codes.to(dtype), w_codes.to(dtype), None, *conv_args)
        return exact + _stacked_conv(xi, wkey, U, V, *conv_args, max_chunk_bytes)
    assert plan is not None
    if plan.exact_only or not len(x_codes):  # (an empty batch: an empty output of the right shape)
        return F.conv2d(x_codes.to(dtype), w_codes.to(dtype), None, *conv_args)
    if plan.kind == "gather-only":
        method = "gather"
    elif plan.r == 0:  # every product is 0 (not a convolution by zero weights: 0.25 s of a 0.5 s forward, measured)
        hw = conv_output_hw(tuple(x_codes.shape[2:]), tuple(w_codes.shape[2:]), conv_args)
        y = torch.zeros(len(x_codes), *hw, w_codes.shape[0], dtype=dtype, device=x_codes.device).permute(0, 3, 1, 2)
        return _SteConvFn.apply(x_codes, w_codes, lambda: y, conv_args, dtype)
    fan_in = w_codes[0].numel()

    @functools.cache
    def tap_sums() -> torch.Tensor:  # the codes' sums over each output's taps
        if x_sums is not None:
            return x_sums.detach().to(torch.float32)
        return window_sums(x_codes.detach(), tuple(w_codes.shape[2:]), conv_args, w_codes.shape[0], torch.float32)

    def code_sums() -> float:
        return float(tap_sums().max())

    @functools.cache
    def batch_exact() -> bool:  # integer factors whose worst case may round in dtype, but exact on this batch
        return plan.integer and stacked_rounds(plan, dtype, fan_in) and not _rounds_on(
            plan.term_rows, x_codes, plan.a_bits, w_codes.shape, conv_args, 1 << 24, code_sums)

    cpu, asked = x_codes.device.type == "cpu", method
    if method == "auto":
        method = choose_method(plan, x_codes.shape, w_codes.shape, groups, stride, dtype, cpu)
        # the stacked path where only its worst case kept it out: checked on the batch only when it would be chosen
        alt = choose_method(plan, x_codes.shape, w_codes.shape, groups, stride, dtype, cpu, True)
        if alt != method and (alt != "conv" or batch_exact()):
            method = alt

    def other() -> Callable[[], torch.Tensor]:  # the path taken where the int8 path's sums may round
        if asked == "auto":
            return build(choose_method(plan, x_codes.shape, w_codes.shape, groups, stride, dtype, False,
                                       batch_exact()))
        raise ValueError("method='int8': the float32 sums of its blocks may round on these inputs (partial sums "
                         "beyond 2**24); use method='auto'")

    def build(method: str) -> Callable[[], torch.Tensor]:
        if method == "int8":
            if dtype != torch.float32 or not cpu:
                raise ValueError(f"method='int8' computes float32 sums on the CPU; got dtype={dtype}, device "
                                 f"{x_codes.device} (use method='auto', or dtype=torch.float32 on the CPU)")
            return _int8_compute(x_codes, wkey, plan, w_codes.shape, conv_args, max_chunk_bytes, other, tap_sums)
        if method == "gather":
            L = plan.lut_table(x_codes.device, dtype)
            return lambda: _gather_conv(x_idx(), wkey, L, *conv_args, max_chunk_bytes)
        # factors whose float32 sums may round (a forced method) are summed in float64, exact: as float32 channel
        # groups that are each exact, where the plan allows (_float32_parts)
        sum_dt = torch.float64 if stacked_rounds(plan, dtype, fan_in) and not batch_exact() else dtype
        parts = _float32_parts(plan, w_codes.shape, groups) if sum_dt == torch.float64 else []
        U, V, sh, const = _stacked_tables(plan, x_codes.device, torch.float32 if parts else sum_dt, wkey)
        if parts and const is not None:
            const = const.double()

        def compute() -> torch.Tensor:
            xi = x_idx(sh is not None)
            Ul, Vl, shl = _live_planes(xi, U, V, sh, a_bits)
            bias = None if const is None else const.sum((1, 2, 3))  # the constant term of an output all taps reach
            if parts:  # float32 sums of channel groups, each exact, added in float64 (a float64 convolution: 10x)
                y = sum(_stacked_conv(xi[:, a:b], wkey[:, a:b], Ul, Vl, *conv_args, max_chunk_bytes, shl, a_bits
                                      ).double() for a, b in parts)
                y = y if bias is None else y + bias.view(1, -1, 1, 1)
            else:
                y = _stacked_conv(xi, wkey, Ul, Vl, *conv_args, max_chunk_bytes, shl, a_bits, bias)
            if const is not None:  # outputs whose taps fall on padding get less (only at the borders)
                _add_border(y, _constant_bias(const, x_codes.shape, conv_args) - bias.view(1, -1, 1, 1))
            return (y if plan.integer else torch.round(y)).to(dtype)

        return compute

    compute = build(method)
    return _SteConvFn.apply(x_codes, w_codes, compute, conv_args, dtype)


def sums_may_pass(rows: np.ndarray, x_codes: torch.Tensor, a_bits: int, fan_in: int, limit: int,
                  tap_sums: Callable[[torch.Tensor], torch.Tensor], span: tuple[int, int] | None = None,
                  code_sums: Callable[[], float] | None = None) -> bool:
    """Whether some output's sum over its taps of ``rows`` (a bound per activation table index, ``(2**a_bits,)``)
    may reach ``limit`` on the activation codes ``x_codes``; ``tap_sums`` sums a float32 tensor shaped like the
    codes over each output's taps. First the cheap test (the largest bound among the codes present, times
    ``fan_in``: one pass over the codes); then, where the indices are the codes' values (``lo >= 0``) and the caller
    gives ``code_sums`` (the largest sum of the codes over an output's taps, which a layer with a weight zero point
    computes anyway), the line above ``rows`` (:func:`_line_above`) times it; then the sums of ``rows`` themselves,
    in float32 (int32 indices: a quarter of the int64 pass's time) against ``limit`` less twice the worst rounding of
    a float32 sum of ``fan_in`` non-negative terms (``fan_in * 2**-24`` relative). ``span``: the codes' ``(min,
    max)`` when the caller has them."""
    if not x_codes.numel():
        return False
    lo, hi = span or (int(v) for v in torch.aminmax(x_codes.detach()))
    if float(rows[np.arange(lo, hi + 1) & ((1 << a_bits) - 1)].max()) * fan_in < limit:
        return False
    if code_sums is not None and 0 <= lo <= hi < 1 << a_bits:
        slope, floor = _line_above(rows[lo : hi + 1], lo)
        # (less the worst float32 rounding of the codes' own sums, as below; the slope's division may round too)
        if (slope * code_sums() + floor * fan_in) * (1 + 1e-9) < limit * (1 - min(0.5, fan_in * 2**-23)):
            return False
    index = x_codes.detach()  # table indices already (the int8 kernel's), or codes: their bit patterns
    if index.dtype != torch.int32 or lo < 0 or hi >> a_bits:
        index = index.to(torch.int32).bitwise_and((1 << a_bits) - 1)
    table = torch.as_tensor(rows, dtype=torch.float32, device=x_codes.device)
    peak = torch.index_select(table, 0, index.reshape(-1)).view(x_codes.shape)
    return float(tap_sums(peak).max()) >= limit * (1 - min(0.5, fan_in * 2**-23))


def _line_above(seg: np.ndarray, lo: int) -> tuple[float, float]:
    """``(slope, floor)``, both >= 0, with ``seg[x - lo] <= floor + slope * x`` for every ``x`` in ``lo ..
    lo + len(seg) - 1`` (``seg >= 0``): the floor is the value at 0 (0 when 0 is not in the range), the slope the
    steepest rise from it. Summed over an output's taps it bounds the sum of ``seg`` by ``slope * (sum of the codes)
    + floor * taps``: tight for a multiplier, whose largest product grows about linearly with the activation."""
    floor = float(seg[0]) if lo == 0 else 0.0
    x = np.arange(lo, lo + len(seg), dtype=np.float64)
    return float(np.max((seg[x > 0] - floor) / x[x > 0], initial=0.0)), floor


def _rounds_on(rows: np.ndarray, x_codes: torch.Tensor, a_bits: int, w_shape: Sequence[int], conv_args: tuple,
               limit: int, code_sums: Callable[[], float] | None = None) -> bool:
    """:func:`sums_may_pass` for a convolution of weights ``w_shape`` (``conv_args`` as in it)."""
    O, _, kh, kw = w_shape
    return sums_may_pass(rows, x_codes, a_bits, int(np.prod(w_shape[1:])), limit,
                         lambda v: window_sums(v, (kh, kw), conv_args, O, torch.float32), code_sums=code_sums)


def _int8_compute(
    x_codes: torch.Tensor, wkey: torch.Tensor, plan: EmulationPlan, w_shape: Sequence[int], conv_args: tuple,
    max_bytes: int, fallback: Callable[[], Callable[[], torch.Tensor]], tap_sums: Callable[[], torch.Tensor],
) -> Callable[[], torch.Tensor]:
    """The int8 path's forward: planes x int8 weights (:func:`fames.emulate.int8.int8_conv`), the weight-only term
    as bias plus its border correction; where its float32 sums may round on the batch (checked inside the kernel,
    on its own table indices, only when the worst case over the fan-in allows it), ``fallback()``'s path.
    ``tap_sums()``: the codes' sums over each output's taps, float32 (for unsigned codes, the table indices)."""
    p8 = plan.int8
    if p8 is None or not int8_available():
        raise ValueError(
            "method='int8' needs an int8 plan (a_bits, w_bits <= 8, tables whose planes fit uint8 x int8) and "
            "oneDNN's exact int8 convolution on this CPU; use method='auto'"
        )
    const = None
    if p8.const is not None:
        def weight_only() -> tuple[torch.Tensor, int]:
            c = F.embedding(wkey, torch.as_tensor(p8.const, dtype=torch.float32, device=wkey.device)[:, None])
            return c.squeeze(-1), 4 * wkey.numel()

        const = PACKED_WEIGHTS.get(p8, wkey, ("const",), weight_only)
    fan_in = int(np.prod(w_shape[1:]))

    def may_round(keep: tuple[int, ...], top: int, xi: torch.Tensor) -> bool:  # xi: (N, H, W, C) table indices
        O, _, kh, kw = w_shape
        return sums_may_pass(p8.partial_rows(keep), xi, plan.a_bits, fan_in, 1 << 24,
                             lambda v: window_sums(v.permute(0, 3, 1, 2), (kh, kw), conv_args, O, torch.float32),
                             (0, top - 1), None if plan.a_signed else lambda: float(tap_sums().max()))

    def compute() -> torch.Tensor:
        bias = None if const is None else const.sum((1, 2, 3))
        mask = (1 << plan.a_bits) - 1 if plan.a_signed else None
        chunk = INT8_CHUNK_BYTES if max_bytes == DEFAULT_CHUNK_BYTES else max_bytes  # larger default: buffers reused
        y = int8_conv(x_codes.detach(), mask, wkey, p8, conv_args, chunk, bias,
                      may_round if p8.rounds(fan_in) else None, None if p8.offset else tap_sums)
        if y is None:
            return fallback()()
        if const is not None:
            _add_border(y, _constant_bias(const, x_codes.shape, conv_args) - bias.view(1, -1, 1, 1))
        return y

    return compute


def _float32_parts(plan: EmulationPlan, w_shape: Sequence[int], groups: int) -> list[tuple[int, int]]:
    """Input-channel ranges ``[(start, end)]`` whose stacked float32 sums stay exact (the plan's largest term
    ``term_peak`` times the range's taps below ``2**24``, :func:`stacked_rounds`' bound), for a convolution that would
    otherwise be summed in float64; ``[]`` where there is no such split (float factors, grouped convolutions, a
    single channel's taps already too many, or one range: the whole)."""
    _, C, kh, kw = w_shape
    if not plan.integer or groups != 1 or plan.term_peak <= 0:
        return []
    per = int(((1 << 24) - 1) // (plan.term_peak * kh * kw))
    if per < 1 or per >= C:
        return []
    n = -(-C // per)  # as few ranges as can be, of about equal width
    size = -(-C // n)
    return [(a, min(C, a + size)) for a in range(0, C, size)]


def stacked_rounds(plan: EmulationPlan, dtype: torch.dtype, fan_in: int) -> bool:
    """Whether the stacked factor path, summed in ``dtype`` below float64, may round to the wrong integer: float
    (SVD) factors (measured on mul8u_1A0M), or partial sums of the factor terms beyond ``2**24`` over the ``fan_in``
    products of an output (an integer factorization's terms can exceed the products they sum to). The kernels then
    take the LUT gather (exact while the products' sums stay below ``2**24``, which the caller's choice of ``dtype``
    ensures) or sum the factors in float64."""
    return dtype != torch.float64 and (not plan.integer or plan.term_peak * fan_in >= 1 << 24)


def _stacked_tables(
    plan: EmulationPlan, device: torch.device, dtype: torch.dtype, wkey: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(U, V, shifts, const)`` of the stacked path. A bit-plane plan's constant term (``shift == a_bits``) is
    not convolved with a plane of ones: ``const = V_const[wkey]`` (the shape of ``wkey``) is returned instead, for
    the caller to add as a bias (:func:`_constant_bias`), one term fewer; ``const`` is None otherwise."""
    U, V = plan.tables(device, dtype)
    if plan.shifts is None:
        return U, V, None, None
    sh = plan.shift_table(device)
    const = np.flatnonzero(plan.shifts >= plan.a_bits)
    if plan.r < 2 or const.size != 1:
        return U, V, sh, None
    k = int(const[0])
    keep = torch.as_tensor([j for j in range(plan.r) if j != k], device=device)
    return U[:, keep], V[:, keep], sh[keep], F.embedding(wkey, V[:, k : k + 1]).squeeze(-1)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, end)]`` of the runs of True in a 1-D bool tensor."""
    idx = torch.nonzero(mask).flatten().tolist()
    runs: list[tuple[int, int]] = []
    for i in idx:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _add_border(y: torch.Tensor, d: torch.Tensor) -> None:
    """``y += d`` in place for ``y (N, O, H', W')`` and ``d (1, O, H', W')`` that is zero away from the borders:
    only the rows and columns where ``d`` is non-zero are touched (a full broadcast add cost 7% of a W4A4
    forward)."""
    nz = d.ne(0)
    rows = nz.any(3).any(1).squeeze(0)
    for r0, r1 in _runs(rows):
        y[:, :, r0:r1].add_(d[:, :, r0:r1])
    if rows.any():
        d = d.clone()
        d[:, :, rows] = 0
        nz = d.ne(0)
    for c0, c1 in _runs(nz.any(2).any(1).squeeze(0)):
        y[:, :, :, c0:c1].add_(d[:, :, :, c0:c1])


def _constant_bias(const: torch.Tensor, x_shape: Sequence[int], conv_args: tuple) -> torch.Tensor:
    """The constant term's share of every output, ``(1, O, H', W')``: the sum of ``const (O, Cg, kh, kw)`` over
    the taps that fall inside the input (padded taps hold no product), the same for every sample (integers:
    exact)."""
    ones = torch.ones(1, *x_shape[1:], dtype=const.dtype, device=const.device)
    return F.conv2d(ones, const, None, *conv_args)


def approx_linear(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    appmul: AppMul | Sequence[AppMul] | EmulationPlan,
    *,
    assign: torch.Tensor | int | None = None,
    dtype: torch.dtype = torch.float32,
    error_table: torch.Tensor | Sequence[torch.Tensor] | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    x_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """Emulated integer matrix product ``sum_k LUT[x[n, k], w[o, k]]``, shape ``(..., O)`` in ``dtype``.

    ``x_codes``: ``(..., K)``, ``w_codes``: ``(O, K)``; ``assign``: scalar, ``(O,)`` or ``(O, K)``; ``x_sums``:
    ``x_codes.sum(-1, keepdim=True)`` when the caller has it. Other arguments as :func:`approx_conv2d`.
    """
    if w_codes.dim() != 2 or x_codes.shape[-1] != w_codes.shape[1]:
        raise ValueError(f"expected x (..., K) and w (O, K), got {tuple(x_codes.shape)}, {tuple(w_codes.shape)}")
    lead = x_codes.shape[:-1]
    x2 = x_codes.reshape(-1, x_codes.shape[-1])
    x_idx, wkey, plan, a_bits, w_bits, M = _prepare(x2, w_codes, appmul, assign, dtype, need_plan=error_table is None)
    if error_table is not None:
        E = _check_error_table(error_table, dtype, M, a_bits, w_bits)
        xi = x_idx()
        U, V = _counting_tables(E, xi, wkey)
        y = x2.to(dtype) @ w_codes.to(dtype).t() + _stacked_linear(xi, wkey, U, V, max_chunk_bytes)
    else:
        assert plan is not None
        O, K = w_codes.shape
        if plan.exact_only or not len(x2):  # no rows: an empty product
            y = x2.to(dtype) @ w_codes.to(dtype).t()
        elif plan.kind == "gather-only" or plan.r > LINEAR_STACKED_MAX_R and choose_method(
                plan, (1, K, len(x2), 1), (O, K, 1, 1), 1, 1, dtype, x2.device.type == "cpu") != "conv":
            # as a 1x1 convolution over the rows (batch 1, the rows as positions), for its gather and int8 paths:
            # a high-rank table took 200-2,300x the exact product stacked, 100-5,500x by direct gathers
            y = approx_conv2d(x2.t()[None, :, :, None], w_codes[:, :, None, None], appmul, assign=assign,
                              dtype=dtype, max_chunk_bytes=max_chunk_bytes,
                              x_sums=None if x_sums is None else x_sums.reshape(1, 1, -1, 1))[0, :, :, 0].t()
        else:
            # factors whose float32 sums may round are summed in float64 (exact; the result, an integer sum of
            # products below 2**24, is exact in dtype again): 1.5-3x the float32 time where the gather took 10-70x
            sum_dt = torch.float64 if stacked_rounds(plan, dtype, w_codes.shape[1]) else dtype
            U, V, sh, const = _stacked_tables(plan, x_codes.device, sum_dt, wkey)

            def compute() -> torch.Tensor:
                xi = x_idx(sh is not None)
                Ul, Vl, shl = _live_planes(xi, U, V, sh, a_bits)
                y = _stacked_linear(xi, wkey, Ul, Vl, max_chunk_bytes, shl, a_bits)
                y = y if const is None else y + const.sum(1)  # no padding: every input is a product
                return (y if plan.integer else torch.round(y)).to(dtype)

            y = _SteLinearFn.apply(x2, w_codes, compute, dtype)
    return y.reshape(*lead, w_codes.shape[0])

"""Quantized Conv2d / Linear layers with three modes: ``float``, ``exact`` (quantized) and ``approx`` (AppMuls).

Integer model of one output (FAMES Eq. (4)-(5)): with activation codes q_x (zero point z_x, per tensor)
and weight codes q_w (zero point z_w, per output channel),

    y = s_x s_w [ sum_i AppMul(q_x,i, q_w,i) - z_w sum_i q_x,i - z_x sum_i q_w,i + K z_x z_w ] + b,

where only the code products go through the AppMul; the zero-point terms are exact. Padding is applied in
the code domain with the code of real zero (z_x), so a padded position is multiplied like any other, as in
an accelerator that streams padded feature maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fames.appmul.core import AppMul
from fames.emulate.decompose import decompose_table
from fames.emulate.int8 import window_sums
from fames.emulate.kernels import (
    approx_conv2d,
    approx_linear,
    choose_method,
    error_plan,
    lut_plan,
    stacked_rounds,
    sums_may_pass,
)
from fames.errors import AppMulError, FamesError
from fames.quant.quantizer import Quantizer

MODES = ("float", "exact", "approx")
GRANULARITIES = ("layer", "filter", "kernel")


@dataclass
class Assignment:
    """AppMuls of one layer: ``appmuls[index[g]]`` serves group ``g``.

    ``index`` is a scalar (``layer``), ``(O,)`` (``filter``) or ``(O, C // groups)`` (``kernel``) long tensor.
    """

    appmuls: list[AppMul]
    index: torch.Tensor
    granularity: str = "layer"

    def names(self) -> list[str]:
        return [self.appmuls[i].name for i in self.index.flatten().tolist()]

    @property
    def peak(self) -> int:
        """The largest product magnitude any of the AppMuls returns (read afresh: a table may be edited in place, as
        the emulation's plan cache allows; about the cost of that cache's own check)."""
        return max(int(np.abs(m.lut).max()) for m in self.appmuls)


def _as_float(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Integer inputs (e.g. uint8 pixels, which the quantizers take as they are) in ``like``'s float type."""
    return x if x.is_floating_point() else x.to(like.dtype)


def _same_float(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Floating inputs of another precision (a half or double batch into a model fames converted to float32) in
    ``like``'s float type; integer inputs as they are."""
    return x.to(like.dtype) if x.is_floating_point() and x.dtype != like.dtype else x


class QuantLayer(nn.Module):
    """Shared machinery of :class:`QConv2d` and :class:`QLinear`."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_quant(self, w_bits: int, a_bits: int, signed: bool, out_channels: int) -> None:
        self.w_bits, self.a_bits, self.signed = w_bits, a_bits, signed
        self.act_quant = Quantizer(a_bits, signed, per_channel=False)
        self.weight_quant = Quantizer(w_bits, signed, per_channel=True, channels=out_channels, symmetric=signed)
        self.mode = "exact"
        self.assignment: Assignment | None = None
        # the exact design the hardware uses where this layer runs in exact mode (None: the reference exact multiplier
        # of its widths); energy figures charge it, the forward is the exact one either way
        self.exact_design: AppMul | None = None
        self._emulation_dtype: torch.dtype | None = None  # None: float32 where its sums are exact, else float64
        # Estimation hook: a (differentiable) error table used instead of the assignment (counting gradient).
        self.error_probe: torch.Tensor | None = None
        # Emulate by gathering from the LUTs instead of a factorized plan: for AppMuls used for only a few
        # forward passes (estimate validation), where planning would cost more than it saves.
        self.gather_only = False
        # Control-variate correction (fames.method.compensate.Compensation) subtracted from the approximate accumulator.
        self.compensation = None

    def extra_repr(self) -> str:
        a = self.assignment
        what = "" if a is None else f", appmuls={sorted({m.name for m in a.appmuls})} per {a.granularity}"
        return f"W{self.w_bits}A{self.a_bits}, {'signed' if self.signed else 'unsigned'}, mode={self.mode}{what}"

    @property
    def emulation_dtype(self) -> torch.dtype:
        """Float type the integer accumulations are emulated in: float32 (fast) while every sum of the layer's
        products is an integer float32 holds exactly, ``max |product| * fan-in < 2^24`` (W8A8 with exact signed
        products up to fan-in 1023, unsigned up to 258), else float64 (exact to 2^53); setting it overrides that."""
        if self._emulation_dtype is not None:
            return self._emulation_dtype
        if self.mode == "approx" and self.assignment is not None:
            peak = self.assignment.peak
        elif self.signed:  # exact products
            peak = 1 << (self.a_bits + self.w_bits - 2)
        else:
            peak = ((1 << self.a_bits) - 1) * ((1 << self.w_bits) - 1)
        return torch.float32 if peak * self.weight[0].numel() < 1 << 24 else torch.float64

    @emulation_dtype.setter
    def emulation_dtype(self, dtype: torch.dtype | None) -> None:
        self._emulation_dtype = dtype

    def batch_dtype(self, qx: torch.Tensor, sum_x: torch.Tensor | None = None) -> torch.dtype:
        """:attr:`emulation_dtype`, except that a layer whose worst case needs float64 emulates the batch of codes
        ``qx`` in float32 (6-20x faster) when its sums provably stay exact there: no partial sum of an output passes
        the sum over its taps of ``max_w |LUT[x_tap, w]|``, which must stay below ``2**24`` (unsigned W8A8 layers
        of 32+ channels: float64 by the worst case, float32 on real activations). ``sum_x``: :meth:`sum_x` of
        ``qx`` when the caller has it (it bounds that sum for unsigned codes at no further cost)."""
        dt = self.emulation_dtype
        a = self.assignment
        if dt != torch.float64 or self._emulation_dtype is not None or a is None or self.error_probe is not None \
                or not qx.numel():
            return dt
        rows = np.max([np.abs(m.lut).max(1) for m in a.appmuls], axis=0)  # by activation bit pattern
        def code_sums() -> float:
            return float((self.tap_sums(qx, torch.float32) if sum_x is None else sum_x).detach().max())

        exceeds = sums_may_pass(rows.astype(np.float64), qx, self.a_bits, self.weight[0].numel(), 1 << 24,
                                lambda v: self.tap_sums(v, torch.float32), code_sums=code_sums)
        return dt if exceeds else torch.float32

    @property
    def widths(self) -> tuple[int, int, bool, bool]:
        """Widths an AppMul of this layer must have: ``(a_bits, w_bits, a_signed, w_signed)``."""
        return (self.a_bits, self.w_bits, self.signed, self.signed)

    def group_shape(self, granularity: str) -> tuple[int, ...]:
        o = self.weight.shape[0]
        return {"layer": (), "filter": (o,), "kernel": (o, self.weight.shape[1])}[granularity]

    def set_assignment(
        self, appmuls: AppMul | list[AppMul], index: torch.Tensor | None = None, granularity: str = "layer"
    ) -> None:
        """Use ``appmuls`` (one, or a list indexed by ``index`` per filter/kernel) and switch to ``approx``."""
        if granularity not in GRANULARITIES:
            raise FamesError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
        ms = [appmuls] if isinstance(appmuls, AppMul) else list(appmuls)
        for m in ms:
            if m.widths != self.widths:
                raise AppMulError(
                    f"AppMul {m.name!r} is {m.signature()} but this layer multiplies "
                    f"{self.a_bits}-bit x {self.w_bits}-bit {'signed' if self.signed else 'unsigned'} codes; "
                    f"choose an AppMul with a_bits={self.a_bits}, w_bits={self.w_bits}, signed={self.signed}"
                )
        shape = self.group_shape(granularity)
        if index is None:
            if len(ms) != 1:
                raise FamesError("several AppMuls need an index tensor telling which group uses which")
            index = torch.zeros(shape, dtype=torch.long)
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        if tuple(index.shape) != shape:
            raise FamesError(f"{granularity} assignment needs an index of shape {shape}, got {tuple(index.shape)}")
        if index.numel() and (index.min() < 0 or index.max() >= len(ms)):
            raise FamesError(f"assignment index out of range 0..{len(ms) - 1}")
        self.assignment = Assignment(ms, index, granularity)
        self.mode = "approx"
        self.exact_design = None
        self.compensation = None  # a correction is fitted to one AppMul: never carry it over to another

    def clear_assignment(self, exact: AppMul | None = None) -> None:
        """Back to exact mode; ``exact``: the exact design (of this layer's widths) the hardware uses here, when it is
        not the reference exact multiplier (e.g. a faster exact structure): energy figures charge its cost."""
        if exact is not None and (not exact.is_exact() or exact.widths != self.widths):
            raise AppMulError(f"{exact.name!r} ({exact.signature()}) is not an exact multiplier of this layer's "
                              f"widths {self.widths}")
        self.assignment = None
        self.mode = "exact"
        self.exact_design = exact
        self.compensation = None

    # ------------------------------------------------------------------ integer pieces
    def weight_codes(self) -> torch.Tensor:
        return self.weight_quant.codes(self.weight)

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant.dequantize(self.weight_codes())

    # The public integer view (subclasses provide it; compensation and estimation hooks build on it):
    # operands(x) -> (qx, qw) integer codes (activation codes padded in the code domain),
    # integer(qx, qw, **emulation_args(device)) -> approximate accumulator, exact_integer(qx, qw), sum_x(qx, qw),
    # patches(qx) / output_rows(y) / kernel_rows(qw) (unfolded (groups, rows, taps, positions) views),
    # output_shape(in_shape) / rows_to_output(rows, out_shape) (one sample's rows back to the output shape),
    # error_scale(view, dtype) (s_x s_w per output channel: integer error -> output units), and VIEW, the broadcast
    # shape of a per-output-channel vector. _weight_code_sums(G, w1h, in_shape) is used by counting_tables only.
    VIEW: tuple[int, ...] = (-1,)

    def _approx(self, x: torch.Tensor) -> torch.Tensor:
        qx, qw = self.operands(x)
        sum_x = self.sum_x(qx, qw) if bool((self.weight_quant.zero_point != 0).any()) else None
        acc = self.integer(qx, qw, **self.emulation_args(x.device), dtype=self.batch_dtype(qx, sum_x), x_sums=sum_x)
        if self.compensation is not None and self.error_probe is None:
            acc = acc.to(self.emulation_dtype)  # exact integers either way: the correction as for any batch
            acc = acc - self.compensation.correction(self, qx, qw, acc).to(acc.dtype)
        return self._combine(acc, sum_x, qw, qw[0].numel(), self.VIEW).to(
            x.dtype if x.is_floating_point() else self.weight.dtype)

    @torch.no_grad()
    def error_contributions(
        self, x: torch.Tensor, appmuls: list[AppMul], scaled: bool = True
    ) -> Iterator[torch.Tensor | None]:
        """For each AppMul A: ``dY_A = s_x s_w sum_i E_A[x_i, w_i]``, the change of this layer's output when it
        uses A instead of the exact multiplier (float64; None for an exact A). Codes are computed once; each
        error sum is gathered from the error table (float32 when every partial sum is an exact float32 integer).
        ``scaled=False``: the integer error sums ``sum_i E_A[x_i, w_i]`` as computed (float32 or float64), to be
        scaled by :meth:`error_scale` by the caller (one multiply per layer instead of one per AppMul).
        """
        qx, qw = self.operands(x)
        scale = self.error_scale(self.VIEW, torch.float64) if scaled else None
        fan_in = qw[0].numel()
        for m in appmuls:
            if m.widths != self.widths:
                raise AppMulError(f"AppMul {m.name} is {m.signature()}; this layer needs {self.widths}")
            if m.is_exact():
                yield None
                continue
            plan = error_plan(m)
            # float32 is exact when the sums stay below 2**24 and the plan's factors are integers whose partial sums
            # do too; float (SVD) factors round in float32, so there float32 runs the exact gather (or int8) unless
            # float64 would not gather either (a few float factor terms in float64 beat the gather)
            small = int(np.abs(m.error()).max()) * fan_in < 1 << 24
            stacked = not stacked_rounds(plan, torch.float32, fan_in)
            gathers = qw.dim() == 4 and choose_method(plan, qx.shape, qw.shape, dtype=torch.float64) == "gather"
            exact32 = small and (stacked or gathers)
            dt = torch.float32 if exact32 else torch.float64
            acc = self.integer(qx, qw, appmul=plan, assign=None, dtype=dt)
            yield acc if scale is None else acc.double() * scale

    @torch.no_grad()
    def code_histogram(self, x: torch.Tensor, max_elems: int = 1 << 21) -> torch.Tensor:
        """Counts of the activation codes read at every (group, tap, output position) over the batch ``x (S, ...)``:
        ``(groups, taps, positions, 2^a)`` int64 (padding reads the code of real zero). ``max_elems`` bounds the
        codes of a block of samples."""
        qx, _ = self.operands(x)
        na = 1 << self.a_bits
        hist = None
        step = max(1, max_elems // max(1, self.patches(qx[:1]).numel()))
        for s0 in range(0, qx.shape[0], step):
            codes = self.patches(qx[s0 : s0 + step]) & (na - 1)  # (s, groups, taps, positions)
            base = torch.arange(codes[0].numel()).view(codes.shape[1:]) * na
            h = torch.bincount((base + codes).flatten(), minlength=codes[0].numel() * na)
            hist = h if hist is None else hist + h
        return hist.view(*codes.shape[1:], na)

    @torch.no_grad()
    def operand_histogram(self, x: torch.Tensor, per_channel: bool = False) -> np.ndarray:
        """Counts ``(2^a, 2^w)`` float64 of the (activation code, weight code) bit-pattern pairs the layer's
        multipliers see on the batch ``x (S, ...)``: every tap of every output channel at every position, exactly.
        ``per_channel``: one count matrix per output channel, ``(O, 2^a, 2^w)`` (their sum is the layer's)."""
        acts = self.code_histogram(x).sum(2).double()  # (groups, taps, 2^a)
        qw = self.kernel_rows(self.weight_codes()) & ((1 << self.w_bits) - 1)  # (groups, O/groups, taps)
        if per_channel:
            wts = F.one_hot(qw, 1 << self.w_bits).double()  # (groups, O/groups, taps, 2^w)
            h = torch.einsum("gta,gotw->goaw", acts, wts)
            return h.reshape(-1, *h.shape[2:]).numpy()
        wts = F.one_hot(qw, 1 << self.w_bits).sum(1).double()  # (groups, taps, 2^w)
        return torch.einsum("gta,gtw->aw", acts, wts).numpy()

    @torch.no_grad()
    def histogram_errors(
        self, counts: torch.Tensor, n: int, appmuls: list[AppMul], out_shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Mean output error of each AppMul over ``n`` samples whose :meth:`code_histogram` is ``counts``:
        ``(K, *out_shape)`` float64, ``out_shape`` one sample's output shape. Each error table is read at the
        weight codes, ``E[a, w[o, tap]]``, and contracted with the counts over (tap, a): one batched matmul per
        AppMul (float32 while every partial sum is an exact integer)."""
        nw = 1 << self.w_bits
        scale = self.error_scale(self.VIEW, torch.float64)
        rows_w = self.kernel_rows(self.weight_codes()) & (nw - 1)  # (groups, O/groups, taps)
        g, t, p, na = counts.shape
        hist = counts.permute(0, 1, 3, 2).reshape(g, t * na, p)  # (groups, taps * 2^a, positions)
        h32 = hist.float() if n * t <= 1 << 24 else None
        h64 = None
        out = []
        for m in appmuls:
            if m.widths != self.widths:
                raise AppMulError(f"AppMul {m.name} is {m.signature()}; this layer needs {self.widths}")
            E = torch.from_numpy(m.error().T.copy())  # (2^w, 2^a)
            exact32 = h32 is not None and n * t * int(E.abs().max()) < 1 << 24
            if not exact32 and h64 is None:
                h64 = hist.double()
            h, dt = (h32, torch.float32) if exact32 else (h64, torch.float64)
            Ew = E.to(dt)[rows_w].reshape(g, rows_w.shape[1], t * na)  # (groups, O/groups, taps * 2^a)
            rows = torch.bmm(Ew, h).double() / n  # (groups, O/groups, positions)
            out.append((self.rows_to_output(rows, out_shape)[None] * scale)[0])  # scale broadcasts over a batch
        return torch.stack(out)

    def mean_errors(self, x: torch.Tensor, appmuls: list[AppMul], max_elems: int = 1 << 21) -> torch.Tensor:
        """``mean_s dY_A[s]`` for each AppMul A: ``(K, *output.shape[1:])`` float64, the expected output error over
        the batch ``x (S, ...)`` at every output position (zero for an exact A), from the code histogram: no
        emulation."""
        counts = self.code_histogram(x, max_elems)
        return self.histogram_errors(counts, x.shape[0], appmuls, self.output_shape(x.shape))

    @torch.no_grad()
    def counting_tables(self, x: torch.Tensor, grads: list[torch.Tensor], max_elems: int = 1 << 21) -> torch.Tensor:
        """Per-sample counting matrices weighted by output gradients: ``(len(grads), S, 2^a, 2^w)`` float64.

        ``U[k, s, a, b] = s_x s_w sum_{o, i} G_k[s, o] [q_x,i = a] [q_w,o,i = b]`` for layer input ``x (S, ...)``
        and gradients ``G_k`` shaped like the layer output ``(S, O, ...)``, so that for any error table E the
        inner product ``<G_k[s], dY_E[s]> = sum_{a,b} U[k, s, a, b] E[a, b]``. Per block of samples: the input
        gradient of the layer with the one-hot weight codes as weights (``2^w`` channels per input channel),
        then a per-sample product with the one-hot activation codes. ``max_elems`` bounds the block's
        intermediate tensors (float32 elements). Codes index the LUT (two's-complement bit patterns).
        """
        qx, qw = self.operands(x)
        na, nw = 1 << self.a_bits, 1 << self.w_bits
        w1h = F.one_hot(qw.long() & (nw - 1), nw).float()  # (O, ..., nw)
        k, S = len(grads), qx.shape[0]
        scale = self.error_scale(self.VIEW, torch.float64)
        G = torch.stack([(gk.double() * scale).float() for gk in grads], 1)  # (S, k, *output)
        out = torch.empty(k, S, na, nw, dtype=torch.float64)
        step = max(1, max_elems // (qx[0].numel() * max(na, k * nw)))
        for s0 in range(0, S, step):
            s1 = min(S, s0 + step)
            d = self._weight_code_sums(G[s0:s1], w1h, qx.shape[1:])  # (s, k, nw, P): P = activation positions
            x1h = F.one_hot(qx[s0:s1].long().reshape(s1 - s0, -1) & (na - 1), na).float()  # (s, P, na)
            out[:, s0:s1] = (d.flatten(1, 2) @ x1h).view(s1 - s0, k, nw, na).permute(1, 0, 3, 2).double()
        return out

    @torch.no_grad()
    def kernel_projections(
        self, x: torch.Tensor, grads: list[torch.Tensor], appmuls: list[AppMul], max_elems: int = 1 << 21
    ) -> torch.Tensor:
        """``<G_k[s], dY_A[s]>`` restricted to the products of each kernel: ``(len(grads), S, O, C/groups, K)``.

        Kernel ``(o, c)`` holds the products of output channel o with input channel c (for a Linear layer, the
        single weight ``(o, i)``). With one exact factorization of all K error tables side by side,
        ``E_A = sum_r u_r v_{A,r}^T``, the restricted inner product is ``sum_r sum_tap v_{A,r}(w[o,c,tap])
        T_r[s,o,c,tap]``, where ``T_r[s]`` is the weight gradient of the layer for input ``u_r(X_s)`` and output
        gradient ``s_x s_w G_k[s]``: r batched matmuls per gradient, for every kernel and candidate at once.
        ``grads`` are shaped like the layer output ``(S, O, ...)``; ``max_elems`` bounds the unfolded input of a
        block of samples (float64 elements).
        """
        for m in appmuls:
            if m.widths != self.widths:
                raise AppMulError(f"AppMul {m.name} is {m.signature()}; this layer needs {self.widths}")
        qx, qw = self.operands(x)
        na, nw = 1 << self.a_bits, 1 << self.w_bits
        K, S = len(appmuls), qx.shape[0]
        f = decompose_table(np.concatenate([m.error() for m in appmuls], 1))  # U (na, r), V (K * nw, r)
        U = torch.from_numpy(f.U)
        rows = self.kernel_rows(qw) & (nw - 1)  # (groups, O/groups, C/groups * taps)
        O, Cg = qw.shape[0], qw.shape[1]
        V = torch.from_numpy(f.V).view(K, nw, f.r)[:, rows.reshape(O, Cg, -1)]  # (K, O, C/groups, taps, r)
        scale = self.error_scale(self.VIEW, torch.float64)
        out = torch.zeros(len(grads), S, O, Cg, K, dtype=torch.float64)
        if f.r == 0:
            return out
        step = max(1, max_elems // (qx[0].numel() * (rows.shape[-1] // Cg)))
        for s0 in range(0, S, step):
            s1 = min(S, s0 + step)
            codes = self.patches(qx[s0:s1]) & (na - 1)  # (s, groups, C/groups * taps, positions)
            gk = [self.output_rows(g[s0:s1].double() * scale) for g in grads]  # (s, groups, O/groups, positions)
            for r in range(f.r):
                u = U[:, r][codes].transpose(-1, -2)  # (s, groups, positions, C/groups * taps)
                for k, g in enumerate(gk):
                    t = (g @ u).view(s1 - s0, O, Cg, -1)  # (s, O, C/groups, taps)
                    out[k, s0:s1] += torch.einsum("soct,koct->sock", t, V[..., r])
        return out

    def emulation_args(self, device: torch.device) -> dict:
        """AppMuls, assignment index and error table for the emulation kernels."""
        if self.error_probe is not None:
            return {"appmul": _exact_appmul(self.widths), "assign": None, "error_table": self.error_probe}
        a = self.assignment
        if a is None:
            raise FamesError("layer is in approx mode without an assignment; call set_assignment first")
        idx = a.index.to(device) if a.granularity != "layer" else None
        return {"appmul": lut_plan(a.appmuls) if self.gather_only else a.appmuls, "assign": idx, "error_table": None}

    def error_scale(self, view: tuple[int, ...], dt: torch.dtype) -> torch.Tensor:
        sx, _ = self.act_quant.params(0)
        return (sx.to(dt) * self.weight_quant.scale.abs().clamp_min(1e-12).to(dt)).view(view)

    def _combine(
        self, acc: torch.Tensor, sum_x: torch.Tensor | None, qw: torch.Tensor, fan_in: int, view: tuple[int, ...]
    ) -> torch.Tensor:
        """Dequantize an integer accumulator, adding the exact zero-point terms (see module docstring).

        ``y = s (acc + c - z_w sum_x) + b`` with ``c = K z_x z_w - z_x sum_w`` per output channel. With a weight zero
        point (affine weights, ``sum_x`` given) the bracket, a sum of integers up to 2**8 times the result, is added up
        first and exactly (in float32 where every partial sum provably stays below ``2**24`` on this batch, else in
        float64), then scaled once in float32 (float64 for a float64 model), so the output depends on that integer
        alone, not on the dtype the batch was emulated in: scaled before they were added, the terms cancelled in
        float32 rounding (38x the error of the fake-quantized float layer, W2A2 Linear of fan-in 4,096). Without one
        (symmetric weights, whose
        activations' zero point is a few codes) ``s c`` joins the bias and the accumulator is scaled in one fused
        multiply-add, in the layer's :attr:`emulation_dtype`."""
        sx, zx = self.act_quant.params(0)
        sw, zw = self.weight_quant.scale.abs().clamp_min(1e-12), self.weight_quant.zero_point
        c = None
        if bool(zx != 0):  # float64: exact integers
            sum_w = qw.reshape(qw.shape[0], -1).sum(1).double()
            c = fan_in * zx.double() * zw.double() - zx.double() * sum_w
        if sum_x is None:  # in the layer's dtype whatever the batch's: an image's output is that of its own codes
            acc = acc.to(self.emulation_dtype)
            dt = acc.dtype
            scale = sx.to(dt) * sw.to(dt)
            shift = torch.zeros_like(scale) if self.bias is None else self.bias.to(dt)
            if c is not None:
                shift = shift + scale * c.to(dt)
            return torch.addcmul(shift.view(view), acc, scale.view(view))
        dt = acc.dtype
        if dt != torch.float64 and acc.numel():
            lo, hi = torch.aminmax(acc)
            bound = max(-float(lo), float(hi)) + float(zw.abs().max()) * float(sum_x.abs().max())
            bound += 0.0 if c is None else float(c.abs().max())
            dt = torch.float64 if bound >= 1 << 24 else dt
        t = torch.addcmul(acc.to(dt), sum_x.to(dt), -zw.to(dt).view(view))  # a new tensor (not the kernel's output)
        if c is not None:
            t.add_(c.to(dt).view(view))
        out = torch.promote_types(torch.float32, self.weight.dtype)  # (a float64 model keeps its precision)
        scale = (sx.to(out) * sw.to(out)).view(view)
        shift = torch.zeros_like(scale) if self.bias is None else self.bias.to(out).view(view)
        return torch.addcmul(shift, t.to(out), scale)


_EXACT: dict[tuple, AppMul] = {}


def _exact_appmul(widths: tuple[int, int, bool, bool]) -> AppMul:
    """The exact multiplier of the given widths (LUT only), cached."""
    if widths not in _EXACT:
        from fames.appmul.core import exact_lut

        a, w, sa, sw = widths
        _EXACT[widths] = AppMul(f"exact_{a}x{w}", a, w, sa, sw, exact_lut(a, w, sa, sw), provenance={"family": "exact"})
    return _EXACT[widths]


def _copy_parameters(q: QuantLayer, m: nn.Module) -> nn.Module:
    with torch.no_grad():
        m.weight.copy_(q.weight)
        if q.bias is not None:
            m.bias.copy_(q.bias)
    return m.to(q.weight.device)


def conv_padding(conv: nn.Conv2d) -> tuple[int, ...] | None:
    """The numeric zero padding ``(ph, pw)`` of ``conv``; None when it pads otherwise (``padding_mode`` other than
    ``zeros``, or ``'same'`` that needs more padding on one side than the other)."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return None if any(t % 2 for t in total) else tuple(t // 2 for t in total)
    return tuple(conv.padding)


class QConv2d(QuantLayer):
    """Quantized ``Conv2d`` (any stride, padding, dilation, groups); input ``(N, C, H, W)``."""

    VIEW = (1, -1, 1, 1)

    def __init__(self, conv: nn.Conv2d, w_bits: int, a_bits: int, signed: bool) -> None:
        super().__init__()
        padding = conv_padding(conv)
        if padding is None:
            raise FamesError(f"QConv2d supports zero padding only (this conv: padding_mode={conv.padding_mode!r}, "
                             f"padding={conv.padding!r}); pad explicitly before the conv")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self._init_quant(w_bits, a_bits, signed, conv.out_channels)

    def to_float(self) -> nn.Conv2d:
        """The float ``Conv2d`` this layer was made from (same weights and bias)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None)
        return _copy_parameters(self, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.stride, self.padding, self.dilation, self.groups)
        x = _same_float(x, self.weight)
        if self.mode == "float" or self.act_quant.observing:
            self.act_quant(x) if self.act_quant.observing else None
            return F.conv2d(_as_float(x, self.weight), self.weight, self.bias, *args)
        if self.mode == "exact":
            return F.conv2d(self.act_quant(x), self.quantized_weight(), self.bias, *args)
        return self._approx(x)

    def operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx = self.act_quant.codes(x)
        ph, pw = self.padding
        if ph or pw:  # pad with the code of real zero
            qx = F.pad(qx, (pw, pw, ph, ph), value=float(self.act_quant.zero_point))
        return qx, self.weight_codes()

    def integer(self, qx: torch.Tensor, qw: torch.Tensor, **emu) -> torch.Tensor:
        emu.setdefault("dtype", self.emulation_dtype)
        return approx_conv2d(qx, qw, stride=self.stride, dilation=self.dilation, groups=self.groups, **emu)

    def _conv(self, qx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        dt = self.emulation_dtype
        return F.conv2d(qx.to(dt), w.to(dt), None, self.stride, 0, self.dilation, self.groups)

    def exact_integer(self, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
        return self._conv(qx, qw)

    def sum_x(self, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
        """Window sums of the activation codes per group, ``(N, groups, Ho, Wo)``, broadcast over each group's
        outputs: ``(N, 1, Ho, Wo)`` for an ordinary convolution (channels summed first, then one box filter:
        ``1 / O`` of a ones-weight convolution's work)."""
        return self.tap_sums(qx, self.emulation_dtype)

    def tap_sums(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Sums of ``v (N, C, H, W)`` (padded, as the codes) over each output's taps, per group, in ``dtype``."""
        args = (self.stride, (0, 0), self.dilation, self.groups)  # qx is padded already
        return window_sums(v, self.kernel_size, args, self.out_channels, dtype)

    def patches(self, qx: torch.Tensor) -> torch.Tensor:
        """Padded activation codes ``(N, C, H, W)`` -> ``(N, groups, C/groups * kh * kw, positions)`` long."""
        cols = F.unfold(qx.float(), self.kernel_size, self.dilation, 0, self.stride)
        return cols.round().long().view(qx.shape[0], self.groups, -1, cols.shape[-1])

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        """Output-shaped ``(N, O, Ho, Wo)`` -> ``(N, groups, O/groups, positions)``."""
        return y.reshape(y.shape[0], self.groups, -1, y.shape[2] * y.shape[3])

    def kernel_rows(self, qw: torch.Tensor) -> torch.Tensor:
        """Weight codes ``(O, C/groups, kh, kw)`` -> ``(groups, O/groups, C/groups * kh * kw)``."""
        return qw.long().reshape(self.groups, qw.shape[0] // self.groups, -1)

    def output_shape(self, in_shape: torch.Size) -> tuple[int, ...]:
        """One sample's output shape ``(O, Ho, Wo)`` for an input ``(N, C, H, W)``."""
        geometry = zip(in_shape[2:], self.padding, self.dilation, self.kernel_size, self.stride, strict=True)
        hw = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in geometry)
        return (self.weight.shape[0], *hw)

    def rows_to_output(self, rows: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
        """One sample's ``(groups, O/groups, positions)`` -> ``out_shape`` ``(O, Ho, Wo)``."""
        return rows.reshape(out_shape)

    def _weight_code_sums(self, G: torch.Tensor, w1h: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
        """``d[s, k, b, p] = sum over (o, tap) reading input position p of G[s, k, o] [q_w,o,tap = b]``.

        ``G (s, k, O, Ho, Wo)``, one-hot weight codes ``w1h (O, C/groups, kh, kw, nw)``, padded input shape
        ``(C, H, W)``: the input gradient of this convolution with ``w1h`` as its weights.
        """
        s, k, O = G.shape[:3]
        C, H, W = in_shape
        nw = w1h.shape[-1]
        wt = w1h.permute(0, 1, 4, 2, 3).reshape(O, -1, *self.kernel_size)  # channel order (c, b) per group
        d = torch.nn.grad.conv2d_input(
            (s * k, C * nw, H, W), wt, G.reshape(s * k, O, *G.shape[3:]), self.stride, 0, self.dilation, self.groups
        )
        return d.view(s, k, C, nw, H * W).transpose(2, 3).reshape(s, k, nw, C * H * W)


class QLinear(QuantLayer):
    """Quantized ``Linear``; input ``(..., in_features)``."""

    VIEW = (-1,)

    def __init__(self, lin: nn.Linear, w_bits: int, a_bits: int, signed: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone()) if lin.bias is not None else None
        self._init_quant(w_bits, a_bits, signed, lin.out_features)

    def to_float(self) -> nn.Linear:
        """The float ``Linear`` this layer was made from (same weights and bias)."""
        return _copy_parameters(self, nn.Linear(self.in_features, self.out_features, bias=self.bias is not None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same_float(x, self.weight)
        if self.mode == "float" or self.act_quant.observing:
            self.act_quant(x) if self.act_quant.observing else None
            return F.linear(_as_float(x, self.weight), self.weight, self.bias)
        if self.mode == "exact":
            return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)
        return self._approx(x)

    def operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.act_quant.codes(x), self.weight_codes()

    def integer(self, qx: torch.Tensor, qw: torch.Tensor, **emu) -> torch.Tensor:
        emu.setdefault("dtype", self.emulation_dtype)
        return approx_linear(qx, qw, **emu)

    def exact_integer(self, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
        dt = self.emulation_dtype
        return F.linear(qx.to(dt), qw.to(dt))

    def sum_x(self, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
        return self.tap_sums(qx, self.emulation_dtype)

    def tap_sums(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Sums of ``v (..., in)`` over each output's inputs, ``(..., 1)`` in ``dtype``."""
        return v.to(dtype).sum(-1, keepdim=True)

    def patches(self, qx: torch.Tensor) -> torch.Tensor:
        """Activation codes ``(N, ..., in)`` -> ``(N, 1, in, positions)`` long (positions = the middle dims)."""
        return qx.long().reshape(qx.shape[0], -1, qx.shape[-1]).transpose(1, 2).unsqueeze(1)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        """Output-shaped ``(N, ..., O)`` -> ``(N, 1, O, positions)``."""
        return y.reshape(y.shape[0], -1, y.shape[-1]).transpose(1, 2).unsqueeze(1)

    def kernel_rows(self, qw: torch.Tensor) -> torch.Tensor:
        return qw.long().unsqueeze(0)

    def output_shape(self, in_shape: torch.Size) -> tuple[int, ...]:
        """One sample's output shape ``(..., O)`` for an input ``(N, ..., in)``."""
        return (*in_shape[1:-1], self.weight.shape[0])

    def rows_to_output(self, rows: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
        """One sample's ``(1, O, positions)`` -> ``out_shape`` ``(..., O)``."""
        return rows[0].T.reshape(out_shape)

    def _weight_code_sums(self, G: torch.Tensor, w1h: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
        """``d[s, k, b, (l, i)] = sum_o G[s, k, l, o] [q_w,o,i = b]``; ``G (s, k, ..., O)``, ``w1h (O, in, nw)``."""
        s, k, O = G.shape[0], G.shape[1], G.shape[-1]
        n_in, nw = w1h.shape[1:]
        d = G.reshape(-1, O) @ w1h.reshape(O, -1)  # (s * k * L, in * nw)
        return d.view(s, k, -1, n_in, nw).permute(0, 1, 4, 2, 3).reshape(s, k, nw, -1)

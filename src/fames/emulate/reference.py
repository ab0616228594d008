"""Slow naive-gather reference of AppMul emulation (for tests only).

Every product of the convolution is looked up in its LUT with int64 arithmetic and summed; padded positions
contribute no product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fames.appmul.core import AppMul

__all__ = ["reference_conv2d", "reference_linear", "product_counts_grad"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _luts(appmul: AppMul | Sequence[AppMul] | np.ndarray) -> torch.Tensor:
    if isinstance(appmul, AppMul):
        return torch.as_tensor(appmul.lut.astype(np.int64))[None]
    if isinstance(appmul, np.ndarray):
        return torch.as_tensor(appmul.astype(np.int64)).reshape(-1, *appmul.shape[-2:])
    return torch.stack(
        [torch.as_tensor(np.asarray(m.lut if isinstance(m, AppMul) else m, dtype=np.int64)) for m in appmul]
    )


def _assign_full(assign: torch.Tensor | int | None, O: int, Cg: int) -> torch.Tensor:
    if assign is None:
        return torch.zeros(O, Cg, dtype=torch.int64)
    a = torch.as_tensor(assign).to(torch.int64).cpu()
    if a.dim() == 0:
        return a.expand(O, Cg).clone()
    if a.dim() == 1:
        return a[:, None].expand(O, Cg).clone()
    return a.clone()


def _products(x_codes, w_codes, luts, stride, padding, dilation, groups, assign):  # type: ignore[no-untyped-def]
    """Per-group lists of (LUT values (N, Og, Cg*kk, L) int64, valid mask, geometry)."""
    N, C, H, W = x_codes.shape
    O, Cg, kh, kw = w_codes.shape
    st, pd, dl = _pair(stride), _pair(padding), _pair(dilation)
    A, Wn = luts.shape[-2:]
    x = torch.round(x_codes.detach().double().cpu()).to(torch.int64)
    w = torch.round(w_codes.detach().double().cpu()).to(torch.int64)
    m = _assign_full(assign, O, Cg)
    xi = torch.remainder(x, A).double()
    valid = F.unfold(torch.ones(1, C, H, W, dtype=torch.float64), (kh, kw), dl, pd, st)[0]  # (C*kk, L)
    cols = F.unfold(xi, (kh, kw), dl, pd, st).to(torch.int64)  # (N, C*kk, L)
    Hout = (H + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
    Wout = (W + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
    Og = O // groups
    kk = kh * kw
    out = []
    for g in range(groups):
        c = cols[:, g * Cg * kk : (g + 1) * Cg * kk]  # (N, Cg*kk, L)
        v = valid[g * Cg * kk : (g + 1) * Cg * kk]  # (Cg*kk, L)
        wg = torch.remainder(w[g * Og : (g + 1) * Og].reshape(Og, Cg * kk), Wn)  # (Og, Cg*kk)
        mg = m[g * Og : (g + 1) * Og].repeat_interleave(kk, dim=1)  # (Og, Cg*kk)
        out.append((c, v, wg, mg))
    return out, (N, O, Hout, Wout)


def reference_conv2d(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    appmul: AppMul | Sequence[AppMul] | np.ndarray,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    assign: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """``out[n, o, p] = sum_i LUT_{assign}[x_i, w_i]`` by direct gathers, int64 ``(N, O, H', W')``.

    ``appmul``: AppMul, list of AppMuls/LUTs, or a LUT array ``(2**a, 2**w)`` / ``(M, 2**a, 2**w)``;
    ``assign``: None, scalar, ``(O,)`` or ``(O, C // groups)`` index into that list.
    """
    luts = _luts(appmul)
    parts, (N, O, Ho, Wo) = _products(x_codes, w_codes, luts, stride, padding, dilation, groups, assign)
    res = []
    for c, v, wg, mg in parts:
        # (N, Og, Cg*kk, L)
        vals = luts[mg[None, :, :, None], c[:, None, :, :], wg[None, :, :, None]]
        res.append((vals * v.to(torch.int64)[None, None]).sum(2))
    return torch.cat(res, 1).reshape(N, O, Ho, Wo)


def reference_linear(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    appmul: AppMul | Sequence[AppMul] | np.ndarray,
    assign: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """``out[n, o] = sum_k LUT_{assign}[x[n, k], w[o, k]]``, int64 ``(N, O)``."""
    N, K = x_codes.shape
    out = reference_conv2d(
        x_codes.reshape(N, K, 1, 1), w_codes.reshape(*w_codes.shape, 1, 1), appmul, assign=assign
    )
    return out.reshape(N, -1)


def product_counts_grad(
    x_codes: torch.Tensor,
    w_codes: torch.Tensor,
    grad_out: torch.Tensor,
    n_tables: int,
    a_bits: int,
    w_bits: int,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    assign: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Closed-form ``dL/dE[m, a, b] = sum_o dL/dY_o * #{products of o with x = a, w = b, AppMul m}``.

    ``grad_out``: ``(N, O, H', W')``; returns float64 ``(n_tables, 2**a_bits, 2**w_bits)``.
    """
    A, Wn = 1 << a_bits, 1 << w_bits
    dummy = torch.zeros(n_tables, A, Wn, dtype=torch.int64)
    parts, (N, O, Ho, Wo) = _products(x_codes, w_codes, dummy, stride, padding, dilation, groups, assign)
    g = grad_out.detach().double().cpu().reshape(N, O, Ho * Wo)
    Og = O // groups
    dE = torch.zeros(n_tables * A * Wn, dtype=torch.float64)
    for gi, (c, v, wg, mg) in enumerate(parts):
        key = mg[None, :, :, None] * (A * Wn) + c[:, None, :, :] * Wn + wg[None, :, :, None]
        weight = g[:, gi * Og : (gi + 1) * Og, None, :] * v[None, None]
        key, weight = torch.broadcast_tensors(key, weight)
        dE.index_add_(0, key.reshape(-1), weight.reshape(-1))
    return dE.reshape(n_tables, A, Wn)

"""Shared builders for the emulation tests."""

from __future__ import annotations

import numpy as np
import torch

from fames.appmul.core import AppMul, exact_lut, operand_values, output_range

GEOMS = [  # convolution geometries of the exactness tests: (C, O, k, stride, padding, dilation, groups)
    (3, 4, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 1, 1, 2),
    (4, 4, 3, 1, 2, 2, 4),  # depthwise, dilated
    (2, 3, (1, 3), (2, 1), (0, 1), 1, 1),
]


def random_appmul(a: int, w: int, sa: bool, sw: bool, seed: int = 0, name: str = "rnd") -> AppMul:
    """A full-rank random LUT within the product range."""
    rng = np.random.default_rng(seed)
    lo, hi = output_range(a, w, sa, sw)
    return AppMul(name, a, w, sa, sw, rng.integers(lo, hi + 1, (1 << a, 1 << w)))


def operand_trunc_appmul(a: int, w: int, sa: bool, sw: bool, k: int = 1, name: str = "optr") -> AppMul:
    """Activation with its ``k`` LSBs cleared times the exact weight (E and LUT of rank 1)."""
    av = operand_values(a, sa)
    lut = np.multiply.outer((av >> k) << k, operand_values(w, sw))
    lo, hi = output_range(a, w, sa, sw)
    return AppMul(name, a, w, sa, sw, np.clip(lut, lo, hi))


def pp_trunc_appmul(a: int, w: int, k: int = 3, name: str = "pptr") -> AppMul:
    """Unsigned partial-product truncation: drop bits x_i w_j with i + j < k (low-rank E)."""
    xb = (np.arange(1 << a)[:, None] >> np.arange(a)) & 1  # (2**a, a)
    wb = (np.arange(1 << w)[:, None] >> np.arange(w)) & 1
    lut = exact_lut(a, w).copy()
    for i in range(a):
        for j in range(w):
            if i + j < k:
                lut -= np.multiply.outer(xb[:, i], wb[:, j]) << (i + j)
    return AppMul(name, a, w, False, False, lut)


def codes(bits: int, signed: bool, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random integer operand values of the given width, as float64."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return torch.randint(lo, hi + 1, shape, generator=gen).double()

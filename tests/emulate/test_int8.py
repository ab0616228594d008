"""The int8 path (uint8 activation planes x int8 weights in oneDNN's quantized convolution): the lowering
reconstructs the table exactly, and the convolution is bit-exact against the naive reference on high-rank
tables, with groups, stride, padding, dilation, mixed assignments, dropped planes and chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fames.appmul.core import AppMul, exact_lut, operand_values, output_range
from fames.emulate import approx_conv2d, plan_layer
from fames.emulate.int8 import KEEP_PLANE, int8_available, lower
from fames.emulate.kernels import choose_method
from fames.emulate.reference import reference_conv2d

from .helpers import GEOMS, codes, pp_trunc_appmul

needs_int8 = pytest.mark.skipif(not int8_available(), reason="oneDNN's int8 convolution is missing or inexact here")

WIDTHS = [  # (a_bits, w_bits, a_signed, w_signed)
    (2, 2, True, True),
    (4, 4, True, True),
    (4, 4, False, False),
    (3, 5, True, True),
    (6, 6, False, False),
    (8, 4, False, True),
    (8, 8, True, True),
    (8, 8, False, False),  # unsigned 8-bit weights: the row term
]


def noisy_appmul(a: int, w: int, sa: bool, sw: bool, spread: int = 5, seed: int = 0) -> AppMul:
    """The exact product plus independent random errors in ``[-spread, spread]``: an error table of full rank."""
    rng = np.random.default_rng(seed)
    lo, hi = output_range(a, w, sa, sw)
    lut = exact_lut(a, w, sa, sw) + rng.integers(-spread, spread + 1, (1 << a, 1 << w))
    return AppMul(f"noisy{a}x{w}", a, w, sa, sw, np.clip(lut, lo, hi))


@pytest.mark.parametrize("a,wb,sa,sw", WIDTHS)
def test_lowering_reconstructs_a_full_rank_table(a, wb, sa, sw):
    am = noisy_appmul(a, wb, sa, sw, seed=a * 10 + wb)
    assert np.linalg.matrix_rank(am.error().astype(float)) >= min(1 << a, 1 << wb) - 1  # high rank: no low-rank plan
    p = lower(am.lut, a, sa, operand_values(wb, sw), wb)
    assert p is not None and p.U.dtype == np.uint8 and p.V.dtype == np.int8
    index_value = operand_values(a, sa) + ((1 << (a - 1)) if sa else 0)  # the index plane: value + offset, 0..2**a-1
    assert p.masks[0] != KEEP_PLANE or np.array_equal(p.U[:, 0], index_value)
    rec = (p.U.astype(np.int64) * np.array(p.scales)) @ p.V.astype(np.int64).T + p.row * p.U[:, :1].astype(np.int64)
    if p.const is not None:
        rec = rec + p.const[None, :]
    assert np.array_equal(rec, am.lut)
    assert (p.row != 0) == (not sw and wb == 8 and p.masks[0] == KEEP_PLANE)


def test_lowering_splits_large_coefficients_into_scaled_digits():
    rng = np.random.default_rng(3)
    lut = rng.integers(-(1 << 15), 1 << 15, (256, 256))  # monomial coefficients far beyond int8: base-256 digits
    p = lower(lut, 8, True, operand_values(8, True), 8)
    assert max(p.scales) >= 256 and all(s & (s - 1) == 0 for s in p.scales)  # powers of two
    rec = (p.U.astype(np.int64) * np.array(p.scales)) @ p.V.astype(np.int64).T
    assert np.array_equal(rec + (0 if p.const is None else p.const[None, :]), lut)
    assert lower(lut[:, :16], 9, True, operand_values(4, True), 4) is None  # more than 8 activation bits


def test_scaled_digits_conv_bit_exact():
    if not int8_available():
        pytest.skip("oneDNN's int8 convolution is missing or inexact here")
    rng = np.random.default_rng(4)
    lut = exact_lut(8, 8, False, True) + rng.integers(-3000, 3001, (256, 256))  # errors beyond two int8 digits
    am = AppMul("big", 8, 8, False, True, np.clip(lut, *output_range(8, 8, False, True)))
    gen = torch.Generator().manual_seed(5)
    # 4 channels: fan-in 36, where the blocks' partial sums stay below 2**24 (at 38 they may not: refused)
    x, w = codes(8, False, (2, 4, 6, 6), gen).clamp(max=60), codes(8, True, (3, 4, 3, 3), gen).clamp(-20, 20)
    plan = plan_layer(am)
    plan.int8 = lower(am.lut, 8, False, operand_values(8, True), 8)  # the monomials: scaled digits
    assert max(plan.int8.scales) > 1
    ref = reference_conv2d(x, w, am, 1, 1).double()
    assert torch.equal(approx_conv2d(x.float(), w.float(), plan, 1, 1, method="int8").double(), ref)


@needs_int8
@pytest.mark.parametrize("a,wb,sa,sw", WIDTHS)
@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_int8_conv_bit_exact_on_high_rank_tables(a, wb, sa, sw, gi):
    C, O, k, st, pd, dl, g = GEOMS[gi]
    kh, kw = (k, k) if isinstance(k, int) else k
    gen = torch.Generator().manual_seed(gi * 100 + a * 10 + wb)
    am = noisy_appmul(a, wb, sa, sw, seed=gi + a + wb)
    x = codes(a, sa, (2, C, 7, 6), gen)
    w = codes(wb, sw, (O, C // g, kh, kw), gen)
    ref = reference_conv2d(x, w, am, st, pd, dl, g).double()
    y = approx_conv2d(x.float(), w.float(), am, st, pd, dl, g, method="int8")
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert torch.equal(y.double(), ref), f"max diff {(y.double() - ref).abs().max().item()}"
    assert not torch.equal(F.conv2d(x, w, None, st, pd, dl, g), ref)  # the test can fail: exact conv differs


@needs_int8
def test_int8_conv_mixed_assignment_dropped_planes_and_chunks():
    gen = torch.Generator().manual_seed(7)
    ams = [noisy_appmul(8, 8, True, True, spread=s, seed=s) for s in (1, 4, 9)]
    x = codes(8, False, (5, 6, 9, 9), gen).clamp(max=40)  # ReLU-like signed codes: planes above bit 5 are empty
    w = codes(8, True, (8, 6, 3, 3), gen)
    assign = torch.randint(0, 3, (8, 6), generator=gen)
    ref = reference_conv2d(x, w, ams, 1, 1, assign=assign).double()
    for chunk in (1 << 24, 1):  # one chunk, one sample per chunk
        y = approx_conv2d(x.float(), w.float(), ams, 1, 1, assign=assign, method="int8", max_chunk_bytes=chunk)
        assert torch.equal(y.double(), ref)
    per_filter = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ref_f = reference_conv2d(x, w, ams, 2, 0, assign=per_filter).double()
    assert torch.equal(approx_conv2d(x.float(), w.float(), ams, 2, 0, assign=per_filter, method="int8").double(), ref_f)


@needs_int8
def test_auto_choice_takes_int8_for_bit_plane_tables_in_float32_only():
    am = pp_trunc_appmul(8, 8, k=8)
    plan = plan_layer(am)
    assert plan.int8 is not None and plan.int8.terms <= 9
    assert choose_method(plan, (2, 16, 8, 8), (16, 16, 3, 3)) == "int8"
    assert choose_method(plan, (2, 16, 8, 8), (16, 16, 3, 3), dtype=torch.float64) == "conv"
    assert choose_method(plan, (2, 16, 8, 8), (16, 16, 3, 3), allow_int8=False) == "conv"


@needs_int8
def test_error_plan_int8_sums_the_error_table():
    from fames.emulate.kernels import error_plan

    am = noisy_appmul(8, 8, False, False, spread=40, seed=9)
    gen = torch.Generator().manual_seed(9)
    x, w = codes(8, False, (2, 4, 6, 6), gen), codes(8, False, (5, 4, 3, 3), gen)
    plan = error_plan(am)
    assert plan.int8 is not None and plan.int8.row == 0  # the error table has no exact-product plane
    ref = reference_conv2d(x, w, am.error(), 2, 1).double()
    assert torch.equal(approx_conv2d(x.float(), w.float(), plan, 2, 1, method="int8").double(), ref)


@needs_int8
def test_row_term_with_padding_wider_than_the_kernel():
    """A 1 x 1 kernel with padding 1 (the row term's sum pool cannot pad more than half its window: the one-channel
    convolution takes over)."""
    am = noisy_appmul(8, 8, False, False, spread=7, seed=12)
    gen = torch.Generator().manual_seed(12)
    x, w = codes(8, False, (2, 3, 5, 4), gen), codes(8, False, (4, 3, 1, 1), gen)
    assert plan_layer(am).int8.row == 128
    ref = reference_conv2d(x, w, am, 1, 1).double()
    assert torch.equal(approx_conv2d(x.float(), w.float(), am, 1, 1, method="int8").double(), ref)


@needs_int8
def test_int8_method_refuses_float64():
    am = noisy_appmul(4, 4, True, True, seed=13)
    gen = torch.Generator().manual_seed(13)
    x, w = codes(4, True, (1, 2, 4, 4), gen), codes(4, True, (2, 2, 3, 3), gen)
    with pytest.raises(ValueError, match="float32"):
        approx_conv2d(x, w, am, dtype=torch.float64, method="int8")

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fames.appmul.core import AppMul
from fames.emulate import approx_conv2d, approx_linear, plan_layer
from fames.emulate.kernels import cached_plan, choose_method
from fames.emulate.reference import product_counts_grad, reference_conv2d, reference_linear

from .conftest_shared import evo_appmul
from .helpers import GEOMS, codes, operand_trunc_appmul, pp_trunc_appmul, random_appmul

WIDTHS = [
    (2, 2, False, False),
    (3, 5, True, True),
    (4, 4, False, False),
    (4, 4, True, True),
    (4, 8, False, True),
    (8, 2, True, False),
    (6, 7, False, False),
    (8, 8, False, False),
    (8, 8, True, True),
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_conv(am, x, w, stride, padding, dilation, groups, assign=None, methods=("conv", "gather")):
    ref = reference_conv2d(x, w, am, stride, padding, dilation, groups, assign=assign)
    for method in methods:
        y = approx_conv2d(
            x, w, am, stride, padding, dilation, groups, assign=assign, dtype=torch.float64, method=method
        )
        assert y.dtype == torch.float64 and y.shape == ref.shape
        assert torch.equal(y, ref.double()), f"{method}: max diff {(y - ref.double()).abs().max().item()}"
    return ref


@pytest.mark.parametrize("a,wb,sa,sw", WIDTHS)
@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_conv_random_lut_bit_exact_float64(a, wb, sa, sw, gi):
    C, O, k, st, pd, dl, g = GEOMS[gi]
    kh, kw = (k, k) if isinstance(k, int) else k
    gen = _gen(gi * 100 + a * 10 + wb)
    am = random_appmul(a, wb, sa, sw, seed=gi + a + wb)
    x = codes(a, sa, (2, C, 7, 6), gen)
    w = codes(wb, sw, (O, C // g, kh, kw), gen)
    ref = _check_conv(am, x, w, st, pd, dl, g)
    # the test can fail: exact conv differs from the approximate reference
    exact = F.conv2d(x, w, None, st, pd, dl, g)
    assert not torch.equal(exact, ref.double())


@pytest.mark.parametrize("maker", ["optr_s", "optr_u", "pptr"])
@pytest.mark.parametrize("gi", [0, 1, 2])
def test_conv_structured_low_rank_bit_exact(maker, gi):
    C, O, k, st, pd, dl, g = GEOMS[gi]
    if maker == "optr_s":
        am, sa, sw = operand_trunc_appmul(8, 8, True, True, k=3), True, True
    elif maker == "optr_u":
        am, sa, sw = operand_trunc_appmul(4, 4, False, False, k=1), False, False
    else:
        am, sa, sw = pp_trunc_appmul(8, 8, k=6), False, False
    gen = _gen(gi)
    x = codes(am.a_bits, sa, (2, C, 8, 8), gen)
    w = codes(am.w_bits, sw, (O, C // g, k, k), gen)
    assert plan_layer(am).r <= 8
    _check_conv(am, x, w, st, pd, dl, g)


def test_conv_exact_appmul_is_plain_conv():
    am = operand_trunc_appmul(4, 4, True, True, k=0)
    gen = _gen(5)
    x, w = codes(4, True, (2, 3, 5, 5), gen), codes(4, True, (2, 3, 3, 3), gen)
    ref = _check_conv(am, x, w, 1, 1, 1, 1)
    assert torch.equal(ref.double(), F.conv2d(x, w, padding=1))


def test_padding_is_no_product():
    # LUT[0, w] != 0: a zero-padded code would wrongly contribute LUT[0, w]
    lut = np.full((4, 4), 3, dtype=np.int64)
    am = AppMul("const3", 2, 2, False, False, lut)
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    y = approx_conv2d(x, w, am, padding=1, dtype=torch.float64)
    assert torch.equal(y, torch.full((1, 1, 2, 2), 12.0, dtype=torch.float64))  # 4 real products each


@pytest.mark.parametrize("gran", ["layer", "filter", "kernel"])
@pytest.mark.parametrize(
    "a,wb,sa,sw", [(4, 4, False, False), (8, 8, True, True), (3, 6, False, True), (8, 8, False, False)]
)
def test_conv_assignments_bit_exact(gran, a, wb, sa, sw):
    ams = [
        random_appmul(a, wb, sa, sw, seed=1),
        operand_trunc_appmul(a, wb, sa, sw, k=1),
        random_appmul(a, wb, sa, sw, seed=2),
    ]
    if not (sa or sw):
        ams.append(pp_trunc_appmul(a, wb, k=3))
    gen = _gen(a * wb)
    for C, O, k, st, pd, dl, g in GEOMS[:3]:
        Cg = C // g
        x = codes(a, sa, (2, C, 6, 6), gen)
        w = codes(wb, sw, (O, Cg, k, k), gen)
        if gran == "layer":
            assign = torch.tensor(1)
        elif gran == "filter":
            assign = torch.randint(0, len(ams), (O,), generator=gen)
        else:
            assign = torch.randint(0, len(ams), (O, Cg), generator=gen)
        _check_conv(ams, x, w, st, pd, dl, g, assign=assign)


def test_assignment_actually_used():
    ams = [random_appmul(4, 4, False, False, seed=1), random_appmul(4, 4, False, False, seed=2)]
    gen = _gen(0)
    x, w = codes(4, False, (1, 2, 5, 5), gen), codes(4, False, (2, 2, 3, 3), gen)
    y0 = approx_conv2d(x, w, ams, assign=torch.tensor([0, 0]), dtype=torch.float64)
    y1 = approx_conv2d(x, w, ams, assign=torch.tensor([0, 1]), dtype=torch.float64)
    assert torch.equal(y0[:, 0], y1[:, 0]) and not torch.equal(y0[:, 1], y1[:, 1])
    assert torch.equal(y1, reference_conv2d(x, w, ams, assign=torch.tensor([0, 1])).double())


@pytest.mark.parametrize(
    "a,wb,sa,sw", [(2, 2, False, False), (4, 8, False, True), (8, 2, True, False), (8, 8, True, True)]
)
@pytest.mark.parametrize("gran", ["layer", "filter", "kernel"])
def test_linear_bit_exact(a, wb, sa, sw, gran):
    ams = [random_appmul(a, wb, sa, sw, seed=7), operand_trunc_appmul(a, wb, sa, sw, k=1)]
    gen = _gen(a + wb)
    x, w = codes(a, sa, (5, 11), gen), codes(wb, sw, (3, 11), gen)
    assign = {
        "layer": 0,
        "filter": torch.tensor([0, 1, 0]),
        "kernel": torch.randint(0, 2, (3, 11), generator=gen),
    }[gran]
    ref = reference_linear(x, w, ams, assign=assign)
    y = approx_linear(x, w, ams, assign=assign, dtype=torch.float64)
    assert torch.equal(y, ref.double())
    # leading dims are kept
    y3 = approx_linear(x.reshape(5, 1, 11), w, ams, assign=assign, dtype=torch.float64)
    assert y3.shape == (5, 1, 3) and torch.equal(y3.reshape(5, 3), y)


@pytest.mark.parametrize(
    "am",
    [
        random_appmul(8, 8, False, False, seed=9),
        pp_trunc_appmul(8, 8, k=6),
        random_appmul(4, 4, True, True, seed=9),
    ],
)
def test_float32_close_to_exact(am):
    gen = _gen(3)
    x = codes(am.a_bits, am.a_signed, (2, 8, 8, 8), gen)
    w = codes(am.w_bits, am.w_signed, (4, 8, 3, 3), gen)
    ref = reference_conv2d(x, w, am, padding=1).double()
    y = approx_conv2d(x.float(), w.float(), am, padding=1, dtype=torch.float32)
    assert y.dtype == torch.float32
    bound = 2 * (2.0**-23) * (8 * 9) * float(np.abs(am.lut).max()) + 0.5
    assert (y.double() - ref).abs().max().item() <= bound
    if am.a_bits == 4:  # small sums: exact in float32
        assert torch.equal(y.double(), ref)


def test_chunking_and_channels_last_agree():
    am = random_appmul(4, 4, False, False, seed=11)
    gen = _gen(11)
    x, w = codes(4, False, (5, 4, 6, 6), gen), codes(4, False, (3, 4, 3, 3), gen)
    ref = reference_conv2d(x, w, am, padding=1).double()
    y = approx_conv2d(x, w, am, padding=1, dtype=torch.float64, max_chunk_bytes=1)
    assert torch.equal(y, ref)
    y2 = approx_conv2d(x.contiguous(memory_format=torch.channels_last), w, am, padding=1, dtype=torch.float64)
    assert torch.equal(y2, ref)


@pytest.mark.parametrize("am", [random_appmul(4, 4, False, False, seed=12), pp_trunc_appmul(8, 8, k=5)])
def test_ste_gradient_is_exact_conv_gradient(am):
    gen = _gen(12)
    x = codes(am.a_bits, False, (2, 4, 6, 6), gen).float().requires_grad_()
    w = codes(am.w_bits, False, (6, 2, 3, 3), gen).float().requires_grad_()
    g = torch.randn(2, 6, 3, 3, generator=gen)
    y = approx_conv2d(x, w, am, stride=2, padding=1, groups=2)
    (y * g).sum().backward()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (F.conv2d(x2, w2, None, 2, 1, 1, 2) * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad) and torch.allclose(w.grad, w2.grad)
    # linear
    xl = codes(am.a_bits, False, (3, 7), gen).requires_grad_()
    wl = codes(am.w_bits, False, (2, 7), gen).requires_grad_()
    gl = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    (approx_linear(xl, wl, am, dtype=torch.float64) * gl).sum().backward()
    assert torch.allclose(xl.grad, gl @ wl.detach()) and torch.allclose(wl.grad, gl.t() @ xl.detach())


@pytest.mark.parametrize("a,wb,sa,sw", [(4, 4, False, False), (8, 2, True, False), (2, 8, False, True)])
@pytest.mark.parametrize("gran", ["layer", "filter", "kernel"])
def test_counting_matrix_gradient_closed_form(a, wb, sa, sw, gran):
    gen = _gen(a * 7 + wb)
    M = 1 if gran == "layer" else 2
    C, O, g = 4, 6, 2
    x = codes(a, sa, (2, C, 6, 6), gen)
    w = codes(wb, sw, (O, C // g, 3, 3), gen)
    assign = {
        "layer": None,
        "filter": torch.tensor([0, 1, 1, 0, 1, 0]),
        "kernel": torch.randint(0, 2, (O, C // g), generator=gen),
    }[gran]
    ams = [random_appmul(a, wb, sa, sw, seed=s) for s in range(M)]
    E = torch.tensor(np.stack([m.error() for m in ams]), dtype=torch.float64, requires_grad=True)
    y = approx_conv2d(x, w, ams, 2, 1, 1, g, assign=assign, dtype=torch.float64, error_table=E)
    # forward value: the AppMul output
    assert torch.equal(y.detach(), reference_conv2d(x, w, ams, 2, 1, 1, g, assign=assign).double())
    G = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (y * G).sum().backward()
    want = product_counts_grad(x, w, G, M, a, wb, 2, 1, 1, g, assign=assign)
    assert torch.allclose(E.grad, want, atol=1e-9)
    assert E.grad.abs().sum() > 0


def test_counting_gradient_at_zero_error_and_linear():
    gen = _gen(21)
    am = operand_trunc_appmul(4, 4, False, False, k=0)  # exact
    x, w = codes(4, False, (6, 9), gen), codes(4, False, (3, 9), gen)
    E = torch.zeros(16, 16, dtype=torch.float64, requires_grad=True)
    y = approx_linear(x, w, am, dtype=torch.float64, error_table=E)
    assert torch.equal(y.detach(), x @ w.t())
    G = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    (y * G).sum().backward()
    want = torch.zeros(16, 16, dtype=torch.float64)
    for n in range(6):
        for o in range(3):
            for k in range(9):
                want[int(x[n, k]), int(w[o, k])] += G[n, o]
    assert torch.allclose(E.grad, want)
    # finite difference on one entry (the output is linear in E)
    a0, b0 = int(x[0, 0]), int(w[0, 0])
    E2 = torch.zeros(16, 16, dtype=torch.float64)
    E2[a0, b0] = 1.0
    y2 = approx_linear(x, w, am, dtype=torch.float64, error_table=E2)
    assert torch.allclose(((y2 - y.detach()) * G).sum(), E.grad[a0, b0])


def test_evoapproxlib_designs_bit_exact():
    gen = _gen(30)
    for name in ["mul8u_DG8", "mul8u_L93", "mul8s_1L2J"]:
        am = evo_appmul(name)
        x = codes(8, am.a_signed, (2, 4, 6, 6), gen)
        w = codes(8, am.w_signed, (4, 4, 3, 3), gen)
        _check_conv(am, x, w, 1, 1, 1, 1)


def test_int8_blocks_whose_partial_sums_pass_float32_integers_are_not_taken():
    """mul8u_1A0M in a 3x3 conv of 31 channels: its sums stay below 2**24 (float32 layer), but the int8 path's blocks
    accumulate partial sums beyond it: with every activation and weight code at once, 512 of 65,536 outputs came
    out 1 too low."""
    am = evo_appmul("mul8u_1A0M")
    C, fan = 31, 31 * 9
    assert int(np.abs(am.lut).max()) * fan < 1 << 24 and cached_plan(am).int8.rounds(fan)
    xs = torch.arange(256.).view(-1, 1, 1, 1).expand(256, C, 3, 3).contiguous()  # image n: every code n
    y = approx_conv2d(xs, xs, am).reshape(256, 256).double()  # filter o: every code o
    assert torch.equal(y, torch.as_tensor(am.lut.astype(np.int64)).double() * fan)
    with pytest.raises(ValueError, match="may round on these inputs"):
        approx_conv2d(xs, xs, am, method="int8")
    low = xs[:16]  # codes below 16: this batch's partial sums stay exact, the int8 path may run
    assert torch.equal(approx_conv2d(low, xs, am, method="int8"), approx_conv2d(low, xs, am, method="gather"))


def test_cached_packed_weights_and_gather_tables_follow_weights_edited_in_place():
    """The int8 path's packed weights and the gather path's tables are kept between calls (packing was 40% of a
    batch-1 forward); weights changed in place between calls must not be served the old ones."""
    from fames.emulate.int8 import PACKED_WEIGHTS, int8_available
    from fames.emulate.kernels import _GATHER_TABLES

    am = evo_appmul("mul8u_12KA")
    gen = _gen(3)
    x, w = codes(8, False, (2, 16, 6, 6), gen).float(), codes(8, False, (8, 16, 3, 3), gen).float()
    for method, cache in (("int8", PACKED_WEIGHTS), ("gather", _GATHER_TABLES)):
        if method == "int8" and not int8_available():
            continue
        cache.clear()
        first = approx_conv2d(x, w, am, method=method)
        kept = len(cache._entries)
        assert kept and torch.equal(approx_conv2d(x, w, am, method=method), first) and len(cache._entries) == kept
        other = w.flip(0).clone()
        w.copy_(other)  # the same tensor, other weights
        assert torch.equal(approx_conv2d(x, w, am, method=method).double(), reference_conv2d(x, other, am).double())
        # an edit that keeps the lookup key's checksum (+1, -2, +1 on three consecutive codes): the entry is checked
        same_sum = other.clone().view(-1)
        i = int(torch.nonzero((same_sum[:-2] < 254) & (same_sum[1:-1] > 1) & (same_sum[2:] < 254))[0])
        same_sum[i : i + 3] += torch.tensor([1.0, -2.0, 1.0])
        w.copy_(same_sum.view_as(w))
        assert torch.equal(approx_conv2d(x, w, am, method=method).double(), reference_conv2d(x, w, am).double())
        w.copy_(other.flip(0))


def test_integer_factor_terms_beyond_float32_take_the_exact_path():
    """An integer factorization's terms can be far larger than the products they sum to: LUT = q + d * c with
    c up to 60,000 has products <= 60,050 (64 of them sum below 2**24) but factor partial sums of 64 * 60,000 * 2; in
    float32 the stacked path rounded them (364 of 400 sums wrong, by up to 12). The float32 run must be exact."""
    rng = np.random.default_rng(0)
    q, d, c = rng.integers(0, 51, 256), rng.integers(0, 2, 256), rng.integers(0, 60001, 256)
    c[:2] = (0, 1)
    am = AppMul("dep", 8, 8, False, False, q[:, None] + np.outer(d, c))
    plan = plan_layer(am)
    assert plan.integer and plan.term_peak * 64 >= 1 << 24 > int(am.lut.max()) * 64  # the case at stake
    gen = _gen(7)
    x, w = codes(8, False, (2, 64, 5, 5), gen), codes(8, False, (8, 64, 1, 1), gen)
    assert torch.equal(approx_conv2d(x.float(), w.float(), am).double(), reference_conv2d(x, w, am).double())
    xl, wl = x.permute(0, 2, 3, 1).reshape(-1, 64), w.reshape(8, 64)
    assert torch.equal(approx_linear(xl.float(), wl.float(), am).double(), reference_linear(xl, wl, am).double())
    low = x.clamp(max=1)  # a batch whose partial sums provably stay exact: float32 stacked terms, the same sums
    assert torch.equal(approx_conv2d(low.float(), w.float(), am).double(), reference_conv2d(low, w, am).double())


@pytest.mark.parametrize("name", ["mul8u_874", "mul8u_12KA", "mul8u_1SX", "trunc_k5_8x8u"])
def test_float64_stacked_sums_in_exact_float32_channel_groups(name):
    """A stacked convolution summed in float64 took 10x its float32 time per term (mul8u_1SX's 64-channel layers:
    41x the exact convolution); it now sums channel groups whose float32 sums are exact and adds them in float64
    (4.2x). Same integers as the reference."""
    from fames.appmul.families import build
    from fames.emulate.kernels import _float32_parts

    am = build("trunc", 8, 8, False, False, k=5) if name.startswith("trunc") else evo_appmul(name)
    plan = cached_plan(am)
    gen = _gen(11)
    x, w = codes(8, False, (3, 64, 6, 6), gen), codes(8, False, (8, 64, 3, 3), gen)
    assert plan.integer and len(_float32_parts(plan, w.shape, 1)) > 1  # the path under test
    y = approx_conv2d(x.float(), w.float(), am, padding=1, dtype=torch.float64, method="conv")
    assert y.dtype == torch.float64 and torch.equal(y, reference_conv2d(x, w, am, padding=1).double())


def test_float_factor_plans_stay_exact_in_float32():
    """mul8u_1A0M factors only with float (SVD) factors: summed in float32 they round to the wrong integer (off by
    up to a few units here although every partial sum is below 2**24), so float32 runs take the exact gather."""
    am = evo_appmul("mul8u_1A0M")
    gen = _gen(45)
    x, w = codes(8, False, (16, 8, 16, 16), gen), codes(8, False, (16, 8, 3, 3), gen)
    assert not plan_layer(am).integer and 255 * 255 * 8 * 9 < 1 << 24
    ref = reference_conv2d(x, w, am).double()
    assert torch.equal(approx_conv2d(x.float(), w.float(), am, method="conv").double(), ref)  # forced: float64 sums
    assert torch.equal(approx_conv2d(x.float(), w.float(), am).double(), ref)
    assert torch.equal(approx_conv2d(x, w, am, dtype=torch.float64, method="conv"), ref)  # float64: rounds exactly


def test_gather_path_float32_chunked_and_auto_choice():
    from fames.emulate.kernels import choose_method

    am = random_appmul(8, 8, True, True, seed=40)
    gen = _gen(40)
    x = codes(8, True, (3, 6, 7, 7), gen)
    w = codes(8, True, (4, 3, 3, 3), gen)
    ref = reference_conv2d(x, w, am, 2, 1, 2, 2).double()
    y = approx_conv2d(x.float(), w.float(), am, 2, 1, 2, 2, method="gather", max_chunk_bytes=1)
    assert y.dtype == torch.float32 and torch.equal(y.double(), ref)  # sums < 2**24: exact
    plan = plan_layer(am)
    assert plan.r == 256 and choose_method(plan, x.shape, w.shape, 2) == "gather"
    # bit planes: the float stacked convolution unless the int8 path may run
    for tr in (pp_trunc_appmul(8, 8, k=8), operand_trunc_appmul(8, 8, True, True)):
        assert choose_method(plan_layer(tr), x.shape, w.shape, 2, allow_int8=False) == "conv"
    with pytest.raises(ValueError):
        approx_conv2d(x, w, am, method="fast")


def test_plan_cache_follows_in_place_lut_edits():
    """Plans are cached per LUT; a table edited in place must be planned afresh, never served stale."""
    am = random_appmul(4, 4, False, False, seed=43)
    gen = _gen(43)
    x, w = codes(4, False, (2, 3, 5, 5), gen), codes(4, False, (2, 3, 3, 3), gen)
    y1 = approx_conv2d(x, w, am, padding=1, dtype=torch.float64)
    assert torch.equal(approx_conv2d(x, w, am, padding=1, dtype=torch.float64), y1)  # a cache hit, same answer
    a0, w0 = int(x[0, 0, 0, 0]), int(w[0, 0, 1, 1])  # a product that occurs (centre tap at the first pixel)
    am.lut[a0, w0] += 1
    y2 = approx_conv2d(x, w, am, padding=1, dtype=torch.float64)
    assert torch.equal(y2, reference_conv2d(x, w, am, padding=1).double())
    assert not torch.equal(y1, y2)


def test_lookup_plans_choose_by_cost():
    """A low-rank lookup plan goes to the stacked convolution where its r terms cost less than the gather, a
    high-rank one to the gather; both are exact on every geometry (covered above)."""
    from fames.emulate.kernels import GATHER_FLOAT_COST, GATHER_LLC_PENALTY, GATHER_ROW_COST, choose_method

    rng = np.random.default_rng(44)
    U, V = rng.integers(-3, 4, (256, 1)), rng.integers(-3, 4, (256, 1))
    low = AppMul("rank1", 8, 8, False, False, np.clip(np.outer(np.arange(256), np.arange(256)) + U @ V.T, 0, 65025))
    plan = plan_layer(low)
    assert plan.shifts is None and 2 < plan.r < (GATHER_ROW_COST / 64 + GATHER_FLOAT_COST) * GATHER_LLC_PENALTY
    x_shape, w_shape = (1, 64, 8, 8), (64, 64, 3, 3)
    assert choose_method(plan, x_shape, w_shape, dtype=torch.float64) == "conv"  # float64: any factors are exact
    assert choose_method(plan_layer(random_appmul(8, 8, False, False, seed=44)), x_shape, w_shape) == "gather"


def test_prebuilt_plan_and_bad_inputs():
    am = random_appmul(4, 4, False, False, seed=41)
    gen = _gen(41)
    x, w = codes(4, False, (2, 3, 5, 5), gen), codes(4, False, (2, 3, 3, 3), gen)
    plan = plan_layer(am)
    y = approx_conv2d(x, w, plan, padding=1, dtype=torch.float64)
    assert torch.equal(y, reference_conv2d(x, w, am, padding=1).double())
    with pytest.raises(ValueError):  # two AppMuls need an assignment
        approx_conv2d(x, w, [am, am])
    with pytest.raises(ValueError):  # assignment index out of range
        approx_conv2d(x, w, [am, am], assign=torch.tensor([0, 2]))
    with pytest.raises(ValueError):  # mixed widths
        approx_conv2d(x, w, [am, random_appmul(4, 4, True, True)], assign=0)


def test_all_zero_lut():
    am = AppMul("zero", 4, 4, False, False, np.zeros((16, 16), dtype=np.int64))
    gen = _gen(42)
    x, w = codes(4, False, (2, 3, 5, 5), gen).requires_grad_(), codes(4, False, (2, 3, 3, 3), gen)
    y = approx_conv2d(x, w, am, padding=1, dtype=torch.float64)
    assert y.shape == (2, 2, 5, 5) and not y.detach().any()
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # STE still passes the exact gradient
    assert not approx_linear(x[:, :, 0, 0], w[:, :, 0, 0], am, dtype=torch.float64).any()


@pytest.mark.parametrize("widths", [(2, 2, True, True), (4, 4, True, True), (8, 8, True, True), (4, 8, False, False)])
def test_bit_plane_plans_are_exact(widths):
    """Truncation-like tables use the bit-plane activation basis (shifts, no lookup) and stay bit-exact."""
    from fames.appmul.families import build

    a, wb, sa, sw = widths
    am = build("trunc", a, wb, sa, sw, k=max(a, wb))
    plan = plan_layer(am)
    assert plan.shifts is not None and plan.r <= a + 1
    xv = np.arange(1 << a)[:, None]
    assert np.array_equal(plan.U, ((xv | (1 << a)) >> plan.shifts[None, :]) & 1)
    assert np.array_equal(plan.U @ plan.V.T, am.lut.astype(np.float64))
    g = _gen(11)
    # unpadded geometries too (the constant term is a bias map: padded taps hold no product)
    unpadded = [(C, O, k, st, 0, dl, g_) for C, O, k, st, _, dl, g_ in GEOMS]
    assert not sa or any(s >= a for s in plan.shifts)  # the signed ones have the constant term
    for C, O, k, stride, padding, dilation, groups in GEOMS + unpadded:
        x = codes(a, sa, (2, C, 7, 6), g)
        w = codes(wb, sw, (O, C // groups, *((k, k) if isinstance(k, int) else k)), g)
        ref = reference_conv2d(x, w, am, stride, padding, dilation, groups).double()
        for dtype in (torch.float32, torch.float64):
            y = approx_conv2d(x, w, am, stride, padding, dilation, groups, dtype=dtype, method="conv")
            assert torch.equal(y.double(), ref)
    x, w = codes(a, sa, (5, 13), g), codes(wb, sw, (7, 13), g)
    assert torch.equal(approx_linear(x, w, am).double(), reference_linear(x, w, am).double())


@pytest.mark.parametrize("maker", ["random", "optr_s", "pptr"])
@pytest.mark.parametrize("gi", [0, 1, 2])
def test_error_plan_sums_the_error_table_exactly(maker, gi):
    """The factorized error-only plan (the estimator's per-candidate path) returns sum_i E[x_i, w_i] bit-exactly: the
    approximate minus the exact convolution, for high-rank (gather) and structured (bit planes) tables alike."""
    from fames.emulate.kernels import error_plan

    C, O, k, st, pd, dl, g = GEOMS[gi]
    am = {"random": lambda: random_appmul(6, 5, True, False, seed=gi),
          "optr_s": lambda: operand_trunc_appmul(8, 8, True, True, k=3),
          "pptr": lambda: pp_trunc_appmul(8, 8, k=6)}[maker]()
    gen = _gen(gi + 7)
    x = codes(am.a_bits, am.a_signed, (2, C, 8, 8), gen)
    w = codes(am.w_bits, am.w_signed, (O, C // g, k, k), gen)
    want = reference_conv2d(x, w, am, st, pd, dl, g).double() - F.conv2d(x.double(), w.double(), None, st, pd, dl, g)
    plan = error_plan(am)
    got = approx_conv2d(x, w, plan, st, pd, dl, g, dtype=torch.float64)
    assert torch.equal(got, want) and want.abs().max() > 0
    assert (plan.shifts is not None or plan.r <= 8) if maker != "random" else True
    assert error_plan(am) is plan  # cached


@pytest.mark.parametrize("widths", [(4, 4, True, True), (8, 8, True, True), (8, 8, False, False)])
def test_empty_bit_planes_are_skipped_and_stay_exact(widths):
    """ReLU-like codes (non-negative under signed quantization, small under unsigned) leave the top bit planes
    empty: they are dropped from the stacked convolution, and the result is still bit-exact."""
    from fames.appmul.families import build
    from fames.emulate.kernels import _live_planes

    a, wb, sa, sw = widths
    am = build("trunc", a, wb, sa, sw, k=max(a, wb))
    plan = plan_layer(am)
    U, V = plan.tables(torch.device("cpu"), torch.float64)
    sh = plan.shift_table(torch.device("cpu"))
    g = _gen(5)
    top = (1 << (a - 2)) - 1  # codes 0 .. 2**(a-2) - 1: the two top bits are never set
    x = torch.randint(0, top + 1, (2, 6, 7, 6), generator=g).double()
    Ul, Vl, shl = _live_planes(x.to(torch.uint8), U, V, sh, a)
    assert shl is not None and set(shl.tolist()) == {s for s in sh.tolist() if s >= a or s < a - 2}
    assert Ul.shape[1] == Vl.shape[1] == len(shl) < len(sh)
    x[0, 0, 0, 0] = top + 1  # one code with bit a-2 set brings that plane back
    assert len(_live_planes(x.to(torch.uint8), U, V, sh, a)[2]) == len(shl) + 1
    for C, O, k, stride, padding, dilation, groups in GEOMS:
        xc = torch.randint(0, top + 1, (2, C, 7, 6), generator=g).double()
        w = codes(wb, sw, (O, C // groups, *((k, k) if isinstance(k, int) else k)), g)
        ref = reference_conv2d(xc, w, am, stride, padding, dilation, groups).double()
        for dtype in (torch.float32, torch.float64):
            y = approx_conv2d(xc, w, am, stride, padding, dilation, groups, dtype=dtype, method="conv")
            assert torch.equal(y.double(), ref)
    xl, wl = torch.randint(0, top + 1, (5, 13), generator=g).double(), codes(wb, sw, (7, 13), g)
    assert torch.equal(approx_linear(xl, wl, am).double(), reference_linear(xl, wl, am).double())


def test_cost_model_gathers_wide_pointwise_convs_and_keeps_depthwise_off_int8():
    am = random_appmul(8, 8, True, True, seed=3)
    plan = cached_plan(am)
    # a 1x1 conv of 1,024 inputs: its 134 MB of gather tables were refused, stacked ran 1,120-1,411x the exact conv
    assert choose_method(plan, (64, 1024, 8, 8), (64, 1024, 1, 1), 1, 1, torch.float64) == "gather"
    # depthwise: the int8 planes' packing outweighs the tiny convolution (382-894x against the gather's 66-123x)
    assert choose_method(plan, (64, 64, 16, 16), (64, 1, 3, 3), 64, 1, torch.float32) != "int8"


def test_an_empty_batch_gives_an_empty_output():
    am = random_appmul(8, 8, True, True, seed=5)
    x, w = torch.zeros(0, 4, 6, 6), torch.ones(3, 4, 3, 3)
    assert approx_conv2d(x, w, am, padding=1).shape == (0, 3, 6, 6)  # the int8 path's chunk loop raised
    assert approx_linear(torch.zeros(2, 0, 4), torch.ones(3, 4), am).shape == (2, 0, 3)


def test_the_line_bound_of_unsigned_codes_is_never_below_the_sums_it_bounds():
    """:func:`sums_may_pass` may answer "cannot pass" from the codes' own tap sums times a line above the table's
    row bounds, without the per-tap lookup; that answer must hold for every output (random rows and codes)."""
    from fames.emulate.int8 import window_sums
    from fames.emulate.kernels import sums_may_pass

    rng = np.random.default_rng(0)
    conv_args = ((1, 1), (1, 1), (1, 1), 1)
    decided = 0
    for trial in range(300):
        rows = rng.integers(0, 70000, 256).astype(np.float64)
        if trial % 2:  # a multiplier's row bounds: about linear in the activation
            rows = np.arange(256) * 255.0 + rng.integers(0, 300, 256)
        x = torch.from_numpy(rng.integers(0, int(rng.integers(1, 257)), (2, 16, 5, 5))).float()
        true_peak = float(window_sums(torch.from_numpy(rows)[x.long()].float(), (3, 3), conv_args, 4).max())
        limit = int(true_peak * rng.uniform(0.5, 3.0)) + 1

        def tap_sums(v):
            raise AssertionError("the line bound should decide")

        def code_sums(x=x):
            return float(window_sums(x, (3, 3), conv_args, 4).max())

        try:
            passes = sums_may_pass(rows, x, 8, 144, limit, tap_sums, code_sums=code_sums)
        except AssertionError:
            continue
        decided += 1
        assert passes or true_peak < limit
    assert decided > 50

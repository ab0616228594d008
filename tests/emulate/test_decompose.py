from __future__ import annotations

import numpy as np
import pytest

from fames.emulate.decompose import (
    _int_basis,
    _svd,
    decompose_error,
    decompose_table,
    numerical_rank,
    restrict_columns,
)
from fames.emulate.kernels import plan_layer

from .helpers import operand_trunc_appmul, pp_trunc_appmul, random_appmul


@pytest.mark.parametrize(
    "a,w,sa,sw",
    [
        (2, 2, False, False),
        (4, 4, True, True),
        (4, 8, False, True),
        (8, 2, True, False),
        (8, 8, False, False),
    ],
)
def test_random_tables_factor_exactly_with_onehot_on_narrower(a, w, sa, sw):
    am = random_appmul(a, w, sa, sw, seed=a * 10 + w)
    E = am.error()
    f = decompose_error(E)
    assert f.U.shape == (1 << a, f.r) and f.V.shape == (1 << w, f.r)
    assert np.array_equal(f.reconstruct(), E.astype(np.float64))
    assert f.integer and f.r == min(1 << a, 1 << w)
    assert f.kind == ("act_onehot" if a <= w else "wt_onehot")


def test_low_rank_truncation_factors_at_rank_and_svd_is_exact():
    am = pp_trunc_appmul(8, 8, k=6)
    E = am.error()
    rank = numerical_rank(E)
    assert 1 < rank < 16
    f = decompose_error(E)
    # integer basis (bit-plane columns) wins the tie against the SVD
    assert f.kind == "int_basis" and f.r == rank and f.integer
    assert np.array_equal(f.reconstruct(), E.astype(np.float64))
    f = _svd(E, 1e-6)
    assert f is not None and f.r == rank and not f.integer
    assert np.abs(f.reconstruct() - E).max() < 1e-6
    # integer sums of factors round back to the exact sums
    rng = np.random.default_rng(1)
    xi, wi = rng.integers(0, 256, 5000), rng.integers(0, 256, 5000)
    s = float(np.sum(f.U[xi] * f.V[wi]))
    assert round(s) == int(E[xi, wi].sum())


def test_zero_and_rank_one_tables():
    f = decompose_error(np.zeros((16, 4), dtype=np.int64))
    assert f.r == 0 and f.kind == "zero" and f.U.shape == (16, 0) and f.V.shape == (4, 0)
    am = operand_trunc_appmul(4, 4, False, False)
    f1 = decompose_error(am.error())
    assert f1.r == 1 and np.array_equal(f1.reconstruct(), am.error())


def test_distinct_rows_beat_full_onehot():
    # E with 3 distinct non-zero rows (and many zero rows): r = 3 integer factors
    rng = np.random.default_rng(2)
    rows = rng.integers(-50, 50, (3, 256))
    E = np.zeros((256, 256), dtype=np.int64)
    E[10], E[20], E[200] = rows
    E[30] = rows[0]
    f = decompose_table(E)
    assert f.r == 3 and f.integer and np.array_equal(f.reconstruct(), E)


def test_restrict_columns_keeps_used_exact():
    am = random_appmul(8, 4, False, False, seed=3)
    E = am.error()
    f = decompose_table(E)
    assert f.kind == "wt_onehot" and f.r == 16
    used = np.zeros(16, bool)
    used[[1, 5, 7]] = True
    g = restrict_columns(f, used)
    assert g.r == 3
    assert np.array_equal(g.reconstruct()[:, used], E[:, used])
    assert decompose_table(E, used).r == 3


def test_decomposition_is_cached():
    E = random_appmul(4, 4, False, False, seed=4).error()
    assert decompose_error(E).U is decompose_error(E.copy()).U


def test_plan_prefers_lut_factorization_when_cheaper():
    # operand truncation: E rank 1 (+1 exact term = 2) vs LUT rank 1
    p = plan_layer(operand_trunc_appmul(8, 8, True, True, k=2))
    assert p.mode == "lut" and p.r == 1
    # exact multiplier: only the exact path
    p0 = plan_layer(operand_trunc_appmul(4, 4, False, False, k=0))
    assert p0.exact_only and p0.r == 1


def test_plan_shared_basis_for_several_appmuls():
    ams = [random_appmul(4, 8, False, False, seed=s) for s in range(3)]
    p = plan_layer(ams)
    L = np.concatenate([m.lut for m in ams], axis=1)
    assert p.r <= 17
    assert np.array_equal(p.U @ p.V.T, L.astype(np.float64))


def test_rank_one_integer_factors():
    rng = np.random.default_rng(5)
    u, v = rng.integers(-7, 8, 16) * 6, rng.integers(-9, 9, 8) * 10
    H = np.outer(u, v)
    f = _int_basis(H, 1)
    assert f is not None and f.integer and np.array_equal(f.reconstruct(), H.astype(np.float64))


def test_float_lut_factors_avoided_for_float32():
    am = pp_trunc_appmul(8, 8, k=6)
    p32 = plan_layer(am, allow_float_lut=False)
    assert p32.integer or p32.mode == "err"

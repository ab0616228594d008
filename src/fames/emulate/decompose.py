"""Exact factorizations of AppMul tables for fast emulation (see DESIGN.md, "Fast emulation").

A table ``H`` of shape ``(2**a_bits, n)`` (one error table ``E``, or several tables side by side) is written
exactly as ``H = U @ V.T`` with ``U`` of shape ``(2**a_bits, r)`` (looked up at activation indices) and ``V``
of shape ``(n, r)`` (looked up at weight indices). Candidates, cheapest ``r`` wins (ties go to integer ones):

* ``"zero"``: ``H == 0``, ``r = 0``.
* ``"svd"``: truncated SVD at the numerical rank; float64 factors, accepted only if
  ``max |U V^T - H| < tol``. A sum of such terms is an integer up to float rounding, so callers round it.
* ``"act_onehot"``: one indicator per distinct non-zero row (activation value class):
  ``u_r(x) = [class(x) == r]``, ``v_r = row r``. Integer; ``r <= 2**a_bits`` (one-hot on the activation).
* ``"int_basis"``: ``H = H[:, J] @ C`` with ``r = rank`` pivoted columns ``J`` and integer coefficients
  ``C`` (or the same on rows); integer, tried when the rank is small.
* ``"wt_onehot"``: one indicator per distinct non-zero column (weight value class):
  ``u_r = column r``, ``v_r(w) = [class(w) == r]``. Integer; ``r <= n`` (one-hot on the weight).

Results are cached per table content.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

__all__ = [
    "Factors",
    "clear_cache",
    "decompose_error",
    "decompose_table",
    "numerical_rank",
    "restrict_columns",
]

_CACHE: OrderedDict[tuple, Factors] = OrderedDict()
_CACHE_SIZE = 512
_INT_BASIS_MAX_RANK = 64


@dataclass(frozen=True)
class Factors:
    """``H = U @ V.T`` exactly (up to float rounding for ``kind == "svd"``).

    ``U``: ``(2**a_bits, r)`` float64, ``V``: ``(n, r)`` float64, ``kind`` in
    ``{"zero", "svd", "int_basis", "act_onehot", "wt_onehot"}``; ``integer`` says the factors hold
    integers, so sums of products are exact in floating point without rounding. ``col_class``
    (``wt_onehot`` only, shape ``(n,)``, ``-1`` for a zero column) lets
    :func:`restrict_columns` drop unused weight values cheaply.
    """

    U: np.ndarray
    V: np.ndarray
    r: int
    kind: str
    integer: bool
    col_class: np.ndarray | None = field(default=None, repr=False)

    def reconstruct(self) -> np.ndarray:
        """``U @ V.T``, shape ``(2**a_bits, n)`` float64."""
        return self.U @ self.V.T


def clear_cache() -> None:
    """Forget every cached factorization."""
    _CACHE.clear()


def _key(H: np.ndarray, *extra: object) -> tuple:
    h = hashlib.sha1(np.ascontiguousarray(H, dtype=np.int64).tobytes()).hexdigest()
    return (h, H.shape, *extra)


def _cached(key: tuple, make):  # type: ignore[no-untyped-def]
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    val = make()
    _CACHE[key] = val
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return val


def numerical_rank(H: np.ndarray, rtol: float = 1e-10) -> int:
    """Number of singular values of ``H`` above ``rtol * s_max`` (0 for a zero table)."""
    with threadpool_limits(1, user_api="blas"):
        s = np.linalg.svd(np.asarray(H, dtype=np.float64), compute_uv=False)
    return 0 if s.size == 0 or s[0] == 0 else int((s > s[0] * rtol).sum())


def _svd(H: np.ndarray, tol: float) -> Factors | None:
    Hf = H.astype(np.float64)
    u, s, vt = np.linalg.svd(Hf, full_matrices=False)
    if s[0] == 0:
        return None
    r0 = int((s > s[0] * 1e-10).sum())
    for r in range(r0, min(r0 + 8, s.size) + 1):
        root = np.sqrt(s[:r])
        U = u[:, :r] * root
        V = vt[:r].T * root
        if np.abs(U @ V.T - Hf).max() < tol:
            return Factors(U, V, r, "svd", False)
    return None


def _primitive(v: np.ndarray) -> np.ndarray:
    g = int(np.gcd.reduce(np.abs(v)))
    return v // g if g > 1 else v


def _int_basis(H: np.ndarray, r: int) -> Factors | None:
    """Integer factors ``H = H[:, J] @ C`` (pivoted columns, integer coefficients), or the same on rows."""
    if r == 1:
        j = int(np.flatnonzero(np.any(H != 0, axis=0))[0])
        u = _primitive(H[:, j])
        i = int(np.flatnonzero(u)[0])
        v, rem = np.divmod(H[i], u[i])
        if not rem.any() and np.array_equal(np.outer(u, v), H):
            return Factors(u[:, None].astype(np.float64), v[:, None].astype(np.float64), 1, "int_basis", True)
        return None
    for transposed in (False, True):
        M = H.T if transposed else H
        for J in (
            _bitplane_columns(M, r),
            scipy.linalg.qr(M.astype(np.float64), mode="r", pivoting=True)[1][:r],
        ):
            if J is None:
                continue
            B = M[:, J]
            C = np.linalg.lstsq(B.astype(np.float64), M.astype(np.float64), rcond=None)[0]
            Ci = np.round(C).astype(np.int64)
            if np.abs(C - Ci).max() < 1e-6 and np.array_equal(B @ Ci, M):
                Bf, Cf = B.astype(np.float64), Ci.T.astype(np.float64)
                U, V = (Cf, Bf) if transposed else (Bf, Cf)
                return Factors(U, V, r, "int_basis", True)
    return None


def _bitplane_columns(M: np.ndarray, r: int) -> np.ndarray | None:
    """``r`` independent columns, taken greedily in order of index popcount (bit planes first)."""
    n = M.shape[1]
    order = sorted(range(n), key=lambda j: (bin(j).count("1"), j))
    Mf = M.astype(np.float64)
    Q = np.zeros((M.shape[0], 0))
    J: list[int] = []
    for j in order:
        c = Mf[:, j]
        nc = np.linalg.norm(c)
        if nc == 0:
            continue
        res = c - Q @ (Q.T @ c)
        nr = np.linalg.norm(res)
        if nr > 1e-9 * nc:
            Q = np.concatenate([Q, (res / nr)[:, None]], axis=1)
            J.append(j)
            if len(J) == r:
                return np.array(J)
    return None


def _distinct_nonzero(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct non-zero rows of ``T`` ``(k, n)``, the row-to-class indicator ``(m, k)`` and the class of each
    row ``(m,)`` (-1 for all-zero rows): ``T == indicator @ reps``."""
    rows, inv = np.unique(T, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    keep = np.flatnonzero(np.any(rows != 0, axis=1))
    remap = np.full(rows.shape[0], -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    cls = remap[inv]
    ind = np.zeros((T.shape[0], keep.size))
    sel = cls >= 0
    ind[np.flatnonzero(sel), cls[sel]] = 1.0
    return rows[keep], ind, cls


def _act_onehot(H: np.ndarray) -> Factors:
    reps, ind, _ = _distinct_nonzero(H)
    return Factors(ind, reps.T.astype(np.float64), ind.shape[1], "act_onehot", True)


def _wt_onehot(H: np.ndarray) -> Factors:
    reps, ind, cls = _distinct_nonzero(H.T)
    return Factors(reps.T.astype(np.float64), ind, ind.shape[1], "wt_onehot", True, col_class=cls)


def restrict_columns(f: Factors, used: np.ndarray) -> Factors:
    """Drop the terms of a ``wt_onehot`` factorization no used column needs.

    ``used``: bool ``(n,)``. The result is exact on the used columns only (other rows of ``V`` are zero).
    """
    if f.kind != "wt_onehot" or f.col_class is None:
        return f
    present = np.unique(f.col_class[used & (f.col_class >= 0)])
    if present.size == f.r:
        return f
    return Factors(f.U[:, present], f.V[:, present], int(present.size), "wt_onehot", True)


def _candidates(H: np.ndarray, tol: float) -> list[Factors]:
    # One BLAS thread: these tables are at most 256 x 2048, and BLAS threads spinning against torch's (or another
    # process's) threads made a 256 x 256 SVD take 1.3 s instead of 0.011 s on this 2-core machine (measured).
    with threadpool_limits(1, user_api="blas"):
        return _candidate_list(H, tol)


def _candidate_list(H: np.ndarray, tol: float) -> list[Factors]:
    out = [_act_onehot(H), _wt_onehot(H)]
    if min(f.r for f in out) > 1:
        svd = _svd(H, tol)
        if svd is not None:
            out.append(svd)
            if svd.r <= _INT_BASIS_MAX_RANK:
                ib = _int_basis(H, svd.r)
                if ib is not None:
                    out.append(ib)
    return out


def _best(cands: list[Factors], used: np.ndarray | None) -> Factors:
    if used is not None:
        cands = [restrict_columns(f, used) for f in cands]
    # cheapest r; on ties prefer integer factors (exact without rounding)
    return min(cands, key=lambda f: (f.r, not f.integer))


def decompose_table(H: np.ndarray, used: np.ndarray | None = None, tol: float = 1e-6) -> Factors:
    """Cheapest exact factorization of an integer table ``H`` ``(2**a_bits, n)``.

    ``used`` (bool ``(n,)``, optional): only these columns must be reproduced (weight values that occur);
    only the ``wt_onehot`` candidate profits from it. Cached per table content.
    """
    H = np.asarray(H)
    if H.ndim != 2:
        raise ValueError(f"decompose_table expects a 2-D table, got shape {H.shape}")
    if not np.issubdtype(H.dtype, np.integer):
        raise ValueError(f"decompose_table expects an integer table, got dtype {H.dtype}")
    H = H.astype(np.int64, copy=False)
    if not H.any():
        z = np.zeros((H.shape[0], 0)), np.zeros((H.shape[1], 0))
        return Factors(z[0], z[1], 0, "zero", True)
    cands = _cached(_key(H, tol), lambda: _candidates(H, tol))
    return _best(cands, used)


def decompose_error(E: np.ndarray, tol: float = 1e-6) -> Factors:
    """Cheapest exact factorization ``E = U V^T`` of one error table ``E`` ``(2**a_bits, 2**w_bits)``.

    Returns :class:`Factors` with ``U`` ``(2**a_bits, r)``, ``V`` ``(2**w_bits, r)``;
    ``r = 0`` for ``E == 0``.
    """
    return decompose_table(E, tol=tol)

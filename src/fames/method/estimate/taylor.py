"""Loss-perturbation estimates Omega[group, AppMul] (FAMES Section IV-C) and their validation.

For layer k with candidate AppMul A, the layer output changes by the exact linear term
dY_A = Y(A) - Y(exact) = s_x s_w sum_i E_A[x_i, w_i], so the logits change to first order by J dY_A and

    Omega[k, A] = g_k . e_A + 1/2 mean_s (J_s e_A)^T H_L(z_s) (J_s e_A),   H_L(z) = diag(p) - p p^T.

* ``g_k = dL/dE`` (the counting-matrix gradient, a ``(2^a, 2^w)`` table) comes from ONE backward pass with a
  zero, differentiable error table in every layer; every candidate is then a dot product.
* The Gauss-Newton term needs ``J_s e_A``. Samples are independent in eval mode, so one backward pass from
  ``sum_s z_{s,c}`` gives every sample's ``dz_{s,c}/dY_k`` for every layer k at once (C passes, C = classes);
  ``(J_s e_A)_c = <dz_{s,c}/dY_k, dY_A[s]>``. This is the exact Gauss-Newton quadratic form, computed
  without building the Hessian. The rank-1 variant replaces ``H_L(z_s)`` by ``lambda_s v_s v_s^T`` (its
  top eigenpair, by power iteration) and needs one backward pass from ``sum_s v_s . z_s`` instead of C.
* With ``mean_errors`` (:class:`~fames.method.estimate.forward.MeanForward`) the same terms are also computed
  for the zero-mean remainder ``dY_A - mu_A`` of each candidate (``Estimate.residual``).
* At kernel granularity (output x input channel pairs) the same contractions are kept per kernel without any
  per-group forward pass: one exact factorization of all candidates' error tables turns them into r weight
  gradients of the layer per output gradient (:meth:`fames.quant.layers.QuantLayer.kernel_projections`);
  filters sum their kernels. How the second-order term is split over groups: ``curvature`` below.

The mean-forward extension lives in :mod:`fames.method.estimate.forward` (a wrapper around any estimator).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.method.compensate import correction_projections, kernel_alphas
from fames.method.compensate.bias import activation_histograms
from fames.method.compensate.variate import channel_rows
from fames.method.estimate.base import (
    Estimate,
    as_pairs,
    capture,
    check_candidates,
    check_granularity,
    layer_states,
    samples_first,
)
from fames.quant.layers import QConv2d, QuantLayer

HESSIANS = ("none", "rank1", "full")
CURVATURES = ("own", "bound", "covariance")


def counting_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """``dL/dE`` per quantized layer (``(2^a, 2^w)`` float64) from one backward pass; L = mean cross-entropy."""
    with layer_states(model) as ql:
        probes = {}
        for n, m in ql:
            m.error_probe = torch.zeros(1 << m.a_bits, 1 << m.w_bits, dtype=torch.float64, requires_grad=True)
            m.mode = "approx"
            probes[n] = m.error_probe
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(probes.values()))
    return {n: g.detach().numpy() for n, g in zip(probes, grads, strict=True)}


class TaylorEstimator:
    """FAMES estimator: ``hessian`` = ``full`` (exact Gauss-Newton), ``rank1`` or ``none`` (first order).

    ``linearized`` (with ``full``): Omega = mean_s CE(z_s + J_s e_A) - CE(z_s), the loss evaluated exactly at
    the first-order logits instead of its quadratic model; it saturates like the true loss for large errors.

    ``first_order``: ``clip`` (default) counts a negative first-order term as 0, ``signed`` keeps it. A trained
    model sits near a minimum, so a negative g . e_A on a sample batch is mostly sampling and rounding noise
    (measured: bench/estimator.py); kept signed, the ILP takes such "free improvements" in every layer even at
    mild budgets and the errors add up. Clipped, Omega is the non-negative curvature cost plus any predicted
    increase.

    ``bias_correction``: every candidate is estimated with the mean-error correction of
    :mod:`fames.method.compensate.bias` applied (the Taylor model of the residual ``dY_A - s_x s_w alpha``, ``alpha``
    per kernel from the activation histograms of ``x``), at any granularity.

    ``curvature`` (filter and kernel granularity) is how the second-order term is split over the groups of a
    layer: ``"own"`` takes each group alone, ``c_g = (J e_g)^T H (J e_g)`` per sample, and misses the cross
    terms between groups: errors of one candidate in many groups of a layer add up coherently (biased errors),
    so for a whole layer of G groups it gives about G times too little curvature, which a selection exploits.
    ``"bound"`` takes ``sqrt(c_g) sum_h sqrt(c_h)`` (h over the layer's groups, same candidate): by the
    triangle inequality in the H-norm, summed over any subset of groups it bounds that subset's quadratic
    form from above, with equality for a whole layer of aligned errors; for errors of random sign it
    overstates a whole layer's term about G times. ``"covariance"`` measures the cross terms instead:
    ``c_g = max(own_g, E_s[(J e_g)^T H (J sum_h e_h)])`` (h over the layer's groups, same candidate), the
    group's share of the layer's quadratic form when the whole layer takes that candidate (the shares of all
    groups add up exactly to the layer-level term, up to the floor at the group's own term, which keeps a group
    whose errors happen to cancel the others' from looking free). It assumes the layer's other groups take the same
    candidate: when a selection mixes designs inside a layer the cancellations it credits can vanish, so it may
    underestimate (measured on ResNet-20 W4A4 with synthesized designs: docs/results/granularity.md); ``"bound"``
    cannot.

    """

    # Per-sample counting tables cost ~2^min(a, w) output-gradient contractions, the per-candidate path ~K
    # layer emulations: tables are used when 2^min(a, w) <= TABLE_FACTOR * K (layer granularity).
    TABLE_FACTOR = 4

    def __init__(
        self,
        hessian: str = "rank1",
        chunk: int = 128,
        power_iters: int = 30,
        progress: bool = True,
        linearized: bool = False,
        curvature: str = "own",
        first_order: str = "clip",
        bias_correction: bool = False,
    ):
        if hessian not in HESSIANS:
            raise FamesError(f"hessian={hessian!r} is not one of {HESSIANS}")
        if linearized and hessian != "full":
            raise FamesError("linearized=True evaluates the loss at the linearized logits: it needs hessian='full'")
        self.hessian, self.chunk, self.power_iters, self.progress = hessian, chunk, power_iters, progress
        if curvature not in CURVATURES:
            raise FamesError(f"curvature={curvature!r} is not one of {CURVATURES}")
        if linearized and curvature != "own":
            raise FamesError("linearized=True evaluates each group's own loss change: it needs curvature='own'")
        if first_order not in ("clip", "signed"):
            raise FamesError(f"first_order={first_order!r}: use 'clip' or 'signed'")
        self.linearized, self.curvature, self.first_order = linearized, curvature, first_order
        self.bias_correction = bias_correction
        self.name = {"none": "first-order", "rank1": "taylor-rank1", "full": "taylor-full"}[hessian]
        if linearized:
            self.name = "linearized-logits"

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        candidates: dict[str, list[AppMul]],
        granularity: str = "layer",
        mean_errors: dict[str, torch.Tensor] | None = None,
    ) -> Estimate:
        """Omega for every (layer, candidate) on the sample batch ``x (S, ...)``, labels ``y (S,)``.

        A candidate may also be a pair ``(AppMul, Compensation or None)`` (layer granularity): the Taylor model
        is then applied to the residual ``dY_A - s_x s_w (beta V + alpha)`` of the control-variate correction
        (:mod:`fames.method.compensate`). ``mean_errors[layer]`` ``(K, *output[1:])`` (layer granularity) adds
        the terms of the zero-mean remainder ``dY_A - mu_A`` as ``Estimate.residual``."""
        check_granularity(granularity)
        if mean_errors is not None and granularity != "layer":
            raise FamesError("mean_errors (the mean-forward estimate) need granularity 'layer'")
        if self.bias_correction and (mean_errors is not None or any(
                isinstance(c, tuple) for cs in candidates.values() for c in cs)):
            raise FamesError("bias_correction replaces the control variate and the mean forward: use one of them")
        t0 = time.perf_counter()
        (second, first), rest = self._terms(model, x, y, candidates, granularity, mean_errors)
        residual = None
        if rest is not None:
            residual = {"first": rest[1], "second": rest[0], "omega": self._omega(rest[1], rest[0])}
        return Estimate(
            self._omega(first, second), first, second, candidates, granularity, self.hessian,
            time.perf_counter() - t0, residual=residual,
        )

    def _omega(self, first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``first`` (clipped at 0 unless ``first_order="signed"``) + ``second`` / 2, per layer."""
        clip = (lambda v: np.maximum(v, 0.0)) if self.first_order == "clip" else (lambda v: v)
        return {n: clip(first[n]) + 0.5 * second[n] for n in first}

    def _terms(self, model, x, y, candidates, granularity, mu=None):
        """``((second, first), rest)``: second- and first-order terms per layer, each ``(groups, K)``, from
        chunked forward/backward passes; ``rest`` the same pair for the remainder ``dY_A - mu[name][A]`` when the
        mean output errors ``mu`` are given (layer granularity), else None."""
        S = x.shape[0]
        with layer_states(model) as ql:
            check_candidates(ql, candidates, granularity)
            layers = dict(ql)
            G = {n: int(np.prod(layers[n].group_shape(granularity))) for n in candidates}
            sec = {n: np.zeros((G[n], len(ms))) for n, ms in candidates.items()}
            fst = {n: np.zeros((G[n], len(ms))) for n, ms in candidates.items()}
            own = {n: np.zeros_like(v) for n, v in sec.items()}  # floor of the covariance split
            rest = None
            alphas = {}
            if self.bias_correction:  # expected accumulated error per kernel and candidate, (O, C/groups, K)
                hist = activation_histograms(model, {n: layers[n] for n in candidates}, x, self.chunk)
                alphas = {n: kernel_alphas(layers[n], hist[n], ms) for n, ms in candidates.items()}
            if mu is not None:
                rest = ({n: np.zeros_like(v) for n, v in sec.items()}, {n: np.zeros_like(v) for n, v in fst.items()})
            # per-sample terms need each layer's input as (samples, ...): a layer that sees them otherwise (sequence
            # first, flattened with positions, routed by the data) is estimated one sample at a time
            odd = samples_first(model, [(n, layers[n]) for n in candidates], x) if S >= 3 else list(candidates)
            chunk = 1 if odd else self.chunk
            if odd and S >= 3:
                warnings.warn(f"quantized layers {odd[:3]} do not take the samples in the first dimension of their "
                              f"input (e.g. (T, N, C)): the {self.name} estimate runs one sample at a time (slower)",
                              stacklevel=4)
            if mu is not None and odd:
                raise FamesError(f"the mean-forward estimate needs every layer's output as (samples, ...); layers "
                                 f"{odd[:3]} take them otherwise: use the estimator kind without +forward")
            chunks = (S + chunk - 1) // chunk
            bar = tqdm(total=len(candidates) * chunks, desc=f"estimate ({self.name})", disable=not self.progress)
            for s0 in range(0, S, chunk):
                xb, yb = x[s0 : s0 + chunk], y[s0 : s0 + chunk]
                with torch.enable_grad():
                    z, ins, outs = capture(model, ql, xb, every_call=True)
                    names = [n for n in candidates if n in outs]  # a layer the data routes around adds nothing
                    tensors = [t for n in names for t in outs[n]]
                    p = F.softmax(z.detach().double(), 1)
                    # dL/dY for the first-order term (L = mean CE over the whole batch)
                    gl = torch.autograd.grad(F.cross_entropy(z, yb, reduction="sum") / S, tensors, retain_graph=True,
                                             allow_unused=True)
                    if self.hessian == "full":
                        C = z.shape[1]
                        Gc = [torch.autograd.grad(z[:, c].sum(), tensors, retain_graph=c < C - 1, allow_unused=True)
                              for c in range(C)]
                        lam = None
                    elif self.hessian == "rank1":
                        lam, vec = _top_eig(p, self.power_iters)
                        Gc = [torch.autograd.grad((z * vec.to(z.dtype)).sum(), tensors, allow_unused=True)]
                    else:
                        Gc, lam = [], None
                k = 0
                for n in names:
                    f = q = None
                    for xi, out in zip(ins[n], outs[n], strict=True):  # every call of the layer (shared layers)
                        grads = [g if g is not None else torch.zeros_like(out) for g in [gl[k]] + [g[k] for g in Gc]]
                        k += 1
                        if xi.numel() == 0:  # called on no rows (an expert no token was routed to)
                            continue
                        if odd:  # one sample: all of the call's rows are its
                            xi, grads = _one_sample(layers[n], xi), [_one_sample(layers[n], g) for g in grads]
                        # (S, G, K) and (S, C, G, K)
                        fc, qc = self._projections(layers[n], xi, grads, candidates[n], granularity)
                        if n in alphas:
                            fc, qc = _minus_bias(layers[n], grads, alphas[n], granularity, fc, qc)
                        f, q = (fc, qc) if f is None else (f + fc, q + qc)  # the same AppMul errs on every call
                    bar.update()
                    if f is None:
                        continue
                    terms = [((f, q), (sec, fst))]
                    if mu is not None:  # project out the mean error: <G[s], mu_A> per gradient, sample, candidate
                        if len(outs[n]) > 1:
                            raise FamesError(f"the mean-forward estimate takes one call per layer; {n} is called "
                                             f"{len(outs[n])} times: use the estimator kind without +forward")
                        pm = torch.stack([g.double().flatten(1) @ mu[n].flatten(1).T for g in grads])  # (1 + C, S, K)
                        terms.append(((f - pm[0][:, None], q - pm[1:].transpose(0, 1)[:, :, None]), rest))
                    for (fi, qi), (so, fo) in terms:
                        fo[n] += fi.sum(0).numpy()
                        if Gc:
                            so[n] += (self._curvature(z.detach().double(), yb, p, lam, qi).sum(0) / S).numpy()
                    if Gc and self.curvature == "covariance" and granularity != "layer":
                        own[n] += (self._curvature(z.detach().double(), yb, p, lam, q, "own").sum(0) / S).numpy()
                bar.update(len(candidates) - len(names))
            bar.close()
        if self.curvature == "covariance" and granularity != "layer" and self.hessian != "none":
            sec = {n: np.maximum(v, own[n]) for n, v in sec.items()}
        return (sec, fst), rest

    def _projections(self, layer: QuantLayer, x, grads, cands, granularity):
        """``<G, dY_A>`` per sample, group and candidate for every gradient G: ``(S, G, K)`` for the loss
        gradient and ``(S, C, G, K)`` for the logit directions. Kernels and filters from the layer's kernel
        projections (one factorization of all candidates: never more work than a layer emulation per
        candidate); layers from per-sample counting tables when they are cheaper (narrow operands), else
        from one layer-output error per candidate."""
        K = len(cands)
        if any(isinstance(c, tuple) for c in cands):  # (AppMul, correction) pairs: base terms minus the corrections
            pairs = as_pairs(cands)
            ams = list({m.name: m for m, _ in pairs}.values())
            f, q = self._projections(layer, x, grads, ams, granularity)
            cols = [[m.name for m in ams].index(m.name) for m, _ in pairs]
            f, q = f[..., cols], q[..., cols]
            ci = [i for i, (_, c) in enumerate(pairs) if c is not None]
            if ci:
                corr = correction_projections(layer, x, grads, [pairs[i][1] for i in ci])  # (1 + C, S, n)
                f[:, 0, ci] -= corr[0]
                q[:, :, 0, ci] -= corr[1:].transpose(0, 1)
            return f, q
        if granularity != "layer":
            P = layer.kernel_projections(x, grads, cands)  # (1 + C, S, O, C/groups, K)
            P = P.sum(3) if granularity == "filter" else P.flatten(2, 3)
            return P[0], P[1:].transpose(0, 1)
        if granularity == "layer" and (1 << min(layer.a_bits, layer.w_bits)) <= self.TABLE_FACTOR * K:
            U = layer.counting_tables(x, grads)  # (1 + C, S, 2^a, 2^w)
            E = torch.from_numpy(np.stack([m.error().ravel() for m in cands], 1).astype(np.float64))
            proj = U.flatten(2) @ E  # (1 + C, S, K)
            return proj[0][:, None], proj[1:].transpose(0, 1)[:, :, None]
        f = torch.zeros(x.shape[0], 1, K, dtype=torch.float64)
        q = torch.zeros(x.shape[0], len(grads) - 1, 1, K, dtype=torch.float64)
        scale = layer.error_scale(layer.VIEW, torch.float64).detach()
        gs = [g.double() * scale for g in grads]  # <G, s dY> = <s G, dY>: one scaling per layer, not per AppMul
        for j, d in enumerate(layer.error_contributions(x, cands, scaled=False)):
            if d is None:
                continue
            pr = torch.stack([_contract(g, d) for g in gs], 1)  # (S, 1 + C, 1)
            f[:, :, j], q[:, :, :, j] = pr[:, 0], pr[:, 1:]
        return f, q

    def _curvature(self, z, y, p, lam, q, curvature=None):
        """Second-order term per sample ``(S, G, K)`` from the logit changes ``q = J_s e_A`` ``(S, C, G, K)``
        (per group, bounded over the layer's groups with ``curvature="bound"``, or the group's covariance with
        the layer's sum with ``"covariance"``, before its floor), or with ``linearized`` twice the exact loss
        change at the linearized logits minus its first-order part."""
        curvature = curvature or self.curvature
        if self.linearized:
            zq = z[:, :, None, None] + q  # (S, C, G, K)
            ce = torch.logsumexp(zq, 1) - zq.gather(1, y.view(-1, 1, 1, 1).expand(-1, 1, *zq.shape[2:]))[:, 0]
            ce0 = (torch.logsumexp(z, 1) - z.gather(1, y.view(-1, 1))[:, 0])[:, None, None]
            first = ((p - F.one_hot(y, z.shape[1]).double())[:, :, None, None] * q).sum(1)
            return 2 * (ce - ce0 - first)
        pb = p[:, :, None, None]

        def form(a, b):  # a^T H b per sample, group and candidate: H = lam v v^T (rank 1) or diag(p) - p p^T
            if lam is not None:
                return lam[:, None, None] * a[:, 0] * b[:, 0]
            return (pb * a * b).sum(1) - (pb * a).sum(1) * (pb * b).sum(1)

        if curvature == "covariance":
            return form(q, q.sum(2, keepdim=True))
        own = form(q, q)
        if curvature == "own":
            return own
        root = own.clamp_min(0).sqrt()
        return root * root.sum(1, keepdim=True)


def _one_sample(layer: QuantLayer, t: torch.Tensor) -> torch.Tensor:
    """A layer input or output of one sample as a batch of one: a Linear's rows all belong to it (any layout), a
    convolution's input is ``(C, H, W)`` when the model dropped the batch dimension."""
    return t if isinstance(layer, QConv2d) and t.dim() == 4 else t.unsqueeze(0)


def _minus_bias(layer: QuantLayer, grads: list[torch.Tensor], alpha: np.ndarray, granularity: str,
               f: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections ``f (S, G, K)``, ``q (S, C, G, K)`` of the bias-corrected candidates: minus
    ``<G, s_x s_w alpha>`` per gradient, with ``alpha (O, C/groups, K)`` per kernel summed over each group."""
    scale = layer.error_scale(layer.VIEW, torch.float64).detach()
    p0 = torch.stack([channel_rows(layer, g.double() * scale).sum(2) for g in grads])  # (1 + C, S, O)
    a = torch.from_numpy(alpha)
    if granularity == "layer":
        corr = (p0 @ a.sum(1))[:, :, None]
    elif granularity == "filter":
        corr = p0[..., None] * a.sum(1)
    else:
        corr = (p0[..., None, None] * a).flatten(2, 3)
    return f - corr[0], q - corr[1:].transpose(0, 1)


def _contract(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product of two layer outputs of any shape ``(S, ...)`` (a conv's ``(S, O, H, W)``, a Linear's
    ``(S, O)`` or ``(S, L, O)``) -> ``(S, 1)`` (float64: ``g`` is float64 and ``d`` is promoted in the same pass)."""
    return (g * d).flatten(1).sum(1, keepdim=True)


def _top_eig(p: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenpair of H_L = diag(p) - p p^T for every row of ``p (S, C)`` by power iteration, each row from the same
    start (so a sample's pair does not depend on which chunk of samples it is computed in)."""
    start = torch.randn(p.shape[1], dtype=p.dtype, generator=torch.Generator().manual_seed(0))
    v = start.expand_as(p).clone()
    for _ in range(iters):
        hv = p * v - p * (p * v).sum(1, keepdim=True)
        v = hv / hv.norm(dim=1, keepdim=True).clamp_min(1e-30)
    hv = p * v - p * (p * v).sum(1, keepdim=True)
    lam = (v * hv).sum(1)
    return lam, v

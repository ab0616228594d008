"""Control-variate compensation of accumulated AppMul error (Zervakis et al., DAC 2021), for any AppMul.

One output of a layer accumulates the error ``eps_f = sum_i E[x_i, w_f,i]`` over its ``K`` taps. Beside the dot
product the accelerator accumulates a control variate ``V = sum_i phi(x_i)`` (one extra accumulator shared by all
filters of a group: ``phi`` depends on the activation only) and every output subtracts ``alpha_f + beta_f V``
(one multiply-add per output). How ``phi``, ``beta`` and ``alpha`` are obtained:

* Per-product model. Every variant below writes the error of one product as
  ``E[x, w] ~= ebar(w) + v(w) (phi(x) - m)`` with ``ebar(w) = E_p[E(., w)]`` and ``m = E_p[phi]`` under the
  layer's activation distribution ``p``. With ``beta_f = mean_i v(w_f,i)`` and
  ``alpha_f = sum_i ebar(w_f,i) - K m beta_f`` (both from the weights, offline) the corrected error has zero
  mean whenever the activations of a window are identically distributed with law ``p``, and ``beta_f`` is the
  variance-minimising coefficient when they are also independent (``Cov(eps, V) / Var(V)``).
* ``perforation`` (the paper's case). Our ``perf`` family clears weight bits ``s .. s+p-1``, so
  ``E[x, w] = -x d(w)`` with ``d(w) = w - w'`` the perforated part of the weight. The model is exact:
  ``phi(x) = x`` (the activation code itself), ``v(w) = -d(w)``, ``beta_f = -mean_i d(w_f,i)`` and ``alpha_f = 0``.
  The paper perforates the partial products of one operand and tracks that operand's perforated part; here the
  perforated operand is the weight, fixed per filter, so its perforated parts enter ``beta_f`` offline and the
  shared accumulator sums the activation codes (a sum an affine-weight layer already needs for its zero point;
  it is costed anyway). ``alpha_f`` folds into the bias in hardware.
* ``rank1`` (any LUT). ``phi`` is the best rank-1 factor of the centred table ``E - ebar`` weighted by the
  layer's operand distribution (weighted SVD: ``sqrt(p) (E - ebar) sqrt(q)``), quantized to ``phi_bits``
  signed integers; ``v(w)`` is then the least-squares coefficient of every weight column on the quantized
  ``phi``. For a truly rank-1 ``E`` (and ``phi`` exact in ``phi_bits``) the model reproduces every entry.
* ``calibrated`` fit (``fit_calibrated``): keep ``phi``, set ``beta_f = Cov(eps_f, V) / Var(V)`` and
  ``alpha_f = mean(eps_f) - beta_f mean(V)`` over every output position of calibration inputs.

Integer definition (what the emulation reproduces bit for bit, float64): ``phi`` is a table of signed integers
(``phi_bits``); ``V`` is exact in a ``v_bits`` two's-complement accumulator (wide enough never to wrap);
``beta_q``, ``alpha_q`` are integers with ``frac`` fractional bits (``beta_q`` fits ``coef_bits`` signed bits);
the accumulator of output ``f`` becomes ``acc_f - floor((beta_q,f V + alpha_q,f + 2^(frac-1)) / 2^frac)``
(round half up), before the exact zero-point terms and dequantization of :class:`fames.quant.layers.QuantLayer`.

Hardware overhead (:mod:`fames.method.compensate.overhead`): the ``phi``-lookup-and-accumulate unit (an adder of
``v_bits``), one
``v_bits x coef_bits`` multiplier and one subtraction of the accumulator width per output, each synthesized and
costed on the same liberty by the recipe of :mod:`fames.hw.cost`.

Selection (:mod:`fames.method.estimate.compensated`): every AppMul of a layer is a candidate with and
without compensation; the estimate uses the residual error of a compensated candidate (exact linear term
``dY = s_x s_w (sum_i E[x_i, w_i] - alpha_f - beta_f V)``) in the FAMES Taylor expansion.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul, operand_values
from fames.errors import FamesError
from fames.quant.layers import QuantLayer

METHODS = ("perforation", "rank1")


@dataclass
class Compensation:
    """Integer control-variate correction of one layer (see the module docstring for the definition).

    ``phi``: ``(2^a_bits,)`` int64, indexed by the activation code's bit pattern; ``beta``, ``alpha``: ``(O,)``
    int64 with ``frac`` fractional bits; ``fan_in`` = taps per output ``K``; ``v_bits``: width of the V
    accumulator; ``appmul``: name of the AppMul compensated; ``method``/``fit``: how it was obtained.
    """

    appmul: str
    method: str
    fit: str
    phi: torch.Tensor
    beta: torch.Tensor
    alpha: torch.Tensor
    frac: int
    fan_in: int
    phi_bits: int
    v_bits: int
    coef_bits: int

    def check(self, layer: QuantLayer) -> None:
        """Raise :class:`FamesError` if this correction does not fit ``layer``."""
        o = layer.weight.shape[0]
        if tuple(self.phi.shape) != (1 << layer.a_bits,):
            raise FamesError(
                f"compensation phi has shape {tuple(self.phi.shape)}; an A{layer.a_bits} layer needs "
                f"({1 << layer.a_bits},) (one entry per activation code)"
            )
        for label, t in (("beta", self.beta), ("alpha", self.alpha)):
            if tuple(t.shape) != (o,):
                raise FamesError(f"compensation {label} has shape {tuple(t.shape)}; this layer has {o} filters")
        if self.fan_in != layer.weight[0].numel():
            raise FamesError(f"compensation fitted for fan-in {self.fan_in}, the layer has {layer.weight[0].numel()}")
        a = layer.assignment
        if a is None or {m.name for m in a.appmuls} != {self.appmul}:
            raise FamesError(
                f"compensation was fitted for AppMul {self.appmul!r} but the layer uses "
                f"{None if a is None else sorted({m.name for m in a.appmuls})}; refit after changing the assignment"
            )

    def variate(self, layer: QuantLayer, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
        """``V`` per output (float64 integers, equal for all filters of a group), shaped like the layer output."""
        idx = qx.long() & ((1 << layer.a_bits) - 1)
        saved = layer._emulation_dtype
        layer.emulation_dtype = torch.float64
        try:  # an exact integer pass with all-ones weights sums phi over every output's window
            return layer.exact_integer(self.phi.to(qx.device)[idx].double(), torch.ones_like(qw))
        finally:
            layer._emulation_dtype = saved

    def correction(self, layer: QuantLayer, qx: torch.Tensor, qw: torch.Tensor, acc: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Integer correction subtracted from the accumulator (float64, shaped like the layer output; ``acc``, the
        accumulator itself, is not needed here)."""
        view = layer.VIEW
        num = self.beta.double().to(qx.device).view(view) * self.variate(layer, qx, qw)
        num = num + self.alpha.double().to(qx.device).view(view)
        return torch.floor((num + (0.5 if self.frac else 0.0) * 2.0**self.frac) * 2.0**-self.frac)

    def to_dict(self) -> dict[str, Any]:
        return {
            "appmul": self.appmul, "method": self.method, "fit": self.fit, "phi": self.phi.tolist(),
            "beta": self.beta.tolist(), "alpha": self.alpha.tolist(), "frac": self.frac, "fan_in": self.fan_in,
            "phi_bits": self.phi_bits, "v_bits": self.v_bits, "coef_bits": self.coef_bits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Compensation:
        """Inverse of :meth:`to_dict` (integer tensors rebuilt exactly); a missing key is a clear error."""
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise FamesError(f"compensation record lacks {missing}; it needs {list(cls.__dataclass_fields__)}")
        ints = {k: torch.as_tensor(d[k], dtype=torch.int64) for k in ("phi", "beta", "alpha")}
        rest = {k: d[k] for k in cls.__dataclass_fields__ if k not in ints}
        return cls(**rest, **ints)


@dataclass
class ProductModel:
    """Per-product error model ``E[x, w] ~= ebar(w) + v(w) (phi(x) - m)``; ``phi`` ``(2^a,)`` integers,
    ``v``/``ebar`` ``(2^w,)`` float64 (indexed by code bit pattern), ``m = E_p[phi]``."""

    method: str
    phi: np.ndarray
    v: np.ndarray
    ebar: np.ndarray
    m: float
    phi_bits: int


def distribution(hist: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if hist is None:
        return np.full(n, 1.0 / n)
    h = np.asarray(hist, dtype=np.float64)
    if h.shape != (n,) or (h < 0).any() or h.sum() <= 0:
        raise FamesError(f"{what} histogram must be non-negative, non-zero and of shape ({n},), got {h.shape}")
    return h / h.sum()


def perforation_model(appmul: AppMul, act_hist: np.ndarray | None = None) -> ProductModel:
    """The exact model of a ``perf`` AppMul: ``phi(x) = x``, ``v(w) = -d(w)`` (perforated part of ``w``)."""
    fam = appmul.provenance.get("family")
    params = appmul.provenance.get("params", {})
    if fam != "perf" or "p" not in params:
        raise FamesError(
            f"AppMul {appmul.name!r} is not a partial-product perforation (family {fam!r}); use method='rank1'"
        )
    p, s = int(params["p"]), int(params.get("s", 0))
    if p == 0:
        raise FamesError(f"AppMul {appmul.name!r} perforates no row: it is exact and needs no compensation")
    a_vals = operand_values(appmul.a_bits, appmul.a_signed)
    w_vals = operand_values(appmul.w_bits, appmul.w_signed)
    mask = ((1 << p) - 1) << s
    d = w_vals - w_vals[np.arange(1 << appmul.w_bits) & ~mask]
    if not np.array_equal(appmul.error(), -np.multiply.outer(a_vals, d)):
        raise FamesError(f"AppMul {appmul.name!r}: its LUT is not a * w' with w bits {s}..{s + p - 1} cleared")
    px = distribution(act_hist, 1 << appmul.a_bits, "activation")
    m = float(px @ a_vals)
    return ProductModel("perforation", a_vals, -d.astype(np.float64), -m * d, m, appmul.a_bits + (not appmul.a_signed))


def rank1_model(
    appmul: AppMul, act_hist: np.ndarray | None = None, w_hist: np.ndarray | None = None, phi_bits: int | None = None
) -> ProductModel:
    """Best rank-1 model of any LUT under the operand distribution (histograms over code bit patterns;
    uniform when None); ``phi`` quantized to ``phi_bits`` (default ``a_bits``) signed integers."""
    if appmul.is_exact():
        raise FamesError(f"AppMul {appmul.name!r} is exact: there is no error to compensate")
    na, nw = 1 << appmul.a_bits, 1 << appmul.w_bits
    pb = phi_bits or appmul.a_bits
    if not 2 <= pb <= 16:
        raise FamesError(f"phi_bits={pb} must lie in 2..16")
    px, qw = distribution(act_hist, na, "activation"), distribution(w_hist, nw, "weight")
    E = appmul.error().astype(np.float64)
    ebar = px @ E
    Ec = E - ebar
    _, _, vt = np.linalg.svd(np.sqrt(px)[:, None] * Ec * np.sqrt(qw)[None, :])
    live = qw > 0
    v0 = np.zeros(nw)
    v0[live] = vt[0, live] / np.sqrt(qw[live])
    u = Ec @ (qw * v0) / max(float(qw @ v0**2), 1e-300)  # defined for every code, also unseen ones
    top = float(np.abs(u).max())
    if top == 0:  # on these operands the error depends on the weight alone (e.g. it errs only at weight codes the
        # layer never holds): no variate to track, the mean error (alpha) corrects all of it
        return ProductModel("rank1", np.zeros(na, dtype=np.int64), np.zeros(nw), ebar, 0.0, pb)
    phi = np.rint(u * ((1 << (pb - 1)) - 1) / top).astype(np.int64)
    m = float(px @ phi)
    c = phi - m
    var = float(px @ c**2)
    # a single activation code (all-zero inputs, a dead ReLU before the layer) leaves phi constant: nothing to track
    v = (px * c) @ Ec / var if var > 0 else np.zeros(nw)
    return ProductModel("rank1", phi, v, ebar, m, pb)


def product_model(
    appmul: AppMul, act_hist: np.ndarray | None = None, w_hist: np.ndarray | None = None, method: str = "auto"
) -> ProductModel:
    """``perforation`` for ``perf`` AppMuls, else ``rank1`` (``method='auto'``), or the method named."""
    if method == "auto":
        method = "perforation" if appmul.provenance.get("family") == "perf" else "rank1"
    if method not in METHODS:
        raise FamesError(f"compensation method {method!r} is not one of {METHODS} or 'auto'")
    return perforation_model(appmul, act_hist) if method == "perforation" else rank1_model(appmul, act_hist, w_hist)


def _single_appmul(layer: QuantLayer) -> AppMul:
    a = layer.assignment
    if a is None or layer.mode != "approx":
        raise FamesError("compensation needs a layer in approx mode with an assignment; call set_assignment first")
    if len({m.name for m in a.appmuls}) != 1:
        raise FamesError(
            "compensation shares one variate V among all filters: the layer must use one AppMul "
            f"(got {sorted({m.name for m in a.appmuls})})"
        )
    m = a.appmuls[0]
    if m.is_exact():
        raise FamesError(f"the layer's AppMul {m.name!r} is exact: compensation has nothing to correct")
    return m


def _quantize(layer: QuantLayer, am: AppMul, method: str, phi: np.ndarray, phi_bits: int, beta: np.ndarray,
              alpha: np.ndarray, fit: str, coef_bits: int) -> Compensation:
    """Fixed-point ``beta``/``alpha`` (``coef_bits`` signed, shared ``frac``) and the V accumulator width."""
    K = layer.weight[0].numel()
    lo, hi = min(int(phi.min()), 0) * K, max(int(phi.max()), 0) * K
    v_bits = max((-lo - 1).bit_length(), hi.bit_length()) + 1
    top = float(np.abs(beta).max())
    if top >= 2.0 ** (coef_bits - 2):
        raise FamesError(f"|beta| up to {top:.3g} does not fit {coef_bits}-bit coefficients; raise coef_bits")
    frac = 0 if top == 0 else min(coef_bits - 2 - math.floor(math.log2(top)), 40)
    bq = np.clip(np.rint(beta * 2.0**frac), -(1 << (coef_bits - 1)), (1 << (coef_bits - 1)) - 1)
    aq = np.rint(alpha * 2.0**frac)
    if v_bits + coef_bits + 1 > 52 or np.abs(aq).max(initial=0) >= 2.0**52:
        raise FamesError(f"correction words too wide for exact float64 emulation (v_bits={v_bits}, frac={frac})")
    return Compensation(
        am.name, method, fit, torch.from_numpy(phi.astype(np.int64)), torch.from_numpy(bq.astype(np.int64)),
        torch.from_numpy(aq.astype(np.int64)), frac, K, phi_bits, v_bits, coef_bits,
    )


def activation_histogram(layer: QuantLayer, x: torch.Tensor) -> np.ndarray:
    """Counts of the activation codes the layer multiplies for input ``x``, one per product read (an element counts
    once per window it falls in, padding included, an element a stride skips not at all), indexed by bit pattern.
    Counting each padded element once overweighted the borders: the offline bias was 8-36% off the measured mean
    error on 32x32-4x4 maps."""
    return layer.code_histogram(x).sum((0, 1, 2)).double().numpy()


def weight_histogram(layer: QuantLayer) -> np.ndarray:
    idx = (layer.weight_codes().detach().long() & ((1 << layer.w_bits) - 1)).flatten()
    return torch.bincount(idx, minlength=1 << layer.w_bits).double().numpy()


@torch.no_grad()
def fit_offline(
    layer: QuantLayer,
    act_hist: np.ndarray | None = None,
    method: str = "auto",
    coef_bits: int = 16,
    appmul: AppMul | None = None,
) -> Compensation:
    """Correction from the weights and the activation distribution only (no calibration of ``beta``).

    ``appmul`` defaults to the layer's (single) assigned AppMul; ``act_hist`` to a uniform distribution.
    """
    am = appmul or _single_appmul(layer)
    if am.widths != layer.widths:
        raise FamesError(f"AppMul {am.name} is {am.signature()}; the layer needs {layer.widths}")
    if am.is_exact():
        raise FamesError(f"AppMul {am.name!r} is exact: compensation has nothing to correct")
    pm = product_model(am, act_hist, weight_histogram(layer), method)
    rows = layer.weight_codes().detach().long().reshape(layer.weight.shape[0], -1) & ((1 << layer.w_bits) - 1)
    v = torch.from_numpy(pm.v)[rows]  # (O, K)
    beta = v.mean(1).numpy()
    alpha = torch.from_numpy(pm.ebar)[rows].sum(1).numpy() - rows.shape[1] * pm.m * beta
    return _quantize(layer, am, pm.method, pm.phi, pm.phi_bits, beta, alpha, "offline", coef_bits)


def channel_rows(layer: QuantLayer, y: torch.Tensor) -> torch.Tensor:
    """Output-shaped ``y`` ``(S, O, ...)`` as ``(S, O, positions)``: one row per sample and output channel."""
    return layer.output_rows(y).reshape(y.shape[0], layer.weight.shape[0], -1)


@torch.no_grad()
def accumulated_error(layer: QuantLayer, qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
    """Approximate minus exact integer accumulator for operand codes ``qx``, ``qw`` (float64, output-shaped)."""
    saved = layer._emulation_dtype
    layer.emulation_dtype = torch.float64
    try:
        return layer.integer(qx, qw, **layer.emulation_args(qx.device)) - layer.exact_integer(qx, qw)
    finally:
        layer._emulation_dtype = saved


@torch.no_grad()
def fit_calibrated(layer: QuantLayer, x: torch.Tensor, base: Compensation) -> Compensation:
    """Refit ``beta_f = Cov(eps_f, V) / Var(V)`` and ``alpha_f = mean(eps_f - beta_f V)`` on layer inputs ``x``
    (every output position of every sample), keeping ``base.phi`` (and ``base.beta`` where V is constant)."""
    am = _single_appmul(layer)
    qx, qw = layer.operands(x)
    eps = accumulated_error(layer, qx, qw)
    V = base.variate(layer, qx, qw).expand_as(eps)
    o = layer.weight.shape[0]
    e = channel_rows(layer, eps).transpose(0, 1).reshape(o, -1)
    v = channel_rows(layer, V).transpose(0, 1).reshape(o, -1)
    vc = v - v.mean(1, keepdim=True)
    var = (vc * vc).sum(1)
    cov = ((e - e.mean(1, keepdim=True)) * vc).sum(1)
    # a variate constant on the data leaves beta undetermined: keep the offline one, fit alpha only
    beta = torch.where(var > 0, cov / var.clamp_min(1e-300), base.beta.double() * 2.0**-base.frac)
    alpha = e.mean(1) - beta * v.mean(1)
    return _quantize(layer, am, base.method, base.phi.numpy(), base.phi_bits, beta.numpy(), alpha.numpy(),
                     "calibrated", base.coef_bits)


def attach(layer: QuantLayer, comp: Any) -> None:
    """Apply ``comp`` (a :class:`Compensation` or a :class:`fames.method.compensate.bias.BiasCorrection`) in the
    layer's approximate forward (None removes it)."""
    if comp is not None:
        comp.check(layer)
    layer.compensation = comp


class _Reached(Exception):
    """Raised by a forward pre-hook to stop a forward pass once a layer's input is captured."""


def _stop(_module: nn.Module, _inputs: tuple) -> None:
    raise _Reached


def layer_inputs(model: nn.Module, names: list[str], x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Inputs of the named quantized layers when ``model`` (current state, eval mode) runs on ``x``."""
    from fames.quant.convert import qlayers

    mods = dict(qlayers(model))
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [mods[n].register_forward_pre_hook(lambda _m, inp, n=n: got[n].append(inp[0].detach())) for n in names]
    last = names[-1] if names else None
    if last is not None:  # nothing after the last named layer is needed
        hooks.append(mods[last].register_forward_pre_hook(_stop))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                with contextlib.suppress(_Reached):
                    model(x[s : s + batch])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {n: torch.cat(v) for n, v in got.items()}


def compensate_model(
    model: nn.Module,
    x: torch.Tensor,
    calibrated: bool = False,
    layers: list[str] | None = None,
    method: str = "auto",
    coef_bits: int = 16,
) -> dict[str, Any]:
    """Fit and attach a correction to every approximate layer (or those named) of ``model``, in forward order.

    ``x`` (unlabelled inputs) gives each layer's activation distribution, captured with the layers before it
    already compensated; with ``calibrated`` ``beta``/``alpha`` are then refitted by :func:`fit_calibrated` on
    the same layer inputs. Layers whose AppMuls are all exact are skipped. Cost: about half a forward pass of
    ``x`` per compensated layer. ``method="bias"``: the mean-error correction of :mod:`fames.method.compensate.bias`
    instead (any granularity, no variate; ``calibrated``: the measured mean error).
    """
    from fames.method.compensate.bias import METHOD as BIAS
    from fames.method.compensate.bias import fit_bias, fit_bias_calibrated
    from fames.quant.convert import qlayers

    if method not in (BIAS, "auto", *METHODS):  # (said even when no layer is there to fit)
        raise FamesError(f"compensation method {method!r} is not one of {METHODS}, 'auto' or {BIAS!r}")
    ql = dict(qlayers(model))
    if layers is None:
        names = [n for n, m in ql.items() if m.mode == "approx" and m.assignment is not None]
        names = [n for n in names if not all(a.is_exact() for a in ql[n].assignment.appmuls)]
    else:
        unknown = [n for n in layers if n not in ql]
        if unknown:
            raise FamesError(f"compensate_model: no quantized layer named {unknown[:5]}; the model's quantized layers "
                             f"are {list(ql)[:8]}{'...' if len(ql) > 8 else ''}")
        names = [n for n in ql if n in set(layers)]
    for n in names:
        ql[n].compensation = None
    out: dict[str, Any] = {}
    for n in names:
        inp = layer_inputs(model, [n], x)[n]
        if method == BIAS:
            comp = fit_bias_calibrated(ql[n], inp) if calibrated else fit_bias(ql[n], activation_histogram(ql[n], inp))
        else:
            comp = fit_offline(ql[n], activation_histogram(ql[n], inp), method, coef_bits)
            if calibrated:
                comp = fit_calibrated(ql[n], inp, comp)
        attach(ql[n], comp)
        out[n] = comp
    return out


# ================================================================================== corrections seen by the estimate


@torch.no_grad()
def correction_projections(
    layer: QuantLayer, x: torch.Tensor, grads: list[torch.Tensor], comps: list[Compensation]
) -> torch.Tensor:
    """``<G_k[s], s_x s_w (beta V + alpha) / 2^frac>`` (unrounded correction) per gradient, sample, correction."""
    qx, qw = layer.operands(x)
    scale = layer.error_scale(layer.VIEW, torch.float64)
    out = torch.zeros(len(grads), x.shape[0], len(comps), dtype=torch.float64)
    rows = [channel_rows(layer, g.double() * scale) for g in grads]  # (S, O, L)
    p0 = torch.stack([r.sum(2) for r in rows])  # (k, S, O)
    cache: dict[int, torch.Tensor] = {}
    for j, c in enumerate(comps):
        key = hash(c.phi.numpy().tobytes())
        if key not in cache:
            V = channel_rows(layer, c.variate(layer, qx, qw).expand(grads[0].shape))
            cache[key] = torch.stack([(r * V).sum(2) for r in rows])  # (k, S, O)
        p1 = cache[key]
        out[:, :, j] = (p1 @ c.beta.double() + p0 @ c.alpha.double()) * 2.0**-c.frac
    return out


@torch.no_grad()
def correction_means(layer: QuantLayer, x: torch.Tensor, comps: list[Compensation]) -> torch.Tensor:
    """Mean over the batch ``x`` of each unrounded correction ``s_x s_w (beta V + alpha) / 2^frac``:
    ``(len(comps), *output[1:])`` float64 (what :meth:`QuantLayer.mean_errors` is reduced by)."""
    qx, qw = layer.operands(x)
    scale = layer.error_scale(layer.VIEW, torch.float64)
    out = []
    for c in comps:
        v = c.variate(layer, qx, qw).mean(0, keepdim=True)
        num = c.beta.double().view(layer.VIEW) * v + c.alpha.double().view(layer.VIEW)
        out.append((num * 2.0**-c.frac * scale)[0])
    return torch.stack(out)

"""Mean-error (bias) correction of accumulated AppMul error, at any granularity, with no extra hardware.

A biased AppMul shifts every output of a layer by about ``alpha_f = sum_i ebar(w_f,i)``, ``ebar(w) = E_p[E(., w)]``
under the layer's activation distribution ``p`` (padding codes included). Subtracting ``alpha_f`` from output
``f``'s accumulator removes that shift. It is the control variate of :mod:`fames.method.compensate.variate`
without the variate (``beta = 0``): the correction is one integer per output channel, which an accelerator folds
into the bias it already preloads into the accumulator, so it costs no cell and no energy. Unlike the control
variate (one accumulator shared by the filters of a layer, so one AppMul per layer) it needs nothing shared, so
each filter or kernel may use its own AppMul: the correction of filter ``f`` sums the ``ebar`` of the AppMul of
each of its kernels.

Integer definition (what the emulation reproduces bit for bit): output ``f``'s accumulator becomes
``acc_f - alpha_f`` with ``alpha_f`` an integer (accumulator LSBs), before the exact zero-point terms and
dequantization of :class:`fames.quant.layers.QuantLayer`.

Fits: ``offline`` (:func:`fit_bias`, from the weights and an activation histogram) and ``calibrated``
(:func:`fit_bias_calibrated`, the measured mean error of each output channel over calibration inputs, every output
position). The estimate of a bias-corrected candidate (:class:`fames.method.estimate.TaylorEstimator` with
``bias_correction``) uses :func:`kernel_alphas`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.method.compensate.variate import accumulated_error, activation_histogram, channel_rows, distribution
from fames.quant.layers import QuantLayer

METHOD = "bias"


@dataclass
class BiasCorrection:
    """Integer mean-error correction of one layer: ``alpha`` ``(O,)`` int64 accumulator LSBs subtracted from each
    output channel; ``appmuls``: sorted names of the AppMuls of the assignment it was fitted to; ``fit``:
    ``offline`` | ``calibrated``; ``fan_in``: taps per output."""

    appmuls: list[str]
    fit: str
    alpha: torch.Tensor
    fan_in: int
    method: str = METHOD
    live: bool = field(default=False, repr=False, compare=False)  # see correction(); never saved

    def check(self, layer: QuantLayer) -> None:
        """Raise :class:`FamesError` if this correction does not fit ``layer``."""
        o = layer.weight.shape[0]
        if tuple(self.alpha.shape) != (o,):
            raise FamesError(f"bias correction alpha has shape {tuple(self.alpha.shape)}; this layer has {o} filters")
        if self.fan_in != layer.weight[0].numel():
            raise FamesError(f"bias correction fitted for fan-in {self.fan_in}, the layer has "
                             f"{layer.weight[0].numel()}")
        a = layer.assignment
        names = None if a is None else sorted({m.name for m in a.appmuls})
        if names != sorted(self.appmuls):
            raise FamesError(f"bias correction was fitted for AppMuls {sorted(self.appmuls)} but the layer uses "
                             f"{names}; refit after changing the assignment")

    def correction(self, layer: QuantLayer, qx: torch.Tensor, qw: torch.Tensor, acc: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Integer correction subtracted from the accumulator ``acc``, ``(O,)`` float64 in the layer's broadcast
        view. ``live`` (set during calibration, which changes the operands' scales and so the codes and errors the
        stored ``alpha`` was fitted to): the rounded mean error of each output channel over this very batch instead,
        measured against the exact integer sum (one extra exact convolution)."""
        if self.live and acc is not None:
            with torch.no_grad():
                eps = acc.detach().double() - layer.exact_integer(qx, qw).double()
                return torch.round(channel_rows(layer, eps).mean((0, 2))).view(layer.VIEW)
        return self.alpha.double().to(qx.device).view(layer.VIEW)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "appmuls": list(self.appmuls), "fit": self.fit, "alpha": self.alpha.tolist(),
                "fan_in": self.fan_in}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BiasCorrection:
        """Inverse of :meth:`to_dict`; a missing key is a clear error."""
        missing = [k for k in ("appmuls", "fit", "alpha", "fan_in") if k not in d]
        if missing:
            raise FamesError(f"bias correction record lacks {missing}")
        return cls(list(d["appmuls"]), d["fit"], torch.as_tensor(d["alpha"], dtype=torch.int64), int(d["fan_in"]))


def kernel_alphas(layer: QuantLayer, act_hist: np.ndarray | None, appmuls: list[AppMul]) -> np.ndarray:
    """Expected accumulated error ``sum_taps ebar_A(w)`` of every kernel for every candidate ``A``:
    ``(O, C/groups, K)`` float64 (accumulator LSBs; ``act_hist`` over code bit patterns, uniform when None)."""
    p = distribution(act_hist, 1 << layer.a_bits, "activation")
    ebar = np.stack([p @ m.error().astype(np.float64) for m in appmuls], 1)  # (2^w, K)
    w = layer.weight
    codes = layer.weight_codes().detach().long().reshape(w.shape[0], w.shape[1], -1) & ((1 << layer.w_bits) - 1)
    return torch.from_numpy(ebar)[codes].sum(2).numpy()  # (O, C/groups, K)


def _check_assigned(layer: QuantLayer) -> None:
    if layer.assignment is None or layer.mode != "approx":
        raise FamesError("a bias correction needs a layer in approx mode with an assignment; call set_assignment first")


def _assigned_alpha(layer: QuantLayer, act_hist: np.ndarray | None) -> np.ndarray:
    """``alpha_f`` ``(O,)`` float64 for the layer's current assignment (each kernel with its own AppMul)."""
    _check_assigned(layer)
    a = layer.assignment
    k = kernel_alphas(layer, act_hist, a.appmuls)  # (O, Cg, K)
    idx = a.index.reshape(layer.group_shape(a.granularity))
    idx = (idx[:, None] if a.granularity == "filter" else idx).expand(k.shape[:2])  # the AppMul of every kernel
    return np.take_along_axis(k, idx.numpy()[..., None], 2)[..., 0].sum(1)


def _record(layer: QuantLayer, alpha: np.ndarray, fit: str) -> BiasCorrection:
    names = sorted({m.name for m in layer.assignment.appmuls})
    return BiasCorrection(names, fit, torch.from_numpy(np.rint(alpha).astype(np.int64)), layer.weight[0].numel())


@torch.no_grad()
def fit_bias(layer: QuantLayer, act_hist: np.ndarray | None = None) -> BiasCorrection:
    """Correction from the weights and the activation distribution (``act_hist``; uniform when None)."""
    return _record(layer, _assigned_alpha(layer, act_hist), "offline")


@torch.no_grad()
def fit_bias_calibrated(layer: QuantLayer, x: torch.Tensor) -> BiasCorrection:
    """``alpha_f`` = mean accumulated error of output channel ``f`` over layer inputs ``x`` (every output position
    of every sample), measured by bit-exact emulation against the exact integer sum."""
    _check_assigned(layer)
    qx, qw = layer.operands(x)
    return _record(layer, channel_rows(layer, accumulated_error(layer, qx, qw)).mean((0, 2)).numpy(), "calibrated")


@torch.no_grad()
def activation_histograms(model: torch.nn.Module, layers: dict[str, QuantLayer], x: torch.Tensor, batch: int = 256
                          ) -> dict[str, np.ndarray]:
    """Counts of each named layer's (padded) activation codes over ``x`` in ``model``'s current state (one chunked
    forward pass, hooks only: no layer input is kept), indexed by bit pattern."""
    hist = {n: np.zeros(1 << m.a_bits) for n, m in layers.items()}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def add(module: QuantLayer, inputs: tuple) -> None:
            hist[name] += activation_histogram(module, inputs[0])
        return add

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        for s in range(0, x.shape[0], batch):
            model(x[s : s + batch])
    finally:
        for h in handles:
            h.remove()
    return hist


def set_live(model: torch.nn.Module, live: bool) -> None:
    """Switch every bias correction of ``model`` to (or from) its ``live`` batch-mean form (for calibration, see
    :meth:`BiasCorrection.correction`)."""
    from fames.quant.convert import qlayers

    for _, m in qlayers(model):
        if isinstance(m.compensation, BiasCorrection):
            m.compensation.live = live

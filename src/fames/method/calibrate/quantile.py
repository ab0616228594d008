"""Step 1 of FAMES calibration: the activation quantile search, layer by layer, AppMuls in the loop."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fames.errors import FamesError
from fames.method.calibrate.config import EPS, REFERENCES, LayerCalibration
from fames.method.calibrate.data import CalibrationData
from fames.method.calibrate.reference import ReferenceState, check_model, is_approx
from fames.quant.layers import QuantLayer


# ====================================================================== step 1: quantile search
class _Stop(Exception):
    """Raised by a capture hook to end a forward pass at the layer of interest."""


@torch.no_grad()
def _capture(model: nn.Module, layer: nn.Module, data: CalibrationData, batch_size: int, what: str) -> list:
    """Input (``what="input"``) or output of ``layer`` for every batch of ``data`` (None for a batch whose forward,
    routed by the data, does not call it); the forward stops at the layer."""
    got: list[torch.Tensor | None] = []

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        got.append((inp[0] if what == "input" else out).detach())
        raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        for k, (xb, _) in enumerate(data.batches(batch_size)):
            with contextlib.suppress(_Stop):
                model(xb)
            if len(got) == k:
                got.append(None)
    finally:
        h.remove()
    return got


class _Unmatched(Exception):
    """The layer's outputs cannot be compared with the reference's (the data routes other rows to it)."""


@torch.no_grad()
def _mre(layer: QuantLayer, xs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """``sum |layer(x) - ref| / (sum |ref| + eps)`` over all batches and elements."""
    num, den = 0.0, 0.0
    for x, r in zip(xs, refs, strict=True):
        if x is None or r is None or (y := layer(x)).shape != r.shape:
            raise _Unmatched
        num += (y.double() - r.double()).abs().sum().item()
        den += r.double().abs().sum().item()
    return num / (den + EPS)


def _quantile_grid(step: float, q_max: float) -> torch.Tensor:
    n = int(math.ceil(q_max / step - 1e-9))
    return torch.tensor([round(k * step, 10) for k in range(n)], dtype=torch.float64)


class QuantileSearch:
    """Activation clipping-quantile search, layer by layer (see the module docstring for the criterion)."""

    def __init__(
        self,
        step: float = 0.01,
        q_max: float = 0.5,
        reference: str = "exact",
        search_exact_layers: bool = True,
        keep_if_worse: bool = True,
        batch_size: int = 128,
        max_values: int = 1 << 20,
        seed: int = 0,
        progress: bool = True,
        search_samples: int | None = None,
    ) -> None:
        if reference not in REFERENCES:
            raise FamesError(f"reference={reference!r} is not one of {REFERENCES}")
        self.qs = _quantile_grid(step, q_max)
        self.reference, self.search_exact_layers, self.keep_if_worse = reference, search_exact_layers, keep_if_worse
        self.batch_size, self.max_values, self.seed, self.progress = batch_size, max_values, seed, progress
        self.search_samples = search_samples

    def search(
        self, model: nn.Module, data: CalibrationData, ref: ReferenceState | None = None
    ) -> list[LayerCalibration]:
        """Set every (searched) layer's activation range in place; one :class:`LayerCalibration` per layer."""
        ql = check_model(model)
        ref = ref or ReferenceState(model)
        model.eval()
        if self.search_samples:  # quantiles and errors from the first samples only
            n = self.search_samples
            data = CalibrationData(data.x[:n], None if data.y is None else data.y[:n])
        todo = [(n, m) for n, m in ql if m.mode != "float" and (self.search_exact_layers or is_approx(m))]
        out = []
        bar = tqdm(
            total=len(todo) * len(self.qs),
            desc="calibrate: quantiles",
            disable=not self.progress,
            unit="q",
            leave=False,
        )
        for k, (name, layer) in enumerate(todo):
            out.append(self._layer(model, name, layer, data, ref, k, bar))
        bar.close()
        return out

    def _layer(
        self,
        model: nn.Module,
        name: str,
        layer: QuantLayer,
        data: CalibrationData,
        ref: ReferenceState,
        k: int,
        bar: Any,
    ) -> LayerCalibration:
        t0 = time.perf_counter()
        xs = _capture(model, layer, data, self.batch_size, "input")
        with ref.active(self.reference):
            refs = _capture(model, layer, data, self.batch_size, "output")
        aq = layer.act_quant
        saved = (aq.scale.detach().clone(), aq.zero_point.clone())
        range_before = _act_range(aq)
        lc = LayerCalibration(name, is_approx(layer), range_before=range_before, range_after=range_before)
        try:
            lc.mre_before = _mre(layer, xs, refs)
        except _Unmatched:  # data-dependent routing (e.g. mixture of experts): the search has no reference
            why = ("is not called on the calibration samples" if all(x is None for x in xs) else
                   "gets other rows than in the reference model (its inputs are routed by the data)")
            warnings.warn(f"calibrate: layer {name} {why}, so its activation range is kept as it is", stacklevel=2)
            bar.update(len(self.qs))
            lc.seconds = time.perf_counter() - t0
            return lc
        vals = torch.cat([x.flatten() for x in xs]).float()
        if vals.numel() > self.max_values:
            g = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + k)
            vals = vals[torch.randint(vals.numel(), (self.max_values,), generator=g).to(vals.device)]
        qs = self.qs.to(vals.device, torch.float32)
        lo, hi = torch.quantile(vals, qs), torch.quantile(vals, 1 - qs)
        span = float(vals.max() - vals.min())
        best_i, best = None, math.inf
        for i in range(len(qs)):
            bar.update()
            if max(float(hi[i]), 0.0) - min(float(lo[i]), 0.0) <= 1e-8 * span:
                continue  # degenerate range (e.g. a ReLU input with more than half zeros)
            aq.set_range(lo[i].view(1), hi[i].view(1))
            err = _mre(layer, xs, refs)
            if err < best:
                best_i, best = i, err
        if best_i is None or (self.keep_if_worse and lc.mre_before < best):
            aq.scale.data.copy_(saved[0])
            aq.zero_point.copy_(saved[1])
            lc.q, lc.mre_after = None, lc.mre_before
        else:
            aq.set_range(lo[best_i].view(1), hi[best_i].view(1))
            lc.q, lc.mre_after, lc.range_after = float(self.qs[best_i]), best, _act_range(aq)
        lc.seconds = time.perf_counter() - t0
        return lc


def _act_range(aq: nn.Module) -> tuple[float, float]:
    """Representable real range ``[s (qmin - z), s (qmax - z)]`` of a per-tensor quantizer."""
    qmin, qmax = aq.qrange
    s, z = float(aq.scale.detach().abs()), float(aq.zero_point)
    return (s * (qmin - z), s * (qmax - z))

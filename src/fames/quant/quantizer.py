"""Uniform affine quantizers with learnable step size (LSQ) and range observers for PTQ.

A real value x maps to the integer code q = clamp(round(x / s) + z, qmin, qmax) and back to
s (q - z). Codes live in the layer's code domain: unsigned ``0 .. 2^b - 1`` or signed
``-2^(b-1) .. 2^(b-1) - 1``. Rounding uses the straight-through estimator, so the step ``s`` is learnable
(LSQ, Esser et al. 2020) and gradients pass to ``x`` inside the clipping range. With ``learning = "pact"``
training learns the clipping bounds instead (PACT, Choi et al. 2018): same forward values, but the step
size gets gradient only from the values clipped at the bounds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fames.errors import FamesError


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive ``(qmin, qmax)`` of ``bits``-wide codes."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` with the straight-through gradient (plain rounding when no gradient is needed)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return torch.round(x)
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``g`` (LSQ step-size gradient scaling)."""
    return x * g + (x - x * g).detach()


def quantize_codes(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Integer codes (as float tensor) of ``x``; differentiable w.r.t. ``x`` and ``scale`` via STE."""
    if not torch.is_grad_enabled():  # same operations in place: no temporaries (inference is memory-bound)
        return torch.div(x, scale).round_().add_(zero_point).clamp_(qmin, qmax)
    return torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)


class Quantizer(nn.Module):
    """Uniform quantizer for weights (per output channel, ``channel_axis=0``) or activations (per tensor).

    ``scale`` is a learnable parameter; ``zero_point`` a buffer (integer-valued). Until calibrated the
    quantizer is an identity observer: in ``observe`` mode it records statistics of what passes through.
    """

    def __init__(self, bits: int, signed: bool, per_channel: bool, channels: int = 1, symmetric: bool = False):
        super().__init__()
        if not 2 <= bits <= 8:
            raise FamesError(f"quantizer bit width {bits} outside 2..8")
        self.bits, self.signed, self.per_channel, self.symmetric = bits, signed, per_channel, symmetric
        n = channels if per_channel else 1
        self.scale = nn.Parameter(torch.ones(n))
        self.register_buffer("zero_point", torch.zeros(n))
        self.register_buffer("calibrated", torch.tensor(False))
        self.observing = False
        self.learning = "lsq"  # how training moves the scale: "lsq" or "pact"
        self._samples: list[torch.Tensor] = []
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None

    @property
    def qrange(self) -> tuple[int, int]:
        return code_range(self.bits, self.signed)

    def extra_repr(self) -> str:
        kind = "per-channel" if self.per_channel else "per-tensor"
        return f"bits={self.bits}, signed={self.signed}, {kind}, symmetric={self.symmetric}"

    def _shape(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(-1, *([1] * (ndim - 1))) if self.per_channel else t.view(())

    def params(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point broadcastable against an ``ndim`` tensor (positive scale enforced)."""
        s = self.scale.abs().clamp_min(1e-12)
        return self._shape(s, ndim), self._shape(self.zero_point, ndim)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (float tensor), in ``qrange``."""
        s, z = self.params(x.dim())
        if self.training and self.scale.requires_grad:
            qmax = self.qrange[1]
            numel = x[0].numel() if self.per_channel else x.numel()
            s = grad_scale(s, 1.0 / math.sqrt(max(numel * qmax, 1)))
        return quantize_codes(x, s, z, *self.qrange)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        s, z = self.params(q.dim())
        return (q - z) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observe(x)
            return x
        if not bool(self.calibrated):
            raise FamesError("quantizer used before calibration: run fames.quant.calibrate_ptq(model, loader) first")
        if self.learning == "pact" and self.training and self.scale.requires_grad:
            return self._pact(x)
        if not torch.is_grad_enabled():
            s, z = self.params(x.dim())
            return self.codes(x).sub_(z).mul_(s)  # dequantize in place on the fresh codes
        return self.dequantize(self.codes(x))

    def _pact(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantized ``x`` whose gradient is PACT's: 1 w.r.t. ``x`` inside the clipping range ``[lo, hi]``,
        1 w.r.t. the bound that clips it (``hi = s (qmax - z)``, so ``d/ds = qmax - z``); rounding is
        straight-through."""
        s, z = self.params(x.dim())
        qmin, qmax = self.qrange
        xc = torch.minimum(torch.maximum(x, s * (qmin - z)), s * (qmax - z))
        with torch.no_grad():
            yq = self.dequantize(quantize_codes(x, s, z, qmin, qmax))
        return xc + (yq - xc).detach()

    # ------------------------------------------------------------------ calibration
    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.per_channel:
            flat = x.reshape(x.shape[0], -1)  # weights: channel axis 0
            lo, hi = flat.amin(1), flat.amax(1)
        else:
            lo, hi = x.amin().view(1), x.amax().view(1)
            # keep a bounded random sample for percentile / MSE range search
            flat = x.flatten()
            k = min(flat.numel(), 1 << 16)
            idx = torch.randint(0, flat.numel(), (k,), device=flat.device)
            self._samples.append(flat[idx].float().cpu())
        self._lo = lo if self._lo is None else torch.minimum(self._lo, lo)
        self._hi = hi if self._hi is None else torch.maximum(self._hi, hi)

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Choose scale and zero point so that ``[lo, hi]`` (which is widened to contain 0) is representable."""
        qmin, qmax = self.qrange
        lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
        hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
        if self.symmetric:
            m = torch.maximum(hi, -lo)
            if self.signed:
                s = m / max(qmax, 1)
                z = torch.zeros_like(s)
            else:
                s, z = hi / qmax, torch.zeros_like(hi)
        else:
            s = (hi - lo) / (qmax - qmin)
            s = torch.where(s > 0, s, torch.ones_like(s))
            z = torch.clamp(torch.round(qmin - lo / s), qmin, qmax)
        s = torch.where(s > 0, s, torch.ones_like(s))
        self.scale.data = s.to(self.scale.device).view_as(self.scale.data).clone()
        self.zero_point.data = z.to(self.zero_point.device).view_as(self.zero_point).clone()
        self.calibrated.fill_(True)

    @property
    def has_observed(self) -> bool:
        """Whether the quantizer has seen data since observing began (what :meth:`finalize` needs)."""
        return self._lo is not None

    @torch.no_grad()
    def finalize(self, method: str = "minmax", percentile: float = 99.99) -> None:
        """Turn the observed statistics into scale / zero point (``minmax``, ``percentile`` or ``mse``)."""
        if self._lo is None:
            raise FamesError("quantizer saw no data during calibration: is the calibration loader empty?")
        lo, hi = self._lo, self._hi
        if method != "minmax" and not self.per_channel and self._samples:
            sample = torch.cat(self._samples)
            if method == "percentile":
                q = torch.tensor([1 - percentile / 100, percentile / 100])
                qlo, qhi = torch.quantile(sample, q)
                lo, hi = torch.maximum(lo, qlo.view(1)), torch.minimum(hi, qhi.view(1))
            elif method == "mse":
                lo, hi = self._mse_range(sample.view(1, -1), lo, hi)
        self.set_range(lo, hi)
        self.observing = False
        self._samples, self._lo, self._hi = [], None, None

    @torch.no_grad()
    def init_from_weight(self, w: torch.Tensor, method: str = "minmax") -> None:
        """Per-channel range of a weight tensor ``(O, ...)``: min-max, or the MSE-optimal shrink per channel."""
        flat = w.detach().reshape(w.shape[0], -1).float()
        lo, hi = flat.amin(1), flat.amax(1)
        if method == "mse":
            lo, hi = self._mse_range(flat, lo, hi)
        self.set_range(lo, hi)

    def _mse_range(self, sample: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink ``[lo, hi]`` by the factor in 0.3..1 minimizing the quantization MSE (per row of ``sample``)."""
        was = self.training
        self.eval()
        rows = sample.view(lo.numel(), -1)
        best = torch.full_like(lo, float("inf"))
        arg = torch.ones_like(lo)
        for frac in torch.linspace(0.3, 1.0, 36).tolist():
            self.set_range(lo * frac, hi * frac)
            q = self.dequantize(self.codes(rows.to(self.scale.device))).cpu()
            err = (q - rows).pow(2).mean(1)
            better = err < best
            best, arg = torch.where(better, err, best), torch.where(better, torch.full_like(arg, frac), arg)
        self.train(was)
        return lo * arg, hi * arg

"""FAMES calibration (Ren et al., Algorithm 1): recover accuracy lost to AppMuls without retraining weights.

Two steps, both with the AppMuls in the loop (the model's approx-mode layers stay approximate):

1. **Activation quantile search** (:class:`QuantileSearch`). Layer by layer in forward order, for every
   q in ``0, step, 2 step, ... < q_max`` the activation quantizer of the layer gets the range
   ``[quantile(X, q), quantile(X, 1 - q)]`` of its input values ``X`` (:meth:`Quantizer.set_range` widens
   the range to contain 0, so a ReLU input keeps lower bound 0 and its full code domain). The q with the
   smallest mean relative error of the layer's output is kept. Precisely, for layer k:

   * ``X_k``: input of layer k in the *approximate* model, whose layers ``< k`` are already calibrated;
   * ``Y_k(q)``: layer k's output on ``X_k`` with its own AppMul(s) and range q;
   * ``R_k``: the *reference* output of layer k, from the same images through the reference model, i.e.
     the model as it was before calibration with every layer in ``exact`` mode (``reference="exact"``,
     default) or in ``float`` mode (``reference="float"``); the reference sees its own input, so q also
     absorbs the error the earlier AppMuls passed on;
   * ``MRE_k(q) = sum |Y_k(q) - R_k| / (sum |R_k| + eps)`` over every output element of every calibration
     sample (an aggregate relative L1 error; no per-element division, so near-zero outputs do not dominate).

   Ties go to the smallest q; with ``keep_if_worse`` the layer keeps its current range when no q beats it
   (then its q is reported as None). Each layer's input is captured once (a forward hook stops the forward
   at the layer), and each q evaluates that layer only.

2. **Learnable weight clipping** (:class:`LearnableWeightClipping`, OmniQuant's LWC). Per output channel
   two logits gamma, beta (initialized to ``init_logit``, 4.0) scale the clipping bounds of the weight
   quantizer's current range ``[lo0, hi0]``: ``hi = rho(gamma) hi0``, ``lo = rho(beta) lo0`` with
   ``rho(t) = sigmoid(t) / sigmoid(init_logit)``, so calibration starts exactly from the current (PTQ)
   quantizer (the paper's ``sigmoid(gamma) max(w)`` up to that constant). Symmetric weights:
   ``s = max(hi, -lo) / qmax``; affine: ``s = (hi - lo) / (qmax - qmin)``, ``z = round_ste(qmin - lo / s)``.
   Only the logits (optionally the activation step sizes) are trained, with cross-entropy (optionally KD from
   the reference model's logits) through the AppMuls; rounding and the emulation kernels pass
   straight-through gradients. The clip parameters are never modules of the model: the forward runs with
   ``torch.func.functional_call`` substituting the weight quantizers' scale/zero point, and
   :meth:`LearnableWeightClipping.bake` writes the same tensors into the quantizers (bit-exact), leaving
   the model's parameters and state-dict keys as they were. The optimizer is Adam (or SGD with momentum
   0.9) at constant learning rate; the best epoch by calibration-set objective (including "no LWC") is kept.

Randomness (value subsampling for the quantiles, LWC batch order) uses private generators seeded from
``seed``; the global torch RNG is left alone. Reference outputs are recomputed per layer by a forward that
stops at the layer (``O(L^2)`` partial forwards for ``L`` layers; no activation of the whole model is kept).
A layer called several times in one forward is calibrated on its first call.

Calibrators are swappable objects with ``calibrate(model, data) -> CalibrationReport``; :func:`calibrate`
is the driver.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.errors import FamesError
from fames.quant.convert import qlayers
from fames.quant.layers import QuantLayer
from fames.quant.quantizer import round_ste

__all__ = [
    "CalibrationConfig",
    "CalibrationData",
    "CalibrationReport",
    "FamesCalibrator",
    "LayerCalibration",
    "LearnableWeightClipping",
    "QuantileSearch",
    "ReferenceState",
    "calibrate",
    "calibration_data",
]

REFERENCES = ("exact", "float")
OPTIMIZERS = ("adam", "sgd")
EPS = 1e-12


# ====================================================================== config and report
@dataclass
class CalibrationConfig:
    """Settings of :func:`calibrate` (paper defaults: 1,024 samples, 5 epochs, lr 0.1)."""

    quantile_step: float = 0.01
    quantile_max: float = 0.5
    search_samples: int | None = None  # samples the search's MRE is measured on (None = all calibration samples)
    search: bool = True  # activation quantile search
    search_exact_layers: bool = True  # also search layers without AppMuls (they see drifted inputs)
    reference: str = "exact"  # reference outputs: "exact" (quantized, pre-calibration) or "float"
    keep_if_worse: bool = True  # keep a layer's current range if no quantile beats it
    max_values: int = 1 << 20  # activation values sampled per layer for the quantiles
    lwc: bool = True
    epochs: int = 5
    lr: float = 0.1
    optimizer: str = "adam"
    init_logit: float = 4.0
    kd_alpha: float = 0.0  # weight of KL distillation from the reference logits (1 when data has no labels)
    kd_temperature: float = 1.0
    learn_act_scale: bool = False  # also train the activation step sizes during LWC
    act_scale_lr: float = 1e-3
    keep_best: bool = True  # keep the LWC epoch with the lowest calibration objective
    samples: int = 1024
    batch_size: int = 128
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.quantile_step < 0.5:
            raise FamesError(f"quantile_step={self.quantile_step} must be in (0, 0.5)")
        if not 0 < self.quantile_max <= 0.5:
            raise FamesError(f"quantile_max={self.quantile_max} must be in (0, 0.5]")
        if self.reference not in REFERENCES:
            raise FamesError(f"reference={self.reference!r} is not one of {REFERENCES}")
        if self.optimizer not in OPTIMIZERS:
            raise FamesError(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.samples < 1 or self.batch_size < 1 or self.epochs < 0:
            raise FamesError("samples and batch_size must be >= 1 and epochs >= 0")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise FamesError(f"kd_alpha={self.kd_alpha} must be in [0, 1]")
        if not 1 <= self.max_values <= 1 << 24:
            raise FamesError("max_values must be in 1 .. 2**24 (torch.quantile's limit)")


@dataclass
class LayerCalibration:
    """Outcome of one layer: chosen quantile (None = kept the current range), MRE and ranges before/after.

    ``mre_before`` is measured with the layer's range before the search, on the input produced by the
    already-calibrated earlier layers. ``clip`` is the mean LWC clip factor over channels (scale after /
    scale before), None without LWC.
    """

    name: str
    approx: bool
    q: float | None = None
    mre_before: float = float("nan")
    mre_after: float = float("nan")
    range_before: tuple[float, float] = (float("nan"), float("nan"))
    range_after: tuple[float, float] = (float("nan"), float("nan"))
    clip: float | None = None
    seconds: float = 0.0


@dataclass
class CalibrationReport:
    """What :func:`calibrate` did. Losses are mean cross-entropy on the calibration samples (approx model).

    ``lwc_history[e]`` is the LWC objective on the calibration set after epoch ``e`` (``e = 0``: before LWC).
    """

    layers: list[LayerCalibration]
    samples: int
    loss_before: float
    loss_after_search: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    lwc_history: list[float] = field(default_factory=list)
    lwc_best_epoch: int | None = None
    seconds: float = 0.0
    seconds_search: float = 0.0
    seconds_lwc: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerCalibration:
        for lc in self.layers:
            if lc.name == name:
                return lc
        raise FamesError(f"no layer {name!r} in the calibration report")

    @property
    def quantiles(self) -> dict[str, float | None]:
        return {lc.name: lc.q for lc in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """Markdown table of the per-layer outcome plus the loss line."""
        rows = ["| layer | AppMul | q | MRE before | MRE after | LWC clip |", "|---|---|---|---|---|---|"]
        for lc in self.layers:
            q = "kept" if lc.q is None else f"{lc.q:.2f}"
            clip = "-" if lc.clip is None else f"{lc.clip:.3f}"
            rows.append(
                f"| {lc.name} | {'yes' if lc.approx else 'no'} | {q} | {lc.mre_before:.4f} | "
                f"{lc.mre_after:.4f} | {clip} |"
            )
        rows.append(
            f"\ncalibration loss {self.loss_before:.4f} -> {self.loss_after_search:.4f} (search) -> "
            f"{self.loss_after:.4f} (LWC); accuracy {self.accuracy_before:.2f}% -> "
            f"{self.accuracy_after:.2f}%; {self.samples} samples, {self.seconds:.1f} s"
        )
        return "\n".join(rows)


# ====================================================================== data
@dataclass
class CalibrationData:
    """Calibration samples ``x (S, ...)`` and labels ``y (S,)`` (None when the data has none)."""

    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for b in range(0, len(self), batch_size):
            yield self.x[b : b + batch_size], None if self.y is None else self.y[b : b + batch_size]


def calibration_data(data: Any, samples: int, device: torch.device | str = "cpu") -> CalibrationData:
    """The first ``samples`` samples of ``data``: a loader of ``(x, y)`` or ``x`` batches, a tensor ``x``, a
    pair ``(x, y)`` of tensors, or a :class:`CalibrationData`. Fewer available -> all of them, with a warning."""
    if isinstance(data, CalibrationData):
        xs, ys = [data.x], None if data.y is None else [data.y]
    elif isinstance(data, torch.Tensor):
        xs, ys = [data], None
    elif _is_pair(data):
        xs, ys = [data[0]], [data[1]]
    elif isinstance(data, Iterable):
        xs, ys, n = [], [], 0
        for b in data:
            pair = isinstance(b, (tuple, list))
            xs.append(b[0] if pair else b)
            if ys is not None and pair and len(b) > 1:
                ys.append(b[1])
            else:
                ys = None
            n += xs[-1].shape[0]
            if n >= samples:
                break
    else:
        raise FamesError(f"calibration data must be a loader, a tensor or an (x, y) pair, not {type(data).__name__}")
    if not xs or sum(t.shape[0] for t in xs) == 0:
        raise FamesError("calibration data is empty")
    x = torch.cat(xs)[:samples].to(device)
    y = None if not ys else torch.cat(ys)[:samples].to(device).long()
    if y is not None and y.shape[0] != x.shape[0]:
        raise FamesError(f"calibration data: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] < samples:
        warnings.warn(
            f"calibration asked for {samples} samples but the data holds {x.shape[0]}; using them all", stacklevel=3
        )
    return CalibrationData(x, y)


def _is_pair(data: Any) -> bool:
    """``(x (S, ...), y (S,) integer)``, as opposed to a list of input batches."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[1].dim() == 1
        and not data[1].is_floating_point()
        and data[1].shape[0] == data[0].shape[0]
    )


# ====================================================================== reference model state
class ReferenceState:
    """Snapshot of every quantized layer's mode and activation range, to run the pre-calibration model.

    ``with ref.active("exact"):`` runs the model as it was at the snapshot with every layer in exact
    (or float) mode; on exit the current state is restored. Weight quantizers are snapshotted too.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = qlayers(model)
        self.saved = [_layer_state(m) for _, m in self.layers]

    @contextlib.contextmanager
    def active(self, mode: str = "exact") -> Iterator[None]:
        current = [_layer_state(m) for _, m in self.layers]
        try:
            for (_, m), st in zip(self.layers, self.saved, strict=True):
                _load_layer_state(m, st)
                m.mode = mode
            yield
        finally:
            for (_, m), st in zip(self.layers, current, strict=True):
                _load_layer_state(m, st)

    @torch.no_grad()
    def logits(self, model: nn.Module, data: CalibrationData, batch_size: int, mode: str = "exact") -> torch.Tensor:
        """Reference logits ``(S, classes)`` of the calibration samples."""
        with self.active(mode):
            return torch.cat([model(xb) for xb, _ in data.batches(batch_size)])


def _layer_state(m: QuantLayer) -> tuple:
    aq, wq = m.act_quant, m.weight_quant
    return (m.mode, aq.scale.detach().clone(), aq.zero_point.clone(), wq.scale.detach().clone(), wq.zero_point.clone())


@torch.no_grad()
def _load_layer_state(m: QuantLayer, st: tuple) -> None:
    m.mode = st[0]
    m.act_quant.scale.copy_(st[1])
    m.act_quant.zero_point.copy_(st[2])
    m.weight_quant.scale.copy_(st[3])
    m.weight_quant.zero_point.copy_(st[4])


def _is_approx(m: QuantLayer) -> bool:
    return m.mode == "approx" and (m.assignment is not None or m.error_probe is not None)


def _check_model(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    ql = qlayers(model)
    if not ql:
        raise FamesError("calibrate: the model has no quantized layers; call fames.quantize first")
    if not any(_is_approx(m) for _, m in ql):
        raise FamesError(
            "calibrate: no layer of the model is in approx mode with AppMuls; assign AppMuls first "
            "(fames.substitute or layer.set_assignment) - calibration recovers the AppMuls' error"
        )
    for n, m in ql:
        if not bool(m.act_quant.calibrated):
            raise FamesError(f"calibrate: layer {n} has no activation range; run fames.quant.calibrate_ptq first")
    return ql


# ====================================================================== step 1: quantile search
class _Stop(Exception):
    """Raised by a capture hook to end a forward pass at the layer of interest."""


@torch.no_grad()
def _capture(model: nn.Module, layer: nn.Module, data: CalibrationData, batch_size: int, what: str) -> list:
    """Input (``what="input"``) or output of ``layer`` for every batch; the forward stops at the layer."""
    got: list[torch.Tensor] = []

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        got.append((inp[0] if what == "input" else out).detach())
        raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        for k, (xb, _) in enumerate(data.batches(batch_size)):
            with contextlib.suppress(_Stop):
                model(xb)
            if len(got) != k + 1:
                raise FamesError("calibrate: a quantized layer is not called in the model's forward")
    finally:
        h.remove()
    return got


@torch.no_grad()
def _mre(layer: QuantLayer, xs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """``sum |layer(x) - ref| / (sum |ref| + eps)`` over all batches and elements."""
    num, den = 0.0, 0.0
    for x, r in zip(xs, refs, strict=True):
        y = layer(x)
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
        ql = _check_model(model)
        ref = ref or ReferenceState(model)
        model.eval()
        todo = [(n, m) for n, m in ql if self.search_exact_layers or _is_approx(m)]
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
        lc = LayerCalibration(name, _is_approx(layer), range_before=range_before, range_after=range_before)
        vals = torch.cat([x.flatten() for x in xs]).float()
        if self.search_samples:  # measure the MRE of each candidate range on the first batches only
            nb = max(1, -(-self.search_samples // self.batch_size))
            xs, refs = xs[:nb], refs[:nb]
        lc.mre_before = _mre(layer, xs, refs)
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


# ====================================================================== step 2: learnable weight clipping
class _Clip(nn.Module):
    """Learnable per-channel clipping of one layer's weight quantizer (see the module docstring)."""

    def __init__(self, layer: QuantLayer, init_logit: float) -> None:
        super().__init__()
        q = layer.weight_quant
        if not q.per_channel:
            raise FamesError("learnable weight clipping needs a per-channel weight quantizer")
        o = layer.weight.shape[0]
        dev = q.scale.device
        self.gamma = nn.Parameter(torch.full((o,), float(init_logit), device=dev))
        self.beta = nn.Parameter(torch.full((o,), float(init_logit), device=dev))
        self.register_buffer("sig0", torch.sigmoid(torch.tensor(float(init_logit), device=dev)))
        self.symmetric, self.signed = q.symmetric, q.signed
        self.qmin, self.qmax = q.qrange
        s0 = q.scale.detach().abs().clamp_min(1e-12).clone()
        self.register_buffer("s0", s0)
        if q.symmetric and q.signed:
            flat = layer.weight.detach().reshape(o, -1).float()
            hi, lo = flat.amax(1).clamp_min(0), flat.amin(1).clamp_max(0)
            m = torch.maximum(hi, -lo)
            ok = m > 0
            # relative bounds a = hi / m, b = -lo / m: max(a, b) == 1 exactly, so s(init) == s0 bit for bit
            self.register_buffer("a", torch.where(ok, hi / torch.where(ok, m, 1), torch.ones_like(m)))
            self.register_buffer("b", torch.where(ok, -lo / torch.where(ok, m, 1), torch.ones_like(m)))
        else:
            z0 = q.zero_point.detach().float().clone()
            self.register_buffer("a", self.qmax - z0)  # hi0 = s0 (qmax - z0)
            self.register_buffer("b", self.qmin - z0)  # lo0 = s0 (qmin - z0)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale ``(O,)`` and zero point ``(O,)`` (None for symmetric weights) of the clipped range."""
        rg, rb = torch.sigmoid(self.gamma) / self.sig0, torch.sigmoid(self.beta) / self.sig0
        if self.symmetric and self.signed:
            return self.s0 * torch.maximum(rg * self.a, rb * self.b), None
        if self.symmetric:  # unsigned symmetric: range [0, hi]
            return self.s0 * rg, None
        s = self.s0 * ((rg * self.a - rb * self.b) / (self.qmax - self.qmin))
        lo = rb * self.b * self.s0
        z = torch.clamp(round_ste(self.qmin - lo / s), self.qmin, self.qmax)
        return s, z


class LearnableWeightClipping:
    """OmniQuant-style LWC trained through the AppMuls; :meth:`bake` makes it part of the weight quantizers.

    Usage: ``lwc = LearnableWeightClipping(model)``; ``lwc(x)`` is the model's forward with clipped weights;
    ``lwc.parameters()`` are the logits; ``lwc.bake()`` writes the clipping into the model and detaches.
    """

    def __init__(self, model: nn.Module, init_logit: float = 4.0, layers: list[str] | None = None) -> None:
        self.model = model
        ql = qlayers(model) if layers is None else [(n, m) for n, m in qlayers(model) if n in set(layers)]
        self.clips = nn.ModuleDict({n.replace(".", "/"): _Clip(m, init_logit) for n, m in ql})
        self.names = [n for n, _ in ql]
        self.baked = False

    def parameters(self) -> list[nn.Parameter]:
        return list(self.clips.parameters())

    def overrides(self) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight_quant.scale": (O,), "<layer>.weight_quant.zero_point": (O,)}`` of the clipping."""
        out: dict[str, torch.Tensor] = {}
        for n in self.names:
            s, z = self.clips[n.replace(".", "/")].qparams()
            out[f"{n}.weight_quant.scale"] = s
            if z is not None:
                out[f"{n}.weight_quant.zero_point"] = z
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.baked:
            raise FamesError("this weight clipping is already baked into the model; call the model itself")
        return torch.func.functional_call(self.model, self.overrides(), (x,), strict=False)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.clips.state_dict().items()}

    def load_state(self, st: dict[str, torch.Tensor]) -> None:
        self.clips.load_state_dict(st)

    def clip_factors(self) -> dict[str, float]:
        """Mean over channels of (clipped scale / initial scale), per layer."""
        with torch.no_grad():
            return {
                n: float((self.clips[n.replace(".", "/")].qparams()[0] / self.clips[n.replace(".", "/")].s0).mean())
                for n in self.names
            }

    @torch.no_grad()
    def bake(self) -> None:
        """Write the clipped scale / zero point into the weight quantizers (the forward is unchanged bit for bit)
        and drop the clip parameters."""
        mods = dict(qlayers(self.model))
        for key, t in self.overrides().items():
            name, attr = key.rsplit(".weight_quant.", 1)
            getattr(mods[name].weight_quant, attr).data.copy_(t.detach())
        self.clips = nn.ModuleDict()
        self.baked = True

    def train(
        self,
        data: CalibrationData,
        epochs: int = 5,
        lr: float = 0.1,
        optimizer: str = "adam",
        batch_size: int = 128,
        teacher: torch.Tensor | None = None,
        kd_alpha: float = 0.0,
        kd_temperature: float = 1.0,
        act_scales: bool = False,
        act_scale_lr: float = 1e-3,
        keep_best: bool = True,
        seed: int = 0,
        progress: bool = True,
    ) -> tuple[list[float], int]:
        """Train the clip logits (model weights frozen) on ``data``; returns (objective per epoch, best epoch).

        Objective: ``(1 - kd_alpha) CE + kd_alpha T^2 KL(teacher || model)`` (``kd_alpha`` = 1 without labels).
        ``teacher``: reference logits ``(S, classes)``, required when ``kd_alpha > 0``.
        """
        if optimizer not in OPTIMIZERS:
            raise FamesError(f"optimizer={optimizer!r} is not one of {OPTIMIZERS}")
        alpha = 1.0 if data.y is None else kd_alpha
        if alpha > 0 and teacher is None:
            raise FamesError("LWC: distillation (or data without labels) needs teacher logits")
        model = self.model
        was_training = model.training
        flags = {p: p.requires_grad for p in model.parameters()}
        scales = [m.act_quant.scale for _, m in qlayers(model)] if act_scales else []
        groups: list[dict[str, Any]] = [{"params": self.parameters(), "lr": lr}]
        if scales:
            groups.append({"params": scales, "lr": act_scale_lr})
        opt = torch.optim.Adam(groups, lr=lr) if optimizer == "adam" else torch.optim.SGD(groups, lr=lr, momentum=0.9)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = len(data)
        steps = epochs * ((n + batch_size - 1) // batch_size)

        def objective(idx: torch.Tensor | slice) -> torch.Tensor:
            out = self(data.x[idx])
            loss = out.new_zeros(())
            if alpha < 1:
                loss = loss + (1 - alpha) * F.cross_entropy(out, data.y[idx])
            if alpha > 0:
                t = kd_temperature
                kd = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher[idx] / t, 1), reduction="batchmean")
                loss = loss + alpha * t * t * kd
            return loss

        @torch.no_grad()
        def full() -> float:
            tot = 0.0
            for b in range(0, n, batch_size):
                tot += objective(slice(b, b + batch_size)).item() * min(batch_size, n - b)
            return tot / n

        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            for p in scales:
                p.requires_grad_(True)
            history = [full()]
            best_epoch, best_state = 0, (self.state(), [p.detach().clone() for p in scales])
            bar = tqdm(total=steps, desc="calibrate: LWC", disable=not progress, unit="step", leave=False)
            for epoch in range(1, epochs + 1):
                perm = torch.randperm(n, generator=gen).to(data.x.device)
                for b in range(0, n, batch_size):
                    loss = objective(perm[b : b + batch_size])
                    if not torch.isfinite(loss):
                        raise FamesError(f"LWC diverged (loss {loss.item()}) in epoch {epoch}; lower lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update()
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                history.append(full())
                if not keep_best or history[-1] < history[best_epoch]:
                    best_epoch, best_state = epoch, (self.state(), [p.detach().clone() for p in scales])
            bar.close()
            self.load_state(best_state[0])
            with torch.no_grad():
                for p, v in zip(scales, best_state[1], strict=True):
                    p.copy_(v)
        finally:
            for p, f in flags.items():
                p.requires_grad_(f)
            model.train(was_training)
        return history, best_epoch


# ====================================================================== driver
@torch.no_grad()
def _ce(model: nn.Module, data: CalibrationData, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` on the calibration samples (nan without labels)."""
    if data.y is None:
        return float("nan"), float("nan")
    loss, correct = 0.0, 0
    for xb, yb in data.batches(batch_size):
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        correct += int((out.argmax(1) == yb).sum())
    return loss / len(data), 100.0 * correct / len(data)


class FamesCalibrator:
    """FAMES calibration = :class:`QuantileSearch` then :class:`LearnableWeightClipping`, AppMuls in the loop."""

    name = "fames"

    def __init__(self, config: CalibrationConfig | None = None, **overrides: Any) -> None:
        cfg = config or CalibrationConfig()
        unknown = set(overrides) - set(asdict(cfg))
        if unknown:
            raise FamesError(f"unknown calibration setting(s) {sorted(unknown)}; settings: {list(asdict(cfg))}")
        self.config = CalibrationConfig(**{**asdict(cfg), **overrides}) if overrides else cfg

    def calibrate(self, model: nn.Module, data: Any) -> CalibrationReport:
        """Calibrate ``model`` in place on the first ``config.samples`` samples of ``data``."""
        cfg = self.config
        t0 = time.perf_counter()
        ql = _check_model(model)
        dev = next(model.parameters()).device
        cd = calibration_data(data, cfg.samples, dev)
        was_training = model.training
        model.eval()
        try:
            ref = ReferenceState(model)
            loss0, acc0 = _ce(model, cd, cfg.batch_size)
            teacher = None
            if cfg.lwc and (cfg.kd_alpha > 0 or cd.y is None):
                teacher = ref.logits(model, cd, cfg.batch_size, cfg.reference)
            t1 = time.perf_counter()
            if cfg.search:
                qs = QuantileSearch(
                    cfg.quantile_step,
                    cfg.quantile_max,
                    cfg.reference,
                    cfg.search_exact_layers,
                    cfg.keep_if_worse,
                    cfg.batch_size,
                    cfg.max_values,
                    cfg.seed,
                    cfg.progress,
                    cfg.search_samples,
                )
                searched = {lc.name: lc for lc in qs.search(model, cd, ref)}
            else:
                searched = {}
            layers = [searched.get(n) or LayerCalibration(n, _is_approx(m)) for n, m in ql]
            loss1, _ = _ce(model, cd, cfg.batch_size)
            t2 = time.perf_counter()
            history, best_epoch = [], None
            if cfg.lwc:
                lwc = LearnableWeightClipping(model, cfg.init_logit)
                history, best_epoch = lwc.train(
                    cd,
                    cfg.epochs,
                    cfg.lr,
                    cfg.optimizer,
                    cfg.batch_size,
                    teacher,
                    cfg.kd_alpha,
                    cfg.kd_temperature,
                    cfg.learn_act_scale,
                    cfg.act_scale_lr,
                    cfg.keep_best,
                    cfg.seed,
                    cfg.progress,
                )
                factors = lwc.clip_factors()
                lwc.bake()
                for lc in layers:
                    lc.clip = factors.get(lc.name)
            t3 = time.perf_counter()
            loss2, acc2 = _ce(model, cd, cfg.batch_size)
        finally:
            model.train(was_training)
        return CalibrationReport(
            layers=layers,
            samples=len(cd),
            loss_before=loss0,
            loss_after_search=loss1,
            loss_after=loss2,
            accuracy_before=acc0,
            accuracy_after=acc2,
            lwc_history=history,
            lwc_best_epoch=best_epoch,
            seconds=time.perf_counter() - t0,
            seconds_search=t2 - t1,
            seconds_lwc=t3 - t2,
            config=asdict(cfg),
        )


def calibrate(
    model: nn.Module, data: Any, config: CalibrationConfig | None = None, **overrides: Any
) -> CalibrationReport:
    """FAMES calibration of ``model`` (in place) on ``data``; keyword overrides patch ``config``."""
    return FamesCalibrator(config, **overrides).calibrate(model, data)

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

import time
import warnings
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fames.errors import FamesError
from fames.method.calibrate.config import CalibrationConfig, CalibrationReport, LayerCalibration
from fames.method.calibrate.data import CalibrationData, calibration_data
from fames.method.calibrate.lwc import LearnableWeightClipping
from fames.method.calibrate.quantile import QuantileSearch
from fames.method.calibrate.reference import ReferenceState, check_model, is_approx


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


STALE_CORRECTIONS = "hold corrections fitted before this calibration changed their operands' scales"


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
        ql = check_model(model)
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
            layers = [searched.get(n) or LayerCalibration(n, is_approx(m)) for n, m in ql]
            loss1, acc1 = _ce(model, cd, cfg.batch_size)
            t2 = time.perf_counter()
            history, best_epoch = [], None
            loss2, acc2 = loss1, acc1
            ce_only = cd.y is not None and cfg.kd_alpha == 0  # the LWC objective is the cross-entropy
            if cfg.lwc:
                lwc = LearnableWeightClipping(model, cfg.init_logit)
                history, best_epoch, acc_best = lwc.train(
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
                    (loss1, acc1) if ce_only else None,
                )
                factors = lwc.clip_factors()
                lwc.bake()
                for lc in layers:
                    lc.clip = factors.get(lc.name)
                if ce_only:  # the kept epoch's objective and accuracy are the calibrated model's
                    loss2, acc2 = history[best_epoch], acc_best
                else:
                    loss2, acc2 = _ce(model, cd, cfg.batch_size)
            t3 = time.perf_counter()
        finally:
            model.train(was_training)
        stale = [n for n, m in ql if m.compensation is not None and not getattr(m.compensation, "live", False)]
        if stale:  # a control variate's beta/alpha were fitted to the codes before the scales moved
            warnings.warn(f"layers {stale[:5]}{' ...' if len(stale) > 5 else ''} {STALE_CORRECTIONS}: refit them "
                          "(fames.method.compensate.compensate_model(model, x, calibrated=True)) before using the "
                          "model", stacklevel=3)
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

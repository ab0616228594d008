"""Loss-perturbation estimators Omega[group, AppMul] (FAMES Section IV-C), swappable behind one protocol:
the Taylor estimate (full or rank-1 Gauss-Newton, or first order), the mean-forward wrapper, data-free L2 and MRE
peers, compensated candidates, and the measured truth they are validated against."""

from fames.method.estimate.base import Estimate, Estimator, layer_states
from fames.method.estimate.compensated import compensated_candidates, estimate_with_compensation
from fames.method.estimate.forward import MeanForward, batch_mean_errors
from fames.method.estimate.metric import ESTIMATOR_NAMES, L2Estimator, MetricEstimator, MREEstimator, make_estimator
from fames.method.estimate.taylor import TaylorEstimator, counting_gradients
from fames.method.estimate.truth import true_loss_changes

__all__ = [
    "ESTIMATOR_NAMES",
    "Estimate",
    "Estimator",
    "L2Estimator",
    "MREEstimator",
    "MeanForward",
    "MetricEstimator",
    "TaylorEstimator",
    "batch_mean_errors",
    "compensated_candidates",
    "counting_gradients",
    "estimate_with_compensation",
    "layer_states",
    "make_estimator",
    "true_loss_changes",
]

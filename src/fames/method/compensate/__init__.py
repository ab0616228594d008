"""Compensation of accumulated AppMul error: the control variate (Zervakis et al.), its fits and the hardware
overhead it costs, and the mean-error (bias) correction, which costs none."""

from fames.method.compensate.bias import BiasCorrection, fit_bias, fit_bias_calibrated, kernel_alphas
from fames.method.compensate.overhead import Overhead, model_overhead, overhead_costs
from fames.method.compensate.variate import (
    METHODS,
    Compensation,
    ProductModel,
    activation_histogram,
    attach,
    compensate_model,
    correction_means,
    correction_projections,
    fit_calibrated,
    fit_offline,
    layer_inputs,
    perforation_model,
    product_model,
    rank1_model,
    weight_histogram,
)

__all__ = [
    "METHODS",
    "BiasCorrection",
    "Compensation",
    "Overhead",
    "ProductModel",
    "activation_histogram",
    "attach",
    "compensate_model",
    "correction_means",
    "correction_projections",
    "fit_bias",
    "fit_bias_calibrated",
    "fit_calibrated",
    "fit_offline",
    "kernel_alphas",
    "layer_inputs",
    "model_overhead",
    "overhead_costs",
    "perforation_model",
    "product_model",
    "rank1_model",
    "weight_histogram",
]

"""Control-variate compensation of accumulated AppMul error (Zervakis et al.): the correction, its fits, and the
hardware overhead it costs."""

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
    "Compensation",
    "Overhead",
    "ProductModel",
    "activation_histogram",
    "attach",
    "compensate_model",
    "correction_means",
    "correction_projections",
    "fit_calibrated",
    "fit_offline",
    "layer_inputs",
    "model_overhead",
    "overhead_costs",
    "perforation_model",
    "product_model",
    "rank1_model",
    "weight_histogram",
]

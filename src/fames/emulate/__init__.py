"""Bit-exact fast emulation of approximate multipliers in convolution and linear layers."""

from fames.emulate.decompose import Factors, decompose_error, decompose_table, numerical_rank
from fames.emulate.kernels import EmulationPlan, approx_conv2d, approx_linear, plan_layer

__all__ = [
    "EmulationPlan",
    "Factors",
    "approx_conv2d",
    "approx_linear",
    "decompose_error",
    "decompose_table",
    "numerical_rank",
    "plan_layer",
]

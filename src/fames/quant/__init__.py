"""Quantization: config, quantizers, quantized layers, model conversion and PTQ calibration."""

from fames.quant.config import LayerBits, QuantConfig, load_config
from fames.quant.convert import calibrate_ptq, float_layers, model_input, qlayers, quantize, set_mode
from fames.quant.layers import Assignment, QConv2d, QLinear, QuantLayer

__all__ = [
    "Assignment",
    "LayerBits",
    "QConv2d",
    "QLinear",
    "QuantConfig",
    "QuantLayer",
    "calibrate_ptq",
    "float_layers",
    "load_config",
    "model_input",
    "qlayers",
    "quantize",
    "set_mode",
]

"""fames: approximate multipliers for quantized neural networks.

Data flow (see DESIGN.md): AppMul library -> hardware cost -> quantize -> estimate -> select ->
calibrate -> compensate -> evaluate -> report.
"""

from fames.appmul.core import AppMul, Cost
from fames.errors import AppMulError, FamesError, HardwareError

__version__ = "0.1.0"
__all__ = ["AppMul", "Cost", "AppMulError", "FamesError", "HardwareError", "__version__"]

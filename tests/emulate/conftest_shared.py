"""Access to the shared EvoApproxLib LUTs (skips when absent)."""

from __future__ import annotations

import numpy as np

from fames.appmul.core import AppMul

from ..conftest import shared_path


def evo_appmul(name: str) -> AppMul:
    """The EvoApproxLib 8x8 design ``name`` (mul8u_* unsigned, mul8s_* signed) as an AppMul."""
    lut = np.load(shared_path("evoapproxlib", "luts.npz"))[name]
    signed = name.startswith("mul8s")
    return AppMul(name, 8, 8, signed, signed, lut)

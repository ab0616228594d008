"""The three-way check of a generated design: its LUT == simulation of its Verilog == simulation of the netlist
Yosys + ABC map it to (with a liberty)."""

from __future__ import annotations

import os

import numpy as np

from fames.appmul.core import AppMul
from fames.errors import HardwareError
from fames.hw.netlist import simulate_lut
from fames.hw.synth import synthesize


def check_design(appmul: AppMul, liberty: str | os.PathLike | None = None) -> None:
    """Raise :class:`HardwareError` naming the design and the stage unless the LUT, the simulated Verilog
    (Yosys internal gates) and, with ``liberty``, the simulated mapped netlist agree on every operand pair."""
    if appmul.verilog is None:
        raise HardwareError(f"{appmul.name}: no Verilog to check against its LUT")
    top = appmul.top or appmul.name
    stages = [("Verilog", None)] + ([("mapped netlist", liberty)] if liberty is not None else [])
    for what, lib in stages:
        got = simulate_lut(synthesize(appmul.verilog, top, lib), *appmul.widths)
        bad = int(np.count_nonzero(got != appmul.lut))
        if bad:
            raise HardwareError(f"{appmul.name}: the simulation of its {what} disagrees with its LUT in {bad} of "
                                f"{appmul.lut.size} operand pairs")

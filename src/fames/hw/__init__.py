"""Hardware cost engine: liberty reading, Yosys synthesis, netlist simulation, timing and energy.

Units everywhere: area um^2, time ns, capacitance fF, energy fJ, power uW (leakage nW).
"""

from fames.hw.cost import cost_appmul, cost_library, relative_cost
from fames.hw.energy import EnergyBreakdown, energy_per_op, make_stream
from fames.hw.liberty import Liberty, read_liberty
from fames.hw.netlist import Netlist, simulate_lut
from fames.hw.synth import lut_to_verilog, synthesize
from fames.hw.synthetic import write_synthetic_liberty
from fames.hw.timing import TimingReport, analyze

__all__ = [
    "EnergyBreakdown", "Liberty", "Netlist", "TimingReport", "analyze", "cost_appmul", "cost_library",
    "energy_per_op", "lut_to_verilog", "make_stream", "read_liberty", "relative_cost", "simulate_lut",
    "synthesize", "write_synthetic_liberty",
]

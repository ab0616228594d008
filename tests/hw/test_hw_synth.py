from __future__ import annotations

import numpy as np
import pytest

from fames.appmul.core import AppMul, exact_lut
from fames.errors import HardwareError
from fames.hw.netlist import Netlist, simulate_lut
from fames.hw.synth import lut_to_verilog, synthesize
from tests.hw.hw_helpers import mult_verilog


@pytest.mark.parametrize("signs", [(False, False), (True, True), (False, True)])
def test_multiplier_lut_matches_behaviour(synth_lib, signs):
    nl = synthesize(mult_verilog(3, 3, *signs), "mul", synth_lib)
    assert {c.type for c in nl.cells} <= set(nl.liberty.cells)
    assert np.array_equal(simulate_lut(nl, 3, 3, *signs), exact_lut(3, 3, *signs))


def test_signed_verilog_needs_signed_reading(synth_lib):
    nl = synthesize(mult_verilog(3, 3, True, True), "mul", synth_lib)
    assert not np.array_equal(simulate_lut(nl, 3, 3, False, False), exact_lut(3, 3, True, True))


def test_without_liberty_internal_gates_8x8():
    nl = synthesize(mult_verilog(8, 8, False, False), "mul", None)
    assert all(c.type.startswith("$_") for c in nl.cells)
    assert np.array_equal(simulate_lut(nl, 8, 8, False, False), exact_lut(8, 8))


def test_lut_to_verilog_roundtrip():
    rng = np.random.default_rng(1)
    lut = exact_lut(3, 2, True, False) + rng.integers(-2, 3, (8, 4))
    m = AppMul("rand lut", 3, 2, True, False, lut)
    nl = synthesize(lut_to_verilog(m), "rand_lut", None)
    assert np.array_equal(simulate_lut(nl, 3, 2, True, False), lut)


def test_blif_input(synth_lib):
    blif = """.model andor
.inputs a[0] a[1] w[0] w[1]
.outputs y[0] y[1] y[2] y[3]
.names a[0] w[0] y[0]
11 1
.names a[1] w[1] y[1]
1- 1
-1 1
.names y[2]
.names y[3]
1
.end
"""
    nl = synthesize(blif, "andor", synth_lib, fmt="blif")
    a, w = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    y = nl.simulate({"a": a.ravel(), "w": w.ravel()})["y"]
    want = (a & w & 1) | ((((a | w) >> 1) & 1) << 1) | 8
    assert np.array_equal(y, want.ravel())


def test_constant_outputs_need_no_tie_cells(synth_lib):
    v = "module k(input [1:0] a, input [1:0] w, output [3:0] y); assign y = {2'b10, a[0] & w[0], 1'b0}; endmodule"
    nl = synthesize(v, "k", synth_lib)
    assert len(nl.cells) == 1  # only the AND; constants stay constant nets
    assert nl.outputs["y"][0] == 0 and nl.outputs["y"][3] == 1


def test_bad_verilog_names_module(synth_lib):
    with pytest.raises(HardwareError, match=r"'broken'.*ERROR"):
        synthesize("module broken(input a, output y); assign y = a +* ; endmodule", "broken", synth_lib)
    with pytest.raises(HardwareError, match="'missing_top'"):
        synthesize(mult_verilog(2, 2, False, False), "missing_top", synth_lib)


def test_missing_liberty_names_path(tmp_path):
    with pytest.raises(HardwareError, match="no_such.lib"):
        synthesize(mult_verilog(2, 2, False, False), "mul", tmp_path / "no_such.lib")


def test_sequential_and_loops_rejected():
    data = {"modules": {"t": {"ports": {"a": {"direction": "input", "bits": [2]},
                                        "y": {"direction": "output", "bits": [3]}},
                              "cells": {"g1": {"type": "$_AND_", "connections": {"A": [2], "B": [4], "Y": [3]}},
                                        "g2": {"type": "$_NOT_", "connections": {"A": [3], "Y": [4]}}}}}}
    with pytest.raises(HardwareError, match="loop"):
        Netlist.from_yosys_json(data, "t")
    data["modules"]["t"]["cells"]["g2"]["type"] = "$_DFF_P_"
    with pytest.raises(HardwareError, match="sequential"):
        Netlist.from_yosys_json(data, "t")


def test_toggle_counts():
    data = {"modules": {"t": {"ports": {"a": {"direction": "input", "bits": [2, 3]},
                                        "y": {"direction": "output", "bits": [4]}},
                              "cells": {"g": {"type": "$_XOR_", "connections": {"A": [2], "B": [3], "Y": [4]}}}}}}
    nl = Netlist.from_yosys_json(data, "t")
    seq = np.array([0, 1, 3, 2, 2, 0])
    t = nl.toggle_counts({"a": seq})
    assert t[nl.inputs["a"][0]] == 2 and t[nl.inputs["a"][1]] == 2 and t[nl.outputs["y"][0]] == 4


@pytest.mark.parametrize("lib_name", ["nangate45_typ.lib.gz", "gscl45nm.lib.gz"])
def test_adder_cells_map_a_multiplier_to_full_and_half_adders_bit_exactly(lib_name):
    from fames.hw.liberty import read_liberty
    from tests.hw.hw_helpers import shared_liberty

    path = shared_liberty(lib_name)
    cells = read_liberty(path).adder_cells()
    fa, ha = cells["fa"][0], cells["ha"][0]
    for signs in [(False, False), (True, True)]:
        plain = synthesize(mult_verilog(4, 4, *signs), "mul", path)
        nl = synthesize(mult_verilog(4, 4, *signs), "mul", path, adder_cells=True)
        kinds = [c.type for c in nl.cells]
        assert kinds.count(fa) >= 4 and kinds.count(ha) >= 1 and fa not in {c.type for c in plain.cells}
        assert np.array_equal(simulate_lut(nl, 4, 4, *signs), exact_lut(4, 4, *signs))


def test_adder_cells_need_a_full_adder_in_the_liberty(synth_lib):
    from fames.hw.liberty import read_liberty

    if "fa" in read_liberty(synth_lib).adder_cells():
        pytest.skip("the synthetic liberty has a full adder")
    with pytest.raises(HardwareError, match="no full-adder cell"):
        synthesize(mult_verilog(3, 3, False, False), "mul", synth_lib, adder_cells=True)


CHAIN = """module chain(input [7:0] a, input [7:0] w, output [15:0] y);
  assign y[0] = ((((((((((((((a[0] ^ a[1]) ^ a[2]) ^ a[3]) ^ a[4]) ^ a[5]) ^ a[6]) ^ a[7]) ^ w[0]) ^ w[1]) ^ w[2])
                ^ w[3]) ^ w[4]) ^ w[5]) ^ w[6]) ^ w[7];
  assign y[15:1] = 15'b0;
endmodule
"""


def _depth(nl: Netlist) -> int:
    """Cells on the longest path from an input to an output."""
    level: dict[int, int] = {}
    for idx in nl.order:
        c = nl.cells[idx]
        d = 1 + max((level.get(n, 0) for n in c.inputs.values()), default=0)
        for n in c.outputs.values():
            level[n] = d
    return max(level.get(n, 0) for bits in nl.outputs.values() for n in bits)


def test_keep_structure_maps_the_gates_as_written(synth_lib):
    """A 16-input parity written as a chain of XORs: re-synthesis balances it into a tree (depth 4 of 2-input gates),
    keep-structure maps the chain as it stands (depth 15); both compute the same function."""
    tree = synthesize(CHAIN, "chain", synth_lib)
    chain = synthesize(CHAIN, "chain", synth_lib, structure="keep")
    assert np.array_equal(simulate_lut(chain, 8, 8, False, False), simulate_lut(tree, 8, 8, False, False))
    assert _depth(tree) <= 5 < 15 <= _depth(chain)
    with pytest.raises(HardwareError, match="unknown structure"):
        synthesize(CHAIN, "chain", synth_lib, structure="flat")


@pytest.mark.parametrize(("lib_name", "small", "large"), [
    ("nangate45_typ.lib.gz", {"AND2_X1", "INV_X1", "XOR2_X1"}, {"AND2_X2", "INV_X4", "BUF_X2", "CLKBUF_X1"}),
    ("gscl45nm.lib.gz", {"AND2X1", "INVX1", "XOR2X1"}, {"AND2X2", "INVX2", "BUFX4"}),
])
def test_keep_structure_uses_only_the_smallest_cell_of_each_function(lib_name, small, large):
    """Without timing constraints nothing calls for a larger drive (gscl45nm's tables mostly start at 100 fF, where
    larger cells look faster): keep-structure maps with the smallest cell of each function only."""
    from fames.hw.liberty import read_liberty
    from tests.hw.hw_helpers import shared_liberty

    path = shared_liberty(lib_name)
    lib = read_liberty(path)
    larger = set(lib.larger_drives())
    assert large <= larger and not small & larger
    for tie, value in (("LOGIC0_X1", 0), ("LOGIC1_X1", 1)):  # cells without inputs have a one-row truth table
        if tie in lib.cells:
            assert lib.cells[tie].truth() == (value,)
    for signs in [(False, False), (True, True)]:
        nl = synthesize(mult_verilog(4, 4, *signs), "mul", path, structure="keep")
        assert not {c.type for c in nl.cells} & larger
        assert np.array_equal(simulate_lut(nl, 4, 4, *signs), exact_lut(4, 4, *signs))

from __future__ import annotations

import gzip
import itertools

import pytest

from fames.errors import HardwareError
from fames.hw import synthetic
from fames.hw.liberty import parse_liberty, read_liberty, truth_table
from tests.hw.hw_helpers import shared_liberty


def test_synthetic_units_area_and_skips(synth_lib):
    lib = read_liberty(synth_lib)
    assert lib.name == "fames_synth45"
    assert lib.cap_to_ff == 1.0 and lib.time_to_ns == 1.0 and lib.energy_to_fj == 1.0
    assert lib.nom_voltage == pytest.approx(1.1)
    assert lib.cells["NAND2_X1"].area == pytest.approx(0.80)
    assert lib.cells["AOI21_X1"].leakage_nw == pytest.approx(28.0)
    assert lib.cells["XOR2_X1"].inputs["B"].cap_ff == pytest.approx(2.4)
    assert "DFF_X1" in lib.skipped and "DFF_X1" not in lib.cells
    assert lib.inverter().name == "INV_X1" and lib.buffer().name == "BUF_X1"


def test_table_values_and_interpolation(synth_lib):
    lib = read_liberty(synth_lib)
    spec = synthetic.spec("NOR2_X1")
    arc = lib.cells["NOR2_X1"].outputs["ZN"].arcs[1]
    assert arc.related_pin == "A2" and arc.sense == "negative_unate"
    # grid point
    s, c = synthetic.SLEW_INDEX[2], synthetic.LOAD_INDEX[1]
    assert arc.cell_rise.at(s, c) == pytest.approx(synthetic.delay_ns(spec, s, c), abs=1e-6)
    # midpoint and extrapolation: the synthetic tables are bilinear, so interpolation is exact
    for s, c in [(0.05, 5.0), (0.5, 40.0), (0.001, 0.1)]:
        assert arc.cell_fall.at(s, c) == pytest.approx(synthetic.delay_ns(spec, s, c, fall=True), abs=1e-6)
        assert arc.rise_transition(s, c) == pytest.approx(synthetic.transition_ns(spec, s, c), abs=1e-6)
    # power template lists the load first: the reader must transpose it
    pw = lib.cells["NOR2_X1"].outputs["ZN"].power[0]
    assert pw.rise.at(0.05, 5.0) == pytest.approx(synthetic.energy_fj(spec, 0.05, 5.0), abs=1e-6)
    assert pw.fall.at(0.3, 0.5) == pytest.approx(synthetic.energy_fj(spec, 0.3, 0.5, fall=True), abs=1e-6)


@pytest.mark.parametrize(
    "fn, inputs, expected",
    [
        ("!(A1 & A2)", ["A1", "A2"], lambda a, b: not (a and b)),
        ("A B + C'", ["A", "B", "C"], lambda a, b, c: (a and b) or not c),
        ("(A+B)'", ["A", "B"], lambda a, b: not (a or b)),
        ("A ^ B | C", ["A", "B", "C"], lambda a, b, c: (a != b) or c),
        ("A * !B ^ C", ["A", "B", "C"], lambda a, b, c: a and ((not b) != c)),  # ^ binds tighter than *
        ("(S & B) | (A & !S)", ["A", "B", "S"], lambda a, b, s: b if s else a),
        ("A'' & 1", ["A"], lambda a: a),
        ("A | 0", ["A"], lambda a: a),
    ],
)
def test_function_parser(fn, inputs, expected):
    want = tuple(int(bool(expected(*row))) for row in itertools.product([False, True], repeat=len(inputs)))
    assert truth_table(fn, inputs) == want


def test_synthetic_cell_truth_tables(synth_lib):
    lib = read_liberty(synth_lib)
    assert lib.cells["AOI21_X1"].truth() == (1, 1, 1, 0, 0, 0, 0, 0)  # !(A | (B1 & B2)), A = MSB
    assert lib.cells["MUX2_X1"].truth() == (0, 0, 0, 1, 1, 0, 1, 1)  # inputs (A, B, S)
    assert lib.cells["XNOR2_X1"].truth() == (1, 0, 0, 1)


def test_gzip_comments_and_continuations(tmp_path):
    text = synthetic.liberty_text().replace("  cell (INV_X1) {", "  // a line comment\n  cell (INV_X1) {")
    p = tmp_path / "x.lib.gz"
    p.write_bytes(gzip.compress(text.encode()))
    lib = read_liberty(p)
    assert lib.cells["INV_X1"].area == pytest.approx(0.53)


def test_missing_file_names_path(tmp_path):
    p = tmp_path / "nope.lib"
    with pytest.raises(HardwareError, match="nope.lib"):
        read_liberty(p)


def test_malformed_file_names_line(tmp_path):
    text = synthetic.liberty_text().splitlines()
    text[30] = text[30] + " ) ("
    p = tmp_path / "bad.lib"
    p.write_text("\n".join(text))
    with pytest.raises(HardwareError, match="line 31"):
        read_liberty(p)
    p.write_text("library (x) {\n  cell (A) {\n  area : 1;\n")
    with pytest.raises(HardwareError, match="not closed"):
        read_liberty(p)


def test_library_without_basic_cells(tmp_path):
    text = synthetic.liberty_text()
    start, end = text.index("  cell (INV_X1)"), text.index("  cell (BUF_X1)")
    lib = parse_liberty(text[:start] + text[end:])
    assert "INV_X1" not in lib.cells
    with pytest.raises(HardwareError, match="inverter"):
        lib.require_basic_cells()


def test_nangate_parses():
    lib = read_liberty(shared_liberty("nangate45_typ.lib.gz"))
    assert lib.cap_to_ff == 1.0 and lib.nom_voltage == pytest.approx(1.1)
    assert lib.cells["INV_X1"].area == pytest.approx(0.532)
    assert lib.buffer().name == "BUF_X1"
    assert "DFF_X1" in lib.skipped
    arc = lib.cells["INV_X1"].outputs["ZN"].arcs[0]
    assert arc.cell_rise.slew[0] < 0.01 < arc.cell_rise.load[-1]  # slew axis in ns, load in fF


def test_gscl_units_and_axis_order():
    lib = read_liberty(shared_liberty("gscl45nm.lib.gz"))
    assert lib.cap_to_ff == 1000.0  # capacitive_load_unit (1,pf)
    assert lib.energy_to_fj == 1000.0  # 1 V^2 x 1 pF = 1 pJ
    assert lib.cells["INVX1"].inputs["A"].cap_ff == pytest.approx(1.55103, rel=1e-4)
    t = lib.cells["AND2X1"].outputs["Y"].arcs[0].cell_rise
    # gscl lists total_output_net_capacitance first (pF): stored as load axis in fF
    assert t.load[0] == pytest.approx(100.0) and t.slew[0] == pytest.approx(0.06)
    assert t.values.shape == (len(t.slew), len(t.load))
    assert lib.cells["AND2X1"].truth() == (0, 0, 0, 1)


def test_adder_cells_found_by_function_with_their_pins():
    nangate = read_liberty(shared_liberty("nangate45_typ.lib.gz")).adder_cells()
    assert nangate == {"fa": ("FA_X1", {"A": "A", "B": "B", "C": "CI", "S": "S", "CO": "CO"}),
                       "ha": ("HA_X1", {"A": "A", "B": "B", "S": "S", "CO": "CO"})}
    gscl = read_liberty(shared_liberty("gscl45nm.lib.gz")).adder_cells()
    assert gscl["fa"] == ("FAX1", {"A": "A", "B": "B", "C": "C", "S": "YS", "CO": "YC"}) and gscl["ha"][0] == "HAX1"

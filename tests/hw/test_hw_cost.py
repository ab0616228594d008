from __future__ import annotations

import numpy as np
import pytest

from fames.appmul.core import AppMul, exact_lut
from fames.errors import HardwareError
from fames.hw.cost import cost_appmul, cost_library
from fames.io import cache_dir
from tests.hw.hw_helpers import mult_verilog


def exact(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> AppMul:
    return AppMul("exact", a_bits, w_bits, a_signed, w_signed, exact_lut(a_bits, w_bits, a_signed, w_signed),
                  verilog=mult_verilog(a_bits, w_bits, a_signed, w_signed, "exact_ref"), top="exact_ref")


def test_cost_fields_and_cache_hit(synth_lib):
    m = exact(3, 3, False, False)
    c1 = cost_appmul(m, synth_lib, n_vectors=512, clock_ns=2.0)
    assert c1.area_um2 > 0 and c1.delay_ns > 0 and c1.energy_fj > 0 and c1.cells > 0
    assert c1.power_uw == pytest.approx(c1.energy_fj / 2.0)
    assert c1.pdp_fj == pytest.approx(c1.power_uw * c1.delay_ns)
    assert c1.liberty == "fames_synth45" and c1.comparable and c1.clock_ns == 2.0
    files = list((cache_dir() / "hw").glob("*.json"))
    assert len(files) == 1
    c2 = cost_appmul(m, synth_lib, n_vectors=512, clock_ns=2.0)
    assert c2 == c1
    c3 = cost_appmul(m, synth_lib, n_vectors=512, clock_ns=2.0, hold=8)  # other stream: new entry
    assert c3.energy_fj < c1.energy_fj and len(list((cache_dir() / "hw").glob("*.json"))) == 2
    # every cost says how it was made, fresh or from the cache, and keeps it in a saved library
    assert c1.recipe["hold"] == 1 and c3.recipe["hold"] == 8 and c1.recipe["n_vectors"] == 512
    assert c1.recipe["clock_ns"] == 2.0 and c1.recipe["version"].startswith("yosys-abc")
    c4 = cost_appmul(m, synth_lib, n_vectors=512, stream="toggle", toggle_rate=0.1)
    assert c4.recipe["stream"] == "toggle" and c4.recipe["toggle_rate"] == 0.1 and "toggle_rate" not in c1.recipe
    from fames.appmul.library import Library

    Library([m.with_cost(c4)]).save(cache_dir() / "lib")
    assert Library.load(cache_dir() / "lib")["exact"].cost.recipe == c4.recipe


def test_missing_liberty_names_path(tmp_path):
    with pytest.raises(HardwareError, match="absent.lib"):
        cost_appmul(exact(2, 2, False, False), tmp_path / "absent.lib")


def test_verilog_disagreeing_with_lut_is_reported(synth_lib):
    m = exact(3, 3, False, False)
    m.lut = m.lut.copy()
    m.lut[1, 1] = 2
    with pytest.raises(HardwareError, match="disagrees"):
        cost_appmul(m, synth_lib, n_vectors=64, cache=False)


def test_library_relative_costs(synth_lib):
    lut = exact_lut(3, 3) >> 2 << 2  # truncated: LUT-only design
    trunc = AppMul("trunc", 3, 3, False, False, lut)
    signed = AppMul("s_exact", 3, 3, True, True, exact_lut(3, 3, True, True),
                    verilog=mult_verilog(3, 3, True, True, "s_exact"), top="s_exact")
    out = cost_library([trunc, exact(3, 3, False, False), signed], synth_lib, reference=exact,
                       progress=False, n_vectors=256)
    assert [m.name for m in out] == ["trunc", "exact", "s_exact"]
    assert out[1].cost.relative == pytest.approx({k: 1.0 for k in ("area", "delay", "energy", "power", "pdp")})
    assert out[2].cost.relative["area"] == pytest.approx(1.0)  # same design as its signed reference
    ref = out[1].cost
    assert out[0].cost.relative["area"] == pytest.approx(out[0].cost.area_um2 / ref.area_um2)
    assert out[0].cost.relative["pdp"] == pytest.approx(out[0].cost.pdp_fj / ref.pdp_fj)
    # synthesized from its truth table, a 3x3 design costs 0.6-1.6x its structure: not comparable (2x2 is)
    assert out[0].cost.note == "from truth table, not comparable" and not out[0].cost.comparable
    assert np.array_equal(out[0].lut, lut) and trunc.cost is None  # inputs untouched


def test_wide_table_only_design_not_comparable(synth_lib):
    lut = exact_lut(5, 2)
    m = AppMul("t52", 5, 2, False, False, lut)
    c = cost_appmul(m, synth_lib, n_vectors=64)
    assert not c.comparable and c.note == "from truth table, not comparable"
    # a table has no gate structure to keep: it is re-synthesised, and its recipe says so
    k = cost_appmul(m, synth_lib, n_vectors=64, structure="keep")
    assert k == c and "structure" not in k.recipe
    with pytest.raises(HardwareError, match="unknown structure"):
        cost_appmul(m, synth_lib, n_vectors=64, structure="as-is")


def test_a_table_design_is_compared_with_a_reference_costed_like_it(synth_lib):
    """With structure="keep" the exact reference keeps its gates while a table-only design is re-synthesised: its
    relative figures are taken against the reference re-synthesised too (an exact 2x2 table stays at the ratio the
    default recipe gives it, not 0.66)."""
    t = AppMul("t22", 2, 2, False, False, exact_lut(2, 2))
    plain = cost_library([t], synth_lib, progress=False, n_vectors=64)[0].cost
    kept = cost_library([t], synth_lib, progress=False, n_vectors=64, structure="keep")[0].cost
    assert kept.relative == plain.relative and "structure" not in kept.recipe


def test_an_interrupted_costing_drops_its_queue(monkeypatch, tmp_path):
    import fames.hw.cost as hc
    from fames.appmul.families import build_family

    calls = []

    def interrupted(design, *a, **kw):
        calls.append(design.name)
        raise KeyboardInterrupt  # Ctrl-C while the first design is costed

    monkeypatch.setattr(hc, "cost_appmul", interrupted)
    ms = build_family("trunc", 4, 4, False)
    with pytest.raises(KeyboardInterrupt):
        hc.cost_library(ms, tmp_path / "any.lib", jobs=1, progress=False)
    assert len(calls) == 1  # the other designs were waited for, one by one, before


def test_the_signed_exact_reference_costs_the_same_in_either_orientation(synth_lib):
    from fames.appmul.families import build

    # the wider operand was Booth-recoded when it was the weight: exact 2x6s cost 4x exact 6x2s, so an imported
    # `assign y = a * w` showed a 58% saving against it
    for a, w in ((2, 6), (3, 5)):
        ab, ba = (cost_appmul(build("exact", x, y, True, True), synth_lib, n_vectors=512) for x, y in ((a, w), (w, a)))
        assert ab.pdp_fj == pytest.approx(ba.pdp_fj, rel=0.05) and ab.area_um2 == pytest.approx(ba.area_um2, rel=0.05)


def test_a_cache_that_cannot_be_written_costs_without_caching(synth_lib):
    (cache_dir() / "hw").parent.mkdir(parents=True, exist_ok=True)
    (cache_dir() / "hw").write_text("not a folder")  # as a read-only cache for a user who is not root
    with pytest.warns(UserWarning, match="cannot write to the fames cache"):
        c = cost_appmul(exact(3, 3, False, False), synth_lib, n_vectors=64)
    assert c.pdp_fj > 0  # it stopped the command with the path of a temporary file before

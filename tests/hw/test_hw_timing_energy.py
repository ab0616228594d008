from __future__ import annotations

import numpy as np
import pytest

from fames.errors import HardwareError
from fames.hw import synthetic
from fames.hw.energy import energy_per_op, histogram_stream, make_stream, toggle_stream, weight_stationary
from fames.hw.liberty import read_liberty
from fames.hw.netlist import Netlist
from fames.hw.synth import synthesize
from fames.hw.timing import MAC_LOAD_FF, analyze
from tests.hw.hw_helpers import mult_verilog


def _chain(n: int, lib) -> Netlist:
    cells = {f"i{k}": {"type": "INV_X1", "connections": {"A": [2 + k], "ZN": [3 + k]}} for k in range(n)}
    data = {"modules": {"chain": {"ports": {"a": {"direction": "input", "bits": [2]},
                                            "y": {"direction": "output", "bits": [2 + n]}},
                                  "cells": cells}}}
    return Netlist.from_yosys_json(data, "chain", lib)


def test_inverter_chain_sta_equals_hand_sum(synth_lib):
    lib = read_liberty(synth_lib)
    inv = synthetic.spec("INV_X1")
    n, s0 = 3, 0.02
    rep = analyze(_chain(n, lib), input_slew_ns=s0, output_load_ff=MAC_LOAD_FF)
    best = 0.0
    for first_fall in (True, False):  # input rises -> first output falls, and the opposite edge
        t, s, fall = 0.0, s0, first_fall
        for k in range(n):
            load = MAC_LOAD_FF if k == n - 1 else 1.6
            t += synthetic.delay_ns(inv, s, load, fall)
            s = synthetic.transition_ns(inv, s, load, fall)
            fall = not fall
        best = max(best, t)
    assert rep.delay_ns == pytest.approx(best, abs=1e-5)
    assert [p.cell_type for p in rep.path[1:]] == ["INV_X1"] * n
    assert rep.path[-1].arrival_ns == pytest.approx(rep.delay_ns)


def test_inverter_energy_by_hand(synth_lib):
    lib = read_liberty(synth_lib)
    nl = _chain(1, lib)
    rep = analyze(nl, input_slew_ns=0.02, output_load_ff=MAC_LOAD_FF)
    a = np.array([0, 1] * 50)
    e = energy_per_op(nl, lib, a, np.zeros_like(a), clock_ns=2.0, timing=rep, input_nets="all")
    inv = synthetic.spec("INV_X1")
    v2 = 1.1 ** 2
    assert e.switching_fj == pytest.approx(0.5 * v2 * (1.6 + MAC_LOAD_FF), rel=1e-9)
    # by default the input net (1.6 fF of pin load) is the upstream driver's
    e_default = energy_per_op(nl, lib, a, np.zeros_like(a), clock_ns=2.0, timing=rep)
    assert e_default.switching_fj == pytest.approx(0.5 * v2 * MAC_LOAD_FF, rel=1e-9)
    # 99 transitions: input rises 50 times (output falls), falls 49 times (output rises)
    e_fall, e_rise = (synthetic.energy_fj(inv, 0.02, MAC_LOAD_FF, fall) for fall in (True, False))
    assert e.internal_fj == pytest.approx((50 * e_fall + 49 * e_rise) / 99, abs=1e-5)
    assert e.leakage_fj == pytest.approx(14.0 * 2.0 * 1e-3)


def test_constant_operands_cost_only_leakage(synth_lib):
    nl = synthesize(mult_verilog(3, 3, False, False), "mul", synth_lib)
    a = np.full(64, 5)
    e = energy_per_op(nl, None, a, np.full(64, 3), clock_ns=1.5)
    assert e.switching_fj == 0 and e.internal_fj == 0
    assert e.total_fj == pytest.approx(nl.leakage_nw() * 1.5e-3)


def test_weight_stationary_cheaper_than_uniform(synth_lib):
    nl = synthesize(mult_verilog(4, 4, False, False), "mul", synth_lib)
    e_uni = energy_per_op(nl, None, *make_stream("uniform", 4, 4, 2048, seed=0))
    e_ws = energy_per_op(nl, None, *make_stream("uniform", 4, 4, 2048, seed=0, hold=16))
    assert e_ws.total_fj < 0.9 * e_uni.total_fj
    assert e_uni.switching_fj > 0 and e_uni.internal_fj > 0


def test_streams():
    a, w = weight_stationary(np.arange(10), np.arange(10), 4)
    assert list(w) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2] and list(a) == list(range(10))
    hist = np.zeros((4, 8))
    hist[2, 5] = 1.0
    a, w = histogram_stream(hist, 100, seed=3)
    assert set(a) == {2} and set(w) == {5}
    a1, w1 = make_stream("uniform", 3, 5, 500, seed=7)
    a2, w2 = make_stream("uniform", 3, 5, 500, seed=7)
    assert np.array_equal(a1, a2) and np.array_equal(w1, w2) and w1.max() < 32 and a1.max() < 8


def test_toggle_stream_flips_each_bit_at_the_rate():
    a, w = toggle_stream(4, 6, 1.0, 64, seed=1)  # rate 1: every bit flips every operation
    assert np.all((a[1:] ^ a[:-1]) == 0b1111) and np.all((w[1:] ^ w[:-1]) == 0b111111)
    a, w = toggle_stream(8, 8, 0.1, 200_000, seed=2)
    for x in (a, w):
        bits = (x[:, None] >> np.arange(8)) & 1
        flips = np.abs(np.diff(bits, axis=0))
        assert np.allclose(flips.mean(0), 0.1, atol=0.004) and np.allclose(bits.mean(0), 0.5, atol=0.03)
    with pytest.raises(HardwareError, match="toggle rate"):
        toggle_stream(4, 4, 0.0)


def test_an_and_of_two_bits_toggles_at_the_closed_form_rate():
    """y = a & w of two bits flipping at rate p: y toggles with probability (1 - (1 - p)^2) / 2 (0.375 at p = 0.5,
    the uniform stream's figure)."""
    for p in (0.1, 0.3, 0.5):
        a, w = toggle_stream(2, 2, p, 200_000, seed=4)
        y = (a & w) & 1
        assert np.mean(y[1:] != y[:-1]) == pytest.approx((1 - (1 - p) ** 2) / 2, rel=0.03)


def test_slower_toggling_operands_cost_less_energy(synth_lib):
    nl = synthesize(mult_verilog(4, 4, False, False), "mul", synth_lib)
    e_uni = energy_per_op(nl, None, *make_stream("uniform", 4, 4, 8192, seed=0)).total_fj
    e_half = energy_per_op(nl, None, *make_stream("toggle", 4, 4, 8192, seed=0, toggle_rate=0.5)).total_fj
    e_slow = energy_per_op(nl, None, *make_stream("toggle", 4, 4, 8192, seed=0, toggle_rate=0.1)).total_fj
    assert e_half == pytest.approx(e_uni, rel=0.05) and e_slow < 0.5 * e_uni


_WIRE = ('default_wire_load : "wl" ;\n  wire_load("wl") {\n    capacitance : 0.5 ;\n    slope : 2.0 ;\n'
         '    fanout_length(1, 1.0) ;\n    fanout_length(3, 4.0) ;\n  }\n')


def _with_wire_load(synth_lib, block: str):
    from fames.hw.liberty import parse_liberty

    text = synth_lib.read_text()
    head, brace, rest = text.partition("{")
    return parse_liberty(head + brace + "\n  " + block + rest, source="wire.lib")


def test_wire_load_interpolates_and_extrapolates_by_fanout(synth_lib):
    wl = _with_wire_load(synth_lib, _WIRE).wire_load
    assert wl is not None and wl.name == "wl"
    # length: table at 1 and 3, linear between, slope 2 per fanout beyond 3; cap = 0.5 fF per unit length
    assert [wl.cap_ff(f) for f in (0, 1, 2, 3, 5)] == pytest.approx([0.0, 0.5, 1.25, 2.0, 4.0])
    assert read_liberty(synth_lib).wire_load is None  # the synthetic library names none


def test_wire_load_adds_to_every_net_load(synth_lib):
    from fames.hw.timing import net_loads

    lib = _with_wire_load(synth_lib, _WIRE)
    nl = _chain(2, lib)  # input -> INV -> INV -> output port: every net has fanout 1
    plain, wired = net_loads(nl), net_loads(nl, wire_load="liberty")
    live = [2, 3, 4]
    assert wired[live] - plain[live] == pytest.approx([0.5, 0.5, 0.5])
    assert analyze(nl, wire_load="liberty").delay_ns > analyze(nl).delay_ns
    with pytest.raises(HardwareError, match="wire_load must be one of"):
        net_loads(nl, wire_load="yes")


def test_a_default_wire_load_without_its_group_is_reported(synth_lib):
    with pytest.raises(HardwareError, match="no wire_load group has that name"):
        _with_wire_load(synth_lib, 'default_wire_load : "missing" ;\n')


def test_an_input_slew_is_its_drivers_transition_even_below_the_ideal_edge():
    """NanGate's BUF_X1 driving one inverter pin switches in about 5 ps, faster than the 10 ps ideal edge that feeds
    it: the input net's slew is the buffer's own transition, not floored at that edge."""
    from fames.hw.timing import DRIVER_INPUT_SLEW_NS
    from tests.hw.hw_helpers import shared_liberty

    lib = read_liberty(shared_liberty("nangate45_typ.lib.gz"))
    rep = analyze(_chain(1, lib))
    a = 2
    arcs = next(iter(lib.cells["BUF_X1"].outputs.values())).arcs
    load = lib.cells["INV_X1"].inputs["A"].cap_ff
    want = [max(getattr(arc, t).at(DRIVER_INPUT_SLEW_NS, load) for arc in arcs)
            for t in ("rise_transition", "fall_transition")]
    assert max(want) < DRIVER_INPUT_SLEW_NS
    assert rep.slew_ns[a] == pytest.approx(max(want), rel=1e-9)

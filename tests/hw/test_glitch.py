"""Timing-aware toggle counts: a static hazard through unequal paths, pulse rejection, no glitch without skew."""

import numpy as np
import pytest

from fames.hw.glitch import glitch_toggles, pin_delays
from fames.hw.liberty import read_liberty
from fames.hw.netlist import Netlist
from fames.hw.synthetic import default_synthetic_liberty
from fames.hw.timing import analyze


def _hazard(n_buffers: int) -> Netlist:
    """y = a XOR (a through n buffers): constant 0, but a pulse on every change of a."""
    cells, prev, nxt = {}, 2, 4
    for k in range(n_buffers):
        cells[f"b{k}"] = {"type": "BUF_X1", "connections": {"A": [prev], "Z": [nxt]}}
        prev, nxt = nxt, nxt + 1
    cells["x"] = {"type": "XOR2_X1", "connections": {"A": [2], "B": [prev], "Z": [nxt]}}
    mod = {"ports": {"a": {"direction": "input", "bits": [2]}, "w": {"direction": "input", "bits": [3]},
                     "y": {"direction": "output", "bits": [nxt]}}, "cells": cells, "netnames": {}}
    lib = read_liberty(default_synthetic_liberty())
    return Netlist.from_yosys_json({"modules": {"h": mod}}, "h", lib)


@pytest.mark.parametrize("n_buffers", [0, 1, 3, 6])
def test_static_hazard_pulse_counted_or_rejected(n_buffers):
    nl = _hazard(n_buffers)
    a = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    vals = nl.net_values({"a": a, "w": np.zeros_like(a)})
    t = analyze(nl)
    tog = glitch_toggles(nl, nl.liberty, vals, t)
    y = nl.outputs["y"][0]
    assert vals[y].sum() == 0  # zero-delay: the output never moves
    changes = int((a[1:] != a[:-1]).sum())
    xor = next(i for i, c in enumerate(nl.cells) if c.type == "XOR2_X1")
    d = pin_delays(nl, nl.liberty, t, 1.0)[xor]["Z"]
    # the B input changes later by the buffers' delays plus its own pin delay; the pulse passes when its width
    # reaches the XOR's smallest pin delay
    arrival_b = 0 if n_buffers == 0 else sum(
        pin_delays(nl, nl.liberty, t, 1.0)[i]["Z"]["A"] for i, c in enumerate(nl.cells) if c.type == "BUF_X1")
    width = abs(arrival_b + d["B"] - d["A"])
    expect = 2 * changes if width >= min(d.values()) else 0
    assert tog[y] == expect
    assert tog[nl.inputs["a"][0]] == changes


def test_each_output_of_a_full_adder_has_its_own_delays():
    """FA_X1's sum S (about 83 ps under NanGate) then XOR with a[0] delayed by ten inverters: the two paths to the XOR
    differ by less than its smallest pin delay, so no glitch passes. Timed with the carry's delays (about 50 ps), the
    sum would seem to arrive early and pulses would pass (1.0 toggles per operation instead of 0.5)."""
    from tests.hw.hw_helpers import shared_liberty

    lib = read_liberty(shared_liberty("nangate45_typ.lib.gz"))
    cells = {"fa": {"type": "FA_X1", "connections": {"A": [2], "B": [4], "CI": [3], "S": [6], "CO": [7]}}}
    prev = 2
    for k in range(10):
        cells[f"i{k}"] = {"type": "INV_X1", "connections": {"A": [prev], "ZN": [10 + k]}}
        prev = 10 + k
    cells["x"] = {"type": "XOR2_X1", "connections": {"A": [6], "B": [prev], "Z": [8]}}
    mod = {"ports": {"a": {"direction": "input", "bits": [2, 3]}, "w": {"direction": "input", "bits": [4, 5]},
                     "y": {"direction": "output", "bits": [8, 7]}}, "cells": cells, "netnames": {}}
    nl = Netlist.from_yosys_json({"modules": {"fa10": mod}}, "fa10", lib)
    t = analyze(nl)
    fa = pin_delays(nl, lib, t, 1.0)[0]
    assert fa["S"]["A"] > 1.3 * fa["CO"]["A"]
    rng = np.random.default_rng(0)
    a, w = rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)
    vals = nl.net_values({"a": a, "w": w})
    tog = glitch_toggles(nl, lib, vals, t)
    zd = (vals[:, 1:] != vals[:, :-1]).sum(axis=1)
    y0, y1 = nl.outputs["y"]
    assert tog[y0] == zd[y0] and tog[y1] == zd[y1]


def test_no_skew_no_glitch_and_zero_delay_agrees():
    from fames.appmul.families import build
    from fames.hw.synth import synthesize

    m = build("exact", 2, 2, False, False)
    nl = synthesize(m.verilog, m.top, default_synthetic_liberty())
    rng = np.random.default_rng(0)
    a, w = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    vals = nl.net_values({"a": a, "w": w})
    tog = glitch_toggles(nl, nl.liberty, vals, analyze(nl))
    zd = (vals[:, 1:] != vals[:, :-1]).sum(axis=1)
    assert np.all(tog >= zd)  # every zero-delay change happens; glitches only add
    assert np.all((tog - zd) % 2 == 0)  # a glitch is a pair of changes


def test_propagated_density_closed_form(synth_lib):
    """Najm's transition density through AND / XOR: D(and) = P(b) D(a) + P(a) D(b), D(xor) = D(a) + D(b)."""
    from fames.hw.activity import propagated_density
    from fames.hw.liberty import read_liberty
    from fames.hw.synth import synthesize

    src = ("module t(input [1:0] a, input [0:0] w, output [1:0] y);\n"
           " assign y = {a[1] & w[0], a[0] ^ w[0]};\nendmodule\n")
    nl = synthesize(src, "t", synth_lib)
    lib = read_liberty(synth_lib)
    n = len(nl.net_names)
    p, d = np.zeros(n), np.zeros(n)
    (a0, a1), (w0,) = nl.inputs["a"], nl.inputs["w"]
    p[[a0, a1, w0]] = 0.5, 0.25, 0.8
    d[[a0, a1, w0]] = 0.3, 0.2, 0.1
    D = propagated_density(nl, lib, p, d)
    y_xor, y_and = nl.outputs["y"]
    assert D[y_xor] == pytest.approx(0.3 + 0.1)
    assert D[y_and] == pytest.approx(0.8 * 0.2 + 0.25 * 0.1)


def test_propagated_energy_on_a_tree_equals_the_simulated_one_in_expectation(synth_lib):
    """Without reconvergence, with independent inputs changing one at a time (a random walk over the input bits),
    densities are the simulated toggle rates; with simultaneous changes propagation counts more."""
    from fames.hw.energy import energy_per_op
    from fames.hw.synth import synthesize

    src = ("module t(input [3:0] a, input [3:0] w, output [0:0] y);\n"
           " assign y = (a[0] & w[0]) ^ (a[1] | w[1]);\nendmodule\n")
    nl = synthesize(src, "t", synth_lib)
    rng = np.random.default_rng(0)
    flips = 1 << rng.integers(0, 8, 200_000)
    state = np.bitwise_xor.accumulate(np.concatenate([[0x5A], flips]))
    a, w = state & 15, state >> 4
    zd = energy_per_op(nl, None, a, w)
    pr = energy_per_op(nl, None, a, w, activity="propagated")
    assert pr.switching_fj == pytest.approx(zd.switching_fj, rel=0.02)
    assert pr.internal_fj == pytest.approx(zd.internal_fj, rel=0.05)
    a, w = rng.integers(0, 16, 50_000), rng.integers(0, 16, 50_000)  # every input changes at once
    assert energy_per_op(nl, None, a, w, activity="propagated").switching_fj > 1.2 * energy_per_op(
        nl, None, a, w).switching_fj

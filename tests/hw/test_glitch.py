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
    d = pin_delays(nl, nl.liberty, t, 1.0)[xor]
    # the B input changes later by the buffers' delays plus its own pin delay; the pulse passes when its width
    # reaches the XOR's smallest pin delay
    arrival_b = 0 if n_buffers == 0 else sum(
        pin_delays(nl, nl.liberty, t, 1.0)[i]["A"] for i, c in enumerate(nl.cells) if c.type == "BUF_X1")
    width = abs(arrival_b + d["B"] - d["A"])
    expect = 2 * changes if width >= min(d.values()) else 0
    assert tog[y] == expect
    assert tog[nl.inputs["a"][0]] == changes


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

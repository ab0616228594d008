"""Timing-aware (glitch-inclusive) toggle counts: every net's waveform over each operand transition, with the cells'
liberty delays and inertial pulse rejection.

For each of the N-1 transitions of an operand stream, all at once (numpy over transitions): a primary input switches
at its arrival time (the input driver's delay, from static timing); each output of a cell may change at every time
one of its inputs changes plus that input's delay to this output (the mean of the rise and fall NLDM delays of its
arcs at the input net's slew and this output net's load, rounded to ``resolution_ps``: a full adder's sum and carry
have their own); its value there is the output's function of the inputs as they are then. A pulse (a change undone by
the next change of the same net) shorter than the output's smallest pin delay is rejected (inertial delay), as the
cell would not pass it. Every remaining change counts: glitches included, so that array multipliers' spurious
transitions cost what they cost in silicon.
"""

from __future__ import annotations

import numpy as np

from fames.hw.liberty import Liberty
from fames.hw.netlist import CONST0, CONST1, Netlist
from fames.hw.timing import TimingReport


def pin_delays(netlist: Netlist, lib: Liberty, timing: TimingReport,
               resolution_ps: float) -> list[dict[str, dict[str, int]]]:
    """Per cell, per output pin, per input pin: the delay from the input to that output (its arcs at the output's
    own load) in units of ``resolution_ps`` (>= 1). A full adder's sum and carry have their own delays."""
    out: list[dict[str, dict[str, int]]] = []
    for c in netlist.cells:
        cell = lib.cells[c.type]
        per_out: dict[str, dict[str, int]] = {}
        for opin, onet in c.outputs.items():
            op = cell.outputs[opin]
            load = float(timing.load_ff[onet])
            d: dict[str, int] = {}
            for pin, inet in c.inputs.items():
                vals = [t.at(float(timing.slew_ns[inet]), load) for a in op.arcs if a.related_pin == pin
                        for t in (a.cell_rise, a.cell_fall) if t is not None]
                ns = float(np.mean(vals)) if vals else 0.0  # mean of the rise and fall delays of the pin's arcs
                d[pin] = max(1, round(max(0.0, ns) * 1000.0 / resolution_ps))
            per_out[opin] = d
        out.append(per_out)
    return out


def glitch_toggles(netlist: Netlist, lib: Liberty, values: np.ndarray, timing: TimingReport,
                   resolution_ps: float = 1.0) -> np.ndarray:
    """Toggles of every net summed over the transitions, glitches included: int64 ``(n_nets,)``.

    ``values``: zero-delay net values ``(n_nets, N)`` bool (:meth:`Netlist.net_values`); the waveform of each
    transition runs from the steady state of vector t-1 to that of vector t."""
    n_nets, n = values.shape
    steps = n - 1
    before, after = values[:, :-1], values[:, 1:]
    delays = pin_delays(netlist, lib, timing, resolution_ps)
    times: list[np.ndarray | None] = [None] * n_nets  # change times of each net (sorted ints)
    waves: list[np.ndarray | None] = [None] * n_nets  # (len(times) + 1, steps): value before, then after each
    toggles = np.zeros(n_nets, np.int64)
    for net in (CONST0, CONST1):
        times[net], waves[net] = np.zeros(0, np.int64), values[net, :1].repeat(steps)[None, :]
    for bits in netlist.inputs.values():
        for net in bits:
            if net > CONST1:
                t = max(0, round(float(timing.arrival_ns[net]) * 1000.0 / resolution_ps))
                times[net] = np.array([t], np.int64)
                waves[net] = np.stack([before[net], after[net]])
                toggles[net] = int((before[net] != after[net]).sum())
    for ci in netlist.order:
        c = netlist.cells[ci]
        fns = netlist.cell_functions(c.type)
        for opin, onet in c.outputs.items():
            d = delays[ci][opin]
            shifted = {pin: times[inet] + d[pin] for pin, inet in c.inputs.items()}  # type: ignore[operator]
            cand = np.unique(np.concatenate([np.zeros(0, np.int64), *shifted.values()]))
            # input values at every candidate time (row 0: before any change)
            env = {}
            for pin, inet in c.inputs.items():
                rows = np.concatenate([[0], np.searchsorted(shifted[pin], cand, side="right")])
                env[pin] = waves[inet][rows]  # type: ignore[index]
            env["__0__"] = np.zeros((len(cand) + 1, steps), bool)
            env["__1__"] = np.ones((len(cand) + 1, steps), bool)
            width = min(d.values()) if d else 1
            raw = np.broadcast_to(np.asarray(fns[opin](env), dtype=bool), (len(cand) + 1, steps))
            wave = _reject_pulses(raw, cand, width)
            times[onet], waves[onet] = cand, wave
            toggles[onet] = int((wave[1:] != wave[:-1]).sum())
    return toggles


def _reject_pulses(raw: np.ndarray, t: np.ndarray, width: int) -> np.ndarray:
    """``raw`` (rows: value before, then after each time in ``t``) with every pulse shorter than ``width``
    removed: a change whose next change follows within ``width`` is dropped together with that next change."""
    k, steps = raw.shape[0] - 1, raw.shape[1]
    if k < 2:
        return raw
    change = raw[1:] != raw[:-1]  # (k, steps): a change at t[i]
    nxt = np.full(steps, np.iinfo(np.int64).max)
    next_time = np.empty((k, steps), np.int64)
    for i in range(k - 1, -1, -1):  # time of the next change after row i's change
        next_time[i] = nxt
        nxt = np.where(change[i], t[i], nxt)
    pulse = change & (next_time - t[:, None] < width)
    if not pulse.any():
        return raw
    out = raw.copy()
    until = np.full(steps, -1, np.int64)  # end (time of the undoing change) of the pulse being suppressed
    base = raw[0].copy()
    for i in range(k):
        start = pulse[i] & (t[i] >= until)
        until = np.where(start, next_time[i], until)
        base = np.where(start, out[i], base)
        inside = t[i] < until
        out[i + 1] = np.where(inside, base, raw[i + 1])
    return out

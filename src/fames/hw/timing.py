"""Static timing analysis with the liberty NLDM tables (units: ns, fF).

Conventions (fixed, documented, part of the costing recipe):

* Net load = sum of the input-pin capacitances it fans out to, plus ``output_load_ff`` for each output-port bit it
  drives: :data:`OUTPUT_LOAD_FF` = 0 by default, as Design Compiler without ``set_load`` (the setting that ranks
  EvoApproxLib's published figures best, docs/results/hw_cost.md); :data:`MAC_LOAD_FF` (3.9 fF, about four minimum
  inverters) models the adder input a product bit drives in a MAC. With ``wire_load="liberty"`` every net also
  carries the wire capacitance of the liberty's ``default_wire_load`` model for its fanout (cell input pins plus
  output-port bits), as Design Compiler applies before layout; ``"none"`` (or a liberty without one): no wire.
* Primary inputs are driven by the library's smallest buffer (e.g. BUF_X1) fed an ideal
  :data:`DRIVER_INPUT_SLEW_NS` edge at t = 0 (like ``set_driving_cell``): the buffer's delay into the
  input net's load is part of the path and its transition is the input slew. With ``input_slew_ns``
  given instead, inputs arrive at t = 0 with that slew (no driver).
* Each timing arc maps input rise/fall to output rise/fall by its ``timing_sense`` (positive: same edge,
  negative: opposite, non-unate: both). Arrival = max over arcs (all ``when`` variants included); the
  output slew is the largest slew among the arcs (pessimistic). Tables interpolate bilinearly and
  extrapolate linearly; negative extrapolated delays/slews are clamped to 0.
* Critical path delay = latest arrival at any output-port bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fames.errors import HardwareError
from fames.hw.netlist import CONST0, CONST1, Netlist

OUTPUT_LOAD_FF = 0.0
MAC_LOAD_FF = 3.9
DRIVER_INPUT_SLEW_NS = 0.01
RISE, FALL = 0, 1


@dataclass
class PathStep:
    """One step of a timing path: the net reached, its edge and arrival (ns), via which cell/pin."""

    net: str
    edge: str  # "rise" | "fall"
    arrival_ns: float
    cell: str | None = None
    cell_type: str | None = None
    from_pin: str | None = None


@dataclass
class TimingReport:
    """Critical path delay (ns), the path (input to output), and per-net loads (fF) / slews (ns)."""

    delay_ns: float
    path: list[PathStep]
    load_ff: np.ndarray
    slew_ns: np.ndarray  # worst of rise/fall slew per net
    arrival_ns: np.ndarray  # worst of rise/fall arrival per net


WIRE_LOADS = ("none", "liberty")


def net_loads(netlist: Netlist, output_load_ff: float = OUTPUT_LOAD_FF, wire_load: str = "none") -> np.ndarray:
    """Total capacitive load of every net, fF: fanout pin capacitances + output-port loads (+ the wire-load model's
    capacitance for the net's fanout with ``wire_load="liberty"``)."""
    if wire_load not in WIRE_LOADS:
        raise HardwareError(f"wire_load must be one of {WIRE_LOADS}, not {wire_load!r}")
    lib = netlist._need_liberty("timing")
    load = np.zeros(netlist.n_nets)
    fanout = np.zeros(netlist.n_nets, dtype=np.int64)
    for c in netlist.cells:
        cell = lib.cells[c.type]
        for pin, n in c.inputs.items():
            load[n] += cell.inputs[pin].cap_ff
            fanout[n] += 1
    for bits in netlist.outputs.values():
        for n in bits:
            load[n] += output_load_ff
            fanout[n] += 1
    if wire_load == "liberty" and lib.wire_load is not None:
        load += np.array([lib.wire_load.cap_ff(f) for f in range(int(fanout.max()) + 1)])[fanout]
    load[CONST0] = load[CONST1] = 0.0
    return load


def input_drive(netlist: Netlist, load_ff: float) -> tuple[list[float], list[float]]:
    """``([rise, fall] arrival ns, [rise, fall] slew ns)`` of a primary input net with load ``load_ff``.

    The net is driven by the library's smallest buffer (else inverter) fed an ideal
    :data:`DRIVER_INPUT_SLEW_NS` edge at t = 0, like ``set_driving_cell`` in an STA tool.
    """
    lib = netlist._need_liberty("timing")
    drv = lib.buffer() or lib.inverter()
    arr, sl = [0.0, 0.0], [DRIVER_INPUT_SLEW_NS, DRIVER_INPUT_SLEW_NS]
    if drv is None:
        return arr, sl
    out = next(iter(drv.outputs.values()))
    got: list[list[float]] = [[], []]  # the driver's output transitions (its own, not floored by the ideal edge's)
    for arc in out.arcs:
        for e, d, t in ((RISE, arc.cell_rise, arc.rise_transition), (FALL, arc.cell_fall, arc.fall_transition)):
            if d is not None:
                arr[e] = max(arr[e], d.at(DRIVER_INPUT_SLEW_NS, load_ff))
            if t is not None:
                got[e].append(t.at(DRIVER_INPUT_SLEW_NS, load_ff))
    return arr, [max(0.0, *g) if g else s for g, s in zip(got, sl, strict=True)]  # extrapolated below 0: clamped


def analyze(
    netlist: Netlist, *, output_load_ff: float = OUTPUT_LOAD_FF, input_slew_ns: float | None = None,
    wire_load: str = "none",
) -> TimingReport:
    """Static timing analysis of a liberty-mapped netlist; see the module docstring for conventions."""
    lib = netlist._need_liberty("timing")
    n = netlist.n_nets
    load = net_loads(netlist, output_load_ff, wire_load)
    arr = np.full((n, 2), -np.inf)
    slew = np.zeros((n, 2))
    pred: dict[tuple[int, int], tuple[int, int, int, str]] = {}
    arr[CONST0] = arr[CONST1] = 0.0
    for bits in netlist.inputs.values():
        for b in bits:
            if b > CONST1:
                if input_slew_ns is not None:
                    arr[b], slew[b] = 0.0, input_slew_ns
                else:
                    arr[b], slew[b] = input_drive(netlist, float(load[b]))
    for ci in netlist.order:
        c = netlist.cells[ci]
        cell = lib.cells[c.type]
        for opin, onet in c.outputs.items():
            op = cell.outputs.get(opin)
            if op is None:
                continue
            cl = float(load[onet])
            best = [-np.inf, -np.inf]
            bslew = [0.0, 0.0]
            for arc in op.arcs:
                inet = c.inputs.get(arc.related_pin)
                if inet is None:
                    continue
                for oe, dtab, ttab in ((RISE, arc.cell_rise, arc.rise_transition),
                                       (FALL, arc.cell_fall, arc.fall_transition)):
                    if dtab is None:
                        continue
                    if arc.sense == "positive_unate":
                        ies = (oe,)
                    elif arc.sense == "negative_unate":
                        ies = (1 - oe,)
                    else:
                        ies = (RISE, FALL)
                    for ie in ies:
                        a_in = arr[inet, ie]
                        if a_in == -np.inf:
                            continue
                        s_in = float(slew[inet, ie])
                        t = a_in + max(0.0, dtab.at(s_in, cl))
                        if ttab is not None:
                            bslew[oe] = max(bslew[oe], ttab.at(s_in, cl))
                        if t > best[oe]:
                            best[oe] = t
                            pred[(onet, oe)] = (ci, inet, ie, arc.related_pin)
            for oe in (RISE, FALL):
                if best[oe] == -np.inf:  # no arc (e.g. constant function): treat as time 0
                    best[oe] = 0.0
                arr[onet, oe] = best[oe]
                slew[onet, oe] = max(0.0, bslew[oe])
    arr[arr == -np.inf] = 0.0
    end: tuple[int, int] | None = None
    worst = 0.0
    for bits in netlist.outputs.values():
        for b in bits:
            for e in (RISE, FALL):
                if arr[b, e] > worst or end is None:
                    worst, end = float(arr[b, e]), (b, e)
    path: list[PathStep] = []
    node = end
    while node is not None:
        netid, e = node
        p = pred.get(node)
        name = netlist.net_names[netid]
        edge = "rise" if e == RISE else "fall"
        if p is None:
            path.append(PathStep(name, edge, float(arr[netid, e])))
            node = None
        else:
            ci, inet, ie, pin = p
            cc = netlist.cells[ci]
            path.append(PathStep(name, edge, float(arr[netid, e]), cc.name, cc.type, pin))
            node = (inet, ie)
    path.reverse()
    if not np.all(np.isfinite(arr)):
        raise HardwareError(f"timing of {netlist.top!r}: non-finite arrival times")
    return TimingReport(worst, path, load, slew.max(axis=1), arr.max(axis=1))

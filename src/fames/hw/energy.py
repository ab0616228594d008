"""Energy per operation from zero-delay gate-level simulation (units: fJ, fF, ns, nW, V).

For a sequence of N operand pairs the netlist is simulated once per pair; each of the N-1 transitions
between consecutive operations contributes

* switching energy ``0.5 C V^2`` per toggle of each net driven by a cell, ``C`` its total load (fanout pin
  capacitances plus the output-port load, see :mod:`fames.hw.timing`), ``V`` the library's ``nom_voltage``;
  primary-input nets are the upstream driver's (``input_nets="none"``, the default: counting them put an energy
  floor under designs of a few cells, docs/results/hw_cost.md);
* internal energy from the liberty ``internal_power`` tables per output toggle: among the arcs whose
  related pin toggled in the same step and whose ``when`` condition holds after the step, the average of
  their ``rise_power`` (output rose) or ``fall_power`` (output fell) at the related pin's slew (from
  static timing) and the output net's load; if none matches, arcs of toggled related pins regardless of
  ``when``, then all arcs. Input-pin ("hidden") internal power is added per input toggle likewise;
* leakage ``sum(cell_leakage_power) x clock_ns``.

Zero-delay by default: glitches are not counted (they add 12-61 % on real multipliers, see DESIGN.md);
``activity="glitch"`` counts the toggles of a timing-aware simulation instead (:mod:`fames.hw.glitch`),
``activity="propagated"`` the transition densities of probabilistic propagation (:mod:`fames.hw.activity`).
Energies are averages per operation (per transition).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fames.errors import HardwareError
from fames.hw.activity import input_activity, propagated_density
from fames.hw.glitch import glitch_toggles
from fames.hw.liberty import BoolFn, Liberty, PowerArc, compile_function
from fames.hw.netlist import Netlist
from fames.hw.timing import TimingReport, analyze

DEFAULT_VECTORS = 4096
INPUT_NETS = ("all", "pins", "none")
INPUT_NETS_DEFAULT = "none"
ACTIVITIES = ("zero-delay", "glitch", "propagated")


# ------------------------------------------------------------------------------------------- streams


def uniform_stream(a_bits: int, w_bits: int, n: int = DEFAULT_VECTORS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` operand index pairs drawn uniformly and independently (int64 arrays)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << a_bits, n), rng.integers(0, 1 << w_bits, n)


def histogram_stream(hist: np.ndarray, n: int = DEFAULT_VECTORS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs drawn i.i.d. from a 2-D histogram over ``(a_index, w_index)`` (any non-negative counts)."""
    h = np.asarray(hist, dtype=float)
    if h.ndim != 2 or np.any(h < 0) or h.sum() <= 0:
        raise HardwareError(f"operand histogram must be 2-D, non-negative and non-zero (got shape {h.shape})")
    rng = np.random.default_rng(seed)
    flat = rng.choice(h.size, size=n, p=(h / h.sum()).ravel())
    return flat // h.shape[1], flat % h.shape[1]


def toggle_stream(a_bits: int, w_bits: int, rate: float, n: int = DEFAULT_VECTORS, seed: int = 0,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` operand index pairs whose bits each flip with probability ``rate`` from one operation to the next
    (independent Markov chains started uniform, so every bit is 1 half the time): temporally correlated operands,
    or the "toggle rate per clock" of vectorless power analysis (Design Compiler's default is 0.1). ``rate`` 0.5
    has the switching statistics of the uniform stream."""
    if not 0 < rate <= 1:
        raise HardwareError(f"toggle rate must lie in (0, 1] (got {rate})")
    rng = np.random.default_rng(seed)
    out = []
    for bits in (a_bits, w_bits):
        flips = rng.random((n, bits)) < rate
        flips[0] = rng.random(bits) < 0.5  # the first operand: uniform
        out.append(np.bitwise_xor.accumulate((flips.astype(np.int64) << np.arange(bits)).sum(1)))
    return out[0], out[1]


def weight_stationary(a: np.ndarray, w: np.ndarray, hold: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold each weight for ``hold`` consecutive operations (activations keep changing every operation)."""
    if hold < 1:
        raise HardwareError(f"hold must be >= 1 (got {hold})")
    w = np.asarray(w)
    return np.asarray(a), w[(np.arange(len(w)) // hold)]


def make_stream(
    kind: str, a_bits: int, w_bits: int, n: int = DEFAULT_VECTORS, seed: int = 0, hold: int = 1,
    hist: np.ndarray | None = None, toggle_rate: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Operand stream ``kind`` in {"uniform", "histogram", "toggle"} (``toggle_rate``: :func:`toggle_stream`), then
    weight-stationary with ``hold``."""
    if kind == "uniform":
        a, w = uniform_stream(a_bits, w_bits, n, seed)
    elif kind == "toggle":
        a, w = toggle_stream(a_bits, w_bits, toggle_rate, n, seed)
    elif kind == "histogram":
        if hist is None:
            raise HardwareError("stream='histogram' needs hist=<2-D array over (a_index, w_index)>")
        if np.shape(hist) != (1 << a_bits, 1 << w_bits):
            raise HardwareError(f"histogram shape {np.shape(hist)} != {(1 << a_bits, 1 << w_bits)}")
        a, w = histogram_stream(hist, n, seed)
    else:
        raise HardwareError(f"unknown operand stream {kind!r}; use 'uniform', 'histogram' or 'toggle'")
    return weight_stationary(a, w, hold)


# -------------------------------------------------------------------------------------------- energy


@dataclass
class EnergyBreakdown:
    """Energy per operation, fJ, split by origin; ``toggles_per_op`` counts net toggles."""

    switching_fj: float
    internal_fj: float
    leakage_fj: float
    clock_ns: float
    n_ops: int
    toggles_per_op: float

    @property
    def total_fj(self) -> float:
        return self.switching_fj + self.internal_fj + self.leakage_fj

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_fj": self.total_fj}


def _arc_energy(arcs: list[PowerArc], slew: list[float], load: float) -> tuple[np.ndarray, np.ndarray]:
    er = np.array([a.rise.at(s, load) if a.rise is not None else 0.0 for a, s in zip(arcs, slew, strict=True)])
    ef = np.array([a.fall.at(s, load) if a.fall is not None else 0.0 for a, s in zip(arcs, slew, strict=True)])
    return er, ef


def energy_per_op(
    netlist: Netlist,
    liberty: Liberty | None,
    a_codes: np.ndarray,
    w_codes: np.ndarray,
    *,
    clock_ns: float = 1.0,
    timing: TimingReport | None = None,
    input_nets: str = INPUT_NETS_DEFAULT,
    activity: str = "zero-delay",
    resolution_ps: float = 1.0,
) -> EnergyBreakdown:
    """Average energy per operation (fJ) of ``netlist`` over the operand sequence ``(a_codes, w_codes)``.

    ``input_nets``: what the switching of nets no cell drives (primary inputs) counts: ``"all"`` (their pin loads
    and any output-port load they reach directly), ``"pins"`` (the cells' input pins only: an output wired straight
    to an input is the upstream driver's load) or ``"none"`` (the upstream driver pays everything). ``activity``:
    toggles counted by a zero-delay simulation, a timing-aware one (``"glitch"``, :mod:`fames.hw.glitch`) or taken
    from probabilistic propagation of the inputs' activity (``"propagated"``, :mod:`fames.hw.activity`); for the
    latter two the internal energy per toggle of each net is the zero-delay average (the mean of its arcs if it had
    none)."""
    if input_nets not in INPUT_NETS:
        raise HardwareError(f"input_nets={input_nets!r} is not one of {INPUT_NETS}")
    if activity not in ACTIVITIES:
        raise HardwareError(f"activity={activity!r} is not one of {ACTIVITIES}")
    lib = liberty or netlist.liberty
    if lib is None:
        raise HardwareError(f"energy of {netlist.top!r} needs a liberty-mapped netlist")
    a_codes, w_codes = np.asarray(a_codes), np.asarray(w_codes)
    if len(a_codes) != len(w_codes) or len(a_codes) < 2:
        raise HardwareError("energy needs two operand sequences of equal length >= 2")
    timing = timing or analyze(netlist)
    load, slew = timing.load_ff, timing.slew_ns
    vdd = lib.nom_voltage
    vals = netlist.net_values({"a": a_codes, "w": w_codes})
    after = vals[:, 1:]
    tog = after != vals[:, :-1]
    steps = tog.shape[1]
    tcount = tog.sum(axis=1)
    if activity == "glitch":
        gcount = glitch_toggles(netlist, lib, vals, timing, resolution_ps)
    elif activity == "propagated":
        pd = np.array([input_activity(v) for v in vals])  # inputs' probability and density from the stream
        gcount = propagated_density(netlist, lib, pd[:, 0], pd[:, 1]) * steps
    else:
        gcount = tcount
    scale = np.where(tcount > 0, gcount / np.maximum(tcount, 1), 0.0)  # timing-aware toggles per zero-delay one
    if input_nets != "all":  # nets no cell drives: primary inputs
        load = load.copy()
        driven = np.zeros(len(load), bool)
        for c in netlist.cells:
            driven[list(c.outputs.values())] = True
        if input_nets == "none":
            load[~driven] = 0.0
        else:
            pins = np.zeros(len(load))
            for c in netlist.cells:
                cell = lib.cells[c.type]
                for pin, n in c.inputs.items():
                    pins[n] += cell.inputs[pin].cap_ff
            load[~driven] = pins[~driven]
    switching = 0.5 * vdd * vdd * float((load * gcount).sum())
    when_cache: dict[str, BoolFn] = {}
    internal = 0.0
    ones = np.ones(steps, dtype=bool)
    for c in netlist.cells:
        cell = lib.cells[c.type]
        env: dict[str, Any] | None = None
        for pin, onet in c.outputs.items():
            op = cell.outputs.get(pin)
            if op is None or not op.power or gcount[onet] == 0:
                continue
            arcs = [a for a in op.power if a.related_pin is None or a.related_pin in c.inputs]
            if not arcs:
                continue
            if tcount[onet] == 0:  # only glitches: the mean arc energy per toggle
                slews = [float(slew[c.inputs[a.related_pin]]) if a.related_pin else 0.0 for a in arcs]
                er, ef = _arc_energy(arcs, slews, float(load[onet]))
                internal += float(gcount[onet]) * float((er + ef).mean()) / 2
                continue
            if env is None and any(a.when for a in arcs):
                env = {p: after[n] for p, n in c.inputs.items()}
                env.update({"__0__": ~ones, "__1__": ones})
            rel = np.stack([tog[c.inputs[a.related_pin]] if a.related_pin else ones for a in arcs])
            cond = np.stack([
                _when(a.when, when_cache, env, steps) if a.when else ones for a in arcs
            ])
            slews = [float(slew[c.inputs[a.related_pin]]) if a.related_pin else 0.0 for a in arcs]
            er, ef = _arc_energy(arcs, slews, float(load[onet]))
            ot = tog[onet]
            rose = after[onet]
            e_arc = np.where(rose[None, :], er[:, None], ef[:, None])  # (arcs, steps)
            m = rel & cond
            cnt = m.sum(axis=0)
            m = np.where((cnt == 0)[None, :], rel, m)
            cnt = m.sum(axis=0)
            m = np.where((cnt == 0)[None, :], True, m)
            cnt = m.sum(axis=0)
            per_step = (m * e_arc).sum(axis=0) / cnt
            internal += float(per_step[ot].sum()) * float(scale[onet])
        for pin, inet in c.inputs.items():
            ip = cell.inputs.get(pin)
            if ip is None or not ip.power or gcount[inet] == 0:
                continue
            er, ef = _arc_energy(ip.power, [float(slew[inet])] * len(ip.power), 0.0)
            if tcount[inet] == 0:
                internal += float(gcount[inet]) * float((er.mean() + ef.mean()) / 2)
                continue
            rose = after[inet][tog[inet]]
            internal += float(np.where(rose, er.mean(), ef.mean()).sum()) * float(scale[inet])
    leak = netlist.leakage_nw() * clock_ns * 1e-3  # nW x ns = 1e-18 J = 1e-3 fJ
    return EnergyBreakdown(switching / steps, internal / steps, leak, clock_ns, steps,
                           float(gcount.sum()) / steps)


def _when(text: str, cache: dict[str, BoolFn], env: dict[str, Any] | None, steps: int) -> np.ndarray:
    fn = cache.get(text)
    if fn is None:
        fn = cache[text] = compile_function(text)
    try:
        out = fn(env or {})
    except KeyError:  # condition on a pin we do not know: ignore it
        return np.ones(steps, dtype=bool)
    return np.broadcast_to(np.asarray(out, dtype=bool), (steps,))

"""Switching activity by probabilistic propagation, as Design Compiler estimates power without a simulation file.

Every net gets a static probability ``P`` (of being 1) and a transition density ``D`` (expected toggles per
operation). Primary inputs take both from the operand stream (what an activity file of the inputs would say); a
cell output, in topological order, gets ``P(y) = sum_patterns f(pattern) prod_i P_i^{x_i} (1 - P_i)^{1 - x_i}`` and
Najm's transition density ``D(y) = sum_i P(dy/dx_i) D(x_i)``, where ``P(dy/dx_i)`` is the probability that the
other inputs let ``x_i`` through (the Boolean difference), all cell inputs taken as independent. Unlike a
zero-delay simulation it ignores the correlation of reconvergent signals and counts simultaneous input
changes once each, so deep logic (partial-product trees) gets more toggles than it has; docs/results/hw_cost.md
measures how this ranks EvoApproxLib's published power.
"""

from __future__ import annotations

import itertools

import numpy as np

from fames.errors import HardwareError
from fames.hw.liberty import Liberty, truth_table
from fames.hw.netlist import CONST1, Netlist


def input_activity(values: np.ndarray) -> tuple[float, float]:
    """``(P, D)`` of one net from its values over the operand sequence (bool ``(N,)``, N >= 2)."""
    v = np.asarray(values, dtype=bool)
    return float(v.mean()), float((v[1:] != v[:-1]).mean())


def propagated_density(netlist: Netlist, liberty: Liberty, p_in: np.ndarray, d_in: np.ndarray) -> np.ndarray:
    """Transition density (toggles per operation) of every net ``(n_nets,)``.

    ``p_in``, ``d_in``: static probability and density of every net ``(n_nets,)``; only the primary-input entries
    are read (constants are 0 / 1 with density 0)."""
    n = len(netlist.net_names)
    if np.shape(p_in) != (n,) or np.shape(d_in) != (n,):
        raise HardwareError(f"propagated_density: p_in and d_in must have one entry per net ({n})")
    P, D = np.zeros(n), np.zeros(n)
    P[CONST1] = 1.0
    for bits in netlist.inputs.values():
        P[bits], D[bits] = np.asarray(p_in)[bits], np.asarray(d_in)[bits]
    tables: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for ci in netlist.order:
        c = netlist.cells[ci]
        cell = liberty.cells[c.type]
        pins = list(cell.inputs)
        p = np.array([P[c.inputs[q]] for q in pins])
        d = np.array([D[c.inputs[q]] for q in pins])
        for opin, onet in c.outputs.items():
            key = (c.type, opin)
            if key not in tables:  # truth table and the input patterns (pin 0 = most significant)
                pats = np.array(list(itertools.product([0, 1], repeat=len(pins))), dtype=bool).reshape(-1, len(pins))
                tables[key] = (np.array(truth_table(cell.outputs[opin].tree, pins), dtype=bool), pats)
            tt, pats = tables[key]
            w = np.where(pats, p, 1 - p)  # (patterns, pins)
            P[onet] = float(np.prod(w, axis=1) @ tt)
            dens = 0.0
            for i in range(len(pins)):
                if d[i] == 0:
                    continue
                flip = pats.copy()
                flip[:, i] = ~flip[:, i]
                idx = flip @ (1 << np.arange(len(pins))[::-1])
                sens = tt != tt[idx]  # the output follows x_i for these settings of the others
                others = np.prod(np.delete(w, i, axis=1), axis=1)
                dens += d[i] * float(others[~pats[:, i]] @ sens[~pats[:, i]])
            D[onet] = dens
    return D

"""Cartesian genetic programming seeded with an exact multiplier (the EvoApproxLib approach).

The genome is a :class:`~fames.appmul.synth.network.Network`: per node a function gene and two connection genes
(any earlier signal: one row, unlimited levels-back), plus one connection gene per output bit. A (1 + lambda)
evolution strategy keeps one parent; each child is the parent after

* single-active-gene mutation: genes are mutated at random until one of them belongs to an active node or to an
  output (mutations of inactive genes ride along as neutral drift), or, with probability ``deactivate``,
* node deactivation: an active node becomes a wire to one of its fan-ins or a constant.

A child is feasible when its error (the error model's metric) is ``<= max_error``; the cheapest feasible child
replaces the parent when it costs no more (neutral moves keep the search drifting). Every strict improvement of
the parent is a design.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fames.appmul.synth.error import ErrorModel
from fames.appmul.synth.lac import Step
from fames.appmul.synth.network import ARITY, BUF, GATE_EQUIVALENTS, NOT, ONE_FN, TWO_INPUT, ZERO_FN, Network

MUTABLE_FUNCTIONS = (*TWO_INPUT, NOT, BUF)
PROXIES = ("area", "pdp")  # the two-input gates, NOT and BUF (constants come by deactivation)


def _mutate(net: Network, rng: np.random.Generator, deactivate: float) -> Network:
    child = net.copy()
    n_in, nodes, outs = child.n_inputs, child.nodes, child.outputs
    active = set(child.active())
    if active and rng.random() < deactivate:
        k = int(rng.choice(sorted(active)))
        fn, x, y = nodes[k]
        choice = int(rng.integers(ARITY[fn] + 2))
        nodes[k] = (ZERO_FN, 0, 0) if choice == 0 else (ONE_FN, 0, 0) if choice == 1 else (BUF, (x, y)[choice - 2], 0)
        return child
    genes = 3 * len(nodes) + len(outs)
    while True:
        g = int(rng.integers(genes))
        if g >= 3 * len(nodes):  # an output gene: always active
            outs[g - 3 * len(nodes)] = int(rng.integers(n_in + len(nodes)))
            return child
        k, part = divmod(g, 3)
        fn, x, y = nodes[k]
        if part == 0:
            fn = int(rng.choice(MUTABLE_FUNCTIONS))
        elif part == 1:
            x = int(rng.integers(n_in + k))
        else:
            y = int(rng.integers(n_in + k))
        nodes[k] = (fn, x, y)
        if k in active and part <= ARITY[fn]:
            return child


def cgp(
    net: Network,
    model: ErrorModel,
    max_error: float,
    gate_cost: dict[int, float] | None = None,
    seed: int = 0,
    generations: int | None = None,
    time_s: float | None = 60.0,
    offspring: int = 4,
    deactivate: float = 0.1,
    on_step: Callable[[Step], None] | None = None,
    proxy: str = "area",
) -> list[Step]:
    """Evolve from ``net`` (e.g. an exact multiplier) for ``generations`` or ``time_s`` seconds, whichever ends
    first; returns the parent at every strict improvement (the first entry is ``net`` itself). ``proxy``: the cost
    minimized, ``"area"`` (sum of gate costs) or ``"pdp"`` (:meth:`Network.pdp_proxy`)."""
    if proxy not in PROXIES:
        raise ValueError(f"unknown cost proxy {proxy!r}; choose one of {PROXIES}")
    if generations is None and time_s is None:
        raise ValueError("cgp needs a generation or time limit")
    gc = gate_cost or GATE_EQUIVALENTS
    rng = np.random.default_rng(seed)
    inputs = net.input_vectors()

    def evaluate(n: Network) -> tuple[float, float]:
        act = n.active()
        vals = n.simulate(act, inputs)
        err = model(n.output_values(vals))
        return err, n.pdp_proxy(vals, act, gc) if proxy == "pdp" else n.cost(gc, act)

    parent = net.copy()
    p_err, p_cost = evaluate(parent)
    steps = [Step(parent.compact(), p_err, p_cost)]
    t0, gen = time.perf_counter(), 0
    while (generations is None or gen < generations) and (time_s is None or time.perf_counter() - t0 < time_s):
        gen += 1
        best = None
        for _ in range(offspring):
            child = _mutate(parent, rng, deactivate)
            err, cost = evaluate(child)
            if err <= max_error and (best is None or cost < best[2]):
                best = (child, err, cost)
        if best is not None and best[2] <= p_cost:
            improved = best[2] < p_cost - 1e-9
            parent, p_err, p_cost = best
            if improved:
                steps.append(Step(parent.compact(), p_err, p_cost))
                if on_step is not None:
                    on_step(steps[-1])
    return steps

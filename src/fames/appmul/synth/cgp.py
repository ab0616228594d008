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
from dataclasses import dataclass

import numpy as np

from fames.appmul.synth.error import ErrorModel
from fames.appmul.synth.lac import Step
from fames.appmul.synth.network import (
    ARITY,
    BUF,
    GATE_EQUIVALENTS,
    NOT,
    ONE_FN,
    TWO_INPUT,
    ZERO_FN,
    Network,
    apply,
    pdp_proxy,
    word_values,
)

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
    parent = _Evaluated.full(net.copy(), model, gc, proxy)
    steps = [Step(parent.net.compact(), parent.error, parent.cost)]
    t0, gen = time.perf_counter(), 0
    while (generations is None or gen < generations) and (time_s is None or time.perf_counter() - t0 < time_s):
        gen += 1
        best = None
        for _ in range(offspring):
            child = parent.child(_mutate(parent.net, rng, deactivate), model, gc, proxy)
            if child.error <= max_error and (best is None or child.cost < best.cost):
                best = child
        if best is not None and best.cost <= parent.cost:
            improved = best.cost < parent.cost - 1e-9
            parent = best
            if improved:
                steps.append(Step(parent.net.compact(), parent.error, parent.cost))
                if on_step is not None:
                    on_step(steps[-1])
    return steps


@dataclass
class _Evaluated:
    """A network with its signal values, their 1-counts, its unsigned output words ``(2**n_inputs,)`` int64, error
    and cost; :meth:`child` evaluates a mutant incrementally (only signals whose inputs changed are re-simulated,
    only output bits whose value changed are re-read)."""

    net: Network
    active: list[int]
    vals: list[int | None]
    ones: list[int]
    word: np.ndarray
    error: float
    cost: float

    @classmethod
    def full(cls, net: Network, model: ErrorModel, gc: dict[int, float], proxy: str) -> _Evaluated:
        act = net.active()
        vals = net.simulate(act)
        ones = [0 if v is None else v.bit_count() for v in vals]
        word = word_values([vals[o] for o in net.outputs], net.n_patterns, False).astype(np.int32)  # type: ignore[misc]
        return cls._scored(net, act, vals, ones, word, model, gc, proxy)

    @classmethod
    def _scored(cls, net: Network, act: list[int], vals: list[int | None], ones: list[int], word: np.ndarray,
                model: ErrorModel, gc: dict[int, float], proxy: str) -> _Evaluated:
        n = net.n_inputs
        signed = word - (((word >> (n - 1)) & 1) << n) if net.signed else word
        cost = pdp_proxy(net, act, ones, gc) if proxy == "pdp" else net.cost(gc, act)
        return cls(net, act, vals, ones, word, model(signed), cost)

    def child(self, net: Network, model: ErrorModel, gc: dict[int, float], proxy: str) -> _Evaluated:
        n_in, mask = net.n_inputs, (1 << net.n_patterns) - 1
        act = net.active()
        was = set(self.active)
        vals, ones, old = list(self.vals), list(self.ones), self.net.nodes
        changed: set[int] = set()
        for k in act:
            fn, x, y = node = net.nodes[k]
            a = ARITY[fn]
            if node == old[k] and k in was and not ((a and x in changed) or (a == 2 and y in changed)):
                continue  # the same function of unchanged inputs
            s = n_in + k
            v = apply(fn, vals[x] if a else 0, vals[y] if a == 2 else 0, mask)  # type: ignore[arg-type]
            if v != self.vals[s]:
                changed.add(s)
                vals[s], ones[s] = v, v.bit_count()
        word = self.word
        for j, (o, po) in enumerate(zip(net.outputs, self.net.outputs, strict=True)):
            if (o != po or o in changed) and vals[o] != self.vals[po]:
                diff = np.subtract(_bits(vals[o], net.n_patterns), _bits(self.vals[po], net.n_patterns),
                                   dtype=np.int32)
                word = word + (diff << j)  # a new array: the parent's word stays as it was
        return _Evaluated._scored(net, act, vals, ones, word, model, gc, proxy)


def _bits(v: int | None, n: int) -> np.ndarray:
    """Bit vector ``v`` over ``n`` patterns as uint8 0/1."""
    if not v:
        return np.zeros(n, np.uint8)
    raw = np.frombuffer(v.to_bytes((n + 7) // 8, "little"), np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little")

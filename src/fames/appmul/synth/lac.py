"""Local approximate changes (the ALSRAC / SASIMI line), applied greedily by cost saved per error added.

Each step looks at every active gate ``n`` of the current network and its candidate replacements:

* the constants 0 and 1;
* a wire to another signal ``m`` or its complement (``m`` outside the fan-out cone of ``n`` and outside the
  logic that only ``n`` uses);
* resubstitution ``n := f(m1, m2)`` for ``f`` in AND/OR/XOR/ANDN over the signals closest to ``n`` (the function
  is correct wherever ``n``'s new value agrees with its old one: the care set is every pattern it still gets
  right, and the error model decides whether the rest matters).

The saving of a replacement is the cost of ``n``'s maximum fan-out-free cone (the gates only ``n`` needs), minus
the cost of the new gate. Candidates are screened by saving per changed pattern (the Hamming distance of the old
and new values of ``n``), the best ``exact_evaluations`` are simulated through ``n``'s fan-out cone and scored by
the error model exactly (the next batch when none fits), and the one with the largest saving per error added
within the bound is applied.
Every network passed on the way is a design.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fames.appmul.synth.error import ErrorModel
from fames.appmul.synth.network import (
    AND,
    ANDN,
    ARITY,
    BUF,
    GATE_EQUIVALENTS,
    NOT,
    ONE_FN,
    OR,
    XOR,
    ZERO_FN,
    Network,
    apply,
    word_values,
)

RESUB_FUNCTIONS = (AND, OR, XOR, ANDN)


@dataclass
class Step:
    """One design on the path: its network, error (the model's metric) and proxy cost."""

    network: Network
    error: float
    cost: float


def reorder(net: Network) -> Network:
    """The same network with its active nodes in a valid topological order (after a wire to a later signal)."""
    n_in = net.n_inputs
    order: list[int] = []
    state: dict[int, int] = {}
    for o in net.outputs:
        stack = [(o, False)]
        while stack:
            s, done = stack.pop()
            if s < n_in:
                continue
            if done:
                if state.get(s) != 2:
                    state[s] = 2
                    order.append(s)
                continue
            if s in state:
                continue
            state[s] = 1
            stack.append((s, True))
            fn, x, y = net.nodes[s - n_in]
            stack.extend((arg, False) for arg in (x, y)[: ARITY[fn]])
    new = {i: i for i in range(n_in)}
    nodes = []
    for s in order:
        fn, x, y = net.nodes[s - n_in]
        a = ARITY[fn]
        nodes.append((fn, new[x] if a else 0, new[y] if a == 2 else 0))
        new[s] = n_in + len(nodes) - 1
    return Network(net.a_bits, net.w_bits, net.signed, nodes, [new[o] for o in net.outputs])


class _State:
    """Values, fan-outs and reference counts of the current network (all nodes active)."""

    def __init__(self, net: Network, model: ErrorModel, gate_cost: dict[int, float]) -> None:
        self.net, self.model, self.gc = net, model, gate_cost
        self.n_in = net.n_inputs
        self.mask = (1 << net.n_patterns) - 1
        self.vals: list[int] = net.simulate()  # type: ignore[assignment]
        n_sig = self.n_in + len(net.nodes)
        self.fanout: list[list[int]] = [[] for _ in range(n_sig)]
        self.ref = [0] * n_sig
        for k, (fn, x, y) in enumerate(net.nodes):
            for arg in (x, y)[: ARITY[fn]]:
                self.fanout[arg].append(self.n_in + k)
                self.ref[arg] += 1
        for o in net.outputs:
            self.ref[o] += 1
        self.error = model(word_values([self.vals[o] for o in net.outputs], net.n_patterns, net.signed))
        self.cost = net.cost(gate_cost, range(len(net.nodes)))

    def fanins(self, s: int) -> tuple[int, ...]:
        fn, x, y = self.net.nodes[s - self.n_in]
        return (x, y)[: ARITY[fn]]

    def mffc(self, s: int) -> tuple[float, set[int]]:
        """Cost and signals of the gates that only ``s`` needs (``s`` included)."""
        ref, cone, cost = self.ref, {s}, 0.0
        stack, touched = [s], []
        while stack:
            t = stack.pop()
            cost += self.gc[self.net.nodes[t - self.n_in][0]]
            for f in self.fanins(t):
                if f >= self.n_in:
                    ref[f] -= 1
                    touched.append(f)
                    if ref[f] == 0:
                        cone.add(f)
                        stack.append(f)
        for f in touched:
            ref[f] += 1
        return cost, cone

    def tfo(self, s: int) -> list[int]:
        """Signals in the fan-out cone of ``s`` (``s`` excluded), ascending (topological)."""
        seen: set[int] = set()
        stack = list(self.fanout[s])
        while stack:
            t = stack.pop()
            if t not in seen:
                seen.add(t)
                stack.extend(self.fanout[t])
        return sorted(seen)

    def error_with(self, s: int, value: int, cone: list[int]) -> float:
        """The model's error when signal ``s`` takes ``value`` (its fan-out cone re-simulated)."""
        vals = {s: value}
        nodes, n_in, mask, base = self.net.nodes, self.n_in, self.mask, self.vals
        for t in cone:
            fn, x, y = nodes[t - n_in]
            a = ARITY[fn]
            vx = vals.get(x, base[x]) if a else 0
            vy = vals.get(y, base[y]) if a == 2 else 0
            vals[t] = apply(fn, vx, vy, mask)
        outs = [vals.get(o, base[o]) for o in self.net.outputs]
        return self.model(word_values(outs, self.net.n_patterns, self.net.signed))


def _candidates(st: _State, s: int, divisors: int) -> Iterator[tuple[float, int, tuple[int, int, int], float]]:
    """``(saving, hamming, replacement node, new value)`` for gate signal ``s``."""
    saving, mffc = st.mffc(s)
    v, mask, gc = st.vals[s], st.mask, st.gc
    yield saving, v.bit_count(), (ZERO_FN, 0, 0), 0
    yield saving, (v ^ mask).bit_count(), (ONE_FN, 0, 0), mask
    banned = set(st.tfo(s)) | mffc
    near = []
    for m in range(len(st.vals)):
        if m in banned or m == s:
            continue
        d = (v ^ st.vals[m]).bit_count()
        near.append((d, m))
        near.append((st.mask.bit_count() - d, -m - 1))  # the complement of m
    near.sort()
    for d, m in near[:divisors]:
        if m >= 0:
            yield saving, d, (BUF, m, 0), st.vals[m]
        else:
            yield saving - gc[NOT], d, (NOT, -m - 1, 0), st.vals[-m - 1] ^ mask
    plain = sorted({m for _, m in near[: 2 * divisors] if m >= 0})[:divisors]
    for i, m1 in enumerate(plain):
        for m2 in plain[i + 1:]:
            for fn in RESUB_FUNCTIONS:
                for x, y in ((m1, m2), (m2, m1)) if fn == ANDN else ((m1, m2),):
                    nv = apply(fn, st.vals[x], st.vals[y], mask)
                    yield saving - gc[fn], (v ^ nv).bit_count(), (fn, x, y), nv


def lac(
    net: Network,
    model: ErrorModel,
    max_error: float,
    gate_cost: dict[int, float] | None = None,
    exact_evaluations: int | None = None,
    max_evaluations: int = 4000,
    divisors: int = 8,
    time_s: float | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Greedy local approximate changes from ``net`` while the error stays ``<= max_error``; every step's design.

    ``gate_cost``: cost per function code (default :data:`GATE_EQUIVALENTS`, or areas/energies from a liberty).
    Candidates are simulated ``exact_evaluations`` at a time, best screened first, until one fits the bound (at
    most ``max_evaluations`` per step); default: all of them up to 12 input bits (cheap there), else 64.
    """
    gc = gate_cost or GATE_EQUIVALENTS
    small = net.n_inputs <= 12
    batch = exact_evaluations or (1 << 30 if small else 64)
    limit = 1 << 30 if exact_evaluations is None and small else max_evaluations
    st = _State(reorder(net), model, gc)
    steps = [Step(st.net, st.error, st.cost)]
    t0 = time.perf_counter()
    while time_s is None or time.perf_counter() - t0 < time_s:
        pool = []
        for k in range(len(st.net.nodes)):
            s = st.n_in + k
            for saving, ham, repl, nv in _candidates(st, s, divisors):
                if saving > 1e-9:
                    pool.append((saving / (ham + 1), saving, s, repl, nv))
        pool.sort(key=lambda c: -c[0])
        best, best_score = None, -1.0
        for start in range(0, min(len(pool), limit), batch):  # the next batch when none fits
            for _, saving, s, repl, nv in pool[start : start + batch]:
                err = st.error_with(s, nv, st.tfo(s))
                if err > max_error:
                    continue
                score = saving / max(err - st.error, 1e-12)
                if score > best_score:
                    best, best_score = (s, repl), score
            if best is not None:
                break
        if best is None:
            break
        s, repl = best
        nodes = list(st.net.nodes)
        nodes[s - st.n_in] = repl
        new = reorder(Network(net.a_bits, net.w_bits, net.signed, nodes, list(st.net.outputs)))
        st = _State(new, model, gc)
        steps.append(Step(st.net, st.error, st.cost))
        if on_step is not None:
            on_step(steps[-1])
    return steps

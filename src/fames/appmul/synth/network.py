"""A multiplier as a flat list of two-input gates, simulated bit-parallel on every operand pair at once.

Signals are numbered: ``0 .. a_bits-1`` are the bits of ``a`` (LSB first), then ``w_bits`` bits of ``w``, then one
signal per node. Node ``k`` is ``(fn, x, y)`` with fan-ins ``x, y`` numbered below its own signal (a DAG in
topological order, the Cartesian-GP layout with unlimited levels-back); one-input functions ignore ``y``. The
output word (``a_bits + w_bits`` bits, LSB first) names a signal per bit.

Simulation packs the ``2**(a_bits + w_bits)`` operand pairs into one Python integer per signal (bit ``p`` is pair
``p = i * 2**w_bits + j`` with ``i`` the bit pattern of ``a`` and ``j`` that of ``w``, the LUT order of
:mod:`fames.appmul.core`): big-integer ``& | ^`` run at memory speed and a 4x4 pair (256 bits) costs a machine word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fames.appmul.circuit import ONE, ZERO, Circuit
from fames.errors import AppMulError

# function codes; NOT/BUF read x only, constants read nothing
AND, OR, XOR, NAND, NOR, XNOR, ANDN, ORN, NOT, BUF, ZERO_FN, ONE_FN = range(12)
FUNCTIONS = ("and", "or", "xor", "nand", "nor", "xnor", "andn", "orn", "not", "buf", "zero", "one")
TWO_INPUT = (AND, OR, XOR, NAND, NOR, XNOR, ANDN, ORN)
ARITY = {**{f: 2 for f in TWO_INPUT}, NOT: 1, BUF: 1, ZERO_FN: 0, ONE_FN: 0}

# a generic proxy in NAND2 equivalents (our own round figures, not a cell library's): the engine's default cost
GATE_EQUIVALENTS = {AND: 1.33, OR: 1.33, XOR: 2.0, NAND: 1.0, NOR: 1.0, XNOR: 2.0, ANDN: 1.33, ORN: 1.33,
                    NOT: 0.67, BUF: 0.0, ZERO_FN: 0.0, ONE_FN: 0.0}


# relative gate delays (NAND2 = 1; our own round figures) for the depth term of the PDP proxy
GATE_DELAYS = {AND: 1.3, OR: 1.3, XOR: 2.0, NAND: 1.0, NOR: 1.2, XNOR: 2.0, ANDN: 1.5, ORN: 1.5, NOT: 0.6, BUF: 0.0,
               ZERO_FN: 0.0, ONE_FN: 0.0}


def apply(fn: int, x: int, y: int, mask: int) -> int:
    """Value of function ``fn`` on bit vectors ``x``, ``y`` (Python ints; ``mask`` = all patterns set)."""
    if fn == AND:
        return x & y
    if fn == OR:
        return x | y
    if fn == XOR:
        return x ^ y
    if fn == NAND:
        return (x & y) ^ mask
    if fn == NOR:
        return (x | y) ^ mask
    if fn == XNOR:
        return x ^ y ^ mask
    if fn == ANDN:
        return x & (y ^ mask)
    if fn == ORN:
        return x | (y ^ mask)
    if fn == NOT:
        return x ^ mask
    if fn == BUF:
        return x
    return 0 if fn == ZERO_FN else mask


@dataclass
class Network:
    """Gate list of an ``a_bits x w_bits`` multiplier (see the module docstring for the numbering)."""

    a_bits: int
    w_bits: int
    signed: bool
    nodes: list[tuple[int, int, int]] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    @property
    def n_inputs(self) -> int:
        return self.a_bits + self.w_bits

    @property
    def n_patterns(self) -> int:
        return 1 << self.n_inputs

    def copy(self) -> Network:
        return Network(self.a_bits, self.w_bits, self.signed, list(self.nodes), list(self.outputs))

    def check(self) -> None:
        """Raise :class:`AppMulError` unless every fan-in and output names an earlier signal."""
        n_in = self.n_inputs
        for k, (fn, x, y) in enumerate(self.nodes):
            if not 0 <= fn < len(FUNCTIONS):
                raise AppMulError(f"network node {k}: unknown function code {fn}")
            for arg in (x, y)[: ARITY[fn]]:
                if not 0 <= arg < n_in + k:
                    raise AppMulError(f"network node {k}: fan-in {arg} is not an earlier signal")
        if len(self.outputs) != self.n_inputs:
            raise AppMulError(f"network has {len(self.outputs)} output bits, expected {self.n_inputs}")
        if any(not 0 <= o < n_in + len(self.nodes) for o in self.outputs):
            raise AppMulError("network output names no signal")

    # ------------------------------------------------------------------ structure
    def active(self) -> list[int]:
        """Indices of the nodes that feed an output, ascending (topological)."""
        n_in, nodes = self.n_inputs, self.nodes
        need = [False] * len(nodes)
        for o in self.outputs:
            if o >= n_in:
                need[o - n_in] = True
        for k in range(len(nodes) - 1, -1, -1):
            if need[k]:
                fn, x, y = nodes[k]
                a = ARITY[fn]
                if a and x >= n_in:
                    need[x - n_in] = True
                if a == 2 and y >= n_in:
                    need[y - n_in] = True
        return [k for k, n in enumerate(need) if n]

    def cost(self, gate_cost: dict[int, float] | None = None, active: Iterable[int] | None = None) -> float:
        """Sum of the active nodes' costs (default :data:`GATE_EQUIVALENTS`)."""
        gc = gate_cost or GATE_EQUIVALENTS
        return float(sum(gc[self.nodes[k][0]] for k in (self.active() if active is None else active)))

    def pdp_proxy(self, vals: Sequence[int | None], active: Sequence[int], gate_cost: dict[int, float]) -> float:
        """Switching energy x depth: ``sum_g cost_g 2 p_g (1 - p_g)`` (``p_g``: the share of operand pairs on which
        gate ``g`` is 1, uniform operands) times the longest path in :data:`GATE_DELAYS`."""
        return pdp_proxy(self, active, [0 if v is None else v.bit_count() for v in vals], gate_cost)

    # ------------------------------------------------------------------ simulation
    def input_vectors(self) -> list[int]:
        """Bit vectors of the primary inputs: ``a`` bits then ``w`` bits."""
        return input_vectors(self.a_bits, self.w_bits)

    def simulate(self, active: Sequence[int] | None = None, inputs: list[int] | None = None) -> list[int | None]:
        """Bit vector of every signal (None for inactive nodes when ``active`` is given)."""
        n_in, mask = self.n_inputs, (1 << self.n_patterns) - 1
        vals: list[int | None] = list(inputs or self.input_vectors()) + [None] * len(self.nodes)
        for k in range(len(self.nodes)) if active is None else active:
            fn, x, y = self.nodes[k]
            a = ARITY[fn]
            vals[n_in + k] = apply(fn, vals[x] if a else 0, vals[y] if a == 2 else 0, mask)  # type: ignore[arg-type]
        return vals

    def output_values(self, vals: Sequence[int | None] | None = None) -> np.ndarray:
        """Output word on every operand pair, ``(2**n_inputs,)`` int64 (two's complement when signed)."""
        vals = self.simulate(self.active()) if vals is None else vals
        return word_values([vals[o] for o in self.outputs], self.n_patterns, self.signed)  # type: ignore[misc]

    def lut(self) -> np.ndarray:
        """The look-up table ``(2**a_bits, 2**w_bits)`` int64."""
        return self.output_values().reshape(1 << self.a_bits, 1 << self.w_bits)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_circuit(cls, c: Circuit, signed: bool) -> Network:
        """The live gates of ``c`` as two-input nodes (a MUX becomes AND/ANDN/OR)."""
        net = cls(c.a_bits, c.w_bits, signed)
        sig: dict[int, int] = {}
        for i, s in enumerate(c.a):
            sig[s] = i
        for i, s in enumerate(c.w):
            sig[s] = c.a_bits + i

        def node(fn: int, x: int = 0, y: int = 0) -> int:
            net.nodes.append((fn, x, y))
            return net.n_inputs + len(net.nodes) - 1

        sig[ZERO], sig[ONE] = node(ZERO_FN), node(ONE_FN)
        ops = {"and": AND, "or": OR, "xor": XOR}
        for s, op, args in c.gates():
            if op == "not":
                sig[s] = node(NOT, sig[args[0]])
            elif op == "mux":
                sel, d0, d1 = (sig[x] for x in args)
                sig[s] = node(OR, node(AND, sel, d1), node(ANDN, d0, sel))
            else:
                sig[s] = node(ops[op], sig[args[0]], sig[args[1]])
        net.outputs = [sig[s] for s in c.output]
        return net.compact()

    def compact(self) -> Network:
        """The same function with only the active nodes, renumbered."""
        n_in, act = self.n_inputs, self.active()
        new = {i: i for i in range(n_in)}
        nodes = []
        for k in act:
            fn, x, y = self.nodes[k]
            a = ARITY[fn]
            nodes.append((fn, new[x] if a else 0, new[y] if a == 2 else 0))
            new[n_in + k] = n_in + len(nodes) - 1
        return Network(self.a_bits, self.w_bits, self.signed, nodes, [new[o] for o in self.outputs])

    def to_circuit(self, name: str) -> Circuit:
        """A :class:`Circuit` of the active nodes (constant folding and structural hashing by the circuit)."""
        c = Circuit(self.a_bits, self.w_bits, name)
        sig: list[int] = list(c.a) + list(c.w) + [ZERO] * len(self.nodes)
        n_in = self.n_inputs
        gate = {AND: c.AND, OR: c.OR, XOR: c.XOR, NAND: c.NAND, NOR: c.NOR, XNOR: c.XNOR,
                ANDN: lambda x, y: c.AND(x, c.NOT(y)), ORN: lambda x, y: c.OR(x, c.NOT(y))}
        for k in self.active():
            fn, x, y = self.nodes[k]
            if fn in gate:
                sig[n_in + k] = gate[fn](sig[x], sig[y])
            elif fn == NOT:
                sig[n_in + k] = c.NOT(sig[x])
            elif fn == BUF:
                sig[n_in + k] = sig[x]
            else:
                sig[n_in + k] = ONE if fn == ONE_FN else ZERO
        c.set_output([sig[o] for o in self.outputs], signed=self.signed)
        return c


def pdp_proxy(net: Network, active: Sequence[int], ones: Sequence[int], gate_cost: dict[int, float]) -> float:
    """:meth:`Network.pdp_proxy` from the 1-counts ``ones`` of every signal."""
    n_in, n = net.n_inputs, net.n_patterns
    arrival = [0.0] * (n_in + len(net.nodes))
    energy = 0.0
    for k in active:
        fn, x, y = net.nodes[k]
        a = ARITY[fn]
        arrival[n_in + k] = GATE_DELAYS[fn] + max(arrival[x] if a else 0.0, arrival[y] if a == 2 else 0.0)
        p = ones[n_in + k] / n
        energy += gate_cost[fn] * 2 * p * (1 - p)
    return energy * max((arrival[o] for o in net.outputs), default=0.0)


def input_vectors(a_bits: int, w_bits: int) -> list[int]:
    """Bit vectors (Python ints over ``2**(a_bits + w_bits)`` patterns) of ``a``'s then ``w``'s bits."""
    p = np.arange(1 << (a_bits + w_bits), dtype=np.int64)
    shifts = [w_bits + i for i in range(a_bits)] + list(range(w_bits))
    return [int.from_bytes(np.packbits(((p >> s) & 1).astype(bool), bitorder="little").tobytes(), "little")
            for s in shifts]


def word_values(bits: Sequence[int], n_patterns: int, signed: bool) -> np.ndarray:
    """Integer value ``(n_patterns,)`` int64 of the word whose bit ``k`` over the patterns is ``bits[k]``."""
    nbytes = (n_patterns + 7) // 8
    out = np.zeros(n_patterns, np.int64)
    for k, v in enumerate(bits):
        if v:
            b = np.unpackbits(np.frombuffer(v.to_bytes(nbytes, "little"), np.uint8), count=n_patterns,
                              bitorder="little")
            out |= b.astype(np.int64) << k
    if signed:
        n = len(bits)
        out = np.where(out >= (1 << (n - 1)), out - (1 << n), out)
    return out

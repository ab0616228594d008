"""A small gate-level netlist builder for multiplier circuits.

A :class:`Circuit` has two input words ``a`` (``a_bits`` wide) and ``w`` (``w_bits`` wide), single-bit
signals (plain ``int`` ids; ``0`` and ``1`` are the constants) and gates NOT, AND, OR, XOR, NAND, NOR,
XNOR and MUX. Gates are constant-folded and structurally hashed: asking for the same gate on the same
inputs twice returns the same signal. :meth:`Circuit.simulate` evaluates the netlist on every input pair
at once (bit-packed numpy vectors) and returns the look-up table in the :mod:`fames.appmul.core`
convention; :meth:`Circuit.to_verilog` writes structural Verilog with the port convention
``module <top>(input [a_bits-1:0] a, input [w_bits-1:0] w, output [a_bits+w_bits-1:0] y)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fames.errors import AppMulError

Signal = int
ZERO: Signal = 0
ONE: Signal = 1

_COMMUTATIVE = {"and", "or", "xor"}
_VERILOG_OP = {"and": "&", "or": "|", "xor": "^"}
_GATE_DELAY = {"not": 0.0, "and": 1.0, "or": 1.0, "xor": 1.5, "mux": 1.5}


class Circuit:
    """Gate-level netlist with inputs ``a[i]``, ``w[i]`` and an ``a_bits + w_bits`` wide output word."""

    def __init__(self, a_bits: int, w_bits: int, name: str = "m") -> None:
        if a_bits < 1 or w_bits < 1:
            raise AppMulError(f"circuit widths must be positive, got a_bits={a_bits}, w_bits={w_bits}")
        self.a_bits, self.w_bits, self.name = int(a_bits), int(w_bits), name
        # node i: (op, operands); op in {"const", "a", "w", "not", "and", "or", "xor", "mux"}
        self._nodes: list[tuple[str, tuple[int, ...]]] = [("const", (0,)), ("const", (1,))]
        self._hash: dict[tuple[str, tuple[int, ...]], Signal] = {}
        self._inv: dict[Signal, Signal] = {ZERO: ONE, ONE: ZERO}
        self._arrival: dict[Signal, float] = {}
        self.a: list[Signal] = [self._new("a", (i,)) for i in range(self.a_bits)]
        self.w: list[Signal] = [self._new("w", (i,)) for i in range(self.w_bits)]
        self._out: list[Signal] | None = None

    @property
    def out_bits(self) -> int:
        return self.a_bits + self.w_bits

    def _new(self, op: str, args: tuple[int, ...]) -> Signal:
        self._nodes.append((op, args))
        return len(self._nodes) - 1

    def _gate(self, op: str, args: tuple[int, ...]) -> Signal:
        if op in _COMMUTATIVE:
            args = tuple(sorted(args))
        key = (op, args)
        s = self._hash.get(key)
        if s is None:
            s = self._hash[key] = self._new(op, args)
        return s

    # ------------------------------------------------------------------ gates
    def is_inv(self, x: Signal, y: Signal) -> bool:
        """True when ``y`` is known to be the complement of ``x``."""
        return self._inv.get(x) == y

    def NOT(self, x: Signal) -> Signal:
        if x in self._inv:
            return self._inv[x]
        s = self._gate("not", (x,))
        self._inv[x], self._inv[s] = s, x
        return s

    def AND(self, x: Signal, y: Signal) -> Signal:
        if x == ZERO or y == ZERO or self.is_inv(x, y):
            return ZERO
        if x in (ONE, y):
            return y
        if y == ONE:
            return x
        return self._gate("and", (x, y))

    def OR(self, x: Signal, y: Signal) -> Signal:
        if x == ONE or y == ONE or self.is_inv(x, y):
            return ONE
        if x in (ZERO, y):
            return y
        if y == ZERO:
            return x
        return self._gate("or", (x, y))

    def XOR(self, x: Signal, y: Signal) -> Signal:
        if x == y:
            return ZERO
        if self.is_inv(x, y):
            return ONE
        if x == ZERO:
            return y
        if y == ZERO:
            return x
        if x == ONE:
            return self.NOT(y)
        if y == ONE:
            return self.NOT(x)
        return self._gate("xor", (x, y))

    def NAND(self, x: Signal, y: Signal) -> Signal:
        return self.NOT(self.AND(x, y))

    def NOR(self, x: Signal, y: Signal) -> Signal:
        return self.NOT(self.OR(x, y))

    def XNOR(self, x: Signal, y: Signal) -> Signal:
        return self.NOT(self.XOR(x, y))

    def MUX(self, s: Signal, d0: Signal, d1: Signal) -> Signal:
        """``s ? d1 : d0``."""
        if s == ZERO or d0 == d1:
            return d0
        if s == ONE:
            return d1
        if d0 == ZERO:
            return self.AND(s, d1)
        if d1 == ZERO:
            return self.AND(self.NOT(s), d0)
        if d0 == ONE:
            return self.OR(self.NOT(s), d1)
        if d1 == ONE:
            return self.OR(s, d0)
        if s == d1:
            return self.OR(s, d0)
        if s == d0:
            return self.AND(s, d1)
        if self.is_inv(d0, d1):
            return self.XOR(s, d0)
        return self._gate("mux", (s, d0, d1))

    def and_all(self, xs: Iterable[Signal]) -> Signal:
        r = ONE
        for x in xs:
            r = self.AND(r, x)
        return r

    def or_all(self, xs: Iterable[Signal]) -> Signal:
        """OR of all ``xs`` as a balanced tree."""
        xs = [x for x in xs if x != ZERO]
        if not xs:
            return ZERO
        while len(xs) > 1:
            nxt = [self.OR(xs[i], xs[i + 1]) for i in range(0, len(xs) - 1, 2)]
            if len(xs) % 2:
                nxt.append(xs[-1])
            xs = nxt
        return xs[0]

    # ------------------------------------------------------------------ output
    def set_output(self, bits: Sequence[Signal], signed: bool = False) -> None:
        """Set the output word (LSB first).

        Missing high bits are sign-extended (``signed``) or zero-extended; extra bits are dropped
        (the result is taken modulo ``2**(a_bits + w_bits)``).
        """
        n = self.out_bits
        bits = list(bits)
        if not bits:
            bits = [ZERO]
        fill = bits[-1] if signed else ZERO
        bits = (bits + [fill] * n)[:n]
        for b in bits:
            if not 0 <= b < len(self._nodes):
                raise AppMulError(f"circuit {self.name!r}: output bit {b} is not a signal of this circuit")
        self._out = bits

    @property
    def output(self) -> list[Signal]:
        if self._out is None:
            raise AppMulError(f"circuit {self.name!r} has no output; call set_output() first")
        return list(self._out)

    def cone(self, signals: Iterable[Signal]) -> set[int]:
        """Ids of the gate nodes (not inputs or constants) in the fan-in cones of ``signals``."""
        seen = self._cone(signals)
        return {s for s in seen if self._nodes[s][0] not in ("const", "a", "w")}

    def _live(self) -> list[int]:
        """Ids of gate nodes that feed the output, in topological (creation) order."""
        return sorted(self.cone(self.output))

    def _cone(self, signals: Iterable[Signal]) -> set[int]:
        seen: set[int] = set()
        stack = list(signals)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            op, args = self._nodes[s]
            if op not in ("const", "a", "w"):
                stack.extend(args)
        return seen

    def arrival(self, s: Signal) -> float:
        """Estimated arrival time of ``s`` in unit gate delays (inputs and constants at 0).

        AND/OR cost 1, XOR and MUX 1.5, NOT 0 (absorbed into the cells of a mapped netlist). Only a rough
        guide for arrival-aware construction (e.g. of the final adder); the mapper restructures the logic.
        """
        memo = self._arrival
        if s in memo:
            return memo[s]
        stack = [s]
        while stack:
            x = stack[-1]
            if x in memo:
                stack.pop()
                continue
            op, args = self._nodes[x]
            if op in ("const", "a", "w"):
                memo[x] = 0.0
                stack.pop()
                continue
            todo = [y for y in args if y not in memo]
            if todo:
                stack.extend(todo)
                continue
            memo[x] = max(memo[y] for y in args) + _GATE_DELAY[op]
            stack.pop()
        return memo[s]

    def gates(self) -> list[tuple[Signal, str, tuple[Signal, ...]]]:
        """``(signal, op, operands)`` of every gate feeding the output, in topological order."""
        return [(s, *self._nodes[s]) for s in self._live()]

    def gate_count(self) -> int:
        """Number of gates feeding the output (after folding and hashing)."""
        return len(self._live())

    # ------------------------------------------------------------------ simulation
    def simulate(self, signed: bool = False) -> np.ndarray:
        """The LUT ``(2**a_bits, 2**w_bits)`` int64: output word on every input pair.

        The flat input index is ``i * 2**w_bits + j`` with ``i`` the bit pattern of ``a`` and ``j`` that
        of ``w``. With ``signed`` the output word is read as two's complement.
        """
        na, nw, n = self.a_bits, self.w_bits, self.out_bits
        total = 1 << (na + nw)
        idx = np.arange(total, dtype=np.int64)
        nbytes = (total + 7) // 8
        vals: dict[int, np.ndarray] = {
            ZERO: np.zeros(nbytes, np.uint8),
            ONE: np.full(nbytes, 0xFF, np.uint8),
        }
        for i, s in enumerate(self.a):
            vals[s] = np.packbits(((idx >> (nw + i)) & 1).astype(bool))
        for i, s in enumerate(self.w):
            vals[s] = np.packbits(((idx >> i) & 1).astype(bool))
        for s in self._live():
            op, args = self._nodes[s]
            if op == "not":
                vals[s] = ~vals[args[0]]
            elif op == "and":
                vals[s] = vals[args[0]] & vals[args[1]]
            elif op == "or":
                vals[s] = vals[args[0]] | vals[args[1]]
            elif op == "xor":
                vals[s] = vals[args[0]] ^ vals[args[1]]
            else:  # mux
                sel, d0, d1 = (vals[x] for x in args)
                vals[s] = (sel & d1) | (~sel & d0)
        word = np.zeros(total, np.int64)
        for k, s in enumerate(self.output):
            word |= np.unpackbits(vals[s], count=total).astype(np.int64) << k
        if signed:
            word = np.where(word >= (1 << (n - 1)), word - (1 << n), word)
        return word.reshape(1 << na, 1 << nw)

    def evaluate(self, a: Sequence[int] | np.ndarray, w: Sequence[int] | np.ndarray) -> np.ndarray:
        """Output words (unsigned bit patterns, int64) for operand bit patterns ``a[t]``, ``w[t]``: a
        sampled alternative to :meth:`simulate` for circuits too wide to enumerate (outputs up to 62 bits)."""
        if self.out_bits > 62:
            raise AppMulError(f"circuit {self.name!r}: evaluate() supports outputs up to 62 bits")
        av, wv = np.asarray(a, dtype=np.int64), np.asarray(w, dtype=np.int64)
        vals: dict[int, np.ndarray] = {ZERO: np.zeros(av.shape, bool), ONE: np.ones(av.shape, bool)}
        vals.update({s: ((av >> i) & 1).astype(bool) for i, s in enumerate(self.a)})
        vals.update({s: ((wv >> i) & 1).astype(bool) for i, s in enumerate(self.w)})
        for s in self._live():
            op, args = self._nodes[s]
            x = [vals[y] for y in args]
            if op == "not":
                vals[s] = ~x[0]
            elif op == "and":
                vals[s] = x[0] & x[1]
            elif op == "or":
                vals[s] = x[0] | x[1]
            elif op == "xor":
                vals[s] = x[0] ^ x[1]
            else:  # mux
                vals[s] = np.where(x[0], x[2], x[1])
        word = np.zeros(av.shape, np.int64)
        for k, s in enumerate(self.output):
            word |= vals[s].astype(np.int64) << k
        return word

    # ------------------------------------------------------------------ verilog
    def to_verilog(self, top: str) -> str:
        """Structural Verilog: one ``assign`` per gate on single-bit wires, then ``assign y = {...}``."""
        na, nw, n = self.a_bits, self.w_bits, self.out_bits
        live = self._live()

        def ref(s: int) -> str:
            op, args = self._nodes[s]
            if op == "const":
                return f"1'b{args[0]}"
            if op == "a":
                return f"a[{args[0]}]"
            if op == "w":
                return f"w[{args[0]}]"
            return f"n{s}"

        lines = [
            f"// {self.name}: generated by fames ({len(live)} gates)",
            f"module {top}(input [{na - 1}:0] a, input [{nw - 1}:0] w, output [{n - 1}:0] y);",
        ]
        lines += [f"  wire n{s};" for s in live]
        for s in live:
            op, args = self._nodes[s]
            if op == "not":
                expr = f"~{ref(args[0])}"
            elif op == "mux":
                expr = f"{ref(args[0])} ? {ref(args[2])} : {ref(args[1])}"
            else:
                expr = f"{ref(args[0])} {_VERILOG_OP[op]} {ref(args[1])}"
            lines.append(f"  assign n{s} = {expr};")
        lines.append("  assign y = {" + ", ".join(ref(s) for s in reversed(self.output)) + "};")
        lines.append("endmodule")
        return "\n".join(lines) + "\n"

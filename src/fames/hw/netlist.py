"""Gate-level netlists read from Yosys JSON, and their vectorised zero-delay simulation.

Nets are integers ``0 .. n_nets-1``; net 0 is constant 0 (also used for ``x``/``z``), net 1 is constant 1.
Simulation packs 64 input vectors into one ``uint64`` word per net and evaluates each cell's Liberty
``function`` (or the built-in function of a Yosys internal gate) with bitwise operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fames.errors import HardwareError
from fames.hw.liberty import BoolFn, Liberty, compile_function

CONST0, CONST1 = 0, 1

# Yosys internal gate types: (input pins, {output pin: Liberty-style function})
INTERNAL_GATES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "$_BUF_": (("A",), {"Y": "A"}),
    "$_NOT_": (("A",), {"Y": "!A"}),
    "$_AND_": (("A", "B"), {"Y": "A & B"}),
    "$_NAND_": (("A", "B"), {"Y": "!(A & B)"}),
    "$_OR_": (("A", "B"), {"Y": "A | B"}),
    "$_NOR_": (("A", "B"), {"Y": "!(A | B)"}),
    "$_XOR_": (("A", "B"), {"Y": "A ^ B"}),
    "$_XNOR_": (("A", "B"), {"Y": "!(A ^ B)"}),
    "$_ANDNOT_": (("A", "B"), {"Y": "A & !B"}),
    "$_ORNOT_": (("A", "B"), {"Y": "A | !B"}),
    "$_MUX_": (("A", "B", "S"), {"Y": "(A & !S) | (B & S)"}),
    "$_NMUX_": (("A", "B", "S"), {"Y": "!((A & !S) | (B & S))"}),
    "$_AOI3_": (("A", "B", "C"), {"Y": "!((A & B) | C)"}),
    "$_OAI3_": (("A", "B", "C"), {"Y": "!((A | B) & C)"}),
    "$_AOI4_": (("A", "B", "C", "D"), {"Y": "!((A & B) | (C & D))"}),
    "$_OAI4_": (("A", "B", "C", "D"), {"Y": "!((A | B) & (C | D))"}),
}


@dataclass
class NCell:
    """One cell instance: ``inputs``/``outputs`` map pin names to nets."""

    name: str
    type: str
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass
class Netlist:
    """A flat combinational netlist. Ports map to lists of nets, least significant bit first."""

    top: str
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    cells: list[NCell]
    net_names: list[str]
    liberty: Liberty | None = None
    order: list[int] = field(default_factory=list)  # cell indices in topological order
    undriven: list[str] = field(default_factory=list)  # output ports with a bit no cell, input or constant drives
    signed_ports: frozenset[str] = frozenset()  # ports the source declares ``signed``
    _fns: dict[str, dict[str, BoolFn]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_yosys_json(cls, data: Mapping[str, Any], top: str, liberty: Liberty | None = None) -> Netlist:
        """Build from the output of Yosys ``write_json`` (module ``top``)."""
        mods = data.get("modules", {})
        if top not in mods:
            raise HardwareError(f"module {top!r} not in the synthesised netlist (found {sorted(mods)})")
        mod = mods[top]
        ids: dict[Any, int] = {"0": CONST0, "1": CONST1, "x": CONST0, "z": CONST0}
        names = ["1'b0", "1'b1"]

        def net(bit: Any) -> int:
            if bit not in ids:
                ids[bit] = len(names)
                names.append(f"n{bit}")
            return ids[bit]

        inputs: dict[str, list[int]] = {}
        outputs: dict[str, list[int]] = {}
        for pname, p in mod.get("ports", {}).items():
            bits = [net(b) for b in p["bits"]]
            if p["direction"] == "input":
                inputs[pname] = bits
            elif p["direction"] == "output":
                outputs[pname] = bits
            else:
                raise HardwareError(f"module {top!r}: inout port {pname!r} is not supported")
        for nname, info in sorted(mod.get("netnames", {}).items(), key=lambda kv: kv[1].get("hide_name", 0)):
            bits = info["bits"]
            for k, b in enumerate(bits):
                if isinstance(b, int) and b in ids and names[ids[b]].startswith("n"):
                    names[ids[b]] = nname if len(bits) == 1 else f"{nname}[{k}]"
        cells: list[NCell] = []
        for cname, c in mod.get("cells", {}).items():
            ctype = c["type"]
            if ctype == "$scopeinfo":  # hierarchy annotation left by flattening; no logic
                continue
            if liberty is not None and ctype in liberty.cells:
                lc = liberty.cells[ctype]
                in_pins, out_pins = set(lc.inputs), set(lc.outputs)
            elif ctype in INTERNAL_GATES:
                in_pins, out_pins = set(INTERNAL_GATES[ctype][0]), set(INTERNAL_GATES[ctype][1])
            else:
                hint = "" if liberty is not None else " (no liberty given)"
                raise HardwareError(
                    f"module {top!r}: cell {cname!r} has type {ctype!r}, which is neither a combinational "
                    f"liberty cell nor a Yosys internal gate{hint}; sequential logic is not supported"
                )
            ins, outs = {}, {}
            for pin, bits in c["connections"].items():
                if len(bits) != 1:
                    raise HardwareError(f"module {top!r}: cell {cname!r} pin {pin} is {len(bits)} bits wide")
                if pin in in_pins:
                    ins[pin] = net(bits[0])
                elif pin in out_pins:
                    outs[pin] = net(bits[0])
            missing = in_pins - set(ins)
            if missing:
                raise HardwareError(f"module {top!r}: cell {cname!r} ({ctype}) leaves inputs {missing} open")
            cells.append(NCell(cname, ctype, ins, outs))
        driven = {CONST0, CONST1} | {b for bits in inputs.values() for b in bits} | {
            n for c in cells for n in c.outputs.values()}
        undriven = [pname for pname, p in mod.get("ports", {}).items() if p["direction"] == "output" and any(
            b in ("x", "z") or (isinstance(b, int) and ids[b] not in driven) for b in p["bits"])]
        signed_ports = frozenset(pname for pname, p in mod.get("ports", {}).items() if p.get("signed"))
        nl = cls(top, inputs, outputs, cells, names, liberty, undriven=undriven, signed_ports=signed_ports)
        nl._levelize()
        return nl

    def _levelize(self) -> None:
        driver: dict[int, int] = {}
        for ci, c in enumerate(self.cells):
            for n in c.outputs.values():
                if n in driver or n in (CONST0, CONST1):
                    raise HardwareError(f"module {self.top!r}: net {self.net_names[n]} has several drivers")
                driver[n] = ci
        for bits in self.inputs.values():
            for n in bits:
                if n in driver:
                    raise HardwareError(f"module {self.top!r}: input net {self.net_names[n]} is also driven")
        indeg = [0] * len(self.cells)
        fanout: dict[int, list[int]] = {}
        for ci, c in enumerate(self.cells):
            for n in set(c.inputs.values()):
                if n in driver:
                    indeg[ci] += 1
                    fanout.setdefault(driver[n], []).append(ci)
        ready = [ci for ci, d in enumerate(indeg) if d == 0]
        order: list[int] = []
        while ready:
            ci = ready.pop()
            order.append(ci)
            for cj in fanout.get(ci, []):
                indeg[cj] -= 1
                if indeg[cj] == 0:
                    ready.append(cj)
        if len(order) != len(self.cells):
            raise HardwareError(f"module {self.top!r} has a combinational loop; it cannot be costed")
        self.order = order

    # ------------------------------------------------------------------ views
    @property
    def n_nets(self) -> int:
        return len(self.net_names)

    def cell_functions(self, ctype: str) -> dict[str, BoolFn]:
        """Compiled output functions of a cell type (compiled once per type)."""
        fns = self._fns.get(ctype)
        if fns is None:
            if self.liberty is not None and ctype in self.liberty.cells:
                fns = {o: compile_function(p.tree) for o, p in self.liberty.cells[ctype].outputs.items()}
            else:
                fns = {o: compile_function(f) for o, f in INTERNAL_GATES[ctype][1].items()}
            self._fns[ctype] = fns
        return fns

    def area(self) -> float:
        """Total cell area, um^2 (needs the liberty)."""
        lib = self._need_liberty("area")
        return float(sum(lib.cells[c.type].area for c in self.cells))

    def leakage_nw(self) -> float:
        """Total cell leakage power, nW (needs the liberty)."""
        lib = self._need_liberty("leakage")
        return float(sum(lib.cells[c.type].leakage_nw for c in self.cells))

    def cell_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.type] = out.get(c.type, 0) + 1
        return dict(sorted(out.items()))

    def _need_liberty(self, what: str) -> Liberty:
        if self.liberty is None:
            raise HardwareError(f"{what} of module {self.top!r} needs a liberty-mapped netlist")
        return self.liberty

    # ------------------------------------------------------------------ simulation
    def simulate_words(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """Packed values of every net: ``(words (n_nets, ceil(N/64)) uint64, N)``; bit v%64 of word v//64."""
        n = None
        for name in self.inputs:
            if name not in inputs:
                raise HardwareError(f"simulation of {self.top!r}: no values for input port {name!r}")
            k = len(np.asarray(inputs[name]).reshape(-1))
            if n is not None and k != n:
                raise HardwareError(f"simulation of {self.top!r}: input arrays differ in length")
            n = k
        n = n or 1
        nw = (n + 63) // 64
        vals = np.zeros((self.n_nets, nw), dtype=np.uint64)
        vals[CONST1] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for name, bits in self.inputs.items():
            v = np.asarray(inputs[name]).reshape(-1).astype(np.int64)
            for k, netid in enumerate(bits):
                if netid > CONST1:
                    vals[netid] = _pack(((v >> k) & 1).astype(bool), nw)
        env_consts = {"__0__": vals[CONST0], "__1__": vals[CONST1]}
        for ci in self.order:
            c = self.cells[ci]
            env = {pin: vals[netid] for pin, netid in c.inputs.items()}
            env.update(env_consts)
            for pin, fn in self.cell_functions(c.type).items():
                if pin in c.outputs:
                    vals[c.outputs[pin]] = np.broadcast_to(_as_words(fn(env), nw), (nw,))
        return vals, n

    def simulate(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output port values (unsigned, int64) for integer input port values (arrays of equal length)."""
        vals, n = self.simulate_words(inputs)
        out: dict[str, np.ndarray] = {}
        for name, bits in self.outputs.items():
            if len(bits) > 63:
                raise HardwareError(f"output port {name!r} is wider than 63 bits")
            acc = np.zeros(n, dtype=np.int64)
            for k, netid in enumerate(bits):
                acc |= _unpack(vals[netid], n).astype(np.int64) << k
            out[name] = acc
        return out

    def net_values(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Value of every net for every vector: bool array ``(n_nets, N)``."""
        vals, n = self.simulate_words(inputs)
        bits = np.unpackbits(vals.view(np.uint8).reshape(self.n_nets, -1), axis=1, bitorder="little")
        return bits[:, :n].astype(bool)

    def toggle_counts(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Zero-delay toggles of every net over the vector sequence (N-1 transitions): int64 ``(n_nets,)``."""
        v = self.net_values(inputs)
        return (v[:, 1:] != v[:, :-1]).sum(axis=1).astype(np.int64)


def _pack(bits: np.ndarray, nw: int) -> np.ndarray:
    buf = np.zeros(nw * 64, dtype=bool)
    buf[: len(bits)] = bits
    return np.packbits(buf, bitorder="little").view(np.uint64)


def _unpack(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), bitorder="little")[:n]


def _as_words(x: Any, nw: int) -> np.ndarray:
    if isinstance(x, (bool, np.bool_, int)):
        return np.full(nw, 0xFFFFFFFFFFFFFFFF if x else 0, dtype=np.uint64)
    return x


def simulate_lut(netlist: Netlist, a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> np.ndarray:
    """Product table ``(2**a_bits, 2**w_bits)`` int64 of a multiplier netlist (ports ``a``, ``w``, ``y``).

    ``y`` is read as two's complement when either operand is signed; indices follow the AppMul convention.
    """
    for port, width, group in (
        ("a", a_bits, netlist.inputs),
        ("w", w_bits, netlist.inputs),
        ("y", a_bits + w_bits, netlist.outputs),
    ):
        if port not in group or len(group[port]) != width:
            got = len(group[port]) if port in group else "missing"
            raise HardwareError(
                f"module {netlist.top!r}: port {port!r} should be {width} bits wide (got {got}); expected "
                f"module {netlist.top}(input [{a_bits - 1}:0] a, input [{w_bits - 1}:0] w, "
                f"output [{a_bits + w_bits - 1}:0] y)"
            )
    ai, wi = np.meshgrid(np.arange(1 << a_bits), np.arange(1 << w_bits), indexing="ij")
    y = netlist.simulate({"a": ai.ravel(), "w": wi.ravel()})["y"]
    n = a_bits + w_bits
    if a_signed or w_signed:
        y = np.where(y >= (1 << (n - 1)), y - (1 << n), y)
    return y.reshape(1 << a_bits, 1 << w_bits).astype(np.int64)


def netlist_to_verilog(netlist: Netlist, top: str, ports: Mapping[str, str] | None = None) -> str:
    """Structural Verilog of a netlist: one ``assign`` per Yosys internal gate, one instance per liberty cell
    (a netlist mapped to the cells of ``netlist.liberty``, read back with that liberty).

    ``ports`` renames ports (old name -> new name), e.g. ``{"A": "a", "B": "w", "O": "y"}``.
    """
    import re

    ports = dict(ports or {})
    wire = {CONST0: "1'b0", CONST1: "1'b1"}
    decl = []
    for kind, group in (("input", netlist.inputs), ("output", netlist.outputs)):
        for p, bits in group.items():
            name = ports.get(p, p)
            decl.append(f"{kind} [{len(bits) - 1}:0] {name}")
            if kind == "input":
                for k, n in enumerate(bits):
                    wire.setdefault(n, f"{name}[{k}]")
    lib_cells = netlist.liberty.cells if netlist.liberty is not None else {}
    body = []
    for idx in netlist.order:
        c = netlist.cells[idx]
        if c.type in INTERNAL_GATES:
            pins, funcs = INTERNAL_GATES[c.type]
            for out_pin, fn in funcs.items():
                n = c.outputs.get(out_pin)
                if n is None:
                    continue
                name = wire.setdefault(n, f"n{n}")
                expr = re.sub(
                    r"\b([A-D]|S)\b", lambda m, c=c: wire.get(c.inputs[m.group(1)], f"n{c.inputs[m.group(1)]}"), fn
                )
                body.append(f"  assign {name} = {expr.replace('!', '~')};")
        elif c.type in lib_cells:
            conns = [f".{pin}({wire.get(n, f'n{n}')})" for pin, n in c.inputs.items()]
            conns += [f".{pin}({wire.setdefault(n, f'n{n}')})" for pin, n in c.outputs.items()]
            body.append(f"  {c.type} u{idx} ({', '.join(conns)});")
        else:
            raise HardwareError(f"netlist_to_verilog: cell type {c.type!r} is neither a Yosys internal gate nor a cell "
                                "of the netlist's liberty")
    wires = sorted({w for w in wire.values() if w.startswith("n") and "[" not in w}, key=lambda s: int(s[1:]))
    outs = []
    for p, bits in netlist.outputs.items():
        concat = ", ".join(wire.get(n, "1'b0") for n in reversed(bits))
        outs.append(f"  assign {ports.get(p, p)} = {{{concat}}};")
    lines = [f"module {top}({', '.join(decl)});"]
    lines += [f"  wire {w};" for w in wires] + body + outs + ["endmodule"]
    return "\n".join(lines) + "\n"

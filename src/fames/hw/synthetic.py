"""A small synthetic liberty that fames owns (tests, demos).

The numbers are invented, 45 nm-like: areas 0.5-2.5 um^2, input capacitances ~1-2 fF, delays tens of ps.
Every table is a *bilinear* function of input slew ``s`` (ns) and output load ``c`` (fF), so bilinear
interpolation reproduces it exactly anywhere (tests rely on this):

* ``cell_rise/cell_fall  = d0 + 0.2 s + r c + 0.01 s c``        (ns)
* ``rise/fall_transition = t0 + 0.1 s + 2 r c``                 (ns)
* ``rise/fall_power      = e0 + 1.5 s + 0.02 c``                (fJ per output transition)

Units: time 1 ns, capacitance (1, ff), voltage 1 V (nominal 1.1 V), leakage 1 nW. Delay templates list
``input_net_transition`` first; the power template lists ``total_output_net_capacitance`` first, so
readers must honour ``variable_1/variable_2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fames.io import atomic_write_text

SLEW_INDEX = (0.005, 0.02, 0.08, 0.3)  # ns
LOAD_INDEX = (0.5, 2.0, 8.0, 32.0)  # fF


@dataclass(frozen=True)
class _Spec:
    name: str
    area: float  # um^2
    leakage: float  # nW
    pins: tuple[tuple[str, float], ...]  # (input pin, capacitance fF)
    out: str
    function: str
    sense: str  # timing_sense of every arc
    d0: float  # intrinsic delay, ns
    r: float  # drive resistance, ns/fF
    e0: float  # internal energy, fJ


CELLS: tuple[_Spec, ...] = (
    _Spec("INV_X1", 0.53, 14.0, (("A", 1.6),), "ZN", "!A", "negative_unate", 0.006, 0.0045, 0.9),
    _Spec("BUF_X1", 0.80, 21.0, (("A", 0.9),), "Z", "A", "positive_unate", 0.020, 0.0040, 1.6),
    _Spec("NAND2_X1", 0.80, 19.0, (("A1", 1.5), ("A2", 1.6)), "ZN", "!(A1 & A2)", "negative_unate",
          0.009, 0.0055, 1.0),
    _Spec("NOR2_X1", 0.80, 22.0, (("A1", 1.6), ("A2", 1.7)), "ZN", "(A1 + A2)'", "negative_unate",
          0.011, 0.0075, 1.1),
    _Spec("AND2_X1", 1.06, 25.0, (("A1", 0.9), ("A2", 1.0)), "ZN", "A1 A2", "positive_unate",
          0.024, 0.0042, 1.8),
    _Spec("OR2_X1", 1.06, 23.0, (("A1", 0.9), ("A2", 0.95)), "ZN", "A1 | A2", "positive_unate",
          0.030, 0.0044, 1.9),
    _Spec("XOR2_X1", 1.60, 37.0, (("A", 2.2), ("B", 2.4)), "Z", "A ^ B", "non_unate", 0.028, 0.0060, 3.1),
    _Spec("XNOR2_X1", 1.60, 36.0, (("A", 2.1), ("B", 2.5)), "ZN", "!(A ^ B)", "non_unate",
          0.027, 0.0060, 3.0),
    _Spec("NAND3_X1", 1.06, 18.0, (("A1", 1.5), ("A2", 1.6), ("A3", 1.6)), "ZN", "!(A1*A2*A3)",
          "negative_unate", 0.013, 0.0065, 1.3),
    _Spec("NOR3_X1", 1.06, 20.0, (("A1", 1.6), ("A2", 1.6), ("A3", 1.7)), "ZN", "!(A1+A2+A3)",
          "negative_unate", 0.016, 0.0095, 1.4),
    _Spec("AOI21_X1", 1.06, 28.0, (("A", 1.6), ("B1", 1.6), ("B2", 1.7)), "ZN", "!(A | (B1 & B2))",
          "negative_unate", 0.012, 0.0080, 1.5),
    _Spec("OAI21_X1", 1.06, 22.0, (("A", 1.7), ("B1", 1.6), ("B2", 1.6)), "ZN", "!(A & (B1 | B2))",
          "negative_unate", 0.012, 0.0070, 1.4),
    _Spec("MUX2_X1", 1.86, 40.0, (("A", 0.95), ("B", 1.0), ("S", 1.9)), "Z", "((S & B) | (A & !S))",
          "non_unate", 0.034, 0.0045, 2.6),
)


def delay_ns(spec: _Spec, slew_ns: float, load_ff: float, fall: bool = False) -> float:
    """Closed form of the cell_rise (or cell_fall, 10 % faster) table of ``spec``."""
    d = spec.d0 + 0.2 * slew_ns + spec.r * load_ff + 0.01 * slew_ns * load_ff
    return d * (0.9 if fall else 1.0)


def transition_ns(spec: _Spec, slew_ns: float, load_ff: float, fall: bool = False) -> float:
    """Closed form of the rise_transition (or fall_transition, 20 % faster) table of ``spec``."""
    t = 0.004 + 0.1 * slew_ns + 2 * spec.r * load_ff
    return t * (0.8 if fall else 1.0)


def energy_fj(spec: _Spec, slew_ns: float, load_ff: float, fall: bool = False) -> float:
    """Closed form of the rise_power (or fall_power, 60 %) table of ``spec``, fJ per transition."""
    e = spec.e0 + 1.5 * slew_ns + 0.02 * load_ff
    return e * (0.6 if fall else 1.0)


def spec(name: str) -> _Spec:
    """The invented parameters of one synthetic cell."""
    return next(c for c in CELLS if c.name == name)


def _table(kind: str, template: str, fn, s: _Spec, fall: bool, load_first: bool) -> list[str]:
    if load_first:
        rows = [[fn(s, sl, ld, fall) for sl in SLEW_INDEX] for ld in LOAD_INDEX]
        i1, i2 = LOAD_INDEX, SLEW_INDEX
    else:
        rows = [[fn(s, sl, ld, fall) for ld in LOAD_INDEX] for sl in SLEW_INDEX]
        i1, i2 = SLEW_INDEX, LOAD_INDEX
    vals = ", \\\n".join(f'          "{", ".join(f"{v:.6f}" for v in r)}"' for r in rows)
    return [
        f"      {kind} ({template}) {{",
        f'        index_1 ("{", ".join(str(x) for x in i1)}");',
        f'        index_2 ("{", ".join(str(x) for x in i2)}");',
        f"        values ( \\\n{vals});",
        "      }",
    ]


def liberty_text() -> str:
    """Text of the synthetic liberty."""
    L = [
        "/* fames synthetic 45nm-like cell library: invented numbers, for tests and demos. */",
        "library (fames_synth45) {",
        "  delay_model : table_lookup;",
        '  time_unit : "1ns";',
        '  voltage_unit : "1V";',
        '  current_unit : "1mA";',
        '  leakage_power_unit : "1nW";',
        "  capacitive_load_unit (1,ff);",
        "  nom_process : 1.0;",
        "  nom_temperature : 25.0;",
        "  nom_voltage : 1.1;",
        "  default_input_pin_cap : 1.0;",
        "  lu_table_template (delay_4x4) {",
        "    variable_1 : input_net_transition;",
        "    variable_2 : total_output_net_capacitance;",
        f'    index_1 ("{", ".join(str(x) for x in SLEW_INDEX)}");',
        f'    index_2 ("{", ".join(str(x) for x in LOAD_INDEX)}");',
        "  }",
        "  power_lut_template (energy_4x4) {",
        "    variable_1 : total_output_net_capacitance;",
        "    variable_2 : input_transition_time;",
        f'    index_1 ("{", ".join(str(x) for x in LOAD_INDEX)}");',
        f'    index_2 ("{", ".join(str(x) for x in SLEW_INDEX)}");',
        "  }",
    ]
    for s in CELLS:
        L += [f"  cell ({s.name}) {{", f"    area : {s.area};", f"    cell_leakage_power : {s.leakage};"]
        for p, cap in s.pins:
            L += [f"    pin ({p}) {{", "      direction : input;", f"      capacitance : {cap};", "    }"]
        L += [f"    pin ({s.out}) {{", "      direction : output;", f'      function : "{s.function}";']
        for p, _ in s.pins:
            L += ["    timing () {", f'      related_pin : "{p}";', f"      timing_sense : {s.sense};"]
            L += _table("cell_rise", "delay_4x4", delay_ns, s, False, False)
            L += _table("cell_fall", "delay_4x4", delay_ns, s, True, False)
            L += _table("rise_transition", "delay_4x4", transition_ns, s, False, False)
            L += _table("fall_transition", "delay_4x4", transition_ns, s, True, False)
            L += ["    }"]
            L += ["    internal_power () {", f'      related_pin : "{p}";']
            L += _table("rise_power", "energy_4x4", energy_fj, s, False, True)
            L += _table("fall_power", "energy_4x4", energy_fj, s, True, True)
            L += ["    }"]
        L += ["    }", "  }"]
    # a flip-flop, which readers must skip (combinational costing only)
    L += [
        "  cell (DFF_X1) {",
        "    area : 4.5;",
        "    ff (IQ, IQN) { next_state : \"D\"; clocked_on : \"CK\"; }",
        "    pin (D) { direction : input; capacitance : 1.1; }",
        "    pin (CK) { direction : input; capacitance : 0.9; clock : true; }",
        '    pin (Q) { direction : output; function : "IQ"; }',
        "  }",
        "}",
    ]
    return "\n".join(L) + "\n"


def write_synthetic_liberty(path: str | os.PathLike) -> Path:
    """Write the synthetic liberty to ``path`` (atomically) and return the path."""
    return atomic_write_text(path, liberty_text())


def default_synthetic_liberty() -> Path:
    """The synthetic liberty under the fames cache, named by its content (written on first use; rewritten if it was
    damaged): two fames versions sharing a cache each have their own file, never one rewritten under the other."""
    import hashlib

    from fames.io import cache_dir

    text = liberty_text()
    path = cache_dir() / "liberty" / f"fames_synth45-{hashlib.sha256(text.encode()).hexdigest()[:12]}.lib"
    if not path.is_file() or path.read_bytes() != text.encode():
        atomic_write_text(path, text)
    return path

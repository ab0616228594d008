"""Helpers shared by the hardware tests (kept out of conftest.py to avoid module-name clashes)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def shared_liberty(name: str) -> Path:
    """A liberty under ../shared/liberty, or skip the test saying why."""
    p = SHARED / "liberty" / name
    if not p.exists():
        pytest.skip(f"{p} is absent: this test needs the read-only ../shared folder beside the checkout")
    return p


def mult_verilog(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool, top: str = "mul") -> str:
    """Behavioural multiplier with the AppMul port convention."""
    sa = "$signed(a)" if a_signed else ("$signed({1'b0, a})" if w_signed else "a")
    sw = "$signed(w)" if w_signed else ("$signed({1'b0, w})" if a_signed else "w")
    return (f"module {top}(input [{a_bits - 1}:0] a, input [{w_bits - 1}:0] w, "
            f"output [{a_bits + w_bits - 1}:0] y);\n  assign y = {sa} * {sw};\nendmodule\n")

"""The `fames lib` commands end to end on a small library with the synthetic liberty."""

import json

import pytest

from fames.appmul.library import Library
from fames.cli import main


def test_lib_build_cost_show_plot(tmp_path, capsys):
    d = tmp_path / "lib"
    assert main(["lib", "build", "--family", "all", "--bits", "3", "3", "--signed", "--out", str(d)]) == 0
    assert main(["lib", "cost", str(d), "--liberty", "synthetic", "--vectors", "512"]) == 0
    lib = Library.load(d)
    exact = next(m for m in lib if m.is_exact())
    assert exact.cost.relative["pdp"] == pytest.approx(1.0)
    assert all(m.cost.area_um2 > 0 and m.cost.delay_ns > 0 and m.cost.energy_fj > 0 for m in lib)
    capsys.readouterr()
    assert main(["lib", "show", str(d), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(lib.names) and all(r["pdp_rel"] is not None for r in rows)
    assert main(["lib", "plot", str(d), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_lib_errors_are_clear(tmp_path, capsys):
    assert main(["lib", "build", "--family", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown family" in capsys.readouterr().err
    assert main(["lib", "show", str(tmp_path / "missing")]) == 2
    assert "not a library directory" in capsys.readouterr().err
    d = tmp_path / "lib"
    main(["lib", "build", "--family", "exact", "--bits", "2", "2", "--out", str(d)])
    assert main(["lib", "cost", str(d), "--liberty", str(tmp_path / "no.lib")]) == 2
    assert "no.lib" in capsys.readouterr().err


def test_lib_synth_writes_a_checked_library(tmp_path, capsys):
    d = tmp_path / "synth"
    args = ["lib", "synth", "--bits", "2", "3", "--signed", "--generations", "100", "--seeds", "1",
            "--thresholds", "5", "--max-error", "10", "--workers", "1", "--liberty", "synthetic", "--out", str(d)]
    assert main(args) == 0
    assert "checked LUT == Verilog == mapped netlist" in capsys.readouterr().out
    lib = Library.load(d)
    assert len(lib) >= 2 and all(m.widths == (2, 3, True, True) and m.verilog for m in lib)
    front = json.loads((d / "front.json").read_text())
    assert len(front["designs"]) >= len(front["front"]) >= len(lib)
    assert all(p["error"] <= 10 for p in front["designs"])
    assert (d / "front.png").stat().st_size > 10_000
    assert main(["lib", "synth", "--bits", "9", "9", "--out", str(tmp_path / "x")]) == 2
    assert "2..8" in capsys.readouterr().err
    assert main(["lib", "synth", "--bits", "2", "2", "--operands", str(tmp_path / "nope.pt"), "--out",
                 str(tmp_path / "y")]) == 2
    assert "nope.pt" in capsys.readouterr().err

"""`library: synth` / `generate+synth`: synthesized candidates beside the families, costed, cached by settings."""

import time

from fames.flow.config import RunConfig, SynthOptions
from fames.flow.library import candidate_appmuls


def test_generate_plus_synth_candidates(tmp_path, monkeypatch):
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    opts = SynthOptions(methods=["cgp"], seeds=1, generations=150, designs=6)
    widths = {(3, 3, True, True)}
    t0 = time.perf_counter()
    ms = candidate_appmuls("generate+synth", widths, "synthetic", progress=False, synth=opts)
    first = time.perf_counter() - t0
    synth = [m for m in ms if m.name.startswith("synth_3x3s_cgp")]
    assert 2 <= len(synth) <= 6
    assert any(m.provenance.get("family") == "trunc" for m in ms)  # the families are there too
    assert all(m.cost is not None and m.cost.relative["pdp"] > 0 for m in ms)
    t0 = time.perf_counter()
    again = candidate_appmuls("synth", widths, "synthetic", progress=False, synth=opts)
    assert time.perf_counter() - t0 < first  # the synthesized library comes from the cache
    assert [m.name for m in again if m.name.startswith("synth_")] == [m.name for m in synth]
    assert all(m.is_exact() or m.name.startswith("synth_") for m in again)


def test_run_config_synth_block():
    cfg = RunConfig.from_dict({"library": "synth", "synth": {"seeds": 1, "generations": 10, "max_error": 5.0}})
    assert cfg.synth.generations == 10 and cfg.synth.methods == ["lac", "cgp"]

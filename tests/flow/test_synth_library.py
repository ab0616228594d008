"""`library: synth` / `generate+synth`: synthesized candidates beside the families, costed, cached by settings."""

import time

import numpy as np
import pytest

from fames.errors import FamesError
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
    with pytest.raises(FamesError, match="synth.metric omse scores one layer.s output error"):
        RunConfig.from_dict({"library": "synth", "synth": {"metric": "omse", "operands": True}})
    assert RunConfig.from_dict({"library": "synth", "synth": {"metric": "omse", "operands": "layer"}}).synth.operands \
        == "layer"


def test_a_family_function_takes_the_cheaper_circuit(tmp_path, monkeypatch):
    """A synthesized design computing a family design's function ends with whichever circuit costs less (PDP), so
    the synthesized library never costs more than a family design for the same function; the LUT still matches."""
    from fames.appmul.families import build_family
    from fames.appmul.synth.library import SynthConfig, synthesize
    from fames.flow.library import cheapest_implementations
    from fames.hw.cost import cost_appmul
    from fames.hw.synthetic import default_synthetic_liberty
    from fames.hw.verify import check_design

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    lib_file = default_synthetic_liberty()
    made = synthesize(SynthConfig(3, 3, False, thresholds=(1.0, 5.0), max_error=10.0, seeds=1, generations=100),
                      workers=1, progress=False)
    fams = {np.asarray(m.lut, dtype=np.int64).tobytes(): m for m in build_family("all", 3, 3, False)}
    got = cheapest_implementations(made, lib_file)
    assert [m.name for m in got] == [m.name for m in made]
    shared = 0
    for before, after in zip(made, got, strict=True):
        assert np.array_equal(before.lut, after.lut)
        fam = fams.get(np.asarray(after.lut, dtype=np.int64).tobytes())
        if fam is None:
            assert after.verilog == before.verilog
            continue
        shared += 1
        pdp = cost_appmul(after, lib_file).pdp_fj
        assert pdp <= cost_appmul(fam, lib_file).pdp_fj + 1e-9 and pdp <= cost_appmul(before, lib_file).pdp_fj + 1e-9
        check_design(after, lib_file)
    assert shared >= 1  # the exact multiplier at least


def test_library_keywords_pass_the_input_check():
    """`library: synth` and `generate+synth` are built on the fly: the up-front input check must not look for a
    folder of that name (it did, and `fames run` stopped before any work); an unknown name still fails clearly."""
    from fames.errors import FamesError
    from fames.flow.inputs import check_inputs
    from fames.flow.library import is_library_keyword

    for name in ("generate", "evoapprox", "synth", "generate+synth", "synth+generate"):
        assert is_library_keyword(name)
        check_inputs(RunConfig.from_dict({"library": name}))
    assert not any(is_library_keyword(x) for x in ("generate+generate", "evo", "synth+evoapprox", "", None))
    with pytest.raises(FamesError, match="is neither generate, evoapprox, synth"):
        check_inputs(RunConfig.from_dict({"library": "generate+evo"}))


def test_operand_aware_candidates_are_exact_where_the_model_multiplies(tmp_path, monkeypatch):
    """`synth: {operands: true}` weights the error by the model's operand pairs: with all the weight on one pair and
    a mean error distance below one, every synthesized design is exact on that pair and free elsewhere (so it is
    cheaper than any uniformly exact design); without the model's counts it refuses."""
    from fames.errors import FamesError
    from fames.flow.library import synthesized_appmuls

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    opts = SynthOptions(methods=["cgp"], seeds=1, generations=300, designs=4, metric="med", max_error=0.5,
                        operands=True)
    key = (3, 3, False, False)
    counts = np.zeros((8, 8))
    counts[5, 6] = 7.0
    ms = synthesized_appmuls({key}, "synthetic", opts, progress=False, operand_weights={key: counts})
    assert ms and all(int(m.lut[5, 6]) == 30 for m in ms)
    assert any(not m.is_exact() for m in ms)
    with pytest.raises(FamesError, match="operand pairs"):
        synthesized_appmuls({key}, "synthetic", opts, progress=False)


def test_model_operand_weights_sum_the_layers_of_each_width():
    import torch
    from torch import nn

    from fames.flow.library import model_operand_weights
    from fames.quant import calibrate_ptq, quantize
    from fames.quant.convert import qlayers
    from fames.quant.operands import operand_histograms

    torch.manual_seed(0)
    model = quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)),
                     {"w_bits": 4, "a_bits": 4, "layers": {"4": "W3A3"}}).eval()
    x = torch.rand(6, 3, 8, 8)
    calibrate_ptq(model, [x])
    got = model_operand_weights(model, x)
    per_layer = operand_histograms(model, x)
    assert set(got) == {m.widths for _, m in qlayers(model)} and len(got) == 2
    for widths, counts in got.items():
        assert np.array_equal(counts, sum(per_layer[n] for n, m in qlayers(model) if m.widths == widths))


def test_one_library_per_layer_weighted_by_its_own_output_error(tmp_path, monkeypatch):
    """`synth: {operands: layer, metric: omse}`: one library per layer of a quantized model, each design named after
    its layer and scored by that layer's output error (per-output counts on the same images), no function twice."""
    import torch
    from torch import nn

    from fames.appmul.core import sanitize_name
    from fames.appmul.library import Library
    from fames.appmul.synth.error import ErrorModel
    from fames.flow.library import synth_operand_weights, synthesized_appmuls
    from fames.hw.verify import check_design
    from fames.quant import calibrate_ptq, quantize
    from fames.quant.operands import operand_histograms

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()), "W3A3").eval()
    x = torch.rand(6, 3, 8, 8)
    calibrate_ptq(model, [x])
    opts = SynthOptions(methods=["cgp"], seeds=1, generations=200, designs=4, metric="omse", max_error=20.0,
                        operands="layer")
    weights = synth_operand_weights(model, x, opts)
    (key, per_layer), = weights.items()
    assert key[:2] == (3, 3) and set(per_layer) == {"0", "2"}
    ms = synthesized_appmuls({key}, "synthetic", opts, progress=False, operand_weights=weights)
    want = operand_histograms(model, x, per_output=True)
    by_layer = {n: [m for m in ms if m.name.startswith(f"synth_{sanitize_name(n)}_")] for n in ("0", "2")}
    assert len(by_layer["0"]) + len(by_layer["2"]) == len(ms) and by_layer["0"] and by_layer["2"]
    for n, group in by_layer.items():
        model_n = ErrorModel(3, 3, key[2], "omse", want[n])
        assert [m.provenance["error"] for m in group] == pytest.approx([model_n(m.lut.reshape(-1)) for m in group])
    assert len({m.lut.tobytes() for m in ms}) == len(ms)
    lib = Library(ms).save(tmp_path / "lib")  # one Verilog module per design (the layers' libraries reuse names)
    for m in Library.load(lib):
        check_design(m)  # the renamed module still computes its LUT
    assert synth_operand_weights(model, x, SynthOptions()) is None


def test_a_damaged_cached_synthesized_library_is_made_again():
    from fames.flow.library import synthesized_appmuls
    from fames.io import cache_dir

    opts = SynthOptions(methods=["cgp"], seeds=1, generations=100, designs=4)
    first = synthesized_appmuls({(2, 2, False, False)}, "synthetic", opts, progress=False)
    (entry,) = [p for p in (cache_dir() / "synth").iterdir() if p.is_dir()]
    luts = dict(np.load(entry / "luts.npz"))
    name = next(n for n in luts if not np.array_equal(luts[n], np.outer(np.arange(4), np.arange(4))))
    luts[name] = luts[name] + 1  # one design's table no longer its circuit's: every later run failed on it
    np.savez(entry / "luts.npz", **luts)
    with pytest.warns(UserWarning, match="damaged or was edited: synthesizing it again"):
        again = synthesized_appmuls({(2, 2, False, False)}, "synthetic", opts, progress=False)
    assert [(m.name, m.lut.tolist()) for m in again] == [(m.name, m.lut.tolist()) for m in first]

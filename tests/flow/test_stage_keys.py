"""Stages of `fames run` are keyed by the content of what they read, not by the config text."""

import os
import re

import pytest

from fames.appmul.library import Library
from fames.flow.config import RunConfig
from fames.flow.library import candidate_appmuls
from fames.flow.run import run
from tests.conftest import digits_float_checkpoint


def _float_checkpoint(path, seed):
    return digits_float_checkpoint(path, seed=seed)


def _cfg(ck, out, library="generate", **kw):
    base = dict(model="digits_cnn", checkpoint=str(ck), quant="W4A4", families=["trunc", "perf"], library=library,
                budget=[0.7], estimator={"samples": 64, "validate": False}, calibration=False, output=str(out))
    return RunConfig.from_dict(base | kw)


def _stage_files(out, name):
    return {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob(f"{name}-*")}


@pytest.fixture()
def ck(tmp_path):
    return _float_checkpoint(tmp_path / "f.pt", seed=0)


def test_only_budgets_changed_reuses_the_estimate(ck, tmp_path):
    out = tmp_path / "run"
    run(_cfg(ck, out), progress=False)
    est = _stage_files(out, "estimate")
    assert len(est) == 1
    r2 = run(_cfg(ck, out, budget=[0.7, 0.5]), progress=False)
    assert _stage_files(out, "estimate") == est  # same file, not rewritten
    assert len(_stage_files(out, "budget")) == 4  # R = 0.7 reused (json + pt), R = 0.5 added
    assert [r.budget for r in r2.rows] == [0.7, 0.5]
    assert (out / "model_R0.5.pt").is_file() and (out / "assignment_R0.5.json").is_file()


def test_new_checkpoint_at_the_same_path_recomputes(ck, tmp_path):
    out = tmp_path / "run"
    r1 = run(_cfg(ck, out), progress=False)
    est, bud = _stage_files(out, "estimate"), _stage_files(out, "budget")
    _float_checkpoint(ck, seed=1)  # other weights, same path, same config text
    r2 = run(_cfg(ck, out), progress=False)
    assert len(_stage_files(out, "estimate")) == 2 and set(est) < set(_stage_files(out, "estimate"))
    assert set(bud) < set(_stage_files(out, "budget"))
    assert r2.exact_accuracy != r1.exact_accuracy or r2.to_dict()["runs"] != r1.to_dict()["runs"]
    # the per-budget files are written from the stage they belong to
    os.remove(out / "model_R0.7.pt")
    r3 = run(_cfg(ck, out), progress=False)
    assert (out / "model_R0.7.pt").is_file() and r3.to_dict()["runs"] == r2.to_dict()["runs"]


def test_recosted_library_recomputes(ck, tmp_path):
    lib_dir = tmp_path / "lib"
    ms = candidate_appmuls("generate", {(4, 4, True, True)}, "synthetic", ["trunc"], progress=False)
    Library(ms).save(lib_dir)
    out = tmp_path / "run"
    run(_cfg(ck, out, library=str(lib_dir)), progress=False)
    bud = _stage_files(out, "budget")
    recosted = []
    for m in ms:  # the same designs, every approximate one now twice as costly
        if not m.is_exact():
            m = m.with_cost(type(m.cost).from_dict({**m.cost.to_dict(), "pdp_fj": 2 * m.cost.pdp_fj,
                                                    "relative": {k: 2 * v for k, v in m.cost.relative.items()}}))
        recosted.append(m)
    Library(recosted).save(lib_dir)
    r = run(_cfg(ck, out, library=str(lib_dir)), progress=False)
    assert set(bud) < set(_stage_files(out, "budget"))
    assert len(_stage_files(out, "estimate")) == 1  # the estimate reads the tables, not the costs: reused
    assert r.to_dict()["library"]["size"] == len(ms)


def test_settings_that_do_not_change_a_budget_reuse_its_stages(ck, tmp_path):
    out = tmp_path / "run"
    r1 = run(_cfg(ck, out), progress=False)
    stages = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    # the same images in other batches, the sweep's stopping rule, the fallback a layer-level run never uses
    r2 = run(_cfg(ck, out, data={"dataset": "digits", "batch_size": 37},
                  selection={"stop_at_loss": True, "layer_fallback": False}), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()} == stages
    assert r2.to_dict()["runs"] == r1.to_dict()["runs"]


def test_edited_binary_stage_files_are_recomputed_not_trusted(ck, tmp_path):
    out = tmp_path / "run"
    r1 = run(_cfg(ck, out), progress=False)
    (est,) = (out / "stages").glob("estimate-*.npz")
    (model,) = (out / "stages").glob("budget-*.pt")
    data = bytearray(est.read_bytes())
    data[-40] ^= 0xFF  # one flipped byte of the stored Omega
    est.write_bytes(bytes(data))
    model.write_bytes(model.read_bytes()[:-10])  # a truncated model state
    with pytest.warns(UserWarning, match="does not match its checksum or cannot be read") as got:
        r2 = run(_cfg(ck, out), progress=False)
    assert {str(w.message).split()[2] for w in got if "checksum" in str(w.message)} == {str(est), str(model)}
    same = ("relative_energy", "accuracy", "assignment")
    assert [{k: r[k] for k in same} for r in r2.to_dict()["runs"]] == [{k: r[k] for k in same}
                                                                        for r in r1.to_dict()["runs"]]


def test_a_library_costed_on_another_liberty_is_costed_on_the_runs(tmp_path):
    from fames.hw.synthetic import default_synthetic_liberty

    lib_dir = tmp_path / "lib"
    Library(candidate_appmuls("generate", {(4, 4, True, True)}, "synthetic", ["trunc"], progress=False)).save(lib_dir)
    other = tmp_path / "other.lib"  # the same cells under another library name
    text = default_synthetic_liberty().read_text()
    other.write_text(text.replace("library (fames_synth45)", "library (other45)", 1))
    assert "library (other45)" in other.read_text()
    ms = candidate_appmuls(str(lib_dir), {(4, 4, True, True)}, other, progress=False)
    assert {m.cost.liberty for m in ms} == {"other45"}  # the run's liberty, as its report says


def test_a_liberty_of_the_same_name_but_other_cells_is_costed_again(tmp_path):
    """Costs were matched to the run's liberty by its library name: an edited copy or another corner of one library
    (same name, other cells) was taken for the one the library was costed on."""
    from fames.hw.synthetic import default_synthetic_liberty

    lib_dir = tmp_path / "lib"
    Library(candidate_appmuls("generate", {(4, 4, True, True)}, "synthetic", ["trunc"], progress=False)).save(lib_dir)
    edited = tmp_path / "edited.lib"
    text = default_synthetic_liberty().read_text()
    edited.write_text(re.sub(r"area : ([0-9.]+);", lambda m: f"area : {2 * float(m.group(1))};", text))
    before = {m.name: m.cost.area_um2 for m in Library.load(lib_dir)}
    ms = candidate_appmuls(str(lib_dir), {(4, 4, True, True)}, edited, progress=False)
    assert {m.cost.liberty for m in ms} == {"fames_synth45"}  # the same name ...
    assert all(m.cost.area_um2 != before[m.name] for m in ms)  # ... other cells: costed again


def test_a_models_code_is_in_its_key():
    """Two models of the same parameters but another forward (average for max pooling) shared their cached figures."""
    import torch
    from torch import nn

    from fames.flow.approximate import model_key

    class MaxNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.amax(self.conv(x), (2, 3))

    class AvgNet(MaxNet):
        def forward(self, x):
            return self.conv(x).mean((2, 3))

    torch.manual_seed(0)
    a, b, c = MaxNet(), AvgNet(), MaxNet()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    assert model_key(a) != model_key(b) and model_key(a) == model_key(c)

"""``fames.load_model``: a saved run comes back computing exactly what was reported."""

import warnings

import pytest
import torch
from torch import nn

import fames
from fames.errors import FamesError
from fames.quant import qlayers


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    torch.manual_seed(0)
    model, x, y = small_net().eval(), torch.randn(240, 3, 16, 16), torch.randint(0, 10, (240,))
    fames.quantize(model, "W8A8")
    fames.calibrate_ptq(model, (x, y))
    cfg = fames.FamesConfig(budget=[0.9], max_accuracy_loss=100.0, estimator=fames.EstimatorConfig(samples=32),
                            calibration=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fames.approximate_(model, (x[:160], y[:160]), library="generate", config=cfg,
                                    eval_data=(x[160:], y[160:]), progress=False)
    out = tmp_path_factory.mktemp("run")
    result.save(out)
    return model, out, x[160:], result


def test_a_reloaded_run_computes_the_reported_outputs_bit_for_bit(saved_run):
    model, out, x, _ = saved_run
    modes = {n: m.mode for n, m in qlayers(model)}
    assert "exact" in modes.values() and "approx" in modes.values()  # both kinds of layer are exercised
    loaded = fames.load_model(out, small_net())
    # layers the selection left exact stay in exact mode: the exact LUT emulated in approx mode rounds otherwise
    assert {n: m.mode for n, m in qlayers(loaded)} == modes
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("other", ["W4A4", {"w_bits": 8, "a_bits": 8, "weight_scheme": "affine"}])
def test_a_model_quantized_otherwise_than_the_checkpoint_is_refused(saved_run, other):
    _, out, _, _ = saved_run
    with pytest.raises(FamesError, match="quantized otherwise than .*give the float model"):
        fames.load_model(out, fames.quantize(small_net(), other))  # it ran at its own widths: 10% accuracy
    assert fames.load_model(out, fames.quantize(small_net(), "W8A8"))  # the same quantization is welcome


def test_a_save_cut_short_leaves_an_incomplete_folder_not_two_results_mixed(saved_run, tmp_path, monkeypatch):
    import json
    import os
    import shutil

    import fames.flow.report

    _, out, _, result = saved_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    scratch = folder / ".library.k1ll3d.tmp"  # a write killed long ago
    scratch.mkdir()
    os.utime(scratch, (1, 1))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fames.flow.report, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        result.save(folder)
    assert json.loads((folder / "run.json").read_text())["complete"] is False
    assert not (folder / "report.json").exists() and not scratch.exists()  # the old report described the old run
    with pytest.raises(FamesError, match="cut short"):
        fames.load_model(folder, small_net())
    monkeypatch.undo()
    result.save(folder)  # saving again completes it
    assert "complete" not in json.loads((folder / "run.json").read_text())
    assert fames.load_model(folder, small_net())


def test_an_assignment_refuses_a_library_whose_design_was_replaced(saved_run, tmp_path):
    import dataclasses
    import json
    import shutil

    from fames.appmul.library import Library

    _, out, _, _ = saved_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    used = next(n for n in json.loads((folder / "assignment.json").read_text())["tables"] if "exact" not in n)
    lib = Library.load(folder / "library")
    m = lib[used]
    lut = m.lut.copy()
    lut[1, 1] += 1
    lib.replace(dataclasses.replace(m, lut=lut, cost=None))  # e.g. `fames lib import --replace` into the run's library
    lib.save(folder / "library", force=True)
    with pytest.raises(FamesError, match=f"{used}.*not the design this assignment was saved with"):
        fames.load_model(folder, small_net())  # loaded the new table: 95.28% against the reported 96.11%

"""End-to-end FAMES run on the embedded digits data (small settings)."""

import json

import pytest
import torch

from fames.cli import main
from fames.data import get_loader
from fames.errors import FamesError
from fames.models import create_model, save_checkpoint
from fames.pipeline import RunConfig, run
from fames.train import TrainConfig, train


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("digits_cnn")
    train(m, get_loader("digits", "train", 64, augment=True), TrainConfig(epochs=4, lr=0.05), progress=False)
    return save_checkpoint(m, tmp_path_factory.mktemp("ck") / "f.pt", meta={"quant": None})


def _cfg(ck, out, **kw):
    base = dict(model="digits_cnn", checkpoint=str(ck), quant="W4A4", dataset="digits", families=["trunc", "perf"],
                budgets=[0.7, 0.01], samples=128, calib_samples=256, calib_epochs=1, output=str(out))
    return RunConfig(**(base | kw))


def test_run_end_to_end_report_and_resume(float_ckpt, tmp_path, capsys):
    out = tmp_path / "run"
    r = run(_cfg(float_ckpt, out), progress=False)
    for key in ("float", "exact_quant", "approx_uncalibrated", "approx"):
        assert 0 <= r["accuracy"][key] <= 100
    assert r["relative_energy"] <= 0.7 + 1e-9 and r["energy_reduction"] == pytest.approx(1 - r["relative_energy"])
    assert -1 <= r["estimator_spearman"] <= 1
    assert set(r["timing"]) >= {"estimate_s", "select_s", "calibrate_s"}
    infeasible = [x for x in r["runs"] if x["infeasible"]]
    assert len(infeasible) == 1 and 0.01 < infeasible[0]["min_ratio"] < 0.7
    assert set(r["assignment"]) == {"conv1", "conv2", "linear"}
    for f in ("report.json", "report.md", "assignment.json", "fig_pareto.png", "fig_estimator.png", "model.pt"):
        assert (out / f).is_file(), f
    assert json.loads((out / "report.json").read_text())["assignment"] == r["assignment"]
    # the assignment and calibrated model reproduce the reported accuracy through `fames eval`
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--assignment", str(out / "assignment.json"),
                 "--library", str(out / "library"), "--dataset", "digits", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["accuracy"] == pytest.approx(r["accuracy"]["approx"])
    # resume: the stages are reused and give the same result
    r2 = run(_cfg(float_ckpt, out), progress=False)
    assert r2["runs"] == r["runs"] and r2["assignment"] == r["assignment"]


def test_bad_run_configs(float_ckpt, tmp_path):
    with pytest.raises(FamesError, match="known keys"):
        RunConfig.from_dict({"model": "digits_cnn", "budgte": [0.5]})
    with pytest.raises(FamesError, match=r"\(0, 1\]"):
        RunConfig(budgets=[1.5])
    with pytest.raises(FamesError, match="samples requested"):
        run(_cfg(float_ckpt, tmp_path / "x", samples=5000), progress=False)
    with pytest.raises(FamesError, match="quant"):
        run(_cfg(float_ckpt, tmp_path / "y", quant=None), progress=False)
    lib = tmp_path / "lib8"
    assert main(["lib", "build", "--family", "exact", "--bits", "8", "8", "--signed", "--out", str(lib)]) == 0
    with pytest.raises(FamesError, match="no AppMul for the layer widths.*4x4 signed"):
        run(_cfg(float_ckpt, tmp_path / "z", library=str(lib)), progress=False)


@pytest.mark.slow
def test_run_kernel_granularity(float_ckpt, tmp_path):
    """`granularity: kernel` estimates, selects and assigns per (output, input) channel pair."""
    out = tmp_path / "kernel"
    r = run(
        _cfg(float_ckpt, out, granularity="kernel", budgets=[0.7], calibrate=False, validate_estimator=False),
        progress=False,
    )
    assert r["relative_energy"] <= 0.7 + 1e-9
    conv2 = r["assignment"]["conv2"]
    assert conv2["granularity"] == "kernel" and len(conv2["index"]) > 1 and len(conv2["index"][0]) > 1
    with pytest.raises(FamesError, match="granularity"):
        RunConfig(granularity="channel")
    with pytest.raises(FamesError, match="curvature"):
        RunConfig(curvature="diag")


def test_run_with_the_mean_forward_estimator(float_ckpt, tmp_path):
    """`estimator_mean: forward` runs end to end; its Omega is the validated estimate in the report."""
    r = run(
        _cfg(float_ckpt, tmp_path / "fwd", estimator_mean="forward", estimator_forward_above=0.0, budgets=[0.7],
             calibrate=False),
        progress=False,
    )
    assert r["relative_energy"] <= 0.7 + 1e-9 and r["estimator_spearman"] > 0.5
    with pytest.raises(FamesError, match="estimator_mean 'median'"):
        RunConfig(estimator_mean="median")
    with pytest.raises(FamesError, match="needs granularity 'layer'"):
        RunConfig(estimator_mean="forward", granularity="filter")

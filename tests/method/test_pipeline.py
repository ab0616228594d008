"""End-to-end FAMES run on the embedded digits data (small settings)."""

import json

import pytest

from fames.cli import main
from fames.errors import FamesError
from fames.flow.config import RunConfig
from fames.flow.run import run
from tests.conftest import digits_float_checkpoint


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    return digits_float_checkpoint(tmp_path_factory.mktemp("ck") / "f.pt", epochs=4)


def _cfg(ck, out, estimator=None, selection=None, calibration=None, **kw):
    base = dict(model="digits_cnn", checkpoint=str(ck), quant="W4A4", families=["trunc", "perf"],
                budget=[0.7, 0.01], estimator={"samples": 128, "validate": True} | (estimator or {}),
                selection=selection or {},
                calibration={"samples": 256, "epochs": 1} if calibration is None else calibration, output=str(out))
    return RunConfig.from_dict(base | kw)


def test_run_end_to_end_report_and_resume(float_ckpt, tmp_path, capsys):
    out = tmp_path / "run"
    r = run(_cfg(float_ckpt, out), progress=False).to_dict()
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
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--json"]) == 0  # the dataset the run recorded
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == pytest.approx(res["accuracy"])
    # resume: the stages are reused and give the same result
    r2 = run(_cfg(float_ckpt, out), progress=False).to_dict()
    assert r2["runs"] == r["runs"] and r2["assignment"] == r["assignment"]


def test_bad_run_configs(float_ckpt, tmp_path):
    with pytest.raises(FamesError, match="budgte: unknown key"):
        RunConfig.from_dict({"model": "digits_cnn", "budgte": [0.5]})
    with pytest.raises(FamesError, match=r"\(0, 1\]"):
        RunConfig(budget=[1.5])
    with pytest.raises(FamesError, match="estimator.samples=5000 training images but the data holds"):
        run(_cfg(float_ckpt, tmp_path / "x", estimator={"samples": 5000}), progress=False)
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
        _cfg(float_ckpt, out, selection={"granularity": "kernel"}, budget=[0.7], calibration=False,
             estimator={"validate": False}),
        progress=False,
    ).to_dict()
    assert r["relative_energy"] <= 0.7 + 1e-9
    conv2 = r["assignment"]["conv2"]
    assert conv2["granularity"] == "kernel" and len(conv2["index"]) > 1 and len(conv2["index"][0]) > 1
    with pytest.raises(FamesError, match="granularity"):
        RunConfig.from_dict({"selection": {"granularity": "channel"}})
    with pytest.raises(FamesError, match="curvature"):
        RunConfig.from_dict({"estimator": {"curvature": "diag"}})


def test_run_with_the_mean_forward_estimator(float_ckpt, tmp_path):
    """`estimator: {kind: taylor-rank1+forward}` runs end to end; its Omega is the validated estimate."""
    r = run(
        _cfg(float_ckpt, tmp_path / "fwd", estimator={"kind": "taylor-rank1+forward", "forward_above": 0.0},
             budget=[0.7], calibration=False),
        progress=False,
    ).to_dict()
    assert r["relative_energy"] <= 0.7 + 1e-9 and r["estimator_spearman"] > 0.5
    with pytest.raises(FamesError, match="estimator kind 'taylor-median'"):
        RunConfig.from_dict({"estimator": {"kind": "taylor-median"}})
    with pytest.raises(FamesError, match="needs granularity 'layer'"):
        RunConfig.from_dict({"estimator": {"kind": "taylor-rank1+forward"}, "selection": {"granularity": "filter"}})


def test_eval_images_reproduce_a_subset_report_and_resume_counts_earlier_time(float_ckpt, tmp_path, capsys):
    out = tmp_path / "sub"
    cfg = _cfg(float_ckpt, out, budget=[0.7], calibration=False, data={"eval_images": 100})
    r = run(cfg, progress=False)
    assert r.test is None and r.best.paired_difference["n"] == 100
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--assignment", str(out / "assignment.json"),
                 "--library", str(out / "library"), "--dataset", "digits", "--eval-images", "100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 100 and res["accuracy"] == pytest.approx(r.accuracy)
    again = run(cfg, progress=False)  # everything from the stages: the earlier compute time is counted
    t = again.timings
    assert t["reused_s"] >= r.timings["estimate_s"] and t["total_s"] >= t["reused_s"]


def test_seeds_repeat_the_run_and_report_the_spread(float_ckpt, tmp_path):
    out = tmp_path / "seeds"
    r = run(_cfg(float_ckpt, out, budget=[0.7, 0.5], calibration=False, seeds=[3, 4],
                 estimator={"samples": 64, "validate": False}), progress=False)
    sp = r.to_dict()["seeds"]
    assert [x["seed"] for x in sp["runs"]] == [3, 4] and r.config.seed == 3  # the first seed is the reported run
    assert sp["runs"][0]["energy_reduction"] == pytest.approx(r.energy_reduction)
    e = [x["energy_reduction"] for x in sp["runs"]]
    assert sp["energy_reduction"]["min"] == min(e) and sp["energy_reduction"]["std"] >= 0
    assert "Over 2 seeds (3, 4)" in (out / "report.md").read_text()
    with pytest.raises(FamesError, match="distinct seeds"):
        RunConfig.from_dict({"seeds": [1, 1]})


def test_run_with_the_measured_estimator(float_ckpt, tmp_path):
    """`estimator: {kind: measured}` runs end to end; with no margin its Omega is the measured truth itself, so the
    validation's Spearman is exactly 1; the margin changes the stage key (no stale estimate)."""
    r = run(_cfg(float_ckpt, tmp_path / "m", estimator={"kind": "measured", "measured_margin": 0.0}, budget=[0.7],
                 calibration=False), progress=False).to_dict()
    assert r["relative_energy"] <= 0.7 + 1e-9 and r["estimator_spearman"] == pytest.approx(1.0)
    stages = tmp_path / "m" / "stages"
    before = {p.name for p in stages.glob("estimate-*")}
    run(_cfg(float_ckpt, tmp_path / "m", estimator={"kind": "measured"}, budget=[0.7], calibration=False),
        progress=False)
    assert len({p.name for p in stages.glob("estimate-*")} - before) == 1


def test_run_with_finetuning(float_ckpt, tmp_path):
    """`finetune:` retrains every budget's model after its calibration (reported apart), keys the budget's stage (no
    stale row from a run without it), and refuses more images than the training part holds."""
    out = tmp_path / "ft"
    plain = run(_cfg(float_ckpt, out, budget=[0.5], estimator={"validate": False}), progress=False)
    rows = {p.name for p in (out / "stages").glob("budget-*")}
    tuned = run(_cfg(float_ckpt, out, budget=[0.5], estimator={"validate": False},
                     finetune={"samples": 512, "epochs": 1, "lr": 0.01}), progress=False)
    assert {p.name for p in (out / "stages").glob("budget-*")} > rows
    b = tuned.best
    assert b.finetune_s > 0 and b.calibrate_s >= b.finetune_s and plain.best.finetune_s == 0
    assert b.assignment == plain.best.assignment  # the same selection, then retrained
    assert "of which fine-tuning" in (out / "report.md").read_text()
    with pytest.raises(FamesError, match="finetune.samples=100000 but the training data holds"):
        run(_cfg(float_ckpt, tmp_path / "big", budget=[0.5], finetune={"samples": 100000}), progress=False)
    with pytest.raises(FamesError, match=r"finetune.epoch: unknown key \(known keys here: .*epochs"):
        RunConfig.from_dict({"finetune": {"epoch": 1}})

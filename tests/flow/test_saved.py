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


def test_the_hardware_handoff_recomputes_every_layer_without_fames(saved_run):
    """From hardware.json, hardware.npz and the library's tables alone (numpy), each quantized layer's output is
    what the model computes: codes, ports, padding and zero-point terms as the file states them."""
    import json

    import numpy as np

    from fames.appmul.core import exact_lut

    model, out, x, _ = saved_run
    hw = json.loads((out / "hardware.json").read_text())
    arrays = np.load(out / "hardware.npz")
    luts = np.load(out / "library" / "luts.npz")
    assert hw["format"] == "fames-hardware" and hw["without_circuit"] == [] and "padding" in hw["conventions"]
    seen, outs = {}, {}

    def keep(name):
        def hook(mod, inputs, output):
            seen[name], outs[name] = inputs[0], output
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in qlayers(model)]
    with torch.no_grad():
        model(x[:3])
    for h in hooks:
        h.remove()
    assert set(hw["layers"]) == set(seen)
    for name, rec in hw["layers"].items():
        (design,) = rec["appmuls"]
        lut = luts[design["name"]].astype(np.int64)
        is_exact = np.array_equal(lut, exact_lut(rec["a_bits"], rec["w_bits"], rec["signed"], rec["signed"]))
        assert (out / design["verilog"]).is_file() and rec["mode"] == ("exact" if is_exact else "approx")
        assert f"module {design['top']}" in (out / design["verilog"]).read_text()
        k_taps = int(np.prod(arrays[f"{name}/weight_codes"].shape[1:]))
        assert rec["fan_in"] == k_taps and 2 ** (rec["acc_bits"] - 1) > k_taps * np.abs(lut).max()
        act = rec["act"]
        xin = seen[name].double().numpy()
        qx = np.clip(np.round(xin / act["scale"]) + act["zero_point"], act["qmin"], act["qmax"]).astype(np.int64)
        qw = arrays[f"{name}/weight_codes"].astype(np.int64)
        sw, zw = arrays[f"{name}/weight_scale"], arrays[f"{name}/weight_zero_point"]
        mask_a, mask_w = (1 << rec["a_bits"]) - 1, (1 << rec["w_bits"]) - 1
        if rec["kind"] == "QConv2d":  # stride 1, square padding in this model
            p = rec["padding"][0]
            qx = np.pad(qx, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=act["zero_point"])
            k = qw.shape[-1]
            h, w = qx.shape[2] - k + 1, qx.shape[3] - k + 1
            taps = np.stack([qx[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=2)
            taps = taps.reshape(qx.shape[0], -1, h, w)  # (N, C*k*k, H, W), channel-major like the weight
            wf = qw.reshape(qw.shape[0], -1)
            acc = lut[(taps[:, None] & mask_a), (wf[None, :, :, None, None] & mask_w)].sum(axis=2)
            sum_x, bshape = taps.sum(axis=1)[:, None], (1, -1, 1, 1)
        else:
            wf = qw
            acc = lut[(qx[:, None, :] & mask_a), (wf[None] & mask_w)].sum(axis=2)
            sum_x, bshape = qx.sum(axis=1)[:, None], (1, -1)
        kk = wf.shape[1]
        zwb, swb = zw.reshape(bshape), sw.reshape(bshape)
        bracket = acc - zwb * sum_x - act["zero_point"] * wf.sum(axis=1).reshape(bshape) + kk * act["zero_point"] * zwb
        y = act["scale"] * swb * bracket + (arrays[f"{name}/bias"].reshape(bshape) if rec["bias"] else 0.0)
        got = outs[name].double().numpy()
        step = act["scale"] * swb  # one accumulator LSB in output units
        assert np.all(np.abs(y - got) <= 0.05 * step + 1e-6 * np.abs(got)), name


def test_designs_without_a_circuit_are_named(saved_run, tmp_path):
    from fames.appmul.core import AppMul, exact_lut
    from fames.appmul.families import build
    from fames.flow.handoff import without_circuit
    from fames.flow.report import markdown

    table = AppMul("table_only", 4, 4, False, False, exact_lut(4, 4))
    built = build("trunc", 4, 4, False, False, k=2)
    spec = {"l1": "table_only", "l2": {"granularity": "filter", "appmuls": [built.name, "table_only"], "index": [0]}}
    assert without_circuit(spec, [table, built]) == ["table_only"]
    assert without_circuit({"l2": built.name}, [table, built]) == []
    # the hand-off gives it a truth-table module
    import dataclasses
    import json

    from fames.flow.handoff import write_handoff

    model, out, _, result = saved_run
    name, spec = next((n, sp) for n, sp in result.best.assignment.items() if isinstance(sp, str))
    lib = fames.Library.load(out / "library")
    twins = [dataclasses.replace(lib[spec], name=n, verilog=None, top=None, structural=False)
             for n in ("tw-in", "tw_in")]  # two names that sanitize alike
    other = next(n for n in result.best.assignment if n != name)
    written = write_handoff(model, {**result.best.assignment, name: "tw-in", other: "tw_in"},
                            fames.Library([*lib, *twins]), tmp_path)
    rec = json.loads((tmp_path / "hardware.json").read_text())
    assert rec["without_circuit"] == ["tw-in", "tw_in"]
    files = {d["name"]: d for n in (name, other) for d in rec["layers"][n]["appmuls"]}
    assert files["tw-in"]["from_table"] and files["tw-in"]["verilog"] != files["tw_in"]["verilog"]
    for d in files.values():
        assert tmp_path / d["verilog"] in written and f"module {d['top']}" in (tmp_path / d["verilog"]).read_text()
    report = result.to_dict()
    assert report["without_circuit"] == [] and "without a circuit" not in markdown(report)
    assert "Designs chosen without a circuit** (known only by their table" in markdown(
        {**report, "without_circuit": ["table_only"]})


def test_an_undone_calibration_is_said_in_the_report(saved_run, tmp_path):
    from fames.flow.report import markdown, plots

    report = saved_run[3].to_dict()  # run without calibration: nothing undone
    assert report["timing"]["calibrate_all_s"] == pytest.approx(sum(r["calibrate_s"] for r in report["runs"]))
    assert "alibration undone" not in markdown(report)
    calibrated = {**report, "config": {**report["config"], "calibration": {"samples": 64}}}
    runs = [{**r, "calibration_kept": False, "calibrate_s": 2.0} for r in report["runs"]]
    text = markdown({**calibrated, "runs": runs})
    assert "calibration undone: it lost accuracy where it is judged" in text and "Calibration undone at R = 0.9" in text
    assert "alibration undone" not in markdown({**calibrated, "runs": [{**r, "calibration_kept": True} for r in runs]})
    assert (tmp_path / "fig_calibration.png") in plots({**calibrated, "runs": runs}, tmp_path)

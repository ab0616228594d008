"""A user's own model class, weights and image folder through `fames run`, and the errors for bad input."""

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fames
from fames.cli import main
from fames.data import get_dataset
from fames.errors import FamesError
from fames.flow.config import RunConfig

FACTORY = '''
import torch
from torch import nn


def digits(split):
    from fames.data import get_dataset

    return get_dataset("digits", split)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 10))
'''


@pytest.fixture()
def user_files(tmp_path, monkeypatch):
    """``mynets.tiny_net`` on the path, a plain state_dict of it, and digits as an image folder (RGB PNGs)."""
    (tmp_path / "mynets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    for split, n in (("train", 400), ("test", 100)):
        ds = get_dataset("digits", split)
        for i in range(n):
            x, y = ds[i]
            img = (x[0].numpy() * 255).astype(np.uint8)
            folder = tmp_path / "imgs" / split / str(int(y))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([img] * 3, -1)).save(folder / f"{i}.png")
    from mynets import tiny_net

    torch.save(tiny_net().state_dict(), tmp_path / "weights.pt")
    return tmp_path


def test_run_with_import_path_state_dict_and_imagefolder(user_files, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: mynets:tiny_net
        checkpoint: {user_files / "weights.pt"}
        quant: W4A4
        families: [trunc]
        budget: 0.8
        data: {{dataset: "imagefolder:{user_files / "imgs"}", batch_size: 50}}
        estimator: {{samples: 32, validate: false}}
        calibration: false
        output: {tmp_path / "out"}
    """))
    assert main(["run", str(cfg)]) == 0
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {layer["name"] for layer in r["layers"]} == {"0", "4"}
    assert r["runs"][0]["relative_energy"] <= 0.8 + 1e-9


def test_run_with_a_dataset_factory(user_files, tmp_path):
    cfg = RunConfig.from_dict({"model": "digits_cnn", "quant": "W4A4", "families": ["trunc"], "budget": 0.8,
                               "data": {"dataset": "mynets:digits"}, "estimator": {"samples": 32, "validate": False},
                               "calibration": False, "output": str(tmp_path / "out")})
    r = fames.run(cfg, progress=False)
    assert r.rows[0].relative_energy <= 0.8 + 1e-9 and r.exact_accuracy > 0


def test_bad_input_names_the_problem_and_the_fix(tmp_path):
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10)).eval()
    with pytest.raises(FamesError, match="no quantized layer: call fames.quantize"):
        fames.approximate_(net, (x, y))
    fames.quantize(net, "W4A4")
    fames.calibrate_ptq(net, [(x, y)])
    with pytest.raises(FamesError, match=r"batches must be \(x, y\) pairs"):
        fames.approximate_(net, [(x, "labels")])
    with pytest.raises(FamesError, match="every batch must be an"):
        fames.approximate_(net, [x])
    with pytest.raises(FamesError, match="estimator.samples=256 training images but the data holds 16"):
        fames.approximate_(net, (x, y))
    small = fames.FamesConfig(budget=0.9, estimator=fames.EstimatorConfig(samples=8, validate=False))
    with pytest.raises(FamesError, match="no AppMul for the layer widths.*4x4 signed"):
        fames.approximate_(net, (x, y), library=fames.Library(), config=small)
    with pytest.raises(FamesError, match="config must be a fames.FamesConfig"):
        fames.approximate_(net, (x, y), config={"budget": 0.9})
    with pytest.raises(FamesError, match="cannot import 'no_such_package.nets'.*PYTHONPATH"):
        fames.run({"model": "no_such_package.nets:net", "output": str(tmp_path / "o")})
    with pytest.raises(FamesError, match="has no attribute 'nope'"):
        fames.run({"model": "torch.nn:nope", "output": str(tmp_path / "o")})
    with pytest.raises(FamesError, match="lists a ratio twice"):
        fames.FamesConfig(budget=[0.7, 0.7])
    with pytest.raises(FamesError, match="calibration.seed=3 would be ignored.*run's seed"):
        RunConfig.from_dict({"seed": 1, "calibration": {"seed": 3}})
    with pytest.raises(FamesError, match="estimator 'measured'.*granularity 'layer'"):
        RunConfig.from_dict({"estimator": {"kind": "measured"}, "selection": {"granularity": "filter"}})
    with pytest.raises(FamesError, match=r"3 problem\(s\).*budget.*estimator.samples.*calibration.epochs"):
        RunConfig.from_dict({"budget": [True], "estimator": {"samples": "abc"}, "calibration": {"epochs": 1.5}})


def test_the_report_lists_the_layers_left_in_floating_point():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.up = nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 2, 2)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.up(torch.relu(self.conv(x))).mean((2, 3)))

    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,))
    with pytest.warns(UserWarning, match="up"):
        net = fames.quantize(Net().eval(), "W4A4")
    fames.calibrate_ptq(net, (x, y))
    cfg = fames.FamesConfig(budget=0.8, calibration=None, estimator=fames.EstimatorConfig(samples=16, validate=False))
    result = fames.approximate_(net, (x, y), families=("trunc",), config=cfg, progress=False)
    assert result.to_dict()["float_layers"] == ["up (ConvTranspose2d)"]
    assert "Layers computed in floating point (no AppMul, outside the energy figures): up (ConvTranspose2d)." \
        in result.report()
    # and what they multiply: conv 4 x 8 x 8 outputs x 27, fc 40; up 4 x 8 x 8 inputs x (4 x 2 x 2)
    share = 4096 / (4096 + 6912 + 40)
    assert result.to_dict()["float_macs"] == {"modules": {"up (ConvTranspose2d)": 4096}, "share": pytest.approx(share)}
    assert f"{100 * share:.1f}% of the model's; per inference: up (ConvTranspose2d) 4,096." in result.report()


def test_no_budget_within_the_bound_keeps_the_most_accurate_one_and_says_so():
    from fames.appmul.core import AppMul, exact_lut

    torch.manual_seed(0)
    x = torch.randn(600, 8)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    fames.quantize(net.eval(), "W4A4")
    fames.calibrate_ptq(net, (x, y))
    e = exact_lut(4, 4, True, True)  # two crude truncations: every budget loses far more than a point
    crude = [AppMul("t5", 4, 4, True, True, (e >> 5) << 5), AppMul("t4", 4, 4, True, True, (e >> 4) << 4)]
    cfg = fames.FamesConfig(budget=[0.45, 0.7], calibration=None,
                            estimator=fames.EstimatorConfig(samples=64, validate=False))
    with pytest.warns(UserWarning, match="no budget keeps the accuracy within 1 points"):
        res = fames.approximate_(net, (x, y), crude, cfg, liberty="synthetic", progress=False)
    assert not res.within_bound
    acc = {r.budget: r.accuracy for r in res.rows}
    assert acc[0.7] > acc[0.45] and res.best.budget == 0.7  # the most accurate, not the first budget asked for
    # the model now computes with AppMuls: a second call would take it for the exact model
    with pytest.raises(FamesError, match="already computes with AppMuls.*set_mode"):
        fames.approximate_(net, (x, y), crude, cfg, liberty="synthetic", progress=False)


def test_a_zoo_model_without_checkpoint_is_flagged_as_untrained():
    from fames.flow.inputs import load_run_model

    with pytest.warns(UserWarning, match="random initial weights"):
        load_run_model("digits_cnn", None)


def test_a_budget_of_one_that_keeps_every_layer_exact_skips_calibration():
    torch.manual_seed(0)
    net = fames.quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval(),
                         "W4A4")
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,))
    fames.calibrate_ptq(net, (x, y))
    cfg = fames.FamesConfig(budget=1.0, estimator=fames.EstimatorConfig(samples=16, validate=False))
    # calibration used to fail ("no layer of the model is in approx mode") when R = 1 kept every layer exact
    result = fames.approximate_(net, (x, y), families=("exact",), config=cfg, progress=False)
    assert result.energy_reduction == 0.0 and result.accuracy == result.exact_accuracy


def test_a_library_list_with_two_designs_of_one_name_is_refused_and_repeats_are_dropped():
    from dataclasses import replace

    from fames.appmul.families import build_family
    from fames.flow.library import candidate_appmuls

    widths = {(4, 4, True, True)}
    fam = build_family("trunc", 4, 4, True)
    # a list given twice over: one candidate per design (costs were mapped by name, so a repeat could swap designs)
    twice = candidate_appmuls(fam + fam, widths, families=(), progress=False)
    assert len(twice) == len(fam) + 1 and len({m.name for m in twice}) == len(twice)
    clash = [*fam, replace(fam[-1], name=fam[0].name)]
    with pytest.raises(FamesError, match=f"two different AppMuls are named '{fam[0].name}'"):
        candidate_appmuls(clash, widths, families=(), progress=False)


def test_without_eval_data_the_accuracies_are_measured_on_images_the_estimate_and_calibration_never_draw():
    from fames.flow.approximate import _default_eval
    from fames.flow.sources import TensorSamples

    x = torch.arange(1500, dtype=torch.float32).view(1500, 1, 1, 1)  # each image its own index
    samples = TensorSamples(x, torch.zeros(1500, dtype=torch.long))
    cfg = fames.FamesConfig(estimator=fames.EstimatorConfig(samples=256))  # calibration: 1,024 images
    rest, (ex, _) = _default_eval(samples, cfg)
    # what the calibration does not need (1,500 - 1,024 = 476 > a fifth, 300), and the rest is all the others
    assert len(ex) == 476 and len(rest) == 1024
    assert not set(ex.flatten().tolist()) & set(rest.x.flatten().tolist())  # was a draw that overlapped them
    small = TensorSamples(x[:200], torch.zeros(200, dtype=torch.long))
    with pytest.warns(UserWarning, match="pass eval_data"):  # every image is needed by the estimate
        _default_eval(small, fames.FamesConfig(estimator=fames.EstimatorConfig(samples=200)))


def test_quant_that_differs_from_a_quantized_checkpoint_is_refused_not_ignored(tmp_path):
    from fames.flow.run import run
    from fames.models import save_checkpoint
    from tests.conftest import digits_w4a4_model

    m = digits_w4a4_model()
    ck = save_checkpoint(m, tmp_path / "w4a4.pt", meta={"quant": m.fames_quant_config})
    base = {"model": "digits_cnn", "checkpoint": str(ck), "families": ["trunc"], "budget": 0.8, "calibration": False,
            "estimator": {"samples": 32, "validate": False}}
    with pytest.raises(FamesError, match="already quantized.*w_bits: 4 in the checkpoint, 8 asked"):
        run(base | {"quant": "W8A8", "output": str(tmp_path / "a")}, progress=False)  # ran W4A4 under a W8A8 label
    assert run(base | {"quant": "W4A4", "output": str(tmp_path / "b")}, progress=False).rows


def test_every_problem_of_a_config_and_of_its_inputs_is_named_at_once(tmp_path):
    from fames.flow.inputs import check_inputs

    bad = {"estimator": {"kind": "taylor-rank2", "curvature": "wrong"},
           "selection": {"granularity": "channel", "compensation": "maybe", "energy_metric": "area"},
           "synth": {"metric": "foo", "methods": ["abc"]}, "search": {"resolution": 0.5}}
    with pytest.raises(FamesError) as e:
        RunConfig.from_dict(bad)
    for word in ("taylor-rank2", "'wrong'", "'channel'", "'maybe'", "'area'", "'foo'", "['abc']", "resolution"):
        assert word in str(e.value)  # only the first bad value of each section was named
    # a wrong type in a section no longer hides that section's (or the config's) bad values
    with pytest.raises(FamesError) as e:
        RunConfig.from_dict({"estimator": {"samples": "many", "kind": "bogus"}, "calibration": {"epochs": "x",
                             "quantile_step": 0.7}, "seed": "s", "budget": [0.5, 0.5]})
    for word in ("estimator.samples", "'bogus'", "calibration.epochs", "quantile_step=0.7", "seed:", "twice"):
        assert word in str(e.value)
    cfg = RunConfig.from_dict({"library": "generat", "families": ["nosuch"], "liberty": str(tmp_path / "no.lib")})
    with pytest.raises(FamesError) as e:
        check_inputs(cfg)
    assert "'generat'" in str(e.value) and "['nosuch']" in str(e.value) and "no.lib" in str(e.value)

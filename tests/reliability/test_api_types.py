"""Public Python functions given an argument of the wrong type raise a FamesError naming it, never a bare
TypeError/AttributeError from deep inside."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fames
from fames.appmul.families import build_family
from fames.errors import FamesError
from fames.hw.cost import cost_library
from fames.method.assignment import substitute


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10))


NET = _net()


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x * mask)
X, Y = torch.rand(8, 3, 4, 4), torch.randint(0, 10, (8,))

CASES = {
    "quantize-model-str": lambda: fames.quantize("resnet20", "W4A4"),
    "quantize-config-int": lambda: fames.quantize(NET, 4),
    "calibrate_ptq-model-none": lambda: fames.calibrate_ptq(None, [(X, Y)]),
    "approximate-model-str": lambda: fames.approximate_("net", (X, Y)),
    "approximate-config-dict": lambda: fames.approximate_(fames.quantize(NET, "W4A4"), (X, Y), config={"budget": 1}),
    "approximate-data-int": lambda: fames.approximate_(fames.quantize(NET, "W4A4"), 5),
    "approximate-library-int": lambda: fames.approximate_(
        fames.quantize(NET, "W4A4"), (X, Y), library=3,
        config=fames.FamesConfig(budget=0.9, estimator=fames.EstimatorConfig(samples=4, validate=False))),
    "famesconfig-estimator-dict": lambda: fames.FamesConfig(estimator={"kind": "taylor-full"}),
    "famesconfig-calibration-bool": lambda: fames.FamesConfig(calibration=True),
    "famesconfig-budget-str": lambda: fames.FamesConfig(budget="0.7"),
    "famesconfig-budget-bool": lambda: fames.FamesConfig(budget=[True]),
    "library-str": lambda: fames.Library("my_library_dir"),
    "library-items-int": lambda: fames.Library([1, 2]),
    "build_family-signed-str": lambda: build_family("trunc", 4, 4, "no"),
    "build_family-bits-float": lambda: build_family("trunc", 4.0, 4, False),
    "cost_library-appmuls-str": lambda: cost_library("lib", "synthetic"),
    "cost_library-liberty-int": lambda: cost_library(build_family("exact", 2, 2, False), 3),
    "evaluate-model-str": lambda: fames.evaluate("model", [(X, Y)]),
    "substitute-library-dict": lambda: substitute(NET, {"layers": {}}, {}),
    "run-config-int": lambda: fames.run(7),
    # Hugging Face-style dict batches: named, with the wrapping that fixes them (were AttributeErrors)
    "calibrate_ptq-dict-batches": lambda: fames.calibrate_ptq(fames.quantize(_net(), "W4A4"), [{"pixels": X, "y": Y}]),
    "evaluate-dict-batches": lambda: fames.evaluate(NET, [{"pixels": X, "y": Y}]),
    "approximate-dict-batches": lambda: fames.approximate_(fames.quantize(_net(), "W4A4"), [{"pixels": X, "y": Y}]),
    # a forward that wants more than one input (raw TypeErrors before)
    "calibrate_ptq-two-input-model": lambda: fames.calibrate_ptq(fames.quantize(_TwoInputs(), "W4A4"), (X, Y)),
    "approximate-two-input-model": lambda: fames.approximate_(fames.quantize(_TwoInputs(), "W4A4"), (X, Y), config=(
        fames.FamesConfig(budget=0.9, estimator=fames.EstimatorConfig(samples=4, validate=False)))),
    # wrappers whose layers fames cannot rewrite (DataParallel crashed in calibration; TorchScript had "no layer")
    "quantize-torchscript": lambda: fames.quantize(torch.jit.script(_net()), "W4A4"),
    "quantize-dataparallel": lambda: fames.quantize(nn.DataParallel(_net()), "W4A4"),
    "approximate-dataparallel": lambda: fames.approximate_(nn.DataParallel(fames.quantize(_net(), "W4A4")), (X, Y)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_argument_types_raise_a_fames_error(case):
    match = {"dict-batches": r"b\['pixels'\], b\['y'\]", "two-input": "missing 1 required positional argument"}
    with pytest.raises(FamesError, match=next((v for k, v in match.items() if k in case), None)):
        CASES[case]()


def test_nan_weights_are_named_before_quantizing():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[2].bias[3] = float("inf")
    with pytest.raises(FamesError, match=r"layers \['2'\] hold NaN or infinite"):
        fames.quantize(net, "W4A4")


def test_calibrate_ptq_reads_a_pair_of_tensors_as_one_dataset_and_refuses_non_images():
    def net(seed):
        torch.manual_seed(seed)
        return fames.quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10)), "W4A4")

    x, y = torch.randn(300, 3, 4, 4), torch.randint(0, 10, (300,))
    x[290] *= 10  # the widest range lies in the last 44 images
    a = fames.calibrate_ptq(net(1), (x, y))  # a pair of tensors: the 300 images, not two batches
    b = fames.calibrate_ptq(net(1), [(x[:256], y[:256]), (x[256:], y[256:])])
    c = fames.calibrate_ptq(net(1), [(x[:256], y[:256])])
    assert not torch.equal(a[0].act_quant.scale, c[0].act_quant.scale)  # the last 44 images matter
    for qa, qb in zip((a[0], a[3]), (b[0], b[3]), strict=True):
        assert torch.equal(qa.act_quant.scale, qb.act_quant.scale)
        assert torch.equal(qa.act_quant.zero_point, qb.act_quant.zero_point)
    bad = x.clone()
    bad[5, 0, 0, 0] = float("nan")
    with pytest.raises(FamesError, match="NaN or infinite"):
        fames.calibrate_ptq(fames.quantize(nn.Sequential(nn.Conv2d(3, 4, 3)), "W4A4"), (bad, y))
    with pytest.raises(FamesError, match=r"labels\?\), not images"):
        fames.calibrate_ptq(fames.quantize(nn.Sequential(nn.Conv2d(3, 4, 3)), "W4A4"), [y])


def test_evaluate_names_out_of_range_labels_and_non_finite_weights():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10)).eval()
    with pytest.raises(FamesError, match=r"labels must lie in \[0, 10\).*0\.\.49"):
        fames.evaluate(net, [(X, torch.tensor([0, 1, 2, 3, 4, 5, 6, 49]))], progress=False)
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(FamesError, match=r"hold NaN/inf: \['0.weight'\]"):
        fames.evaluate(net, [(X, Y)], progress=False)


def test_evaluate_refuses_labels_that_are_not_class_indices_and_takes_numpy_and_lists():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10)).eval()
    for y, why in ((Y.float() + 0.5, "float32"), (F.one_hot(Y, 10), "y.argmax"), (Y[:, None], "y.argmax")):
        with pytest.raises(FamesError, match=f"labels must be integer class indices.*{why}"):
            fames.evaluate(net, [(X, y)], progress=False)  # fractional labels were truncated to other classes
    want = fames.evaluate(net, [(X, Y)], progress=False)["accuracy"]
    assert fames.evaluate(net, (X.numpy(), Y.numpy()), progress=False)["accuracy"] == want
    assert fames.evaluate(net, [(X, Y.tolist())], progress=False)["accuracy"] == want
    with pytest.raises(FamesError, match=r"cannot run on the data's inputs of shape \(1, 4, 4\)"):
        fames.evaluate(net, [(X[:, :1], Y)], progress=False)  # a raw torch RuntimeError


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.spare, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.out(torch.relu(self.a(x)))


def test_layers_the_forward_never_runs_are_put_back_in_float_or_named():
    from fames.method.energy import layer_macs
    from fames.quant import float_layers, qlayers

    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    torch.manual_seed(0)
    net = fames.quantize(_Unused().eval(), "W4A4")
    spare = net.spare.weight.detach().clone()
    with pytest.raises(FamesError, match=r"layers \['spare'\] do not run in the model's forward"):
        layer_macs(net, (8,))
    with pytest.warns(UserWarning, match=r"did not run in the forward.*\['spare'\]"):
        fames.calibrate_ptq(net, (x, y))
    assert [n for n, _ in qlayers(net)] == ["a", "out"] and float_layers(net) == ["spare (Linear)"]
    assert type(net.spare) is nn.Linear and torch.equal(net.spare.weight, spare)
    assert layer_macs(net, (8,)) == {"a": 128, "out": 64}
    with pytest.raises(FamesError, match="no calibration batches"):
        fames.calibrate_ptq(fames.quantize(_Unused().eval(), "W4A4"), [torch.randn(0, 8)])

    class Bypass(_Unused):
        def forward(self, x):
            return torch.zeros(len(x), 4)

    with pytest.raises(FamesError, match="no quantized layer ran"):
        fames.calibrate_ptq(fames.quantize(Bypass().eval(), "W4A4"), (x, y))


def test_a_model_that_does_not_fit_the_data_or_return_logits_is_named():
    from fames.train import check_fits

    with pytest.raises(FamesError, match=r"inputs of shape \(5,\).*check that the data fits the model"):
        check_fits(_Unused(), torch.randn(2, 5), torch.zeros(2, dtype=torch.long))

    class Pair(_Unused):
        def forward(self, x):
            return super().forward(x), x

    with pytest.raises(FamesError, match="returned a tuple; fames needs class logits"):
        check_fits(Pair().eval(), torch.randn(2, 8), torch.zeros(2, dtype=torch.long))


def test_bad_batchnorm_statistics_and_infinite_inputs_are_named():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[1].running_var[2] = -1.0  # folding it into the conv would write NaN weights
    with pytest.raises(FamesError, match=r"BatchNorm '1' has a running variance .* channel\(s\) \[2\]"):
        fames.quantize(net, "W4A4")
    q = fames.quantize(_net(), "W4A4")
    fames.calibrate_ptq(q, (X, Y))
    x = X.clone()
    x[5, 0, 1, 1] = float("inf")  # was accepted: the estimate and calibration ran on it
    with pytest.raises(FamesError, match="input 5 of a batch holds NaN or infinite values"):
        fames.approximate_(q, (x, Y), config=fames.FamesConfig(budget=0.9, estimator=fames.EstimatorConfig(
            samples=4, validate=False)), progress=False)


def test_user_data_types_and_orders_work_or_are_named():
    import numpy as np

    import fames
    from fames.errors import ConfigError

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randint(0, 256, (120, 1, 8, 8), dtype=torch.uint8)  # raw pixels: the quantizers take them as they are
    y = (torch.arange(120) % 3).to(torch.int32)  # int32 labels passed the check, then the loss refused them
    fames.quantize(net, "W4A4")
    fames.calibrate_ptq(net, x.float())
    cfg = fames.FamesConfig(budget=0.8, estimator=fames.EstimatorConfig(samples=32), calibration=None,
                            seed=np.int64(1))  # a numpy integer seed: TypeError before
    r = fames.approximate_(net, (x[:90], y[:90]), "generate", cfg, eval_data=(x[90:], y[90:]), families=["trunc"],
                           liberty="synthetic", progress=False)
    assert r.rows and fames.evaluate(net, (x[90:], y[90:]))["accuracy"] == pytest.approx(r.accuracy)
    with pytest.raises(ConfigError, match="EstimatorConfig.samples=32.0: Input should be a valid integer"):
        fames.EstimatorConfig(samples=32.0)
    # a class-sorted loader read only as far as needed: every sample of one class, said
    order = torch.argsort(y, stable=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[order].float(), y[order]), batch_size=10)
    from fames.flow.sources import as_samples

    with pytest.warns(UserWarning, match="all have label 0: a loader sorted by class"):
        as_samples(loader, 30)
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.float(), y), batch_size=10, shuffle=True)
    with pytest.warns(UserWarning, match="shuffles with torch's global random state"):
        as_samples(shuffled, 30)


@pytest.mark.parametrize("make, word", [
    (lambda: fames.SearchConfig(margin=float("nan")), "margin=nan"),  # the search ended at R = 1, no saving
    (lambda: fames.SearchConfig(margin=-5), "margin=-5"),  # loosened the bound
    (lambda: fames.SearchConfig(validation_images=1.5), "validation_images=1.5"),
    (lambda: fames.EstimatorConfig(forward_above=float("nan")), "forward_above=nan"),  # turned +forward off
    (lambda: fames.SelectionConfig(stop_at_loss="no"), "stop_at_loss='no'"),  # read as true
    (lambda: fames.FamesConfig(seed=None), "seed=None"),
    (lambda: fames.FamesConfig(max_accuracy_loss="1"), "max_accuracy_loss='1'"),
    (lambda: fames.CalibrationConfig(lr=-1.0), "lr=-1.0"),  # failed after the estimate, "internal error"
    (lambda: fames.quant.QuantConfig(percentile=200.0), "percentile=200"),
    (lambda: fames.quant.QuantConfig(fold_bn="no"), "fold_bn='no'"),
    (lambda: fames.RunConfig(output=None), "output=None"),
])
def test_configs_built_in_python_are_checked_like_yaml_ones(make, word):
    with pytest.raises(FamesError, match=re.escape(word)):
        make()
    assert fames.FamesConfig(seed=np.int64(3)).seed == 3 and type(fames.FamesConfig(seed=np.int64(3)).seed) is int


def test_evaluation_images_that_are_training_images_are_counted():
    from fames.flow.sources import eval_batches, shared_images

    x = torch.rand(40, 3, 4, 4)
    assert shared_images(eval_batches((x[20:], torch.zeros(20, dtype=torch.long))), [x[:20]]) == 0
    assert shared_images(eval_batches((x[10:30], torch.zeros(20, dtype=torch.long))), [x[:15], x[25:28]]) == 8


def _raising_factory():
    raise RuntimeError("factory failed inside")


def test_an_error_inside_the_users_model_factory_is_named_as_theirs():
    from fames.train import load_model

    with pytest.raises(FamesError, match="factory .*_raising_factory' raised RuntimeError: factory failed inside"):
        load_model(f"{__name__}:_raising_factory", None)  # was "fames: internal error ... please report it"


def test_a_quantized_state_dict_into_a_float_model_is_named_as_such():
    from fames.models import load_state_dict_checked

    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))

    with pytest.raises(FamesError, match="holds a quantized model's state .*quantize the model the same way first"):
        load_state_dict_checked(net(), fames.quantize(net(), "W8A8").state_dict(), "sd.pt")  # "Wrong model?"


def test_a_design_of_other_widths_in_an_assignment_names_its_layer():
    from fames.appmul.library import Library
    from fames.errors import AppMulError

    model = fames.quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)), "W4A4")
    lib = Library(build_family("trunc", 2, 2, True))
    name = next(m.name for m in lib)
    with pytest.raises(AppMulError, match=r"layer '2': AppMul .* but this layer multiplies 4-bit"):
        substitute(model, {"layers": {"2": name}}, lib)

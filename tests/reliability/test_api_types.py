"""Public Python functions given an argument of the wrong type raise a FamesError naming it, never a bare
TypeError/AttributeError from deep inside."""

import pytest
import torch
from torch import nn

import fames
from fames.appmul.families import build_family
from fames.errors import FamesError
from fames.hw.cost import cost_library
from fames.method.assignment import substitute

NET = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10))
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_argument_types_raise_a_fames_error(case):
    with pytest.raises(FamesError):
        CASES[case]()


def test_nan_weights_are_named_before_quantizing():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[2].bias[3] = float("inf")
    with pytest.raises(FamesError, match=r"layers \['2'\] hold NaN or infinite"):
        fames.quantize(net, "W4A4")

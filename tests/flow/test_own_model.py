"""The README's "Your own model" code, run as written on a custom CNN with a depthwise-separable block."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from fames.data import get_loader
from fames.train import TrainConfig, evaluate, train

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Your own model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10, "the README example must stay within 10 lines"
    return code


class DepthwiseSeparableCNN(nn.Module):
    """A user's model, not from the zoo: conv, depthwise-separable block, pooling, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 32), nn.ReLU(),
                                  nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw(self.dw(self.stem(x))))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = DepthwiseSeparableCNN()
    train(model, get_loader("digits", "train", 64, augment=True, seed=0), TrainConfig(epochs=8, lr=0.05, seed=0),
          progress=False)
    return model.eval()


def test_readme_example_on_a_custom_cnn(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_loader = get_loader("digits", "train", 128, shuffle=True, seed=0)
    test_loader = get_loader("digits", "test", 500)
    ns = {"model": trained, "train_loader": train_loader, "test_loader": test_loader}
    with pytest.warns(UserWarning, match="the search validates on 413 of the 1437 training images"):
        exec(compile(readme_example(), str(README), "exec"), ns)
    result = ns["result"]
    model = ns["model"]
    names = {n for n, m in DepthwiseSeparableCNN().named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {layer["name"] for layer in result.layers} == names  # every Conv2d/Linear was a candidate layer
    assert result.energy_reduction > 0
    assert result.exact_accuracy - result.accuracy <= 1.0  # on the validation split, where R was chosen
    test = result.test  # measured once on test_loader
    assert test["validation"]["images"] == 413  # the default 2,000 would leave too few of the 1,437 (warned)
    # the model now holds the headline assignment: its accuracy is the reported one
    assert evaluate(model, test_loader, progress=False)["accuracy"] == pytest.approx(test["accuracy"])
    assert set(result.assignment) == names
    # the uncertainty of the headline: same images, so the paired difference is exactly the accuracy difference
    pd, (lo, hi) = test["paired_difference"], test["accuracy_ci95"]
    assert pd["points"] == pytest.approx(test["accuracy"] - test["exact_accuracy"]) and pd["n"] == 360
    assert pd["ci95"][0] <= pd["points"] <= pd["ci95"][1] and lo <= test["accuracy"] <= hi
    assert "paired difference" in result.report()
    for f in ("report.md", "report.json", "assignment.json", "model.pt", "library/index.json"):
        assert (tmp_path / "my-run" / f).is_file(), f
    # the saved model, evaluated from the command line with the user's own factory, gives the reported accuracy
    # (with the AppMuls it was saved with), and with --exact that of its calibrated parameters on exact multipliers
    from fames.cli import main
    from fames.quant import set_mode

    set_mode(model, "exact")
    calibrated_exact = evaluate(model, test_loader, progress=False)["accuracy"]
    capsys.readouterr()
    for extra, want in (([], test["accuracy"]), (["--exact"], calibrated_exact)):
        assert main(["eval", "--model", f"{__name__}:DepthwiseSeparableCNN", "--checkpoint", "my-run/model.pt",
                     "--dataset", "digits", "--json", *extra]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == pytest.approx(want)
    # ... and in Python: the run's folder loaded into a fresh instance of the user's model, as reported
    import fames

    again = fames.load_model("my-run", DepthwiseSeparableCNN())
    assert evaluate(again, test_loader, progress=False)["accuracy"] == pytest.approx(test["accuracy"])
    exact = fames.load_model("my-run/model.pt", DepthwiseSeparableCNN(), exact=True)
    assert evaluate(exact, test_loader, progress=False)["accuracy"] == pytest.approx(calibrated_exact)
    (tmp_path / "my-run" / "assignment.json").rename(tmp_path / "elsewhere.json")
    with pytest.warns(UserWarning, match="loaded on exact multipliers; give assignment= and library="):
        fames.load_model("my-run", DepthwiseSeparableCNN())


def test_train_and_eval_take_the_users_own_model_factory(tmp_path, capsys):
    from fames.cli import main

    spec, ck = f"{__name__}:DepthwiseSeparableCNN", tmp_path / "own.pt"
    # it trained, then failed to save ("needs arch="): the training was lost
    assert main(["train", "--model", spec, "--dataset", "digits", "--epochs", "1", "--out", str(ck)]) == 0
    trained = capsys.readouterr().out.strip().splitlines()[-1]
    # the checkpoint names its factory: no --model needed to evaluate it, and the accuracy is the one reported
    assert main(["eval", "--checkpoint", str(ck), "--dataset", "digits"]) == 0
    evaluated = capsys.readouterr().out.strip().splitlines()[-1]
    assert trained.split()[2] == evaluated.split()[1]  # "test accuracy X% ..." and "accuracy X% ..."


class Video3D(torch.nn.Module):
    """A Conv3d model (5-D kernels: no channels_last) for clips ``(N, 1, 4, 8, 8)``."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3, 4)))


def clips(split):
    """A dataset factory: 30 random clips with labels (the test split; the train split is another draw)."""
    g = torch.Generator().manual_seed(0 if split == "test" else 1)
    return torch.utils.data.TensorDataset(torch.rand(30, 1, 4, 8, 8, generator=g), torch.arange(30) % 3)


def test_eval_takes_a_dataset_factory_and_a_model_with_5d_kernels(capsys):
    from fames.cli import main

    # both were refused: the factory unless --eval-images was given, the model by channels_last
    assert main(["eval", "--model", f"{__name__}:Video3D", "--dataset", f"{__name__}:clips"]) == 0
    assert "on 30" in capsys.readouterr().out

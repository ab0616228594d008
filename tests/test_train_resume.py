"""An interrupted `fames train` resumes where it stopped and ends with the weights of an uninterrupted run."""

import pytest
import torch
from torch import nn

import fames.train as ft
from fames.data import get_loader
from fames.train import Resume, TrainConfig, train


def _net() -> nn.Module:
    torch.manual_seed(3)  # the same initial weights every time
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))


def _run(resume=None, stop_at=None, monkeypatch=None):
    model = _net()
    loader = get_loader("digits", "train", 64, augment=True, seed=5)  # shuffled and augmented from its generator
    if stop_at is not None:
        real, calls = ft._step, {"n": 0}

        def interrupted(*a, **k):
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(*a, **k)

        monkeypatch.setattr(ft, "_step", interrupted)
    try:
        train(model, loader, TrainConfig(epochs=2.5, lr=0.05, seed=1), progress=False, resume=resume)
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()
    return model


def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = _run()
    resume = Resume(tmp_path / "c.pt.partial", key="run-1", every_s=1e9)  # saved on Ctrl-C only
    with pytest.raises(KeyboardInterrupt):
        _run(resume, stop_at=30, monkeypatch=monkeypatch)  # in the second epoch (23 batches each)
    assert resume.path.is_file() and torch.load(resume.path, weights_only=True)["step"] == 30
    resumed = _run(resume)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # dropout, order and augmentation continue exactly
    # the state of another run is not taken up
    with pytest.warns(UserWarning, match="another .* training run: starting afresh"):
        assert Resume(resume.path, key="run-2").load() is None

"""The demo's checkpoints do not depend on which of them were already on disk (a resumed demo)."""

import shutil

import pytest
import torch

from fames.flow.demo import train_digits


@pytest.mark.slow  # trains the float model and two QAT models twice: about a minute on 2 cores
def test_a_resumed_demo_trains_the_same_checkpoints(tmp_path):
    full = train_digits(tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    shutil.copy(full["float"], tmp_path / "b")  # interrupted after the float model
    resumed = train_digits(tmp_path / "b", progress=False)
    for label, path in full.items():  # the QAT runs drew their batches after the float run's epochs
        a, b = torch.load(path, weights_only=False), torch.load(resumed[label], weights_only=False)
        sa, sb = a.get("state_dict", a), b.get("state_dict", b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa if torch.is_tensor(sa[k])), label

"""Approximation-aware fine-tuning (`fames.method.finetune`): it learns through the AppMuls, repeats with its seed,
and refuses bad settings."""

import copy

import pytest
import torch

from fames.appmul.families import build
from fames.data import get_loader
from fames.errors import FamesError
from fames.method.finetune import FinetuneConfig, ShuffledBatches, finetune
from fames.quant import qlayers
from fames.train import evaluate
from tests.conftest import digits_w4a4_model


@pytest.fixture(scope="module")
def digits_w4a4():
    m = digits_w4a4_model()
    xs, ys = zip(*get_loader("digits", "train", 256, shuffle=False), strict=True)
    return m.eval(), (torch.cat(xs), torch.cat(ys)), get_loader("digits", "test", 360)


def _perforated(model):
    m = copy.deepcopy(model)
    a = build("perf", 4, 4, True, True, p=1)
    for _, layer in qlayers(m):
        layer.set_assignment(a)
    return m


def test_finetune_recovers_through_the_appmuls_and_repeats(digits_w4a4):
    base, data, test = digits_w4a4
    cfg = FinetuneConfig(samples=len(data[1]), epochs=2, lr=0.01, kd_alpha=0.5, batch_size=64)
    runs = []
    for _ in range(2):
        m = _perforated(base)
        before = evaluate(m, test, progress=False)
        finetune(m, data, cfg, teacher=base, seed=5, progress=False)
        runs.append((m, before, evaluate(m, test, progress=False)))
    (m1, before, after), (m2, _, _) = runs
    # still the approximate model (every layer runs its AppMul), and much better than before
    assert all(layer.mode == "approx" and layer.assignment.names()[0].startswith("perf") for _, layer in qlayers(m1))
    assert after["loss"] < 0.7 * before["loss"] and after["accuracy"] > before["accuracy"] + 10
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)  # same seed, same weights


def test_shuffled_batches_cover_every_image_once_and_flip_half():
    x = torch.arange(6 * 2 * 2 * 3, dtype=torch.float32).reshape(6, 1, 2, 6)
    y = torch.arange(6)
    seen = torch.cat([yb for _, yb in ShuffledBatches(x, y, 4, hflip=False, seed=0)])
    assert sorted(seen.tolist()) == list(range(6)) and len(ShuffledBatches(x, y, 4, False, 0)) == 2
    flipped = 0
    for xb, yb in ShuffledBatches(x, y, 6, hflip=True, seed=1):
        for img, label in zip(xb, yb, strict=True):
            if torch.equal(img, x[label].flip(-1)):
                flipped += 1
            else:
                assert torch.equal(img, x[label])
    assert 0 < flipped < 6
    assert torch.equal(x, torch.arange(72, dtype=torch.float32).reshape(6, 1, 2, 6))  # the source stays unflipped


def test_bad_finetune_settings(digits_w4a4):
    base, data, _ = digits_w4a4
    with pytest.raises(FamesError, match="epochs=0"):
        FinetuneConfig(epochs=0)
    with pytest.raises(FamesError, match="kd_alpha=2"):
        FinetuneConfig(kd_alpha=2)
    with pytest.raises(FamesError, match="needs the exact model as teacher"):
        finetune(_perforated(base), data, FinetuneConfig(), teacher=None, progress=False)
    with pytest.raises(FamesError, match="as many labels as images"):
        ShuffledBatches(data[0], data[1][:10], 8, False, 0)

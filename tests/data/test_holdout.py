"""Held-out training images: a fixed split that `fames train --holdout` never trains on and the target mode
validates on."""

import numpy as np
import pytest
import torch

from fames.cli import main
from fames.data import DatasetError, get_dataset, held_out, holdout_indices, holdout_record
from fames.flow.sources import DatasetSamples, holdout
from fames.models import load_checkpoint_file


def test_holdout_indices_partition_the_set_and_are_fixed():
    held, rest = holdout_indices(1000, 100)
    assert len(held) == 100 and len(rest) == 900
    assert sorted(np.concatenate([held, rest]).tolist()) == list(range(1000))
    assert np.array_equal(holdout_indices(1000, 100)[0], held)  # the same split every time
    assert not np.array_equal(np.sort(held), np.arange(100))  # a random choice, not the first images
    with pytest.raises(DatasetError, match="0 < n < 1000"):
        holdout_indices(1000, 1000)


def test_record_round_trip_and_wrong_set_size():
    rec = holdout_record(1000, 50)
    assert np.array_equal(held_out(rec, 1000)[0], holdout_indices(1000, 50)[0])
    assert held_out(None, 1000) is None
    with pytest.raises(DatasetError, match="held out 50 of 1000"):
        held_out(rec, 999)
    with pytest.raises(DatasetError, match="malformed"):
        held_out({"n": 5}, 1000)


def test_validation_comes_from_the_checkpoints_held_out_images():
    ds = get_dataset("digits", "train")
    samples = DatasetSamples(ds, "digits")
    rec = holdout_record(len(ds), 200)
    held, rest_idx = held_out(rec, len(ds))
    rest, (vx, vy) = holdout(samples, 150, seed=3, record=rec)
    x_all, y_all = ds.tensors()
    assert torch.equal(vx, x_all[held[:150]]) and torch.equal(vy, y_all[held[:150]])
    assert len(rest) == len(rest_idx)  # the rest is exactly what the checkpoint trained on
    rx, _ = rest.dataset.tensors()
    assert torch.equal(rx, x_all[rest_idx])
    with pytest.raises(Exception, match="holds out only 200"):
        holdout(samples, 201, seed=0, record=rec)


def test_train_holdout_is_recorded_and_inherited(tmp_path):
    f = tmp_path / "float.pt"
    args = ["train", "--model", "digits_cnn", "--dataset", "digits", "--epochs", "0.05", "--lr", "0.01"]
    assert main([*args, "--holdout", "300", "--out", str(f)]) == 0
    meta = load_checkpoint_file(f)[1]
    n = len(get_dataset("digits", "train"))
    assert meta["holdout"] == holdout_record(n, 300)
    q = tmp_path / "w4a4.pt"
    assert main([*args, "--init", str(f), "--bits", "W4A4", "--out", str(q)]) == 0
    assert load_checkpoint_file(q)[1]["holdout"] == meta["holdout"]  # QAT keeps the float model's split
    assert main([*args, "--init", str(f), "--holdout", "100", "--out", str(tmp_path / "bad.pt")]) == 2
    before = q.read_bytes()  # an existing checkpoint is not replaced without --force
    assert main([*args, "--init", str(f), "--bits", "W4A4", "--out", str(q)]) == 2 and q.read_bytes() == before
    # an init without a record may have trained on the images held out now: recorded, and said by a run
    seen = tmp_path / "seen.pt"
    plain = tmp_path / "plain.pt"
    assert main([*args, "--out", str(plain)]) == 0
    assert main([*args, "--init", str(plain), "--holdout", "300", "--out", str(seen)]) == 0
    assert load_checkpoint_file(seen)[1]["holdout"]["seen_by_init"] == str(plain)
    again = tmp_path / "again.pt"
    assert main([*args, "--init", str(seen), "--bits", "W4A4", "--out", str(again)]) == 0
    assert load_checkpoint_file(again)[1]["holdout"]["seen_by_init"] == str(plain)  # carried on

"""Estimator properties that hold exactly: linear models, rank-1 curvature of two classes, path agreement."""

import numpy as np
import pytest
import torch
from torch import nn

from fames.appmul.families import build_family
from fames.errors import FamesError
from fames.estimate import TaylorEstimator, counting_gradients, true_loss_changes
from fames.quant import calibrate_ptq, qlayers, quantize


def _model(classes: int, conv: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    body = [nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten()] if conv else [nn.Flatten()]
    feat = 4 * 4 * 4 if conv else 3 * 8 * 8
    model = nn.Sequential(*body, nn.Linear(feat, classes)).eval()
    quantize(model, {"w_bits": 4, "a_bits": 4, "first_last": "same"})
    x = torch.randn(24, 3, 8, 8)
    calibrate_ptq(model, [(x, None)], num_batches=1)
    y = torch.randint(0, classes, (24,))
    cands = {n: build_family("all", 4, 4, layer.signed)[1:9] for n, layer in qlayers(model)}
    return model, x, y, cands


def test_linearized_is_exact_for_a_linear_model():
    """One linear layer: the logits are linear in the error table, so CE at the linearized logits is the truth."""
    model, x, y, cands = _model(5, conv=False)
    est = TaylorEstimator("full", linearized=True, progress=False).estimate(model, x, y, cands)
    true = true_loss_changes(model, x, y, cands, progress=False)
    for n in cands:
        np.testing.assert_allclose(est.omega[n], true[n], rtol=1e-4, atol=1e-6)


def test_rank1_equals_full_for_two_classes():
    """diag(p) - p p^T has rank one for two classes: the rank-1 Hessian is the full Gauss-Newton one."""
    model, x, y, cands = _model(2)
    full = TaylorEstimator("full", progress=False).estimate(model, x, y, cands)
    rank1 = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands)
    for n in cands:
        np.testing.assert_allclose(rank1.second[n], full.second[n], rtol=1e-6, atol=1e-12)
        assert (full.second[n] >= 0).all()  # Gauss-Newton curvature is positive semi-definite


@pytest.mark.parametrize("hessian", ["rank1", "full"])
def test_table_and_candidate_paths_agree(hessian, monkeypatch):
    model, x, y, cands = _model(6)
    monkeypatch.setattr(TaylorEstimator, "TABLE_FACTOR", 10**6)
    tables = TaylorEstimator(hessian, chunk=10, progress=False).estimate(model, x, y, cands)
    monkeypatch.setattr(TaylorEstimator, "TABLE_FACTOR", 0)
    direct = TaylorEstimator(hessian, chunk=10, progress=False).estimate(model, x, y, cands)
    grads = counting_gradients(model, x, y)
    for n, ms in cands.items():
        np.testing.assert_allclose(tables.second[n], direct.second[n], rtol=1e-4, atol=1e-9)
        first = [float((grads[n] * m.error()).sum()) for m in ms]  # g . e_A from the counting gradient
        np.testing.assert_allclose(tables.first[n][0], first, rtol=1e-9)


def test_filter_first_order_sums_to_layer():
    model, x, y, cands = _model(4)
    lay = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands)
    fil = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands, granularity="filter")
    for n in cands:
        assert fil.omega[n].shape[0] == dict(qlayers(model))[n].weight.shape[0]
        np.testing.assert_allclose(fil.first[n].sum(0), lay.first[n][0], rtol=1e-4, atol=1e-9)


def test_bad_input():
    model, x, y, cands = _model(3)
    with pytest.raises(FamesError, match="hessian"):
        TaylorEstimator("diag")
    with pytest.raises(FamesError, match="needs hessian='full'"):
        TaylorEstimator("rank1", linearized=True)
    name = next(iter(cands))
    wrong = {name: build_family("exact", 8, 8, True)}
    with pytest.raises(FamesError, match="the layer needs"):
        TaylorEstimator("rank1", progress=False).estimate(model, x, y, wrong)

"""Estimator properties that hold exactly: linear models, rank-1 curvature of two classes, path agreement."""

import contextlib
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fames.appmul.core import AppMul, exact_lut
from fames.appmul.families import build, build_family
from fames.errors import FamesError
from fames.method.estimate import MeanForward, TaylorEstimator, counting_gradients, make_estimator, true_loss_changes
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
    est = TaylorEstimator("full", linearized=True, first_order="signed", progress=False).estimate(model, x, y, cands)
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
        np.testing.assert_allclose(tables.first[n][0], first, rtol=1e-5)  # tables contract in float32
        np.testing.assert_allclose(direct.first[n][0], first, rtol=1e-5)


@pytest.mark.parametrize("hessian", ["rank1", "full"])
def test_both_paths_agree_on_token_inputs(hessian, monkeypatch):
    """Linear layers on (N, L, features): the per-candidate path summed only a conv's positions and crashed."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 4)

        def forward(self, x):  # (N, L 5, 6)
            return self.b(torch.relu(self.a(x))).mean(1)

    torch.manual_seed(0)
    model, x = Tokens().eval(), torch.randn(12, 5, 6)
    quantize(model, {"w_bits": 4, "a_bits": 4, "first_last": "same"})
    calibrate_ptq(model, x)
    y = torch.randint(0, 4, (12,))
    cands = {n: build_family("all", 4, 4, layer.signed)[1:5] for n, layer in qlayers(model)}
    got = {}
    for factor in (10**6, 0):
        monkeypatch.setattr(TaylorEstimator, "TABLE_FACTOR", factor)
        got[factor] = TaylorEstimator(hessian, progress=False).estimate(model, x, y, cands)
    for n in cands:
        np.testing.assert_allclose(got[0].first[n], got[10**6].first[n], rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(got[0].second[n], got[10**6].second[n], rtol=1e-4, atol=1e-12)


def test_filter_first_order_sums_to_layer():
    model, x, y, cands = _model(4)
    lay = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands)
    fil = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands, granularity="filter")
    for n in cands:
        assert fil.omega[n].shape[0] == dict(qlayers(model))[n].weight.shape[0]
        np.testing.assert_allclose(fil.first[n].sum(0), lay.first[n][0], rtol=1e-4, atol=1e-9)


def _constant_error(layer, c: int) -> AppMul:
    """Every product off by ``c``: the output error is the same for every sample (its own mean)."""
    ex = exact_lut(layer.a_bits, layer.w_bits, layer.signed, layer.signed)
    return AppMul(f"const{c}", layer.a_bits, layer.w_bits, layer.signed, layer.signed, ex + c)


@pytest.mark.parametrize("hessian", ["rank1", "full"])
def test_mean_forward_is_exact_for_a_constant_error(hessian):
    """A constant error table shifts the output by the same amount for every sample: the remainder is zero, so
    the mean-forward estimate is the measured loss change (layers before the shifted one replayed)."""
    model, x, y, cands = _model(5)
    for n, layer in qlayers(model):
        cands[n] = cands[n][:3] + [_constant_error(layer, c) for c in (-2, 1, 3)]
    est = MeanForward(TaylorEstimator(hessian, chunk=10, first_order="signed", progress=False), -1.0, chunk=10,
                      progress=False)
    got = est.estimate(model, x, y, cands)
    true = true_loss_changes(model, x, y, cands, progress=False)
    for n in cands:
        np.testing.assert_allclose(got.omega[n][0, 3:], true[n][0, 3:], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.first[n][0, 3:], 0.0, atol=1e-7)  # float32 gradients
        np.testing.assert_allclose(got.second[n][0, 3:], 0.0, atol=1e-10)
        assert np.abs(true[n][0, 3:]).min() > 1e-4  # the shifts do change the loss (100x the tolerance)
        # the random designs keep a zero-mean remainder: first + second order of it, plus the measured shift
        assert (got.second[n][0, :3] >= 0).all() and np.isfinite(got.omega[n]).all()


def test_measured_estimate_of_a_constant_error_is_the_shifted_bias_loss():
    """One linear layer, every product off by c: the logits move by c * fan_in * s_x * s_w, i.e. the per-image loss
    change is that of the exact model with its bias shifted so; its mean and standard error are the measured estimate
    (plus ``margin`` standard errors); the exact design changes nothing."""
    model, x, y, cands = _model(5, conv=False)
    (n, layer), = qlayers(model)
    cs = (-3, 2, 5)
    cands[n] = [_constant_error(layer, 0)] + [_constant_error(layer, c) for c in cs]
    base = F.cross_entropy(model(x), y, reduction="none").double()
    scale = layer.error_scale((-1,), torch.float64)
    mean, se = [0.0], [0.0]
    for c in cs:
        bias = layer.bias.detach().clone()
        with torch.no_grad():
            layer.bias += (c * layer.in_features * scale).to(bias.dtype)
            d = F.cross_entropy(model(x), y, reduction="none").double() - base
            layer.bias.copy_(bias)
        mean.append(d.mean().item())
        se.append(d.std().item() / len(d) ** 0.5)
    assert min(abs(v) for v in mean[1:]) > 1e-3 and min(se[1:]) > 1e-4  # the shifts do change the loss, unevenly
    for margin in (0.0, 2.0):
        got = make_estimator("measured", progress=False, measured_margin=margin).estimate(model, x, y, cands)
        assert got.omega[n].shape == (1, 4) and got.granularity == "layer"
        np.testing.assert_allclose(got.omega[n][0], np.array(mean) + margin * np.array(se), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(got.second[n], 0.0)


def _full_forward_loss_changes(model, x, y, cands):
    """Reference: every candidate in its layer, the whole model run from the input (no replay), float32 gather."""
    base = F.cross_entropy(model(x), y).item()
    out = {}
    for n, layer in qlayers(model):
        vals = []
        for m in cands.get(n, []):
            layer.set_assignment(m)
            layer.emulation_dtype, layer.gather_only = torch.float32, True
            vals.append(F.cross_entropy(model(x), y).item() - base)
            layer.mode, layer.gather_only = "exact", False
        out[n] = vals
    return out


class _Twice(nn.Module):
    """A quantized layer called twice per forward (weights shared): nothing can be replayed."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(torch.relu(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("shared", [False, True])
def test_replayed_loss_changes_match_full_forwards(shared):
    """Earlier layers replay their recorded outputs (and, with a shared layer, nothing does): the loss changes are
    those of whole forward passes, for every chunking of the batch."""
    if shared:
        torch.manual_seed(1)
        model = _Twice().eval()
        quantize(model, {"w_bits": 4, "a_bits": 4, "first_last": "same"})
        x = torch.randn(24, 3, 8, 8)
        calibrate_ptq(model, [(x, None)], num_batches=1)
        y = torch.randint(0, 4, (24,))
        cands = {n: build_family("all", 4, 4, layer.signed)[1:6] for n, layer in qlayers(model)}
    else:
        model, x, y, cands = _model(5)
    want = _full_forward_loss_changes(model, x, y, cands)
    for chunk in (24, 7):
        got = true_loss_changes(model, x, y, cands, progress=False, chunk=chunk)
        for n in cands:
            np.testing.assert_allclose(got[n][0], want[n], rtol=1e-4, atol=1e-6)
    assert max(abs(v) for vs in want.values() for v in vs) > 1e-3  # the candidates do change the loss


def test_measured_estimate_refuses_what_it_cannot_measure():
    model, x, y, cands = _model(3)
    est = make_estimator("measured", progress=False)
    with pytest.raises(FamesError, match="per layer.*taylor-rank1"):
        est.estimate(model, x, y, cands, granularity="filter")
    pairs = {n: [(m, None) for m in ms] for n, ms in cands.items()}
    with pytest.raises(FamesError, match="plain AppMuls"):
        est.estimate(model, x, y, pairs)
    for kind, kw in (("measured+forward", {}), ("measured", {"bias_correction": True})):
        with pytest.raises(FamesError, match="'measured' alone"):
            make_estimator(kind, **kw)


def test_mean_forward_only_above_the_threshold():
    """Below ``forward_above`` the Taylor value is kept as is; above it the forward replaces the mean part."""
    model, x, y, cands = _model(4)
    taylor = TaylorEstimator("full", chunk=10, progress=False).estimate(model, x, y, cands)
    taylor_full = TaylorEstimator("full", chunk=10, progress=False)
    never = MeanForward(taylor_full, forward_above=1e9, chunk=10, progress=False)
    always = MeanForward(taylor_full, forward_above=-1.0, chunk=10, progress=False)
    e_never, e_always = never.estimate(model, x, y, cands), always.estimate(model, x, y, cands)
    tau = float(np.median(np.concatenate([v.ravel() for v in taylor.omega.values()])))
    e_mid = MeanForward(taylor_full, forward_above=tau, chunk=10, progress=False).estimate(model, x, y, cands)
    for n in cands:
        np.testing.assert_array_equal(e_never.omega[n], taylor.omega[n])
        assert not e_never.shift[n].any()
        big = taylor.omega[n] > tau
        np.testing.assert_array_equal(e_mid.omega[n][~big], taylor.omega[n][~big])
        np.testing.assert_allclose(e_mid.omega[n][big], e_always.omega[n][big], rtol=1e-9)


def test_bad_input():
    model, x, y, cands = _model(3)
    with pytest.raises(FamesError, match="hessian"):
        TaylorEstimator("diag")
    with pytest.raises(FamesError, match="needs hessian='full'"):
        TaylorEstimator("rank1", linearized=True)
    with pytest.raises(FamesError, match="use granularity 'layer'"):
        MeanForward(TaylorEstimator("rank1", progress=False)).estimate(model, x, y, cands, granularity="filter")
    name = next(iter(cands))
    wrong = {name: build_family("exact", 8, 8, True)}
    with pytest.raises(FamesError, match="the layer needs"):
        TaylorEstimator("rank1", progress=False).estimate(model, x, y, wrong)


# (a_bits, w_bits, weight scheme, groups, dilation) of the single-layer checks
LAYER_CASES = [(4, 4, "symmetric", 1, 1), (3, 5, "affine", 2, 1), (8, 4, "symmetric", 1, 2), (2, 8, "affine", 4, 1)]


def _single_layers(a_bits, w_bits, scheme, groups, dilation, n_in):
    """A quantized Conv2d and a Linear (``n_in`` features), float64 emulation: ``(layer, x, two gradients)``."""
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=dilation, groups=groups)
    for base, x in ((conv, torch.randn(5, 4, 9, 9)), (nn.Linear(n_in, 5), torch.randn(5, 3, n_in))):
        model = nn.Sequential(base)
        quantize(model, {"w_bits": w_bits, "a_bits": a_bits, "weight_scheme": scheme})
        calibrate_ptq(model, [(x, None)], num_batches=1)
        layer = qlayers(model)[0][1]
        layer.emulation_dtype = torch.float64
        yield layer, x, [torch.randn_like(layer(x)) for _ in range(2)]


@pytest.mark.parametrize("a_bits, w_bits, scheme, groups, dilation", LAYER_CASES)
def test_counting_tables_give_every_candidates_output_change(a_bits, w_bits, scheme, groups, dilation):
    """<G, dY_A> per sample from the tables equals the contraction with the emulated output change."""
    torch.manual_seed(1)
    for layer, x, grads in _single_layers(a_bits, w_bits, scheme, groups, dilation, 12):
        U = layer.counting_tables(x, grads, max_elems=2000)  # small blocks: exercises the sample loop
        cands = build_family("all", a_bits, w_bits, layer.signed)[1:6]
        for m, d in zip(cands, layer.error_contributions(x, cands), strict=True):
            E = torch.from_numpy(m.error().astype(np.float64))
            for k, g in enumerate(grads):
                ref = (g.double() * d).reshape(len(x), -1).sum(1)
                np.testing.assert_allclose((U[k] * E).sum((1, 2)), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("a_bits, w_bits, scheme, groups, dilation", LAYER_CASES)
def test_mean_errors_are_the_batch_mean_of_the_output_changes(a_bits, w_bits, scheme, groups, dilation):
    """The histogram path gives mean_s dY_A[s] at every output position (padding, stride, groups, 3-D Linear)."""
    torch.manual_seed(3)
    for layer, x, _ in _single_layers(a_bits, w_bits, scheme, groups, dilation, 12):
        cands = build_family("all", a_bits, w_bits, layer.signed)[:6]  # [0] is exact
        mu = layer.mean_errors(x, cands, max_elems=300)  # small blocks: exercises the sample loop
        assert mu.shape == (len(cands), *layer(x).shape[1:])
        assert mu[0].abs().max() == 0
        for j, d in enumerate(layer.error_contributions(x, cands)):
            if d is not None:
                ref = d.mean(0)
                assert ref.abs().max() > 0
                np.testing.assert_allclose(mu[j], ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize(
    "a_bits, w_bits, scheme, groups, dilation",
    [(4, 4, "symmetric", 1, 1), (3, 5, "affine", 2, 1), (8, 4, "symmetric", 1, 2), (4, 8, "affine", 4, 1)],
)
def test_kernel_projections_match_kernel_assignments(a_bits, w_bits, scheme, groups, dilation):
    """Per-kernel <G, dY> equals the contraction with the output change of a layer where only that kernel uses
    the AppMul (emulated with a kernel assignment); summed over input channels it is the per-filter value."""
    torch.manual_seed(2)
    for layer, x, grads in _single_layers(a_bits, w_bits, scheme, groups, dilation, 6):
        sg = layer.signed
        cands = build_family("roup", a_bits, w_bits, sg)[:2] + build_family("all", a_bits, w_bits, sg)[3:5]
        P = layer.kernel_projections(x, grads, cands, max_elems=500)  # (2, S, O, C/groups, K), small sample blocks
        O, Cg = layer.group_shape("kernel")
        assert P.shape == (2, len(x), O, Cg, len(cands))
        for j, d in enumerate(layer.error_contributions(x, cands)):
            for k, g in enumerate(grads):
                prod = g.double() * (d if d is not None else 0.0)
                ref = prod.sum((2, 3)) if prod.dim() == 4 else prod.sum(1)  # (S, O)
                np.testing.assert_allclose(P[k, :, :, :, j].sum(-1), ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()))
        exact = build("exact", a_bits, w_bits, layer.signed, layer.signed)
        layer.set_assignment(exact)
        y0 = layer(x).detach()
        for o, c in ((1, 0), (O - 1, Cg - 1)):
            idx = torch.zeros(O, Cg, dtype=torch.long)
            idx[o, c] = 1
            for j, m in enumerate(cands):
                layer.set_assignment([exact, m], idx, "kernel")
                d = layer(x).detach() - y0
                for k, g in enumerate(grads):
                    ref = (g.double() * d).reshape(len(x), -1).sum(1)
                    np.testing.assert_allclose(P[k, :, o, c, j], ref, rtol=1e-5, atol=1e-6)  # float32 outputs


def test_kernel_estimate_matches_finite_perturbation_reference():
    """First-order and Gauss-Newton terms of one kernel equal those of the model's response to that kernel's
    output change dY, with the logit change J_s dY_s taken by differentiating through the rest of the model."""
    model, x, y, cands = _model(5)
    est = TaylorEstimator("full", chunk=10, progress=False).estimate(model, x, y, cands, granularity="kernel")
    layers = dict(qlayers(model))
    for n, (o, c) in zip(cands, ((2, 1), (3, 17)), strict=True):
        layer = layers[n]
        O, Cg = layer.group_shape("kernel")
        assert est.omega[n].shape == (O * Cg, len(cands[n]))
        ins = _layer_inputs(model, x)
        exact = build("exact", *layer.widths)
        idx = torch.zeros(O, Cg, dtype=torch.long)
        idx[o, c] = 1
        for j, m in enumerate(cands[n]):
            with torch.no_grad():
                layer.emulation_dtype = torch.float64
                layer.set_assignment(exact)
                y0 = layer(ins[n])
                layer.set_assignment([exact, m], idx, "kernel")
                d = (layer(ins[n]) - y0).float()
                layer.clear_assignment()
            t = torch.zeros(len(x), requires_grad=True)
            h = layer.register_forward_hook(partial(_add_direction, t=t, d=d))
            z = model(x)
            first = torch.autograd.grad(F.cross_entropy(z, y), t, retain_graph=True)[0].sum().item()
            q = torch.stack([torch.autograd.grad(z[:, k].sum(), t, retain_graph=True)[0] for k in range(5)], 1)
            h.remove()
            p = F.softmax(z.detach(), 1)
            second = ((p * q * q).sum(1) - (p * q).sum(1) ** 2).mean().item()
            g = o * Cg + c
            np.testing.assert_allclose(est.first[n][g, j], first, rtol=1e-3, atol=1e-7)
            np.testing.assert_allclose(est.second[n][g, j], second, rtol=1e-3, atol=1e-9)


def _layer_inputs(model, x):
    ins = {}
    hooks = [
        m.register_forward_pre_hook(partial(lambda mod, inp, n: ins.update({n: inp[0].detach()}), n=n))
        for n, m in qlayers(model)
    ]
    model(x)
    for h in hooks:
        h.remove()
    return ins


def _add_direction(mod, inp, out, t, d):
    """Layer output moved by ``t_s d_s`` per sample (a forward hook)."""
    return out + t.view(-1, *[1] * (out.dim() - 1)) * d


def test_kernel_first_order_sums_to_layer_and_bound_curvature():
    """Kernel terms summed over a layer give the layer's first order (computed by another path); the bounded
    curvature is non-negative, no smaller than each kernel's own, and sums to at least the layer's."""
    model, x, y, cands = _model(4)
    lay = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands)
    own = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands, granularity="kernel")
    bound = TaylorEstimator("rank1", progress=False, curvature="bound").estimate(model, x, y, cands, "kernel")
    for n in cands:
        np.testing.assert_allclose(own.first[n].sum(0), lay.first[n][0], rtol=1e-5, atol=1e-10)
        np.testing.assert_array_equal(bound.first[n], own.first[n])
        assert (own.second[n] >= 0).all()  # rank-1 curvature lam_s q_s^2 with lam_s >= 0
        assert (bound.second[n] >= own.second[n] * (1 - 1e-9)).all()
        assert (bound.second[n].sum(0) >= lay.second[n][0] * (1 - 1e-6)).all()
    with pytest.raises(FamesError, match="curvature"):
        TaylorEstimator("full", curvature="bound", linearized=True)


@pytest.mark.parametrize("hessian", ["rank1", "full"])
@pytest.mark.parametrize("granularity", ["filter", "kernel"])
def test_covariance_curvature_between_own_and_bound(hessian, granularity):
    """The covariance split is floored at each group's own term, never above the triangle bound, and its shares
    over a layer add up to at least the layer's second-order term (exactly, before the floor)."""
    model, x, y, cands = _model(4)
    lay = TaylorEstimator(hessian, progress=False).estimate(model, x, y, cands)
    est = {c: TaylorEstimator(hessian, progress=False, curvature=c).estimate(model, x, y, cands, granularity)
           for c in ("own", "bound", "covariance")}
    for n in cands:
        cov = est["covariance"].second[n]
        np.testing.assert_array_equal(est["covariance"].first[n], est["own"].first[n])
        assert (cov >= est["own"].second[n] - 1e-12).all()
        assert (cov <= est["bound"].second[n] * (1 + 1e-9) + 1e-12).all()
        assert (cov.sum(0) >= lay.second[n][0] * (1 - 1e-6) - 1e-12).all()
        if granularity == "kernel":  # the kernels of a filter share its output channel: their cross terms count
            assert (cov.sum(0) > est["own"].second[n].sum(0) * (1 + 1e-3)).any()


@pytest.mark.parametrize("rank1", [True, False])
def test_covariance_shares_add_up_to_the_whole(rank1):
    """Before the floor, the groups' shares of the quadratic form add up exactly to the form of their sum."""
    g = torch.Generator().manual_seed(0)
    S, C, G, K = 6, 5, 7, 3
    q = torch.randn(S, C, G, K, dtype=torch.float64, generator=g)
    p = torch.softmax(torch.randn(S, C, dtype=torch.float64, generator=g), 1)
    lam = torch.rand(S, dtype=torch.float64, generator=g) if rank1 else None
    est = TaylorEstimator("rank1" if rank1 else "full", progress=False, curvature="covariance")
    shares = est._curvature(None, None, p, lam, q).sum(1)  # (S, K)
    whole = est._curvature(None, None, p, lam, q.sum(2, keepdim=True), "own")[:, 0]
    torch.testing.assert_close(shares, whole)


class _Tokens(nn.Module):
    """Linear layers over (N, T, C) sequences; ``seq_first`` runs them on (T, N, C), as nn.Transformer's default."""

    def __init__(self, seq_first: bool):
        super().__init__()
        torch.manual_seed(3)
        self.l1, self.l2, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.seq_first = seq_first

    def forward(self, x):  # (N, T 5, 6)
        h = x.transpose(0, 1) if self.seq_first else x
        h = self.l2(torch.relu(self.l1(h)))
        return self.head((h.transpose(0, 1) if self.seq_first else h).mean(1))


def test_the_estimate_does_not_depend_on_where_a_layer_sees_the_samples():
    x, y = torch.randn(20, 5, 6), torch.randint(0, 4, (20,))
    est = {}
    for seq_first in (False, True):
        model = quantize(_Tokens(seq_first).eval(), "W4A4")
        calibrate_ptq(model, x)
        cands = {n: build_family("all", 4, 4, True)[1:7] for n, _ in qlayers(model)}
        with pytest.warns(UserWarning, match="one sample at a time") if seq_first else contextlib.nullcontext():
            est[seq_first] = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands)
    for n in est[False].omega:  # (T, N, C) was read as T samples: the terms of other samples mixed
        np.testing.assert_allclose(est[True].first[n], est[False].first[n], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(est[True].second[n], est[False].second[n], rtol=1e-6, atol=1e-9)


def test_a_shared_layer_is_estimated_over_all_its_calls():
    class Twice(nn.Module):  # one layer applied twice, or two copies of it: the same products either way
        def __init__(self, shared: bool):
            super().__init__()
            torch.manual_seed(5)
            self.a = nn.Linear(6, 6)
            self.b = self.a if shared else nn.Linear(6, 6)
            self.b.load_state_dict(self.a.state_dict())
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.b(torch.relu(self.a(x))))

    x, y = torch.randn(30, 6), torch.randint(0, 3, (30,))
    first, ranges = {}, None
    for shared in (True, False):
        model = quantize(Twice(shared).eval(), "W4A4")
        calibrate_ptq(model, x)
        if shared:
            ranges = {k: v.clone() for k, v in model.state_dict().items()}
        else:  # both copies quantize as the shared layer does
            model.load_state_dict({**ranges, **{k.replace("a.", "b.", 1): v for k, v in ranges.items()
                                                if k.startswith("a.")}})
        cands = {n: build_family("all", 4, 4, True)[1:7] for n, _ in qlayers(model) if n != "head"}
        first[shared] = TaylorEstimator("rank1", progress=False).estimate(model, x, y, cands).first
    # first-order terms are linear in the layer's output error: the shared layer's is the sum of its copies'
    np.testing.assert_allclose(first[True]["a"], first[False]["a"] + first[False]["b"], rtol=1e-6, atol=1e-9)

import copy
import warnings

import pytest
import torch
from torch import nn

from fames.appmul.families import build
from fames.data import get_loader
from fames.errors import FamesError
from fames.method.calibrate import (
    CalibrationConfig,
    CalibrationData,
    LearnableWeightClipping,
    QuantileSearch,
    calibrate,
    calibration_data,
)
from fames.quant import QuantConfig, calibrate_ptq, qlayers, quantize
from fames.train import evaluate
from tests.conftest import digits_w4a4_model


@pytest.fixture(scope="module")
def digits_w4a4():
    return digits_w4a4_model(), get_loader("digits", "train", 256, shuffle=False), get_loader("digits", "test", 360)


def _with_appmul(model, family="perf", **params):
    m = copy.deepcopy(model)
    a = build(family, 4, 4, True, True, **params)
    for _, layer in qlayers(m):
        layer.set_assignment(a)
    return m


def test_calibration_recovers_aggressive_appmuls(digits_w4a4):
    # perforation p=1 in every layer: ~31% / loss ~20 before; measured ~87% / loss ~1.3 after
    base, calib, test = digits_w4a4
    m = _with_appmul(base, "perf", p=1)
    before = evaluate(m, test, progress=False)
    rep = calibrate(m, calib, CalibrationConfig(progress=False))
    after = evaluate(m, test, progress=False)
    assert rep.samples == 1024
    assert [lc.name for lc in rep.layers] == ["conv1", "conv2", "linear"]
    assert rep.loss_after <= rep.loss_before
    assert rep.loss_after <= rep.loss_after_search + 1e-6  # keep-best LWC never worsens the CE objective
    for lc in rep.layers:
        assert lc.q is None or 0 <= lc.q < 0.5
        assert lc.mre_after <= lc.mre_before + 1e-12
        assert lc.clip is not None and 0 < lc.clip <= 1.02
    assert rep.loss_after < rep.loss_after_search - 0.02  # LWC itself helps (measured 1.41 -> 1.28)
    # the reported loss/accuracy after (the kept LWC epoch's, not re-measured) are the baked model's
    cd = calibration_data(calib, 1024)
    with torch.no_grad():
        out = torch.cat([m(xb) for xb, _ in cd.batches(128)])
    assert abs(torch.nn.functional.cross_entropy(out, cd.y).item() - rep.loss_after) < 1e-5
    assert abs(100.0 * float((out.argmax(1) == cd.y).float().mean()) - rep.accuracy_after) < 1e-9
    print(f"\nperf_p1 in all layers, held-out: {before['accuracy']:.1f}% / loss {before['loss']:.3f} -> "
          f"{after['accuracy']:.1f}% / loss {after['loss']:.3f}\n{rep.summary()}")
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > before["accuracy"] + 25
    # mode and assignment untouched: the model still runs the AppMuls
    assert all(layer.mode == "approx" for _, layer in qlayers(m))
    assert "conv1" in rep.summary()


def test_deterministic_with_seed(digits_w4a4):
    base, calib, _ = digits_w4a4
    cfg = CalibrationConfig(samples=256, epochs=2, batch_size=64, progress=False, seed=3)
    runs = []
    for _ in range(2):
        m = _with_appmul(base, "trunc", k=3)
        rep = calibrate(m, calib, cfg)
        runs.append((m.state_dict(), rep))
    (s1, r1), (s2, r2) = runs
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.quantiles == r2.quantiles and r1.lwc_history == r2.lwc_history
    assert r1.loss_after == r2.loss_after


def _mlp(appmul_first: bool, seed: int = 0):
    torch.manual_seed(seed)
    m = quantize(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), QuantConfig(w_bits=4, a_bits=4))
    x = torch.rand(512, 8) * 2 - 1  # uniform: no outliers
    calibrate_ptq(m, [x])
    if appmul_first:
        m[0].set_assignment(build("exact", 4, 4, True, True))  # approx mode, but no error
    m[2].set_assignment(build("perf", 4, 4, True, True, p=1))
    return m, x


@pytest.mark.parametrize("appmul_first", [True, False])
def test_quantile_zero_without_error_or_outliers(appmul_first):
    m, x = _mlp(appmul_first)
    y = torch.randint(0, 4, (512,))
    rep = calibrate(m, (x, y), CalibrationConfig(lwc=False, samples=512, progress=False))
    first = rep.layer("0")
    assert first.q == 0.0
    assert first.mre_after < 1e-5
    assert first.range_after[0] == pytest.approx(float(x.min()), rel=0.1)  # signed input: lower bound follows data
    assert rep.layer("2").approx


def test_quantile_search_finds_analytic_optimum():
    """Identity layer (W8), 4-bit activations, float reference. Sorted input: 1,750 values on the 16-level grid
    j/15 (j < 15), 200 ones, 50 outliers at 1.5. Range [0, 1] reproduces everything but the outliers (L1 error
    50 x 0.5 = 25); [0, 1.5] has L1 error ~38.9 on the grid; shorter ranges clip the ones. quantile(1 - q) = 1
    exactly for q in [0.03, 0.12] (positions (1 - q) 1999), so the first best q on the 0.01 grid is 0.03."""
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    m = quantize(nn.Sequential(lin), QuantConfig(w_bits=8, a_bits=4))
    grid = torch.arange(15).repeat_interleave(torch.tensor([117] * 10 + [116] * 5)).float() / 15
    assert grid.numel() == 1750
    x = torch.cat([grid, torch.ones(200), torch.full((50,), 1.5)])[torch.randperm(2000)].view(-1, 1)
    calibrate_ptq(m, [x])
    m[0].set_assignment(build("exact", 4, 8, True, True))
    layers = QuantileSearch(reference="float", progress=False).search(m, CalibrationData(x, None))
    lc = layers[0]
    assert lc.q == pytest.approx(0.03)
    assert lc.range_after[0] == 0.0  # non-negative input: the lower bound stays 0
    assert lc.range_after[1] == pytest.approx(1.0, abs=1e-6)
    assert lc.mre_after == pytest.approx(25 / float(x.sum()), rel=1e-4)
    assert lc.mre_after < lc.mre_before


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
def test_lwc_starts_at_ptq_gradients_flow_and_bake_is_exact(scheme):
    torch.manual_seed(1)
    m = quantize(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
                 QuantConfig(w_bits=4, a_bits=4, weight_scheme=scheme))
    x = torch.randn(64, 8)
    calibrate_ptq(m, [x])
    signed = scheme == "symmetric"
    for _, layer in qlayers(m):
        layer.set_assignment(build("trunc", 4, 4, signed, signed, k=3))
    keys = set(m.state_dict())
    zp0 = [layer.weight_quant.zero_point.clone() for _, layer in qlayers(m)]
    params = [n for n, _ in m.named_parameters()]
    lwc = LearnableWeightClipping(m)
    with torch.no_grad():
        assert torch.equal(lwc(x), m(x))  # starts exactly from the PTQ weight quantizer
    for p in m.parameters():
        p.requires_grad_(False)
    lwc(x).square().sum().backward()  # through the AppMul emulation (straight-through)
    for clip in lwc.clips.values():  # symmetric: only the larger of the two bounds of a channel gets gradient
        assert clip.gamma.grad.abs().sum() + clip.beta.grad.abs().sum() > 0
    with torch.no_grad():
        for p in lwc.parameters():
            p.copy_(torch.empty_like(p).uniform_(-1.0, 3.0))
        out = lwc(x)
        assert not torch.equal(out, m(x))
    lwc.bake()
    with torch.no_grad():
        assert torch.equal(m(x), out)  # bit-exact bake
    assert set(m.state_dict()) == keys and [n for n, _ in m.named_parameters()] == params
    assert lwc.parameters() == []
    with pytest.raises(FamesError, match="baked"):
        lwc(x)
    for (_, layer), z0 in zip(qlayers(m), zp0, strict=True):
        zp = layer.weight_quant.zero_point
        assert torch.equal(zp, zp.round())
        assert torch.equal(zp, z0) == signed  # affine: the clipped range moves the zero points


def test_options_run():
    m, x = _mlp(True)
    y = torch.randint(0, 4, (512,))
    rep = calibrate(m, (x, y), samples=256, epochs=1, reference="float", optimizer="sgd", kd_alpha=0.5,
                    learn_act_scale=True, search_exact_layers=False, progress=False)
    assert [lc.name for lc in rep.layers] == ["0", "2"]
    assert rep.layer("0").q is not None and rep.layer("0").clip is not None  # approx (exact AppMul): searched
    rep = calibrate(_mlp(False)[0], (x, y), samples=256, search=False, epochs=1, search_exact_layers=False,
                    progress=False)
    assert rep.layer("0").q is None and rep.layer("0").clip is not None and rep.loss_after <= rep.loss_before
    with pytest.raises(FamesError, match="unknown calibration setting"):
        calibrate(m, (x, y), epoch=3)


def test_bad_input():
    m, x = _mlp(False)
    for _, layer in qlayers(m):
        layer.clear_assignment()
    with pytest.raises(FamesError, match="approx mode"):
        calibrate(m, (x, torch.zeros(512, dtype=torch.long)), progress=False)
    m, x = _mlp(False)
    y = torch.randint(0, 4, (512,))
    with pytest.warns(UserWarning, match="asked for 1024 samples but the data holds 512"):
        rep = calibrate(m, [(x[:256], y[:256]), (x[256:], y[256:])], epochs=1, progress=False)
    assert rep.samples == 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cd = calibration_data(x, 100)  # labels absent: LWC distills from the reference logits
    assert cd.y is None and len(cd) == 100
    cd = calibration_data([x[:100], x[100:200]], 150)  # a list of input batches, not an (x, y) pair
    assert cd.y is None and torch.equal(cd.x, x[:150])
    rep = calibrate(m, x, samples=100, epochs=1, progress=False)
    assert rep.lwc_history and rep.loss_before != rep.loss_before  # nan: no labels, no CE
    with pytest.raises(FamesError, match="reference"):
        CalibrationConfig(reference="teacher")


def test_calibration_leaves_a_layer_kept_float_as_it_is():
    """A layer set to float mode was searched (its activation range moved), run in exact mode in the reference the
    others were tuned towards, and clipped by LWC."""
    from fames.quant import set_mode

    m, x = _mlp(appmul_first=False)
    set_mode(m, "float", ["0"])
    before = {k: v.clone() for k, v in m[0].state_dict().items()}
    cfg = CalibrationConfig(samples=256, epochs=1, batch_size=64, progress=False, search_exact_layers=True)
    seen = []
    hook = m[0].register_forward_pre_hook(lambda mod, _inp: seen.append(mod.mode))
    report = calibrate(m, (x[:256], torch.randint(0, 4, (256,))), cfg)
    hook.remove()
    assert set(seen) == {"float"} and m[0].mode == "float"
    assert all(torch.equal(before[k], v) for k, v in m[0].state_dict().items())
    assert report.quantiles["0"] is None  # not searched

"""Mean-error (bias) correction: exact cancellation of constant errors at every granularity, its estimate against
the control-variate path, the assignment file round trip, zero overhead, configuration."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fames.appmul.core import AppMul, exact_lut, operand_values
from fames.appmul.families import build
from fames.appmul.library import Library
from fames.errors import FamesError
from fames.method.compensate import (
    BiasCorrection,
    Compensation,
    activation_histogram,
    attach,
    compensate_model,
    fit_bias,
    fit_bias_calibrated,
    layer_inputs,
    model_overhead,
)
from fames.method.estimate import TaylorEstimator, estimate_with_compensation
from fames.quant import QConv2d, qlayers
from tests.method.test_compensate import _small_model


def _offset(c: int, bits: int = 4) -> AppMul:
    """An AppMul off by ``c`` on every product (signed ``bits`` x ``bits``)."""
    return AppMul(f"off{c}", bits, bits, True, True, exact_lut(bits, bits, True, True) + c)


def _w_only(bits: int = 4) -> AppMul:
    """An AppMul whose error depends on the weight only: ``E[x, w] = (w mod 3) - 1``."""
    e = operand_values(bits, True) % 3 - 1
    return AppMul("wonly", bits, bits, True, True, exact_lut(bits, bits, True, True) + e[None, :])


def _conv(zx: float) -> QConv2d:
    torch.manual_seed(0)
    layer = QConv2d(nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2), 4, 4, True)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-8, 8, (6, 2, 3, 3)).float())
        layer.act_quant.scale.fill_(1.0)
        layer.act_quant.zero_point.fill_(zx)
        layer.weight_quant.scale.fill_(1.0)
        layer.bias.copy_(torch.arange(6.0) - 2)
    layer.act_quant.calibrated.fill_(True)
    layer.weight_quant.calibrated.fill_(True)
    layer.emulation_dtype = torch.float64
    return layer.eval()


@torch.no_grad()
@pytest.mark.parametrize("granularity", ["layer", "filter", "kernel"])
@pytest.mark.parametrize("calibrated", [False, True])
def test_constant_errors_are_cancelled_exactly(granularity, calibrated):
    """Products off by a constant per group (padding taps included): the corrected output is the exact one."""
    layer = _conv(zx=0.0)
    x = torch.randint(-8, 8, (3, 4, 7, 7)).double()
    layer.set_assignment(build("exact", 4, 4, True, True))
    exact = layer(x)
    ms = [_offset(3), _offset(-2), _offset(5)]
    shape = layer.group_shape(granularity)
    index = torch.randint(0, 3, shape) if shape else torch.tensor(0)
    layer.set_assignment(ms if shape else ms[0], index if shape else None, granularity)
    assert not torch.equal(layer(x), exact)
    comp = fit_bias_calibrated(layer, x) if calibrated else fit_bias(layer, np.arange(1.0, 17.0))
    attach(layer, comp)
    assert torch.equal(layer(x), exact)
    assert comp.fit == ("calibrated" if calibrated else "offline") and comp.method == "bias"
    # live (during calibration): the batch's own mean error, whatever the stored alpha
    comp.alpha = comp.alpha * 0 + 7
    assert not torch.equal(layer(x), exact)
    comp.live = True
    assert torch.equal(layer(x), exact)


@pytest.mark.parametrize("granularity", ["layer", "filter", "kernel"])
def test_estimate_of_an_activation_independent_error_is_zero(granularity):
    """E[x, w] = e(w): the expected error is the error, so the corrected candidate changes nothing."""
    model, x, y = _small_model()
    cands = {n: [_w_only(), build("trunc", 4, 4, True, True, k=4)] for n, _ in qlayers(model)}
    on = TaylorEstimator("full", progress=False, bias_correction=True).estimate(model, x, y, cands, granularity)
    off = TaylorEstimator("full", progress=False).estimate(model, x, y, cands, granularity)
    for n in cands:
        np.testing.assert_allclose(on.omega[n][:, 0], 0.0, atol=1e-12)
        assert off.omega[n][:, 0].sum() > 1e-6 and on.omega[n][:, 1].sum() > 1e-6


def test_estimate_agrees_with_the_control_variate_path_and_sums_over_filters():
    """A control variate with beta = 0 and the same alpha is the same correction: both estimate paths agree; the
    first-order terms of the filters add up to the layer's."""
    model, x, y = _small_model()
    ms = [build("trunc", 4, 4, True, True, k=4), build("perf", 4, 4, True, True, p=2)]
    ql = dict(qlayers(model))
    ins = layer_inputs(model, list(ql), x)
    frac = 24
    pairs = {}
    for n, layer in ql.items():
        h = activation_histogram(layer, ins[n])
        pairs[n] = []
        for m in ms:
            layer.set_assignment(m)
            from fames.method.compensate.bias import _assigned_alpha

            alpha = np.rint(_assigned_alpha(layer, h) * 2.0**frac)
            o = layer.weight.shape[0]
            pairs[n].append((m, Compensation(m.name, "rank1", "offline", torch.zeros(16, dtype=torch.int64),
                                             torch.zeros(o, dtype=torch.int64), torch.from_numpy(alpha).long(), frac,
                                             layer.weight[0].numel(), 4, 8, 16)))
        layer.clear_assignment()
    cv = estimate_with_compensation(model, x, y, pairs, "rank1")
    est = TaylorEstimator("rank1", progress=False, bias_correction=True)
    ours = est.estimate(model, x, y, {n: ms for n in ql})
    first = TaylorEstimator("none", progress=False, first_order="signed", bias_correction=True)
    lay = first.estimate(model, x, y, {n: ms for n in ql}).first
    fil = first.estimate(model, x, y, {n: ms for n in ql}, "filter").first
    ker = first.estimate(model, x, y, {n: ms for n in ql}, "kernel").first
    for n in ql:
        np.testing.assert_allclose(ours.omega[n], cv[n], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(fil[n].sum(0), lay[n][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ker[n].sum(0), lay[n][0], rtol=1e-9, atol=1e-12)


@torch.no_grad()
def test_filter_level_correction_round_trips_through_the_assignment_file(tmp_path):
    from fames.method.assignment import current_assignment, describe_spec, load_assignment, save_assignment, substitute

    model, x, _ = _small_model()
    fresh = copy.deepcopy(model)
    ms = [build("trunc", 4, 4, True, True, k=4), build("perf", 4, 4, True, True, p=2)]
    for _, layer in qlayers(model):
        o = layer.weight.shape[0]
        layer.set_assignment(ms, torch.arange(o) % 2, "filter")
    comps = compensate_model(model, x, calibrated=True, method="bias")
    assert all(isinstance(c, BiasCorrection) for c in comps.values())
    assert model_overhead(model, {n: 1 for n in comps}, "no liberty needed", x) == {n: 0.0 for n in comps}
    spec = current_assignment(model)
    path = save_assignment(spec, tmp_path / "a.json")
    substitute(fresh, load_assignment(path), Library(ms))
    assert torch.equal(fresh(x), model(x))
    assert describe_spec(spec["layers"]["0"]).endswith("+ bias correction (calibrated)")
    layer = dict(qlayers(fresh))["0"]
    with pytest.raises(FamesError, match="refit"):
        attach(layer, BiasCorrection(["other"], "offline", layer.compensation.alpha, layer.compensation.fan_in))
    with pytest.raises(FamesError, match="alpha has shape"):
        attach(layer, BiasCorrection(layer.compensation.appmuls, "offline", torch.zeros(2, dtype=torch.int64),
                                     layer.compensation.fan_in))


def test_config_allows_bias_at_every_granularity_and_asks_for_a_taylor_estimate():
    from fames.flow.config import RunConfig

    for g in ("layer", "filter", "kernel"):
        assert RunConfig.from_dict({"selection": {"compensation": "bias", "granularity": g}})
    with pytest.raises(FamesError, match="Taylor"):
        RunConfig.from_dict({"selection": {"compensation": "bias"}, "estimator": {"kind": "l2"}})
    with pytest.raises(FamesError, match="'bias' works at every granularity"):
        RunConfig.from_dict({"selection": {"compensation": "auto", "granularity": "kernel"}})


def test_the_offline_bias_weights_codes_by_the_products_they_enter():
    """A padded 4x4 map: counting each padded element once (not once per window) overweighted the border codes and
    put the offline alpha 36% off the measured mean accumulated error; per product it is within 2%."""
    from fames.method.compensate import activation_histogram, fit_bias, fit_bias_calibrated
    from fames.quant import calibrate_ptq, quantize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1))
    quantize(net, {"w_bits": 4, "a_bits": 4, "weight_scheme": "affine", "first_last": "same"})
    x = torch.relu(torch.randn(256, 16, 4, 4))
    calibrate_ptq(net, x)
    (_, layer), = qlayers(net)
    layer.set_assignment(build("trunc", 4, 4, False, False, k=4))
    offline = fit_bias(layer, activation_histogram(layer, x)).alpha.double()
    measured = fit_bias_calibrated(layer, x).alpha.double()
    assert ((offline - measured).abs() / measured.abs()).max() < 0.02

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fames.appmul.core import AppMul, exact_lut
from fames.errors import AppMulError, FamesError
from fames.quant import QConv2d, QLinear, QuantConfig, calibrate_ptq, load_config, qlayers, quantize, set_mode
from fames.quant.convert import fold_bn


def _calibrated(layer, x):
    layer.act_quant.observing = True
    layer(x)
    layer.act_quant.finalize("minmax")
    layer.weight_quant.init_from_weight(layer.weight)
    return layer


def _random_appmul(a_bits, w_bits, signed, seed=0):
    rng = np.random.default_rng(seed)
    ex = exact_lut(a_bits, w_bits, signed, signed)
    lut = ex + rng.integers(-3, 4, ex.shape) * (np.abs(ex) > 3)
    return AppMul(f"rnd{seed}", a_bits, w_bits, signed, signed, lut)


def _int_reference_conv(layer, x, lut):
    """y = s_x s_w [sum LUT[qx, qw] - z_w sum qx - z_x sum qw + K z_x z_w] + b with explicit int64 loops."""
    with torch.no_grad():
        qx = layer.act_quant.codes(x).double()
        qw = layer.weight_codes().double()
        zx = layer.act_quant.zero_point.item()
        ph, pw = layer.padding
        qx = F.pad(qx - zx, (pw, pw, ph, ph)) + zx
        N, C, H, W = qx.shape
        O, Cg, kh, kw = qw.shape
        cols = F.unfold(qx, (kh, kw), dilation=layer.dilation, stride=layer.stride).long()  # (N, C*kh*kw, L)
        g = layer.groups
        cols = cols.view(N, g, Cg * kh * kw, -1)
        wq = qw.long().view(g, O // g, Cg * kh * kw)
        a_bits, w_bits = layer.a_bits, layer.w_bits
        T = torch.as_tensor(lut, dtype=torch.long)
        acc = T[cols[:, :, None, :, :] % (1 << a_bits), wq[None, :, :, :, None] % (1 << w_bits)].sum(3)
        acc = acc.reshape(N, O, -1).double()
        sum_x = cols.sum(2).double().repeat_interleave(O // g, 1)
        zw = layer.weight_quant.zero_point.double().view(1, O, 1)
        sum_w = qw.view(O, -1).sum(1).view(1, O, 1)
        K = Cg * kh * kw
        out = acc - zw * sum_x - zx * sum_w + K * zx * zw
        s = layer.act_quant.scale.abs().double() * layer.weight_quant.scale.abs().double().view(1, O, 1)
        out = out * s + layer.bias.double().view(1, O, 1)
        Ho = (H - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
        return out.view(N, O, Ho, -1)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits, groups, stride, pad", [((4, 4), 1, 1, 1), ((3, 6), 2, 2, 1), ((8, 2), 4, 1, 0)])
def test_qconv_approx_matches_integer_reference(signed, bits, groups, stride, pad):
    torch.manual_seed(0)
    w_bits, a_bits = bits
    conv = nn.Conv2d(8, 8, 3, stride=stride, padding=pad, groups=groups, bias=True)
    layer = QConv2d(conv, w_bits, a_bits, signed)
    x = torch.randn(2, 8, 7, 7) + 0.3
    _calibrated(layer, x)
    if not signed:  # affine weights: nonzero zero points exercise the exact correction terms
        assert (layer.weight_quant.zero_point != 0).any()
    m = _random_appmul(a_bits, w_bits, signed)
    layer.set_assignment(m)
    layer.emulation_dtype = torch.float64
    got = layer(x).double()
    want = _int_reference_conv(layer, x, m.lut)
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-5 * want.abs().max().item())
    # with the exact multiplier, approx mode equals exact (fake-quant) mode
    layer.set_assignment(AppMul("ex", a_bits, w_bits, signed, signed, exact_lut(a_bits, w_bits, signed, signed)))
    approx = layer(x)
    layer.mode = "exact"
    assert torch.allclose(approx, layer(x), atol=1e-4)


def test_qlinear_approx_and_width_mismatch():
    torch.manual_seed(1)
    lin = nn.Linear(12, 5)
    layer = QLinear(lin, 4, 4, True)
    x = torch.randn(3, 12)
    _calibrated(layer, x)
    ex = AppMul("ex", 4, 4, True, True, exact_lut(4, 4, True, True))
    layer.set_assignment(ex)
    a = layer(x)
    layer.mode = "exact"
    assert torch.allclose(a, layer(x), atol=1e-5)
    with pytest.raises(AppMulError, match="a_bits=4, w_bits=4, signed=True"):
        layer.set_assignment(AppMul("u", 4, 4, False, False, exact_lut(4, 4)))
    with pytest.raises(FamesError, match="shape"):
        layer.set_assignment([ex, ex], torch.zeros(3, dtype=torch.long), "filter")


def test_per_filter_assignment_uses_each_filters_appmul():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = _calibrated(QConv2d(conv, 4, 4, True), torch.randn(2, 4, 5, 5))
    x = torch.randn(2, 4, 5, 5)
    ms = [_random_appmul(4, 4, True, s) for s in range(3)]
    idx = torch.tensor([0, 1, 2, 2, 1, 0])
    layer.emulation_dtype = torch.float64
    layer.set_assignment(ms, idx, "filter")
    mixed = layer(x)
    for k, m in enumerate(ms):
        layer.set_assignment(m)
        single = layer(x)
        sel = idx == k
        assert torch.equal(mixed[:, sel], single[:, sel])


def test_fold_bn_is_exact_in_float():
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.eval()
    x = torch.randn(2, 3, 6, 6)
    want = bn(conv(x))
    fold_bn(conv, bn)
    assert torch.allclose(conv(x), want, atol=1e-5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.gru = nn.GRU(4, 4)  # unsupported: stays float, listed in a warning
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_quantize_model_w8a8_close_to_float_and_mixed_config(tmp_path):
    torch.manual_seed(4)
    net = _Net().eval()
    x = torch.randn(16, 1, 8, 8)
    ref = net(x)
    with pytest.warns(UserWarning, match="gru"):
        quantize(net, QuantConfig(w_bits=8, a_bits=8))
    calibrate_ptq(net, [x])
    names = [n for n, _ in qlayers(net)]
    assert names == ["conv1", "conv2", "fc"] and isinstance(net.bn1, nn.Identity)
    out = net(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    set_mode(net, "float")
    assert torch.allclose(net(x), ref, atol=1e-4)  # BN folding keeps the float function
    cfgfile = tmp_path / "mixed.yaml"
    cfgfile.write_text("w_bits: 4\na_bits: 4\nfirst_last: 8bit\nlayers:\n  conv2: W2A8\n")
    cfg = load_config(cfgfile)
    net2 = quantize(_Net().eval(), cfg)
    bits = {n: (m.w_bits, m.a_bits) for n, m in qlayers(net2)}
    assert bits == {"conv1": (8, 8), "conv2": (2, 8), "fc": (8, 8)}
    with pytest.raises(FamesError, match="unknown quantization config keys"):
        load_config({"w_bits": 4, "bogus": 1})
    with pytest.raises(FamesError, match="2 to 8"):
        QuantConfig(w_bits=9)
    with pytest.raises(FamesError, match="does not have"):
        quantize(_Net().eval(), {"layers": {"nope": "W4A4"}})


def test_error_contributions_equal_output_differences():
    torch.manual_seed(5)
    layer = _calibrated(QConv2d(nn.Conv2d(4, 6, 3, padding=1, stride=2), 6, 5, True), torch.randn(2, 4, 9, 9))
    layer.emulation_dtype = torch.float64
    x = torch.randn(2, 4, 9, 9)
    ms = [_random_appmul(5, 6, True, s) for s in range(2)]
    with torch.no_grad():
        base = layer(x).double()
        for m, d in zip(ms, layer.error_contributions(x, ms), strict=True):
            layer.set_assignment(m)
            diff = layer(x).double() - base  # float32 outputs: compare to float32 rounding
            assert d.abs().max() > 0 and torch.allclose(d, diff, atol=1e-5 * base.abs().max().item())
            layer.mode = "exact"


def test_error_contributions_linear():
    torch.manual_seed(6)
    layer = _calibrated(QLinear(nn.Linear(20, 7), 8, 8, False), torch.randn(5, 20))
    layer.emulation_dtype = torch.float64
    x = torch.randn(5, 20)
    m = _random_appmul(8, 8, False, 3)
    with torch.no_grad():
        base = layer(x).double()
        d = next(layer.error_contributions(x, [m]))
        layer.set_assignment(m)
        diff = layer(x).double() - base
    assert d.abs().max() > 0 and torch.allclose(d, diff, atol=1e-5 * base.abs().max().item())


@pytest.mark.parametrize("signed", [False, True])
def test_pact_gradients_come_from_clipped_values_only(signed):
    """PACT: same forward as LSQ; d/dscale = (qmax - z) per value clipped high, (qmin - z) per value clipped low,
    0 inside; d/dx = 1 inside the range, 0 outside. LSQ moves the scale from interior values too."""
    from fames.quant.quantizer import Quantizer

    q = Quantizer(4, signed, per_channel=False)
    q.set_range(torch.tensor([-1.6 if signed else 0.0]), torch.tensor([1.4 if signed else 1.5]))
    q.train()
    x = torch.tensor([-3.0, -0.31, 0.07, 0.52, 1.2, 2.0, 5.0], requires_grad=True)
    s, z = q.params(1)
    qmin, qmax = q.qrange
    lo, hi = (s * (qmin - z)).detach().item(), (s * (qmax - z)).detach().item()
    y_lsq = q(x)
    g_lsq = torch.autograd.grad(y_lsq.sum(), q.scale)[0]
    q.learning = "pact"
    y = q(x)
    y.sum().backward()
    assert torch.equal(y.detach(), y_lsq.detach())
    n_hi, n_lo = int((x > hi).sum()), int((x < lo).sum())
    assert q.scale.grad.item() == pytest.approx(n_hi * (qmax - float(z)) + n_lo * (qmin - float(z)))
    assert torch.equal(x.grad, ((x >= lo) & (x <= hi)).float())
    assert g_lsq.item() != pytest.approx(q.scale.grad.item())


def test_pact_is_a_config_option():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    quantize(model, {"w_bits": 4, "a_bits": 4, "act_qat": "pact"})
    assert all(m.act_quant.learning == "pact" for _, m in qlayers(model))
    with pytest.raises(FamesError, match="act_qat"):
        QuantConfig(act_qat="dorefa")


def test_float_layers_lists_unsupported_kinds_and_layers_the_config_leaves_in_float():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
            self.seq = nn.Conv1d(4, 4, 3, padding=1)
            self.mid = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            x = self.up(self.bn(self.conv(x))).mean(2)
            return self.fc(self.mid(self.seq(x).mean(2)))

    from fames.quant import float_layers

    with pytest.warns(UserWarning, match=r"\['up \(ConvTranspose2d\)', 'seq \(Conv1d\)'\]"):
        net = quantize(Net().eval(), {"w_bits": 4, "a_bits": 4, "first_last": "float"})
    assert float_layers(net) == ["conv (Conv2d)", "up (ConvTranspose2d)", "seq (Conv1d)", "fc (Linear)"]
    assert float_layers(net, unsupported_only=True) == ["up (ConvTranspose2d)", "seq (Conv1d)"]
    assert [n for n, _ in qlayers(net)] == ["mid"]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's note on the even kernel
def test_same_padding_is_made_numeric_and_other_padding_modes_stay_float_and_listed():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, (3, 5), padding="same",
                                                                                   dilation=2),
                        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 2, padding="same"),
                        nn.Flatten(), nn.Linear(4 * 36, 10)).eval()
    x = torch.randn(5, 3, 6, 6)
    ref = net(x)
    with pytest.warns(UserWarning, match=r"3 \(Conv2d with padding_mode='reflect'.*4 \(Conv2d with padding_mode="
                                         r"'zeros', padding='same'\)"):
        quantize(net, "W8A8")
    assert [n for n, _ in qlayers(net)] == ["0", "2", "6"]  # an even kernel pads 'same' unevenly: stays float
    assert net[0].padding == (1, 1) and net[2].padding == (2, 4)
    set_mode(net, "float")
    assert torch.allclose(net(x), ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_models_and_inputs_of_other_float_types_run_in_float32(dtype):
    from fames.train import evaluate

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with pytest.warns(UserWarning, match=f"{str(dtype).removeprefix('torch.')} tensors.*converted to float32"):
        m = quantize(net.to(dtype), "W4A4")
    assert all(t.dtype == torch.float32 for t in [*m.parameters(), *m.buffers()] if t.is_floating_point())
    x = torch.randn(64, 8).to(dtype).float()  # values the other type can hold exactly
    y = torch.randint(0, 4, (64,))
    calibrate_ptq(m, (x.to(dtype), y))  # a batch of the model's old type calibrates ...
    got = evaluate(m, [(x.to(dtype), y)], progress=False, per_sample=True)
    want = evaluate(m, [(x, y)], progress=False, per_sample=True)
    assert got == want  # ... and evaluates as the same values in float32 do
    with torch.no_grad():  # called directly, outside fames' functions: crashed on the dtype mismatch
        assert torch.equal(m(x.to(dtype)), m(x))


def test_quantize_names_functional_layers():
    class Func(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.w)

    with pytest.raises(FamesError, match="functional calls"):
        quantize(Func(), "W4A4")


def test_a_layer_put_back_in_float_by_calibration_stays_float_when_the_model_is_quantized_again():
    class Aux(torch.nn.Module):  # the auxiliary head runs only in training
        def __init__(self):
            super().__init__()
            self.main, self.aux = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)

        def forward(self, x):
            return self.main(x) + (self.aux(x) if self.training else 0)

    model = quantize(Aux(), "W4A4")
    with pytest.warns(UserWarning, match="aux"):
        calibrate_ptq(model, torch.randn(32, 6))
    cfg = model.fames_quant_config
    assert cfg["layers"] == {"aux": "float"}
    again = quantize(Aux(), cfg)  # what loading a saved run does
    assert [n for n, _ in qlayers(again)] == ["main"]


def test_w8a8_emulation_stays_bit_exact_when_sums_exceed_float32_integers():
    from fames.emulate.reference import reference_linear
    from fames.quant.layers import Assignment

    torch.manual_seed(0)
    lin = torch.nn.Linear(4096, 8)
    model = torch.nn.Sequential(lin)
    quantize(model, {"w_bits": 8, "a_bits": 8, "weight_scheme": "affine"})
    x = torch.rand(4, 4096) * 4
    calibrate_ptq(model, x)
    q = model[0]
    lut = exact_lut(8, 8) - (np.random.default_rng(0).integers(0, 3, (256, 256)))
    lut = np.clip(lut, 0, None)
    m = AppMul("near", 8, 8, False, False, lut)
    q.assignment, q.mode = Assignment([m], torch.tensor(0)), "approx"
    qx, qw = q.operands(x)
    acc = q.integer(qx, qw, **q.emulation_args(x.device))
    ref = reference_linear(qx.long(), qw.long(), m)
    assert q.emulation_dtype == torch.float64 and acc.abs().max() > 1 << 24
    assert torch.equal(acc.double().round().long(), ref)


def test_a_layer_held_under_two_names_and_tied_weights_stay_one_after_quantize():
    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 6)
            self.again = self.enc  # the same layer under a second name
            self.dec = nn.Linear(6, 6)
            self.dec.weight = self.enc.weight  # weight tying: another layer, one Parameter

        def forward(self, x):
            return self.dec(self.again(torch.relu(self.enc(x))))

    model = quantize(Aliased().eval(), "W4A4")
    assert model.again is model.enc and isinstance(model.enc, QLinear)  # the alias was left a float Linear
    assert model.dec.weight is model.enc.weight  # QAT would have trained two copies apart
    calibrate_ptq(model, torch.randn(16, 6))
    assert [n for n, _ in qlayers(model)] == ["enc", "dec"]


def test_integer_sums_stay_exact_after_an_in_place_table_edit_and_in_error_sums():
    """The layer's float32/float64 choice follows the table as it is now (it was cached: an in-place edit to a
    larger table kept float32, 26 of 32 sums wrong), and error sums of a large-term factorization are exact."""
    import numpy as np

    from fames.appmul.core import AppMul, exact_lut
    from fames.emulate.reference import reference_linear
    from fames.quant import calibrate_ptq, qlayers, quantize

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2048, 4))
    x = torch.rand(8, 2048)
    quantize(net, "W8A8")
    calibrate_ptq(net, (x, torch.zeros(8, dtype=torch.long)))
    (_, layer), = qlayers(net)
    am = AppMul("small", 8, 8, layer.signed, layer.signed, np.clip(exact_lut(8, 8, layer.signed), -255, 255))
    layer.set_assignment(am)
    assert layer.emulation_dtype == torch.float32
    am.lut[:] = exact_lut(8, 8, layer.signed) ^ 1
    qx, qw = layer.operands(x)
    want = reference_linear(qx.long(), qw.long(), am).double()
    assert torch.equal(layer.integer(qx, qw, appmul=am).double(), want)
    const = AppMul("const", 8, 8, False, False, np.full((256, 256), 65535))  # error plan: 1 x 65535 - a x w
    small = torch.nn.Sequential(torch.nn.Linear(16, 4))
    quantize(small, QuantConfig(w_bits=8, a_bits=8, weight_scheme="affine"))
    calibrate_ptq(small, (x[:, :16], torch.zeros(8, dtype=torch.long)))
    (_, lin), = qlayers(small)
    qx, qw = lin.operands(x[:, :16])
    (err,) = lin.error_contributions(x[:, :16], [const], scaled=False)
    assert torch.equal(err.double(), 65535.0 * 16 - qx.double() @ qw.double().t())


def test_quantize_keeps_what_the_forward_computes_when_it_cannot_read_the_graph():
    """A forward torch.fx cannot trace (a data-dependent branch) with conv -> ReLU -> BN: the BN was folded into the
    conv by registration order, before the ReLU (off by 0.19 on outputs of 0.38). A Conv2d subclass with its own
    forward (weight standardization) was replaced by a plain quantized conv. Both now stay as they compute, listed."""
    import copy
    import warnings

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)
            self.seq = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))  # traceable on its own: folded

        def forward(self, x):
            y = torch.relu(self.conv(x))
            if y.mean() > -1:
                y = self.seq(self.bn(y))
            return self.fc(y.mean((2, 3)))

    class WSConv2d(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
            return F.conv2d(x, w / (w.std((1, 2, 3), keepdim=True) + 1e-5), self.bias, self.stride, self.padding)

    torch.manual_seed(0)
    net = Block().eval()
    net.conv = WSConv2d(3, 8, 3, padding=1)
    for bn in (net.bn, net.seq[1]):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    ref, x = copy.deepcopy(net), torch.randn(16, 3, 8, 8)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        quantize(net, "W8A8")
    said = " ".join(str(w.message) for w in got)
    assert "['bn'] are not folded" in said and "conv (WSConv2d)" in said
    assert isinstance(net.seq[1], nn.Identity) and isinstance(net.bn, nn.BatchNorm2d)
    assert type(net.conv) is WSConv2d and [n for n, _ in qlayers(net)] == ["fc", "seq.0"]
    set_mode(net, "float")
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-5)


def test_a_conv_or_bn_called_twice_is_not_folded():
    """A conv called twice with one call into a BN was folded (the other call changed by 0.99); one BN after two convs
    made quantize crash. A model whose only layers compute their own forward is named as such."""
    import copy

    class ConvTwice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc((self.bn(self.conv(x)) + self.conv(x)).mean((2, 3)))

    class SharedBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return (self.bn(self.a(x)) + self.bn(self.b(x))).mean((1, 2, 3))

    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    for cls in (ConvTwice, SharedBN):
        net = cls().eval()
        with torch.no_grad():
            net.bn.running_mean.uniform_(-1, 1), net.bn.running_var.uniform_(0.5, 2)
        ref = copy.deepcopy(net)
        quantize(net, "W8A8")
        set_mode(net, "float")
        assert isinstance(net.bn, nn.BatchNorm2d)
        with torch.no_grad():
            assert torch.allclose(net(x), ref(x), atol=1e-6)

    class WS(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight / self.weight.norm(), self.bias)

    with pytest.raises(FamesError, match=r"subclasses with a forward of their own stay float: \['0 \(WS\)'\]"):
        quantize(nn.Sequential(WS(4, 2)), "W8A8")


def test_first_and_last_are_the_layers_the_forward_calls_first_and_last():
    class OutOfOrder(nn.Module):  # declared body, stem, head: the forward runs stem first
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(4, 4, 3, padding=1)
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.body(torch.relu(self.stem(x))).mean((2, 3)))

    with pytest.warns(UserWarning, match="calls stem first and head last"):
        model = quantize(OutOfOrder(), {"w_bits": 4, "a_bits": 4, "first_last": "8bit"})
    assert {n: m.w_bits for n, m in qlayers(model)} == {"body": 4, "stem": 8, "head": 8}  # was body 8, stem 4
    assert model.fames_quant_config["first_last_layers"] == ["stem", "head"]  # a saved config says which
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = quantize(OutOfOrder(), model.fames_quant_config)  # what loading a checkpoint does
    assert {n: m.w_bits for n, m in qlayers(again)} == {"body": 4, "stem": 8, "head": 8}


@pytest.mark.parametrize("bn", [nn.BatchNorm2d(4, affine=False), nn.BatchNorm2d(4, track_running_stats=False)])
def test_batchnorms_without_affine_parameters_or_running_statistics(bn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), bn, nn.ReLU()).eval()
    if bn.track_running_stats:
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 2, 6, 6)
    want = model(x)
    quantize(model, "W8A8")  # crashed with a TypeError on both
    set_mode(model, "float")
    assert torch.allclose(model(x), want, atol=1e-5)  # folded (running statistics) or left as it is (batch ones)
    assert isinstance(model[1], nn.Identity) == bn.track_running_stats


def test_a_linear_tied_to_an_embedding_stays_tied_and_quantizing_twice_is_named():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 6), nn.Linear(6, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, t):
            return self.head(self.emb(t).mean(1))

    model = quantize(Tied(), "W8A8")
    assert model.head.weight is model.emb.weight  # QAT trained the two copies apart
    with pytest.raises(FamesError, match="already quantized .*quantize the float model"):
        quantize(model, "W4A4")  # said "no Conv2d or Linear layer to quantize"


def test_attention_fast_path_neither_skips_quantized_layers_nor_hides_its_multiplies():
    from fames.method.energy import trace_macs

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x):  # (N, T, 8)
            return self.head(self.enc(self.inp(x)).mean(1))

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(True)
    try:
        with pytest.warns(UserWarning, match="fast path is turned off"):
            model = quantize(Encoder().eval(), "W8A8")
        x = torch.randn(16, 12, 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calibrate_ptq(model, x)
        # the fused path computed with linear1/linear2's float weights, so calibration put them back in float
        assert {"enc.linear1", "enc.linear2"} <= {n for n, m in qlayers(model) if m.mode == "exact"}
        _, floating = trace_macs(model, x)
        T, E = 12, 16  # in-projection, Q K^T and A V, out-projection: 0 on the fast path
        assert floating["enc.self_attn"] == T * E * 3 * E + 2 * T * T * E + T * E * E
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def test_a_batch_whose_sums_stay_below_float32_integers_runs_in_float32_with_the_same_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 8, 3, padding=1))
    quantize(model, {"w_bits": 8, "a_bits": 8, "weight_scheme": "affine"})
    calibrate_ptq(model, torch.rand(8, 64, 6, 6) * 4)
    q = model[0]
    q.set_assignment(AppMul("near", 8, 8, False, False, np.clip(exact_lut(8, 8) - 1, 0, None)))
    assert q.emulation_dtype == torch.float64  # 65,024 x 576 taps: the worst case passes 2**24
    small, big = torch.rand(4, 64, 6, 6) * 0.3, torch.full((4, 64, 6, 6), 4.0)  # low codes; every code at the top
    assert q.batch_dtype(q.operands(small)[0]) == torch.float32 and q.batch_dtype(q.operands(big)[0]) == torch.float64
    for x in (small, big):
        y = q(x)
        q.emulation_dtype = torch.float64  # forced: the worst case's float64 emulation
        assert torch.equal(q(x), y)
        q.emulation_dtype = None


@pytest.mark.parametrize("w_bits,a_bits", [(4, 8), (2, 2), (8, 8)])
def test_affine_zero_point_terms_are_added_as_integers_before_scaling(w_bits, a_bits):
    """The zero-point terms cancel to a result 2**8 times smaller than themselves: scaled before they were added,
    float32 rounding left 18-38x the error of the fake-quantized float layer (W2A2, fan-in 4,096). Now the output
    is the float64 value of the integer formula to float32 rounding (a few units in the last place)."""
    torch.manual_seed(0)
    fan_in = 4096
    model = nn.Sequential(nn.Linear(fan_in, 10))
    quantize(model, {"w_bits": w_bits, "a_bits": a_bits, "weight_scheme": "affine"})
    calibrate_ptq(model, torch.randn(64, fan_in))
    q = model[0]
    q.set_assignment(AppMul("ex", a_bits, w_bits, False, False, exact_lut(a_bits, w_bits)))
    x = torch.randn(64, fan_in)
    with torch.no_grad():
        y = q(x).double()
        qx, qw = (t.double() for t in q.operands(x))
    sx, zx = (t.double() for t in q.act_quant.params(0))
    sw, zw = q.weight_quant.scale.abs().double(), q.weight_quant.zero_point.double()
    integer = qx @ qw.T - zw * qx.sum(1, keepdim=True) - zx * qw.sum(1) + fan_in * zx * zw
    truth = sx * sw * integer + q.bias.double()
    assert float((y - truth).abs().max()) <= 4 * 2**-24 * float(truth.abs().max())


def test_an_exact_layer_name_wins_over_first_last_and_patterns_and_conflicting_patterns_are_said():
    """`first_last: 8bit` overrode the widths a `layers` entry gave the first layer by name, and of two patterns
    matching one layer the first listed won, silently (it still does, saved configs rely on it, with a warning)."""
    from fames.quant.config import differences

    cfg = QuantConfig(w_bits=4, a_bits=4, first_last="8bit", layers={"0": "W2A2", "4": "float", "c*": "W3A5"})
    assert str(cfg.bits_for("0", "first")) == "W2A2" and cfg.bits_for("4", "last") is None
    assert str(cfg.bits_for("conv", "last")) == "W8A8" and str(cfg.bits_for("conv")) == "W3A5"
    for order in ({"conv*": "W2A8", "conv_a": "W6A3"}, {"conv_a": "W6A3", "conv*": "W2A8"}):
        assert str(QuantConfig(layers=order).bits_for("conv_a")) == "W6A3"
    with pytest.warns(UserWarning, match="matches patterns with different widths .* the first listed applies"):
        assert str(QuantConfig(layers={"conv*": "W2A8", "c*": "W3A3"}).bits_for("conv_b")) == "W2A8"
    assert str(QuantConfig(layers={"conv*": "W2A8", "c*": "W2A8"}).bits_for("conv_b")) == "W2A8"
    # a config asking for a layer in float is not a checkpoint that quantized it; a checkpoint's own float record of a
    # layer the forward never ran is no difference
    assert differences("W4A4", {"w_bits": 4, "a_bits": 4, "layers": {"x": "float"}})
    assert not differences({"w_bits": 4, "a_bits": 4, "layers": {"x": "float"}}, "W4A4")
    fl = {"w_bits": 4, "a_bits": 4, "first_last": "float", "first_last_layers": ["0", "4"]}
    assert not differences(fl, {**fl, "layers": {"4": "float"}})  # already float in the checkpoint: the same
    assert differences(fl, {**fl, "layers": {"2": "float"}})


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
def test_an_images_output_does_not_depend_on_its_batch_mates(scheme):
    """A layer whose worst case needs float64 emulates a batch in float32 when that batch allows it: the output of
    an image must not change with the other images of its batch (it did by 1 ulp in 146 of 288 elements, signed)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(128, 8, 3, padding=1))
    quantize(model, {"w_bits": 8, "a_bits": 8, "weight_scheme": scheme})
    signed = scheme == "symmetric"
    data = torch.randn if signed else torch.rand  # (affine: codes from 0, as after a ReLU)
    calibrate_ptq(model, data(16, 128, 6, 6))
    q = model[0]
    q.set_assignment(AppMul("ex", 8, 8, signed, signed, exact_lut(8, 8, signed, signed)))
    small, big = data(1, 128, 6, 6) * 0.05, data(1, 128, 6, 6) * 50
    assert q.batch_dtype(q.operands(small)[0]) != q.batch_dtype(q.operands(torch.cat([small, big]))[0])
    with torch.no_grad():
        assert torch.equal(q(small)[0], q(torch.cat([small, big]))[0])

"""Approximate logic synthesis: network simulation, error metrics, LAC and CGP searches, the library driver."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from fames.appmul.core import exact_lut
from fames.appmul.synth.cgp import cgp
from fames.appmul.synth.error import ErrorModel
from fames.appmul.synth.lac import lac, reorder
from fames.appmul.synth.library import SynthConfig, exact_network, pareto, synthesize, thin
from fames.appmul.synth.network import AND, BUF, NOT, XOR, Network
from fames.errors import AppMulError, HardwareError

WIDTHS = [(2, 2, False), (3, 3, True), (4, 4, False), (4, 4, True), (3, 5, False)]


@pytest.mark.parametrize("a,w,signed", WIDTHS)
def test_exact_network_is_the_exact_product(a, w, signed):
    net = exact_network(a, w, signed)
    want = exact_lut(a, w, signed, signed)
    assert np.array_equal(net.lut(), want)
    assert np.array_equal(net.to_circuit("x").simulate(signed), want)
    assert np.array_equal(reorder(net).lut(), want)
    assert ErrorModel(a, w, signed)(net.output_values()) == 0.0


def test_reorder_after_a_wire_to_a_later_signal():
    # y0 = a0 & w0 (node 0), y1 = a0 ^ w0 (node 1); rewire node 0 to BUF(node 1): a later signal
    net = Network(1 + 1, 2, False, [(AND, 0, 2), (XOR, 0, 2)], [4, 5, 4, 5])
    net.nodes[0] = (BUF, 5, 0)
    fixed = reorder(net)
    fixed.check()
    assert np.array_equal(fixed.output_values(), _brute(net))


def _brute(net: Network) -> np.ndarray:
    """Reference: evaluate the (possibly unordered) network pattern by pattern, recursively."""
    n_in, out = net.n_inputs, []
    for p in range(net.n_patterns):
        bits = [(p >> (net.w_bits + i)) & 1 for i in range(net.a_bits)] + [(p >> i) & 1 for i in range(net.w_bits)]

        def val(s: int, bits: list[int] = bits) -> int:
            if s < n_in:
                return bits[s]
            fn, x, y = net.nodes[s - n_in]
            vx, vy = val(x, bits), val(y, bits) if fn in (AND, XOR) else 0
            return {AND: vx & vy, XOR: vx ^ vy, BUF: vx, NOT: 1 - vx}[fn]

        out.append(sum(val(o) << k for k, o in enumerate(net.outputs)))
    return np.array(out)


def test_error_metrics_closed_form():
    a = w = 3
    model = {m: ErrorModel(a, w, False, m) for m in ("mred", "med", "mse", "er", "wce")}
    exact = exact_lut(a, w).reshape(-1)
    zero = np.zeros_like(exact)  # the constant-0 multiplier: |d| = P
    assert model["mred"](zero) == pytest.approx(100.0)
    assert model["med"](zero) == pytest.approx(np.abs(exact).mean())
    assert model["mse"](zero) == pytest.approx((exact.astype(float) ** 2).mean())
    assert model["er"](zero) == pytest.approx(100.0 * np.count_nonzero(exact) / exact.size)
    assert model["wce"](zero) == 49
    # operand-aware: all weight on the pair (5, 6) -> only its error counts
    wts = np.zeros((8, 8))
    wts[5, 6] = 3.0
    off = exact.copy()
    off[5 * 8 + 6] += 3
    off[0] += 100  # a pair of weight 0
    assert ErrorModel(a, w, False, "med", wts)(off) == pytest.approx(3.0)
    assert ErrorModel(a, w, False, "mred", wts)(off) == pytest.approx(100 * 3 / 30)
    # mred0 sees the zero products (|d| relative to one LSB); mred does not
    at_zero = exact.copy()
    at_zero[0 * 8 + 5] += 2  # a = 0, w = 5: product 0, output 2
    assert model["mred"](at_zero) == 0.0
    assert ErrorModel(a, w, False, "mred0")(at_zero) == pytest.approx(100 * 2 / 64)
    assert ErrorModel(a, w, False, "mred0")(zero) == pytest.approx(100.0 * np.count_nonzero(exact) / exact.size)
    with pytest.raises(AppMulError, match="shape"):
        ErrorModel(a, w, False, "med", np.ones((4, 8)))
    with pytest.raises(AppMulError, match="unknown error metric"):
        ErrorModel(a, w, False, "psnr")


@pytest.mark.parametrize("search", ["lac", "cgp"])
@pytest.mark.parametrize("a,w,signed", [(3, 3, False), (4, 4, True)])
def test_search_path_respects_the_bound(search, a, w, signed):
    net = exact_network(a, w, signed)
    model = ErrorModel(a, w, signed, "mred")
    bound = 5.0
    steps = lac(net, model, bound) if search == "lac" else cgp(net, model, bound, seed=1, generations=1500,
                                                                 time_s=None)
    assert len(steps) > 2
    assert steps[0].error == 0.0
    for s in steps:
        s.network.check()
        assert s.error <= bound
        assert model(s.network.output_values()) == pytest.approx(s.error, abs=1e-12)  # reported == recomputed
        assert s.cost == pytest.approx(s.network.cost())
    assert all(b.cost < a.cost for a, b in zip(steps, steps[1:], strict=False))  # every step saves cost
    assert steps[-1].cost < 0.95 * steps[0].cost


def test_cgp_is_deterministic_per_seed():
    net, model = exact_network(3, 3, False), ErrorModel(3, 3, False)
    runs = [cgp(net, model, 10.0, seed=s, generations=300, time_s=None) for s in (4, 4, 5)]
    key = [[(st.error, st.cost, st.network.nodes, st.network.outputs) for st in r] for r in runs]
    assert key[0] == key[1]
    assert key[0] != key[2]


def test_pareto_and_thin():
    from fames.appmul.synth.library import Design

    net = exact_network(2, 2, False)
    ds = [Design(net, e, c, "lac", 0, 1.0) for e, c in [(0, 10), (1, 9), (1, 11), (2, 9), (3, 5), (5, 6), (8, 1)]]
    front = pareto(ds)
    assert [(d.error, d.cost) for d in front] == [(0, 10), (1, 9), (3, 5), (8, 1)]
    kept = thin(front, 3, 8.0)
    assert len(kept) <= 3 and kept[0].error == 0 and kept[-1].error == 8
    # an anchor (a requested error level) keeps the cheapest design within it, which log-spaced bounds miss
    ds = [Design(net, e, c, "cgp", 0, 1.0) for e, c in [(0, 10), (1, 9), (2, 8), (3, 5), (3.5, 4.9), (5, 3), (8, 1)]]
    assert [d.error for d in thin(pareto(ds), 4, 8.0)] == [0, 1, 2, 8]
    assert [d.error for d in thin(pareto(ds), 4, 8.0, anchors=(3.0,))] == [0, 1, 3, 8]


def test_shortlist_costs_several_circuits_of_one_function():
    """One function's circuits all reach the real costing (up to ``per_function``, cheapest proxy first): the cell
    mapping can cost them very differently."""
    from fames.appmul.synth.library import Design, shortlist

    base = exact_network(2, 2, False)

    def padded(k: int) -> Network:  # the same function through k buffers on output 0
        net = base.copy()
        for _ in range(k):
            net.nodes.append((BUF, net.outputs[0], 0))
            net.outputs[0] = net.n_inputs + len(net.nodes) - 1
        return net

    same = [Design(padded(k), 0.0, 10.0 + k, "cgp", 0, 1.0) for k in range(5)]
    assert len({d.network.output_values().tobytes() for d in same}) == 1
    got = shortlist([*same, *same[:2]], 4, 5.0, slack=0.0, per_bound=1, per_function=3)
    assert [d.cost for d in got] == [10.0, 11.0, 12.0]  # distinct circuits only, the duplicates once
    assert [d.cost for d in shortlist(same, 4, 5.0, per_function=1)] == [10.0]


def test_a_real_cost_chooses_the_front(tmp_path, monkeypatch):
    """With a real cost the library is the Pareto front of (error, real cost) over every design costed, and the
    family seeds are always among those costed, whatever the proxy thinks of them."""
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    costed: dict[str, tuple[float, float]] = {}

    def cost(ms):  # a cost the proxy does not know: gate count, with seeds made attractive
        out = [m.provenance["gates"] * (0.5 if m.provenance["method"] == "seed" else 1.0) for m in ms]
        costed.update({m.name: (m.provenance["error"], c) for m, c in zip(ms, out, strict=True)})
        return out

    cfg = SynthConfig(3, 3, False, thresholds=(2.0, 10.0), max_error=10.0, seeds=1, generations=200, designs=100)
    lib = synthesize(cfg, workers=1, progress=False, cost=cost)
    assert any(n.split("_")[2] == "seed" for n in costed)
    kept = [costed[m.name] for m in lib]
    assert kept[0][0] == 0 and kept == sorted(kept)
    # strictly cheaper as the error grows
    assert all(c1 > c2 for (_, c1), (_, c2) in zip(kept[:-1], kept[1:], strict=True))
    for name, (e, c) in costed.items():  # everything left out is dominated by a kept design
        assert name in {m.name for m in lib} or any(ke <= e + 1e-12 and kc <= c for ke, kc in kept)


def test_library_same_on_a_pool_and_in_process(tmp_path, monkeypatch):
    cfg = SynthConfig(3, 3, False, thresholds=(2.0, 10.0), max_error=10.0, seeds=1, generations=200)
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "serial"))  # separate caches: both really run
    serial = synthesize(cfg, workers=1, progress=False)
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "pool"))
    pooled = synthesize(cfg, workers=2, progress=False)
    assert [m.name for m in serial] == [m.name for m in pooled]
    assert all(np.array_equal(x.lut, y.lut) for x, y in zip(serial, pooled, strict=True))
    for m in serial:
        assert m.provenance["method"] in ("lac", "cgp", "seed") and m.provenance["metric"] == "mred"
        assert ErrorModel(3, 3, False)(m.lut.reshape(-1)) == pytest.approx(m.provenance["error"])


def test_library_on_ray_matches_the_pool(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fames[ray]'")
    cfg = SynthConfig(2, 2, False, thresholds=(5.0,), max_error=10.0, seeds=1, generations=100)
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "local"))
    local = synthesize(cfg, workers=1, progress=False)
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "ray"))
    try:
        on_ray = synthesize(cfg, ray_address="local", progress=False)
    finally:
        ray.shutdown()
    assert [m.name for m in local] == [m.name for m in on_ray]
    assert all(np.array_equal(x.lut, y.lut) for x, y in zip(local, on_ray, strict=True))


def test_three_way_check(tmp_path):
    from fames.hw.synthetic import default_synthetic_liberty
    from fames.hw.verify import check_design

    lib = synthesize(SynthConfig(2, 2, True, max_error=20.0, seeds=1, generations=150), workers=1, progress=False)
    assert len(lib) >= 3
    for m in lib:
        check_design(m, default_synthetic_liberty())
    bad = lib[-1]
    bad.lut = bad.lut.copy()
    bad.lut[1, 1] += 1
    with pytest.raises(HardwareError, match="disagrees with its LUT in 1 of 16"):
        check_design(bad)


def test_operand_histogram_counts_every_multiplication():
    from fames.quant import calibrate_ptq, quantize

    torch.manual_seed(0)
    conv = quantize(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2)), "W3A3")
    x = torch.rand(5, 4, 6, 6)
    calibrate_ptq(conv, [x])
    layer = conv[0]
    h = layer.operand_histogram(x)
    assert h.shape == (8, 8)
    assert h.sum() == 5 * 6 * 6 * 6 * (2 * 3 * 3)  # N x positions x O x taps per output
    # brute force over the integer view
    qx, _ = layer.operands(x)
    cols = layer.patches(qx) & 7  # (N, groups, taps, positions)
    wr = layer.kernel_rows(layer.weight_codes()) & 7  # (groups, O/g, taps)
    ref = np.zeros((8, 8))
    for g in range(2):
        for o in range(3):
            for t in range(cols.shape[2]):
                np.add.at(ref, (cols[:, g, t, :].numpy().ravel(), int(wr[g, o, t])), 1)
    assert np.array_equal(h, ref)


def test_omse_accumulates_each_channels_bias_over_its_fan_in():
    """A constant error of b LSB on every pair: one output of a channel of fan-in K errs by exactly K b, so the
    bound sum h d^2 + (sum h d)^2 is K b^2 + K^2 b^2 and omse, per product, b^2 (1 + K) averaged over channels."""
    rng = np.random.default_rng(0)
    per_output = rng.random((3, 8, 8))
    fan_in = np.array([9.0, 36.0, 576.0])
    per_output *= (fan_in / per_output.sum((1, 2)))[:, None, None]
    exact = exact_lut(3, 3).reshape(-1)
    model = ErrorModel(3, 3, False, "omse", per_output)
    assert model(exact) == 0.0
    assert model(exact + 2) == pytest.approx(4 * (1 + fan_in).mean())
    # a zero-mean error pays no bias: +1 and -1 on two pairs of equal count in every channel
    flat = np.zeros((3, 64))
    flat[:, [10, 20]] = 5.0
    zero_mean = exact.copy()
    zero_mean[10] += 1
    zero_mean[20] -= 1
    assert ErrorModel(3, 3, False, "omse", flat.reshape(3, 8, 8))(zero_mean) == pytest.approx(1.0)
    # the other metrics see the channels' sum
    assert ErrorModel(3, 3, False, "mse", per_output)(exact + 2) == pytest.approx(4.0)
    with pytest.raises(AppMulError, match="per-output-channel operand counts"):
        ErrorModel(3, 3, False, "omse")
    with pytest.raises(AppMulError, match="per-output-channel operand counts"):
        ErrorModel(3, 3, False, "omse", np.ones((8, 8)))
    with pytest.raises(AppMulError, match=r"output channel\(s\) \[1\] see no operands"):
        ErrorModel(3, 3, False, "omse", np.stack([np.ones((8, 8)), np.zeros((8, 8))]))


def test_per_output_histograms_give_each_channels_mean_output_error():
    """operand_histograms(per_output=True): each channel sums to the fan-in, the channels times the outputs add up to
    the layer's counts, and sum h_c E (times the layer's scale) is channel c's mean output error, as the layer's own
    exact mean_errors finds it at every position."""
    from fames.appmul.families import build_family
    from fames.quant import calibrate_ptq, quantize
    from fames.quant.operands import operand_histograms

    torch.manual_seed(0)
    net = quantize(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2)), "W4A4")
    x = torch.rand(5, 4, 6, 6)
    calibrate_ptq(net, [x])
    layer = net[0]
    per_output = operand_histograms(net, x, per_output=True)["0"]
    assert per_output.shape == (6, 16, 16)
    assert np.allclose(per_output.sum((1, 2)), 2 * 3 * 3)
    assert np.allclose(per_output.sum(0) * 5 * 6 * 6, operand_histograms(net, x)["0"])
    m = next(m for m in build_family("all", *layer.widths[:3]) if m.widths == layer.widths and m.error().any())
    want = layer.mean_errors(x, [m])[0].mean((1, 2)).numpy()  # (O,) per channel
    scale = layer.error_scale((-1,), torch.float64).detach().numpy()
    got = (per_output * m.error()[None]).sum((1, 2)) * scale
    assert np.allclose(got, want)


@pytest.mark.parametrize("a,w,signed", [(3, 3, True), (4, 4, False)])
def test_cgp_incremental_evaluation_equals_a_full_one(a, w, signed):
    from fames.appmul.synth.cgp import _Evaluated, _mutate
    from fames.appmul.synth.network import GATE_EQUIVALENTS

    model, gc = ErrorModel(a, w, signed), GATE_EQUIVALENTS
    rng = np.random.default_rng(0)
    cur = _Evaluated.full(exact_network(a, w, signed), model, gc, "pdp")
    for _ in range(300):  # a random walk: each child evaluated both ways, then kept (stale values accumulate)
        child = cur.child(_mutate(cur.net, rng, 0.2), model, gc, "pdp")
        full = _Evaluated.full(child.net.copy(), model, gc, "pdp")
        assert child.error == pytest.approx(full.error, abs=1e-12)
        assert child.cost == pytest.approx(full.cost, rel=1e-12)
        assert np.array_equal(child.word, full.word)
        cur = child


def test_family_starts():
    from fames.appmul.families import build_family
    from fames.appmul.synth.library import start_networks
    from fames.appmul.synth.network import GATE_EQUIVALENTS

    cfg = SynthConfig(3, 3, False, max_error=10.0, thresholds=(1.0, 5.0))
    model = ErrorModel(3, 3, False)
    starts = start_networks(cfg, model, GATE_EQUIVALENTS)
    fams = {m.name: m for m in build_family("all", 3, 3, False)}
    assert "exact" in starts and len(starts) >= 2
    for name, net in starts.items():  # each start is that family design, within the bound
        assert np.array_equal(net.lut(), fams[name if name != "exact" else "exact_3x3u"].lut)
        assert model(net.output_values()) <= 10.0
    jobs = cfg.jobs({"exact": 0.0, "trunc_x": 3.0})
    assert ("cgp", 0, 5.0, "trunc_x") in jobs and ("cgp", 0, 1.0, "trunc_x") not in jobs
    assert [j for j in jobs if j[0] == "lac"] == [("lac", 0, 10.0, "exact")]


def test_synthesis_resumes_from_cached_jobs(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    cfg = SynthConfig(3, 3, False, thresholds=(5.0,), max_error=10.0, seeds=1, generations=600, family_starts=False)
    t0 = time.perf_counter()
    first = synthesize(cfg, workers=1, progress=False)
    cold = time.perf_counter() - t0
    assert len(list((tmp_path / "synth-jobs").glob("*.json"))) == len(cfg.jobs())
    t0 = time.perf_counter()
    again = synthesize(cfg, workers=1, progress=False)
    assert time.perf_counter() - t0 < cold
    assert [m.name for m in again] == [m.name for m in first]
    assert all(np.array_equal(x.lut, y.lut) for x, y in zip(first, again, strict=True))



def test_a_second_round_restarts_from_the_cheapest_design_and_never_loses(tmp_path, monkeypatch):
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    one = SynthConfig(3, 3, False, thresholds=(5.0,), max_error=10.0, seeds=1, generations=300, family_starts=False)
    fronts = {}
    for cfg in (one, replace(one, rounds=2)):
        synthesize(cfg, workers=1, progress=False, on_front=lambda every, front, r=cfg.rounds: fronts.update(
            {r: every}))
    restarted = [d for d in fronts[2] if d.extra.get("start", "").startswith("round2_")]
    assert {d.threshold for d in restarted} <= {5.0, 10.0} and restarted
    assert all(d.error <= d.threshold for d in restarted)
    for t in (5.0, 10.0):  # round 1 is replayed identically (same seeds), so the best within t can only improve
        best = [min(d.cost for d in fronts[r] if d.error <= t) for r in (1, 2)]
        assert best[1] <= best[0]
    # the second synthesis reuses every round-1 job (the key holds only what one job depends on) and adds the two
    # restarts
    assert len(list((tmp_path / "synth-jobs").glob("*.json"))) == len(one.jobs()) + 2


def test_operand_weights_map_the_threshold_grid(tmp_path, monkeypatch):
    """With operand weights the CGP grid moves by the median weighted/uniform error ratio of the family designs
    (unchanged for uniform weights), and the searches run at the moved thresholds."""
    from fames.appmul.families import build_family
    from fames.appmul.synth.library import threshold_scale

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    cfg = SynthConfig(3, 3, False, methods=("cgp",), metric="mse", max_error=50.0, thresholds=(1.0, 4.0), seeds=1,
                      generations=100, family_starts=False)
    assert threshold_scale(cfg, np.ones((8, 8))) == pytest.approx(1.0)
    weights = np.ones((8, 8))
    weights[0] = 30.0  # a ReLU layer: mostly zero activations, where most designs are exact
    uniform, weighted = ErrorModel(3, 3, False, "mse"), ErrorModel(3, 3, False, "mse", weights)
    ratios = [weighted(v) / uniform(v) for m in build_family("all", 3, 3, False)
              if 0 < uniform(v := m.lut.reshape(-1).astype(np.int64)) <= 50.0]
    scale = float(np.median(ratios))
    assert 0 < scale < 0.5
    assert threshold_scale(cfg, weights) == pytest.approx(scale)
    mapped = (float(f"{scale:.4g}"), float(f"{4 * scale:.4g}"))
    lib = synthesize(cfg, weights=weights, workers=1, progress=False)
    ths = {m.provenance["threshold"] for m in lib if m.provenance["method"] == "cgp"}
    assert ths and ths <= {*mapped, 50.0}


def test_omse_synthesis_maps_its_bound_from_mse(tmp_path, monkeypatch):
    """omse has no unit of its own: its thresholds and bound are the mse ones times the family median ratio, and
    every design written holds that bound in omse."""
    from fames.appmul.synth.library import threshold_scale

    monkeypatch.setenv("FAMES_CACHE", str(tmp_path))
    per_output = np.random.default_rng(1).random((4, 8, 8))
    per_output *= 27 / per_output.sum((1, 2), keepdims=True)  # fan-in 27: a 3x3 convolution of 3 channels
    cfg = SynthConfig(3, 3, False, methods=("cgp",), metric="omse", max_error=20.0, thresholds=(2.0, 8.0), seeds=1,
                      generations=100, family_starts=False)
    k = threshold_scale(cfg, per_output)
    assert k > 1  # the channels' accumulated bias costs more than the per-product mse
    lib = synthesize(cfg, weights=per_output, workers=1, progress=False)
    model = ErrorModel(3, 3, False, "omse", per_output)
    errors = [model(m.lut.reshape(-1).astype(np.int64)) for m in lib]
    assert max(errors) <= float(f"{20 * k:.4g}") and max(errors) > 0
    assert [m.provenance["error"] for m in lib] == pytest.approx(errors)
    assert {m.provenance["threshold"] for m in lib if m.provenance["method"] == "cgp"} <= {
        float(f"{2 * k:.4g}"), float(f"{8 * k:.4g}"), float(f"{20 * k:.4g}")}


def test_the_error_free_design_of_a_library_is_the_exact_multiplier():
    # MRED does not count pairs whose product is 0: a design wrong only there is "MRED 0"; it took the exact
    # multiplier's place as the front's first point (2x2s: LUT row a=0 [0 0 -8 -8] shown as MRED 0)
    lib = synthesize(SynthConfig(2, 2, True, max_error=20.0, seeds=1, generations=100), workers=1, progress=False)
    assert lib[0].is_exact()
    assert all(m.is_exact() or m.provenance["error"] > 0 for m in lib)


def test_the_recorded_config_is_the_one_the_operand_aware_searches_ran_at():
    from fames.appmul.synth.library import weighted_config

    rng = np.random.default_rng(0)
    weights = rng.random((8, 8)) * (np.arange(8)[:, None] < 3)  # small activations only, as after a ReLU
    weights /= weights.sum()
    cfg = SynthConfig(3, 3, False, metric="mse", max_error=20.0, seeds=1, generations=60, methods=("cgp",))
    used = weighted_config(cfg, weights)
    assert used.thresholds != cfg.thresholds  # the grid moved to the weighted metric's scale
    lib = synthesize(cfg, weights, workers=1, progress=False)
    ran = {m.provenance["threshold"] for m in lib if m.provenance.get("method") == "cgp"}
    assert ran and ran <= set(used.cgp_thresholds())  # front-AxW.json recorded cfg's, not these

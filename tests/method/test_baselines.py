"""Baselines: NSGA-II, uniform and random selection, L2/MRE estimators, parallel evaluation, retraining."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fames.appmul.core import AppMul, Cost
from fames.appmul.families import build_family
from fames.appmul.metrics import error_metrics
from fames.baselines import (
    AccuracyEvaluator,
    CandidateWorker,
    MaxDNNSelector,
    NSGASelector,
    RandomSearchSelector,
    UniformSelector,
    approximation_levels,
    member_labels,
    repair_to_budget,
    retrain,
)
from fames.baselines.search import random_choices
from fames.errors import FamesError
from fames.method.energy import exact_costs, layer_macs, model_energy
from fames.method.estimate import L2Estimator, MeanForward, MREEstimator, TaylorEstimator, make_estimator
from fames.method.problem import apply_choice, build_problem
from fames.method.select import ILPSelector, InfeasibleBudget, SelectionProblem
from fames.quant import calibrate_ptq, qlayers, quantize
from fames.train import TrainConfig


# ------------------------------------------------------------------ synthetic problems
def _problem(G=5, K=4, seed=0):
    """Random multiple-choice problem: candidate 0 exact (omega 0, energy 1), cheaper ones cost omega."""
    rng = np.random.default_rng(seed)
    energy = np.concatenate([np.ones((G, 1)), rng.uniform(0.2, 0.95, (G, K - 1))], 1) * rng.uniform(1, 5, (G, 1))
    omega = np.concatenate([np.zeros((G, 1)), rng.uniform(0.1, 2.0, (G, K - 1))], 1)
    return SelectionProblem(omega, energy, energy[:, 0].copy())


class _OmegaAccuracy:
    """A deterministic stand-in for measured accuracy: 100 - total omega; counts its calls."""

    def __init__(self, problem):
        self.problem, self.calls = problem, 0

    def __call__(self, choices):
        self.calls += len(choices)
        return np.array([100.0 - self.problem.evaluate(c)[0] for c in choices])


def _brute_force(problem, ratio):
    best = None
    for c in itertools.product(*[range(problem.omega.shape[1])] * problem.omega.shape[0]):
        om, r = problem.evaluate(np.array(c))
        if r <= ratio + 1e-12 and (best is None or om < best):
            best = om
    return best


def test_nsga_finds_the_known_optimum():
    pytest.importorskip("pymoo")
    p = _problem(G=4, K=4)
    ev = _OmegaAccuracy(p)
    for ratio in (0.8, 0.6):
        sel = NSGASelector(ev, population=24, generations=25, seed=1, progress=False).solve(p, ratio)
        assert sel.ratio <= ratio + 1e-9
        assert sel.omega == pytest.approx(_brute_force(p, ratio), abs=1e-9)
        assert sel.accuracy == pytest.approx(100 - sel.omega)
        assert 0 < sel.evaluations <= 24 * 25


def test_nsga_sweep_one_run_for_all_budgets():
    pytest.importorskip("pymoo")
    p = _problem(G=4, K=4, seed=3)
    sels, res = NSGASelector(_OmegaAccuracy(p), 24, 25, seed=0, progress=False).sweep(p, [0.9, 0.7, 0.01])
    assert isinstance(sels[2], InfeasibleBudget)
    for sel, r in zip(sels[:2], (0.9, 0.7), strict=True):
        assert sel.ratio <= r + 1e-9 and sel.omega == pytest.approx(_brute_force(p, r), abs=1e-9)
    assert len(res.choices) == res.evaluations == len(np.unique(res.choices, axis=0))
    front = res.front()  # non-dominated: energy increases and accuracy strictly increases along it
    assert (np.diff(res.ratio[front]) >= 0).all() and (np.diff(res.accuracy[front]) > 0).all()


def test_repair_and_random_search():
    p = _problem(G=6, K=5)
    rng = np.random.default_rng(0)
    c = repair_to_budget(p, np.zeros(6, int), 0.5, rng)
    assert p.evaluate(c)[1] <= 0.5 + 1e-12
    assert (p.energy[np.arange(6), c] <= p.energy[:, 0]).all()  # only moves to cheaper candidates
    with pytest.raises(InfeasibleBudget):
        repair_to_budget(p, np.zeros(6, int), p.min_ratio() * 0.9, rng)
    a = RandomSearchSelector(200, seed=7).solve(p, 0.6)
    b = RandomSearchSelector(200, seed=7).solve(p, 0.6)
    d = RandomSearchSelector(200, seed=8).solve(p, 0.6)
    assert np.array_equal(a.choice, b.choice) and a.omega == b.omega
    assert a.ratio <= 0.6 + 1e-9 and d.ratio <= 0.6 + 1e-9
    ilp = ILPSelector().solve(p, 0.6)
    assert a.omega >= ilp.omega - 1e-9  # never better than the exact optimum
    small = _problem(G=3, K=3)  # 27 choices: 400 samples cover them, so random search reaches the optimum
    assert RandomSearchSelector(400, seed=0).solve(small, 0.7).omega == pytest.approx(_brute_force(small, 0.7))


def test_uniform_selector_same_member_everywhere():
    p = _problem(G=4, K=4)
    labels = np.array([["exact", "a", "b", "c"]] * 4, dtype=object)
    labels[3] = ["exact", "a", "b", None]  # group 3 lacks member c: it keeps the exact multiplier
    p.omega[3, 3] = np.inf
    sel = UniformSelector(labels).solve(p, 0.9)
    members = {labels[g, k] for g, k in enumerate(sel.choice)} - {"exact"}
    assert len(members) == 1 and sel.ratio <= 0.9 + 1e-9
    best = min(
        (c for c in UniformSelector(labels).members(p).values() if p.evaluate(c)[1] <= 0.9 + 1e-9),
        key=lambda c: p.evaluate(c)[0],
    )
    assert sel.omega == pytest.approx(p.evaluate(best)[0])
    assert UniformSelector(labels).members(p)["c"][3] == 0
    by_energy = UniformSelector(labels, criterion="energy").solve(p, 0.9)
    assert by_energy.ratio == max(
        p.evaluate(c)[1] for c in UniformSelector(labels).members(p).values() if p.evaluate(c)[1] <= 0.9 + 1e-9
    )
    with pytest.raises(InfeasibleBudget):
        UniformSelector(labels).solve(p, p.min_ratio())  # only a mixed assignment reaches the floor
    with pytest.raises(FamesError, match="criterion"):
        UniformSelector(labels, criterion="area")


# ------------------------------------------------------------------ estimators on hand-made LUTs
def _lut_appmul(name, delta):
    """2x2-bit unsigned multiplier with exact products plus ``delta`` (4x4 table)."""
    a, w = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    return AppMul(name, 2, 2, False, False, (a * w + delta).astype(np.int64))


def test_l2_and_mre_closed_form():
    d1 = np.zeros((4, 4), int)
    d1[3, 3] = -3  # 9 -> 6
    d1[1, 2] = 1  # 2 -> 3
    d2 = np.zeros((4, 4), int)
    d2[2, 2] = -4  # 4 -> 0
    cands = [_lut_appmul("exact2", np.zeros((4, 4), int)), _lut_appmul("x1", d1), _lut_appmul("x2", d2)]
    l2 = [0.0, np.sqrt(10.0), 4.0]
    # MRED over the 9 non-zero exact products (1..3 x 1..3): |d| / P summed, / 9
    mre = [0.0, (3 / 9 + 1 / 2) / 9, (4 / 4) / 9]
    for m, v in zip(cands, mre, strict=True):
        assert error_metrics(m).mred == pytest.approx(v)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    quantize(model, {"w_bits": 2, "a_bits": 2, "weight_scheme": "affine", "first_last": "same"})
    name, layer = qlayers(model)[0]
    assert layer.widths == cands[0].widths
    x = torch.rand(4, 3, 2, 2)
    for est, vals in ((L2Estimator(), l2), (MREEstimator(), mre)):
        e = est.estimate(model, x, torch.zeros(4, dtype=torch.long), {name: cands})
        np.testing.assert_allclose(e.omega[name], [vals], rtol=1e-12, atol=1e-15)
        f = est.estimate(model, x, torch.zeros(4, dtype=torch.long), {name: cands}, granularity="filter")
        np.testing.assert_allclose(f.omega[name], np.tile(vals, (3, 1)), rtol=1e-12, atol=1e-15)
    scaled = L2Estimator("macs").estimate(model, x, torch.zeros(4, dtype=torch.long), {name: cands})
    np.testing.assert_allclose(scaled.omega[name], [np.multiply(36, l2)])  # 3 outputs x 12 inputs
    full = make_estimator("taylor-full")
    assert isinstance(full, TaylorEstimator) and full.hessian == "full"
    fwd = make_estimator("taylor-rank1+forward", forward_above=0.3)
    assert isinstance(fwd, MeanForward) and fwd.inner.hessian == "rank1" and fwd.forward_above == 0.3
    assert isinstance(make_estimator("l2+forward").inner, L2Estimator)
    for bad in ("hessian-free", "taylor-rank1+median"):
        with pytest.raises(FamesError, match="not one of"):
            make_estimator(bad)


# ------------------------------------------------------------------ real models: problem, evaluation, retraining
def _costed(ms):
    """Fake costs: PDP falls with the candidate's error (exact 100 fJ)."""
    out = []
    for m in ms:
        rel = 1.0 if m.is_exact() else max(0.2, 1.0 - 0.002 * float(np.abs(m.error()).mean()) - 0.05)
        out.append(dataclasses.replace(m, cost=Cost(pdp_fj=100 * rel, energy_fj=100 * rel, relative={"pdp": rel})))
    return out


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 4),
    ).eval()
    quantize(model, {"w_bits": 4, "a_bits": 4, "first_last": "same"})
    x = torch.randn(48, 3, 8, 8)
    calibrate_ptq(model, [(x, None)], num_batches=1)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the exact model gets right: approximation can only lower accuracy
    lib = _costed(build_family("all", 4, 4, True)[:10])
    cands = {n: lib for n, _ in qlayers(model)}
    est = L2Estimator().estimate(model, x, y, cands)
    macs = layer_macs(model, (3, 8, 8))
    mp = build_problem(model, est.omega, cands, macs, exact_costs(lib))
    return model, x, y, mp, macs, lib


def test_build_problem_and_apply_choice_agree_with_model_energy():
    model, x, y, mp, macs, lib = _tiny()
    rng = np.random.default_rng(0)
    from fames.baselines.search import random_choices

    for c in random_choices(mp.problem, 5, rng):
        apply_choice(model, mp, c)
        e, e_exact, _ = model_energy(model, macs, exact_costs(lib))
        assert e / e_exact == pytest.approx(mp.problem.evaluate(c)[1])
        for g, (n, _) in enumerate(mp.groups):
            layer = dict(qlayers(model))[n]
            assert layer.mode == ("exact" if mp.appmul(g, c[g]).is_exact() else "approx")
    labels = member_labels(mp)
    assert labels[0, 0] == "exact" and labels[0, 1].startswith("trunc(")
    with pytest.raises(FamesError, match="groups"):
        apply_choice(model, mp, np.zeros(2, int))


def test_kernel_problem_and_apply_choice():
    """Kernel groups: one row per (o, c) pair with its share of the MACs; the chosen AppMul lands on that kernel."""
    model, x, y, _, macs, lib = _tiny()
    cands = {n: lib for n, _ in qlayers(model)}
    est = L2Estimator().estimate(model, x, y, cands, granularity="kernel")
    mp = build_problem(model, est.omega, cands, macs, exact_costs(lib), granularity="kernel")
    layers = dict(qlayers(model))
    assert len(mp.groups) == sum(int(np.prod(m.group_shape("kernel"))) for m in layers.values())
    c = random_choices(mp.problem, 1, np.random.default_rng(1))[0]
    apply_choice(model, mp, c)
    e, e_exact, _ = model_energy(model, macs, exact_costs(lib))
    assert e / e_exact == pytest.approx(mp.problem.evaluate(c)[1])
    for g, (n, j) in enumerate(mp.groups):
        a = layers[n].assignment
        assert a.granularity == "kernel"
        o, ci = divmod(j, a.index.shape[1])
        assert a.appmuls[a.index[o, ci]] is mp.appmul(g, c[g])


def test_maxdnn_levels_and_least_sensitive_first():
    problem = _problem(G=8, K=5, seed=3)
    levels = approximation_levels(problem)
    for g, lv in enumerate(levels):
        assert (np.diff(problem.energy[g, lv]) < 0).all() and (np.diff(problem.omega[g, lv]) > 0).all()
        assert problem.energy[g, lv[-1]] == problem.energy[g].min()
    sel = MaxDNNSelector()
    first = sel.solve(problem, 0.999)  # a small saving: one group takes one step, the least sensitive one
    moved = np.flatnonzero(first.choice != np.array([lv[0] for lv in levels]))
    sens = [
        (problem.omega[g, lv[-1]] - problem.omega[g, lv[0]]) / (problem.energy[g, lv[0]] - problem.energy[g, lv[-1]])
        for g, lv in enumerate(levels)
    ]
    assert moved.tolist() == [int(np.argmin(sens))]
    for r in (0.9, 0.7, 0.5, problem.min_ratio()):
        h, opt = sel.solve(problem, r), ILPSelector().solve(problem, r)
        assert h.ratio <= r + 1e-9
        assert opt.omega <= h.omega + 1e-9  # the heuristic never beats the exact optimum
    with pytest.raises(InfeasibleBudget):
        sel.solve(problem, 0.5 * problem.min_ratio())


def test_parallel_evaluator_matches_serial():
    model, x, y, mp, *_ = _tiny()
    from fames.baselines.search import random_choices

    choices = random_choices(mp.problem, 4, np.random.default_rng(1))
    choices[0] = 0  # all exact: the labels came from the exact model
    worker = CandidateWorker(model, mp, x, y, batch_size=16)
    serial = AccuracyEvaluator(worker)(choices)
    assert serial[0] == 100.0
    with AccuracyEvaluator(worker, workers=2) as par:
        got = par(np.concatenate([choices, choices[:2]]))  # repeated choices are served from the cache
        assert par.evaluations == len(np.unique(choices, axis=0))
    np.testing.assert_array_equal(got[:4], serial)
    np.testing.assert_array_equal(got[4:], serial[:2])


def test_marlin_worker_retrains_a_copy_and_ray_error():
    model, x, y, mp, *_ = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c = np.full(len(mp.groups), 3)
    worker = CandidateWorker(model, mp, x, y, retrain=TrainConfig(epochs=1, lr=0.01), retrain_data=[(x, y)] * 2)
    acc, secs = worker.accuracy(c)
    assert 0 <= acc <= 100 and secs > 0
    for k, v in model.state_dict().items():  # the search's model is untouched
        assert torch.equal(v, before[k]), k
    with pytest.raises(FamesError, match="retrain_data"):
        CandidateWorker(model, mp, x, y, retrain=TrainConfig())
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(FamesError, match="pip install"):
            AccuracyEvaluator(CandidateWorker(model, mp, x, y), ray_address="local")(c[None])


def test_retraining_lowers_the_loss_with_appmuls_in_the_loop():
    model, x, y, mp, *_ = _tiny()
    with pytest.raises(FamesError, match="approx mode"):
        retrain(model, [(x, y)], TrainConfig(epochs=1))
    apply_choice(model, mp, np.full(len(mp.groups), 5))
    assigned = [(n, layer.assignment.names()) for n, layer in qlayers(model)]
    with torch.no_grad():
        loss0 = F.cross_entropy(model(x), y).item()
    rep = retrain(model, [(x, y)] * 4, TrainConfig(epochs=5, lr=0.02, weight_decay=0), progress=False)
    with torch.no_grad():
        loss1 = F.cross_entropy(model(x), y).item()
    assert rep.steps == 20 and rep.seconds > 0
    assert loss1 < loss0
    assert [(n, layer.assignment.names()) for n, layer in qlayers(model)] == assigned
    assert all(layer.mode == "approx" for _, layer in qlayers(model))


def test_a_free_design_costs_nothing_and_leaves_the_exact_reference():
    """A synthesized design of wires and constants only has PDP 0 (relative 0): its energy is 0, and the exact
    multiplier's energy per op comes from another design of the widths, whichever comes first (a relative PDP of 0
    once read as 'no relative cost' and stopped a run)."""
    from fames.appmul.core import Cost
    from fames.appmul.families import build
    from fames.method.energy import appmul_op_energy

    free = build("trunc", 4, 4, False, False, k=6).with_cost(Cost(pdp_fj=0.0, relative={"pdp": 0.0}))
    mild = build("trunc", 4, 4, False, False, k=2).with_cost(Cost(pdp_fj=30.0, relative={"pdp": 0.5}))
    assert appmul_op_energy(free)[0] == 0.0 and np.isnan(appmul_op_energy(free)[1])
    assert exact_costs([free, mild]) == {(4, 4, False, False): pytest.approx(60.0)}
    assert exact_costs([free]) == {}


def test_layer_macs_counts_every_call_of_a_shared_layer():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.d = torch.nn.Conv2d(3, 6, 3, stride=2, groups=3, bias=False)
            self.fc = torch.nn.Linear(6, 10)

        def forward(self, x):
            return self.fc(self.d(self.c(torch.relu(self.c(x)))).mean((2, 3)))

    model = quantize(Twice().eval(), "W4A4")
    # c: 3 outputs x 8 x 8 positions x 27 products, twice; d: 6 x 3 x 3 positions x (1 x 3 x 3); fc: 6 x 10
    assert layer_macs(model, (3, 8, 8)) == {"c": 2 * 3 * 64 * 27, "d": 6 * 9 * 9, "fc": 60}


def test_trace_macs_counts_what_runs_in_float_outside_the_quantized_layers():
    from fames.method.energy import trace_macs

    class Attn(torch.nn.Module):
        def forward(self, q):  # (2N, heads 2, L 4, E 8): two products of L x L x E per head
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(2, 4, 3, padding=1)
            self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)  # stays float
            self.attn = Attn()
            self.w = torch.nn.Parameter(torch.randn(8, 3))

        def forward(self, x):  # x (N, 2, 4, 4)
            h = self.up(self.c(x))  # (N, 2, 8, 8)
            a = self.attn(h.reshape(-1, 2, 4, 8))  # (2N, 2, 4, 8)
            return a.reshape(-1, 2, 32).mean(2) @ self.w[:2]  # functional (2N, 2) @ (2, 3) in the model's forward

    with pytest.warns(UserWarning, match="up"):
        model = quantize(Mixed().eval(), "W4A4")
    quant, floating = trace_macs(model, (2, 4, 4))
    assert quant == {"c": 4 * 16 * 18}
    # transposed conv: every input element times one (2 x 2) kernel per output channel; attention 2 x (2 x 2 x 4 x
    # 4 x 8); the functional product 2 x 2 x 3
    assert floating == {"up": 4 * 16 * 2 * 4, "attn": 2 * (2 * 2 * 4 * 4 * 8), "": 2 * 2 * 3}

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = torch.nn.LSTM(8, 6, batch_first=True), torch.nn.Linear(6, 3)

        def forward(self, x):  # x (N, T 5, 8)
            return self.head(self.rnn(x)[0][:, -1])

    with pytest.warns(UserWarning, match="rnn"):
        model = quantize(Recurrent().eval(), "W4A4")
    # every step: 4 gates x 6 units x (8 inputs + 6 states); PyTorch's fused CPU LSTM kernel was not counted
    assert trace_macs(model, (5, 8)) == ({"head": 18}, {"rnn": 5 * 4 * 6 * (8 + 6)})


def test_macs_are_counted_per_inference_on_real_inputs_in_any_layout():
    from fames.method.energy import trace_macs

    class SeqFirst(torch.nn.Module):  # nn.Transformer's default layout: (T, N, C) into the Linear layers
        def __init__(self):
            super().__init__()
            self.emb, self.l1, self.head = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)

        def forward(self, tokens):  # (N, T 5) token ids
            h = self.l1(self.emb(tokens).transpose(0, 1))  # (T, N, 16)
            return self.head(h.mean(0))

    with pytest.warns(UserWarning, match="emb"):
        model = quantize(SeqFirst().eval(), "W4A4")
    tokens = torch.randint(0, 20, (7, 5))  # integer inputs: a batch of zeros of a shape would be floats
    # l1: 5 positions x 16 outputs x 8 inputs per sequence, whatever dimension holds the batch; head: 16 x 3
    model.train()
    assert trace_macs(model, tokens)[0] == {"l1": 5 * 16 * 8, "head": 48}
    assert model.training and model.l1.training  # left as the caller had it

    class Squeezed(torch.nn.Module):  # drops the batch dimension of a batch of one
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(32, 32), torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(self.fc1(x.flatten(1).squeeze()))

    model = quantize(Squeezed().eval(), "W4A4")
    for n in (1, 6):
        assert trace_macs(model, torch.randn(n, 2, 16))[0] == {"fc1": 1024, "fc2": 128}


def test_designs_costed_apart_compare_by_their_ratios():
    """A library mixing EvoApproxLib's published figures with a liberty's (same widths): energies were absolute, the
    exact reference whichever design came first, so our exact multiplier counted 0.767 of exact (an all-exact model
    'met' R = 0.8) or EvoApproxLib's designs 0.88-1.30 instead of their own 0.67-0.94."""
    from fames.appmul.core import AppMul, Cost, exact_lut
    from fames.method.energy import exact_costs, op_energy

    def costed(name, lut, pdp, rel, source):
        m = AppMul(name, 8, 8, False, False, lut)
        m.cost = Cost(pdp_fj=pdp, source=source, relative={"pdp": rel})
        return m

    exact = exact_lut(8, 8, False)
    ours = [costed("exact_8x8u", exact, 428.8, 1.0, "synthesis"), costed("t", exact & ~3, 392.1, 0.914, "synthesis")]
    evo = [costed("evo_exact", exact, 559.1, 1.0, "published"), costed("evo_a", exact & ~7, 376.8, 0.674, "published")]
    for ms in (ours + evo, evo + ours, evo[1:] + ours):
        ref = exact_costs(ms)[(8, 8, False, False)]
        assert {m.name: round(op_energy(m, exact_costs(ms)) / ref, 3) for m in ms} == {
            m.name: m.cost.relative["pdp"] for m in ms}
    from fames.method.problem import build_problem

    model = quantize(torch.nn.Sequential(torch.nn.Linear(4, 2)), {"w_bits": 8, "a_bits": 8, "weight_scheme": "affine"})
    ms = evo + ours
    p = build_problem(model, {"0": np.zeros((1, 4))}, {"0": ms}, {"0": 8}, exact_costs(ms)).problem
    assert np.allclose(p.energy[0] / p.exact_energy[0], [m.cost.relative["pdp"] for m in ms])  # our exact: 1.0

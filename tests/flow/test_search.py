"""The target mode: bisection over R on a validation split held out from training, the choice tested once."""

import copy

import pytest
import torch

import fames
from fames.data import get_loader
from fames.flow.approximate import BudgetRow, _bisect, _search
from fames.flow.config import RunConfig, SearchConfig, SelectionConfig
from fames.flow.sources import TensorSamples, holdout
from tests.flow.test_own_model import DepthwiseSeparableCNN


def _digits_w4a4(epochs: int) -> DepthwiseSeparableCNN:
    """A small CNN trained on digits, quantized W4A4 with PTQ ranges (the same for the same ``epochs``)."""
    torch.manual_seed(0)
    model = DepthwiseSeparableCNN()
    fames.train.train(model, get_loader("digits", "train", 64, augment=True, seed=0),
                      fames.train.TrainConfig(epochs=epochs, lr=0.05, seed=0), progress=False)
    model.eval()
    fames.quantize(model, "W4A4")
    fames.calibrate_ptq(model, get_loader("digits", "train", 128, shuffle=True, seed=0))
    return model


@pytest.fixture(scope="module")
def digits_w4a4() -> DepthwiseSeparableCNN:
    """Shared by the tests below; each works on a copy."""
    return _digits_w4a4(epochs=3)


def test_bisection_finds_the_smallest_ratio_within_the_bound():
    """A model that holds the bound exactly from R = 0.437 up: the search returns 0.44 at resolution 0.01."""
    seen = []

    def measure(r):
        seen.append(r)
        return BudgetRow(budget=r, relative_energy=r, accuracy=90.0 if r >= 0.437 else 80.0)

    rows = _bisect(measure, lambda row: row.accuracy >= 89.0, min_ratio=0.123, resolution=0.01)
    within = [r.budget for r in rows if r.accuracy >= 89.0]
    assert min(within) == pytest.approx(0.44) and 0.43 in [round(r, 2) for r in seen]
    assert seen[0] == pytest.approx(0.13) and len(seen) <= 10  # cheapest feasible first, then ~log2(87) steps
    # the cheapest feasible R already within: one measurement
    assert len(_bisect(measure, lambda row: True, min_ratio=0.5, resolution=0.01)) == 1


def test_grid_search_measures_every_ratio_and_tolerates_a_non_monotone_curve():
    """Accuracy within the bound at R = 0.66 but not at 0.70 / 0.72 (calibration noise): bisection from the cheapest
    feasible R never visits 0.66 once it is below a failing R; the grid measures all of its R and takes 0.66."""
    seen = []

    def measure(r):
        seen.append(r)
        return BudgetRow(budget=r, relative_energy=r, accuracy=90.0 if r >= 0.75 or r == 0.66 else 85.0)

    def within(row):
        return row.accuracy >= 89.0

    rows = _search(measure, within, 0.1, SearchConfig(grid=[0.8, 0.66, 0.72, 0.7, 0.75, 0.6, 0.66]))
    assert seen == [0.8, 0.75, 0.72, 0.7, 0.66, 0.6]  # each once, largest first
    assert [r.budget for r in rows] == sorted(seen) and min(r.budget for r in rows if within(r)) == 0.66
    seen.clear()
    rows = _search(measure, within, 0.1, SearchConfig(grid=[0.6, 0.7]))  # none within: the exact assignment too
    assert seen == [0.7, 0.6, 1.0] and [r.budget for r in rows] == [0.6, 0.7, 1.0]
    seen.clear()
    _search(measure, within, 0.6, SearchConfig(resolution=0.02))  # no grid: the bisection
    assert seen[0] == 0.6 and 0.66 not in seen
    for bad in ([], [0.5, 1.2], [0.0]):
        with pytest.raises(fames.FamesError, match="grid"):
            RunConfig.from_dict({"budget": "search", "search": {"grid": bad}})


def test_holdout_is_disjoint_and_seeded():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100) % 10
    rest, (vx, _) = holdout(TensorSamples(x, y), 30, seed=0)
    assert len(rest) == 70 and len(vx) == 30
    assert not set(rest.x.view(-1).tolist()) & set(vx.view(-1).tolist())
    assert torch.equal(holdout(TensorSamples(x, y), 30, seed=0)[1][0], vx)


def test_the_calibration_guard_never_judges_on_the_calibration_images():
    """Without a validation split the guard judged a calibration on a draw overlapping its own images (198 of 512 in
    a run, all of them through the Python API); now on the next images of the calibration's seeded order."""
    import warnings

    from fames.flow.approximate import calibration_draw, guard_draw

    x, y = torch.arange(3000.0).view(3000, 1), torch.arange(3000) % 10
    cfg = fames.FamesConfig(calibration=fames.CalibrationConfig(samples=512))
    cx, _ = calibration_draw(TensorSamples(x, y), cfg)
    gx, _ = guard_draw(TensorSamples(x, y), cfg, cx)
    assert len(gx) == 512 and not set(cx.view(-1).tolist()) & set(gx.view(-1).tolist())
    with pytest.warns(UserWarning, match="its guard shares them"):
        guard_draw(TensorSamples(x[:560], y[:560]), cfg, cx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = TensorSamples(x[:700], y[:700])
        assert len(guard_draw(small, cfg, calibration_draw(small, cfg)[0])[0]) == 188  # what is left, disjoint

    class Reshuffling(TensorSamples):  # a user's Samples: every draw its own order
        def draw(self, n, seed):
            return super().draw(n, seed + n)

    odd = Reshuffling(x, y)
    with pytest.warns(UserWarning, match="does not begin its larger draws with its smaller ones"):
        guard_draw(odd, cfg, calibration_draw(odd, cfg)[0])


def test_search_on_digits_chooses_on_validation_and_tests_once(tmp_path):
    model = _digits_w4a4(epochs=4)
    train_loader = get_loader("digits", "train", 128, shuffle=True, seed=0)
    cfg = fames.FamesConfig(budget="search", search=SearchConfig(resolution=0.02, validation_images=300),
                            estimator=fames.EstimatorConfig(samples=128, validate=False), calibration=None)
    r = fames.approximate_(model, train_loader, config=cfg, eval_data=get_loader("digits", "test", 500),
                           families=["trunc", "perf", "bam"], progress=False, float_accuracy=91.25)
    within = [row for row in r.rows if r.exact_accuracy - row.accuracy <= 1.0]
    assert r.best in within and r.best.budget == min(row.budget for row in within)
    assert len(r.rows) <= 9 and r.test["images"] == 360
    assert r.test["paired_difference"]["points"] == pytest.approx(r.test["accuracy"] - r.test["exact_accuracy"])
    files = r.save(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert tmp_path / "fig_frontier.png" in files and "**Test** (360 images" in text
    # the float model's accuracy is a test figure: on the Test line, not among the headline's validation figures
    assert "float 91.25%" in text.split("**Test**")[1].split("\n")[0] and "float" not in text.split("**Test**")[0]
    for row in r.rows:  # each R's paired validation loss, the quantity the bound judges, in the report's table
        pd = row.paired_difference
        assert pd["points"] == pytest.approx(row.accuracy - r.exact_accuracy)  # the same validation images
        assert f"| {100 * row.energy_reduction:.2f}% | {pd['points']:+.2f} [{pd['ci95'][0]:+.2f}, " in text
        mark = "yes" if row.within_bound else "no"  # and whether it is within, by the criterion of the choice
        se = (pd["ci95"][1] - pd["ci95"][0]) / (2 * 1.959963984540054)
        assert f"{pd['ci95'][1]:+.2f}] | {mark} |" in text
        assert row.within_bound == (r.exact_accuracy - row.accuracy + se <= 1.0 or row.energy_reduction <= 0)
    assert r.best.within_bound and "plus 1 standard error(s)" in text
    with pytest.raises(fames.FamesError, match="search.validation_images: Input should be greater than or equal to 1"):
        RunConfig.from_dict({"budget": "search", "search": {"validation_images": 0}})
    from fames.flow.sources import TensorSamples, holdout

    with pytest.raises(fames.FamesError, match=r"validation_images=600 holds out at least all 600 .*e\.g\. 120"):
        holdout(TensorSamples(torch.rand(600, 3, 2, 2), torch.zeros(600, dtype=torch.long)), 600, 0)
    with pytest.raises(fames.FamesError, match="budget"):
        RunConfig.from_dict({"budget": "seek"})


def test_finer_granularity_falls_back_to_the_layer_level_selection(digits_w4a4, tmp_path):
    """Filter level with the fallback: every budget keeps whichever of the filter- and the layer-level selections
    is more accurate on the judging images, so it never ends below the layer-level one there; without it, the
    filter-level selection stands."""
    model = digits_w4a4
    common = dict(budget=[0.8, 0.6, 0.45], estimator=fames.EstimatorConfig(samples=96, validate=False),
                  calibration=None)
    test = get_loader("digits", "test", 500)

    def run(**sel):  # a fresh loader each time: a shuffling loader yields another order on every pass
        return fames.approximate_(copy.deepcopy(model), get_loader("digits", "train", 128, shuffle=True, seed=0),
                                  config=fames.FamesConfig(**common, selection=SelectionConfig(granularity="filter",
                                                                                               **sel)),
                                  eval_data=test, families=["trunc", "perf", "bam"], progress=False)

    fine, safe = run(layer_fallback=False), run()
    for a, b in zip(fine.rows, safe.rows, strict=True):
        assert a.granularity_used is None and b.granularity_used in ("filter", "layer")
        assert b.accuracy_finer == pytest.approx(a.accuracy_uncalibrated)  # the same filter-level selection
        assert b.accuracy_uncalibrated >= b.accuracy_finer
        if b.granularity_used == "layer":
            assert b.accuracy_uncalibrated > b.accuracy_finer
            assert all(isinstance(v, str) for v in b.assignment.values())  # one AppMul per layer
        else:
            assert b.assignment == a.assignment
    assert any(b.granularity_used == "layer" for b in safe.rows)  # this model: the fallback does take over
    safe.save(tmp_path)
    assert "(L): the layer-level selection" in (tmp_path / "report.md").read_text()


def test_filter_search_never_ends_above_the_layer_search(digits_w4a4):
    """Target mode without calibration: with the fallback the filter level's row at every budget scores at least as
    well as the layer-level run's row there (its fallback is the layer-level run's own selection), so its bisection
    never ends at a larger R."""
    from fames.flow.approximate import _paired_se

    def search(granularity: str):  # a fresh loader each time (a shuffling loader yields another order per pass)
        cfg = fames.FamesConfig(budget="search", search=SearchConfig(resolution=0.02, validation_images=300),
                                estimator=fames.EstimatorConfig(samples=96, validate=False), calibration=None,
                                selection=SelectionConfig(granularity=granularity))
        return fames.approximate_(copy.deepcopy(digits_w4a4), get_loader("digits", "train", 128, shuffle=True, seed=0),
                                  config=cfg, eval_data=get_loader("digits", "test", 300),
                                  families=["trunc", "perf", "bam"], progress=False)

    layer, fine = search("layer"), search("filter")
    assert fine.best.budget <= layer.best.budget
    score = {id(r): r.accuracy - _paired_se(r.paired_difference) for r in (*layer.rows, *fine.rows)}
    lrows = {round(r.budget, 4): r for r in layer.rows if not r.infeasible}
    common = [(lrows[round(r.budget, 4)], r) for r in fine.rows if round(r.budget, 4) in lrows]
    assert common
    for lr, fr in common:
        assert score[id(fr)] >= score[id(lr)] - 1e-9


def test_search_does_not_calibrate_a_budget_beyond_reach(digits_w4a4):
    """A budget far below the bound before calibration is judged beyond it uncalibrated (calibrate_within), one
    close to it is calibrated; the search's answer keeps the bound."""
    model = digits_w4a4
    cfg = fames.FamesConfig(budget="search", search=SearchConfig(resolution=0.05, validation_images=300,
                                                                 calibrate_within=5.0),
                            estimator=fames.EstimatorConfig(samples=96, validate=False),
                            calibration=fames.CalibrationConfig(samples=128, quantile_step=0.1, quantile_max=0.2,
                                                                epochs=1, progress=False))
    r = fames.approximate_(copy.deepcopy(model), get_loader("digits", "train", 128, shuffle=True, seed=0), config=cfg,
                           families=["trunc", "perf", "bam"], progress=False)
    floor = r.exact_accuracy - 1.0
    far = [row for row in r.rows if row.accuracy_uncalibrated < floor - 5.0]
    assert far and all(row.beyond_reach and row.calibrate_s == 0 and row.accuracy == row.accuracy_uncalibrated
                       for row in far)
    assert all(not row.beyond_reach for row in r.rows if row.accuracy_uncalibrated >= floor - 5.0)
    assert r.exact_accuracy - r.best.accuracy <= 1.0 or not r.within_bound


def test_within_bound_keeps_a_margin_of_standard_errors(digits_w4a4):
    """The target mode's criterion: paired validation loss + margin x SE <= bound; a larger margin never picks a
    cheaper R, and the chosen row satisfies the criterion it was chosen by."""
    from fames.flow.approximate import _paired_se

    model = digits_w4a4
    chosen = {}
    for margin in (0.0, 3.0):
        cfg = fames.FamesConfig(budget="search", calibration=None, max_accuracy_loss=5.0,
                                search=SearchConfig(resolution=0.02, validation_images=300, margin=margin),
                                estimator=fames.EstimatorConfig(samples=96, validate=False))
        r = fames.approximate_(copy.deepcopy(model), get_loader("digits", "train", 128, shuffle=True, seed=0),
                               config=cfg, families=["trunc", "perf", "bam"], progress=False)
        se = _paired_se(r.best.paired_difference)
        assert r.exact_accuracy - r.best.accuracy + margin * se <= 5.0 + 1e-9
        chosen[margin] = r.best.relative_energy
    assert chosen[3.0] > chosen[0.0]  # the margin costs energy here
    assert _paired_se({"ci95": [-2 * 1.959963984540054, 0.0]}) == pytest.approx(1.0) and _paired_se(None) == 0


def test_the_layer_level_search_wins_the_final_choice_when_the_finer_one_ends_worse(digits_w4a4, monkeypatch):
    """Target mode, filter level: when the filter-level search ends at more energy than the layer-level search with
    the same settings (forced here by docking every filter-level row 50 points), the layer-level result is chosen
    (marked ``granularity_used="layer"``) and put into the model, so a finer granularity never ends below the
    layer level on validation."""
    from fames.flow.approximate import _BudgetContext

    def search(granularity: str):
        cfg = fames.FamesConfig(budget="search", search=SearchConfig(resolution=0.02, validation_images=300),
                                estimator=fames.EstimatorConfig(samples=96, validate=False), calibration=None,
                                selection=SelectionConfig(granularity=granularity), max_accuracy_loss=5.0)
        model = copy.deepcopy(digits_w4a4)
        r = fames.approximate_(model, get_loader("digits", "train", 128, shuffle=True, seed=0), config=cfg,
                               eval_data=get_loader("digits", "test", 300), families=["trunc", "perf", "bam"],
                               progress=False)
        return r, model

    layer, _ = search("layer")
    orig = _BudgetContext._run

    def worse(self, ratio, floor):  # noqa: ANN001, ANN202 - the finer search's budgets only
        row, state = orig(self, ratio, floor)
        if self.coarse is not None and not row.get("infeasible"):
            row["accuracy"] -= 50.0
        return row, state

    monkeypatch.setattr(_BudgetContext, "_run", worse)
    fine, model = search("filter")
    assert fine.best.granularity_used == "layer" and fine.within_bound
    assert fine.best.budget == layer.best.budget and fine.best.relative_energy == pytest.approx(
        layer.best.relative_energy)
    assert fine.best.assignment == layer.best.assignment
    assert all(isinstance(v, str) for v in fine.best.assignment.values())  # one AppMul per layer
    from fames.method.assignment import current_assignment

    # the model holds the headline: its approximate layers and the exact design each exact layer was given
    assert any(not a.startswith("exact") for a in fine.best.assignment.values())
    assert current_assignment(model)["layers"] == fine.best.assignment


def test_lazy_budget_rows_are_keyed_by_their_bound():
    """A budget row whose calibration was skipped (or judged beyond reach) under one bound is no answer under
    another: its stage key holds the bound, the margin and calibrate_within, and nothing else of the search."""
    from fames.flow.approximate import lazy_budget_key

    def cfg(**kw):
        search = {"resolution": 0.01, **kw.pop("search", {})}
        return RunConfig.from_dict({"budget": "search", "max_accuracy_loss": 1.0, "search": search, **kw})

    base = lazy_budget_key("b", 0.5, cfg())
    assert lazy_budget_key("b", 0.5, cfg()) == base
    assert lazy_budget_key("b", 0.5, cfg(search={"resolution": 0.02})) == base  # the grid does not decide laziness
    for other in (cfg(max_accuracy_loss=4.0), cfg(search={"margin": 2.0}), cfg(search={"calibrate_within": 5.0})):
        assert lazy_budget_key("b", 0.5, other) != base
    assert lazy_budget_key("b", 0.51, cfg()) != base


def test_post_training_quantization_never_sees_the_validation_split(tmp_path, monkeypatch):
    """A float checkpoint quantized for a search set its activation ranges on 219 of the 300 validation images."""
    import fames.flow.inputs as inputs
    from fames.flow.approximate import split_samples
    from fames.models import create_model, save_checkpoint

    seen = []
    monkeypatch.setattr(inputs, "calibrate_ptq", lambda model, loader, num_batches: seen.extend(
        x for i, (x, _) in enumerate(loader) if i < num_batches))
    ck = save_checkpoint(create_model("digits_cnn"), tmp_path / "f.pt", meta={"quant": None})
    cfg = RunConfig.from_dict({"model": "digits_cnn", "checkpoint": str(ck), "quant": "W4A4", "budget": "search",
                               "data": {"dataset": "digits"}, "search": {"validation_images": 300}})
    got = inputs.load_inputs(cfg, progress=False)
    vx = split_samples(got.samples, cfg)[1][0]
    val = {x.numpy().tobytes() for x in vx.contiguous(memory_format=torch.contiguous_format)}
    used = {x.numpy().tobytes() for b in seen for x in b.contiguous(memory_format=torch.contiguous_format)}
    assert len(used) >= 1000 and not used & val


def test_a_holdout_record_the_data_cannot_honour_is_said(digits_w4a4):
    model = copy.deepcopy(digits_w4a4)
    model.checkpoint_meta = {"holdout": {"n": 300, "of": 1437, "seed": 0}}
    cfg = fames.FamesConfig(budget="search", calibration=None, search=SearchConfig(resolution=0.1,
                                                                                  validation_images=300),
                            estimator=fames.EstimatorConfig(samples=64, validate=False))
    with pytest.warns(UserWarning, match="records 300 held-out training images, but the data is not"):
        r = fames.approximate_(model, get_loader("digits", "train", 128, shuffle=True, seed=0), config=cfg,
                               families=["trunc"], progress=False)
    assert r.test["validation"]["source"] == "training data the checkpoint may have seen"


def test_a_layer_set_to_float_is_refused_with_the_way_to_keep_it_float(digits_w4a4):
    """It was selected like the others and came back quantized, and the exact model's figures were not its own."""
    from fames.quant import qlayers, set_mode

    model = copy.deepcopy(digits_w4a4)
    first = qlayers(model)[0][0]
    set_mode(model, "float", [first])
    with pytest.raises(fames.FamesError, match=rf"\['{first}'\] are quantized but set to float mode.*bits None"):
        fames.approximate_(model, get_loader("digits", "train", 128, shuffle=True, seed=0), progress=False)

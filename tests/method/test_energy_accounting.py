"""Energy figures against hand sums: MACs x energy per operation of the design each layer uses."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fames
from fames.appmul.core import AppMul, Cost, exact_lut
from fames.appmul.library import Library
from fames.method.assignment import substitute
from fames.method.energy import exact_costs, model_energy, trace_macs
from fames.quant import qlayers


def test_an_exact_design_chosen_instead_of_the_reference_is_charged_its_own_energy():
    """A faster exact structure (PDP 0.9 of the reference exact) chosen for a layer: the layer runs in exact mode,
    and its energy is that design's, not the reference's (R was 1.00 against the 0.90 the assignment names)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    fames.quantize(model, "W4A4")
    fames.calibrate_ptq(model, [(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))])
    widths = {n: m.widths for n, m in model.named_modules() if hasattr(m, "widths") and hasattr(m, "mode")}
    lib = []
    for k, (a, w, sa, sw) in enumerate(dict.fromkeys(widths.values())):
        lut = exact_lut(a, w, sa, sw)
        ref = 60.0 + k
        lib += [AppMul(f"exact_{k}", a, w, sa, sw, lut, cost=Cost(pdp_fj=ref, relative={"pdp": 1.0})),
                AppMul(f"exactfast_{k}", a, w, sa, sw, lut, cost=Cost(pdp_fj=0.9 * ref, relative={"pdp": 0.9}))]
    library = Library(lib)
    names = {n: next(m.name for m in lib if m.widths == wd and "fast" in m.name) for n, wd in widths.items()}
    substitute(model, {"layers": names}, library)
    assert all(m.mode == "exact" for n, m in model.named_modules() if n in widths)
    macs = trace_macs(model, (1, 8, 8))[0]
    e, e_exact, per = model_energy(model, macs, exact_costs(lib))
    assert e / e_exact == pytest.approx(0.9) and np.allclose([v[0] / v[1] for v in per.values()], 0.9)
    layer = next(m for n, m in model.named_modules() if n in widths)
    wrong = lib[0].lut.copy()
    wrong[1, 1] += 1
    with pytest.raises(fames.errors.AppMulError, match="not an exact multiplier"):
        layer.clear_assignment(AppMul("approx", *lib[0].widths, wrong))


def test_a_run_that_picks_a_faster_exact_design_reports_its_energy_and_reloads_it(tmp_path):
    """Through selection, the report and a reload: layers given the faster exact design count 0.9 of the reference."""
    torch.manual_seed(0)
    model = _same_net().eval()
    x, y = torch.randn(96, 3, 8, 8), torch.randint(0, 4, (96,))
    fames.quantize(model, "W4A4")
    fames.calibrate_ptq(model, (x, y))
    widths = {n: m.widths for n, m in qlayers(model)}
    pdp = {}
    lib = []
    for a, w, sa, sw in dict.fromkeys(widths.values()):
        lut = exact_lut(a, w, sa, sw)
        for name, rel in (("exact", 1.0), ("exactfast", 0.9)):
            lib.append(AppMul(f"{name}_{a}x{w}", a, w, sa, sw, lut, cost=Cost(  # published: taken as it is
                pdp_fj=50.0 * rel, relative={"pdp": rel}, source="published")))
            pdp[lib[-1].name] = 50.0 * rel
    cfg = fames.FamesConfig(budget=[0.95], max_accuracy_loss=100.0, estimator=fames.EstimatorConfig(samples=16),
                            calibration=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fames.approximate_(model, (x[:64], y[:64]), library=lib, config=cfg, eval_data=(x[64:], y[64:]),
                                    progress=False)
    macs = {layer["name"]: layer["macs"] for layer in result.layers}
    by_hand = sum(macs[n] * pdp[result.best.assignment[n]] for n in macs) / sum(macs[n] * 50.0 for n in macs)
    assert result.best.relative_energy == pytest.approx(by_hand) and by_hand <= 0.95 + 1e-9
    result.save(tmp_path)
    loaded = fames.load_model(tmp_path, _same_net())
    e, e_exact, _ = model_energy(loaded, trace_macs(loaded, x[:4])[0], exact_costs(lib))
    assert e / e_exact == pytest.approx(by_hand)


def _same_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

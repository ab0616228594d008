"""The one-line summary of an assignment spec that reports print."""

from fames.method.assignment import describe_spec


def test_describe_spec_counts_groups_and_names_the_control_variate():
    assert describe_spec("trunc_k4_8x8s") == "trunc_k4_8x8s"
    comp = {"granularity": "layer", "appmuls": ["roup_p1r0"],
            "compensation": {"method": "rank1", "fit": "calibrated", "phi": list(range(256))}}
    assert describe_spec(comp) == "roup_p1r0 + control variate (rank1, calibrated)"
    filt = {"granularity": "filter", "appmuls": ["exact", "a", "b"], "index": [2, 0, 2, 2, 0]}
    assert describe_spec(filt) == "5 filters: b x3, exact x2"  # unused "a" left out, most used first
    kern = {"granularity": "kernel", "appmuls": ["exact", "a"], "index": [[0, 1], [1, 1], [1, 0]]}
    assert describe_spec(kern) == "6 kernels: a x4, exact x2"


def test_an_exact_design_chosen_instead_of_the_reference_is_charged_its_own_energy():
    """A faster exact structure (PDP 0.9 of the reference exact) chosen for a layer: the layer runs in exact mode,
    and its energy is that design's, not the reference's (R was 1.00 against the 0.90 the assignment names)."""
    import numpy as np
    import pytest
    import torch
    from torch import nn

    import fames
    from fames.appmul.core import AppMul, Cost, exact_lut
    from fames.appmul.library import Library
    from fames.method.assignment import substitute
    from fames.method.energy import exact_costs, model_energy, trace_macs

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

"""fames: approximate multipliers for quantized neural networks.

    import fames
    fames.quantize(model, "W4A4"); fames.calibrate_ptq(model, loader)
    result = fames.approximate_(model, loader, library="generate", config=fames.FamesConfig(budget=0.7))
    print(result.report()); result.save("out/")

Layers (DESIGN.md; a module imports only from its own layer or below, checked by import-linter):
``cli`` > ``baselines`` > ``flow`` (approximate_, run, report, demo) > ``method`` (estimate, select, calibrate,
compensate) > ``train`` > ``quant`` > ``emulate`` > ``appmul`` : ``hw`` > ``models`` | ``data`` > ``io`` | ``errors``.
The names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "quantize": "fames.quant",
    "calibrate_ptq": "fames.quant",
    "QuantConfig": "fames.quant",
    "approximate_": "fames.flow.approximate",
    "FamesResult": "fames.flow.approximate",
    "BudgetRow": "fames.flow.approximate",
    "run": "fames.flow.run",
    "load_model": "fames.flow.saved",
    "FamesConfig": "fames.flow.config",
    "EstimatorConfig": "fames.flow.config",
    "SelectionConfig": "fames.flow.config",
    "DataConfig": "fames.flow.config",
    "SearchConfig": "fames.flow.config",
    "SynthOptions": "fames.flow.config",
    "RunConfig": "fames.flow.config",
    "CalibrationConfig": "fames.method.calibrate",
    "FinetuneConfig": "fames.method.finetune",
    "Library": "fames.appmul.library",
    "AppMul": "fames.appmul.core",
    "Cost": "fames.appmul.core",
    "create_model": "fames.models",
    "evaluate": "fames.train",
    "FamesError": "fames.errors",
    "AppMulError": "fames.errors",
    "HardwareError": "fames.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fames' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""Settings and reports of FAMES calibration (see :mod:`fames.method.calibrate`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fames.errors import FamesError, check_all, check_fields

REFERENCES = ("exact", "float")
OPTIMIZERS = ("adam", "sgd")
EPS = 1e-12


# ====================================================================== config and report
@dataclass
class CalibrationConfig:
    """Settings of :func:`calibrate` (paper defaults: 1,024 samples, 5 epochs, lr 0.1)."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # how `fames run` validates a YAML calibration block

    quantile_step: float = 0.01
    quantile_max: float = 0.5
    search_samples: int | None = None  # first samples the search's quantiles and MRE come from (None = all)
    search: bool = True  # activation quantile search
    search_exact_layers: bool = True  # also search layers without AppMuls (they see drifted inputs)
    reference: str = "exact"  # reference outputs: "exact" (quantized, pre-calibration) or "float"
    keep_if_worse: bool = True  # keep a layer's current range if no quantile beats it
    max_values: int = 1 << 20  # activation values sampled per layer for the quantiles
    lwc: bool = True
    epochs: int = 5
    lr: float = 0.1
    optimizer: str = "adam"
    init_logit: float = 4.0
    kd_alpha: float = 0.0  # weight of KL distillation from the reference logits (1 when data has no labels)
    kd_temperature: float = 1.0
    learn_act_scale: bool = False  # also train the activation step sizes during LWC
    act_scale_lr: float = 1e-3
    keep_best: bool = True  # keep the LWC epoch with the lowest calibration objective
    samples: int = 1024
    batch_size: int = 128
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        check_all(
            (not 0 < self.quantile_step < 0.5, f"quantile_step={self.quantile_step} must be in (0, 0.5)"),
            (not 0 < self.quantile_max <= 0.5, f"quantile_max={self.quantile_max} must be in (0, 0.5]"),
            (self.reference not in REFERENCES, f"reference={self.reference!r} is not one of {REFERENCES}"),
            (self.optimizer not in OPTIMIZERS, f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}"),
            (self.samples < 1 or self.batch_size < 1 or self.epochs < 0,
             "samples and batch_size must be >= 1 and epochs >= 0"),
            (not 0.0 <= self.kd_alpha <= 1.0, f"kd_alpha={self.kd_alpha} must be in [0, 1]"),
            (not 1 <= self.max_values <= 1 << 24, "max_values must be in 1 .. 2**24 (torch.quantile's limit)"),
            (not (self.lr > 0 and self.act_scale_lr > 0 and self.kd_temperature > 0) or not all(map(math.isfinite, (
                self.lr, self.act_scale_lr, self.kd_temperature, self.init_logit))),
             f"lr={self.lr}, act_scale_lr={self.act_scale_lr} and kd_temperature={self.kd_temperature} must be finite "
             f"and > 0, init_logit={self.init_logit} finite (no weight clipping: lwc: false)"),
        )


@dataclass
class LayerCalibration:
    """Outcome of one layer: chosen quantile (None = kept the current range), MRE and ranges before/after.

    ``mre_before`` is measured with the layer's range before the search, on the input produced by the
    already-calibrated earlier layers. ``clip`` is the mean LWC clip factor over channels (scale after /
    scale before), None without LWC.
    """

    name: str
    approx: bool
    q: float | None = None
    mre_before: float = float("nan")
    mre_after: float = float("nan")
    range_before: tuple[float, float] = (float("nan"), float("nan"))
    range_after: tuple[float, float] = (float("nan"), float("nan"))
    clip: float | None = None
    seconds: float = 0.0


@dataclass
class CalibrationReport:
    """What :func:`calibrate` did. Losses are mean cross-entropy on the calibration samples (approx model).

    ``lwc_history[e]`` is the LWC objective on the calibration set after epoch ``e`` (``e = 0``: before LWC).
    """

    layers: list[LayerCalibration]
    samples: int
    loss_before: float
    loss_after_search: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    lwc_history: list[float] = field(default_factory=list)
    lwc_best_epoch: int | None = None
    seconds: float = 0.0
    seconds_search: float = 0.0
    seconds_lwc: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerCalibration:
        for lc in self.layers:
            if lc.name == name:
                return lc
        raise FamesError(f"no layer {name!r} in the calibration report")

    @property
    def quantiles(self) -> dict[str, float | None]:
        return {lc.name: lc.q for lc in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """Markdown table of the per-layer outcome plus the loss line."""
        rows = ["| layer | AppMul | q | MRE before | MRE after | LWC clip |", "|---|---|---|---|---|---|"]
        for lc in self.layers:
            q = "kept" if lc.q is None else f"{lc.q:.2f}"
            clip = "-" if lc.clip is None else f"{lc.clip:.3f}"
            rows.append(
                f"| {lc.name} | {'yes' if lc.approx else 'no'} | {q} | {lc.mre_before:.4f} | "
                f"{lc.mre_after:.4f} | {clip} |"
            )
        rows.append(
            f"\ncalibration loss {self.loss_before:.4f} -> {self.loss_after_search:.4f} (search) -> "
            f"{self.loss_after:.4f} (LWC); accuracy {self.accuracy_before:.2f}% -> "
            f"{self.accuracy_after:.2f}%; {self.samples} samples, {self.seconds:.1f} s"
        )
        return "\n".join(rows)

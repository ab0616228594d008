"""Configuration of FAMES, one dataclass per concern, shared by the Python API and ``fames run``.

Python: ``fames.FamesConfig(budget=0.7, estimator=EstimatorConfig(kind="taylor-full"))``.
YAML (``fames run``): the same fields as keys, nested by concern, plus what the run loads::

    model: resnet20                      # zoo name or package.module:factory
    checkpoint: checkpoints/resnet20_w4a4.pt
    budget: [0.9, 0.8, 0.7, 0.6]        # energy ratios R (one number, or a list = a sweep)
    data: {dataset: cifar10, eval_images: 2000}
    estimator: {kind: taylor-rank1, samples: 256}
    selection: {granularity: layer}
    calibration: {samples: 1024, epochs: 5}   # or `calibration: false`
    finetune: {samples: 20000, epochs: 1}     # optional: approximation-aware retraining after calibration

Every problem of a YAML config (unknown key, wrong type, out of range) is reported at once, before any work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from fames.appmul.synth.cgp import PROXIES
from fames.appmul.synth.error import METRICS
from fames.appmul.synth.library import METHODS
from fames.errors import ConfigError, FamesError, check_all, check_fields
from fames.method.calibrate import CalibrationConfig
from fames.method.estimate import ESTIMATOR_NAMES
from fames.method.estimate.taylor import CURVATURES
from fames.method.finetune import FinetuneConfig
from fames.quant.layers import GRANULARITIES

STRICT = {"extra": "forbid", "strict": True}  # pydantic settings of every config dataclass
COMPENSATIONS = ("none", "control_variate", "auto", "bias")
# field constraints that pydantic checks (every problem at once); __post_init__ checks them again for direct use
Ratio = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Positive = Annotated[int, Field(ge=1)]
ENERGY_METRICS = ("pdp", "energy")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> tuple[bool, str]:
    """A :func:`check_all` check that ``value`` is one of ``allowed``."""
    return value not in allowed, f"{key} {value!r} is not one of {list(allowed)}"


@dataclass
class EstimatorConfig:
    """How Omega[group, AppMul] is estimated.

    ``kind``: ``taylor-rank1`` (default), ``taylor-full``, ``first-order``, ``l2``, ``mre``, each optionally with
    ``+forward`` (the mean output error forwarded where the estimate exceeds ``forward_above`` nats; layer
    granularity), or ``measured`` (the loss change of every (layer, AppMul) pair measured by one forward pass of the
    samples, plus ``measured_margin`` standard errors of it so that chance falls are not taken for gains; layer
    granularity, no compensation). ``samples``: training images of the estimate (paper: 256).
    ``curvature``: how the second-order term is split over filters/kernels (``bound`` | ``covariance`` | ``own``, see
    :class:`~fames.method.estimate.TaylorEstimator`). ``validate`` (opt-in): also measure the true loss
    change of every (layer, AppMul) for the Spearman figure: one forward pass of the sample batch per pair (ResNet-20
    W4A4, 522 pairs x 256 images: about 100 s on 2 cores; some 36 minutes projected for ResNet-32).
    """

    __pydantic_config__ = STRICT
    kind: str = "taylor-rank1"
    samples: Positive = 256
    forward_above: Annotated[float, Field(allow_inf_nan=False)] = 0.1
    curvature: str = "bound"
    validate: bool = False
    measured_margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0

    def __post_init__(self) -> None:
        check_fields(self)
        base = self.kind.removesuffix("+forward")
        check_all(_one_of("estimator kind", base, tuple(n for n in ESTIMATOR_NAMES if "+" not in n)),
                  _one_of("estimator curvature", self.curvature, CURVATURES),
                  (self.samples < 1, f"estimator samples={self.samples}: give at least 1 training image"))


@dataclass
class SelectionConfig:
    """How the ILP selects: ``granularity`` (``layer`` | ``filter`` | ``kernel`` = output x input channel pair),
    ``energy_metric`` (``pdp`` as the paper, or simulated ``energy`` per op), ``compensation`` (``none`` |
    ``control_variate`` on every approximate layer | ``auto``: the ILP decides per layer, both layer granularity
    only | ``bias``: the mean-error correction folded into every approximate layer's bias, no hardware cost, any
    granularity, estimated and selected with the correction applied), ``stop_at_loss``
    (sweep budgets downwards and stop after the first one beyond ``max_accuracy_loss``), ``solver_output`` (let
    HiGHS print its log; silenced by default), ``layer_fallback`` (filter and kernel granularity: at every budget
    the selection a layer-level run makes there, from its own layer-level estimate, is measured too on the same
    images and kept when it scores better by the bound's criterion: accuracy, less ``search.margin`` standard errors
    of the paired loss in the target mode. Without calibration every row then scores at least as well as the
    layer-level run's row of the same budget, so the target mode's bisection never ends at a larger R than the
    layer level's; with calibration the choice is made before calibrating, so the target mode also runs the
    layer-level search itself (the stages of a layer-level run with these settings: free after one) and takes its
    result when it ends at less energy within the bound on validation: a finer granularity never ends below the
    layer level there)."""

    __pydantic_config__ = STRICT
    granularity: str = "layer"
    energy_metric: str = "pdp"
    compensation: str = "none"
    stop_at_loss: bool = False
    solver_output: bool = False
    layer_fallback: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        check_all(_one_of("granularity", self.granularity, GRANULARITIES),
                  _one_of("energy_metric", self.energy_metric, ENERGY_METRICS),
                  _one_of("compensation", self.compensation, COMPENSATIONS),
                  (self.compensation in ("control_variate", "auto") and self.granularity in ("filter", "kernel"),
                   f"compensation {self.compensation!r} shares one control variate per layer: it needs granularity "
                   "'layer' (compensation 'bias' works at every granularity)"))


@dataclass
class DataConfig:
    """Where ``fames run`` takes its images: ``dataset`` is a registered name (``digits``, ``cifar10``, ...),
    ``imagefolder:PATH`` (one sub-folder per class under ``PATH/train`` and ``PATH/test``) or
    ``package.module:factory`` (``factory(split)`` returns a Dataset of ``(x (C, H, W), label)``);
    ``root``: the dataset's folder; ``eval_images``: a class-stratified test subset (None = the whole split);
    ``channels``: an image folder's images as 3 (RGB, the default) or 1 (grayscale) channels."""

    __pydantic_config__ = STRICT
    dataset: str = "digits"
    root: str | None = None
    batch_size: Positive = 500
    eval_images: Positive | None = None
    channels: Literal[1, 3] | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size < 1:
            raise ConfigError(f"data batch_size={self.batch_size} must be >= 1")
        if self.eval_images is not None and self.eval_images < 1:
            raise ConfigError(f"data eval_images={self.eval_images} must be >= 1 (or null for the whole test split)")


DEFAULT_VALIDATION_IMAGES = 2000  # validation split of the target mode when the checkpoint records no held-out images


@dataclass
class SearchConfig:
    """The target mode (``budget: search``): the smallest energy ratio R, to ``resolution``, whose calibrated model
    stays within ``max_accuracy_loss`` of the exact quantized model on ``validation_images`` training images held
    out from everything else (the estimate and the calibration draw from the rest; default: all the images the
    checkpoint held out of its training, ``fames train --holdout``, else ``DEFAULT_VALIDATION_IMAGES``: on 5,000
    images one standard error of the paired loss is about 0.25 points against 0.4 on 2,000, so a 1-point bound is
    judged at four standard errors rather than two and a half); the chosen model is then
    evaluated once on the test data. Bisection over R: about log2(1 / resolution) calibrations. ``calibrate_within``
    (points): an R whose model is further than this below the bound before calibration is judged beyond it without
    calibrating (a calibration is the search's main cost; the largest recovery we measured was 15.6 points, ResNet-20
    W4A4 at R = 0.52: 67.5% -> 83.0%, so the default leaves a wide margin). ``margin`` (standard errors): a budget
    counts as within the bound when its paired validation loss plus ``margin`` standard errors of that paired
    difference is (the smallest R that only just touches the bound on validation is optimistic by selection:
    ResNet-20 W8A8 chosen at exactly -1.00 on 2,000 validation images tested at -1.67 points). ``grid``: instead of
    bisecting, measure each of these R on the validation split (one calibration each) and choose the cheapest within
    the bound. Bisection assumes the calibrated accuracy falls monotonically with R; near the bound it need not
    (ResNet-20 W4A4, docs/results/calibration.md: calibrated validation accuracy flat at 84.0-85.4% and not monotone
    over R = 0.62-0.80), and a grid shows the whole curve; it also tests more R, so its choice is the more
    optimistic by selection (keep ``margin``)."""

    __pydantic_config__ = STRICT
    resolution: Annotated[float, Field(ge=0.001, le=0.1)] = 0.01
    validation_images: Positive | None = None
    calibrate_within: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30.0
    margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    grid: list[Ratio] | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        check_all((not 0.001 <= self.resolution <= 0.1,
                   f"search resolution={self.resolution} must lie in [0.001, 0.1]"),
                  (self.grid is not None and (not self.grid or any(not 0 < r <= 1 for r in self.grid)),
                   f"search grid={self.grid} must be a non-empty list of energy ratios in (0, 1]"),
                  (self.validation_images is not None and self.validation_images < 1,
                   f"search validation_images={self.validation_images} must be >= 1"))


@dataclass
class FamesConfig:
    """What :func:`fames.approximate_` does.

    ``budget``: energy ratio R in (0, 1] (multiplier energy / exact), a list (a sweep), or ``"search"`` (the target
    mode, :class:`SearchConfig`); ``max_accuracy_loss`` (points): the headline is the cheapest budget within this
    loss of the exact quantized model; ``calibration``:
    :class:`~fames.method.calibrate.CalibrationConfig` (None: no calibration); ``finetune``:
    :class:`~fames.method.finetune.FinetuneConfig`, approximation-aware retraining of every budget's model after its
    calibration, under the same held-out guard (None, the default: FAMES as published, no retraining); ``seed`` draws
    the samples.
    """

    __pydantic_config__ = STRICT
    budget: Ratio | list[Ratio] | Literal["search"] = field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6])
    max_accuracy_loss: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    calibration: CalibrationConfig | None = field(default_factory=CalibrationConfig)
    finetune: FinetuneConfig | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        for key, cls in (("estimator", EstimatorConfig), ("selection", SelectionConfig), ("search", SearchConfig)):
            if not isinstance(getattr(self, key), cls):
                raise ConfigError(f"FamesConfig {key} must be a fames.{cls.__name__}, not "
                                  f"{type(getattr(self, key)).__name__}")
        if self.calibration is not None and not isinstance(self.calibration, CalibrationConfig):
            raise ConfigError(f"FamesConfig calibration must be a fames.CalibrationConfig or None, not "
                              f"{type(self.calibration).__name__}")
        if self.finetune is not None and not isinstance(self.finetune, FinetuneConfig):
            raise ConfigError(f"FamesConfig finetune must be a fames.FinetuneConfig or None, not "
                              f"{type(self.finetune).__name__}")
        if self.calibration is not None and self.calibration.seed != 0:
            raise ConfigError(f"calibration.seed={self.calibration.seed} would be ignored: the run's seed (`seed:`, "
                              f"FamesConfig.seed, now {self.seed}) seeds the calibration with everything else; set "
                              "that one instead")
        for r in self.budgets:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                raise ConfigError(f"energy budget {r!r} must be a number in (0, 1] (fraction of the exact energy)")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError(f"budget {self.budgets} lists a ratio twice; give each once")
        check_fields(self)  # after the budget's own checks, which say more than pydantic's union message
        if not math.isfinite(self.max_accuracy_loss) or self.max_accuracy_loss < 0:
            raise ConfigError(f"max_accuracy_loss={self.max_accuracy_loss} must be a finite number of points >= 0")
        if self.estimator.kind.endswith("+forward") and self.selection.granularity != "layer":
            raise ConfigError(f"estimator {self.estimator.kind!r} runs a forward pass per layer and candidate: it "
                             "needs granularity 'layer' (drop '+forward' for filters or kernels)")
        if self.estimator.kind == "measured" and (self.selection.granularity != "layer"
                                                  or self.selection.compensation in ("control_variate", "auto")):
            raise ConfigError("estimator 'measured' runs a forward pass per layer and plain AppMul: it needs "
                              "granularity 'layer' and no control variate (use taylor-rank1 for filters, kernels or "
                              "compensation)")
        if self.selection.compensation == "bias" and self.estimator.kind not in ("first-order", "taylor-rank1",
                                                                                  "taylor-full"):
            raise ConfigError(f"compensation 'bias' is estimated by the Taylor model of the corrected error: use "
                              f"estimator kind first-order, taylor-rank1 or taylor-full, not {self.estimator.kind!r}")
        if self.selection.compensation == "auto" and self.estimator.kind in ("l2", "mre"):
            raise ConfigError(f"compensation 'auto' estimates every candidate with and without its control variate by "
                              f"the Taylor model: use a Taylor estimator kind (e.g. taylor-rank1), not "
                              f"{self.estimator.kind!r}")

    @property
    def searching(self) -> bool:
        """Whether the target mode searches R (``budget: search``)."""
        return isinstance(self.budget, str) and self.budget == "search"

    @property
    def budgets(self) -> list[float]:
        """The budget(s) as a list (empty in the target mode)."""
        b = self.budget
        if isinstance(b, str):
            if b != "search":
                raise ConfigError(f"budget {b!r}: give a ratio in (0, 1], a list of them, or 'search'")
            return []
        if isinstance(b, (list, tuple)):
            if not b:
                raise ConfigError("budget: give at least one energy ratio in (0, 1]")
            return [float(r) if not isinstance(r, bool) else r for r in b]
        return [b]


@dataclass
class SynthOptions:
    """``library: synth`` (or ``generate+synth``): approximate logic synthesis per layer width pair
    (:class:`fames.appmul.synth.library.SynthConfig`; the library is cached by these settings and the liberty).
    ``max_bits``: width pairs with an operand wider than this are not synthesized (an 8x8 library takes up to an
    hour on two cores; ``generate+synth`` still gives them the families). ``operands``: weight each width pair's
    error by the operand pairs of the model's own layers of those widths (counted exactly on the calibration images,
    never on the validation split), so that the designs are tailored to the model; pair it with ``metric: mred0``
    (``mred`` leaves the zero products, the most frequent pairs after a ReLU, unconstrained). ``operands: layer``:
    one library per layer instead, each tailored to that layer's own operand pairs (pair it with ``metric: omse``,
    the layer's output error, with ``max_error`` in the unit of ``mse``); every layer may take any layer's design."""

    __pydantic_config__ = STRICT
    max_bits: Annotated[int, Field(ge=2, le=8)] = 6
    methods: list[str] = field(default_factory=lambda: ["lac", "cgp"])
    metric: str = "mred"
    max_error: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 20.0
    seeds: Positive = 2
    generations: Positive = 20000
    designs: Positive = 24
    proxy: str = "pdp"
    family_starts: bool = True
    rounds: Positive = 1
    operands: bool | Literal["layer"] = False

    def __post_init__(self) -> None:
        check_fields(self)
        bad = [m for m in self.methods if m not in METHODS]
        check_all((bool(bad) or not self.methods, f"synth.methods {self.methods} must name some of {list(METHODS)}"),
                  _one_of("synth.metric", self.metric, METRICS), _one_of("synth.proxy", self.proxy, PROXIES),
                  (self.metric == "omse" and self.operands != "layer",
                   "synth.metric omse scores one layer's output error: it needs one library per layer, "
                   "synth.operands: layer"))


@dataclass
class RunConfig(FamesConfig):
    """``fames run CONFIG.yaml``: a :class:`FamesConfig` plus what the run loads and where it writes.

    ``model``: zoo name or ``package.module:factory``; ``checkpoint``: a fames ``.pt`` (float or quantized), a
    plain ``state_dict`` file, ``default`` (the zoo's weights) or None; ``float_checkpoint``: the float model,
    for its accuracy; ``quant``: quantize a float checkpoint by PTQ (``W4A4``, a dict or a file); ``library``:
    ``generate`` (our families), ``evoapprox``, ``synth`` (approximate logic synthesis with the ``synth`` options),
    ``generate+synth`` or a library directory; ``families``: which generated families;
    ``liberty``: ``synthetic`` or a liberty path; ``output``: the run folder; ``seeds``: repeat the sample draws,
    estimate and calibration with each seed (the first is the reported run; the report gives the spread).
    """

    model: str = "digits_cnn"
    checkpoint: str | None = None
    float_checkpoint: str | None = None
    quant: Any = None
    library: str = "generate"  # generate | evoapprox | synth | generate+synth | a library directory
    families: list[str] = field(default_factory=lambda: ["all"])
    synth: SynthOptions = field(default_factory=SynthOptions)
    liberty: str = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    output: str = "fames-out"
    seeds: list[int] | None = None  # repeat draw, estimate and calibration per seed; the report gives the spread

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.families:
            raise ConfigError("families: [] leaves no generated design; name families (fames lib families lists "
                              "them) or leave the key out for all")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ConfigError(f"seeds {self.seeds}: give distinct seeds (the first one is the reported run)")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "run config") -> RunConfig:
        """Validate a mapping (YAML/JSON) against every field at once; all problems in one :class:`FamesError`."""
        from pydantic import TypeAdapter, ValidationError

        if not isinstance(d, dict):
            raise FamesError(f"{where}: a run config is a mapping of keys to values, not {type(d).__name__}")
        d = dict(d)
        if d.get("calibration") is False:
            d["calibration"] = None
        try:
            return TypeAdapter(cls).validate_json(json.dumps(d, allow_nan=True, default=str))
        except ValidationError as e:
            errors = _one_branch_per_union(e.errors())
            problems = [_problem(cls, err) for err in errors]
            problems += [p for p in _checks_behind(cls, d, errors) if p not in problems]
            raise FamesError(f"{where} has {len(problems)} problem(s): " + "; ".join(problems)) from None
        except (TypeError, ValueError) as e:
            raise FamesError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        from fames.io import read_config_file

        d = read_config_file(path, "run config")
        if d is None:
            raise FamesError(f"{path} is empty (or only comments): a run config names at least model, checkpoint and "
                             "output; see examples/*.yaml")
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_branch_per_union(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, for a field of a union type, the errors of the branch that got furthest (``[0.5, true]`` is a list
    with a bad item, not a bad number)."""
    branches: dict[str, dict[str, list[dict[str, Any]]]] = {}
    out: list[Any] = []
    for err in errors:
        raw = [str(p) for p in err["loc"]]
        b = next((i for i, p in enumerate(raw) if _is_branch(p)), None)
        if b is None:
            out.append(err)
            continue
        field_path = ".".join(raw[:b])
        if field_path not in branches:
            branches[field_path] = {}
            out.append(field_path)  # placeholder keeps the order
        branches[field_path].setdefault(raw[b], []).append(err)
    result = []
    for item in out:
        if isinstance(item, str):
            result += max(branches[item].values(), key=lambda errs: max(len(e["loc"]) for e in errs))
        else:
            result.append(item)
    return result


def _problem(cls: type, err: dict[str, Any]) -> str:
    """One line for one pydantic error: ``location: message`` (known keys listed for an unknown one)."""
    loc = ".".join(str(p) for p in err["loc"] if not _is_branch(str(p))) or "(top level)"
    msg = err["msg"].replace("Unexpected keyword argument", "unknown key").removeprefix("Value error, ")
    if err["type"] == "unexpected_keyword_argument":
        msg += f" (known keys here: {_known_keys(cls, err['loc'][:-1])})"
    return f"{loc}: {msg}"


def _is_branch(part: str) -> bool:
    """A location part pydantic adds for a branch of a union type (``float``, ``list[float]``, ...)."""
    return part in {"float", "int", "str", "bool", "none"} or "[" in part or "-" in part


SECTIONS = {"estimator": EstimatorConfig, "selection": SelectionConfig, "calibration": CalibrationConfig,
            "finetune": FinetuneConfig, "data": DataConfig, "search": SearchConfig, "synth": SynthOptions}


def _known_keys(cls: type, loc: tuple) -> list[str]:
    """Field names of the (nested) config dataclass at ``loc``."""
    t = SECTIONS.get(str(loc[-1]), cls) if loc else cls
    return sorted(f.name for f in fields(t))


def _checks_behind(cls: type, d: dict[str, Any], errors: list[dict[str, Any]]) -> list[str]:
    """The value checks (``__post_init__``) that pydantic skipped in the config and in each section because one of
    their fields failed: run again on what is left without the failing keys, so that a type error does not hide
    the other problems of its section."""
    from pydantic import TypeAdapter, ValidationError

    failing: dict[str, set[str]] = {}  # section ("" = top level) -> its failing keys
    for err in errors:
        loc = [str(p) for p in err["loc"] if not _is_branch(str(p))]
        if loc:
            failing.setdefault("", set()).add(loc[0])
        if len(loc) > 1:
            failing.setdefault(loc[0], set()).add(loc[1])
    out = []
    for section, keys in failing.items():
        t, part = (cls, d) if not section else (SECTIONS.get(section), d.get(section))
        if t is None or not isinstance(part, dict):
            continue
        rest = {k: v for k, v in part.items() if k not in keys}
        try:
            TypeAdapter(t).validate_json(json.dumps(rest, allow_nan=True, default=str))
        except ValidationError as e:
            out += [_problem(cls, {**err, "loc": (section, *err["loc"]) if section else err["loc"]})
                    for err in e.errors()]
        except (TypeError, ValueError):
            continue
    return out

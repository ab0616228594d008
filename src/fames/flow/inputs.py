"""What ``fames run`` loads: the model (zoo name or ``package.module:factory``; fames checkpoint or a plain
``state_dict``), quantized if need be, and the data (registered dataset, ``imagefolder:PATH`` or a factory)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fames.appmul.core import AppMul
from fames.data import get_dataset, get_loader, list_datasets, stratified_indices
from fames.errors import FamesError
from fames.flow.config import DataConfig, RunConfig
from fames.flow.sources import DatasetSamples
from fames.method.energy import MAC_SAMPLES
from fames.method.problem import ModelProblem, ModelSetup
from fames.models import call_factory
from fames.quant import calibrate_ptq, qlayers, quantize
from fames.train import evaluate, load_model


def load_run_model(model: str, checkpoint: str | None) -> nn.Module:
    """The model of a run: zoo name or ``package.module:factory`` (see :func:`fames.train.load_model`), with weights
    from ``checkpoint`` (fames ``.pt`` float or quantized, a plain ``state_dict``, ``default`` or None)."""
    m = load_model(model, checkpoint)  # an unknown model is refused before any warning
    if ":" not in model and checkpoint is None:
        warnings.warn(f"no checkpoint given: {model!r} runs with random initial weights, so its accuracies mean "
                      "nothing; set `checkpoint:` to a file, or `default` for the zoo's reference weights",
                      stacklevel=2)
    return m


def dataset_split(data: DataConfig, split: str) -> Dataset:
    """Split ``split`` of the run's dataset (registered name, ``imagefolder:PATH`` or ``package.module:factory``)."""
    spec = data.dataset
    if data.channels is not None and spec.partition(":")[0] != "imagefolder":
        raise FamesError(f"data channels applies to imagefolder datasets, not to {spec!r} (its images have their own)")
    if ":" in spec and spec.partition(":")[0] not in list_datasets():  # not `imagefolder:PATH`
        ds = call_factory(spec, "dataset", split)
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
            raise FamesError(f"dataset {spec!r}: factory(split) must return a Dataset of (x, label), got "
                             f"{type(ds).__name__}")
        return ds
    return get_dataset(spec, split, root=data.root, **({} if data.channels is None else {"channels": data.channels}))


def test_loader(data: DataConfig, seed: int = 0):  # type: ignore[no-untyped-def]
    """Test batches: the whole split, or ``data.eval_images`` images with equal counts per class (splits may be
    class-sorted)."""
    n = data.eval_images
    ds = dataset_split(data, "test")
    if n is not None and n < len(ds):
        labels = getattr(ds, "labels", None)
        if labels is None or not hasattr(ds, "subset"):
            ds = torch.utils.data.Subset(ds, list(range(n)))
        else:
            ds = ds.subset(stratified_indices(labels, n))
    return get_loader(ds, "test", data.batch_size, channels_last=True, seed=seed)


def check_same_quantization(model: nn.Module, quant: Any) -> None:
    """Refuse a ``quant`` (a run's ``quant``, ``fames train --bits``) that asks for other widths than those of an
    already quantized checkpoint (it would be ignored: a quantized checkpoint is used as it is)."""
    saved = getattr(model, "fames_quant_config", None)
    if quant is None or not saved:
        return
    from fames.quant.config import differences

    if diff := differences(saved, quant):
        said = ", ".join(f"{k}: {have} in the checkpoint, {want} asked" for k, (have, want) in diff.items())
        raise FamesError(f"the checkpoint is already quantized, and {quant!r} (quant: in a run config, --bits of fames "
                         f"train) asks for other settings ({said}): quantize a float checkpoint, or leave it out")


@dataclass
class RunInputs:
    """The exact quantized model, its float accuracy (when known), training samples and the test loader."""

    model: nn.Module
    float_accuracy: float | None
    samples: DatasetSamples
    test: Any


def check_inputs(cfg: RunConfig) -> None:
    """What can be checked before any work, every problem at once: the quantization config, the library (folder or
    keyword), the families, the liberty."""
    from fames.appmul.families import family_names
    from fames.appmul.library import Library
    from fames.flow.library import is_library_keyword, liberty_path
    from fames.hw.liberty import read_liberty
    from fames.quant import load_config

    problems = []

    def check(fn: Any) -> None:
        try:
            fn()
        except FamesError as e:
            problems.append(str(e))

    if cfg.quant is not None:
        check(lambda: load_config(cfg.quant))
    if not is_library_keyword(cfg.library):
        if Path(cfg.library).exists():
            check(lambda: Library.load(cfg.library))
        else:
            problems.append(f"library: {cfg.library!r} is neither generate, evoapprox, synth, generate+synth nor an "
                            "existing library folder")
    unknown = [f for f in cfg.families if f != "all" and f not in family_names()]
    if unknown:
        problems.append(f"families: {unknown} are not generated families; `fames lib families` lists them")
    check(lambda: read_liberty(liberty_path(cfg.liberty)))
    if problems:
        raise FamesError("; ".join(problems))


def load_inputs(cfg: RunConfig, progress: bool = True) -> RunInputs:
    """Load the model (quantized by PTQ when ``quant`` is given and the checkpoint is float) and the data."""
    check_inputs(cfg)
    model = load_run_model(cfg.model, cfg.checkpoint)
    if (getattr(model, "checkpoint_meta", None) or {}).get("assignment"):
        raise FamesError(f"checkpoint {cfg.checkpoint} is a run's result, calibrated with the AppMuls of "
                         f"{model.checkpoint_meta['assignment']}: as the exact model it would be judged against "
                         "itself; give the checkpoint that run started from")
    test = test_loader(cfg.data, cfg.seed)
    samples = DatasetSamples(dataset_split(cfg.data, "train"), cfg.data.dataset)
    float_acc = None
    if not qlayers(model):
        if cfg.quant is None:
            raise FamesError("the checkpoint is a float model: give 'quant' (e.g. W8A8) to quantize it (PTQ)")
        from fames.flow.approximate import split_samples

        float_acc = evaluate(model, test, progress, "eval float")["accuracy"]
        quantize(model, cfg.quant)
        # the activation ranges never see the validation split the search will judge on
        ptq = split_samples(samples, cfg, (getattr(model, "checkpoint_meta", None) or {}).get("holdout"))[0]
        assert isinstance(ptq, DatasetSamples)
        calibrate_ptq(model, get_loader(ptq.dataset, "train", 128, shuffle=True, seed=cfg.seed, channels_last=True),
                      num_batches=8)
    else:
        check_same_quantization(model, cfg.quant)
        if cfg.float_checkpoint:
            fm = load_run_model(cfg.model, cfg.float_checkpoint)
            float_acc = evaluate(fm, test, progress, "eval float")["accuracy"]
    model.eval()
    return RunInputs(model, float_acc, samples, test)


@dataclass
class Prepared:
    """A run's model set up for side-by-side comparisons (benchmarks, baselines): the exact quantized ``model``,
    its costed ``library`` and :class:`~fames.method.problem.ModelSetup` (candidates, MACs, exact costs), and
    fixed image draws for search and test."""

    cfg: RunConfig
    inputs: RunInputs
    library: list[AppMul]
    setup: ModelSetup

    @property
    def model(self) -> nn.Module:
        return self.inputs.model

    @property
    def candidates(self) -> dict[str, list[AppMul]]:
        return self.setup.candidates

    def problem(self, omega: dict[str, np.ndarray]) -> ModelProblem:
        """The selection problem of ``omega[layer] (groups, K)`` at the config's granularity."""
        return self.setup.problem(omega, self.cfg.selection.granularity)

    def train_images(self, n: int, seed_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random training images and labels (``seed_offset`` draws a different, fixed set)."""
        return self.inputs.samples.draw(n, self.cfg.seed + seed_offset)

    def test_images(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` test images (all when None): a fixed random subset (``cfg.seed``); test splits may be stored sorted
        by class."""
        xs, ys, have = [], [], 0
        ds = dataset_split(self.cfg.data, "test")
        for x, y in get_loader(ds, "test", self.cfg.data.batch_size, shuffle=True, seed=self.cfg.seed,
                               channels_last=True):
            xs.append(x)
            ys.append(y)
            have += len(y)
            if n is not None and have >= n:
                break
        return torch.cat(xs)[:n], torch.cat(ys)[:n]


def prepare(cfg: RunConfig, progress: bool = True) -> Prepared:
    """Load ``cfg``'s model and data and build its costed candidates (what :func:`fames.run` prepares)."""
    from fames.flow.approximate import calibration_draw, split_samples
    from fames.flow.library import candidate_appmuls, synth_operand_weights

    inputs = load_inputs(cfg, progress)
    layers = qlayers(inputs.model)
    weights = None
    if cfg.synth is not None and cfg.synth.operands:  # the run's own calibration images, as fames.approximate_ does
        record = (getattr(inputs.model, "checkpoint_meta", None) or {}).get("holdout")
        weights = synth_operand_weights(inputs.model, calibration_draw(split_samples(inputs.samples, cfg, record)[0],
                                                                       cfg)[0], cfg.synth)
    lib = candidate_appmuls(cfg.library, {m.widths for _, m in layers}, cfg.liberty, cfg.families, progress,
                            cfg.synth, weights)
    x, _ = inputs.samples.draw(min(MAC_SAMPLES, len(inputs.samples)), cfg.seed)
    return Prepared(cfg, inputs, lib, ModelSetup.build(inputs.model, lib, x, cfg.selection.energy_metric))

"""Evaluation, float fine-tuning and quantization-aware training (LSQ, optional distillation), checkpoints.

Checkpoint format (``.pt``): ``{"arch": name, "state_dict": ..., "meta": {"quant": QuantConfig dict or None,
"num_classes": int, "accuracy": float, "command": str, "dataset": str, "data_hash": str, ...}}``.
"""

from __future__ import annotations

import copy
import math
import shlex
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fames.errors import FamesError, expect, expect_pair
from fames.quant import model_input


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, progress: bool = True, desc: str = "eval", max_batches: int | None = None,
    per_sample: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy (%), mean cross-entropy and image count of ``model`` over ``loader`` (eval mode), or over a
    pair of tensors ``(x, y)``; with ``per_sample`` also ``correct``, 1/0 per image in loader order (for paired
    comparisons)."""
    expect(model, nn.Module, "evaluate: model")
    from tqdm.auto import tqdm

    if isinstance(loader, (tuple, list)) and len(loader) == 2 and all(isinstance(t, ARRAYS) for t in loader):
        loader = [tuple(loader)]  # (x, y): one batch

    model.eval()
    dev = next(model.parameters()).device
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    correct, total, loss, hits = 0, 0, 0.0, []
    total_batches = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and total_batches is not None:
        total_batches = min(total_batches, max_batches)
    for k, batch in enumerate(tqdm(loader, desc=desc, total=total_batches, disable=not progress, leave=False)):
        if max_batches is not None and k >= max_batches:
            break
        x, y = checked_batch(*expect_pair(batch, "evaluate"), "evaluate", dtype)
        x, y = x.to(dev), y.to(dev)
        try:
            out = model(x)
        except RuntimeError as e:  # torch's own: shapes, channels, dtypes (an error of the first batch: the data's)
            if k or not any(w in str(e).lower() for w in ("shape", "size", "channel", "dimension", "dtype", "type")):
                raise
            raise FamesError(f"the model cannot run on the data's inputs of shape {tuple(x.shape[1:])} (a batch of "
                             f"{len(x)}): {str(e).splitlines()[0]}; check that the data fits the model (an image "
                             "folder's channels: `data: {channels: 1}` of a run config, --channels of fames "
                             "eval)") from e
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else \
                f"a tensor of shape {tuple(out.shape)}"
            raise FamesError(f"the model returned {got}; fames needs class logits (N, classes): wrap the model so "
                             "that its forward returns them")
        if not torch.isfinite(out).all():
            bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
            raise FamesError("the model produced NaN/inf outputs; " + (
                f"these tensors of the model hold NaN/inf: {bad[:5]}; fix the checkpoint" if bad
                else "check the input images and the quantization ranges"))
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1]):
            raise FamesError(f"labels must lie in [0, {out.shape[1]}) for a model of {out.shape[1]} outputs, got "
                             f"{int(y.min())}..{int(y.max())}; check the dataset's labels and the model's classes")
        loss += F.cross_entropy(out, y, reduction="sum").item()
        ok = out.argmax(1) == y
        correct += ok.sum().item()
        if per_sample:
            hits += ok.int().tolist()
        total += y.numel()
    if total == 0:
        raise FamesError("evaluation loader is empty")
    res: dict[str, Any] = {"accuracy": 100.0 * correct / total, "loss": loss / total, "n": total}
    if per_sample:
        res["correct"] = hits
    return res


ARRAYS = (torch.Tensor, np.ndarray)


def checked_batch(x: Any, y: Any, where: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (N, ...) as the model's input dtype, y (N,) int64)`` of one batch, numpy arrays taken as tensors; labels
    that are not integer class indices (one-hot, soft, fractional) and NaN/inf inputs are refused by name."""
    x, y = (torch.from_numpy(t) if isinstance(t, np.ndarray) else t for t in (x, y))
    if isinstance(y, (list, tuple)):
        y = torch.as_tensor(y)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise FamesError(f"{where}: batches must be (x, y) pairs of tensors, got ({type(x).__name__}, "
                         f"{type(y).__name__}); wrap your data so that it yields (inputs, integer labels)")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.shape[0] != x.shape[0]:
        raise FamesError(f"{where}: labels must be integer class indices of shape (N,) matching x {tuple(x.shape)}, "
                         f"got {y.dtype} {tuple(y.shape)}" + ("; one-hot or soft labels: pass y.argmax(1)"
                                                              if y.dim() == 2 else ""))
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero()[0])
        raise FamesError(f"{where}: input {bad} of a batch holds NaN or infinite values; clean the data first")
    return model_input(x, dtype), y.long()  # int32/uint8 labels too: the loss takes int64


def check_fits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward of the few samples ``x (n, ...)``, ``y (n,)``: raise a :class:`FamesError` naming the problem when
    the data does not fit the model (shapes, channels), the model does not return logits ``(n, classes)``, holds
    NaN/inf, or the labels lie outside its classes."""
    try:
        evaluate(model, [(x, y)], False)
    except TypeError as e:  # its forward wants more than the one input tensor fames passes
        raise FamesError(f"fames calls model(x) with one input tensor, and its forward says: {e}; wrap the model in an "
                         "nn.Module whose forward(x) supplies the rest") from e


@dataclass
class TrainConfig:
    """Training schedule: SGD with momentum, cosine learning rate, optional distillation from a teacher."""

    epochs: float = 1.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd_alpha: float = 0.0  # weight of the KL distillation loss (0 = no distillation)
    kd_temperature: float = 4.0
    max_grad_norm: float = 5.0  # gradient clipping (0 = off); BN-folded QAT models are sensitive
    scale_lr_mult: float = 1.0  # learning-rate multiplier of quantizer step sizes (log-domain updates)
    seed: int = 0


class Resume:
    """Where an interrupted :func:`train` leaves its state and takes it up again: the file ``path`` holds the model,
    optimizer and random states, the step reached and where in its epoch, under ``key`` (what the run depends on: a
    state of another run is not resumed); written atomically every ``every_s`` seconds and on Ctrl-C."""

    def __init__(self, path: str | Path, key: str, every_s: float = 120.0) -> None:
        self.path, self.key, self.every_s = Path(path), key, every_s

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged state file is a fresh start, said so
            state = None
        if not isinstance(state, dict) or state.get("key") != self.key:
            warnings.warn(f"{self.path} holds the state of another (or a damaged) training run: starting afresh",
                          stacklevel=3)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        import io

        from fames.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({**state, "key": self.key}, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def train(
    model: nn.Module,
    loader: Iterable,
    cfg: TrainConfig,
    teacher: nn.Module | None = None,
    progress: bool = True,
    resume: Resume | None = None,
) -> nn.Module:
    """Train ``model`` in place for ``cfg.epochs`` (fractions allowed) over ``loader``.

    With ``resume``, an interrupted run (Ctrl-C, a killed process) continues where its last saved state left it,
    batch for batch as an uninterrupted run (the loader's generator is rewound to the epoch's start and the batches
    already done are drawn again and skipped)."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    dev = next(model.parameters()).device
    scale_params = [p for n, p in model.named_parameters() if n.endswith("quant.scale")]
    ids = {id(p) for p in scale_params}
    decay = [p for p in model.parameters() if id(p) not in ids and p.dim() > 1]
    no_decay = [p for p in model.parameters() if id(p) not in ids and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if scale_params:
        groups.append({"params": scale_params, "weight_decay": 0.0, "lr": cfg.lr * cfg.scale_lr_mult})
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    base_lrs = [g.get("lr", cfg.lr) for g in opt.param_groups]
    steps_per_epoch = len(loader)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    if teacher is not None:
        teacher.eval()
    step, skip, torch_rng = 0, 0, None
    rng = getattr(loader, "generator", None)  # orders (and augments) the batches: fames' loaders or a DataLoader
    state = resume.load() if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, skip, torch_rng = int(state["step"]), int(state["in_epoch"]), state["torch_rng"]
        if rng is not None:
            rng.set_state(state["loader_rng"])
    bar = tqdm(total=total, initial=step, desc="train", disable=not progress, unit="batch")
    last_save = time.monotonic()

    def snapshot() -> None:
        nonlocal last_save
        resume.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                     "step": step, "in_epoch": in_epoch, "loader_rng": epoch_rng})
        last_save = time.monotonic()

    try:
        while step < total:
            model.train()
            epoch_rng, in_epoch = (rng.get_state() if rng is not None else None), 0
            for x, y in loader:
                if skip:  # resumed: these batches were trained on before the interruption
                    skip -= 1
                    in_epoch += 1
                    continue
                if torch_rng is not None:  # resumed: dropout & co. continue where they were
                    torch.set_rng_state(torch_rng)
                    torch_rng = None
                if step >= total:
                    break
                loss = _step(model, opt, x.to(dev), y.to(dev), cfg, teacher, scale_params, base_lrs, step, total)
                step += 1
                in_epoch += 1
                bar.update()
                bar.set_postfix(loss=f"{loss:.3f}")
                if resume is not None and time.monotonic() - last_save > resume.every_s:
                    snapshot()
    except KeyboardInterrupt:
        if resume is not None and step > 0 and not skip and torch_rng is None:  # not while replaying a resume
            snapshot()
        raise
    bar.close()
    model.eval()
    return model


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          teacher: nn.Module | None, scale_params: list[torch.Tensor], base_lrs: list[float], step: int,
          total: int) -> float:
    """One optimizer step on the batch ``x (B, ...)``, ``y (B,)`` (cosine learning rate at ``step`` of ``total``);
    returns the loss."""
    for g, base in zip(opt.param_groups, base_lrs, strict=True):
        g["lr"] = 0.5 * base * (1 + math.cos(math.pi * step / total))
    out = model(x)
    loss = F.cross_entropy(out, y)
    if teacher is not None and cfg.kd_alpha > 0:
        with torch.no_grad():
            t = teacher(x)
        T = cfg.kd_temperature
        kd = F.kl_div(F.log_softmax(out / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd
    if not torch.isfinite(loss):
        raise FamesError(f"training diverged (loss {loss.item()}) at step {step}; lower --lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # Step sizes move in the log domain: d(log s) = -lr s dL/ds, i.e. ds = -lr s^2 dL/ds. Multiplicative
    # steps stay stable when a folded layer's raw LSQ gradient is large relative to its step size.
    for p in scale_params:
        if p.grad is not None:
            p.grad.mul_(p.detach() ** 2)
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()
    return loss.item()


# --------------------------------------------------------------------------- checkpoints
def load_model(arch: str | None, checkpoint: str | Path | None, num_classes: int | None = None) -> nn.Module:
    """Build a model from the zoo (``arch`` a registered name) or from ``package.module:factory``, and load a float or
    quantized checkpoint (or the zoo's own weights).

    A quantized checkpoint (``meta.quant`` set) is re-quantized with its config before loading, so the
    returned model is ready to evaluate (exact mode).
    """
    from fames.models import call_factory, create_model, load_checkpoint_file, load_state_dict_checked
    from fames.quant import quantize

    if arch is not None and ":" in arch:  # package.module:factory, called without arguments
        model = call_factory(arch, "model")
        if not isinstance(model, nn.Module):
            raise FamesError(f"model {arch!r} returned {type(model).__name__}, not a torch.nn.Module")
        if checkpoint is None:
            return model.eval()
        sd, meta = load_checkpoint_file(checkpoint)
        if meta.get("quant"):
            quantize(model, meta["quant"])
        load_state_dict_checked(model, sd, source=str(checkpoint), arch=arch)
        model.checkpoint_meta = meta
        return model.eval()
    if checkpoint is None or str(checkpoint) == "default" or not str(checkpoint).endswith(".pt"):
        if arch is None:
            raise FamesError("give --model (architecture name) to load weights that are not a fames .pt checkpoint")
        return create_model(arch, num_classes=num_classes or 10, pretrained=checkpoint)
    path = Path(checkpoint)
    if not path.is_file():
        raise FamesError(f"checkpoint {path} not found")
    sd, meta = load_checkpoint_file(path)  # a fames checkpoint or a plain state dict; unreadable -> clear error
    ck_arch = meta.get("arch") if isinstance(meta.get("arch"), str) else None
    if arch is None and ck_arch is not None and ":" in ck_arch:  # trained from package.module:factory
        return load_model(ck_arch, checkpoint, num_classes)
    if ck_arch is None and arch is None:
        raise FamesError(f"{path} is a plain state dict: give --model (in a run config: model:), the architecture it "
                         "belongs to")
    if arch is not None and ck_arch is not None and arch != ck_arch:
        raise FamesError(f"{path} holds a {ck_arch!r} model, not {arch!r}; use --model {ck_arch} (in a run config: "
                         f"model: {ck_arch})")
    model = create_model(ck_arch or arch, num_classes=num_classes or meta.get("num_classes", 10))
    if meta.get("quant"):
        quantize(model, meta["quant"])
    load_state_dict_checked(model, sd, source=str(path), arch=ck_arch or arch)
    model.checkpoint_meta = meta
    model.eval()
    return model


def command_line() -> str:
    return "fames " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def qat(
    model: nn.Module,
    quant_config: Any,
    train_loader: Iterable,
    cfg: TrainConfig,
    calib_batches: int = 8,
    distill: bool = True,
    progress: bool = True,
    resume: Resume | None = None,
) -> nn.Module:
    """Quantize a float model, calibrate its activation ranges (PTQ), then fine-tune it with LSQ (+ KD); ``resume``
    as in :func:`train`."""
    from fames.quant import calibrate_ptq, quantize

    teacher = copy.deepcopy(model).eval() if distill else None
    quantize(model, quant_config)
    calibrate_ptq(model, train_loader, num_batches=calib_batches)
    if cfg.epochs > 0:
        t0 = time.time()
        train(model, train_loader, cfg, teacher=teacher, progress=progress, resume=resume)
        model.train_seconds = time.time() - t0
    return model

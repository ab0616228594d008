"""Model registry (timm-style) and checkpoint loading.

``create_model(name, pretrained=...)`` builds a registered architecture and optionally loads weights from
  - our checkpoint format: a ``.pt`` file holding ``{"arch": name, "state_dict": ..., "meta": {...}}``,
  - a plain state dict or a ``{"state_dict": ...}`` dict (a ``module.`` prefix from DataParallel is stripped),
  - a foreign format the architecture knows how to convert (e.g. Keras arrays in ``.npz`` for ``resnet8``),
  - the string ``"default"``: the architecture's reference weights found under the shared weights folder.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fames.errors import FamesError
from fames.io import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "ModelSpec",
    "create_model",
    "list_models",
    "load_checkpoint_file",
    "load_state_dict_checked",
    "model_spec",
    "register_model",
    "save_checkpoint",
]


class CheckpointError(FamesError, ValueError):
    """A checkpoint is missing, unreadable or does not fit the architecture."""


StateDict = Mapping[str, torch.Tensor]
Converter = Callable[[Path], dict[str, torch.Tensor]]


@dataclass
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    builder: Callable[..., nn.Module]
    default_weights: str | None = None  # path relative to the shared weights folder
    converters: dict[str, Converter] = field(default_factory=dict)  # file suffix -> state-dict converter
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str | None = None,
    *,
    default_weights: str | None = None,
    converters: dict[str, Converter] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder(num_classes=..., **kw) -> nn.Module`` under ``name`` (default: its name)."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelSpec(key, builder, default_weights, dict(converters or {}), doc[0] if doc else "")
        return builder

    return deco


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FamesError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def weights_root() -> Path | None:
    """The shared pretrained-weights folder: ``$FAMES_WEIGHTS`` or ``../shared/weights`` beside the repo/cwd."""
    env = os.environ.get("FAMES_WEIGHTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    for cand in (repo.parent / "shared" / "weights", Path.cwd().parent / "shared" / "weights",
                 Path.cwd() / "shared" / "weights"):
        if cand.is_dir():
            return cand
    return None


def _resolve_default(spec: ModelSpec) -> Path:
    if spec.default_weights is None:
        raise CheckpointError(f"model {spec.name!r} has no reference weights; pass a checkpoint path instead")
    root = weights_root()
    if root is None or not (root / spec.default_weights).is_file():
        where = root / spec.default_weights if root else f"<weights>/{spec.default_weights}"
        raise CheckpointError(
            f"reference weights of {spec.name!r} not found at {where}; set FAMES_WEIGHTS to the folder "
            f"holding {spec.default_weights} or pass the checkpoint path"
        )
    return root / spec.default_weights


def create_model(
    name: str, num_classes: int = 10, pretrained: str | Path | bool | None = None, **kw: Any
) -> nn.Module:
    """Build architecture ``name``; load weights from ``pretrained`` (a path, or ``"default"``) if given.

    As in timm, ``pretrained=True`` means the reference weights (``"default"``) and ``False`` none.

    The model is returned in eval mode when weights were loaded. Every model takes images in [0, 1]
    (normalization is inside the model) and describes its input in ``model.input_spec``.
    """
    spec = model_spec(name)
    if isinstance(pretrained, bool):
        pretrained = "default" if pretrained else None
    model = spec.builder(num_classes=num_classes, **kw)
    model.arch, model.num_classes = name, num_classes  # type: ignore[assignment]
    if pretrained is not None:
        path = _resolve_default(spec) if str(pretrained) == "default" else Path(pretrained)
        sd, meta = load_checkpoint_file(path, arch=name)
        load_state_dict_checked(model, sd, source=str(path), arch=name)
        model.checkpoint_meta = meta  # type: ignore[assignment]
        model.eval()
    return model


def _strip_prefix(sd: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def load_checkpoint_file(path: str | Path, arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint file into ``(state_dict, meta)``; see the module docstring for accepted formats."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (check the path: `checkpoint:` of a run config, "
                              "--checkpoint/--init on the command line, or the pretrained= argument)")
    spec = _REGISTRY.get(arch) if arch else None
    suffix = path.suffix.lower()
    if spec is not None and suffix in spec.converters:
        return spec.converters[suffix](path), {"format": suffix.lstrip("."), "source": str(path)}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure becomes a clear message
        hint = ""
        if suffix == ".npz":
            hint = f" (.npz weights are understood by: {', '.join(_npz_models()) or 'no model'})"
        text = str(e)
        if "Unsupported global" in text:  # torch.save(model): a pickled object, which weights_only refuses to run
            g = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(f"cannot read checkpoint {path}: it pickles Python objects, not only tensors "
                                  f"({g[:160]}); save model.state_dict() instead of the model and load that") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(e).__name__]
        # torch's weights-only refusal buries the cause after its own advice
        after = [ln for k, ln in enumerate(lines) if k and "WeightsUnpickler error" in lines[k - 1]]
        first = (after or lines)[0]
        raise CheckpointError(f"cannot read checkpoint {path} ({first[:200]}); is it a complete torch file?{hint}") \
            from None
    meta: dict = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        ck_arch = obj.get("arch")
        if arch and ck_arch and ck_arch != arch:
            raise CheckpointError(
                f"checkpoint {path} was saved for architecture {ck_arch!r}, not {arch!r}; "
                f"use --model {ck_arch} (in a run config: model: {ck_arch}), or pass the right checkpoint"
            )
        meta = dict(obj.get("meta") or {})
        meta.update({k: v for k, v in obj.items() if k not in ("state_dict", "meta", "optimizer")
                     and isinstance(v, (int, float, str))})
        sd = obj["state_dict"]
    elif isinstance(obj, nn.Module):
        sd = obj.state_dict()
    elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict or "
            "{'arch', 'state_dict', 'meta'} dict"
        )
    meta.setdefault("source", str(path))
    return _strip_prefix(sd), meta


def _npz_models() -> list[str]:
    return [n for n, s in sorted(_REGISTRY.items()) if ".npz" in s.converters]


def load_state_dict_checked(
    model: nn.Module, state_dict: StateDict, source: str = "checkpoint", arch: str | None = None
) -> None:
    """``model.load_state_dict`` that names every missing, unexpected or mis-shaped key in its error."""
    own = model.state_dict()
    state_dict = dict(state_dict)
    for k, v in own.items():  # checkpoints from old PyTorch (e.g. akamaster) lack BN's step counter
        if k.endswith("num_batches_tracked") and k not in state_dict:
            state_dict[k] = torch.zeros_like(v)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:

        def few(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        what = f"architecture {arch!r}" if arch else type(model).__name__
        quantizer = (".act_quant.", ".weight_quant.")
        if unexpected and all(any(q in k for q in quantizer) for k in unexpected):
            raise CheckpointError(
                f"{source} holds a quantized model's state (its unexpected keys are all quantizer parameters: "
                f"{few(unexpected)}) and {what} is a float one: quantize the model the same way first "
                "(fames.quantize), or load it with fames.load_model, which does so from a fames checkpoint")
        raise CheckpointError(
            f"{source} does not fit {what}: " + "; ".join(parts)
            + ". Wrong model for this checkpoint (--model, or model: in a run config)"
            + (", or one trained for another number of classes?" if shapes else "?")
        )
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    arch: str | None = None,
    meta: dict | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    require_arch: bool = True,
) -> Path:
    """Write ``{"arch", "state_dict", "meta"}`` atomically to ``path`` (our ``.pt`` checkpoint format); the state
    is ``model``'s unless ``state_dict`` is given; a model from outside the zoo is saved with ``arch`` None when
    ``require_arch`` is False (it is reloaded with its own factory)."""
    import io

    arch = arch or getattr(model, "arch", None)
    if arch is None and require_arch:
        raise CheckpointError("save_checkpoint needs arch= (the model was not built by create_model)")
    meta = dict(meta or {})
    if isinstance(getattr(model, "num_classes", None), int):  # a zoo model is rebuilt with its classes
        meta.setdefault("num_classes", model.num_classes)
    buf = io.BytesIO()
    sd = {k: v.detach().cpu() for k, v in (model.state_dict() if state_dict is None else state_dict).items()}
    torch.save({"arch": arch, "state_dict": sd, "meta": meta}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def resolve_import(spec: str, what: str) -> Any:
    """The object named by ``package.module:attribute`` (``what`` names it in errors)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise FamesError(f"{what} {spec!r}: an import path is written package.module:factory")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise FamesError(f"{what} {spec!r}: cannot import {mod_name!r} ({e}); is it installed or on PYTHONPATH?") \
            from None
    obj = getattr(mod, attr, None)
    if obj is None:
        raise FamesError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}")
    return obj


def call_factory(spec: str, what: str, *args: Any) -> Any:
    """Call the user's factory ``package.module:factory`` with ``args``; an exception inside it is a
    :class:`FamesError` naming the factory (it is the user's code, not an internal error of fames)."""
    factory = resolve_import(spec, what)
    try:
        return factory(*args)
    except FamesError:
        raise
    except Exception as e:  # noqa: BLE001 - anything the user's code raises
        raise FamesError(f"{what} factory {spec!r} raised {type(e).__name__}: {e} (the error is in that code; "
                         "--debug shows its traceback)") from e


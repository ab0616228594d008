"""``fames.quantize``: rewrite a model's Conv2d/Linear layers into quantized layers, in place.

Steps: fold BatchNorm into the preceding convolution (when ``fold_bn``), replace every ``nn.Conv2d`` and
``nn.Linear`` with :class:`QConv2d` / :class:`QLinear` at the widths the config gives, initialize the weight
quantizers, and warn (listing them) about layers with parameters that stay float.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fames.errors import FamesError, expect, expect_pair
from fames.quant.config import QuantConfig, load_config
from fames.quant.layers import QConv2d, QLinear, QuantLayer, conv_padding


def supported(m: nn.Module) -> bool:
    """Whether ``m`` is a Conv2d or Linear that computes as its base class does: a subclass with a forward of its own
    (e.g. weight standardization) stays float, listed, since a quantized layer in its place would lose it."""
    if isinstance(m, nn.Conv2d):
        return type(m).forward is nn.Conv2d.forward and type(m)._conv_forward is nn.Conv2d._conv_forward
    return isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward
PARAMETER_FREE_OK = (nn.BatchNorm2d, nn.BatchNorm1d)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _set_module_everywhere(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` in place of ``old`` under every name ``old`` is registered as (a module held by two attributes
    is one layer: both must become the same new one)."""
    for name, m in list(root.named_modules(remove_duplicate=False)):
        if m is old:
            _set_module(root, name, new)


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm (with running statistics; affine or not) into ``conv`` (weight and bias
    rewritten)."""
    inv = 1 / torch.sqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        inv = bn.weight * inv
    conv.weight.mul_(inv.view(-1, 1, 1, 1))
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_b = (b - bn.running_mean) * inv + (bn.bias if bn.bias is not None else 0)
    conv.bias = nn.Parameter(new_b)


def _trace(root: nn.Module, kinds: tuple[type, ...]) -> Any:
    """``root``'s forward graph (torch.fx) traced into the modules that hold a module of ``kinds``, the others
    (padding helpers with shape-dependent code, activations) and ``kinds`` themselves leaves. Raises if the forward
    does not trace."""
    from torch import fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, kinds) or not any(isinstance(c, kinds) for c in m.modules())

    return Tracer().trace(root)


def _call_order(model: nn.Module) -> list[str] | None:
    """Names of the Conv2d/Linear modules in the order the forward first calls them; None if it does not trace."""
    try:
        graph = _trace(model, (nn.Conv2d, nn.Linear))
    except Exception:  # noqa: BLE001 - a forward with data-dependent code
        return None
    return list(dict.fromkeys(node.target for node in graph.nodes if node.op == "call_module"))


def _traced_pairs(root: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) pairs of ``root``'s forward graph where the BN consumes only that conv's output and normalizes
    by running statistics (one that uses batch statistics in eval cannot be folded). Raises if the forward does
    not trace."""
    from torch import fx

    graph = _trace(root, (nn.Conv2d, nn.BatchNorm2d))
    mods = dict(root.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(bn := mods.get(node.target), nn.BatchNorm2d) \
                and bn.running_var is not None:
            src = node.args[0]
            conv = mods.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
            # a conv or BN called more than once (weights shared between calls) cannot hold the fold for one call
            if isinstance(conv, nn.Conv2d) and supported(conv) and len(src.users) == 1 \
                    and calls[src.target] == calls[node.target] == 1:
                pairs.append((src.target, node.target))
    return pairs


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module-name pairs where the BN consumes only that conv's output, read off the forward's graph.

    A model whose forward does not trace is traced per module that directly holds a conv and a BN; a BN right
    after a conv in a module that does not trace either is left unfolded (it would be folded into a conv whose
    output it may not take, e.g. conv -> ReLU -> BN), with a warning naming it.
    """
    try:
        return _traced_pairs(model)
    except Exception:  # noqa: BLE001 - a forward with data-dependent code: module by module below
        pass
    pairs: set[tuple[str, str]] = set()
    unverified = []
    for pname, parent in model.named_modules():
        kids = list(parent.named_children())
        if not all(any(isinstance(m, t) for _, m in kids) for t in (nn.Conv2d, nn.BatchNorm2d)):
            continue
        pre = f"{pname}." if pname else ""
        try:
            pairs.update((pre + c, pre + b) for c, b in _traced_pairs(parent))
        except Exception:  # noqa: BLE001 - untraceable: its conv -> BN candidates are named below
            unverified += [pre + n2 for (_, m1), (n2, m2) in zip(kids, kids[1:], strict=False)
                           if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d)
                           and m2.running_var is not None]
    if unverified:
        warnings.warn(f"BatchNorm layers {unverified[:6]}{' ...' if len(unverified) > 6 else ''} are not folded into "
                      "the convolutions before them: their modules' forwards do not trace with torch.fx, so fames "
                      "cannot tell that each takes only its conv's output; they stay float after the quantized conv "
                      "(fold them into the convs yourself, or make the forward traceable)", stacklevel=3)
    return sorted(pairs)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d/Linear (:func:`supported`) or already quantized layers in registration order (the zoo: forward order)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer) or supported(m)]


def model_input(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as a model computing in ``dtype`` takes it (a quantized model: float32): floating-point inputs cast to
    ``dtype`` (a float64 or half-precision batch would not fit its layers), integer inputs (e.g. uint8 pixels)
    unchanged."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def expect_plain_module(model: object, where: str) -> None:
    """Raise a :class:`FamesError` unless ``model`` is an ``nn.Module`` fames can rewrite: a wrapper
    (``nn.DataParallel``, ``DistributedDataParallel``, ``torch.compile``'s) or a TorchScript model is named with what
    to pass instead."""
    expect(model, nn.Module, f"{where}: model")
    if isinstance(model, torch.jit.ScriptModule):
        raise FamesError(f"{where}: the model is TorchScript (torch.jit), whose layers fames cannot replace; give the "
                         "Python nn.Module it was scripted or traced from")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise FamesError(f"{where}: the model is wrapped in {type(model).__name__}; give the module inside, "
                         "model.module")
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise FamesError(f"{where}: the model is compiled by torch.compile; give the module it compiles, "
                         "model._orig_mod (compile again after fames has rewritten it)")


def quantize(model: nn.Module, config: QuantConfig | dict[str, Any] | str | Path = "W8A8") -> nn.Module:
    """Quantize ``model`` in place according to ``config`` and return it (eval mode, float32).

    Activation quantizers start uncalibrated: run :func:`fames.quant.calibrate_ptq` (PTQ) before use. A model held
    in another floating-point type (float64, float16, bfloat16) is converted to float32, with a warning: quantized
    layers compute in float32, where every integer product and sum of the supported widths is exact.
    """
    expect_plain_module(model, "quantize")
    cfg = load_config(config)
    if done := qlayers(model):
        raise FamesError(f"the model is already quantized ({len(done)} quantized layers, e.g. {done[0][0]}: "
                         f"W{done[0][1].w_bits}A{done[0][1].a_bits}): quantize the float model (a fresh instance, "
                         "or a copy.deepcopy kept from before), or fames.quant.set_mode(model, 'float') to run it in "
                         "float")
    model.eval()
    other = sorted({str(t.dtype).removeprefix("torch.") for t in [*model.parameters(), *model.buffers()]
                    if t.is_floating_point() and t.dtype != torch.float32})
    if other:
        warnings.warn(f"the model holds {'/'.join(other)} tensors; fames computes quantized layers in float32, so the "
                      "model is converted to float32 (model.float())", stacklevel=2)
        model.float()
    if cfg.fold_bn:
        for conv_name, bn_name in _conv_bn_pairs(model):
            bn = model.get_submodule(bn_name)
            var = bn.running_var + bn.eps
            bad = (~(torch.isfinite(var) & (var > 0))).nonzero().flatten()[:5].tolist()
            if bad:
                raise FamesError(f"BatchNorm {bn_name!r} has a running variance (+ eps) that is not positive and "
                                 f"finite in channel(s) {bad}: check the checkpoint (BN statistics written by hand or "
                                 "a diverged run?)")
            fold_bn(model.get_submodule(conv_name), bn)
            _set_module(model, bn_name, nn.Identity())
    layers = [(n, m) for n, m in quantizable_layers(model) if supported(m)]
    padded = [(n, m) for n, m in layers if isinstance(m, nn.Conv2d) and conv_padding(m) is None]
    skip = {n for n, _ in padded}  # other padding: stays float, listed below
    layers = [(n, m) for n, m in layers if n not in skip]
    if not layers:
        own = [f"{n} ({type(m).__name__})" for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, QuantLayer) and not supported(m)]
        raise FamesError("the model has no Conv2d or Linear layer to quantize (fames replaces nn.Conv2d and nn.Linear "
                         "modules; layers computed by functional calls such as F.linear(x, weight) are not seen"
                         + (f"; subclasses with a forward of their own stay float: {own[:5]}" if own else "") + ")")
    bad = [n for n, m in layers if any(p is not None and not bool(torch.isfinite(p).all()) for p in (m.weight, m.bias))]
    if bad:
        raise FamesError(f"layers {bad[:5]} hold NaN or infinite weights or biases: check the checkpoint (a diverged "
                         "training run?) before quantizing")
    unknown = [p for p in cfg.layers if not any(n == p or _match(n, p) for n, _ in layers)]
    if unknown:
        raise FamesError(
            f"per-layer bit widths name layers the model does not have: {unknown}; layers are: {[n for n, _ in layers]}"
        )
    positions = _positions([n for n, _ in layers], model, cfg.first_last != "same", cfg.first_last_layers)
    if positions:
        first, last = (next(n for n, p in positions.items() if p == k) for k in ("first", "last"))
        cfg = replace(cfg, first_last_layers=[first, last])
    for name, m in layers:
        bits = cfg.bits_for(name, positions.get(name, "middle"))
        if bits is None:
            continue
        q = (QConv2d if isinstance(m, nn.Conv2d) else QLinear)(m, bits.w_bits, bits.a_bits, cfg.signed)
        q.to(m.weight.device)
        for key in ("weight", "bias"):  # the same parameters: weights tied to other modules stay tied
            if isinstance(getattr(m, key), nn.Parameter):
                setattr(q, key, getattr(m, key))
        q.weight_quant.init_from_weight(q.weight, "mse" if cfg.calibration == "mse" else "minmax")
        q.act_quant.learning = cfg.act_qat
        _set_module_everywhere(model, m, q)
    _warn_unsupported(model, [f"{n} (Conv2d with padding_mode={m.padding_mode!r}, padding={m.padding!r})"
                              for n, m in padded])
    model.fames_quant_config = cfg.to_dict()
    attention = [n for n, m in model.named_modules()
                 if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))]
    if attention and torch.backends.mha.get_fastpath_enabled():
        torch.backends.mha.set_fastpath_enabled(False)
        warnings.warn(f"{attention[0]} ({len(attention)} attention module(s)): PyTorch's fused attention fast path is "
                      "turned off for this process (torch.backends.mha.set_fastpath_enabled(False)): in eval mode "
                      "without gradients it computes with the float weights of quantized projection layers, and its "
                      "multiplies would go uncounted", stacklevel=2)
    return model


def _positions(names: list[str], model: nn.Module, needed: bool, recorded: list[str] | None) -> dict[str, str]:
    """``{name: "first" | "last"}`` for the layers the forward calls first and last (``first_last``), or the ones
    a saved config ``recorded``; registration order, with a warning naming them, when the forward does not trace."""
    if not needed or not names:
        return {}
    if recorded:
        missing = [n for n in recorded if n not in names]
        if missing:
            raise FamesError(f"the quantization config records {missing} as the first/last layers (first_last), but "
                             f"the model's quantizable layers are {names[:8]}...: is it the model the config was saved "
                             "for?")
        return {recorded[1]: "last", recorded[0]: "first"}
    order = _call_order(model)
    called = [n for n in order if n in set(names)] if order is not None else []
    if not called:
        called = names
        warnings.warn(f"first_last: the forward does not trace with torch.fx, so the first and last layers are "
                      f"taken in the order the modules are registered: {names[0]} and {names[-1]}; if the forward "
                      "calls others first or last, name them in `layers` instead", stacklevel=3)
    elif (called[0], called[-1]) != (names[0], names[-1]):
        warnings.warn(f"first_last: the forward calls {called[0]} first and {called[-1]} last, which get its widths; "
                      f"a config saved before 2026-12-06 without first_last_layers was applied to {names[0]} and "
                      f"{names[-1]} (the registration order) when it was saved", stacklevel=3)
    return {called[-1]: "last", called[0]: "first"}


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def float_layers(model: nn.Module, unsupported_only: bool = False) -> list[str]:
    """The layers with parameters that run in floating point, as ``"name (Type)"``: kinds :func:`quantize` does not
    support and (unless ``unsupported_only``) Conv2d/Linear layers the quantization config left in float. They get
    no AppMul and are outside every energy figure; batch norms are not listed (foldable)."""
    return [
        f"{n or '(model)'} ({type(m).__name__})"  # the model's own parameters (e.g. a class token) have no name
        for n, m in model.named_modules()
        if not isinstance(m, (QuantLayer, *PARAMETER_FREE_OK))
        and not (unsupported_only and supported(m))
        and any(True for _ in m.parameters(recurse=False))
        and not n.endswith(("act_quant", "weight_quant"))
    ]


def _warn_unsupported(model: nn.Module, also: list[str]) -> None:
    left = float_layers(model, unsupported_only=True) + also
    if left:
        warnings.warn(f"these layers stay in floating point (not supported by fames.quantize): {left}", stacklevel=3)


def qlayers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    """Quantized layers of a model, in forward (registration) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def set_mode(model: nn.Module, mode: str, layers: Iterable[str] | None = None) -> None:
    """Put quantized layers (all, or those named) into ``float``, ``exact`` or ``approx`` mode."""
    names = set(layers) if layers is not None else None
    for n, m in qlayers(model):
        if names is None or n in names:
            if mode == "approx" and m.assignment is None:
                raise FamesError(f"layer {n} has no AppMul assignment; use fames.method.assignment first")
            m.mode = mode


def _image_batches(batches: Any, size: int = 256) -> Iterator[torch.Tensor]:
    """The image batches of ``batches``: a loader (or iterable) of images or ``(images, labels)``, a pair of tensors
    ``(x (N, ...), y (N,))`` or one tensor ``x (N, ...)`` (both cut into batches of ``size``)."""
    if isinstance(batches, (tuple, list)) and len(batches) == 2 and all(isinstance(t, torch.Tensor) for t in batches) \
            and batches[1].dim() == 1 and not batches[1].is_floating_point() and len(batches[1]) == len(batches[0]):
        batches = batches[0]
    if isinstance(batches, torch.Tensor):
        yield from batches.split(size)
        return
    for b in batches:
        x = expect_pair(b, "calibrate_ptq")[0] if isinstance(b, (tuple, list, dict)) else b
        if not isinstance(x, torch.Tensor):
            raise FamesError(f"calibrate_ptq: batches must be image tensors or (images, labels) pairs, got "
                             f"{type(x).__name__}")
        yield x


@torch.no_grad()
def calibrate_ptq(
    model: nn.Module, batches: Iterable[torch.Tensor | tuple], num_batches: int | None = None, method: str | None = None
) -> nn.Module:
    """PTQ: observe activations on ``batches`` (a loader of images or ``(images, labels)``, a pair of tensors
    ``(x, y)`` or a tensor of images, as :func:`_image_batches` reads them), then fix scales/zero points.

    Layers are observed in float mode, so each activation range is that of the float model.
    """
    expect(model, nn.Module, "calibrate_ptq: model")
    cfg = getattr(model, "fames_quant_config", {}) or {}
    method = method or cfg.get("calibration", "minmax")
    percentile = cfg.get("percentile", 99.99)
    ql = qlayers(model)
    if not ql:
        raise FamesError("calibrate_ptq: the model has no quantized layers; call fames.quantize first")
    model.eval()
    for _, m in ql:
        m.act_quant.observing = True
    seen = 0
    dev = next(model.parameters()).device
    for k, x in enumerate(_image_batches(batches)):
        if num_batches is not None and k >= num_batches:
            break
        if len(x) == 0:
            continue
        if not x.is_floating_point() and x.dim() == 1:  # integer images (e.g. uint8 pixels) have more dimensions
            raise FamesError(f"calibrate_ptq: batch {k} is a vector of {x.dtype} values (labels?), not images; give "
                             "images (N, ...) or (images, labels) batches")
        if not torch.isfinite(x).all():
            raise FamesError(f"calibrate_ptq: batch {k} holds NaN or infinite values; clean the data first")
        try:
            model(model_input(x).to(dev))
        except TypeError as e:  # its forward wants more than the one input tensor
            raise FamesError(f"calibrate_ptq calls model(x) with one input tensor, and its forward says: {e}; wrap the "
                             "model in an nn.Module whose forward(x) supplies the rest") from e
        seen += 1
    if seen == 0:
        raise FamesError("calibrate_ptq: no calibration batches")
    idle = [n for n, m in ql if not m.act_quant.has_observed]  # never called by the forward
    if len(idle) == len(ql):
        raise FamesError(f"calibrate_ptq: no quantized layer ran on the calibration data ({seen} batch(es)); check "
                         "that the model's forward uses its layers")
    for n, m in ql:
        if n in idle:
            _set_module_everywhere(model, m, m.to_float())
        else:
            m.act_quant.finalize(method, percentile)
    if idle and cfg:  # recorded, so that quantizing the model again (loading a saved run) gives the same layers
        cfg["layers"] = {**cfg.get("layers", {}), **dict.fromkeys(idle, "float")}
    if idle:
        warnings.warn(f"these quantized layers did not run in the forward on the calibration data and are put back "
                      f"in floating point (no AppMul, no energy): {idle}", stacklevel=3)
    return model

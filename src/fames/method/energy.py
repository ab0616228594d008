"""Multiplier energy of a quantized model: sum over layers (or groups) of MACs x energy per operation.

Energy per operation of an AppMul is its PDP by default (as the FAMES paper), or the simulated energy per
operation (``metric="energy"``). The exact multiplier of each layer's widths is the reference: its energy per
operation is known from any costed AppMul of the same widths as ``cost / cost.relative`` (same recipe).
Units: MACs per inference (one sample); energies in fJ per inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.quant.convert import qlayers
from fames.quant.layers import QuantLayer

METRICS = {"pdp": ("pdp_fj", "pdp"), "energy": ("energy_fj", "energy")}
MAC_SAMPLES = 32  # sample inputs MACs are counted on by the flow (per inference: their mean)


def _sdpa_cpu_flops(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...], *args: object,
                    out_shape: object = None, **kwargs: object) -> int:
    """FLOPs of PyTorch's CPU attention kernel (the flop counter knows only the CUDA ones)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q, k, v)


def _rnn_layer_flops(x: tuple[int, ...], w_ih: tuple[int, ...], w_hh: tuple[int, ...], *args: object,
                     out_shape: object = None, **kwargs: object) -> int:
    """FLOPs of one recurrent layer and direction of PyTorch's fused CPU kernel (LSTM): every step of every sequence
    multiplies its input by ``w_ih (gates * H, I)`` and its state by ``w_hh (gates * H, H)``."""
    steps = math.prod(x[:-1])
    return 2 * steps * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


@torch.no_grad()
def trace_macs(model: nn.Module, inputs: torch.Tensor | tuple[int, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """``(quantized, floating)`` multiply-accumulates per inference, counted on the sample batch ``inputs (N, ...)``
    (real data: token ids, data-dependent paths) and divided by ``N``; a shape ``(C, H, W)`` counts on one input of
    zeros; the model's input must hold its samples along dimension 0. Inside the model any layout works (a layer
    seeing ``(T, N, C)``, a batch dimension squeezed away): a layer's count is its output elements times its fan-in,
    summed over the batch.

    ``quantized[layer]``: every quantized layer (a layer the forward calls more than once counts every call).
    ``floating[module]``: what the forward multiplies outside them, in floating point, per innermost module that
    runs it (``""`` for the model's own ``forward``): matrix products, convolutions and attention of layers
    ``fames.quantize`` left in float (recurrent ones included) and of functional calls (``x @ w``,
    ``F.scaled_dot_product_attention``); no
    AppMul computes these and no energy figure counts them. Counted by :class:`torch.utils.flop_counter.
    FlopCounterMode` (2 FLOPs per MAC).
    """
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    x = torch.zeros((1, *inputs)) if isinstance(inputs, tuple) else inputs
    count = x.shape[0]
    total: dict[str, int] = {}
    hooks = []
    for name, m in qlayers(model):
        def hook(mod, inp, out, name=name):
            per_output = mod.weight[0].numel()  # fan-in of one output = products per output element
            total[name] = total.get(name, 0) + int(out.numel() * per_output)
        hooks.append(m.register_forward_hook(hook))
    modes = [(m, m.mode) for _, m in qlayers(model)]
    extra = {getattr(torch.ops.aten, op, None): fn for op, fn in (  # fused CPU kernels the counter does not know
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops), ("mkldnn_rnn_layer", _rnn_layer_flops))}
    counter = FlopCounterMode(display=False, custom_mapping={op: fn for op, fn in extra.items() if op is not None})
    training = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in modes:
            m.mode = "float"
        model.eval()
        with counter:
            model(x.to(dev))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.mode = mode
        for m, was in training:  # as the caller left it
            m.training = was
    macs = {k: round(v / count) for k, v in total.items() if v}
    idle = [n for n, _ in qlayers(model) if n not in macs]
    if idle:
        raise FamesError(f"quantized layers {idle[:5]} do not run in the model's forward (on {count} sample "
                         "inputs), so they have no MACs: remove them, or let fames.calibrate_ptq put them back in "
                         "floating point")
    floating = _outside(counter.get_flop_counts(), type(model).__name__, {q for q, _ in qlayers(model)})
    return macs, {k: round(v / count) for k, v in floating.items()}


def _outside(flops: dict[str, dict[object, int]], root: str, quantized: set[str]) -> dict[str, int]:
    """MACs per module of the flop counter's per-module totals (each includes the modules it calls), outside the
    ``quantized`` layers; the counter names modules ``Root.child.grandchild``, ``""`` here for the root."""
    total = {("" if k == root else k[len(root) + 1:]): sum(ops.values()) // 2
             for k, ops in flops.items() if k == root or k.startswith(root + ".")}
    own = dict(total)
    for k, n in total.items():  # take each module's count off the nearest module above it that ran
        above = [p for p in total if p != k and (p == "" or k.startswith(p + "."))]
        if above:
            own[max(above, key=len)] -= n
    return {k: n for k, n in own.items()
            if n > 0 and not any(k == q or k.startswith(q + ".") for q in quantized)}


def layer_macs(model: nn.Module, inputs: torch.Tensor | tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates per inference of every quantized layer, counted on a sample batch ``(N, ...)`` or one
    input of zeros of shape ``(C, H, W)`` (a layer the forward calls more than once counts every call)."""
    return trace_macs(model, inputs)[0]


def group_macs(layer: QuantLayer, macs: int, granularity: str) -> int:
    """MACs of one group (all groups of a layer have the same count)."""
    o = layer.weight.shape[0]
    if granularity == "layer":
        return macs
    if granularity == "filter":
        return macs // o
    if granularity == "kernel":
        return macs // (o * layer.weight.shape[1])
    raise FamesError(f"unknown granularity {granularity!r}")


def appmul_op_energy(m: AppMul, metric: str = "pdp") -> tuple[float, float]:
    """``(energy per op of m, energy per op of the exact multiplier of its widths)`` in fJ; the second is NaN for a
    design of zero energy (wires and constants), which cannot tell it."""
    if metric not in METRICS:
        raise FamesError(f"energy metric {metric!r} is not one of {list(METRICS)}")
    attr, rel_key = METRICS[metric]
    c = m.cost
    if c is None or getattr(c, attr) is None:
        raise FamesError(
            f"AppMul {m.name!r} has no {attr} cost: cost the library first (`fames lib cost DIR --liberty LIB`)"
        )
    value = float(getattr(c, attr))
    rel = c.relative.get(rel_key)
    if rel is None:
        if m.is_exact():
            return value, value
        raise FamesError(f"AppMul {m.name!r} has no cost relative to the exact multiplier of its widths")
    if rel == 0:  # wires and constants only (a synthesized design may be): free, and no measure of the exact one
        return value, math.nan
    return value, value / rel


def exact_costs(appmuls: list[AppMul], metric: str = "pdp") -> dict[tuple[int, int, bool, bool], float]:
    """Energy per op (fJ) of the exact multiplier of every widths key present among ``appmuls``: an exact design's
    own cost where there is one (the first), else what the first costed design's relative cost implies."""
    out: dict[tuple[int, int, bool, bool], float] = {}
    for m in sorted(appmuls, key=lambda m: not m.is_exact()):  # stable: exact designs first, in their order
        if m.cost is not None and m.widths not in out and not math.isnan(e := appmul_op_energy(m, metric)[1]):
            out[m.widths] = e
    return out


def op_energy(m: AppMul, exact: dict[tuple[int, int, bool, bool], float], metric: str = "pdp") -> float:
    """Energy per op of ``m`` (fJ) in the units of the reference ``exact[m.widths]`` (:func:`exact_costs`): its cost
    relative to the exact multiplier of its own costing times that reference, so that designs costed apart (e.g.
    EvoApproxLib's published figures beside a liberty's) compare by their ratios; its own figure when it was costed
    with the reference (or is free)."""
    value, own = appmul_op_energy(m, metric)
    ref = exact.get(m.widths)
    return value if ref is None or math.isnan(own) or own == ref else value / own * ref


def model_energy(
    model: nn.Module, macs: dict[str, int], exact: dict[tuple[int, int, bool, bool], float], metric: str = "pdp"
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """``(energy, exact energy, per layer (energy, exact))`` in fJ per inference for the current assignment.

    Layers in exact mode use the exact multiplier (energy per op from ``exact``, see :func:`exact_costs`; or their
    ``exact_design``'s, an exact design chosen in the reference's stead); approx layers their assigned AppMul(s) per
    group.
    """
    total = exact_total = 0.0
    per: dict[str, tuple[float, float]] = {}
    for name, layer in qlayers(model):
        if layer.widths not in exact:
            raise FamesError(f"layer {name}: no costed AppMul of widths {layer.widths} to take the exact cost from")
        ex = macs[name] * exact[layer.widths]
        a = layer.assignment
        if layer.mode != "approx" or a is None:  # the exact multiplier: the reference, or the exact design chosen
            stand_in = getattr(layer, "exact_design", None)  # (a layer pickled before the attribute: the reference)
            e = ex if stand_in is None else macs[name] * op_energy(stand_in, exact, metric)
        else:
            idx = a.index.flatten().tolist() or [0]
            e = sum(macs[name] / len(idx) * op_energy(a.appmuls[k], exact, metric) for k in idx)
        per[name] = (e, ex)
        total += e
        exact_total += ex
    return total, exact_total, per

"""Operand statistics of a quantized model: which (activation code, weight code) pairs its multipliers see."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from fames.errors import FamesError
from fames.quant.convert import qlayers


@torch.no_grad()
def operand_histograms(model: nn.Module, x: torch.Tensor, names: Iterable[str] | None = None,
                       batch_size: int = 128, per_output: bool = False) -> dict[str, np.ndarray]:
    """Counts ``(2^a, 2^w)`` of the operand bit-pattern pairs of every quantized layer (or of ``names``) over the
    images ``x (N, ...)``, exactly (:meth:`QuantLayer.operand_histogram` on each layer's real input).

    ``per_output``: instead, per layer ``(O, 2^a, 2^w)``, the mean number of each pair in one output of each output
    channel (each channel's matrix sums to the layer's fan-in): what the output-error metric ``omse`` of
    :mod:`fames.appmul.synth.error` needs."""
    layers = dict(qlayers(model))
    want = list(layers) if names is None else list(names)
    missing = [n for n in want if n not in layers]
    if missing:
        raise FamesError(f"no quantized layer(s) {missing}; layers: {list(layers)}")
    hists: dict[str, np.ndarray] = {}

    def hook(name: str):  # noqa: ANN202 - a forward hook
        def f(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            h = mod.operand_histogram(inp[0], per_channel=per_output)
            hists[name] = hists[name] + h if name in hists else h
        return f

    handles = [layers[n].register_forward_hook(hook(n)) for n in want]
    was = model.training
    model.eval()
    try:
        for b in range(0, len(x), batch_size):
            model(x[b : b + batch_size])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if per_output:  # counts over S samples x P positions -> per output: each channel sums to the fan-in
        for n, h in hists.items():
            fan_in = layers[n].kernel_rows(layers[n].weight_codes()).shape[-1]
            hists[n] = h * (fan_in / h.sum((1, 2), keepdims=True))
    return hists

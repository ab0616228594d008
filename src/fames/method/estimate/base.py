"""What every estimator shares: the :class:`Estimate` it returns, the :class:`Estimator` protocol (pymoo style:
estimators are swappable objects), and the model-state helpers the estimators build on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.quant.convert import qlayers
from fames.quant.layers import GRANULARITIES, QuantLayer


@dataclass
class Estimate:
    """Omega per layer: ``omega[name]`` has shape ``(groups, K)`` (groups = 1 at layer granularity).

    ``first`` and ``second`` hold the two terms separately; ``candidates[name]`` the K AppMuls; ``shift`` (from
    :class:`~fames.method.estimate.forward.MeanForward`) the loss change caused by each candidate's mean output
    error alone, by forward passes; ``residual`` (when the estimator was given ``mean_errors``) the same three
    terms for the zero-mean remainder ``dY_A - mu_A``, as ``{"omega": .., "first": .., "second": ..}``.
    """

    omega: dict[str, np.ndarray]
    first: dict[str, np.ndarray]
    second: dict[str, np.ndarray]
    candidates: dict[str, list[AppMul]]
    granularity: str
    hessian: str
    seconds: float
    shift: dict[str, np.ndarray] | None = None
    residual: dict[str, dict[str, np.ndarray]] | None = None


class Estimator(Protocol):
    """Anything with a ``name`` and ``estimate(model, x, y, candidates, granularity, mean_errors=None)``.

    ``x (S, ...)``, ``y (S,)``: the sample batch; ``candidates[layer]``: the layer's AppMuls (or ``(AppMul,
    Compensation)`` pairs); returns an :class:`Estimate` with ``omega[layer]`` of shape ``(groups, K)`` (nats).
    ``mean_errors[layer]`` ``(K, *output[1:])``, when given, asks for the residual terms as well (see
    :class:`~fames.method.estimate.forward.MeanForward`)."""

    name: str

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        candidates: dict[str, list],
        granularity: str = "layer",
        mean_errors: dict[str, torch.Tensor] | None = None,
    ) -> Estimate: ...


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise FamesError(f"granularity {granularity!r} is not one of {GRANULARITIES}")


@contextlib.contextmanager
def layer_states(model: nn.Module) -> Iterator[list[tuple[str, QuantLayer]]]:
    """Run with every quantized layer in exact mode (e = 0) and float64 emulation; restore afterwards."""
    ql = qlayers(model)
    saved = [(m.mode, m.assignment, m._emulation_dtype, m.exact_design, m.compensation) for _, m in ql]
    was_training = model.training
    model.eval()
    try:
        for _, m in ql:
            m.mode, m.emulation_dtype = "exact", torch.float64
        yield ql
    finally:
        for (_, m), (mode, a, dt, ex, comp) in zip(ql, saved, strict=True):
            m.mode, m.assignment, m._emulation_dtype, m.exact_design, m.compensation = mode, a, dt, ex, comp
            m.error_probe, m.gather_only = None, False
        model.train(was_training)


def as_pairs(cands: list) -> list[tuple[AppMul, object]]:
    """Candidates as ``(AppMul, Compensation or None)`` pairs (a bare AppMul has no correction)."""
    return [c if isinstance(c, tuple) else (c, None) for c in cands]


def check_candidates(ql: list[tuple[str, QuantLayer]], candidates: dict[str, list], granularity: str) -> None:
    names = dict(ql)
    for n, ms in candidates.items():
        if n not in names:
            raise FamesError(f"candidates given for {n!r}, which is not a quantized layer of the model")
        if not ms:
            raise FamesError(f"layer {n}: no candidate AppMuls (the library has none of widths {names[n].widths})")
        for c, (m, comp) in zip(ms, as_pairs(ms), strict=True):
            if m.widths != names[n].widths:
                raise FamesError(f"layer {n}: candidate {m.name} is {m.signature()}, the layer needs {names[n].widths}")
            if isinstance(c, tuple) and granularity != "layer":
                raise FamesError("compensated candidates share one control variate per layer: use granularity 'layer'")
            if comp is not None and comp.appmul != m.name:
                raise FamesError(f"layer {n}: correction fitted for {comp.appmul!r} paired with AppMul {m.name!r}")


def capture(model: nn.Module, ql: list[tuple[str, QuantLayer]], x: torch.Tensor, every_call: bool = False):
    """Forward with hooks: logits, and per layer its input and output (output kept in the graph); with
    ``every_call`` lists of them, one entry per call of the layer (none for a layer the forward did not call)."""
    ins: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    hooks = []
    for n, m in ql:

        def hook(mod, inp, out, n=n):
            if every_call:
                ins.setdefault(n, []).append(inp[0].detach())
                outs.setdefault(n, []).append(out)
            else:
                ins[n] = inp[0].detach()
                outs[n] = out

        hooks.append(m.register_forward_hook(hook))
    try:
        z = model(x)
    finally:
        for h in hooks:
            h.remove()
    return z, ins, outs


@torch.no_grad()
def samples_first(model: nn.Module, ql: list[tuple[str, QuantLayer]], x: torch.Tensor) -> list[str]:
    """The quantized layers whose inputs do not hold the samples of ``x`` in their first dimension (sequence-first
    ``(T, N, C)``, samples flattened with positions, tokens routed by the data, a batch squeezed away), found by
    running two and three samples; empty when every layer's input is ``(N, ...)``."""
    def input_shapes(n: int) -> dict[str, list[tuple[int, ...]]]:
        seen: dict[str, list[tuple[int, ...]]] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, k=k: seen.setdefault(k, []).append(
            tuple(inp[0].shape))) for k, m in ql]
        try:
            model(x[:n])
        finally:
            for h in hooks:
                h.remove()
        return seen

    two, three = input_shapes(2), input_shapes(3)
    return [k for k, _ in ql if len(two.get(k, [])) != len(three.get(k, [])) or any(
        a[:1] != (2,) or b[:1] != (3,) or a[1:] != b[1:]
        for a, b in zip(two.get(k, []), three.get(k, []), strict=True))]


def recorded_pass(
    model: nn.Module, ql: list[tuple[str, QuantLayer]], x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """One forward of ``x``: the logits, each quantized layer's output, and the names in the order the layers ran
    (a layer shared between calls appears more than once)."""
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda *_, n=n: calls.append(n)) for n, m in ql]
    try:
        z, _, outs = capture(model, ql, x)
    finally:
        for h in hooks:
            h.remove()
    return z, outs, calls


@contextlib.contextmanager
def replaying(layers: dict[str, QuantLayer], outs: dict[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, each layer named in ``outs`` returns its recorded output instead of computing it (so a pass
    that changes only a later layer costs the rest of the network)."""
    for n, t in outs.items():
        layers[n].forward = lambda *_, t=t: t  # instance attribute: nn.Module.__call__ uses it
    try:
        yield
    finally:
        for n in outs:
            del layers[n].forward

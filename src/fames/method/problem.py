"""A model's selection problem and the way back: build the :class:`~fames.method.select.SelectionProblem` of a quantized
model from per-layer estimates, and put a choice vector's AppMuls into the model.

A *choice vector* ``c`` of shape ``(G,)`` gives, for every group g of a :class:`ModelProblem` (a layer, or a
filter or kernel of a layer), the index of its candidate in ``candidates[layer]``, exactly as
:class:`fames.method.select.Selection.choice` does. A candidate may carry a control-variate correction
(:class:`fames.method.compensate.Compensation`, layer granularity only): its energy then includes the correction's
hardware overhead, and applying it attaches the correction to the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fames.appmul.core import AppMul
from fames.errors import FamesError
from fames.method.assignment import exact_stand_in
from fames.method.compensate import attach
from fames.method.energy import exact_costs, model_energy, op_energy, trace_macs
from fames.method.select import SelectionProblem
from fames.quant.convert import qlayers
from fames.quant.layers import GRANULARITIES


@dataclass
class ModelProblem:
    """A :class:`SelectionProblem` with what is needed to turn a choice back into a model assignment.

    ``groups[g] = (layer name, group index within the layer; kernel (o, c) is o * C/groups + c)``;
    ``candidates[layer]`` lists the layer's K_l AppMuls (columns ``K_l..K-1`` of the problem are padding with
    ``omega = inf``); ``compensations[layer][k]`` is candidate k's correction or None (absent: none at all).
    """

    problem: SelectionProblem
    groups: list[tuple[str, int]]
    candidates: dict[str, list[AppMul]]
    granularity: str = "layer"
    compensations: dict[str, list[Any]] = field(default_factory=dict)

    def appmul(self, g: int, k: int) -> AppMul:
        return self.candidates[self.groups[g][0]][k]


def build_problem(
    model: nn.Module,
    omega: dict[str, np.ndarray],
    candidates: dict[str, list[AppMul]],
    macs: dict[str, int],
    exact_cost: dict[tuple[int, int, bool, bool], float],
    metric: str = "pdp",
    granularity: str = "layer",
    compensations: dict[str, list[Any]] | None = None,
    overhead: dict[str, np.ndarray] | None = None,
) -> ModelProblem:
    """The selection problem of ``model`` (every quantized layer listed in ``candidates``), as ``fames run``
    builds it: ``omega[layer]`` is ``(groups, K_l)``; energies in fJ per inference (MACs x energy per op, plus
    ``overhead[layer][k]`` fJ per inference for a candidate with a correction in ``compensations``)."""
    if granularity not in GRANULARITIES:
        raise FamesError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    compensations = compensations or {}
    if compensations and granularity != "layer":
        raise FamesError("compensated candidates share one control variate per layer: they need granularity 'layer'")
    K = max(len(v) for v in candidates.values())
    groups, om_rows, en_rows, ex_rows = [], [], [], []
    for n, layer in qlayers(model):
        if n not in candidates:
            continue
        ms = candidates[n]
        o = np.asarray(omega[n], dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != len(ms):
            raise FamesError(f"layer {n}: omega has shape {o.shape}, expected (groups, {len(ms)})")
        if not np.isfinite(o).all():  # inf marks a candidate a group cannot use: an estimate never means that
            bad = sorted({ms[k].name for k in np.nonzero(~np.isfinite(o))[1]})
            raise FamesError(f"layer {n}: the estimated loss change of {bad[:4]} is not finite (an overflow or a "
                             "diverged model?); check the model's loss on the estimate's samples")
        extra = np.zeros(len(ms)) if overhead is None or n not in overhead else np.asarray(overhead[n], float)
        if extra.shape != (len(ms),):
            raise FamesError(f"layer {n}: overhead has shape {extra.shape}, expected ({len(ms)},)")
        per_op = np.array([op_energy(m, exact_cost, metric) for m in ms])
        gm = macs[n] / o.shape[0]
        for g in range(o.shape[0]):
            row_o, row_e = np.full(K, np.inf), np.full(K, np.inf)
            row_o[: len(ms)] = o[g]
            row_e[: len(ms)] = gm * per_op + extra / o.shape[0]
            om_rows.append(row_o)
            en_rows.append(row_e)
            ex_rows.append(gm * exact_cost[layer.widths])
            groups.append((n, g))
    names = [n if granularity == "layer" else f"{n}[{g}]" for n, g in groups]
    problem = SelectionProblem(np.array(om_rows), np.array(en_rows), np.array(ex_rows), group_names=names)
    return ModelProblem(problem, groups, candidates, granularity, compensations)


def apply_choice(model: nn.Module, mp: ModelProblem, choice: np.ndarray) -> nn.Module:
    """Put the AppMuls of ``choice (G,)`` into ``model`` in place (with their corrections, if any); a layer
    whose groups all chose one exact design runs in exact mode (the exact quantized model's own computation, without
    the emulation cost; charged that design's energy), one mixing exact designs emulates them."""
    choice = np.asarray(choice)
    if choice.shape != (len(mp.groups),):
        raise FamesError(f"choice has shape {choice.shape}, the problem has {len(mp.groups)} groups")
    layers = dict(qlayers(model))
    by_layer: dict[str, list[int]] = {}
    for (n, _g), k in zip(mp.groups, choice.tolist(), strict=True):
        by_layer.setdefault(n, []).append(int(k))
    for n, ks in by_layer.items():
        ms = mp.candidates[n]
        if any(k < 0 or k >= len(ms) for k in ks):
            raise FamesError(f"layer {n}: choice {ks} outside its {len(ms)} candidates")
        comp = mp.compensations[n][ks[0]] if n in mp.compensations else None
        if (exact := exact_stand_in([ms[k] for k in ks])) is not None:
            layers[n].clear_assignment(exact)
        elif mp.granularity == "layer":
            layers[n].set_assignment(ms[ks[0]])
            if comp is not None:
                attach(layers[n], comp)
        else:
            used, idx = np.unique(ks, return_inverse=True)
            shape = layers[n].group_shape(mp.granularity)
            layers[n].set_assignment([ms[k] for k in used], torch.from_numpy(idx).view(shape), mp.granularity)
    return model


def check_widths(widths: set[tuple[int, int, bool, bool]], appmuls: list[AppMul], source: str = "the library") -> None:
    """Raise unless ``appmuls`` hold a design for every widths key ``(a, w, a_signed, w_signed)`` in ``widths``."""
    missing = sorted(widths - {m.widths for m in appmuls})
    if missing:
        shown = [f"{a}x{w} {'signed' if s else 'unsigned'}" for a, w, s, _ in missing]
        builds = sorted({f"fames lib build --bits {a} {w}{' --signed' if s else ''}" for a, w, s, _ in missing})
        raise FamesError(f"{source} has no AppMul for the layer widths {shown}; add designs of these widths "
                         f"({'; '.join(builds)}: signed for symmetric weights, unsigned for affine ones) or use "
                         "library='generate'")


@dataclass
class ModelSetup:
    """What every selection on a model needs, built once: ``candidates[layer]`` (the library's AppMuls of the
    layer's widths, the exact one included), ``macs[layer]`` per inference (traced on sample inputs) and
    ``exact_cost[widths]``, the exact multiplier's energy per op (fJ) under ``metric``; ``float_macs[module]``, what
    the forward multiplies in floating point outside the quantized layers (see :func:`trace_macs`)."""

    model: nn.Module
    candidates: dict[str, list[AppMul]]
    macs: dict[str, int]
    exact_cost: dict[tuple[int, int, bool, bool], float]
    metric: str = "pdp"
    float_macs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, appmuls: list[AppMul], inputs: torch.Tensor | tuple[int, ...],
              metric: str = "pdp") -> ModelSetup:
        """From a costed list of AppMuls; MACs are counted on ``inputs``, sample inputs ``(N, ...)`` of the data
        (best: any layout and data-dependent paths count right), or one sample's shape ``(C, H, W)``."""
        layers = qlayers(model)
        if not layers:
            raise FamesError("the model has no quantized layer: call fames.quantize(model, 'W4A4') (and "
                             "fames.calibrate_ptq(model, data)) first")
        check_widths({layer.widths for _, layer in layers}, appmuls)
        cands = {n: [m for m in appmuls if m.widths == layer.widths] for n, layer in layers}
        macs, float_macs = trace_macs(model, inputs)
        return cls(model, cands, macs, exact_costs(appmuls, metric), metric, float_macs)

    def problem(
        self,
        omega: dict[str, np.ndarray],
        granularity: str = "layer",
        candidates: dict[str, list[AppMul]] | None = None,
        compensations: dict[str, list[Any]] | None = None,
        overhead: dict[str, np.ndarray] | None = None,
    ) -> ModelProblem:
        """The :class:`ModelProblem` of ``omega[layer] (groups, K)`` (see :func:`build_problem`); ``candidates``
        replaces the set-up's (e.g. with compensated twins appended)."""
        return build_problem(self.model, omega, candidates or self.candidates, self.macs, self.exact_cost,
                             self.metric, granularity, compensations, overhead)

    def energy(self, model: nn.Module | None = None) -> tuple[float, float, dict[str, tuple[float, float]]]:
        """``(energy, exact energy, per layer)`` in fJ per inference of ``model``'s current assignment."""
        return model_energy(self.model if model is None else model, self.macs, self.exact_cost, self.metric)

"""The pre-calibration model as a reference: layer modes and activation ranges snapshotted and restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fames.errors import FamesError
from fames.method.calibrate.data import CalibrationData
from fames.quant.convert import qlayers
from fames.quant.layers import QuantLayer


# ====================================================================== reference model state
class ReferenceState:
    """Snapshot of every quantized layer's mode and activation range, to run the pre-calibration model.

    ``with ref.active("exact"):`` runs the model as it was at the snapshot with every layer in exact
    (or float) mode; on exit the current state is restored. Weight quantizers are snapshotted too.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = qlayers(model)
        self.saved = [_layer_state(m) for _, m in self.layers]

    @contextlib.contextmanager
    def active(self, mode: str = "exact") -> Iterator[None]:
        current = [_layer_state(m) for _, m in self.layers]
        try:
            for (_, m), st in zip(self.layers, self.saved, strict=True):
                _load_layer_state(m, st)
                m.mode = "float" if st[0] == "float" else mode  # a layer the user keeps float stays float
            yield
        finally:
            for (_, m), st in zip(self.layers, current, strict=True):
                _load_layer_state(m, st)

    @torch.no_grad()
    def logits(self, model: nn.Module, data: CalibrationData, batch_size: int, mode: str = "exact") -> torch.Tensor:
        """Reference logits ``(S, classes)`` of the calibration samples."""
        with self.active(mode):
            return torch.cat([model(xb) for xb, _ in data.batches(batch_size)])


def _layer_state(m: QuantLayer) -> tuple:
    aq, wq = m.act_quant, m.weight_quant
    return (m.mode, aq.scale.detach().clone(), aq.zero_point.clone(), wq.scale.detach().clone(), wq.zero_point.clone())


@torch.no_grad()
def _load_layer_state(m: QuantLayer, st: tuple) -> None:
    m.mode = st[0]
    m.act_quant.scale.copy_(st[1])
    m.act_quant.zero_point.copy_(st[2])
    m.weight_quant.scale.copy_(st[3])
    m.weight_quant.zero_point.copy_(st[4])


def is_approx(m: QuantLayer) -> bool:
    return m.mode == "approx" and (m.assignment is not None or m.error_probe is not None)


def check_model(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    ql = qlayers(model)
    if not ql:
        raise FamesError("calibrate: the model has no quantized layers; call fames.quantize first")
    if not any(is_approx(m) for _, m in ql):
        raise FamesError(
            "calibrate: no layer of the model is in approx mode with AppMuls; assign AppMuls first "
            "(fames.method.assignment or layer.set_assignment) - calibration recovers the AppMuls' error"
        )
    for n, m in ql:
        if not bool(m.act_quant.calibrated):
            raise FamesError(f"calibrate: layer {n} has no activation range; run fames.quant.calibrate_ptq first")
    return ql

"""Calibration samples: any loader, tensor or ``(x, y)`` pair turned into one batch of tensors."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from fames.errors import FamesError


# ====================================================================== data
@dataclass
class CalibrationData:
    """Calibration samples ``x (S, ...)`` and labels ``y (S,)`` (None when the data has none)."""

    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for b in range(0, len(self), batch_size):
            yield self.x[b : b + batch_size], None if self.y is None else self.y[b : b + batch_size]


def calibration_data(data: Any, samples: int, device: torch.device | str = "cpu") -> CalibrationData:
    """The first ``samples`` samples of ``data``: a loader of ``(x, y)`` or ``x`` batches, a tensor ``x``, a
    pair ``(x, y)`` of tensors, or a :class:`CalibrationData`. Fewer available -> all of them, with a warning."""
    if isinstance(data, CalibrationData):
        xs, ys = [data.x], None if data.y is None else [data.y]
    elif isinstance(data, torch.Tensor):
        xs, ys = [data], None
    elif _is_pair(data):
        xs, ys = [data[0]], [data[1]]
    elif isinstance(data, Iterable):
        xs, ys, n = [], [], 0
        for b in data:
            pair = isinstance(b, (tuple, list))
            xs.append(b[0] if pair else b)
            if ys is not None and pair and len(b) > 1:
                ys.append(b[1])
            else:
                ys = None
            n += xs[-1].shape[0]
            if n >= samples:
                break
    else:
        raise FamesError(f"calibration data must be a loader, a tensor or an (x, y) pair, not {type(data).__name__}")
    if not xs or sum(t.shape[0] for t in xs) == 0:
        raise FamesError("calibration data is empty")
    x = torch.cat(xs)[:samples].to(device)
    y = None if not ys else torch.cat(ys)[:samples].to(device).long()
    if y is not None and y.shape[0] != x.shape[0]:
        raise FamesError(f"calibration data: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] < samples:
        warnings.warn(
            f"calibration asked for {samples} samples but the data holds {x.shape[0]}; using them all", stacklevel=3
        )
    return CalibrationData(x, y)


def _is_pair(data: Any) -> bool:
    """``(x (S, ...), y (S,) integer)``, as opposed to a list of input batches."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[1].dim() == 1
        and not data[1].is_floating_point()
        and data[1].shape[0] == data[0].shape[0]
    )

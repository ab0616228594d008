"""The quantity estimators predict, measured: the loss change when only one layer uses a candidate AppMul."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.appmul.core import AppMul
from fames.method.estimate.base import layer_states


@torch.no_grad()
def true_loss_changes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: dict[str, list[AppMul]], progress: bool = True
) -> dict[str, np.ndarray]:
    """Measured loss change when ONLY layer k uses AppMul A (all others exact): ``(1, K)`` per layer."""
    out: dict[str, np.ndarray] = {}
    with layer_states(model) as ql:
        for _, m in ql:
            m.emulation_dtype, m.gather_only = torch.float32, True
        layers = dict(ql)
        base = F.cross_entropy(model(x), y).item()
        bar = tqdm(total=sum(len(v) for v in candidates.values()), desc="true loss change", disable=not progress)
        for n, ms in candidates.items():
            vals = []
            for m in ms:
                layers[n].set_assignment(m)
                vals.append(F.cross_entropy(model(x), y).item() - base)
                bar.update()
            layers[n].mode = "exact"
            out[n] = np.array([vals])
        bar.close()
    return out

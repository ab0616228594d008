"""Step 2 of FAMES calibration: learnable weight clipping (OmniQuant's LWC) through the AppMuls."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fames.errors import FamesError
from fames.method.calibrate.config import OPTIMIZERS
from fames.method.calibrate.data import CalibrationData
from fames.quant.convert import qlayers
from fames.quant.layers import QuantLayer
from fames.quant.quantizer import round_ste


# ====================================================================== step 2: learnable weight clipping
class _Clip(nn.Module):
    """Learnable per-channel clipping of one layer's weight quantizer (see the module docstring)."""

    def __init__(self, layer: QuantLayer, init_logit: float) -> None:
        super().__init__()
        q = layer.weight_quant
        if not q.per_channel:
            raise FamesError("learnable weight clipping needs a per-channel weight quantizer")
        o = layer.weight.shape[0]
        dev = q.scale.device
        self.gamma = nn.Parameter(torch.full((o,), float(init_logit), device=dev))
        self.beta = nn.Parameter(torch.full((o,), float(init_logit), device=dev))
        self.register_buffer("sig0", torch.sigmoid(torch.tensor(float(init_logit), device=dev)))
        self.symmetric, self.signed = q.symmetric, q.signed
        self.qmin, self.qmax = q.qrange
        s0 = q.scale.detach().abs().clamp_min(1e-12).clone()
        self.register_buffer("s0", s0)
        if q.symmetric and q.signed:
            flat = layer.weight.detach().reshape(o, -1).float()
            hi, lo = flat.amax(1).clamp_min(0), flat.amin(1).clamp_max(0)
            m = torch.maximum(hi, -lo)
            ok = m > 0
            # relative bounds a = hi / m, b = -lo / m: max(a, b) == 1 exactly, so s(init) == s0 bit for bit
            self.register_buffer("a", torch.where(ok, hi / torch.where(ok, m, 1), torch.ones_like(m)))
            self.register_buffer("b", torch.where(ok, -lo / torch.where(ok, m, 1), torch.ones_like(m)))
        else:
            z0 = q.zero_point.detach().float().clone()
            self.register_buffer("a", self.qmax - z0)  # hi0 = s0 (qmax - z0)
            self.register_buffer("b", self.qmin - z0)  # lo0 = s0 (qmin - z0)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale ``(O,)`` and zero point ``(O,)`` (None for symmetric weights) of the clipped range."""
        rg, rb = torch.sigmoid(self.gamma) / self.sig0, torch.sigmoid(self.beta) / self.sig0
        if self.symmetric and self.signed:
            return self.s0 * torch.maximum(rg * self.a, rb * self.b), None
        if self.symmetric:  # unsigned symmetric: range [0, hi]
            return self.s0 * rg, None
        s = self.s0 * ((rg * self.a - rb * self.b) / (self.qmax - self.qmin))
        lo = rb * self.b * self.s0
        z = torch.clamp(round_ste(self.qmin - lo / s), self.qmin, self.qmax)
        return s, z


class LearnableWeightClipping:
    """OmniQuant-style LWC trained through the AppMuls; :meth:`bake` makes it part of the weight quantizers.

    Usage: ``lwc = LearnableWeightClipping(model)``; ``lwc(x)`` is the model's forward with clipped weights;
    ``lwc.parameters()`` are the logits; ``lwc.bake()`` writes the clipping into the model and detaches.
    """

    def __init__(self, model: nn.Module, init_logit: float = 4.0, layers: list[str] | None = None) -> None:
        self.model = model
        ql = [(n, m) for n, m in qlayers(model) if m.mode != "float"] if layers is None else [
            (n, m) for n, m in qlayers(model) if n in set(layers)]  # layers kept float are not clipped
        self.clips = nn.ModuleDict({n.replace(".", "/"): _Clip(m, init_logit) for n, m in ql})
        self.names = [n for n, _ in ql]
        self.baked = False

    def parameters(self) -> list[nn.Parameter]:
        return list(self.clips.parameters())

    def overrides(self) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight_quant.scale": (O,), "<layer>.weight_quant.zero_point": (O,)}`` of the clipping."""
        out: dict[str, torch.Tensor] = {}
        for n in self.names:
            s, z = self.clips[n.replace(".", "/")].qparams()
            out[f"{n}.weight_quant.scale"] = s
            if z is not None:
                out[f"{n}.weight_quant.zero_point"] = z
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.baked:
            raise FamesError("this weight clipping is already baked into the model; call the model itself")
        return torch.func.functional_call(self.model, self.overrides(), (x,), strict=False)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.clips.state_dict().items()}

    def load_state(self, st: dict[str, torch.Tensor]) -> None:
        self.clips.load_state_dict(st)

    def clip_factors(self) -> dict[str, float]:
        """Mean over channels of (clipped scale / initial scale), per layer."""
        with torch.no_grad():
            return {
                n: float((self.clips[n.replace(".", "/")].qparams()[0] / self.clips[n.replace(".", "/")].s0).mean())
                for n in self.names
            }

    @torch.no_grad()
    def bake(self) -> None:
        """Write the clipped scale / zero point into the weight quantizers (the forward is unchanged bit for bit)
        and drop the clip parameters."""
        mods = dict(qlayers(self.model))
        for key, t in self.overrides().items():
            name, attr = key.rsplit(".weight_quant.", 1)
            getattr(mods[name].weight_quant, attr).data.copy_(t.detach())
        self.clips = nn.ModuleDict()
        self.baked = True

    def train(
        self,
        data: CalibrationData,
        epochs: int = 5,
        lr: float = 0.1,
        optimizer: str = "adam",
        batch_size: int = 128,
        teacher: torch.Tensor | None = None,
        kd_alpha: float = 0.0,
        kd_temperature: float = 1.0,
        act_scales: bool = False,
        act_scale_lr: float = 1e-3,
        keep_best: bool = True,
        seed: int = 0,
        progress: bool = True,
        initial: tuple[float, float] | None = None,
    ) -> tuple[list[float], int, float]:
        """Train the clip logits (model weights frozen) on ``data``; returns (objective per epoch, best epoch,
        accuracy (%) of the best epoch on ``data``, nan without labels).

        Objective: ``(1 - kd_alpha) CE + kd_alpha T^2 KL(teacher || model)`` (``kd_alpha`` = 1 without labels).
        ``teacher``: reference logits ``(S, classes)``, required when ``kd_alpha > 0``. ``initial``: the
        objective and accuracy of the model as it is, when the caller has measured them (saves one pass).
        """
        if optimizer not in OPTIMIZERS:
            raise FamesError(f"optimizer={optimizer!r} is not one of {OPTIMIZERS}")
        alpha = 1.0 if data.y is None else kd_alpha
        if alpha > 0 and teacher is None:
            raise FamesError("LWC: distillation (or data without labels) needs teacher logits")
        model = self.model
        was_training = model.training
        flags = {p: p.requires_grad for p in model.parameters()}
        scales = [m.act_quant.scale for _, m in qlayers(model)] if act_scales else []
        groups: list[dict[str, Any]] = [{"params": self.parameters(), "lr": lr}]
        if scales:
            groups.append({"params": scales, "lr": act_scale_lr})
        opt = torch.optim.Adam(groups, lr=lr) if optimizer == "adam" else torch.optim.SGD(groups, lr=lr, momentum=0.9)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = len(data)
        steps = epochs * ((n + batch_size - 1) // batch_size)

        def objective(idx: torch.Tensor | slice, hits: list[int] | None = None) -> torch.Tensor:
            out = self(data.x[idx])
            if hits is not None and data.y is not None:
                hits.append(int((out.argmax(1) == data.y[idx]).sum()))
            loss = out.new_zeros(())
            if alpha < 1:
                loss = loss + (1 - alpha) * F.cross_entropy(out, data.y[idx])
            if alpha > 0:
                t = kd_temperature
                kd = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher[idx] / t, 1), reduction="batchmean")
                loss = loss + alpha * t * t * kd
            return loss

        @torch.no_grad()
        def full() -> tuple[float, float]:
            tot, hits = 0.0, []
            for b in range(0, n, batch_size):
                tot += objective(slice(b, b + batch_size), hits).item() * min(batch_size, n - b)
            return tot / n, 100.0 * sum(hits) / n if hits else float("nan")

        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            for p in scales:
                p.requires_grad_(True)
            first = initial or full()
            history, best_acc = [first[0]], first[1]
            best_epoch, best_state = 0, (self.state(), [p.detach().clone() for p in scales])
            bar = tqdm(total=steps, desc="calibrate: LWC", disable=not progress, unit="step", leave=False)
            for epoch in range(1, epochs + 1):
                perm = torch.randperm(n, generator=gen).to(data.x.device)
                for b in range(0, n, batch_size):
                    loss = objective(perm[b : b + batch_size])
                    if not torch.isfinite(loss):
                        raise FamesError(f"LWC diverged (loss {loss.item()}) in epoch {epoch}; lower lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update()
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                loss, acc = full()
                history.append(loss)
                if not keep_best or history[-1] < history[best_epoch]:
                    best_epoch, best_acc = epoch, acc
                    best_state = (self.state(), [p.detach().clone() for p in scales])
            bar.close()
            self.load_state(best_state[0])
            with torch.no_grad():
                for p, v in zip(scales, best_state[1], strict=True):
                    p.copy_(v)
        finally:
            for p, f in flags.items():
                p.requires_grad_(f)
            model.train(was_training)
        return history, best_epoch, best_acc

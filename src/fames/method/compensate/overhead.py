"""Hardware overhead of a control-variate correction: the phi look-up and V accumulator, one multiplier and one
subtraction per output, synthesized and costed on the layer's liberty (recipe of :mod:`fames.hw.cost`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fames.appmul.core import Cost
from fames.method.compensate.variate import Compensation, activation_histogram, distribution, layer_inputs
from fames.quant.layers import QuantLayer


def _acc_verilog(phi: np.ndarray, a_bits: int, phi_bits: int, v_bits: int) -> str:
    """``y = w + phi(a)``: the phi look-up and the V accumulator adder (``v_bits`` two's complement)."""
    lines = [f"module cv_acc(input [{a_bits - 1}:0] a, input [{v_bits - 1}:0] w, output [{v_bits - 1}:0] y);",
             f"  reg signed [{phi_bits - 1}:0] phi;", "  always @* begin", "    case (a)"]
    for i, val in enumerate(phi.tolist()):
        if val:
            lines.append(f"      {a_bits}'d{i}: phi = {phi_bits}'d{int(val) & ((1 << phi_bits) - 1)};")
    lines += [f"      default: phi = {phi_bits}'d0;", "    endcase", "  end",
              f"  wire signed [{v_bits - 1}:0] ws = w;", "  assign y = ws + phi;", "endmodule", ""]
    return "\n".join(lines)


def _mul_verilog(v_bits: int, c_bits: int) -> str:
    return (f"module cv_mul(input [{v_bits - 1}:0] a, input [{c_bits - 1}:0] w, output [{v_bits + c_bits - 1}:0] y);\n"
            "  assign y = $signed(a) * $signed(w);\nendmodule\n")


def _sub_verilog(n: int) -> str:
    return (f"module cv_sub(input [{n - 1}:0] a, input [{n - 1}:0] w, output [{n - 1}:0] y);\n"
            "  assign y = a - w;\nendmodule\n")


def _cost_unit(verilog: str, top: str, liberty: str, a: np.ndarray, w: np.ndarray, clock_ns: float = 1.0) -> Cost:
    """Cost one overhead unit by the recipe of :mod:`fames.hw.cost` (cached on disk by content hash)."""
    from fames.hw.cost import COST_VERSION, liberty_hash
    from fames.hw.energy import energy_per_op
    from fames.hw.synth import synthesize
    from fames.hw.timing import analyze
    from fames.io import cache_dir, content_hash, read_checked_json, write_cache_json

    key = content_hash(verilog, top, liberty_hash(liberty), COST_VERSION, a.tobytes(), w.tobytes(), str(clock_ns))
    path = cache_dir() / "hw" / f"cv-{key}.json"
    cached = read_checked_json(path)
    if cached is not None:
        return Cost.from_dict(cached)
    net = synthesize(verilog, top, liberty)
    timing = analyze(net)
    e = energy_per_op(net, net.liberty, a, w, clock_ns=clock_ns, timing=timing)
    power = e.total_fj / clock_ns
    cost = Cost(area_um2=net.area(), delay_ns=timing.delay_ns, energy_fj=e.total_fj, power_uw=power,
                pdp_fj=power * timing.delay_ns, clock_ns=clock_ns, cells=len(net.cells), note=top)
    write_cache_json(path, cost.to_dict())
    return cost


@dataclass
class Overhead:
    """Costs of the three overhead units of one compensated layer and how often each runs per inference."""

    acc: Cost
    mul: Cost
    sub: Cost
    acc_ops: int  # V accumulations (phi look-up + add) per inference
    outputs: int  # multiply + subtract per inference

    def energy(self, metric: str = "pdp") -> float:
        """Overhead energy per inference, fJ (``metric``: ``pdp`` or ``energy`` per op, as the multipliers)."""
        attr = {"pdp": "pdp_fj", "energy": "energy_fj"}[metric]
        per_output = getattr(self.mul, attr) + getattr(self.sub, attr)
        return self.acc_ops * getattr(self.acc, attr) + self.outputs * per_output


def overhead_costs(
    layer: QuantLayer,
    comp: Compensation,
    macs: int,
    liberty: str,
    act_hist: np.ndarray | None = None,
    n_vectors: int = 2048,
    seed: int = 0,
) -> Overhead:
    """Synthesize and cost the overhead units of ``comp`` on ``liberty`` for a layer doing ``macs`` per inference.

    V is shared by the ``O / groups`` filters of a group, so it is accumulated ``macs * groups / O`` times; every
    output (``macs / K``) does one multiply and one subtraction of the accumulator width. Operand streams:
    activation codes drawn from ``act_hist`` (uniform when None) accumulated over windows of ``K`` taps; the
    multiplier sees V uniform over half its range and a coefficient held for 16 outputs (weight-stationary).
    """
    rng = np.random.default_rng(seed)
    na, K = 1 << layer.a_bits, comp.fan_in
    a = rng.choice(na, size=n_vectors, p=distribution(act_hist, na, "activation"))
    phi = comp.phi.numpy()
    run = np.zeros(n_vectors, dtype=np.int64)
    acc = 0
    for t in range(n_vectors):  # running partial sums, reset every K taps
        acc = 0 if t % K == 0 else acc
        run[t] = acc
        acc += int(phi[a[t]])
    vmask = (1 << comp.v_bits) - 1
    acc_cost = _cost_unit(_acc_verilog(phi, layer.a_bits, comp.phi_bits, comp.v_bits), "cv_acc", liberty, a,
                          run & vmask)
    # multiplier and subtractor: streams that depend on their widths only (one costing per width pair)
    g = np.random.default_rng(seed)
    cb = comp.coef_bits
    vs = g.integers(-(1 << (comp.v_bits - 2)), 1 << (comp.v_bits - 2), n_vectors) & vmask
    bw = np.repeat(g.integers(-(1 << (cb - 2)), 1 << (cb - 2), n_vectors // 16 + 1), 16)[:n_vectors] & ((1 << cb) - 1)
    mul_cost = _cost_unit(_mul_verilog(comp.v_bits, cb), "cv_mul", liberty, vs, bw)
    n = layer.a_bits + layer.w_bits + max(K - 1, 1).bit_length() + 1  # accumulator width of the dot product
    sub_cost = _cost_unit(_sub_verilog(n), "cv_sub", liberty, g.integers(0, 1 << n, n_vectors),
                          g.integers(0, 1 << min(n, comp.v_bits), n_vectors))
    o, groups = layer.weight.shape[0], getattr(layer, "groups", 1)
    return Overhead(acc_cost, mul_cost, sub_cost, macs * groups // o, macs // K)


def model_overhead(model: nn.Module, macs: dict[str, int], liberty: str, x: torch.Tensor, metric: str = "pdp"
                   ) -> dict[str, float]:
    """Overhead energy (fJ per inference) of every compensated layer of ``model`` (histograms from ``x``); a bias
    correction (:mod:`fames.method.compensate.bias`) costs 0: it folds into the bias the accumulator starts from."""
    from fames.method.compensate.bias import BiasCorrection
    from fames.quant.convert import qlayers

    ql = dict(qlayers(model))
    names = [n for n, m in ql.items() if m.compensation is not None]
    variates = [n for n in names if not isinstance(ql[n].compensation, BiasCorrection)]
    ins = layer_inputs(model, variates, x) if variates else {}
    return {n: overhead_costs(ql[n], ql[n].compensation, macs[n], liberty, activation_histogram(ql[n], ins[n]))
            .energy(metric) if n in ins else 0.0 for n in names}

"""What a hardware engineer needs to build a result: ``hardware.json`` (conventions, per layer its multiplier(s),
widths, quantization parameters, correction) and ``hardware.npz`` (per layer its integer weight codes and per-channel
scales), written beside ``model.pt`` by :meth:`fames.flow.approximate.FamesResult.save`.

The integer model the emulation reproduces bit for bit (:mod:`fames.quant.layers`) is stated in the file itself, so
that the layer outputs can be recomputed without fames: codes, which port is which, padding, zero-point terms,
corrections and their rounding.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fames.appmul.core import AppMul, exact_lut, sanitize_name
from fames.appmul.library import Library
from fames.hw.synth import lut_to_verilog
from fames.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fames.method.assignment import spec_names
from fames.quant.convert import float_layers, qlayers

FORMAT = "fames-hardware"
TABLES = "hardware_tables"  # truth-table Verilog of the designs known only by their tables
CONVENTIONS = {
    "scope": "the headline model of the run (model.pt with assignment.json), its quantized layers by module name; "
             "between them everything is float (batch norm folded into the bias, ReLU, pooling, and the next "
             "layer's activation codes taken from the float output); float_layers lists the layers with parameters "
             "that stay in float, as 'name (Type)'",
    "activation_code": "q_x = clamp(round(x / act.scale) + act.zero_point, act.qmin, act.qmax), one scale and zero "
                       "point per layer, x / act.scale computed in float32 and rounded half to even; signed codes "
                       "are two's complement",
    "weight_code": "q_w = clamp(round(w / s_w[o]) + z_w[o], weight.qmin, weight.qmax) per output channel o; the "
                   "codes themselves are in hardware.npz (<layer>/weight_codes, shaped like the weight: (O, C/groups, "
                   "kh, kw) or (O, in_features))",
    "taps": "the K taps of output o are its weight's entries in that layout, channel-major (c, i, j); K = "
            "C/groups * kh * kw (in_features for a Linear); a grouped convolution's taps cover only its group's "
            "input channels; stride, padding [ph, pw] (both sides) and dilation as in PyTorch",
    "padding": "a padded position holds the activation code of real zero (act.zero_point) and goes through the "
               "AppMul like any other tap",
    "product": "every product of an activation code and a weight code goes through the AppMul assigned to that tap: "
               "Verilog module `top` in the file `verilog`, port a = the activation code, w = the weight code, y = "
               "the product (a_bits + w_bits bits, two's complement when either operand is signed); its table is "
               "library/luts.npz[name], int32 of shape (2^a_bits, 2^w_bits) indexed by the codes' bit patterns: "
               "y = lut[q_x mod 2^a_bits][q_w mod 2^w_bits]",
    "groups": "granularity layer: one AppMul for every tap; filter: index (O,) in hardware.npz (<layer>/index) "
              "names, for output o, the position in this layer's `appmuls` list of the AppMul of all its taps; "
              "kernel: index (O, C/groups) (Linear: (O, in_features)), one AppMul per output and input channel, for "
              "all kh * kw taps of that channel",
    "accumulator": "acc[o] = sum over the K taps of AppMul(q_x, q_w), exact in integers (acc_bits: a two's "
                   "complement width that holds K times the largest |product|)",
    "correction": "in the layer's `compensation` record, applied to acc before the output formula. method 'bias' "
                  "(bias correction): acc[o] - alpha[o] (integer accumulator LSBs). Any other method ('perforation', "
                  "'rank1') is a control variate: acc[o] - floor((beta[o] * V + alpha[o] + h) / 2^frac) with h = "
                  "2^(frac-1) if frac > 0 else 0 (round half up), V = sum over the K taps of output o of "
                  "phi[q_x mod 2^a_bits] (the same V for every filter of a group), beta and alpha integers with frac "
                  "fractional bits; the record's own `appmuls` list is sorted by name, it is not what `index` "
                  "refers to",
    "output": "y[o] = act.scale * s_w[o] * (acc[o] - z_w[o] * S_x - act.zero_point * S_w[o] + K * act.zero_point * "
              "z_w[o]) + bias[o], with acc after the correction, S_x = the sum of the K activation codes of output o "
              "(padded taps included), S_w[o] = the sum of its K weight codes; the zero-point terms are exact (z_w = "
              "0 for symmetric weights); fames scales in float32, so its float outputs may differ from this by "
              "about 1e-4 of an accumulator LSB",
    "exact_layers": "a layer given one exact design for all its taps runs the exact multiplier (mode exact; fames "
                    "computes it as a float convolution of the dequantized codes, equal to the integer formula to "
                    "float32 rounding); one mixing several exact designs emulates them (mode approx)",
    "from_table": "a design known only by its table (from_table) gets a truth-table module in hardware_tables/: "
                  "a ROM of its products, not an optimised circuit",
}


def without_circuit(assignment: dict[str, Any], library: list[AppMul]) -> list[str]:
    """Names of the assigned designs that have no Verilog (known only by their table), sorted."""
    by_name = {m.name: m for m in library}
    used = {n for spec in assignment.values() for n in spec_names(spec)}
    return sorted(n for n in used if n in by_name and by_name[n].verilog is None)


def _layer_record(name: str, layer: nn.Module, spec: Any, by_name: dict[str, AppMul], verilog: dict[str, str | None],
                  table_tops: dict[str, str], energy: dict[str, float] | None) -> dict[str, Any]:
    qa, qw = layer.act_quant, layer.weight_quant
    rec: dict[str, Any] = {
        "kind": type(layer).__name__, "weight_shape": list(layer.weight.shape),
        "a_bits": layer.a_bits, "w_bits": layer.w_bits, "signed": layer.signed, "mode": layer.mode,
        "act": {"scale": float(qa.params(1)[0].detach()), "zero_point": int(qa.zero_point.item()),
                "qmin": qa.qrange[0], "qmax": qa.qrange[1]},
        "weight": {"qmin": qw.qrange[0], "qmax": qw.qrange[1], "symmetric": qw.symmetric},
        "bias": layer.bias is not None,
    }
    if hasattr(layer, "stride"):
        rec.update(stride=list(layer.stride), padding=list(layer.padding), dilation=list(layer.dilation),
                   groups=layer.groups)
    names = spec_names(spec)
    rec["appmuls"] = [{"name": n, "signature": by_name[n].signature(), "verilog": verilog.get(n),
                       "top": table_tops.get(n, by_name[n].top),
                       **({"from_table": True} if by_name[n].verilog is None else {})} for n in names if n in by_name]
    fan_in = int(np.prod(layer.weight.shape[1:]))
    tables = [by_name[n].lut for n in names if n in by_name] or [exact_lut(*layer.widths)]  # none: the reference
    peak = max(int(np.abs(t).max()) for t in tables)
    rec["fan_in"] = fan_in
    rec["acc_bits"] = (fan_in * peak).bit_length() + 1
    if isinstance(spec, dict):
        rec["granularity"] = spec.get("granularity", "layer")
        if "index" in spec:
            rec["index"] = f"{name}/index"
        if spec.get("compensation") is not None:
            rec["compensation"] = spec["compensation"]
    else:
        rec["granularity"] = "layer"
    if energy is not None:
        rec["energy"] = energy
    return rec


def write_handoff(model: nn.Module, assignment: dict[str, Any], library: Library, out: str | Path,
                  per_layer_energy: dict[str, dict[str, float]] | None = None,
                  energy_metric: str = "pdp") -> list[Path]:
    """Write ``out/hardware.json``, ``out/hardware.npz`` and, for designs known only by their tables,
    ``out/hardware_tables/*.v`` for ``model`` as it stands (its headline assignment in place; ``assignment``: that
    assignment's spec per layer, names of ``library``); returns the paths written."""
    out = Path(out)
    by_name = {m.name: m for m in library}
    verilog = {m.name: (f"library/verilog/{m.top}.v" if m.verilog is not None else None) for m in library}
    written: list[Path] = []
    tops = {m.top for m in library if m.verilog is not None}
    table_tops: dict[str, str] = {}
    missing = without_circuit(assignment, list(library))
    for name in missing:  # a truth-table module stands in (a ROM, not a circuit)
        top = base = f"table_{sanitize_name(name)}"
        k = 1
        while top in tops:  # module names stay unique (two names can sanitize alike)
            k, top = k + 1, f"{base}_{k}"
        tops.add(top)
        table_tops[name] = top
        written.append(atomic_write_text(out / TABLES / f"{top}.v", lut_to_verilog(by_name[name], top)))
        verilog[name] = f"{TABLES}/{top}.v"
    arrays: dict[str, np.ndarray] = {}
    layers: dict[str, Any] = {}
    for name, layer in qlayers(model):
        if layer.mode == "float":
            continue
        spec = assignment.get(name)
        layers[name] = _layer_record(name, layer, spec, by_name, verilog, table_tops,
                                     (per_layer_energy or {}).get(name))
        s, z = layer.weight_quant.params(layer.weight.dim())
        lo, hi = layer.weight_quant.qrange
        arrays[f"{name}/weight_codes"] = layer.weight_codes().detach().cpu().numpy().astype(
            np.int8 if lo >= -128 and hi <= 127 else np.uint8 if lo >= 0 and hi <= 255 else np.int16)
        arrays[f"{name}/weight_scale"] = s.detach().cpu().reshape(-1).numpy().astype(np.float64)
        arrays[f"{name}/weight_zero_point"] = z.detach().cpu().reshape(-1).numpy().astype(np.int32)
        if layer.bias is not None:
            arrays[f"{name}/bias"] = layer.bias.detach().cpu().numpy().astype(np.float64)
        if isinstance(spec, dict) and "index" in spec:
            arrays[f"{name}/index"] = np.asarray(spec["index"], dtype=np.int64)
    doc = {"format": FORMAT, "version": 1, "conventions": CONVENTIONS,
           "energy": f"per layer, MACs x the AppMul's {energy_metric} per operation (fJ per inference), correction "
                     "accumulators included",
           "layers": layers, "float_layers": float_layers(model),
           "without_circuit": missing}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return [atomic_write_json(out / "hardware.json", doc), atomic_write_bytes(out / "hardware.npz", buf.getvalue()),
            *written]

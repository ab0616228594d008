"""One row per AppMul (errors + cost), as dicts, a text table, and the PDP-vs-MRED plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fames.appmul.core import AppMul
from fames.appmul.metrics import error_metrics
from fames.errors import AppMulError


def _sig(v: float) -> str:
    """One decimal from 100 up, else four significant digits (a one-gate design's PDP is 0.04 fJ, not 0.0)."""
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:#.4g}"


COLUMNS = [
    ("name", "name", "{}".format),
    ("bits", "bits", "{}".format),
    ("family", "family", "{}".format),
    ("mred_pct", "MRED%", "{:.3f}".format),
    ("wce", "WCE", "{:.0f}".format),
    ("area_um2", "area um2", _sig),
    ("delay_ns", "delay ns", "{:.3f}".format),
    ("energy_fj", "E/op fJ", _sig),
    ("pdp_fj", "PDP fJ", _sig),
    ("pdp_rel", "PDP/exact", "{:.3f}".format),
    ("note", "note", "{}".format),
]


def appmul_row(m: AppMul) -> dict[str, Any]:
    """Name, widths, error metrics and cost of ``m`` as a flat dict (units in the keys)."""
    met = error_metrics(m)
    c = m.cost
    exact = m.exact()
    zero_wrong = int(((exact == 0) & (m.lut != exact)).sum())  # pairs MRED leaves out, frequent after a ReLU
    note = c.note if c else "not costed"
    if zero_wrong:
        note = f"{note}; " * bool(note) + f"wrong on {zero_wrong} of {int((exact == 0).sum())} zero products " \
                                          "(not in MRED)"
    return {
        "name": m.name,
        "bits": m.signature(),
        "a_bits": m.a_bits,
        "w_bits": m.w_bits,
        "a_signed": m.a_signed,
        "w_signed": m.w_signed,
        "family": m.provenance.get("family", ""),
        "mred_pct": 100 * met.mred,
        "wce": met.wce,
        "med": met.med,
        "er": met.er,
        "mean_error": met.mean_error,
        "rank": met.rank,
        "area_um2": c.area_um2 if c else None,
        "delay_ns": c.delay_ns if c else None,
        "energy_fj": c.energy_fj if c else None,
        "pdp_fj": c.pdp_fj if c else None,
        "pdp_rel": c.relative.get("pdp") if c else None,
        "reference": c.recipe.get("reference") if c else None,
        "cost_source": c.source if c else None,
        "zero_product_errors": zero_wrong,
        "note": note,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of :func:`appmul_row` rows, and the design each width's ``PDP/exact`` is relative to."""
    cells = [[h for _, h, _ in COLUMNS]]
    for r in rows:
        cells.append(["-" if r.get(k) is None else f(r[k]) for k, _, f in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    refs = dict.fromkeys(f"{r['bits']} against {r['reference']}" for r in rows if r.get("reference"))
    if refs:
        lines.append("PDP/exact: " + "; ".join(refs))
    return "\n".join(lines)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated in (smaller x, smaller y); x equal to 1e-9 relative (the MRED of a design and of its
    transpose differ in the last bits) counts as equal."""
    xr = np.asarray(x, dtype=float)
    scale = np.abs(xr[np.isfinite(xr)]).max(initial=0.0) or 1.0
    order = np.lexsort((y, np.round(xr / scale, 9)))
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in order:
        if y[i] < best:
            mask[i] = True
            best = y[i]
    return mask


def plot_pdp_vs_mred(rows: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Relative PDP against MRED (log x), one panel per width group (``8x8u``, ``4x4s``, ...), one marker per
    family (the same in every panel), the panel's Pareto front circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from fames.io import atomic_write_bytes

    pts = [r for r in rows if r.get("pdp_rel") is not None]
    if not rows:
        raise AppMulError("the library holds no AppMul: add some (fames lib build / import / synth) first")
    if not pts:
        raise AppMulError("no AppMul in the library has a cost: run `fames lib cost DIR --liberty LIB` first")
    groups = sorted({r["bits"] for r in pts})
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.5 + 4.2 * ncol, 0.6 + 3.9 * nrow), sharey=True, squeeze=False,
                             layout="constrained")
    fams = sorted({r["family"] for r in pts})
    markers, colors = "osD^v<>pPX*h", plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {f: (markers[k % len(markers)], colors[k % len(colors)]) for k, f in enumerate(fams)}
    floor = min([r["mred_pct"] for r in pts if r["mred_pct"] > 0] or [1e-3]) / 3
    for ax, bits in zip(axes.flat, groups, strict=False):
        sel = [r for r in pts if r["bits"] == bits]
        for fam in sorted({r["family"] for r in sel}):
            fs = [r for r in sel if r["family"] == fam]
            ax.scatter([max(r["mred_pct"], floor) for r in fs], [r["pdp_rel"] for r in fs], marker=style[fam][0],
                       color=style[fam][1], label=fam, alpha=0.75, s=28)
        x = np.array([max(r["mred_pct"], floor) for r in sel])
        y = np.array([r["pdp_rel"] for r in sel])
        m = pareto_mask(x, y)
        o = np.argsort(x[m])
        ax.step(x[m][o], y[m][o], where="post", color="k", lw=1, alpha=0.6)
        ax.scatter(x[m], y[m], facecolors="none", edgecolors="k", s=70, lw=1)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)  # 0.1, 1, 10 rather than 10^-1, 10^0, 10^1
        ax.autoscale_view()
        lo, hi = ax.get_xlim()
        narrow = hi / lo < 30  # the axis spans a decade or so: label the minor ticks too
        ax.xaxis.set_minor_formatter(plain if narrow else matplotlib.ticker.NullFormatter())
        ax.set_title(f"{bits} ({len(sel)} designs)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("MRED (%)  [exact at the left edge]")
    for ax in axes[:, 0]:
        ax.set_ylabel("PDP relative to exact")
    handles = [plt.Line2D([], [], ls="", marker=style[f][0], color=style[f][1], label=f) for f in fams]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(title or "AppMul library: PDP vs MRED per width (circled: Pareto front)")
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())

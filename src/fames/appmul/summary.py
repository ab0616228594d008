"""One row per AppMul (errors + cost), as dicts, a text table, and the PDP-vs-MRED plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fames.appmul.core import AppMul
from fames.appmul.metrics import error_metrics
from fames.errors import AppMulError

COLUMNS = [
    ("name", "name", "{}"),
    ("bits", "bits", "{}"),
    ("family", "family", "{}"),
    ("mred_pct", "MRED%", "{:.3f}"),
    ("wce", "WCE", "{:.0f}"),
    ("area_um2", "area um2", "{:.1f}"),
    ("delay_ns", "delay ns", "{:.3f}"),
    ("energy_fj", "E/op fJ", "{:.1f}"),
    ("pdp_fj", "PDP fJ", "{:.1f}"),
    ("pdp_rel", "PDP/exact", "{:.3f}"),
    ("note", "note", "{}"),
]


def appmul_row(m: AppMul) -> dict[str, Any]:
    """Name, widths, error metrics and cost of ``m`` as a flat dict (units in the keys)."""
    met = error_metrics(m)
    c = m.cost
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
        "cost_source": c.source if c else None,
        "note": (c.note if c else "not costed"),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of :func:`appmul_row` rows."""
    cells = [[h for _, h, _ in COLUMNS]]
    for r in rows:
        cells.append(["-" if r.get(k) is None else f.format(r[k]) for k, _, f in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated in (smaller x, smaller y)."""
    order = np.lexsort((y, x))
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in order:
        if y[i] < best:
            mask[i] = True
            best = y[i]
    return mask


def plot_pdp_vs_mred(rows: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Relative PDP against MRED (log x), one marker per family, Pareto front per width group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fames.io import atomic_write_bytes

    pts = [r for r in rows if r.get("pdp_rel") is not None]
    if not pts:
        raise AppMulError("no AppMul in the library has a cost: run `fames lib cost DIR --liberty LIB` first")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    fams = sorted({r["family"] for r in pts})
    markers = "osD^v<>pPX*h"
    floor = min([r["mred_pct"] for r in pts if r["mred_pct"] > 0] or [1e-3]) / 3
    for k, fam in enumerate(fams):
        sel = [r for r in pts if r["family"] == fam]
        ax.scatter(
            [max(r["mred_pct"], floor) for r in sel],
            [r["pdp_rel"] for r in sel],
            marker=markers[k % len(markers)],
            label=fam,
            alpha=0.75,
            s=28,
        )
    for bits in sorted({r["bits"] for r in pts}):
        sel = [r for r in pts if r["bits"] == bits]
        x = np.array([max(r["mred_pct"], floor) for r in sel])
        y = np.array([r["pdp_rel"] for r in sel])
        m = pareto_mask(x, y)
        o = np.argsort(x[m])
        ax.step(x[m][o], y[m][o], where="post", color="k", lw=1, alpha=0.6)
        ax.scatter(x[m], y[m], facecolors="none", edgecolors="k", s=70, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("MRED (%)  [exact designs drawn at the left edge]")
    ax.set_ylabel("PDP relative to the exact multiplier")
    ax.set_title(title or "AppMul library: PDP vs MRED (circled: Pareto front per width)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())

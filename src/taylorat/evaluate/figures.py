"""A small picture of one evaluation report: accuracy per attack and, when the ε-sweep ran, accuracy vs ε."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import new_figure, write_figure
from .registry import labels


def plot_report(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Bars of ``report["results"]`` (each labelled with its ε), and the sweep curve if present; a PNG."""
    sweep = (report.get("extra") or {}).get("sweep")
    fig = new_figure("drawing the report chart", figsize=(9 if sweep else 5.5, 3.2), dpi=100)
    axes = fig.subplots(1, 2 if sweep else 1)
    ax = axes[0] if sweep else axes
    names = list(report["results"])
    titles = labels()
    eps = report.get("eps") or {}
    ticks = [titles.get(n, n) + (f"\nε={eps[n]:.4g}" if n in eps else "") for n in names]
    values = [report["results"][n] for n in names]
    bars = ax.barh(range(len(names)), values, color=["C7" if n == "clean" else "C0" for n in names])
    ax.set_yticks(range(len(names)), ticks, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"accuracy (%) on {report.get('n', '?')} test images", fontsize=8)
    for b, v in zip(bars, values):
        ax.text(min(v + 1, 88), b.get_y() + b.get_height() / 2, f"{v:.2f}", va="center", fontsize=7)
    if sweep:
        ax2 = axes[1]
        ax2.plot([c["eps"] for c in sweep], [c["pgd20"] for c in sweep], "o-", lw=1.3)
        ax2.set_xscale("log")
        ax2.set_xlabel("ε (log scale; the last point is the whole [0,1] box)", fontsize=8)
        ax2.set_ylabel("PGD-20 accuracy (%)", fontsize=8)
        ax2.set_ylim(-2, 102)
        ax2.grid(alpha=0.3)
        ax2.set_title("should fall to 0 as ε grows", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write_figure(fig, path)

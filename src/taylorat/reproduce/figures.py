"""Figures of a study, drawn from its results.json alone (like the page)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ..common import require, write_figure

CURVE = "track_test_pgd"


def has_curves(runs: list[dict[str, Any]]) -> bool:
    return any(CURVE in (r.get("curves") or {}) for r in runs)


def plot_curves(runs: list[dict[str, Any]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """Test PGD accuracy per epoch: one line per method (mean over seeds), the band spans the seeds.

    Dashed: the tracked training images, the same attack (the robust generalisation gap is the
    distance between a method's two lines).
    """
    require("matplotlib", "plot", "drawing the study figure")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        rs = [r["curves"] for r in runs if r["method"] == label and CURVE in (r.get("curves") or {})]
        if not rs:
            continue
        n = min(len(c["epoch"]) for c in rs)
        epochs = np.array(rs[0]["epoch"][:n])
        color = colors[i % len(colors)]
        test = np.array([c[CURVE][:n] for c in rs], dtype=float)
        ax.plot(epochs, test.mean(0), color=color, lw=1.6, label=f"{label} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        if len(rs) > 1:
            ax.fill_between(epochs, test.min(0), test.max(0), color=color, alpha=0.18, lw=0)
        if all("track_train_pgd" in c for c in rs):
            train = np.array([c["track_train_pgd"][:n] for c in rs], dtype=float)
            ax.plot(epochs, train.mean(0), color=color, lw=1.0, ls="--", alpha=0.7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("PGD-20 accuracy (%)")
    ax.set_title(textwrap.fill(title or "test PGD-20 (solid, band: seeds) and training-image PGD-20 (dashed)", 100),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)
    return Path(path)

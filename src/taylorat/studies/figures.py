"""Figures of a study, drawn from its results.json alone (like the page)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ..common import require, write_figure

CURVE = "track_test_pgd"
TRAIN = "track_train_pgd"


def has_curves(runs: list[dict[str, Any]]) -> bool:
    return any(CURVE in (r.get("curves") or {}) for r in runs)


def train_test_gap(r: dict[str, Any]) -> float | None:
    """Last epoch's PGD-20 on the tracked training images minus on the tracked test images."""
    c = r.get("curves") or {}
    if c.get(TRAIN) and c.get(CURVE):
        return c[TRAIN][-1] - c[CURVE][-1]
    return None


def band(runs: list[dict[str, Any]], label: str, key: str) -> dict[str, Any] | None:
    """One method's curve over its seeds, epoch by epoch: ``{"epoch", "mean", "lo", "hi", "seeds"}``.

    ``key`` is a ``curves`` entry, or ``"gap"`` for the robust generalisation gap
    PGD-20(tracked training images) − PGD-20(tracked test images). Runs are cut to the
    shortest curve; ``None`` when no run of ``label`` has the curve.
    """
    need = (CURVE, TRAIN) if key == "gap" else (key,)
    cs = [r["curves"] for r in runs if r["method"] == label and all(k in (r.get("curves") or {}) for k in need)]
    if not cs:
        return None
    n = min(len(c["epoch"]) for c in cs)
    rows = [[c[TRAIN][i] - c[CURVE][i] for i in range(n)] if key == "gap" else list(c[key][:n]) for c in cs]
    cols = list(zip(*rows))
    return {"epoch": list(cs[0]["epoch"][:n]), "mean": [sum(v) / len(v) for v in cols],
            "lo": [min(v) for v in cols], "hi": [max(v) for v in cols], "seeds": len(cs)}


def lr_drops(runs: list[dict[str, Any]]) -> list[int]:
    """Epochs whose learning rate is below the previous epoch's (read from the first run with an ``lr`` curve)."""
    for r in runs:
        c = r.get("curves") or {}
        if c.get("lr") and c.get("epoch"):
            return [c["epoch"][i] for i in range(1, len(c["lr"])) if c["lr"][i] < c["lr"][i - 1]]
    return []


STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 3)))  # with the colours: methods stay apart


def plot_curves(runs: list[dict[str, Any]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """Two panels per study, one line per method (mean over seeds, band: lowest to highest seed).

    Left: test PGD-20 accuracy per epoch, where robust overfitting shows as a fall after the
    learning-rate drops (dotted). Right: the robust generalisation gap, PGD-20 on the tracked
    training images minus PGD-20 on the tracked test images.
    """
    require("matplotlib", "plot", "drawing the study figure")
    import matplotlib  # noqa: PLC0415 - optional extra [plot]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional extra [plot]
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional extra [plot]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.8), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drops = lr_drops(runs)
    bands = {key: {label: band(runs, label, key) for label in labels} for key in (CURVE, "gap")}
    for ax, key, ylabel in ((left, CURVE, "test PGD-20 accuracy (%)"),
                            (right, "gap", "train − test PGD-20 (points)")):
        for i, label in enumerate(labels):
            b = bands[key][label]
            if b is None:
                continue
            color = colors[i % len(colors)]
            seeds = b["seeds"]
            ax.plot(b["epoch"], b["mean"], color=color, lw=1.5, ls=STYLES[i % len(STYLES)],
                    label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            if seeds > 1:
                ax.fill_between(b["epoch"], b["lo"], b["hi"], color=color, alpha=0.15, lw=0)
        for e in drops:
            ax.axvline(e, color="0.4", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    # the test curves climb from chance in the first epochs; show the part where methods differ
    tests = [b for b in bands[CURVE].values() if b]
    tails = [v for b in tests for v in b["lo"][len(b["lo"]) // 5:]]
    tops = [v for b in tests for v in b["hi"][len(b["hi"]) // 5:]]
    if tails:
        left.set_ylim(min(tails) - 2, max(tops) + 2)
    left.set_title("test PGD-20 (dotted: learning-rate drops)", fontsize=9)
    right.set_title("robust generalisation gap: training images − test images", fontsize=9)
    handles, names = left.get_legend_handles_labels()
    ncol = min(3, max(1, len(names)))
    rows = -(-len(names) // ncol)
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
    write_figure(fig, path)
    plt.close(fig)
    return Path(path)

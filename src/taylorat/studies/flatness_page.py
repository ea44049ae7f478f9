"""The flatness part of a study page and its figure: weight-space flatness of `last` against the robust
generalisation gap, one point per run (records with a ``flatness`` entry, :mod:`.flatness_of_last`).

Flatness at size α is the mean over random filter-normalized directions ``d`` of ``L(w + α·d) − L(w)``
(clean, and under PGD made against each perturbed model); smaller means flatter. The gap is PGD-20 on the
tracked training images minus on the tracked test images at the last epoch. Whether flatness *tracks* the
gap is read from the Pearson correlation over runs (|r| ≥ 0.5 with at least 6 runs: it tracks; else not).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from ..common import require, write_figure
from .figures import train_test_gap
from .spread import seed_stats, within_spread

TRACKS = 0.5  # |Pearson r| at or above which flatness is said to track the gap
MIN_RUNS = 6


def flat_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("flatness") and train_test_gap(r) is not None]


def score(r: dict[str, Any], kind: str = "pgd") -> float:
    """The run's loss increase at the middle size α (the one the page and figure use)."""
    f = r["flatness"]
    return f[kind][len(f["alphas"]) // 2]


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def _pm(vals: list[float], digits: int = 3) -> str:
    mean, std = seed_stats(vals)
    return f"{mean:.{digits}f}" if len(vals) < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def flatness_section(runs: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The page's "Flatness and the robust generalisation gap" section (empty without flatness records)."""
    rs = flat_runs(runs)
    if not rs:
        return []
    alphas = rs[0]["flatness"]["alphas"]
    mid = alphas[len(alphas) // 2]
    f0 = rs[0]["flatness"]["settings"]
    lines = ["", "## Flatness and the robust generalisation gap", "",
             f"![flatness of `last` (PGD loss increase at α = {mid}) against the train − test PGD-20 gap, one point "
             "per run](flatness.png)", "",
             f"Weight-space flatness of each run's `last` checkpoint on the first {f0['n']} test images: the loss "
             f"increase `L(w + α·d) − L(w)` averaged over {f0['draws']} random filter-normalized directions `d` "
             f"(Li et al. 2018; α relative to each filter's norm), clean and under PGD-{f0['steps']} "
             f"(ε={f0['eps']:.4g}) made against each perturbed model; smaller is flatter. `L(w)` is the loss at "
             "the checkpoint itself, the point each increase starts from. Gap: PGD-20 on the tracked training "
             "images minus on the tracked test images at the last epoch. Mean ± std over seeds:", "",
             "| method | runs | " + " | ".join(f"clean Δloss α={a}" for a in alphas) + " | "
             + " | ".join(f"PGD Δloss α={a}" for a in alphas) + " | train − test (last) | clean L(w) | PGD L(w) |",
             "| --- | --- | " + " | ".join("---" for _ in alphas * 2) + " | --- | --- | --- |"]
    by = {m: [r for r in rs if r["method"] == m] for m in labels if any(r["method"] == m for r in rs)}
    for m, mine in by.items():
        cells = [_pm([r["flatness"][k][i] for r in mine]) for k in ("clean", "pgd") for i in range(len(alphas))]
        gap = _pm([train_test_gap(r) for r in mine], 2)
        at_w = [_pm([r["flatness"]["loss_at_w"][k] for r in mine]) for k in ("clean", "pgd")]
        lines.append(f"| {m} | {len(mine)} | " + " | ".join([*cells, gap, *at_w]) + " |")
    return lines + [""] + flatness_findings(by, mid)


def flatness_findings(by: dict[str, list[dict[str, Any]]], mid: float) -> list[str]:
    """Which flattens most, whether flatness tracks the gap, where the Taylor terms stand (from the numbers)."""
    means = {m: seed_stats([score(r) for r in rs]) for m, rs in by.items()}
    flattest = min(means, key=lambda m: means[m][0])
    out = [f"- Flattest under attack (smallest mean PGD loss increase at α = {mid}): `{flattest}` "
           f"({means[flattest][0]:.3f})."]
    rs = [r for m in by.values() for r in m]
    r = pearson([score(x) for x in rs], [train_test_gap(x) for x in rs])
    if len(rs) >= MIN_RUNS and not math.isnan(r):
        verdict = "tracks" if abs(r) >= TRACKS else "does not track"
        out.append(f"- Across all {len(rs)} runs, flatness {verdict} the robust generalisation gap: Pearson "
                   f"r = {r:+.2f} between the PGD loss increase at α = {mid} and the train − test gap "
                   f"(|r| ≥ {TRACKS} counts as tracking).")
    else:
        out.append(f"- {len(rs)} runs so far: too few to say whether flatness tracks the gap (needs {MIN_RUNS}).")
    for a, b in (("trades", "trades+1st+2nd"), ("trades + SAM", "trades+1st+2nd + SAM"),
                 ("trades + AWP", "trades+1st+2nd + AWP")):
        if a in means and b in means and len(by[a]) > 1 and len(by[b]) > 1:
            inside = within_spread(means[a], means[b])
            d = means[b][0] - means[a][0]
            out.append(f"- `{b}` vs `{a}`: PGD loss increase {d:+.3f} "
                       f"({'inside' if inside else 'outside'} the seed spread ±{means[a][1] + means[b][1]:.3f}): "
                       + ("the Taylor terms cannot be told apart here." if inside else
                          ("the Taylor terms make it sharper." if d > 0 else "the Taylor terms make it flatter."))
                       + _starting_point(by[a], by[b]))
    return out


def _starting_point(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    """Whether the two methods' increases start from the same clean loss ``L(w)`` (a sharper run may just sit
    higher up the loss surface)."""
    la, lb = (seed_stats([r["flatness"]["loss_at_w"]["clean"] for r in rs]) for rs in (a, b))
    if within_spread(la, lb):
        return f" Both start from the same clean L(w) within the seed spread ({lb[0]:.3f} and {la[0]:.3f})."
    return (f" The increases start from a {'higher' if lb[0] > la[0] else 'lower'} clean L(w), {lb[0]:.3f} "
            f"against {la[0]:.3f} (outside the seed spread ±{la[1] + lb[1]:.3f}).")


def plot_flatness_gap(runs: list[dict[str, Any]], labels: list[str], path: str | Path, title: str = "") -> Path | None:
    """One point per run: PGD loss increase at the middle α (x) against the train − test gap (y), by method."""
    rs = flat_runs(runs)
    if not rs:
        return None
    require("matplotlib", "plot", "drawing the study figure")
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra [plot]

    fig = Figure(figsize=(6.4, 4.6), dpi=110)
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    for i, m in enumerate([m for m in labels if any(r["method"] == m for r in rs)]):
        mine = [r for r in rs if r["method"] == m]
        ax.scatter([score(r) for r in mine], [train_test_gap(r) for r in mine], label=m, marker=markers[i % 8],
                   s=42, color=f"C{i}")
    mid = rs[0]["flatness"]["alphas"][len(rs[0]["flatness"]["alphas"]) // 2]
    ax.set_xlabel(f"PGD loss increase at α = {mid} (flatness of last; smaller is flatter)")
    ax.set_ylabel("train − test PGD-20 at the last epoch (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        fig.suptitle(textwrap.fill(title, 90), fontsize=9)  # the figure is narrower than the curves
    fig.tight_layout()
    return write_figure(fig, path)

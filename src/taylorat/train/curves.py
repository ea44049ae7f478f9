"""Training curves of one or several runs, drawn from their per-epoch records (``metrics.jsonl``).

Three panels: the loss and its parts (CE, TRADES' KL, the first- and second-order Taylor
terms), accuracy (training clean / adversarial, the selection split's clean / PGD check, tracked
test and training images when recorded) and the learning rate. One colour per run, one line
style and marker per quantity, legends below the panels. ``train`` writes ``curves.png`` beside
``metrics.jsonl`` after every epoch; ``taylorat plot RUN_DIR...`` draws several runs into one figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..common import InputError, new_figure, read_jsonl, write_figure

# (record key, name, line style, marker): every quantity of a panel has its own style and marker
LOSSES = (("train_loss", "loss", "-", "o"), ("train_ce", "CE", "--", "s"), ("train_kl", "KL", ":", "^"),
          ("train_first", "first", "-.", "v"), ("train_second", "second", (0, (5, 1, 1, 1, 1, 1)), "D"))
ACCURACIES = (("train_acc_clean", "train clean", ":", "o"), ("train_acc_adv", "train adversarial", "-.", "s"),
              ("{sel}_clean", "{sel} clean", "--", "^"), ("{sel}_pgd", "{sel} PGD", "-", "v"),
              ("track_test_pgd", "test PGD (tracked)", (0, (5, 1, 1, 1, 1, 1)), "D"),
              ("track_train_pgd", "train PGD (tracked)", (0, (8, 3)), "x"))
LEGEND_PT = 8


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory (its ``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir} holds no metrics.jsonl; give the folder of a taylorat run (its out_dir)")
    return read_jsonl(path, "training log", "repair or remove the broken line")


def plot_histories(histories: Mapping[str, Sequence[dict[str, Any]]], path: str | Path, title: str = "") -> Path:
    """Draw ``{label: records}`` into a PNG at ``path`` (written atomically); returns the path.

    One colour per run; within a panel one line style and marker per quantity, explained by a legend
    below the panel (not over the data). Epochs are whole numbers; the learning rate, constant within
    an epoch, is drawn as steps over each epoch's span (epoch e covers (e-1, e]).
    """
    from matplotlib.lines import Line2D  # noqa: PLC0415 - optional extra [plot]
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional extra [plot]

    fig = new_figure("drawing curves", figsize=(13, 5.2), dpi=100)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    shown: dict[Any, dict[str, tuple]] = {ax_loss: {}, ax_acc: {}}
    runs = []
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        color = colors[i % len(colors)]
        runs.append(Line2D([], [], color=color, lw=2, label=label))
        epochs = [h["epoch"] for h in hist]
        every = max(1, len(epochs) // 12)
        sel = next((k[:-4] for k in hist[-1] if k.endswith("_pgd") and not k.startswith(("track_", "train_"))),
                   "holdout")
        for ax, quantities in ((ax_loss, LOSSES), (ax_acc, ACCURACIES)):
            for key, name, style, marker in quantities:
                key, name = key.format(sel=sel), name.format(sel=sel)
                pts = [(e, h[key]) for e, h in zip(epochs, hist) if isinstance(h.get(key), (int, float))]
                if pts and (ax is ax_acc or any(v for _, v in pts)):
                    ax.plot(*zip(*pts), color=color, ls=style, marker=marker, markevery=every, ms=4, lw=1.3)
                    shown[ax][name] = (style, marker)
        lrs = [h.get("lr") for h in hist]
        if all(isinstance(v, (int, float)) for v in lrs):
            ax_lr.stairs(lrs, [epochs[0] - 1, *epochs], color=color, lw=1.5, baseline=None)
    ax_loss.set_title("training loss and its parts", fontsize=10)
    ax_acc.set_title("accuracy (%)", fontsize=10)
    ax_lr.set_title("learning rate (per epoch)", fontsize=10)
    ax_lr.set_yscale("log")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax, styles in shown.items():
        handles = [Line2D([], [], color="0.2", ls=st, marker=mk, ms=4, lw=1.3, label=name)
                   for name, (st, mk) in styles.items()]
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=LEGEND_PT,
                      frameon=False)
    if runs:
        ax_lr.legend(handles=runs, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=LEGEND_PT,
                     frameon=False, title="runs (colour)", title_fontsize=LEGEND_PT)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return write_figure(fig, path)

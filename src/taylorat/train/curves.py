"""Training curves of one or several runs, drawn from their per-epoch records (``metrics.jsonl``).

Three panels: the loss and its parts (CE, TRADES' KL, the first- and second-order Taylor
terms), accuracy (training clean / adversarial, the selection split's clean / PGD check, tracked
test and training images when recorded) and the learning rate. One colour per run, one line
style per quantity. ``train`` writes ``curves.png`` beside ``metrics.jsonl`` after every epoch;
``taylorat plot RUN_DIR...`` draws several runs into one figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..common import InputError, new_figure, read_jsonl, write_figure

LOSSES = (("train_loss", "loss", "-"), ("train_ce", "CE", "--"), ("train_kl", "KL", ":"),
          ("train_first", "first", "-."), ("train_second", "second", (0, (1, 3))))
ACCURACIES = (("train_acc_clean", "train clean", ":"), ("train_acc_adv", "train adversarial", (0, (1, 3))),
              ("{sel}_clean", "{sel} clean", "--"), ("{sel}_pgd", "{sel} PGD", "-"),
              ("track_test_pgd", "test PGD (tracked)", "-."), ("track_train_pgd", "train PGD (tracked)",
                                                                (0, (5, 2, 1, 2))))


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory (its ``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir} holds no metrics.jsonl; give the folder of a taylorat run (its out_dir)")
    return read_jsonl(path, "training log", "repair or remove the broken line")


def plot_histories(histories: Mapping[str, Sequence[dict[str, Any]]], path: str | Path, title: str = "") -> Path:
    """Draw ``{label: records}`` into a PNG at ``path`` (written atomically); returns the path."""
    fig = new_figure("drawing curves", figsize=(13, 3.8), dpi=100)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        color = colors[i % len(colors)]
        epochs = [h["epoch"] for h in hist]
        sel = next((k[:-4] for k in hist[-1] if k.endswith("_pgd") and not k.startswith(("track_", "train_"))),
                   "holdout")
        for key, name, style in LOSSES:
            ys = [h.get(key) for h in hist]
            if any(isinstance(v, (int, float)) and v for v in ys):
                ax_loss.plot(epochs, ys, color=color, ls=style, lw=1.3, label=f"{label}: {name}")
        for key, name, style in ACCURACIES:
            key, name = key.format(sel=sel), name.format(sel=sel)
            pts = [(e, h[key]) for e, h in zip(epochs, hist) if isinstance(h.get(key), (int, float))]
            if pts:
                ax_acc.plot(*zip(*pts), color=color, ls=style, lw=1.3, label=f"{label}: {name}")
        ax_lr.plot(epochs, [h.get("lr") for h in hist], color=color, lw=1.3, label=label)
    ax_loss.set_title("training loss and its parts", fontsize=9)
    ax_acc.set_title("accuracy (%)", fontsize=9)
    ax_lr.set_title("learning rate", fontsize=9)
    ax_lr.set_yscale("log")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path)

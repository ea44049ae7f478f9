"""``taylorat plot``: training curves of one or several runs (losses, accuracies, lr) into a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    pl = subparsers.add_parser("plot", help="training curves of one or several runs (losses, accuracies, lr) "
                                            "into a PNG")
    pl.add_argument("run_dir", nargs="+", help="run folders (a run's out_dir, with its metrics.jsonl)")
    pl.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png for one run, ./curves.png for several)")
    pl.add_argument("--title", help="the figure's title (default: none)")
    pl.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # taylorat.train.curves loads the train package (trainer, objectives): only for this command
    from ..train.curves import plot_histories, read_history  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)

    histories = {}
    for d in args.run_dir:
        label = "/".join(Path(d).resolve().parts[-2:])  # e.g. demo/trades
        histories[label if label not in histories else str(d)] = read_history(d)
    out = Path(args.out or (Path(args.run_dir[0]) / "curves.png" if len(args.run_dir) == 1 else "curves.png"))
    plot_histories(histories, out, args.title or "")
    print(f"{len(histories)} run{'s' if len(histories) > 1 else ''} -> {out}")
    return 0

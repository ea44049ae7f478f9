"""``taylorat demo``: TRADES vs TRADES+1st+2nd on the embedded digits dataset (no download)."""

from __future__ import annotations

import argparse

from .shared import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("demo", help="TRADES vs TRADES+1st+2nd on the embedded digits dataset (no download)")
    d.add_argument("--out", default="runs/demo", help="folder for the two runs and the report (default runs/demo)")
    d.add_argument("--epochs", type=int, default=30, help="training epochs of each run (default 30)")
    d.add_argument("--seed", type=int, default=0, help="seed of the weights, the hold-out split and the attacks "
                                                       "(default 0)")
    d.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..studies.demo import run_demo  # noqa: PLC0415 - it imports the trainer: only for this command

    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device)
    return 0

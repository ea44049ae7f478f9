"""``taylorat bench``: training-step time and memory per model x method x precision (paper Table 6)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser("bench", help="training-step time and memory per model x method x precision (Table 6)")
    b.defer(_add_arguments)
    b.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own description and options."""
    # taylorat.bench imports the trainer: only when `bench` is the command (or its --help is asked for)
    from ..bench import bench  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)

    parser.description = bench.__doc__.splitlines()[0]
    bench.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..bench.bench import run as run_bench  # noqa: PLC0415 - imports the trainer, as above

    return run_bench(args)

"""What several commands share: the one-line input error, the sub-parser class, a run's label and the
dataset a checkpoint is evaluated on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .. import data as datasets
from ..checkpoint import CheckpointMeta
from ..common import InputError


class UserError(InputError):
    """Bad input on the command line: printed as one line, exit code 2."""


class CommandParser(argparse.ArgumentParser):
    """A command's sub-parser; ``defer(add)`` adds its options only when the command is parsed or its help shown.

    For a command whose options live in a module too heavy to import for every other command. Its namespace
    also gets ``argv``: the command's own argument strings, for a program that parses them again.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deferred: Callable[[argparse.ArgumentParser], None] | None = None
        self._keep_argv = False

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred, self._keep_argv = add, True

    def _add_deferred(self) -> None:
        if self._deferred is not None:
            add, self._deferred = self._deferred, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_deferred()
        ns, extra = super().parse_known_args(args, namespace)
        if self._keep_argv:
            ns.argv = list(args or [])
        return ns, extra

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def run_label(path: str | Path) -> str:
    """``runs/a/best.safetensors`` -> ``a-best``: tells checkpoints apart in a table."""
    p = Path(path)
    return f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem


def checkpoint_dataset(meta: CheckpointMeta, source: str | Path, dataset: str | None = None,
                       data_dir: str | None = None, missing: str = "pass --dataset") -> datasets.Dataset:
    """The data a checkpoint is evaluated on, never downloaded.

    ``dataset`` (a flag) wins, without the run's dataset options; else the dataset the run trained on, with
    its options. The files come from ``data_dir`` (a flag), else from the folder the run was told to read,
    else (neither named one) from the default ``./data`` and its fallbacks.
    ``missing`` names the fix when neither names a dataset.
    """
    name = dataset or meta.dataset
    if not name:
        raise UserError(f"{source} does not name its dataset; {missing}")
    run_dir = meta.data_dir if meta.data_dir not in (None, datasets.DEFAULT_DATA_DIR) else None
    return datasets.load(name, data_dir if data_dir is not None else run_dir, download=False,
                         **({} if dataset else meta.data_options))


def add_file_argument(parser: argparse.ArgumentParser, dest: str, help: str) -> None:
    """The command's input file, as a positional argument or as ``--checkpoint FILE`` (as eval takes it)."""
    parser.add_argument(dest, nargs="?", help=help)
    parser.add_argument("--checkpoint", dest=f"{dest}_flag", metavar="FILE", help=f"the same as the positional {dest}")


def file_argument(args: argparse.Namespace, dest: str) -> str:
    """The file given positionally or with ``--checkpoint``; one of the two, once."""
    positional, flag = getattr(args, dest), getattr(args, f"{dest}_flag")
    if positional and flag and positional != flag:
        raise UserError(f"two files given ({positional} and --checkpoint {flag}); give one")
    if not (positional or flag):
        raise UserError(f"give the {dest} file: taylorat {args.command} FILE ... (or --checkpoint FILE)")
    return positional or flag

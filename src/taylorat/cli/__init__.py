"""Command line: ``taylorat train | eval | reproduce | landscape | export | import | plot | bench | demo``.

Each command is a module here with ``add_parser(subparsers)`` (its options) and ``run(args)`` (its work).
taylorat's own errors are one line (exit 2 for bad input, or the error's own code), and so are the failures of the
user's files, paths and machine: an operating-system error (exit 74, naming the path and the fix) and a file that
is not UTF-8 text, JSON or YAML (exit 2); any other exception keeps its traceback (exit 70).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

import torch
import yaml

from .. import __version__
from ..common import TayloratError, describe_os_error, first_line, load_plugins_from_env
from . import bench, demo, export, import_, landscape, plot, reproduce, train
from . import eval as eval_
from .shared import CommandParser, UserError

__all__ = ["EXIT_BUG", "EXIT_IO", "EXIT_USAGE", "UserError", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE: an internal error, printed with its traceback
EXIT_IO = 74  # EX_IOERR: the operating system refused a file (not found, permission, disk full, name too long, ...)
EXIT_INTERRUPTED = 130  # 128 + SIGINT

COMMANDS = (train, eval_, reproduce, landscape, export, import_, plot, bench, demo)  # the order of --help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorat", description="Randomized adversarial training via Taylor expansion")
    p.add_argument("--version", action="version", version=f"taylorat {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. taylorat's own errors (bad input, a missing dataset, a run directory that holds
    another run, a diverged loss) are one line; any other exception is a bug: its traceback is
    printed with a request to report it."""
    argv = sys.argv[1:] if argv is None else argv
    try:  # TAYLORAT_PLUGINS: the user's models, datasets, bases, attacks, before their names are listed
        load_plugins_from_env()
    except TayloratError as e:
        print(f"taylorat: {e.prefix}{e}", file=sys.stderr)
        return e.exit_code
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the options (`train CFG --resume optim.epochs=3`)
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except TayloratError as e:  # bad input, missing data, a diverged loss (3), a stop on a signal (128 + signal)
        hint = getattr(args, "data_dir_hint", None)
        msg = e.with_hint(hint) if hint and hasattr(e, "with_hint") else str(e)
        print(f"taylorat: {e.prefix}{msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("taylorat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the user's paths or machine: not found, a folder, permission, disk full, name too long
        print(f"taylorat: error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_IO
    except (MemoryError, RuntimeError) as e:  # out of GPU or CPU memory: a setting to change, not a bug
        if not out_of_memory(e):
            traceback.print_exc()
            return _bug()
        first = first_line(e)[:200]
        print(f"taylorat: error: out of memory in taylorat {args.command} ({type(e).__name__}: {first}); "
              f"{MEMORY_HINTS.get(args.command, 'use smaller batches')}", file=sys.stderr)
        return EXIT_USAGE
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:  # a file whose path was not known here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"taylorat: error: a file given to taylorat {args.command} is not readable text, JSON or YAML "
              f"({type(e).__name__}: {first[:200]}); check the files you gave", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - a bug: keep the traceback, ask for a report
        traceback.print_exc()
        return _bug()


def _bug() -> int:
    print(f"taylorat {__version__}: internal error (the traceback above); this is a bug in taylorat, please "
          "report it with the command you ran", file=sys.stderr)
    return EXIT_BUG


#: what to change when a command runs out of memory
MEMORY_HINTS = {
    "train": "lower optim.batch_size (in a new out_dir), or keep the batch and split it with optim.accumulate=K, "
             "or train with precision=bf16; the checkpoints written so far are intact",
    "eval": "lower --batch-size",
    "reproduce": "lower the study's batch sizes (base.optim.batch_size=..., evaluate.batch_size=...) or run fewer "
                 "runs at a time (--jobs 1); finished runs are kept",
    "bench": "lower --batch, or leave out the largest model",
}


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed: CUDA's OutOfMemoryError, or the CPU allocator's."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "CUDA out of memory" in text)

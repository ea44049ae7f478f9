"""``taylorat train``: train a model from a YAML config, or check the config with ``--dry-run``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", "-c", help="YAML config (default: CIFAR-10, PreAct ResNet-18, TRADES+1st+2nd)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.epochs=30")
    t.add_argument("--dry-run", action="store_true", help="validate and print the resolved config")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its last checkpoint")
    t.set_defaults(func=run, data_dir_hint="set data.data_dir=DIR")


def run(args: argparse.Namespace) -> int:
    # the trainer and the objectives load only for this command (`taylorat eval` never imports them)
    from ..train import distributed, load, train  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)
    from ..train.dryrun import dry_run  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)

    cfg = load(args.config, args.overrides)
    if args.dry_run:
        lines = dry_run(cfg, resume=args.resume)
        print(cfg.to_yaml(), end="")
        print(f"# resolved method: {json.dumps({'name': cfg.method.name, **cfg.resolved_method()})}")
        print("\n".join(f"# {line}" for line in lines))
        print("# config OK (dry run: nothing trained)")
        return 0
    result = train(cfg, resume=args.resume)
    best = result.best
    if best and distributed.from_env().main:  # under torchrun every rank returns here; one line
        print(f"best epoch {result.best_epoch}: {cfg.eval.select_on} clean {best['clean']:.2f}%, "
              f"PGD-{cfg.eval.steps} {best['pgd']:.2f}% -> {Path(cfg.out_dir) / 'best.safetensors'}")
    return 0

"""Command line: ``taylorat train | eval | demo``. Errors in input are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _train(args: argparse.Namespace) -> int:
    from .train import load, train

    cfg = load(args.config, args.overrides)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        print(f"# resolved method: {json.dumps({'name': cfg.method.name, **cfg.resolved_method()})}")
        print("# config OK (dry run: nothing trained)")
        return 0
    result = train(cfg, resume=args.resume)
    best = result.best
    if best:
        print(f"best epoch {result.best_epoch}: {cfg.eval.select_on} clean {best['clean']:.2f}%, "
              f"PGD-{cfg.eval.steps} {best['pgd']:.2f}% -> {Path(cfg.out_dir) / 'best.safetensors'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint as ckpt
    from . import data as datasets
    from .evaluate import evaluate, markdown_table, report_dict, write_report
    from .train.trainer import resolve_device

    device = resolve_device(args.device)
    model, meta = ckpt.load_model(args.checkpoint, device)
    run_cfg = meta.get("config", {})
    name = args.dataset or run_cfg.get("data", {}).get("dataset")
    if name is None:
        raise UserError(f"{args.checkpoint} does not name its dataset; pass --dataset")
    data_dir = args.data_dir or run_cfg.get("data", {}).get("data_dir", "./data")
    ds = datasets.load(name, data_dir, download=False, **run_cfg.get("data", {}).get("options", {}))
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    n = min(args.n, len(ds.test_y))
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    run_eval = run_cfg.get("eval", {})
    eps = args.eps if args.eps is not None else run_eval.get("eps", 0.031)
    step = args.step if args.step is not None else run_eval.get("step", 0.003 if eps == 0.031 else eps / 10)
    norm = args.norm or run_cfg.get("attack", {}).get("norm", "linf")
    torch.manual_seed(args.seed)
    res = evaluate(model, ds.test_x[:n], ds.test_y[:n], attacks=attacks, eps=eps, step=step,
                   norm=norm, batch_size=args.batch_size, seed=args.seed)
    report = report_dict(res, checkpoint=str(args.checkpoint), model=meta["model"]["name"], dataset=ds.name,
                         split="test", seed=args.seed, subset=f"first {n} test images")
    row = {"method": meta.get("method", {}).get("name", meta["model"]["name"]), **res.results}
    md = markdown_table([row], attacks) + (f"\n\n{ds.name} test, first {n} images, {norm} eps={eps:.4g}, "
                                           f"step {step:.4g}, seed {args.seed}")
    for w in res.warnings:
        md += f"\n\nWARNING: {w}"
    print(md)
    if args.out:
        write_report(args.out, report, md)
        print(f"report -> {Path(args.out) / 'report.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .reproduce.demo import run_demo

    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorat", description="Randomized adversarial training via Taylor expansion")
    p.add_argument("--version", action="version", version=f"taylorat {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", "-c", help="YAML config (default: CIFAR-10, PreAct ResNet-18, TRADES+1st+2nd)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.epochs=30")
    t.add_argument("--dry-run", action="store_true", help="validate and print the resolved config")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its last checkpoint")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: clean, PGD-20, CW-20 accuracy")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--attacks", default="clean,pgd20,cw20")
    e.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    e.add_argument("--eps", type=float, help="attack radius (default: the run's eval.eps, else 0.031)")
    e.add_argument("--step", type=float, help="attack step (default: the run's eval.step, else 0.003)")
    e.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="directory for report.json and report.md")
    e.set_defaults(func=_eval)

    d = sub.add_parser("demo", help="TRADES vs TRADES+1st+2nd on the embedded digits dataset (no download)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DatasetNotFoundError
    from .train import ConfigError, RunDirError, TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ConfigError, RunDirError, CheckpointError, DatasetNotFoundError, ValueError) as e:
        print(f"taylorat: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as e:
        print(f"taylorat: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("taylorat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

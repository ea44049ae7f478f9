"""``taylorat eval``: evaluate checkpoints (clean, PGD-20, CW-20, AutoAttack, transfer, RayS) into reports.

Imports nothing of ``taylorat.train`` or ``taylorat.objectives``: evaluating needs no trainer.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import data as datasets
from .. import models
from ..checkpoint import CheckpointMeta
from ..common import MissingDependency, atomic_folder, atomic_write_text, resolve_device
from ..evaluate import (
    available_attacks,
    check_dependencies,
    eps_from_run,
    evaluate,
    expand,
    markdown_table,
    report_dict,
    report_markdown,
    write_report,
)
from ..evaluate.figures import plot_report
from ..evaluate.registry import AA_EPS
from ..models import layouts
from .shared import UserError, checkpoint_dataset, run_label


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser("eval", help="evaluate checkpoints: clean, PGD-20, CW-20, AutoAttack, transfer, RayS")
    e.add_argument("--checkpoint", required=True, action="append", help="checkpoint to evaluate (repeatable)")
    e.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir", help="folder with the test set's files (default: the folder the run was given, "
                                       "else ./data and, for fashion_mnist, Debian's copy)")
    e.add_argument("--attacks", default="clean,pgd20,cw20",
                   help=f"comma-separated: {', '.join(available_attacks())} (default clean,pgd20,cw20)")
    e.add_argument("--n", type=int, default=1000,
                   help="first N test images (default 1000, as the reference's AutoAttack; 10000 = all of CIFAR, "
                        "as the reference's PGD/CW numbers)")
    e.add_argument("--eps", type=float, help="radius for every attack (default: the run's eval.eps when it is not the "
                                             "reference 0.031, else each attack's own: PGD/CW 0.031, AutoAttack 8/255)")
    e.add_argument("--attack-eps", action="append", metavar="NAME=EPS",
                   help="radius of one attack, e.g. --attack-eps aa=8/255 (repeatable; wins over --eps)")
    e.add_argument("--step", type=float, help="PGD/CW step (default: the run's eval.step, else 0.003 / 15/255)")
    e.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    e.add_argument("--arch", help="evaluate a plain state dict (safetensors, or .pt with --allow-pickle) in ours or a "
                                  "reference layout (TRADES, RobustBench, robust_overfitting) as this architecture")
    e.add_argument("--mean", help="with --arch: per-channel input mean to fold into the model, "
                                  "e.g. 0.4914,0.4822,0.4465")
    e.add_argument("--std", help="with --arch: per-channel input std, e.g. 0.2471,0.2435,0.2616")
    e.add_argument("--allow-pickle", action="store_true",
                   help="with --arch: read a .pt file with torch.load(weights_only=True) (tensors only)")
    e.add_argument("--surrogate", help="checkpoint the transfer examples are made on")
    e.add_argument("--cache-dir", help="where transfer examples are cached (default OUT/transfer_cache)")
    e.add_argument("--aa-version", choices=["standard", "reference"], default="standard",
                   help="AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square; RobustBench, the default) or reference "
                        "(the paper's eval_autoattack.py: APGD-CE + APGD-T, 2 restarts each)")
    e.add_argument("--rays-queries", type=int, default=10_000, help="RayS query budget per image")
    e.add_argument("--eot", type=int, help="gradient draws per step for a randomized model (PGD/CW average over them, "
                                           "AutoAttack runs its rand version); default: 20 when two forward passes "
                                           "disagree, else 1")
    e.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default, the reference) or bf16 autocast (recorded in the report)")
    e.add_argument("--batch-size", type=int, help="default 500 on GPU, 256 on CPU")
    e.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    e.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    e.add_argument("--out", help="directory for report.json and report.md")
    e.set_defaults(func=run, data_dir_hint="pass --data-dir DIR")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    check_dependencies(expand(attacks))  # a missing extra stops here, before any work
    per_attack = _attack_eps(args.attack_eps)
    device = resolve_device(args.device)
    surrogate, surrogate_id = None, ""
    if "transfer" in attacks:
        if not args.surrogate:
            raise UserError("--attacks transfer needs --surrogate CHECKPOINT (the model the examples are made on)")
        surrogate, _ = ckpt.load_model(args.surrogate, device)
        surrogate_id = hashlib.sha256(Path(args.surrogate).read_bytes()).hexdigest()[:16]
    rows, reports = [], []
    for path in args.checkpoint:
        model, meta = _load_for_eval(path, args, device)
        ds = checkpoint_dataset(meta, path, args.dataset, args.data_dir)
        norm, eps, step, radius = _threat(args, meta, ds.name)
        torch.manual_seed(args.seed)
        res = evaluate(model, ds, attacks, n=args.n, eps=eps, step=step, norm=norm, eps_by_attack=per_attack,
                       seed=args.seed, batch_size=args.batch_size, precision=args.precision, surrogate=surrogate,
                       surrogate_id=surrogate_id,
                       cache_dir=args.cache_dir or (Path(args.out) / "transfer_cache" if args.out else None),
                       rays_queries=args.rays_queries, eot=args.eot, aa_version=args.aa_version)
        report = report_dict(res, checkpoint=str(path), model=meta.model_name, dataset=ds.name, split="test",
                             seed=args.seed, method=meta.label, trained_epoch=meta.epoch)
        report["settings"].update({"radius": radius, "data": {"dataset": ds.name, **ds.provenance()}})
        md = report_markdown(report, meta.label)
        print(md + "\n")
        if args.out:
            out = Path(args.out) if len(args.checkpoint) == 1 else Path(args.out) / run_label(path)
            with atomic_folder(out) as tmp:  # report.json, .md and .png whole or not at all
                write_report(tmp, report, md)
                chart = _chart(report, tmp / "report.png", meta.label).replace(str(tmp), str(out))
            print(f"report -> {out / 'report.json'}, {out / 'report.md'}" + chart)
        rows.append({"method": f"{meta.label} ({run_label(path)})", **report["results"]})
        reports.append(report)
    if len(args.checkpoint) > 1:
        cols = list(dict.fromkeys(k for r in reports for k in r["results"]))
        table = markdown_table(rows, cols)
        print(table)
        if args.out:
            atomic_write_text(Path(args.out) / "summary.md", table + "\n")
    return 0


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r} is not comma-separated numbers (e.g. 0.4914,0.4822,0.4465)") from None


def _load_for_eval(path: str, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, CheckpointMeta]:
    """A taylorat checkpoint, or with ``--arch`` a plain state dict in ours or a reference layout."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a run folder, not a checkpoint; give one of its checkpoints, e.g. "
                        f"{Path(path) / 'best.safetensors'}")
    if args.arch is None:
        model, meta = ckpt.load_model(path, device)
        return model, CheckpointMeta.from_meta(meta)
    if not args.dataset:
        raise UserError("--arch needs --dataset (the dataset fixes the model's input shape and classes)")
    state = ckpt.read_foreign_state(path, allow_pickle=args.allow_pickle)
    if state and all(k.startswith(ckpt.MODEL_PREFIX) for k in state):  # a taylorat checkpoint's tensors
        state = {k[len(ckpt.MODEL_PREFIX):]: v for k, v in state.items()}
    channels, size, classes = datasets.geometry(args.dataset)
    mean, std = _floats(args.mean, "--mean"), _floats(args.std, "--std")
    if (mean is None) != (std is None):
        raise UserError("give both --mean and --std, or neither")
    norm = (mean, std) if mean is not None else layouts.normalization(state)
    model = models.create(args.arch, num_classes=classes, in_channels=channels, image_size=size,
                          **({"mean": norm[0], "std": norm[1]} if norm else {}))
    if mean is not None:  # the flags win over the file's own normalization buffers
        state = {k: v for k, v in state.items() if k not in ("mu", "sigma", "normalize.mean", "normalize.std")}
        state.update({"normalize.mean": model.normalize.mean, "normalize.std": model.normalize.std})
    dropped = ckpt.load_foreign_state(model, state, str(path))
    return model.to(device).eval(), CheckpointMeta.from_meta({
        "model": model.spec, "imported_from": str(path), "dropped_unused": dropped,
        "config": {"data": {"dataset": args.dataset}}})


def _chart(report: dict, path: Path, title: str) -> str:
    """Draw the report's chart; returns ``", PATH"`` or a note when matplotlib is missing."""
    try:
        plot_report(report, path, title)
    except MissingDependency as e:
        return f" (no chart: {e})"
    return f", {path}"


def _threat(args: argparse.Namespace, meta: CheckpointMeta, dataset: str
            ) -> tuple[str, float | None, float | None, dict[str, Any]]:
    """norm, eps, step and the radius's provenance: the flags, else the run's own per-epoch check (same norm),
    else (foreign weights, which record no radius) the dataset's conventional radius, else each attack's default.

    A run checked at the reference radius (l_inf 0.031), like a dataset whose conventional radius is 8/255
    (CIFAR, SVHN), is evaluated at every attack's own default (PGD-20 0.031, AutoAttack 8/255); any other
    radius (Fashion-MNIST's 0.1) is used by every attack.
    """
    run = meta.eval_settings
    norm = args.norm or run.norm
    run_eps, run_step = (run.eps, run.step) if norm == run.norm else (None, None)
    foreign = "imported_from" in meta.raw  # weights taylorat did not train (--arch, taylorat import)
    conventional = datasets.conventional_eps(dataset) if norm == "linf" and foreign else None
    if args.eps is not None:
        eps, source, why = args.eps, "flag", "--eps"
    elif run_eps is not None:
        eps, source = eps_from_run(norm, run_eps), "run"
        why = f"the run's per-epoch check radius (eval.eps {run_eps:.4g})"
    elif conventional is not None:
        eps = None if abs(conventional - AA_EPS[norm]) < 1e-9 else conventional
        source, why = "dataset", (f"assumed: the weights record no radius; {dataset}'s conventional l_inf radius "
                                  f"{conventional:.4g}" + (" (each attack's reference default: PGD/CW 0.031, "
                                                           "AutoAttack 8/255)" if eps is None else "")
                                  + "; pass --eps to choose another")
    else:
        eps, source, why = None, "default", ("assumed: the weights record no radius" + (
            " and the dataset declares none" if foreign else "") + "; each attack's own default; pass --eps to choose "
            "another")
    step = args.step if args.step is not None else (run_step if args.eps is None and eps is not None else None)
    return norm, eps, step, {"eps": eps, "source": source, "why": why}


def _attack_eps(items: list[str] | None) -> dict[str, float]:
    """``["aa=8/255", "pgd20=0.031"]`` -> ``{"aa": 0.0314, "pgd20": 0.031}``."""
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            num, _, den = value.partition("/")
            out[name.strip()] = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--attack-eps {item!r} is not NAME=EPS (e.g. aa=8/255)") from None
        if not 0 <= out[name.strip()] <= 1e3 or not name.strip():
            raise UserError(f"--attack-eps {item!r} is not NAME=EPS with EPS >= 0 (e.g. aa=8/255)")
    return out

"""``taylorat export``: a checkpoint for RobustBench (weights in its layout, model_info JSON, AutoAttack log),
as ONNX, or as a plain state dict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import checkpoint as ckpt
from ..common import resolve_device
from ..evaluate import evaluate, report_dict
from ..export import export
from .shared import UserError, add_file_argument, checkpoint_dataset, file_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ex = subparsers.add_parser("export", help="a checkpoint for RobustBench (weights in its layout, model_info JSON, "
                                              "AutoAttack log), as ONNX, or as a plain state dict")
    add_file_argument(ex, "checkpoint", "the taylorat checkpoint to export (.safetensors)")
    ex.add_argument("--format", required=True, choices=["robustbench", "onnx", "state-dict"],
                    help="robustbench (weights in its layout, model_info JSON, AutoAttack log), onnx, or state-dict "
                         "(plain safetensors)")
    ex.add_argument("--out", required=True, help="folder for the exported files")
    ex.add_argument("--report", help="robustbench: report.json of taylorat eval --attacks clean,aa (at 8/255); "
                                     "without it clean and AutoAttack run here on the first --n test images")
    ex.add_argument("--n", type=int, default=1000, help="robustbench without --report: test images (default 1000)")
    ex.add_argument("--name", help="file name stem (robustbench default: Jin2023Randomized)")
    ex.add_argument("--data-dir", help="robustbench without --report: the folder with the test set's files "
                                        "(default: where the run read them)")
    ex.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ex.set_defaults(func=run, data_dir_hint="pass --data-dir DIR")


def run(args: argparse.Namespace) -> int:
    args.checkpoint = file_argument(args, "checkpoint")
    report = None
    if args.report:
        try:
            report = json.loads(Path(args.report).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--report {args.report}: not a readable report.json ({str(e).splitlines()[0]})") from None
    elif args.format == "robustbench":
        report = _robustbench_eval(args)
    files = export(args.checkpoint, args.format, args.out, report=report, name=args.name)
    print(f"{args.checkpoint} -> " + ", ".join(str(f) for f in files))
    return 0


def _robustbench_eval(args: argparse.Namespace) -> dict:
    """Clean accuracy and AutoAttack at RobustBench's radius on the first --n test images, with the log."""
    model, raw = ckpt.load_model(args.checkpoint, resolve_device(args.device))
    meta = ckpt.CheckpointMeta.from_meta(raw)
    ds = checkpoint_dataset(meta, args.checkpoint, data_dir=args.data_dir,
                            missing="evaluate it first and pass --report")
    print(f"evaluating {args.checkpoint}: clean and AutoAttack on the first {args.n} test images")
    res = evaluate(model, ds, ["clean", "aa"], n=args.n, norm=meta.eval_settings.norm)
    return report_dict(res, checkpoint=str(args.checkpoint), model=meta.model_name, dataset=ds.name,
                       split="test", seed=0)

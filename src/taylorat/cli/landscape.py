"""``taylorat landscape``: loss surfaces around test images (paper Fig. 2) and weight-space flatness."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import checkpoint as ckpt
from ..analysis import flatness_report, landscape_report, pgd_attack
from ..common import as_float_images, resolve_device
from .shared import UserError, checkpoint_dataset, run_label


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ls = subparsers.add_parser("landscape", help="loss surfaces (paper Fig. 2) and weight-space flatness of "
                                                 "checkpoints")
    ls.add_argument("--checkpoint", required=True, action="append", help="checkpoint (repeatable: one row each)")
    ls.add_argument("--images", type=int, default=4, help="first N test images, the same for every checkpoint")
    ls.add_argument("--out", required=True, help="folder for the figures, landscapes.npz and the JSON numbers")
    ls.add_argument("--radius", type=float, help="grid half-width (default: twice the run's eval eps)")
    ls.add_argument("--steps", type=int, default=21, help="grid points per axis")
    ls.add_argument("--flatness", action="store_true", help="also weight-space flatness (Li et al. 2018)")
    ls.add_argument("--flatness-images", type=int, help="test images for the flatness curves (default 256)")
    ls.add_argument("--draws", type=int, default=5, help="random directions per relative size")
    ls.add_argument("--dataset", help="dataset name (default: the one the first checkpoint was trained on)")
    ls.add_argument("--data-dir", help="folder with the test set's files (default: where the run read them)")
    ls.add_argument("--seed", type=int, default=0, help="seed of the images' directions (default 0)")
    ls.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ls.set_defaults(func=run, data_dir_hint="pass --data-dir DIR")


def run(args: argparse.Namespace) -> int:
    """Surfaces of every checkpoint on the first checkpoint's test data, at its eval radius (``eval.eps``)."""
    if args.images < 1:
        raise UserError(f"--images must be >= 1, got {args.images}")
    device = resolve_device(args.device)
    models, metas = {}, []
    for path in args.checkpoint:
        model, raw = ckpt.load_model(path, device)
        meta = ckpt.CheckpointMeta.from_meta(raw)
        label = meta.label if meta.label not in models else f"{meta.label} ({run_label(path)})"
        models[label] = model
        metas.append(meta)
    ds = checkpoint_dataset(metas[0], args.checkpoint[0], args.dataset, args.data_dir)
    n = args.images if args.flatness_images is None else max(args.images, args.flatness_images)
    x = as_float_images(ds.test_x[:n], device)
    y = ds.test_y[:n].to(device)
    run_eval = metas[0].eval_settings
    eps = 0.031 if run_eval.eps is None else run_eval.eps
    radius = args.radius if args.radius is not None else 2 * eps
    out = Path(args.out)
    rep = landscape_report(models, x[: args.images], y[: args.images], radius=radius, steps=args.steps,
                           seed=args.seed, out_dir=out)
    print(f"landscape ({len(models)} checkpoints x {args.images} images, radius {radius:.4g}) -> "
          f"{out / 'landscape.png'}")
    for label, summ in rep["models"].items():
        mean = summ["mean"]
        print(f"  {label}: mean loss over the grid {mean['mean_loss']:.3f}, flatness (mean |L - L(0,0)|) "
              f"{mean['flatness']:.3f}, grid accuracy {100 * mean['grid_accuracy']:.1f}%")
    if args.flatness:
        m = args.flatness_images or 256
        attack = pgd_attack(eps=eps, step=eps / 10 if run_eval.step is None else run_eval.step, steps=10,
                            seed=args.seed)
        fl = flatness_report(models, x[:m], y[:m], draws=args.draws, seed=args.seed, out_dir=out, attack=attack)
        print(f"weight-space flatness ({m} images, {args.draws} draws) -> {out / 'flatness.png'}")
        for label, summ in fl["models"].items():
            print(f"  {label}: expected clean-loss increase at alpha={summ['score_alpha']}: "
                  f"{summ['loss_increase']:.4f} ± {summ['loss_increase_std']:.4f}"
                  + (f"; PGD loss increase {summ['adv_loss_increase']:.4f}" if "adv_loss_increase" in summ else ""))
    return 0

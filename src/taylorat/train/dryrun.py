"""What ``taylorat train --dry-run`` checks before a real run would start: everything that fails early.

The config (keys, types, ranges, the model and dataset names), the model (built on the meta
device: its parameter count for the dataset's geometry), where the dataset's files would be
found, the learning-rate schedule, the speed switches as they resolve on this machine, and the
output folder. Each check that a real run would refuse raises its one-line error.
"""

from __future__ import annotations

import torch

from .. import data as datasets
from .. import models
from ..common import resolve_device
from .config import Config
from .init_weights import build_model
from .schedule import describe, schedule_warning
from .speed import resolve_channels_last
from .trainer import RunDirError, check_run_dir, run_dir_state


def dry_run(cfg: Config, resume: bool = False) -> list[str]:
    """Lines describing the run ``cfg`` would be; raises what the real run would raise first."""
    d, o = cfg.data, cfg.optim
    channels, size, classes = datasets.geometry(d.dataset, **d.options)
    options = {} if cfg.model.activation == "relu" else {"activation": cfg.model.activation}
    with torch.device("meta"):
        model = models.create(cfg.model.name, num_classes=classes, in_channels=channels, image_size=size, **options)
    init = None  # a checkpoint to start from: read and fitted to the model as the run would
    if cfg.model.init is not None:
        init = build_model(cfg.model.name, classes, channels, size, cfg.model.init, cfg.model.init_head,
                           **options)[1]
    x = d.extra
    pool = datasets.open_pool(x.path, channels, size, classes) if x.path else None
    params = sum(p.numel() for p in model.parameters())
    where = datasets.locate(d.dataset, d.data_dir, d.download)
    device = resolve_device(cfg.device)
    problem = check_run_dir(cfg, resume)
    if problem:
        raise RunDirError(problem)
    cl, why = resolve_channels_last(cfg.channels_last, model, device)
    lines = [f"model: {cfg.model.name}, {params:,} parameters for {channels}x{size}x{size} inputs, {classes} classes",
             f"data: {d.dataset} ({where}); train_subset {d.train_subset}, holdout {d.holdout}",
             f"schedule: {o.epochs} epoch{'s' if o.epochs != 1 else ''}, {describe(o)}"
             + (f"; {o.accumulate} micro-batches per step" if o.accumulate > 1 else ""),
             f"device: {device}; precision {cfg.precision}, channels_last {cfg.channels_last} -> "
             f"{'on' if cl else 'off'} ({why}), compile {cfg.compile}",
             f"out_dir: {run_dir_state(cfg)}"]
    if init is not None:
        lines.insert(1, f"init: the weights of {init['path']} (sha256 {init['sha256'][:12]}...)"
                        + (", a new head" if init["head"] == "new" else ""))
    if pool is not None:
        per = datasets.extra_count(x.fraction, o.batch_size)
        lines.insert(2, f"extra data: {x.path} ({len(pool):,} images, {pool.nbytes / 2**20:.1f} MiB), "
                        f"{per} of every {o.batch_size} images")
    lines.append(check_cost(cfg, datasets.train_size(d.dataset, **d.options)))
    warning = schedule_warning(o.epochs, o.milestones) if o.schedule == "step" else None
    if warning:
        lines.append(f"WARNING: {warning}")
    return lines


def check_cost(cfg: Config, n_images: int) -> str:
    """The per-epoch check's cost beside an epoch's training, counted in image passes (forward + backward).

    Training: ``n_train * (attack.steps + 2)`` (the attack's steps, the clean and adversarial passes);
    the check: ``eval.n * (eval.steps + 1)`` (PGD's steps and the clean pass), every ``eval.every`` epochs.
    """
    d, e, a = cfg.data, cfg.eval, cfg.attack
    n_train = d.train_subset or max(1, n_images - (d.holdout if e.select_on == "holdout" else 0))
    checked = min(e.n, d.holdout) if e.select_on == "holdout" else e.n
    ratio = checked * (e.steps + 1) / (n_train * (a.steps + 2) * e.every)
    line = (f"per-epoch check: PGD-{e.steps} on {checked:,} {e.select_on} images every "
            f"{'epoch' if e.every == 1 else f'{e.every} epochs'}, about {ratio:.0%} of an epoch's training cost")
    if ratio > 0.5:
        line += (f"; to make it cheaper lower eval.n (e.g. eval.n={max(100, checked // 4)}) or raise eval.every")
    return line

"""A whole training epoch as the trainer runs it, and the same epoch with an extra pool mixed in.

``--epoch`` times data pipeline + steps + the per-epoch PGD-20 check. ``--extra-pool N`` also
trains that epoch with an N-image synthetic pool at ``--extra-fraction`` of every batch, once with
the pool on the device and once streamed from its memory map (``data.extra.on_device`` true /
false), alternating over ``--extra-rounds`` rounds: the median over rounds of streamed ÷ on-device is the
cost of streaming.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..train import from_dict
from ..train.trainer import Trainer
from .timing import sync

SHAPES = {"small_cnn": (1, 28), "default": (3, 32)}
POOL_ROUNDS = 3  # default rounds of alternating on-device / streamed epochs per case (--extra-rounds)


def _epoch_config(out: str, model_name: str, method: str, precision: str, args: argparse.Namespace, batch: int,
                  steps: int, n_check: int, channels_last: bool, extra: dict | None) -> dict:
    channels, size = SHAPES.get(model_name, SHAPES["default"])
    base, _, minimizer = method.partition(" + ")  # "trades+1st+2nd + sam": a method with a minimizer
    original = batch - (round(extra["fraction"] * batch) if extra else 0)  # per step; the rest from the pool
    data = {"dataset": "synthetic", "holdout": n_check,
            "options": {"n_train": steps * original + n_check, "n_test": 10, "channels": channels, "image_size": size}}
    if extra:
        data["extra"] = extra
    return {"out_dir": out, "device": args.device, "precision": precision, "progress": False,
            "checkpoints": "none", "channels_last": channels_last, "compile": args.compile, "log_every": 50,
            "curves": False, "data": data, "model": {"name": model_name}, "method": {"name": base},
            "minimizer": {"name": minimizer, "warmup": 0} if minimizer else {},
            "attack": {"steps": args.steps}, "optim": {"epochs": 1, "batch_size": batch}, "eval": {"n": n_check}}


def _run_epoch(cfg: dict, check: bool) -> tuple[float, float]:
    """Seconds of training one epoch, and of training plus the per-epoch check when ``check``."""
    trainer = Trainer(from_dict(cfg), log=lambda s: None)
    trainer.prepare_run_dir(False)
    device = trainer.device
    sync(device)
    t = time.perf_counter()
    trainer.train_epoch(1)
    sync(device)
    t_train = time.perf_counter() - t
    if check:
        trainer.evaluate()
        sync(device)
    return t_train, time.perf_counter() - t


def epoch_time(model_name: str, method: str, precision: str, args: argparse.Namespace, batch: int, steps: int,
               n_check: int, step_ms: float, channels_last: bool = False) -> dict:
    """One epoch as the trainer runs it: device-resident data with crop/flip, the steps, the PGD-20 check."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _epoch_config(tmp + "/run", model_name, method, precision, args, batch, steps, n_check,
                            channels_last, None)
        t_train, t_all = _run_epoch(cfg, check=True)
    return {"epoch_steps": steps, "epoch_check_images": n_check, "epoch_train_s": round(t_train, 3),
            "epoch_s": round(t_all, 3), "epoch_vs_steps": round(t_all / (steps * step_ms / 1000), 3)}


def write_pool(path: Path, n: int, channels: int, size: int, seed: int = 0) -> None:
    """A synthetic extra pool in the ``data.extra`` layout: ``image`` uint8 N×H×W×C, ``label`` int64 N."""
    rng = np.random.default_rng(seed)
    np.savez(path, image=rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
             label=rng.integers(0, 10, n))


def pool_epoch_times(model_name: str, method: str, precision: str, args: argparse.Namespace, batch: int,
                     steps: int, channels_last: bool = False) -> dict:
    """Training-epoch seconds with the pool on the device and streamed, and the median ratio of the two."""
    channels, size = SHAPES.get(model_name, SHAPES["default"])
    times: dict[str, list[float]] = {"true": [], "false": []}
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.npz"
        write_pool(pool, args.extra_pool, channels, size)
        for r in range(args.extra_rounds):
            for on_device in ("true", "false"):
                extra = {"path": str(pool), "fraction": args.extra_fraction, "on_device": on_device}
                cfg = _epoch_config(f"{tmp}/run{r}{on_device}", model_name, method, precision, args, batch, steps,
                                    16, channels_last, extra)  # a check is configured, not run
                times[on_device].append(_run_epoch(cfg, check=False)[0])
    ratio = statistics.median(s / d for s, d in zip(times["false"], times["true"]))
    return {"extra_pool_images": args.extra_pool, "extra_fraction": args.extra_fraction,
            "extra_epoch_steps": steps, "pool_on_device_train_s": round(min(times["true"]), 3),
            "pool_streamed_train_s": round(min(times["false"]), 3), "pool_streamed_ratio": round(ratio, 4),
            "pool_rounds": args.extra_rounds}

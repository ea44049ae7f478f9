"""How long a study would train on this machine, from a short measurement (``reproduce --dry-run``).

One training step of the first run's model and method is timed (after a warm-up step, at the
full batch when that is quick, else at a small one scaled up) on random images of the dataset's
shape, and so is PGD-20 on a few images; an epoch
is then ``ceil(n_train / B)`` steps (scaled from the measured batch to B) plus the per-epoch check
(the selection split and any tracked images, PGD-20 each). The final evaluation — AutoAttack
above all — comes on top and is not estimated.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .. import data as datasets
from .. import models
from ..attacks import PGD, correct_mask
from ..common import resolve_device
from ..train import Config
from ..train.step import train_step
from ..train.trainer import build_method, build_minimizer


@dataclass
class Estimate:
    step_seconds: float  # one training step at the config's batch size (scaled from the measured one)
    image_check_seconds: float  # PGD-20 (+ the clean pass) on one image
    measured_batch: int
    device: str

    def run_seconds(self, cfg: Config) -> float:
        d, e = cfg.data, cfg.eval
        n_train = d.train_subset or datasets.train_size(d.dataset, **d.options) - d.holdout
        checks = math.ceil(cfg.optim.epochs / e.every)
        n_check = min(e.n, d.holdout if e.select_on == "holdout" else 10**9) + e.track_test + e.track_train
        return (cfg.optim.epochs * math.ceil(n_train / cfg.optim.batch_size) * self.step_seconds
                + checks * n_check * self.image_check_seconds * (e.steps + 1) / 21)


def measure(cfg: Config, batch: int = 8, budget_s: float = 20.0) -> Estimate:
    """Time one training step and PGD-20 per image for ``cfg``'s model and method on its device.

    A step at ``batch`` images first; when the full batch would take less than ``budget_s``, the
    full batch is timed too (small batches underuse a machine, so scaling them up overestimates).
    """
    device = resolve_device(cfg.device)
    channels, size, classes = datasets.geometry(cfg.data.dataset, **cfg.data.options)
    torch.manual_seed(0)
    model = models.create(cfg.model.name, num_classes=classes, in_channels=channels, image_size=size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    method = build_method(cfg)
    minimizer = build_minimizer(cfg, model)
    gen = torch.Generator(device=device).manual_seed(0)

    def timed_step(b: int) -> float:
        x = torch.rand(b, channels, size, size, device=device)
        y = torch.randint(0, classes, (b,), device=device)
        seconds = []
        for _ in range(2):  # the first is a warm-up
            t = time.perf_counter()
            train_step(model, opt, method, x, y, generator=gen, precision=cfg.precision, minimizer=minimizer)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - t)
        return seconds[-1]

    full = cfg.optim.batch_size
    b = min(batch, full)
    step = timed_step(b) * full / b
    if b < full and step < budget_s:
        b, step = full, timed_step(full)
    n = min(b, 64)
    x = torch.rand(n, channels, size, size, device=device)
    y = torch.randint(0, classes, (n,), device=device)
    attack = PGD(model, eps=cfg.eval.eps, step=cfg.eval.step, steps=20, norm=cfg.attack.norm)
    t = time.perf_counter()
    correct_mask(model, x, y, attack, n)
    return Estimate(step, (time.perf_counter() - t) / n, b, str(device))


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"

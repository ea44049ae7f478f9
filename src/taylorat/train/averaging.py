"""Weight averaging for adversarial training: EMA of the weights after every step, or SWA.

* ``ema``: ``w̄ ← d·w̄ + (1−d)·w`` after every optimizer step (decay ``d``, e.g. 0.999); with
  ``ema_warmup`` the decay of the ``t``-th update (0-based; the first copies ``w``) is
  ``min(d, (1 + t) / (10 + t))``, as the code of Wang et al. 2023, so that the early average
  forgets its random start quickly;
* ``swa``: ``w̄`` = the equal average of the weights at the end of every epoch from
  ``swa_start·E`` on (Izmailov et al. 2018; Chen et al. 2021 for adversarial training).

BatchNorm statistics of ``w̄`` are not averaged: before ``w̄`` is evaluated or saved they are
recomputed with one pass of the clean training images (``torch.optim.swa_utils.update_bn``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from ..common import InputError

KINDS = ("none", "ema", "swa")


class WeightAverage:
    def __init__(self, model: nn.Module, kind: str, epochs: int, ema_decay: float = 0.999, swa_start: float = 0.5,
                 ema_warmup: bool = False):
        if kind not in ("ema", "swa"):
            raise InputError(f"weight averaging must be ema or swa, got {kind!r}")
        self.kind = kind
        self.first_epoch = max(1, math.ceil(swa_start * epochs)) if kind == "swa" else 1
        self.ema_decay, self.ema_warmup = ema_decay, bool(ema_warmup) and kind == "ema"
        self.updates: int | None = None  # updates so far (read from the average once, then counted here)
        self.decay = ema_decay
        fn = (self._warm_ema if self.ema_warmup else get_ema_multi_avg_fn(ema_decay)) if kind == "ema" else None
        self.avg = AveragedModel(model, multi_avg_fn=fn, use_buffers=False)

    def _warm_ema(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        """The EMA update with this update's decay (``self.decay``, set by :meth:`after_step`)."""
        with torch.no_grad():
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay)

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class as the trained one)."""
        return self.avg.module

    @property
    def ready(self) -> bool:
        return int(self.avg.n_averaged.item()) > 0

    def after_step(self, model: nn.Module) -> None:
        if self.kind == "ema":
            if self.ema_warmup:
                if self.updates is None:
                    self.updates = int(self.avg.n_averaged.item())
                t = self.updates
                self.decay = min(self.ema_decay, (1 + t) / (10 + t))
                self.updates += 1
            self.avg.update_parameters(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if self.kind == "swa" and epoch >= self.first_epoch:
            self.avg.update_parameters(model)

    def recompute_bn(self, batches: Iterable) -> None:
        """BatchNorm running statistics of the averaged weights from clean training batches."""
        was = self.module.training
        update_bn(batches, self.module)
        self.module.train(was)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"avg.{k}": v for k, v in self.avg.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("avg.")}
        if state:
            self.avg.load_state_dict(state, strict=True)
            self.updates = None

"""Weight averaging for adversarial training: EMA of the weights after every step, or SWA.

* ``ema``: ``w̄ ← d·w̄ + (1−d)·w`` after every optimizer step (decay ``d``, e.g. 0.999);
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
    def __init__(self, model: nn.Module, kind: str, epochs: int, ema_decay: float = 0.999, swa_start: float = 0.5):
        if kind not in ("ema", "swa"):
            raise InputError(f"weight averaging must be ema or swa, got {kind!r}")
        self.kind = kind
        self.first_epoch = max(1, math.ceil(swa_start * epochs)) if kind == "swa" else 1
        fn = get_ema_multi_avg_fn(ema_decay) if kind == "ema" else None
        self.avg = AveragedModel(model, multi_avg_fn=fn, use_buffers=False)

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class as the trained one)."""
        return self.avg.module

    @property
    def ready(self) -> bool:
        return int(self.avg.n_averaged.item()) > 0

    def after_step(self, model: nn.Module) -> None:
        if self.kind == "ema":
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

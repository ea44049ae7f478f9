"""The clean and the adversarial train-mode forward pass of one step, as one module call."""

from __future__ import annotations

import torch
from torch import nn

from ..common import InputError
from .bn_passes import check_sequence, reference_passes


class PairForward(nn.Module):
    """``(x, x') -> (z, h, z', h')``: one train-mode pass for each input, clean first as TRADES.

    One module call per step, so that DistributedDataParallel sees the step as one forward.
    ``clean=False`` skips the clean pass (plain AT) and returns ``None`` for ``z, h``.
    ``bn_passes`` (e.g. ``"cac"``): BatchNorm running statistics end as after that reference
    sequence of train-mode passes, still with two passes (:mod:`~taylorat.objectives.bn_passes`).
    """

    def __init__(self, model: nn.Module, clean: bool = True, bn_passes: str | None = None):
        super().__init__()
        self.model = model
        self.clean = clean
        self.bn_passes = bn_passes
        if bn_passes is not None:
            check_sequence(bn_passes)
            if not clean:
                raise InputError("bn_passes needs the clean pass")

    def forward(self, x: torch.Tensor, x_adv: torch.Tensor):
        z = h = None
        with reference_passes(self.model, self.bn_passes) as rp:
            if self.clean:
                if rp is not None:
                    rp.before("c")
                h = self.model.forward_features(x)
                z = self.model.head(h)
            if rp is not None:
                rp.before("a")
            ha = self.model.forward_features(x_adv)
            za = self.model.head(ha)
        return z, h, za, ha

"""The clean and the adversarial train-mode forward pass of one step, as one module call."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..common import InputError
from ..models.adapters import DDP_HINT, adapt
from .bn_passes import check_sequence, reference_passes


class PairForward(nn.Module):
    """``(x, x') -> (z, h, z', h')``: one train-mode pass for each input, clean first as TRADES.

    ``model``: a taylorat model, or any model :func:`taylorat.models.adapt` understands (timm, a
    torchvision classifier). Under data parallelism wrap *this* module in DDP and give its outputs to
    ``*_from_outputs`` (README, "Your own loop").

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
        m = adapt(self.model, x)  # the model itself, or a timm / torchvision model as features + head
        with reference_passes(self.model, self.bn_passes) as rp:
            if self.clean:
                if rp is not None:
                    rp.before("c")
                h = m.forward_features(x)
                z = m.head(h)
            if rp is not None:
                rp.before("a")
            ha = m.forward_features(x_adv)
            za = m.head(ha)
        return z, h, za, ha


def refuse_bypassed_ddp(model: nn.Module) -> None:
    """One-line error for the two ways a loss that runs its own forward passes breaks data parallelism.

    A DDP-wrapped model has no features and head to give; its ``.module`` runs, but outside DDP's
    forward its gradients are never all-reduced. The right way: ``DDP(PairForward(model))`` and
    ``*_from_outputs`` on its outputs.
    """

    if isinstance(model, (DDP, nn.DataParallel)):
        raise InputError(DDP_HINT)
    if (model.training and torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1 and DDP._get_active_ddp_module() is None):
        raise InputError("this loss runs its own forward passes outside DistributedDataParallel, so the "
                         "gradients of the ranks would not be averaged; " + DDP_HINT.split(": ", 1)[1])

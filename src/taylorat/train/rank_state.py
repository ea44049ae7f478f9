"""Each rank's own state in a data-parallel run's ``last`` checkpoint: its buffers (BatchNorm statistics
without ``sync_bn``) and attack generator, gathered on rank 0 as ``rankR.*`` tensors and taken back by rank R
on resume, so that a resumed run is the uninterrupted one bit for bit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import checkpoint as ckpt
from . import distributed

if TYPE_CHECKING:
    from .trainer import Trainer


def restore(t: Trainer, saved: dict[str, torch.Tensor]) -> None:
    """Rank r > 0 takes back its own buffers and attack generator (``rankR.*``) from ``last``."""
    prefix = f"rank{t.dist.rank}."
    if not t.dist.enabled or t.dist.main or not saved:
        return
    own = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    buffers = dict(t.model.named_buffers())
    for k, v in own.items():
        if k.startswith(ckpt.MODEL_PREFIX) and k[len(ckpt.MODEL_PREFIX):] in buffers:
            buffers[k[len(ckpt.MODEL_PREFIX):]].copy_(v)
    if "rng.attack" in own:
        t.partial_rng = own["rng.attack"]


def gather(t: Trainer, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Every rank's buffers (and attack generator) on rank 0 as ``rankR.*`` tensors; empty elsewhere.

    Called on every rank. Without ``sync_bn`` each rank's BatchNorm statistics are its own; the attack
    generators are saved too, should the ranks ever draw differently.
    """
    if not t.dist.enabled:
        return {}
    mine = {f"{ckpt.MODEL_PREFIX}{k}": v.detach().cpu() for k, v in t.model.named_buffers()}
    if gen is not None:
        mine["rng.attack"] = gen.get_state()
    every = distributed.all_gather_object(mine, t.dist)
    if not t.dist.main:
        return {}
    return {f"rank{r}.{k}": v for r, state in enumerate(every) if r > 0 for k, v in state.items()}

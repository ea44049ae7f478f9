"""One training step, shared by the trainer and the benchmarks.

``x' = method.perturb(...)`` (eval mode, randomized weights), optionally AWP's ``v`` from a
proxy, then the loss on ``w (+ v)`` from one forward pass per input, backward, restore ``w``
exactly, optimizer step, weight-average update. Under ``precision="bf16"`` the attack and the
loss run under bf16 autocast (the statistics of the Taylor terms and the losses stay float32).
"""

from __future__ import annotations

import torch
from torch import nn

from ..objectives import AWP, LossParts, Method


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    method: Method,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    awp: AWP | None = None,
    average=None,
) -> LossParts:
    """One step of adversarial training on the batch ``(x, y)``; returns the loss and its parts."""
    autocast = autocast_for(x.device, precision)
    with autocast:
        x_adv = method.perturb(model, x, y, generator=generator)
        v = awp.perturbation(model, lambda m: method.loss(m, x, x_adv, y, taylor=False).loss) if awp else None
    with AWP.applied(model, v):  # the loss on w + v, its gradient applied to w
        with autocast:
            parts = method.loss(model, x, x_adv, y)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
    opt.step()
    if average is not None:
        average.after_step(model)
    return parts

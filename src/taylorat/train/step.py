"""One training step, shared by the trainer and the benchmarks.

``x' = method.perturb(...)`` (eval mode, randomized weights), then the loss from one forward pass
per input and its gradient — at ``w``, or through a minimizer at perturbed weights (SAM, ASAM,
AWP: :mod:`taylorat.objectives.minimizers`; ``w`` restored exactly) — optimizer step,
weight-average update. Under ``precision="bf16"`` the attack and the
loss run under bf16 autocast (the statistics of the Taylor terms and the losses stay float32).

With ``compile`` on, the loss from the two passes' outputs (base loss, head statistics, soft
targets, Taylor KL terms: hundreds of small operators) is compiled too (:func:`compiled_loss`), so
that it runs as a few fused kernels instead of one launch per operator between the forward and
the backward pass.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..common import InputError
from ..objectives import LossParts, Method, Minimizer, PairForward
from .distributed import Dist, weighted_mean

SINGLE = Dist()  # one process


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    if precision not in ("fp32", "bf16"):
        raise InputError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compiled_loss(method: Method, mode: str) -> Callable[..., LossParts]:
    """``torch.compile(method.loss_from_outputs)``; under ``reduce-overhead`` (CUDA graphs for the model)
    the loss is compiled without CUDA graphs (``default``), as is ``max-autotune``'s."""
    loss_mode = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)
    return torch.compile(method.loss_from_outputs, mode=loss_mode)


def compile_for_training(model: nn.Module, method: Method, mode: str) -> Callable[..., LossParts] | None:
    """The ``compile`` switch: compiles ``model.forward_features`` in place and returns the compiled loss
    for :func:`train_step` (None and nothing compiled for ``mode="none"``)."""
    if mode == "none":
        return None
    model.forward_features = torch.compile(model.forward_features, mode=mode)
    return compiled_loss(method, mode)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    method: Method,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    minimizer: Minimizer | None = None,
    average=None,
    pair: nn.Module | None = None,
    rows: tuple[int, int, int] | None = None,
    dist: Dist = SINGLE,
    global_stats: bool = False,
    loss_from_outputs: Callable[..., LossParts] | None = None,
) -> LossParts:
    """One step of adversarial training on the batch ``(x, y)``; returns the loss and its parts.

    Data-parallel (``dist.enabled``): ``(x, y)`` are rows ``rows = (lo, hi, B)`` of the global
    batch, ``pair`` is the DDP-wrapped :class:`PairForward`; the loss is scaled by
    ``world · b / B`` so that DDP's gradient average is the global-batch mean; AWP's proxy
    gradient and (``global_stats``) the Taylor head statistics are averaged the same way.
    ``loss_from_outputs`` replaces ``method.loss_from_outputs`` (a :func:`compiled_loss`), except where the
    head statistics are all-reduced across ranks (``global_stats``), which stays eager.
    """
    autocast = autocast_for(x.device, precision)
    weight = (rows[1] - rows[0]) / rows[2] if rows is not None else 1.0  # b / B
    reduce = (lambda g: weighted_mean(g, weight, dist)) if dist.enabled else None
    if pair is None:
        pair = PairForward(model, method.needs_clean_pass(), method.bn_passes())
    with autocast:
        x_adv = method.perturb(model, x, y, generator=generator, rows=rows)

    def outer() -> LossParts:  # the clean and adversarial passes and the loss, at the current weights
        with autocast:
            outputs = pair(x, x_adv)
            if loss_from_outputs is None or (global_stats and reduce is not None):
                return method.loss_from_outputs(outputs, y, stats_reduce=reduce if global_stats else None)
            return loss_from_outputs(outputs, y)

    def backward(parts: LossParts) -> None:
        opt.zero_grad(set_to_none=True)
        (parts.loss * (dist.world * weight) if dist.enabled else parts.loss).backward()

    if minimizer is None:
        parts = outer()
        backward(parts)
    else:
        parts = minimizer.step(model, outer, backward, autocast=autocast, grad_reduce=reduce,
                               base_loss=lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    opt.step()
    if average is not None:
        average.after_step(model)
    return parts

"""Adversarial weight perturbation (Wu et al., NeurIPS 2020), as the AWP-TRADES reference code (docs/method.md §6).

After the adversarial batch is found, a proxy copy of the model (so the model's BatchNorm
statistics are untouched) takes one gradient-ascent step on the base loss without Taylor
terms (TRADES: ``CE + β·KL``); for every weight matrix / kernel (parameters named ``weight``
with more than one dimension) the perturbation is

``v_l = γ · ||w_l|| · g_l / ||g_l||``,  ``g_l = ∂L/∂w_l`` at the proxy,

which equals the reference's one SGD step rescaled per layer (the step's learning rate cancels).
The training loss is then computed on ``w + v`` and its gradient applied to ``w``: the weights
are restored bit-exactly (copied back) before the optimizer step. The reference instead steps
on ``w + v`` and subtracts ``v`` afterwards, which differs only by weight decay evaluated at
``w + v`` (lr · wd · γ‖w‖, below 1e-6 relative) and floating-point drift.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..common import InputError
from .bases import register_base
from .trades import Trades

EPS = 1e-20


def perturbed_names(model: nn.Module) -> list[str]:
    """The parameters AWP perturbs: weights with more than one dimension (conv kernels, linear maps)."""
    return [n for n, p in model.named_parameters() if p.dim() > 1 and "weight" in n]


class AWP:
    """Holds the proxy model; ``perturbation(...)`` returns ``{name: v}``, ``applied(model, v)`` uses it."""

    def __init__(self, model: nn.Module, gamma: float = 0.005, warmup: int = 10):
        if not gamma >= 0:
            raise InputError(f"minimizer.gamma must be >= 0, got {gamma}")
        self.gamma, self.warmup = gamma, warmup
        self.proxy = copy.deepcopy(model)
        self.names = perturbed_names(model)

    def active(self, epoch: int) -> bool:
        """The reference applies AWP from epoch ``warmup`` on (1-based epochs)."""
        return self.gamma > 0 and epoch >= self.warmup

    def perturbation(self, model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                     grad_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``v`` for the current batch: ``loss_fn(proxy)`` is the base loss on the proxy (train mode).

        ``grad_reduce`` averages the proxy gradient over data-parallel ranks (global batch).
        """
        proxy = self.proxy
        proxy.load_state_dict(model.state_dict())
        proxy.train()
        params = dict(proxy.named_parameters())
        targets = [params[n] for n in self.names]
        grads = torch.autograd.grad(loss_fn(proxy), targets)
        own = dict(model.named_parameters())
        out = {}
        with torch.no_grad():
            for name, g in zip(self.names, grads):
                g = grad_reduce(g) if grad_reduce is not None else g
                w = own[name]
                out[name] = g * (self.gamma * w.norm() / (g.norm() + EPS))
        return out

    @staticmethod
    @contextmanager
    def applied(model: nn.Module, v: dict[str, torch.Tensor] | None) -> Iterator[nn.Module]:
        """Inside: weights ``w + v``; on exit exactly ``w`` again (copied back, gradients kept)."""
        if not v:
            yield model
            return
        params = dict(model.named_parameters())
        saved = {}
        with torch.no_grad():
            for name, d in v.items():
                saved[name] = params[name].detach().clone()
                params[name].add_(d)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, s in saved.items():
                    params[name].copy_(s)


@register_base("awp-trades")
class AWPTrades(Trades):
    """AWP-TRADES (Wu et al. 2020): TRADES with the ``awp`` minimizer (``minimizer.name=awp``,
    :mod:`~taylorat.objectives.minimizers`) and no weight noise, as its reference."""

    noise_std = 0.0
    default_minimizer = "awp"

    def bn_passes(self, compat: str, taylor: bool) -> str | None:
        return None  # the AWP reference runs one clean and one adversarial pass, as taylorat

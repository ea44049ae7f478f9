"""One projected-gradient attack core for training and evaluation.

For a loss ``L`` maximised over the threat set ``S = {x' : ||x' - x||_p <= eps, x' in [0,1]^d}``:

* l_inf:  ``x' <- Π_S(x' + step * sign(∇_x' L))``
* l_2:    ``x' <- Π_S(x' + step * ∇_x' L / ||∇_x' L||_2)``  (per example)

The projection clips to the eps-ball around ``x`` and then to ``[0,1]`` (``projection=
"ball_then_box"``); ``"box_then_ball"`` clips to ``[0,1]`` first and then rescales into the ball,
as TRADES' ℓ2 attack code does (identical for ℓ∞; both stay in S). Losses (summed over
the batch; the sum only rescales the gradient of each example):

* ``"ce"``:  cross-entropy ``CE(f(x'), y)`` (Madry et al. 2018; PGD-20 evaluation)
* ``"kl"``:  TRADES' ``KL(p ‖ softmax f(x'))`` with ``p`` the clean prediction, a constant
* ``"cw"``:  Carlini-Wagner margin ``-max(z_y - max_{j≠y} z_j + κ, 0)`` (CW-20 evaluation)

Random starts: ``"uniform"`` (uniform in the l_inf box, or uniform radius along a Gaussian
direction for l_2), ``"normal"`` (``init_std * N(0, I)``, TRADES' start, 0.001 by default) or
``"none"``. The start is projected like every iterate, so nothing ever leaves ``S``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..common import InputError

Norm = Literal["linf", "l2"]
LossName = Literal["ce", "kl", "cw"]
Start = Literal["uniform", "normal", "none"]

NORMS = ("linf", "l2")
LOSSES = ("ce", "kl", "cw")
STARTS = ("uniform", "normal", "none")
PROJECTIONS = ("ball_then_box", "box_then_ball")


def check_threat(eps: float, step: float, steps: int, norm: str) -> None:
    """Raise a one-line ValueError for threat settings out of range."""
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    if norm == "linf" and eps > 1:
        raise InputError(f"l_inf eps={eps} exceeds the [0,1] pixel range; give eps in [0,1] units (e.g. 8/255)")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
        raise InputError(f"steps must be an integer >= 0, got {steps!r}")
    if steps > 0 and not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise InputError(f"step must be a finite number > 0, got {step!r}")


def attack_loss(
    logits: torch.Tensor,
    y: torch.Tensor | None,
    loss: str,
    target_probs: torch.Tensor | None = None,
    kappa: float = 50.0,
) -> torch.Tensor:
    """The batch-summed objective that the attack maximises (computed in float32)."""
    logits = logits.float()
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "kl":
        return F.kl_div(F.log_softmax(logits, dim=1), target_probs, reduction="sum")
    if loss == "cw":
        onehot = F.one_hot(y, logits.shape[1]).bool()
        true = logits.masked_select(onehot)
        other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
        return -torch.clamp(true - other + kappa, min=0).sum()
    raise InputError(f"unknown attack loss {loss!r}; use one of {', '.join(LOSSES)}")


def _per_example_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (v.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
            order: str = "ball_then_box") -> torch.Tensor:
    """Π_S: into the eps-ball around x (l_inf or l_2), then into [0,1] (or box first, ``order``)."""
    if order == "box_then_ball":
        x_adv = x_adv.clamp(0.0, 1.0)
    elif order != "ball_then_box":
        raise InputError(f"unknown projection {order!r}; use one of {', '.join(PROJECTIONS)}")
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0)


def random_start(
    x: torch.Tensor, eps: float, norm: str, kind: str, init_std: float, generator: torch.Generator | None,
    rows: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """A projected starting point for the attack.

    ``rows=(start, stop, total)``: ``x`` holds rows ``start:stop`` of a batch of ``total``; the
    noise is drawn for the whole batch and sliced, so a data-parallel shard starts where a
    single process would have started those examples.
    """
    if kind == "none" or eps == 0:
        return x.clone()
    lo, hi, total = rows if rows is not None else (0, x.shape[0], x.shape[0])
    shape = (total,) + tuple(x.shape[1:])

    def draw(fn, shp):
        return fn(shp, generator=generator, device=x.device, dtype=x.dtype)[lo:hi]

    noise = draw(torch.randn, shape)
    if kind == "normal":
        delta = init_std * noise
    elif kind == "uniform":
        if norm == "linf":
            delta = (2 * draw(torch.rand, shape) - 1) * eps
        else:
            r = draw(torch.rand, (total,) + (1,) * (x.dim() - 1))
            delta = noise / _per_example_norm(noise).clamp_min(1e-12) * eps * r
    else:
        raise InputError(f"unknown random start {kind!r}; use one of {', '.join(STARTS)}")
    return project(x + delta, x, eps, norm)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float,
    step: float,
    steps: int,
    norm: Norm = "linf",
    loss: LossName = "ce",
    start: Start = "uniform",
    init_std: float = 0.001,
    target_probs: torch.Tensor | None = None,
    kappa: float = 50.0,
    generator: torch.Generator | None = None,
    rows: tuple[int, int, int] | None = None,
    projection: str = "ball_then_box",
    eot: int = 1,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` within the eps-ball; returns detached ``x'``.

    The model is used in whatever mode it is in (attacks for training and evaluation put it in
    eval mode first). Gradients are taken w.r.t. the [0,1] image only: no parameter gradients
    are accumulated. ``loss="kl"`` needs ``target_probs`` (the clean softmax); if omitted it is
    computed once from ``model(x)``. ``rows``: see :func:`random_start` (data-parallel shards).
    ``projection``: see :func:`project`. ``eot``: the gradient of each step is the mean over
    ``eot`` forward/backward passes (expectation over transformation, for randomized models).
    """
    check_threat(eps, step, steps, norm)
    if projection not in PROJECTIONS:
        raise InputError(f"unknown projection {projection!r}; use one of {', '.join(PROJECTIONS)}")
    if loss not in LOSSES:
        raise InputError(f"unknown attack loss {loss!r}; use one of {', '.join(LOSSES)}")
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise InputError(f"eot must be an integer >= 1, got {eot!r}")
    if loss in ("ce", "cw") and y is None:
        raise InputError(f"attack loss {loss!r} needs labels y")
    x = x.detach()
    with torch.enable_grad():
        if loss == "kl" and target_probs is None:
            with torch.no_grad():
                target_probs = F.softmax(model(x).float(), dim=1)
        x_adv = random_start(x, eps, norm, start, init_std, generator, rows)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad = torch.zeros_like(x_adv)
            for _ in range(eot):
                objective = attack_loss(model(x_adv), y, loss, target_probs, kappa)
                grad += torch.autograd.grad(objective, [x_adv])[0]
            with torch.no_grad():
                if norm == "linf":
                    x_adv = x_adv + step * grad.sign()
                else:
                    x_adv = x_adv + step * grad / _per_example_norm(grad).clamp_min(1e-12)
                x_adv = project(x_adv, x, eps, norm, projection)
    return x_adv.detach()

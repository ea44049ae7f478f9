"""TRADES with the Taylor terms: the outer-minimisation loss of randomized adversarial training.

``L = (1−η)·CE(z, y) + β·KL(p ‖ p') + η·first + η2·second`` (DESIGN §1), where ``z, p`` come
from the clean images and ``z', p'`` from the adversarial ones, each through one forward pass
of the model in train mode. ``KL(p ‖ p') = (1/B) Σ_b Σ_j p_bj (log p_bj − log p'_bj)`` as in
TRADES (β = 1/λ = 6). ``η = 0`` is plain TRADES, term for term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .taylor import COMPAT, taylor_terms


@dataclass
class LossParts:
    """The total loss (with gradient) and its detached parts for logging."""

    loss: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    logits_nat: torch.Tensor
    logits_adv: torch.Tensor

    def scalars(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss.detach(), "ce": self.ce, "kl": self.kl, "first": self.first, "second": self.second}


def resolve_eta2(eta: float, eta2: float | None) -> float:
    """``eta2=None`` means η/2 (the paper's first+second setting)."""
    return eta / 2 if eta2 is None else eta2


def check_weights(beta: float, eta: float, eta2: float, compat: str) -> None:
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if not eta2 >= 0:
        raise ValueError(f"eta2 must be >= 0, got {eta2}")
    if compat not in COMPAT:
        raise ValueError(f"unknown compat {compat!r}; use one of {', '.join(COMPAT)}")


def trades_taylor_from_outputs(
    logits_nat: torch.Tensor,
    feats_nat: torch.Tensor,
    logits_adv: torch.Tensor,
    feats_adv: torch.Tensor,
    y: torch.Tensor,
    beta: float = 6.0,
    eta: float = 0.2,
    eta2: float | None = None,
    compat: str = "symmetric",
    stats_reduce=None,
) -> LossParts:
    """The loss from precomputed outputs (``logits = head(features)`` for clean and adversarial)."""
    eta2 = resolve_eta2(eta, eta2)
    check_weights(beta, eta, eta2, compat)
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)
    z, za = logits_nat.to(dtype), logits_adv.to(dtype)
    ce = F.cross_entropy(z, y)
    log_p = F.log_softmax(z, dim=1)
    kl = F.kl_div(F.log_softmax(za, dim=1), log_p, reduction="sum", log_target=True) / z.shape[0]
    loss = (1.0 - eta) * ce + beta * kl
    zero = torch.zeros((), dtype=dtype, device=z.device)
    first = second = zero
    if eta > 0 or eta2 > 0:
        terms = taylor_terms(z, feats_nat, za, feats_adv, y, compat=compat, need_second=eta2 > 0, stats_reduce=stats_reduce)
        first, second = terms.first, terms.second
        loss = loss + eta * first + eta2 * second
    return LossParts(loss=loss, ce=ce.detach(), kl=kl.detach(), first=first.detach(), second=second.detach(),
                     logits_nat=logits_nat.detach(), logits_adv=logits_adv.detach())


def trades_taylor_loss(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    beta: float = 6.0,
    eta: float = 0.2,
    eta2: float | None = None,
    compat: str = "symmetric",
    return_parts: bool = False,
):
    """TRADES + Taylor loss for ``model`` (call it in train mode, like TRADES).

    One forward pass each for ``x`` and ``x_adv`` through ``model.forward_features`` and
    ``model.head``; the head statistics come in closed form from those passes (no extra backward
    pass, no model copy). ``eta2=None`` means η/2; ``eta=0, eta2=0`` is plain TRADES;
    ``compat="reference"`` uses the authors' code's second-order targets. Returns the loss, or
    ``(loss, LossParts)`` with ``return_parts=True``.
    """
    h = model.forward_features(x)
    z = model.head(h)
    ha = model.forward_features(x_adv)
    za = model.head(ha)
    parts = trades_taylor_from_outputs(z, h, za, ha, y, beta=beta, eta=eta, eta2=eta2, compat=compat)
    return (parts.loss, parts) if return_parts else parts.loss

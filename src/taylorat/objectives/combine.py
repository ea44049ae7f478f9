"""The one place a base loss meets the Taylor terms.

``L = (1−η)·primary + β·regulariser + η·first + η2·second`` where the base supplies
``primary`` (TRADES: CE(z, y); MART: its boosted CE; AT: CE(z', y)) and ``regulariser``
(TRADES: KL(p ‖ p'); MART: the misclassification-aware KL; AT: none). With ``η = η2 = 0`` the
Taylor terms are not computed at all, so the base loss is reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common import InputError
from .taylor import COMPAT, taylor_terms


@dataclass
class LossParts:
    """The total loss (with gradient) and its detached parts for logging."""

    loss: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    logits_nat: torch.Tensor | None
    logits_adv: torch.Tensor

    def scalars(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss.detach(), "ce": self.ce, "kl": self.kl, "first": self.first, "second": self.second}


def resolve_eta2(eta: float, eta2: float | None) -> float:
    """``eta2=None`` means η/2 (the paper's first+second setting)."""
    return eta / 2 if eta2 is None else eta2


def check_weights(beta: float, eta: float, eta2: float, compat: str) -> None:
    if not beta >= 0:
        raise InputError(f"beta must be >= 0, got {beta}")
    if not 0 <= eta <= 1:
        raise InputError(f"eta must be in [0, 1], got {eta}")
    if not eta2 >= 0:
        raise InputError(f"eta2 must be >= 0, got {eta2}")
    if compat not in COMPAT:
        raise InputError(f"unknown compat {compat!r}; use one of {', '.join(COMPAT)}")


def with_taylor(
    primary: torch.Tensor,
    regulariser: torch.Tensor | None,
    beta: float,
    eta: float,
    eta2: float | None,
    compat: str,
    outputs: tuple,
    y: torch.Tensor,
    stats_reduce=None,
) -> LossParts:
    """Combine a base loss with the Taylor terms of ``outputs = (z, h, z', h')`` (docs/method.md §3–§5)."""
    eta2 = resolve_eta2(eta, eta2)
    check_weights(beta, eta, eta2, compat)
    z, h, za, ha = outputs
    zero = torch.zeros((), dtype=primary.dtype, device=primary.device)
    reg = zero if regulariser is None else regulariser
    loss = (1.0 - eta) * primary + (beta * reg if regulariser is not None else 0.0)
    first = second = zero
    if eta > 0 or eta2 > 0:
        if z is None or h is None:
            raise InputError("the Taylor terms need the clean logits and features")
        terms = taylor_terms(z, h, za, ha, y, compat=compat, need_second=eta2 > 0, stats_reduce=stats_reduce)
        first, second = terms.first, terms.second
        loss = loss + eta * first + eta2 * second
    return LossParts(loss=loss, ce=primary.detach(), kl=reg.detach(), first=first.detach(), second=second.detach(),
                     logits_nat=None if z is None else z.detach(), logits_adv=za.detach())

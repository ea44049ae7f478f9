"""Vanilla adversarial training (Madry et al. 2018) with the Taylor terms (paper Table 8).

``L = (1−η)·CE(z', y) + η·first + η2·second``: the cross-entropy of the adversarial logits
``z'`` (from a CE-PGD attack), plus the Taylor terms built from one clean and one adversarial
forward pass (DESIGN §1). With ``η = η2 = 0`` it is plain AT and the clean pass is skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .taylor import taylor_terms
from .trades import LossParts, check_weights, resolve_eta2


def at_taylor_from_outputs(
    logits_nat: torch.Tensor | None,
    feats_nat: torch.Tensor | None,
    logits_adv: torch.Tensor,
    feats_adv: torch.Tensor,
    y: torch.Tensor,
    eta: float = 0.2,
    eta2: float | None = None,
    compat: str = "symmetric",
    stats_reduce=None,
) -> LossParts:
    """AT (+ Taylor) loss from precomputed outputs; ``logits_nat`` may be None when ``η = η2 = 0``."""
    eta2 = resolve_eta2(eta, eta2)
    check_weights(0.0, eta, eta2, compat)
    dtype = torch.promote_types(logits_adv.dtype, torch.float32)
    za = logits_adv.to(dtype)
    ce = F.cross_entropy(za, y)
    loss = (1.0 - eta) * ce
    zero = torch.zeros((), dtype=dtype, device=za.device)
    first = second = zero
    if eta > 0 or eta2 > 0:
        if logits_nat is None or feats_nat is None:
            raise ValueError("the Taylor terms need the clean logits and features")
        terms = taylor_terms(logits_nat, feats_nat, logits_adv, feats_adv, y, compat=compat, need_second=eta2 > 0, stats_reduce=stats_reduce)
        first, second = terms.first, terms.second
        loss = loss + eta * first + eta2 * second
    return LossParts(loss=loss, ce=ce.detach(), kl=zero, first=first.detach(), second=second.detach(),
                     logits_nat=None if logits_nat is None else logits_nat.detach(), logits_adv=logits_adv.detach())

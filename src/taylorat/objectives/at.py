"""Vanilla adversarial training (Madry et al. 2018) with the Taylor terms (paper Table 8).

``L = (1−η)·CE(z', y) + η·first + η2·second``: the cross-entropy of the adversarial logits
``z'`` (from a CE-PGD attack), plus the Taylor terms built from one clean and one adversarial
forward pass (docs/method.md §6). With ``η = η2 = 0`` it is plain AT and the clean pass is skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bases import Base, register_base
from .combine import LossParts, with_taylor


def at_taylor_from_outputs(
    logits_nat: torch.Tensor | None,
    feats_nat: torch.Tensor | None,
    logits_adv: torch.Tensor,
    feats_adv: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.0,
    eta: float = 0.2,
    eta2: float | None = None,
    compat: str = "symmetric",
    stats_reduce=None,
    label_smoothing: float = 0.0,
) -> LossParts:
    """AT (+ Taylor) loss from precomputed outputs; ``logits_nat`` may be None when ``η = η2 = 0``.

    ``beta`` is accepted for the common ``*_from_outputs`` signature; AT has no regulariser.
    ``label_smoothing`` smooths the adversarial CE (never the Taylor targets).
    """
    ce = F.cross_entropy(logits_adv.to(torch.promote_types(logits_adv.dtype, torch.float32)), y,
                         label_smoothing=label_smoothing)
    return with_taylor(ce, None, 0.0, eta, eta2, compat, (logits_nat, feats_nat, logits_adv, feats_adv), y,
                       stats_reduce)


@register_base("at")
class AT(Base):
    """Madry et al.'s AT: CE-PGD from a uniform start; ``CE(z', y)`` (no clean pass without Taylor terms)."""

    attack_loss, attack_start, needs_clean, label_smoothing = "ce", "uniform", False, True

    from_outputs = staticmethod(at_taylor_from_outputs)

"""TRADES with the Taylor terms: the outer-minimisation loss of randomized adversarial training.

``L = (1−η)·CE(z, y) + β·KL(p ‖ p') + η·first + η2·second`` (docs/method.md §3), where ``z, p`` come
from the clean images and ``z', p'`` from the adversarial ones, each through one forward pass
of the model in train mode. ``KL(p ‖ p') = (1/B) Σ_b Σ_j p_bj (log p_bj − log p'_bj)`` as in
TRADES (β = 1/λ = 6). ``η = 0`` is plain TRADES, term for term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bases import Base, register_base
from .bn_passes import TRADES, TRADES_TAYLOR
from .combine import LossParts, check_weights, resolve_eta2, with_taylor  # noqa: F401 (re-exported)
from .pair import PairForward, refuse_bypassed_ddp


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
    label_smoothing: float = 0.0,
) -> LossParts:
    """The loss from precomputed outputs (``logits = head(features)`` for clean and adversarial);
    ``label_smoothing`` smooths the clean CE only (never the KL or the Taylor targets)."""
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)
    z, za = logits_nat.to(dtype), logits_adv.to(dtype)
    ce = F.cross_entropy(z, y, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(za, dim=1), F.log_softmax(z, dim=1), reduction="sum", log_target=True) / z.shape[0]
    return with_taylor(ce, kl, beta, eta, eta2, compat, (logits_nat, feats_nat, logits_adv, feats_adv), y,
                       stats_reduce)


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
    ``compat="reference"`` uses the authors' code's second-order targets and leaves BatchNorm's
    running statistics where the authors' eight train-mode passes leave them (docs/method.md §7).
    Returns the loss, or
    ``(loss, LossParts)`` with ``return_parts=True``.
    """
    refuse_bypassed_ddp(model)
    z, h, za, ha = PairForward(model, True, TRADES_TAYLOR if compat == "reference" else None)(x, x_adv)
    parts = trades_taylor_from_outputs(z, h, za, ha, y, beta=beta, eta=eta, eta2=eta2, compat=compat)
    return (parts.loss, parts) if return_parts else parts.loss


@register_base("trades")
class Trades(Base):
    """TRADES (Zhang et al. 2019): KL-PGD from ``x + 0.001·N(0, I)``; ``CE(z, y) + β·KL(p ‖ p')``."""

    attack_loss, attack_start, label_smoothing = "kl", "normal", True

    from_outputs = staticmethod(trades_taylor_from_outputs)

    def bn_passes(self, compat: str, taylor: bool) -> str | None:
        """TRADES' ``trades.py`` runs clean, adversarial, clean; the authors' Taylor step eight passes."""
        if compat != "reference":
            return None
        return TRADES_TAYLOR if taylor else TRADES

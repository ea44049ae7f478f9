"""MART (Wang et al., ICLR 2020) with the Taylor terms (docs/method.md §6).

With clean and adversarial probabilities ``p, p'`` and ``k* = argmax_{k≠y} p'_k``:

* boosted CE: ``BCE = CE(z', y) − log(1 − p'_{k*})``;
* misclassification-aware KL: ``(1/B) Σ_b KL(p_b ‖ p'_b) · (1 − p_b,y)``;
* ``L = (1−η)·BCE + β·KL_w + η·first + η2·second`` (β = 6 as MART's code; η = 0 is plain MART).

The small constants (1.0001, 1e-12, 1.0000001) are those of the MART reference code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bases import Base, register_base
from .combine import LossParts, with_taylor


def mart_terms(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(boosted CE, misclassification-aware KL) of MART; ``label_smoothing`` smooths the CE of the boosted CE
    (its margin term and the KL are unchanged)."""
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = (F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing)
           + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y))
    nat_probs = F.softmax(logits_nat, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = (torch.xlogy(nat_probs, nat_probs) - nat_probs * torch.log(adv_probs + 1e-12)).sum(1)  # nn.KLDivLoss
    return bce, (kl * (1.0000001 - true_probs)).sum() / y.shape[0]


def mart_taylor_from_outputs(
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
    """MART (+ Taylor) loss from precomputed outputs."""
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)
    bce, kl = mart_terms(logits_nat.to(dtype), logits_adv.to(dtype), y, label_smoothing)
    return with_taylor(bce, kl, beta, eta, eta2, compat, (logits_nat, feats_nat, logits_adv, feats_adv), y,
                       stats_reduce)


@register_base("mart")
class MART(Base):
    """MART (Wang et al. 2020): CE-PGD from ``x + 0.001·N(0, I)`` as its code; boosted CE + β·weighted KL."""

    attack_loss, attack_start, label_smoothing = "ce", "normal", True

    from_outputs = staticmethod(mart_taylor_from_outputs)

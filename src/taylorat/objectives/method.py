"""A training method: how to make the adversarial batch and which loss to minimise on it.

``TradesTaylor`` is TRADES (η = 0), TRADES+1st (η = 0.3, η2 = 0) or TRADES+1st+2nd
(η = 0.2, η2 = η/2) with randomized weights in the attack (Alg. 1 of the paper):

1. model in eval mode, weights ``w + u`` (one ``u`` per minibatch);
2. ``x' = PGD_K`` on TRADES' ``KL(f(x) ‖ f(x'))`` from ``x + 0.001·N(0, I)``;
3. weights restored bit-exactly, model back in train mode;
4. loss ``(1−η)·CE + β·KL + η·first + η2·second`` from one forward pass per input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import eval_mode, pgd
from ..attacks.pgd import check_threat
from .trades import LossParts, check_weights, resolve_eta2, trades_taylor_from_outputs
from .weight_noise import SCOPES, randomized_weights

METHODS = ("trades", "trades+1st", "trades+1st+2nd")
# η, η2 defaults per Taylor order (paper §5.1); η2=None means η/2
ORDER_DEFAULTS = {"trades": (0.0, 0.0), "trades+1st": (0.3, 0.0), "trades+1st+2nd": (0.2, None)}


@dataclass(frozen=True)
class Threat:
    """Training-attack settings: l_inf 8/255 with step 2/255 (l_2: 128/255, 15/255), K=10."""

    norm: str = "linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10

    def __post_init__(self):
        check_threat(self.eps, self.step, self.steps, self.norm)


@dataclass(frozen=True)
class TradesTaylor:
    threat: Threat = Threat()
    beta: float = 6.0
    eta: float = 0.2
    eta2: float | None = None
    compat: str = "symmetric"
    noise_std: float = 1e-4
    noise_scope: str = "conv"

    def __post_init__(self):
        check_weights(self.beta, self.eta, resolve_eta2(self.eta, self.eta2), self.compat)
        if self.noise_scope not in SCOPES:
            raise ValueError(f"unknown noise_scope {self.noise_scope!r}; use one of {', '.join(SCOPES)}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    def perturb(self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The adversarial batch, found on randomized weights in eval mode (model mode restored)."""
        t = self.threat
        with eval_mode(model), randomized_weights(model, self.noise_std, self.noise_scope, generator):
            with torch.no_grad():
                p_nat = F.softmax(model(x).float(), dim=1)
            return pgd(model, x, eps=t.eps, step=t.step, steps=t.steps, norm=t.norm, loss="kl", start="normal",
                       init_std=0.001, target_probs=p_nat, generator=generator)

    def loss(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> LossParts:
        h = model.forward_features(x)
        ha = model.forward_features(x_adv)
        return trades_taylor_from_outputs(model.head(h), h, model.head(ha), ha, y, beta=self.beta, eta=self.eta,
                                          eta2=self.eta2, compat=self.compat)

"""A training method: how to make the adversarial batch and which loss to minimise on it.

Names are ``BASE`` or ``BASE+1st`` or ``BASE+1st+2nd`` with BASE a registered base
(:mod:`~taylorat.objectives.bases`: ``trades``, ``at``, ``mart``, ``awp-trades``; η = 0.3,
η2 = 0 for +1st; η = 0.2, η2 = η/2 for +1st+2nd; paper §5.1). Each step (paper Alg. 1;
docs/method.md §1):

1. model in eval mode, weights ``w + u`` (one ``u ~ N(0, σ²)`` per minibatch, σ = 0 for the
   plain bases); ``x'`` by PGD-K on the base's attack loss from its start;
2. weights restored bit-exactly, model back in train mode;
3. the base loss (+ ``η·first + η2·second``) from one forward pass per input (on ``w + v``
   when the base has a step hook, AWP).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import eval_mode, pgd
from ..attacks.pgd import PROJECTIONS, check_threat
from ..common import InputError
from .bases import ORDERS, Base, get_base
from .combine import LossParts, check_weights, resolve_eta2
from .pair import PairForward
from .weight_noise import SCOPES, randomized_weights


@dataclass(frozen=True)
class Threat:
    """Training-attack settings: l_inf 8/255 with step 2/255 (l_2: 128/255, 15/255), K=10.

    ``mode``: the model's mode while the attack runs — ``eval`` (TRADES, the paper) or ``train``
    (the AT reference code of Rice et al. / AWP, whose attack passes also move BatchNorm's
    running statistics). ``projection``: see :func:`taylorat.attacks.project` (TRADES' ℓ2 code
    clips to [0,1] before the ball: ``box_then_ball``).
    """

    norm: str = "linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    mode: str = "eval"
    projection: str = "ball_then_box"

    def __post_init__(self):
        check_threat(self.eps, self.step, self.steps, self.norm)
        if self.mode not in ("eval", "train"):
            raise InputError(f"attack mode must be eval or train, got {self.mode!r}")
        if self.projection not in PROJECTIONS:
            raise InputError(f"unknown projection {self.projection!r}; use one of {', '.join(PROJECTIONS)}")


@dataclass(frozen=True)
class Method:
    """A base method with its Taylor weights and the randomized-weight attack (docs/method.md §1–§6).

    ``m.perturb(model, x, y)`` finds the adversarial batch; ``m.loss(model, x, x_adv, y)`` (or
    ``m.loss_from_outputs((z, h, z', h'), y)`` for your own forward pass) returns its
    :class:`~taylorat.objectives.combine.LossParts`. ``eta2=None`` means η/2; ``compat``
    ``"reference"`` follows the authors' code (docs/method.md §9).
    """

    base: str = "trades"
    threat: Threat = Threat()
    beta: float = 6.0
    eta: float = ORDERS["+1st+2nd"][0]  # the paper's first+second setting
    eta2: float | None = None  # None: η/2 (resolve_eta2)
    compat: str = "symmetric"
    noise_std: float = 1e-4
    noise_scope: str = "conv"
    label_smoothing: float = 0.0  # the base's CE terms only (Base.label_smoothing)

    def __post_init__(self):
        get_base(self.base)
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and not self.spec.label_smoothing:
            raise InputError(f"base {self.base!r} does not take label_smoothing; leave it 0")
        check_weights(self.beta, self.eta, resolve_eta2(self.eta, self.eta2), self.compat)
        if self.noise_scope not in SCOPES:
            raise InputError(f"unknown noise_scope {self.noise_scope!r}; use one of {', '.join(SCOPES)}")
        if not self.noise_std >= 0:
            raise InputError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def spec(self) -> Base:
        """The registered base this method builds on."""
        return get_base(self.base)

    @property
    def taylor(self) -> bool:
        return self.eta > 0 or resolve_eta2(self.eta, self.eta2) > 0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None, rows: tuple[int, int, int] | None = None) -> torch.Tensor:
        """The adversarial batch, found on randomized weights in eval mode (model mode restored;
        ``threat.mode="train"``: in the mode the model is in, as the AT reference).

        ``y`` is needed by the cross-entropy attacks (at, mart), not by TRADES' KL attack;
        ``rows`` places a data-parallel shard in its global batch (see ``attacks.random_start``).
        """
        t = self.threat
        kw = dict(eps=t.eps, step=t.step, steps=t.steps, norm=t.norm, init_std=0.001, generator=generator, rows=rows,
                  projection=t.projection)
        mode = eval_mode(model) if t.mode == "eval" else nullcontext()
        base = self.spec
        with mode, randomized_weights(model, self.noise_std, self.noise_scope, generator):
            if base.attack_loss == "kl":
                with torch.no_grad():
                    p_nat = F.softmax(model(x).float(), dim=1)
                return pgd(model, x, loss="kl", start=base.attack_start, target_probs=p_nat, **kw)
            return pgd(model, x, y, loss=base.attack_loss, start=base.attack_start, **kw)

    def bn_passes(self, taylor: bool = True) -> str | None:
        """The reference's train-mode pass sequence whose BatchNorm updates a step reproduces.

        Only under ``compat="reference"``, as the base says (TRADES: ``"cac"``, its Taylor step
        ``"caacacac"``); None otherwise: one clean and one adversarial pass. docs/method.md §7.
        """
        return self.spec.bn_passes(self.compat, taylor and self.taylor)

    def needs_clean_pass(self, taylor: bool = True) -> bool:
        """Whether the step needs the clean pass: the base's loss or the Taylor terms use it (plain AT does not)."""
        return self.spec.needs_clean or (taylor and self.taylor)

    def loss_from_outputs(self, outputs: tuple, y: torch.Tensor, taylor: bool = True,
                          stats_reduce=None) -> LossParts:
        """The base loss (+ Taylor terms unless ``taylor=False``) from ``(z, h, z', h')``."""
        eta, eta2 = (self.eta, self.eta2) if taylor else (0.0, 0.0)
        smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        return self.spec.loss_from_outputs(outputs, y, beta=self.beta, eta=eta, eta2=eta2, compat=self.compat,
                                           stats_reduce=stats_reduce, **smoothing)

    def loss(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
             taylor: bool = True) -> LossParts:
        """The base loss (+ Taylor terms unless ``taylor=False``) from one forward pass per input."""
        forward = PairForward(model, self.needs_clean_pass(taylor), self.bn_passes(taylor))
        return self.loss_from_outputs(forward(x, x_adv), y, taylor)

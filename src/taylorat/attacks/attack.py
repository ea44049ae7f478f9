"""Evaluation attacks as small classes with one ``forward(images, labels)``.

Every attack runs the model in eval mode and float32 (autocast off), on [0,1] images, and
restores the model's previous mode afterwards (AutoAttack / RobustBench practice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .pgd import check_threat, pgd


class eval_mode:
    """Context manager: model.eval() inside, previous mode restored on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


class Attack:
    """Base class: ``attack(images, labels) -> adversarial images`` (detached, in the threat set)."""

    name = "attack"

    def __init__(self, model: nn.Module):
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model), torch.autocast(images.device.type, enabled=False):
            return self.forward(images, labels)

    def settings(self) -> dict:
        return {"name": self.name}


@dataclass(frozen=True)
class PGDSettings:
    eps: float
    step: float
    steps: int
    norm: str = "linf"
    loss: str = "ce"
    start: str = "uniform"
    kappa: float = 50.0
    eot: int = 1  # gradient averaged over this many passes (randomized models)


class PGD(Attack):
    """PGD-K with cross-entropy (or another loss of the shared core); uniform random start."""

    name = "pgd"

    def __init__(self, model, eps=0.031, step=0.003, steps=20, norm="linf", loss="ce", start="uniform",
                 kappa=50.0, seed: int = 0, eot: int = 1):
        super().__init__(model)
        check_threat(eps, step, steps, norm)
        self.cfg = PGDSettings(eps, step, steps, norm, loss, start, kappa, eot)
        self.seed = seed

    def forward(self, images, labels):
        gen = torch.Generator(device=images.device).manual_seed(self.seed)
        c = self.cfg
        return pgd(self.model, images, labels, eps=c.eps, step=c.step, steps=c.steps, norm=c.norm,
                   loss=c.loss, start=c.start, kappa=c.kappa, generator=gen, eot=c.eot)

    def settings(self) -> dict:
        return {"name": self.name, **asdict(self.cfg), "seed": self.seed}


class CW(PGD):
    """CW-K: the Carlini-Wagner margin loss (κ=50) optimised by PGD (TRADES' CW-20 evaluation)."""

    name = "cw"

    def __init__(self, model, eps=0.031, step=0.003, steps=20, norm="linf", kappa=50.0, seed: int = 0,
                 eot: int = 1):
        super().__init__(model, eps, step, steps, norm, loss="cw", start="uniform", kappa=kappa, seed=seed, eot=eot)

"""Base adversarial-training methods by name, the one place that knows what differs between them.

A base (``trades``, ``at``, ``mart``, ``awp-trades``, or one a user registers) says how its
training attack searches (the loss PGD maximises and where it starts), which loss it minimises
given the clean and adversarial outputs, its defaults, and the minimizer it implies (``awp-trades``
is ``trades`` with the ``awp`` minimizer). Every base gets the Taylor orders:
``NAME``, ``NAME+1st`` (η = 0.3) and ``NAME+1st+2nd`` (η = 0.2, η2 = η/2), docs/method.md §3::

    from taylorat.objectives import Base, register_base, with_taylor

    @register_base("ce-only")
    class CEOnly(Base):
        '''Clean cross-entropy plus the Taylor terms; a CE-PGD attack from a uniform start.'''
        attack_loss, attack_start = "ce", "uniform"

        def loss_from_outputs(self, outputs, y, *, beta, eta, eta2, compat, stats_reduce=None):
            z = outputs[0]
            return with_taylor(F.cross_entropy(z.float(), y), None, 0.0, eta, eta2, compat, outputs, y,
                               stats_reduce)

after which ``method.name: ce-only+1st+2nd`` trains from a config.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..common import InputError, Registry
from .combine import LossParts

ORDERS = {"": (0.0, 0.0), "+1st": (0.3, 0.0), "+1st+2nd": (0.2, None)}  # η, η2 (None: η/2)


class Base:
    """One base method. Subclasses set the class attributes and implement ``loss_from_outputs``.

    * ``attack_loss``: ``"kl"`` (TRADES' KL to the clean prediction) or ``"ce"`` (cross-entropy);
    * ``attack_start``: ``"normal"`` (``x + 0.001·N(0, I)``) or ``"uniform"`` (in the ε-ball);
    * ``needs_clean``: whether the plain loss uses the clean pass (AT's does not);
    * ``noise_std``: σ of the randomized weights for the Taylor orders (the plain base uses 0);
    * ``options``: extra ``method.*`` config keys this base reads, with their defaults;
    * ``default_minimizer``: the minimizer a run uses when ``minimizer.name`` is unset (``awp-trades``:
      ``awp``; :mod:`~taylorat.objectives.minimizers`);
    * ``label_smoothing``: whether its loss takes ``label_smoothing=s`` for its cross-entropy terms
      (then ``loss_from_outputs`` receives the keyword whenever ``s > 0``).
    """

    name: str = ""
    attack_loss: str = "kl"
    attack_start: str = "normal"
    needs_clean: bool = True
    noise_std: float = 1e-4
    options: dict[str, Any] = {}
    default_minimizer: str = "none"
    label_smoothing: bool = False
    # ``f(z, h, z', h', y, *, beta, eta, eta2, compat, stats_reduce) -> LossParts``: the common case
    from_outputs: Callable[..., LossParts] | None = None

    def loss_from_outputs(self, outputs: tuple, y: torch.Tensor, *, beta: float, eta: float, eta2: float | None,
                          compat: str, stats_reduce=None, **smoothing: float) -> LossParts:
        """The base loss (+ ``η·first + η2·second``) from ``(z, h, z', h')`` (default: ``from_outputs``);
        ``smoothing`` is ``label_smoothing=s`` or nothing."""
        if self.from_outputs is None:
            raise NotImplementedError(f"base {self.name!r} sets neither from_outputs nor loss_from_outputs")
        return type(self).from_outputs(*outputs, y, beta=beta, eta=eta, eta2=eta2, compat=compat,
                                       stats_reduce=stats_reduce, **smoothing)

    def bn_passes(self, compat: str, taylor: bool) -> str | None:
        """The reference's train-mode pass sequence to reproduce under ``compat="reference"`` (docs/method.md §7)."""
        return None

    def default_noise_std(self, order: str) -> float:
        """σ when the config leaves ``method.noise_std`` unset: the base's for Taylor orders, else 0."""
        return self.noise_std if order else 0.0


BASES: Registry[Base] = Registry("base")


def register_base(name: str) -> Callable[[type[Base]], type[Base]]:
    """Class decorator: register a :class:`Base` subclass under ``name`` (its Taylor orders come with it)."""
    if not name or "+" in name or name != name.strip().lower():
        raise InputError(f"base name {name!r} must be lowercase without '+' (the orders are added to it)")
    add = BASES.register(name)

    def deco(cls: type[Base]) -> type[Base]:
        obj = cls()
        obj.name = name
        add(obj)
        return cls

    return deco


def unregister_base(name: str) -> None:
    """Remove a registered base (tests and plug-ins that replace one)."""
    BASES.unregister(name)


def bases() -> tuple[str, ...]:
    """Registered base names, in registration order."""
    return tuple(BASES.names())


def get_base(name: str) -> Base:
    """The registered base ``name``; a one-line "unknown base ... did you mean" error otherwise."""
    return BASES.get(name)


def methods() -> tuple[str, ...]:
    """Every method name: each registered base with each Taylor order."""
    return tuple(b + o for b in BASES.names() for o in ORDERS)


def split_name(name: str) -> tuple[str, str]:
    """``"awp-trades+1st+2nd"`` -> ``("awp-trades", "+1st+2nd")``."""
    for order in ("+1st+2nd", "+1st"):
        if name.endswith(order):
            return name[: -len(order)], order
    return name, ""


def order_defaults(name: str) -> tuple[float, float | None]:
    """(η, η2) of a method name; η2 None means η/2."""
    base, order = split_name(name)
    get_base(base)
    return ORDERS[order]

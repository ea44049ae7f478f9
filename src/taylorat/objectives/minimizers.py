"""Minimizers: how one step's outer gradient is taken, an axis of its own beside base and Taylor order.

Every minimizer composes with every base (``trades``, ``at``, ``mart``) and every Taylor order
(docs/method.md §10). With ``L(w)`` the step's loss (base loss + Taylor terms, from one clean and
one adversarial train-mode pass) and ``g = ∇L(w)``:

* ``none``: the gradient at ``w``;
* ``sam`` (Foret et al. 2021): ``e = ρ·g / ‖g‖`` with one norm over all parameters;
* ``asam`` (Kwon et al. 2021): ``T = |w| + η`` element-wise on the weights (1 elsewhere),
  ``e = ρ·T²g / ‖T g‖``;
* ``awp`` (Wu et al. 2020): ``v_l = γ·‖w_l‖·g_l/‖g_l‖`` per weight matrix / kernel, ``g`` the
  gradient of the base loss without Taylor terms at a proxy copy (:mod:`~taylorat.objectives.awp`).

SAM and ASAM take ``g`` from a first pair of passes at ``w`` (which moves BatchNorm's running
statistics, as the step without a minimizer does), then the loss and its gradient at ``w + e``
from a second pair, whose effect on the running statistics is undone (SAM practice: they do not
move); the Taylor statistics of each loss come from that loss's own passes. AWP's ``v`` comes
from the proxy, so the model runs one pair of passes, at ``w + v``, and its BatchNorm statistics
move there (as the AWP reference). In every case the gradient taken at the perturbed weights is
applied to ``w``, which is restored bit-exactly (copied back, never ``+e−e``) before the
optimizer step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..common import InputError, Registry
from .awp import AWP
from .combine import LossParts

#: a pair of train-mode passes and the step's loss at the model's current weights
Outer = Callable[[], LossParts]
#: zero the gradients, backward of the step's loss (all-reduced under data parallelism)
Backward = Callable[[LossParts], None]

NORM_EPS = 1e-12  # added to ‖g‖ (Foret et al.'s code); keeps a zero gradient from dividing by zero


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Inside: BatchNorm layers normalise with batch statistics as usual; on exit their running
    statistics (mean, variance, batch count) are exactly what they were on entry."""
    bufs = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.detach().clone() for b in bufs]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(bufs, saved):
                b.copy_(s)


@contextmanager
def moved(params: list[torch.Tensor], deltas: list[torch.Tensor]) -> Iterator[None]:
    """Inside: each parameter is ``w + δ``; on exit exactly ``w`` again (copied back; gradients kept)."""
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        torch._foreach_add_(params, deltas)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)


class Minimizer:
    """No perturbation: the step's gradient at ``w``. Subclasses override :meth:`step`.

    ``warmup``: the first epoch (1-based) at which the minimizer acts; before it a step is a plain one.
    """

    name = "none"

    def __init__(self, model: nn.Module, warmup: int = 0):
        if warmup < 0:
            raise InputError(f"minimizer.warmup must be >= 0, got {warmup}")
        self.warmup = warmup

    def active(self, epoch: int) -> bool:
        return epoch >= self.warmup

    def step(self, model: nn.Module, outer: Outer, backward: Backward, *,
             base_loss: Callable[[nn.Module], torch.Tensor] | None = None,
             grad_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             autocast: AbstractContextManager | None = None) -> LossParts:
        """Leave in ``p.grad`` the gradient to apply to ``w`` and return the step's loss parts."""
        parts = outer()
        backward(parts)
        return parts


class SAM(Minimizer):
    """Sharpness-aware minimization (Foret et al. 2021): the gradient at ``w + ρ·g/‖g‖``.

    The returned loss parts are those at ``w`` (the first pass), as SAM implementations log them.
    """

    name = "sam"
    default_rho = 0.05

    def __init__(self, model: nn.Module, rho: float | None = None, warmup: int = 0):
        super().__init__(model, warmup)
        self.rho = self.default_rho if rho is None else rho
        if not self.rho > 0:
            raise InputError(f"minimizer.rho must be > 0, got {self.rho}")

    def scale(self, model: nn.Module, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """``T`` per parameter (None: ``T = 1``, SAM)."""
        return None

    def perturbation(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(params, e)`` from the gradients in ``p.grad``: ``e = ρ·T²g / ‖T g‖`` (``T = 1`` for SAM)."""
        params = [p for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            grads = [p.grad.detach() for p in params]
            t = self.scale(model, params)
            tg = grads if t is None else torch._foreach_mul(grads, t)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tg)))
            e = tg if t is None else torch._foreach_mul(tg, t)
            e = torch._foreach_mul(e, (self.rho / (norm + NORM_EPS)).to(params[0].dtype))
        return params, e

    def step(self, model: nn.Module, outer: Outer, backward: Backward, *,
             base_loss: Callable[[nn.Module], torch.Tensor] | None = None,
             grad_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             autocast: AbstractContextManager | None = None) -> LossParts:
        first = outer()
        backward(first)  # g at w (averaged over ranks by DDP: the norm is that of the global gradient)
        params, e = self.perturbation(model)
        with moved(params, e), frozen_bn_stats(model):
            backward(outer())
        return first


class ASAM(SAM):
    """Adaptive SAM (Kwon et al. 2021): ``T = |w| + η`` on parameters named ``weight``, 1 on the others
    (as the authors' code), so that ``e = ρ·T²g / ‖T g‖``."""

    name = "asam"
    default_rho = 0.5

    def __init__(self, model: nn.Module, rho: float | None = None, eta: float = 0.01, warmup: int = 0):
        super().__init__(model, rho, warmup)
        if not eta >= 0:
            raise InputError(f"minimizer.eta must be >= 0, got {eta}")
        self.eta = eta
        self._scaled = {id(p) for n, p in model.named_parameters() if "weight" in n}

    def scale(self, model: nn.Module, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p.detach().abs() + self.eta if id(p) in self._scaled else torch.ones_like(p) for p in params]


class AWPMinimizer(Minimizer):
    """Adversarial weight perturbation (Wu et al. 2020) as a minimizer: ``v`` from a proxy, the step's
    loss and gradient at ``w + v``, applied to ``w`` (:class:`~taylorat.objectives.awp.AWP`)."""

    name = "awp"

    def __init__(self, model: nn.Module, gamma: float = 0.005, warmup: int = 10):
        super().__init__(model, warmup)
        self.awp = AWP(model, gamma, warmup)

    def active(self, epoch: int) -> bool:
        return self.awp.active(epoch)

    def step(self, model: nn.Module, outer: Outer, backward: Backward, *,
             base_loss: Callable[[nn.Module], torch.Tensor] | None = None,
             grad_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             autocast: AbstractContextManager | None = None) -> LossParts:
        if base_loss is None:
            raise InputError("the awp minimizer needs the base loss of the step (base_loss=...)")
        with autocast if autocast is not None else nullcontext():
            v = self.awp.perturbation(model, base_loss, grad_reduce)
        with AWP.applied(model, v):
            parts = outer()
            backward(parts)
        return parts


#: the minimizers by name; each entry's metadata are the options it reads, with their defaults
#: (None: the class's own default). A user's minimizer registers the same way.
MINIMIZERS: Registry[type[Minimizer]] = Registry("minimizer")
MINIMIZERS.register("none", Minimizer, warmup=0)
MINIMIZERS.register("sam", SAM, rho=None, warmup=0)
MINIMIZERS.register("asam", ASAM, rho=None, eta=0.01, warmup=0)
MINIMIZERS.register("awp", AWPMinimizer, gamma=0.005, warmup=10)


def minimizers() -> tuple[str, ...]:
    return tuple(MINIMIZERS.names())


def minimizer_options(name: str) -> dict[str, Any]:
    """The options ``name`` reads, with their defaults."""
    return MINIMIZERS.metadata(name)


def make_minimizer(name: str, model: nn.Module, **options: Any) -> Minimizer | None:
    """The minimizer ``name`` for ``model`` with the options it reads (None for ``none``)."""
    cls = MINIMIZERS.get(name)
    if cls is Minimizer:
        return None
    return cls(model, **{k: options.get(k, v) for k, v in MINIMIZERS.metadata(name).items()})

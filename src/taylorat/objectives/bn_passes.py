"""BatchNorm running statistics of a reference pass sequence, reproduced with two passes.

A train-mode BatchNorm updates its running statistics once per forward pass:
``r ← (1 − f)·r + f·s`` with ``f`` the momentum (0.1) and ``s`` the batch statistic of that pass
(for ``momentum=None``: ``f = 1 / num_batches_tracked``, a cumulative average). Reference
implementations run more train-mode passes per step than the loss needs (docs/method.md §7):

* TRADES (``trades.py``): clean, adversarial, clean — ``"cac"``;
* the authors' TRADES+Taylor step (``trades_first_second.py``): clean, adversarial, then
  ``model(x_adv)`` and ``model(x_natural)`` inside each of its three KL terms — ``"caacacac"``.

Passes on the same input with the same weights see the same batch statistics, so after a
sequence of ``L`` passes the running statistic is ``w₀·r + W_c·s_c + W_a·s_a`` with
``w_k = f_k Π_{j>k} (1 − f_j)``, ``W_c = Σ_{k clean} w_k``, ``W_a = Σ_{k adv} w_k``. Two passes, clean
with momentum ``m₁`` then adversarial with ``m₂``, give ``(1−m₁)(1−m₂)·r + m₁(1−m₂)·s_c + m₂·s_a``,
hence ``m₂ = W_a`` and ``m₁ = W_c / (1 − W_a)`` reproduce it exactly (``w₀`` then matches because
all weights sum to 1); ``num_batches_tracked`` advances by ``L``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..common import InputError

TRADES = "cac"
TRADES_TAYLOR = "caacacac"


def check_sequence(seq: str) -> None:
    if not seq or set(seq) - {"c", "a"} or "a" not in seq or "c" not in seq:
        raise InputError(f"a BatchNorm pass sequence is a string of 'c' (clean) and 'a' (adversarial) "
                         f"holding both, got {seq!r}")


def sequence_weights(seq: str, momentum: float | None, tracked: int = 0) -> tuple[float, float]:
    """``(W_c, W_a)``: the weights of the clean and adversarial batch statistics after ``seq``.

    ``tracked`` is ``num_batches_tracked`` before the step (used when ``momentum is None``).
    """
    check_sequence(seq)
    wc = wa = 0.0
    for k, kind in enumerate(seq):
        f = momentum if momentum is not None else 1.0 / (tracked + k + 1)
        wc, wa = wc * (1 - f), wa * (1 - f)
        if kind == "c":
            wc += f
        else:
            wa += f
    return wc, wa


def two_pass_momenta(seq: str, momentum: float | None, tracked: int = 0) -> tuple[float, float]:
    """``(m₁, m₂)``: momenta of a clean then an adversarial pass that end where ``seq`` ends."""
    wc, wa = sequence_weights(seq, momentum, tracked)
    return (wc / (1 - wa) if wa < 1 else 0.0), wa


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


class ReferencePasses:
    """Sets each BatchNorm's momentum for the clean and the adversarial pass of one step.

    Use: ``rp.before("c")``, clean pass, ``rp.before("a")``, adversarial pass, ``rp.after()``.
    Only acts in train mode; the modules' own momenta are restored by ``after()``. With a fixed
    momentum (the usual 0.1) no tensor is read on the host.
    """

    def __init__(self, model: nn.Module, seq: str):
        check_sequence(seq)
        self.model, self.seq = model, seq
        self.saved: list[tuple[nn.Module, float | None, tuple[float, float]]] | None = None

    def before(self, kind: str) -> None:
        if kind not in ("c", "a"):
            raise InputError(f"pass kind must be 'c' or 'a', got {kind!r}")
        if self.saved is None:
            if kind != "c" or not self.model.training:
                return
            self.saved = []
            for m in _norms(self.model):
                tracked = int(m.num_batches_tracked) if m.momentum is None else 0
                self.saved.append((m, m.momentum, two_pass_momenta(self.seq, m.momentum, tracked)))
        for m, _, (m1, m2) in self.saved:
            m.momentum = m1 if kind == "c" else m2

    def after(self) -> None:
        if self.saved is None:
            return
        extra = len(self.seq) - 2
        with torch.no_grad():
            for m, mom, _ in self.saved:
                m.momentum = mom
                m.num_batches_tracked.add_(extra)
        self.saved = None


@contextmanager
def reference_passes(model: nn.Module, seq: str | None) -> Iterator[ReferencePasses | None]:
    """``ReferencePasses`` for one step (None: the model's own momenta, two passes)."""
    if seq is None:
        yield None
        return
    rp = ReferencePasses(model, seq)
    try:
        yield rp
    finally:
        rp.after()

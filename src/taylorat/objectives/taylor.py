"""The first- and second-order Taylor terms of randomized adversarial training (docs/method.md §3–§5).

With batch size B, C classes, head ``W ∈ R^{C×D}``, features ``h`` and softmax ``p``:

* head statistics in closed form (no backward pass): the row sums of ``∂CE/∂W`` for the
  batch-mean cross-entropy are ``g = (1/B) Σ_b (p_b − onehot(y_b)) · Σ_i h_b,i`` (a C-vector);
  ``g`` from the clean pass, ``g'`` from the adversarial one;
* first order ``t1 = |g|``, second order ``t2 = g²`` (the reference code's Hadamard form);
* ``soft(v)``: shift to min 0, normalise, and build the C×C matrix whose row k is v with entry k
  set to 0, rescaled to sum ``c``, then entry k set to ``1 − c`` (``c = 1 − 2/C``); a row with
  nothing off the diagonal becomes uniform off the diagonal (never NaN);
* targets ``y1 = soft(t1 − t1')[y]``, ``y2 = soft(t1' − t1)[y]``; second order
  ``q1 = soft(t2 − t2')[y]``, ``q2 = soft(t2' − t2)[y]`` (``compat="reference"``: both
  ``soft(t2' − t2)[y]``, as the authors' code);
* ``KLt(q ‖ p) = (1/B) Σ_b Σ_j q_bj (log q_bj − log p_bj)`` with ``0·log 0 = 0``;
* ``first = ½[KLt(y1‖p') + KLt(y2‖p)]``, ``second = ½[KLt(q1‖p') + KLt(q2‖p)]``.

Targets are constants: gradients flow only through ``log p`` and ``log p'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..common import InputError

COMPAT = ("symmetric", "reference")


def default_c(num_classes: int) -> float:
    """Diagonal-complement mass ``c = 1 − 2/C`` (0.8 for 10 classes, 0.98 for 100)."""
    if num_classes < 3:
        raise InputError(f"Taylor soft targets need at least 3 classes, got {num_classes}")
    return 1.0 - 2.0 / num_classes


def head_grad_rowsums(probs: torch.Tensor, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``g_j = Σ_i ∂CE/∂W_ji = (1/B) Σ_b (p_bj − [y_b = j]) Σ_i h_bi`` for the batch-mean CE (docs/method.md §4)."""
    resid = probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)
    return (resid * features.sum(dim=1, keepdim=True).to(probs.dtype)).mean(dim=0)


def soft_targets(v: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """The C×C soft-target matrix of docs/method.md §5 for a C-vector ``v`` (rows sum to 1, diagonal 1−c);
    for ``v`` of shape (..., C), one matrix per vector, shape (..., C, C)."""
    n = v.shape[-1]
    c = default_c(n) if c is None else c
    v = v - v.amin(-1, keepdim=True)
    total = v.sum(-1, keepdim=True)
    # normalisation by Σv does not change the rows below except for the Σv = 0 guard
    v = torch.where(total > 0, v / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(v))
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    off = v.unsqueeze(-2).expand(*v.shape[:-1], n, n).masked_fill(eye, 0.0)
    rows = off.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(off, 1.0 / (n - 1)).masked_fill(eye, 0.0)
    off = torch.where(rows > 0, off / torch.where(rows > 0, rows, torch.ones_like(rows)), uniform)
    return (c * off).masked_fill(eye, 1.0 - c)


def kl_to_target(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``KLt(q ‖ p) = (1/B) Σ_b Σ_j q_bj (log q_bj − log p_bj)`` with 0·log 0 = 0."""
    return (torch.xlogy(q, q) - q * log_p).sum() / q.shape[0]


@dataclass
class TaylorTerms:
    """The two regularisers (scalars with gradient) and the head statistics that made them."""

    first: torch.Tensor
    second: torch.Tensor
    g_nat: torch.Tensor
    g_adv: torch.Tensor


def taylor_terms(
    logits_nat: torch.Tensor,
    feats_nat: torch.Tensor,
    logits_adv: torch.Tensor,
    feats_adv: torch.Tensor,
    y: torch.Tensor,
    compat: str = "symmetric",
    c: float | None = None,
    need_second: bool = True,
    stats_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TaylorTerms:
    """First and second Taylor terms from one forward pass per input (docs/method.md §3–§5).

    ``stats_reduce`` maps this batch's head statistic ``g`` to the one used (data-parallel
    training: the batch-size-weighted mean over ranks, i.e. the statistic of the global batch).

    Statistics are computed without gradient in at least float32 from the given logits and
    features; the KL terms use ``log_softmax`` of the logits with gradient.
    """
    if compat not in COMPAT:
        raise InputError(f"unknown compat {compat!r}; use one of {', '.join(COMPAT)}")
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)
    log_p = F.log_softmax(logits_nat.to(dtype), dim=1)
    log_pa = F.log_softmax(logits_adv.to(dtype), dim=1)
    with torch.no_grad():
        g = head_grad_rowsums(log_p.exp(), feats_nat.detach().to(dtype), y)
        ga = head_grad_rowsums(log_pa.exp(), feats_adv.detach().to(dtype), y)
        if stats_reduce is not None:
            g, ga = stats_reduce(g), stats_reduce(ga)
        t1, t1a = g.abs(), ga.abs()
        v = [t1 - t1a, t1a - t1]
        if need_second:
            t2, t2a = g * g, ga * ga
            v += [t2a - t2] if compat == "reference" else [t2a - t2, t2 - t2a]
        targets = soft_targets(torch.stack(v), c)[:, y]  # all soft-target matrices at once, rows picked by y
        y1, y2 = targets[0], targets[1]
    first = 0.5 * (kl_to_target(y1, log_pa) + kl_to_target(y2, log_p))
    if need_second:
        q2 = targets[2]
        q1 = q2 if compat == "reference" else targets[3]
        second = 0.5 * (kl_to_target(q1, log_pa) + kl_to_target(q2, log_p))
    else:
        second = torch.zeros((), dtype=dtype, device=logits_nat.device)
    return TaylorTerms(first=first, second=second, g_nat=g, g_adv=ga)

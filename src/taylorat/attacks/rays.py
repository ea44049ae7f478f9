"""RayS: hard-label l_inf attack by ray searching (Chen & Gu, KDD 2020).

Only the predicted label ``model(x).argmax(1)`` is used, always under ``torch.no_grad()``.
For a sign direction ``d ∈ {-1,+1}^D`` (``D = C·H·W``) the *ray radius* ``r(d)`` is the smallest
``r`` with ``argmax f(clip(x + r·d, 0, 1)) != y``, found by bisection (the ray search). RayS
minimises ``r(d)`` over ``d``:

1. start from ``d = ones`` (``seed=None``, the paper's start) or a seeded random sign vector,
   ``r_best = r(d)`` searched in ``[0, 1]`` (``inf`` if the ray meets no boundary up to ``r=1``);
2. hierarchical search: at stage ``s`` split the flattened dims into ``2^s`` contiguous blocks;
   for each block flip its signs in the best direction to get ``d'``; *fast check*: one query at
   ``clip(x + r_best·d')``; only if that is misclassified bisect ``r(d')`` in ``[0, r_best]``
   and keep ``d'`` when its radius is smaller. After the stage with one-dim blocks, restart at
   stage 0;
3. stop an example when its query budget is spent or, with ``early_stop``, once its best
   adversarial point is within ``eps``.

The batch runs in lockstep (same block schedule; masked, vectorised bisections) with
per-example state. Every forward costs one query for each example it is evaluated on,
including the clean check; an example never spends more than ``queries``.

Conventions:

* bisection keeps ``lo`` (correct) and ``hi`` (misclassified, verified by a query) and stops when
  ``hi - lo <= max(tol·hi, atol)`` (``tol`` relative); with ``early_stop`` it also stops as soon
  as ``hi <= eps``. A bisection cut short by the budget still yields its verified ``hi``.
* ``dist`` is the l_inf distance ``||x_best - x||_inf`` of the best misclassified point found,
  ``x_best = clip(x + r_best·d_best)`` (equal to ``r_best`` unless the [0,1] box truncates the
  ray); 0 for examples misclassified at the start, ``inf`` if none was found. With
  ``early_stop=True`` it is only an upper bound <= eps for successful examples, so the
  Average Decision-Boundary Distance (``RaySResult.adbd``, the mean ``dist`` over initially
  correct examples; paper Table 7) should be computed with ``early_stop=False`` and the full budget.
* ``x_adv`` is ``x_best`` where ``dist <= eps`` (misclassified, in the eps-ball and [0,1]) and
  ``x`` itself otherwise (robust examples, and examples misclassified at the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..common import InputError
from .attack import Attack, eval_mode


@dataclass(frozen=True)
class RaySResult:
    """Per-example outcome of :meth:`RayS.run` (all tensors have leading size B)."""

    x_adv: torch.Tensor  # (B,C,H,W) in the eps-ball and [0,1]
    dist: torch.Tensor  # (B,) l_inf distance of the best misclassified point (0 / inf, see module doc)
    queries: torch.Tensor  # (B,) int64, model queries spent per example
    robust: torch.Tensor  # (B,) bool: correctly classified at the start and dist > eps
    clean_correct: torch.Tensor  # (B,) bool: correctly classified at the start

    @property
    def adbd(self) -> float:
        """Average Decision-Boundary Distance: mean ``dist`` over initially correct examples.

        Meaningful with ``early_stop=False`` (full query budget), as in the paper's Table 7;
        ``inf`` if some correct example has no boundary point found, ``nan`` if none is correct.
        """
        return adbd(self)


def adbd(result: RaySResult, clean_correct: torch.Tensor | None = None) -> float:
    """Mean of ``result.dist`` over ``clean_correct`` (default: ``result.clean_correct``)."""
    mask = result.clean_correct if clean_correct is None else clean_correct.to(result.dist.device).bool()
    if not mask.any():
        return float("nan")
    return result.dist[mask].double().mean().item()


class RayS(Attack):
    """RayS hard-label l_inf attack; ``attack(x, y) -> x_adv``, ``attack.run(x, y) -> RaySResult``."""

    name = "rays"

    def __init__(self, model: nn.Module, eps: float = 0.031, queries: int = 10000, early_stop: bool = True,
                 seed: int | None = 0, tol: float = 1e-3, atol: float = 0.0, progress: bool = False):
        super().__init__(model)
        self.progress = progress
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 <= eps <= 1):
            raise InputError(f"eps must be a number in [0,1], got {eps!r}")
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise InputError(f"queries must be an integer >= 1, got {queries!r}")
        if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
            raise InputError(f"tol must be a number in [0,1), got {tol!r}")
        if not (isinstance(atol, (int, float)) and atol >= 0) or (tol == 0 and atol == 0):
            raise InputError(f"atol must be a number >= 0 (and tol or atol > 0), got {atol!r}")
        self.eps, self.queries, self.early_stop = float(eps), queries, bool(early_stop)
        self.seed, self.tol, self.atol = seed, float(tol), float(atol)

    def settings(self) -> dict:
        return {"name": self.name, "eps": self.eps, "queries": self.queries, "early_stop": self.early_stop,
                "seed": self.seed, "tol": self.tol, "atol": self.atol}

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._run(images, labels).x_adv

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> RaySResult:
        """The attack with per-example distances, queries and robustness (eval mode, float32)."""
        with eval_mode(self.model), torch.autocast(images.device.type, enabled=False):
            return self._run(images, labels)

    @torch.no_grad()
    def _run(self, images: torch.Tensor, labels: torch.Tensor) -> RaySResult:
        x = images.detach().flatten(1)
        y = labels.to(images.device)
        shape, (B, D), dev = images.shape, x.shape, images.device
        eps, budget = self.eps, self.queries
        queries = torch.zeros(B, dtype=torch.long, device=dev)

        def point(r: torch.Tensor, d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            """clip(x + r·d) for the rows ``idx``."""
            return (x[idx] + r[idx].to(x.dtype)[:, None] * d[idx]).clamp_(0, 1)

        def misclassified(r: torch.Tensor, d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """One query at clip(x + r·d) for each row in ``mask``; rows not queried read False."""
            out = torch.zeros(B, dtype=torch.bool, device=dev)
            idx = mask.nonzero().squeeze(1)
            if idx.numel():
                pred = self.model(point(r, d, idx).view(-1, *shape[1:])).argmax(1)
                out[idx] = pred != y[idx]
                queries[idx] += 1
            return out

        clean_correct = self.model(images.detach()).argmax(1) == y  # one query each
        queries += 1
        dist = torch.where(clean_correct, math.inf, 0.0).to(x.dtype)
        r_best = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        x_best = x.clone()
        if self.seed is None:
            d_best = torch.ones_like(x)
        else:
            g = torch.Generator().manual_seed(self.seed)
            d_best = (torch.randint(0, 2, (B, D), generator=g) * 2 - 1).to(device=dev, dtype=x.dtype)
        done = ~clean_correct | (queries >= budget)

        def try_direction(d: torch.Tensor) -> None:
            """Fast check of ``d`` at r_best, bisection where it passes, keep it where it is better."""
            active = ~done & (queries < budget)
            r_chk = torch.where(torch.isinf(r_best), 1.0, r_best)
            cand = misclassified(r_chk, d, active)
            lo, hi = torch.zeros_like(r_chk), r_chk.clone()
            while True:
                run = cand & (hi - lo > torch.clamp(self.tol * hi, min=self.atol)) & (queries < budget)
                if self.early_stop:
                    run &= hi > eps
                if not run.any():
                    break
                mid = (lo + hi) / 2
                adv = misclassified(mid, d, run)
                hi = torch.where(run & adv, mid, hi)
                lo = torch.where(run & ~adv, mid, lo)
            idx = (cand & (hi < r_best)).nonzero().squeeze(1)
            if idx.numel():
                d_best[idx] = d[idx]
                r_best[idx] = hi[idx]
                x_best[idx] = point(hi, d, idx)
                dist[idx] = (x_best[idx] - x[idx]).abs().amax(1)

        try_direction(d_best)  # radius of the initial direction, searched in [0, 1]
        stage, block = 0, 0
        bar = tqdm(total=B * budget, desc=f"RayS on {B} images", unit="query", leave=False, dynamic_ncols=True,
                   disable=not self.progress, mininterval=1.0)
        spent = 0
        while True:
            done |= queries >= budget
            if self.early_stop:
                done |= clean_correct & (dist <= eps)
            now = int(torch.where(done, budget, queries).sum()) if self.progress else 0
            if now > spent:  # finished images count as their whole budget: the bar's end is the attack's end
                bar.update(now - spent)
                spent = now
                bar.set_postfix(robust=f"{100.0 * (clean_correct & (dist > eps)).float().mean().item():.1f}%")
            if done.all():
                break
            n = min(2**stage, D)
            a, b = block * D // n, (block + 1) * D // n
            d = d_best.clone()
            d[:, a:b].neg_()
            try_direction(d)
            block += 1
            if block == n:
                block, stage = 0, (0 if n == D else stage + 1)

        bar.close()
        success = clean_correct & (dist <= eps)
        x_adv = torch.where(success[:, None], x_best, x).view(shape)
        return RaySResult(x_adv=x_adv, dist=dist, queries=queries, robust=clean_correct & ~success,
                          clean_correct=clean_correct)

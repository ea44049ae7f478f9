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
        search = _Search(self, images, labels)
        search.try_direction(search.d_best)  # radius of the initial direction, searched in [0, 1]
        search.hierarchical()
        return search.result()


class _Search:
    """The per-example state of one RayS run over a batch, flattened to (B, D), and its steps."""

    def __init__(self, attack: RayS, images: torch.Tensor, labels: torch.Tensor):
        self.attack, self.model = attack, attack.model
        self.x = x = images.detach().flatten(1)
        self.y = labels.to(images.device)
        self.shape, (self.B, self.D), dev = images.shape, x.shape, images.device
        self.queries = torch.zeros(self.B, dtype=torch.long, device=dev)
        self.clean_correct = self.model(images.detach()).argmax(1) == self.y  # one query each
        self.queries += 1
        self.dist = torch.where(self.clean_correct, math.inf, 0.0).to(x.dtype)
        self.r_best = torch.full((self.B,), math.inf, dtype=torch.float64, device=dev)
        self.x_best = x.clone()
        if attack.seed is None:
            self.d_best = torch.ones_like(x)
        else:
            g = torch.Generator().manual_seed(attack.seed)
            self.d_best = (torch.randint(0, 2, (self.B, self.D), generator=g) * 2 - 1).to(device=dev, dtype=x.dtype)
        self.done = ~self.clean_correct | (self.queries >= attack.queries)

    def point(self, r: torch.Tensor, d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """clip(x + r·d) for the rows ``idx``."""
        return (self.x[idx] + r[idx].to(self.x.dtype)[:, None] * d[idx]).clamp_(0, 1)

    def misclassified(self, r: torch.Tensor, d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One query at clip(x + r·d) for each row in ``mask``; rows not queried read False."""
        out = torch.zeros(self.B, dtype=torch.bool, device=self.x.device)
        idx = mask.nonzero().squeeze(1)
        if idx.numel():
            pred = self.model(self.point(r, d, idx).view(-1, *self.shape[1:])).argmax(1)
            out[idx] = pred != self.y[idx]
            self.queries[idx] += 1
        return out

    def try_direction(self, d: torch.Tensor) -> None:
        """Fast check of ``d`` at r_best, bisection where it passes, keep it where it is better."""
        a, budget = self.attack, self.attack.queries
        active = ~self.done & (self.queries < budget)
        r_chk = torch.where(torch.isinf(self.r_best), 1.0, self.r_best)
        cand = self.misclassified(r_chk, d, active)
        lo, hi = torch.zeros_like(r_chk), r_chk.clone()
        while True:
            run = cand & (hi - lo > torch.clamp(a.tol * hi, min=a.atol)) & (self.queries < budget)
            if a.early_stop:
                run &= hi > a.eps
            if not run.any():
                break
            mid = (lo + hi) / 2
            adv = self.misclassified(mid, d, run)
            hi = torch.where(run & adv, mid, hi)
            lo = torch.where(run & ~adv, mid, lo)
        idx = (cand & (hi < self.r_best)).nonzero().squeeze(1)
        if idx.numel():
            self.d_best[idx] = d[idx]
            self.r_best[idx] = hi[idx]
            self.x_best[idx] = self.point(hi, d, idx)
            self.dist[idx] = (self.x_best[idx] - self.x[idx]).abs().amax(1)

    def hierarchical(self) -> None:
        """Flip block after block of the best direction (2^s blocks at stage s) until every example is done."""
        a, budget, D = self.attack, self.attack.queries, self.D
        stage, block = 0, 0
        bar = tqdm(total=self.B * budget, desc=f"RayS on {self.B} images", unit="query", leave=False,
                   dynamic_ncols=True, disable=not a.progress, mininterval=1.0)
        spent = 0
        while True:
            self.done |= self.queries >= budget
            if a.early_stop:
                self.done |= self.clean_correct & (self.dist <= a.eps)
            now = int(torch.where(self.done, budget, self.queries).sum()) if a.progress else 0
            if now > spent:  # finished images count as their whole budget: the bar's end is the attack's end
                bar.update(now - spent)
                spent = now
                robust = 100.0 * (self.clean_correct & (self.dist > a.eps)).float().mean().item()
                bar.set_postfix(robust=f"{robust:.1f}%")
            if self.done.all():
                break
            n = min(2**stage, D)
            lo, hi = block * D // n, (block + 1) * D // n
            d = self.d_best.clone()
            d[:, lo:hi].neg_()
            self.try_direction(d)
            block += 1
            if block == n:
                block, stage = 0, (0 if n == D else stage + 1)
        bar.close()

    def result(self) -> RaySResult:
        success = self.clean_correct & (self.dist <= self.attack.eps)
        x_adv = torch.where(success[:, None], self.x_best, self.x).view(self.shape)
        return RaySResult(x_adv=x_adv, dist=self.dist, queries=self.queries, robust=self.clean_correct & ~success,
                          clean_correct=self.clean_correct)

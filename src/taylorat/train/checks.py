"""The per-epoch check: clean and PGD accuracy of the model on the selection split (which picks ``best``) and
on the tracked test and training images (curves only), each rank measuring its share of the images."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..attacks import PGD, correct_mask
from ..common import derive_seed
from . import distributed
from .config import Config


def _share(n: int, d: distributed.Dist) -> tuple[int, int]:
    """Rows of ``n`` that rank ``d.rank`` takes (contiguous, sizes differ by at most one)."""
    lo = (n // d.world) * d.rank + min(d.rank, n % d.world)
    return lo, lo + n // d.world + (1 if d.rank < n % d.world else 0)


class EpochCheck:
    """``evaluate()``: the selection split; ``track()``: the tracked images. ``model()`` gives the model to check
    (the weight average once it exists)."""

    def __init__(self, cfg: Config, prep: Any, device: torch.device, dist: distributed.Dist,
                 model: Callable[[], torch.nn.Module]):
        self.cfg, self.prep, self.device, self.dist, self.model = cfg, prep, device, dist, model
        e = cfg.eval
        sx, sy = (prep.holdout_x, prep.holdout_y) if e.select_on == "holdout" else (prep.test_x, prep.test_y)
        self.n_select = int(len(sy[: e.n]))
        lo, hi = _share(self.n_select, dist)  # each rank checks its share of the selection split
        self.select_x, self.select_y = sx[lo:hi].to(device), sy[lo:hi].to(device)
        self.tracked = self._tracked_sets()

    def _accuracy(self, x: torch.Tensor, y: torch.Tensor, n: int, what: str, *seed: Any) -> tuple[float, float]:
        """Clean and PGD accuracy (%) of ``eval_model`` over ``n`` images, this rank measuring its share ``x, y``.

        The attack is PGD at ``eval.eps/step/steps`` under the training norm, seeded by (seed, ``*seed``, rank).
        """
        e = self.cfg.eval
        model = self.model()
        attack = PGD(model, eps=e.eps, step=e.step, steps=e.steps, norm=self.cfg.attack.norm,
                     seed=derive_seed(self.cfg.seed, *seed, *([self.dist.rank] if self.dist.enabled else [])))
        clean = correct_mask(model, x, y, None, e.batch_size).sum()
        adv = correct_mask(model, x, y, attack, e.batch_size, progress=f"check: {what} PGD-{e.steps}"
                           if self.cfg.progress and self.dist.main else None).sum()
        counts = distributed.all_sum(torch.stack([clean, adv]).float().to(self.device), self.dist)
        return 100 * counts[0].item() / n, 100 * counts[1].item() / n

    def evaluate(self) -> dict[str, float]:
        """Clean and PGD accuracy (%) on the selection split, each rank on its share."""
        clean, pgd = self._accuracy(self.select_x, self.select_y, self.n_select, self.cfg.eval.select_on, "eval")
        return {"clean": clean, "pgd": pgd}

    def _tracked_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
        """Images measured every epoch for the curves only: ``{"test"|"train": (x, y, n)}`` (this rank's share)."""
        e, out = self.cfg.eval, {}
        if e.track_test:
            n = min(e.track_test, len(self.prep.test_y))
            lo, hi = _share(n, self.dist)
            out["test"] = (self.prep.test_x[lo:hi].to(self.device), self.prep.test_y[lo:hi].to(self.device), n)
        if e.track_train:
            n = min(e.track_train, len(self.prep.train_y))
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "track_train"))
            idx = torch.randperm(len(self.prep.train_y), generator=g)[:n].sort().values
            lo, hi = _share(n, self.dist)
            idx = idx[lo:hi]
            out["train"] = (self.prep.train_x[idx].to(self.device), self.prep.train_y[idx].to(self.device), n)
        return out

    def track(self) -> dict[str, float]:
        """Clean and PGD accuracy (%) on the tracked test and training images (curves; never selection)."""
        out = {}
        for name, (x, y, n) in self.tracked.items():
            out[f"track_{name}_clean"], out[f"track_{name}_pgd"] = self._accuracy(x, y, n, f"tracked {name}",
                                                                                  "track", name)
        return out

"""Learning-rate and checkpoint schedules, as pure functions of the epoch (so resume is exact).

Epochs are 1-based as in the paper. The learning rate is multiplied by ``gamma`` from epoch
``round(m·E)`` on (but never from epoch 1) for each milestone fraction ``m`` (paper: ÷10 at 100 and 150 of E = 200, the
authors' ``epoch >= 100`` rule). Extra checkpoints follow paper App. B.2 scaled to E: every epoch
in [100, 110] and [150, 160], every 5 epochs in (110, 150) and (160, 200].
"""

from __future__ import annotations

import math


def milestone_epochs(epochs: int, milestones: list[float]) -> list[int]:
    """First epoch of each decay: ``round(m·E)`` (100 and 150 for E = 200), never the first epoch."""
    return [max(2, math.floor(m * epochs + 0.5)) for m in milestones]


def lr_at(epoch: int, base_lr: float, epochs: int, milestones: list[float], gamma: float) -> float:
    """Learning rate of 1-based ``epoch``."""
    lr = base_lr
    for m in milestone_epochs(epochs, milestones):
        if epoch >= m:
            lr *= gamma
    return lr


def paper_checkpoint_epochs(epochs: int) -> list[int]:
    """App. B.2's checkpoint epochs, scaled from 200 to ``epochs``."""
    s = epochs / 200

    def at(e: float) -> int:
        return min(epochs, max(1, round(e * s)))

    every = max(1, round(5 * s))
    out: set[int] = set()
    for lo, hi in ((100, 110), (150, 160)):
        out.update(range(at(lo), at(hi) + 1))
    for lo, hi in ((110, 150), (160, 200)):
        out.update(range(at(lo), at(hi) + 1, every))
        out.add(at(hi))
    return sorted(out)

"""Learning-rate and checkpoint schedules, as pure functions of the epoch or step (so resume is exact).

Epochs are 1-based as in the paper. The learning rate is multiplied by ``gamma`` from epoch
``round(m·E)`` on (but never from epoch 1) for each milestone fraction ``m`` (paper: ÷10 at 100 and 150 of E = 200, the
authors' ``epoch >= 100`` rule). Extra checkpoints follow paper App. B.2 scaled to E: every epoch
in [100, 110] and [150, 160], every 5 epochs in (110, 150) and (160, 200].
"""

from __future__ import annotations

import math


def milestone_epochs(epochs: int, milestones: list[float]) -> list[int]:
    """First epoch of each decay: ``round(m·E)`` (100 and 150 for E = 200), never the first epoch.

    Distinct fractions stay distinct epochs while there are epochs left (E = 3: epochs 2 and 3,
    not both 2, which would divide the rate by 100 at once); a milestone pushed past the last
    epoch never applies (see :func:`schedule_warning`).
    """
    out: list[int] = []
    for i, m in enumerate(milestones):
        e = max(2, math.floor(m * epochs + 0.5))
        if i and m > milestones[i - 1] and e <= out[-1]:
            e = out[-1] + 1
        out.append(e)
    return out


def schedule_warning(epochs: int, milestones: list[float]) -> str | None:
    """A sentence when the schedule cannot be what the fractions say (too few epochs), else None."""
    ms = milestone_epochs(epochs, milestones)
    late = [e for e in ms if e > epochs]
    same = len(set(ms)) < len(ms)
    if not late and not same:
        return None
    what = (f"{len(late)} of the {len(ms)} learning-rate drops fall after the last epoch and never apply" if late
            else "two learning-rate drops fall on the same epoch")
    return (f"with optim.epochs={epochs} the milestones {milestones} give drop epochs {ms}: {what}; "
            "train more epochs or give fewer milestones")


def describe_schedule(base_lr: float, epochs: int, milestones: list[float], gamma: float) -> str:
    """``lr 0.1 for epochs 1-99, 0.01 for 100-149, 0.001 for 150-200``."""
    parts, start = [], 1
    for e in sorted(set(m for m in milestone_epochs(epochs, milestones) if m <= epochs)) + [epochs + 1]:
        if e > start:
            lr = lr_at(start, base_lr, epochs, milestones, gamma)
            parts.append(f"{lr:.4g} for epoch{'s' if e - 1 > start else ''} {start}" + (f"-{e - 1}" if e - 1 > start
                                                                                           else ""))
        start = e
    return "lr " + ", ".join(parts)


def lr_at(epoch: int, base_lr: float, epochs: int, milestones: list[float], gamma: float) -> float:
    """Learning rate of 1-based ``epoch``."""
    lr = base_lr
    for m in milestone_epochs(epochs, milestones):
        if epoch >= m:
            lr *= gamma
    return lr


def lr_at_step(step: int, steps_per_epoch: int, base_lr: float, epochs: int, milestones: list[float], gamma: float,
               schedule: str = "step", warmup_epochs: float = 0.0) -> float:
    """Learning rate of the 0-based optimizer ``step`` (``steps_per_epoch`` per epoch).

    ``schedule="step"``: :func:`lr_at` of the step's epoch; ``"cosine"``: ``lr·½(1 + cos(π·t))`` with
    ``t`` the fraction of the steps after the warm-up done so far. A warm-up of ``W`` epochs
    multiplies either by ``(s + 1) / (W·steps_per_epoch)`` for its first steps ``s`` (linear, per step).
    """
    if schedule not in ("step", "cosine"):
        raise ValueError(f"schedule must be step or cosine, got {schedule!r}")
    total, warm = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
    if schedule == "step":
        lr = lr_at(step // steps_per_epoch + 1, base_lr, epochs, milestones, gamma)
    else:
        t = min(1.0, max(0, step - warm) / max(1, total - warm))
        lr = base_lr * 0.5 * (1 + math.cos(math.pi * t))
    return lr * min(1.0, (step + 1) / warm) if step < warm else lr


def describe(o) -> str:
    """The schedule of an ``optim`` config section in words (step: :func:`describe_schedule`)."""
    warm = f", linear warm-up over {o.warmup_epochs:g} epochs" if o.warmup_epochs else ""
    if o.schedule == "cosine":
        return f"lr {o.lr:.4g} cosine to 0 over {o.epochs} epochs{warm}"
    return describe_schedule(o.lr, o.epochs, o.milestones, o.gamma) + warm


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

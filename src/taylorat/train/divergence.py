"""When training has diverged: a loss that is not finite, or that exceeds ``optim.diverge_factor`` times the
early loss; the one-line stop says where, what is kept, and whether a resumed-from checkpoint is intact."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import checkpoint as ckpt
from ..common import TayloratError
from . import run_dir

if TYPE_CHECKING:
    from .trainer import Trainer


class TrainingDiverged(TayloratError, RuntimeError):
    """The loss became NaN or infinite, or exploded (``optim.diverge_factor``); exit code 3."""

    exit_code = 3


def loss_bound(factor: float, history: list[dict[str, Any]], num_classes: int) -> float:
    """``factor`` x max(ln K, median of the first three epochs' mean loss); inf when ``factor`` is 0."""
    if not factor:
        return math.inf
    first = sorted(h["train_loss"] for h in history[:3])
    median = first[len(first) // 2] if first else 0.0
    return factor * max(math.log(num_classes), median)


def check_loss(t: Trainer, loss: float, epoch: int, step: int) -> None:
    """Stop the run (:func:`diverged`) when ``loss`` is not finite or exceeds :func:`loss_bound`."""
    if not math.isfinite(loss):
        diverged(t, epoch, step, "is not finite")
    bound = loss_bound(t.cfg.optim.diverge_factor, t.history, t.dataset.num_classes)
    if loss > bound:
        diverged(t, epoch, step, f"exploded ({loss:.3g} > {bound:.3g}, optim.diverge_factor "
                                 f"{t.cfg.optim.diverge_factor:g} x the early loss)")


def diverged(t: Trainer, epoch: int, step: int, what: str) -> None:
    """One line: where, what is kept, and (after a resume) whether the checkpoint it came from is intact."""
    kept, _ = run_dir.newest_intact(t.out)
    keep = (f"the last kept checkpoint is {kept} (epoch {ckpt.read_meta(kept).get('epoch')})" if kept
            else "no checkpoint was kept")
    cause = "lower optim.lr"
    if t.resumed_from is not None:
        try:
            ckpt.read_meta(t.resumed_from)
            cause = f"the checkpoint it resumed from ({t.resumed_from.name}) is intact: lower optim.lr"
        except ckpt.CheckpointError as e:
            cause = f"it resumed from a damaged checkpoint ({str(e).splitlines()[0]})"
    raise TrainingDiverged(f"loss {what} at epoch {epoch}, step {step}; {cause}; {keep}")

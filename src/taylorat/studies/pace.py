"""How long a study has left, from the runs timed so far in this call."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..train.run_dir import RESUMABLE

# what a run folder holds once a run has trained an epoch (its resumable checkpoints) or been evaluated
PRIOR_WORK = (*RESUMABLE, "eval.json")


def from_scratch(run_dir: str | Path) -> bool:
    """True when the run has done no work yet: its time in this call is what a whole run costs. A run that
    resumes, or is only evaluated (or read back), takes a part of it and would make the estimate too short."""
    return not any((Path(run_dir) / name).exists() for name in PRIOR_WORK)


def time_left(pending: list[str], running: list[tuple[str, float]], took: dict[str, list[float]],
              jobs: int) -> float | None:
    """Seconds until the study is done, ``jobs`` runs at a time: each run left costs the mean time of the runs
    of its label timed so far (of all timed runs for a label not timed yet), less what a running one has had.
    None before any run was timed."""
    if not took:
        return None
    every = [t for ts in took.values() for t in ts]
    cost = {label: sum(ts) / len(ts) for label, ts in took.items()}
    fallback = sum(every) / len(every)
    work = sum(cost.get(label, fallback) for label in pending)
    work += sum(max(cost.get(label, fallback) - had, 0.0) for label, had in running)
    return work / max(1, jobs)


class Pace:
    """The runs timed in this call (those that started from scratch, :func:`from_scratch`), by label, and the
    time the study has left."""

    def __init__(self, jobs: int):
        self.jobs, self.took = jobs, {}

    def finished(self, label: str, seconds: float, scratch: bool) -> None:
        if scratch:
            self.took.setdefault(label, []).append(seconds)

    def report(self, pending: list[str], running: list[tuple[str, float]], log: Callable[[str], None]) -> None:
        """Log ``about 2.5 h left for 7 runs`` while runs are left and one was timed."""
        left = time_left(pending, running, self.took, self.jobs)
        if left is not None and (pending or running):
            when = f"{left / 3600:.1f} h" if left >= 5400 else f"{left / 60:.0f} min"
            log(f"about {when} left for {len(pending) + len(running)} runs, from the runs timed in this call")

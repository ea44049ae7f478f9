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
              jobs: int) -> tuple[float, list[str]] | None:
    """Seconds until the runs of the labels timed so far are done, ``jobs`` runs at a time (each costs the mean
    time of its label's timed runs, less what a running one has had), and the labels of the runs left that were
    not timed yet (one entry per run: their cost is unknown, a guess from other labels can be off by hours).
    None before any run was timed."""
    if not took:
        return None
    cost = {label: sum(ts) / len(ts) for label, ts in took.items()}
    work = sum(cost[label] for label in pending if label in cost)
    work += sum(max(cost[label] - had, 0.0) for label, had in running if label in cost)
    untimed = [label for label in [*pending, *(label for label, _ in running)] if label not in cost]
    return work / max(1, jobs), untimed


class Pace:
    """The runs timed in this call (those that started from scratch, :func:`from_scratch`), by label, and the
    time the study has left."""

    def __init__(self, jobs: int):
        self.jobs, self.took = jobs, {}

    def finished(self, label: str, seconds: float, scratch: bool) -> None:
        if scratch:
            self.took.setdefault(label, []).append(seconds)

    def report(self, pending: list[str], running: list[tuple[str, float]], log: Callable[[str], None]) -> None:
        """Log ``about 2.5 h left for 7 runs`` while runs of a timed label are left, and name the labels of
        the runs left that were not timed yet."""
        left = time_left(pending, running, self.took, self.jobs)
        if left is None:
            return
        seconds, untimed = left
        timed = len(pending) + len(running) - len(untimed)
        if not timed:
            return
        when = f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"
        if not untimed:
            log(f"about {when} left for {_runs(timed)}, from the runs timed in this call")
            return
        log(f"about {when} left for the {_runs(timed)} of methods timed in this call, and {len(untimed)} more "
            f"of methods not timed yet ({', '.join(dict.fromkeys(untimed))})")


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"

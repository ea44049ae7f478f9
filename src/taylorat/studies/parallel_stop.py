"""SIGTERM to a parallel study (``--jobs N``): the workers get it too, checkpoint their runs, and then the study stops.

Without this, SIGTERM's default action ends the parent at once and leaves its worker processes
training with nobody to collect their results (Ctrl-C reaches the whole terminal's process group, a
``kill PID`` only the parent). Running the same command again resumes every run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator

from ..common import TayloratError


class StudyStopped(TayloratError):
    """The study's parent process got SIGTERM; its running runs were checkpointed (exit 128 + signal)."""

    prefix = ""

    def __init__(self, signum: int):
        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: every running run was told to checkpoint; "
                         "run the same command again to continue")

    def __reduce__(self):  # pickled by value, as the default would call __init__ with the message
        return type(self), (self.signum,)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`StudyStopped` in the main thread (where the study waits for its runs)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def handle(signum: int, frame: object) -> None:
        raise StudyStopped(signum)

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def forward_to_workers(signum: int) -> int:
    """Send ``signum`` to every live worker process this process started; how many got it."""
    workers = multiprocessing.active_children()
    for p in workers:
        with contextlib.suppress(ProcessLookupError):  # it ended in between
            os.kill(p.pid, signum)
    return len(workers)

"""SIGTERM / SIGINT: finish the current step, write a checkpoint, exit cleanly.

Inside ``StopOnSignal()`` a signal only sets ``.signum``; the trainer checks it between steps,
saves a mid-epoch checkpoint (weights, optimizer, RNG state, position in the epoch) and stops,
so ``--resume`` continues exactly where it stopped. The previous handlers come back on exit.
"""

from __future__ import annotations

import signal
import threading

from ..common import TayloratError


class StopOnSignal:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Stopped(TayloratError):
    """Training stopped on a signal after writing a checkpoint (``step`` 0: at the end of ``epoch``).

    The CLI exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT).
    """

    prefix = ""

    def __init__(self, signum: int, epoch: int, step: int, path: str):
        self.signum, self.epoch, self.step, self.path = signum, epoch, step, path
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        where = f"in epoch {epoch} after step {step}" if step else f"after epoch {epoch}"
        super().__init__(f"stopped by {name} {where}; checkpoint {path}; continue with --resume")

    def __reduce__(self):  # pickled by value: a stop in a study's worker process reaches its parent intact
        return type(self), (self.signum, self.epoch, self.step, self.path)

"""A worker process that stops when the process that started it dies."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Linux: ``sig`` to this process when its parent dies, even by SIGKILL.

    A torchrun rank, or a study's worker process, then checkpoints and stops (``taylorat.train.signals``) instead
    of training on alone and holding its run folder. Returns whether the signal is set (False off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no C library to call: the process runs as before
        return False
    if os.getppid() != parent:  # the parent died before the signal was set
        os.kill(os.getpid(), sig)
    return True

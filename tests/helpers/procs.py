"""Processes seen through Linux /proc: a launcher's children, whether they run, their torchrun rank."""

import os


def children(pid):
    """PIDs whose parent is ``pid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def rank_of(pid):
    """The torchrun rank of process ``pid`` (its RANK environment variable)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        return int(next(v for v in f.read().split(b"\0") if v.startswith(b"RANK=")).split(b"=")[1])

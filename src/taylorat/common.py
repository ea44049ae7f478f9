"""Small helpers every layer uses; this module imports nothing of taylorat.

* error types: :class:`TayloratError` and :class:`InputError` (bad input: the CLI prints it as
  one line; anything else is a bug and keeps its traceback);
* files written atomically (temp file in the same directory, fsync, rename, fsync the directory);
* devices, seeds, and [0,1] images from uint8 or float tensors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class TayloratError(Exception):
    """An error taylorat raises on purpose; its message names the fix.

    The CLI prints ``taylorat: {prefix}{message}`` and exits with ``exit_code``.
    """

    exit_code = 2
    prefix = "error: "


class InputError(TayloratError, ValueError):
    """Bad input (a value, a file, a name): reported as one line."""


class MissingDependency(InputError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency or raise a one-line :class:`MissingDependency` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}: pip install 'taylorat[{extra}]'") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda``, ``cuda:N``; one-line error without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"device={name!r} is not one of auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    return dev


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed mixed from ``parts`` (independent streams per run, epoch and purpose)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def as_float_images(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Images as float32 in [0,1]: uint8 tensors are divided by 255, float tensors cast (optionally moved)."""
    if device is not None:
        x = x.to(device)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def check_unit_range(x: torch.Tensor, what: str = "images") -> None:
    """Refuse float images outside [0,1] (normalized ones, say); uint8 images are in range by type."""
    if x.dtype != torch.uint8 and x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError(f"{what} must lie in [0,1] (got [{x.min().item():.3g}, {x.max().item():.3g}]); "
                         "keep normalization inside the model")


def new_figure(what: str, **kwargs: Any):
    """A matplotlib ``Figure`` (no pyplot state); one-line error naming ``taylorat[plot]`` without matplotlib."""
    require("matplotlib", "plot", what)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def write_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """Render a matplotlib figure to PNG and write it atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)

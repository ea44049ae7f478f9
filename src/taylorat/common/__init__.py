"""Small helpers every layer uses; this package imports nothing else of taylorat (errors.py, files.py and
registry.py hold the parts named below).

* error types: :class:`TayloratError` and :class:`InputError` (bad input: the CLI prints it as
  one line; anything else is a bug and keeps its traceback);
* files written atomically (temp file in the same directory, fsync, rename, fsync the directory), sets
  of files written whole or not at all (:func:`atomic_folder`), and a writer's lock on a folder
  (:class:`FolderLock`);
* a worker that stops with its parent (:func:`~taylorat.common.processes.stop_with_parent`);
* devices, seeds, and [0,1] images from uint8 or float tensors;
* :class:`Registry`, the name -> object table behind models, bases, attacks and datasets, with one
  "unknown ... did you mean" wording (:func:`did_you_mean`), and :func:`import_plugins`, which
  imports the user's own modules or ``.py`` files that register more of them (``TAYLORAT_PLUGINS``).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, MissingDependency, TayloratError, first_line, require
from .files import (
    FolderLock,
    FolderLocked,
    atomic_folder,
    atomic_write_bytes,
    atomic_write_text,
    describe_os_error,
    is_temp_name,
    read_json,
    read_jsonl,
    read_text,
    remove_temp_files,
)
from .registry import PLUGINS_ENV, Registry, did_you_mean, import_plugins, load_plugins_from_env

__all__ = ["TayloratError", "InputError", "MissingDependency", "first_line", "require", "FolderLock", "FolderLocked",
           "atomic_folder",
           "atomic_write_bytes", "atomic_write_text", "describe_os_error", "is_temp_name", "read_json", "read_jsonl",
           "read_text", "remove_temp_files", "PLUGINS_ENV", "Registry", "did_you_mean", "import_plugins",
           "load_plugins_from_env", "resolve_device", "derive_seed", "as_float_images", "check_unit_range",
           "new_figure", "write_figure"]


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
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra [plot]

    return Figure(**kwargs)


def write_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """Render a matplotlib figure to PNG and write it atomically."""

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)

"""Datasets by name: each is one :class:`DatasetSpec` in the registry, read by ``load``, ``geometry``,
``train_size`` and ``locate``.

The built-in declarations live next to their loaders in :mod:`taylorat.data.sets`; a user's own dataset
is one file that calls :func:`register_dataset` (imported with ``TAYLORAT_PLUGINS=my_data.py``)::

    from taylorat.data import Dataset, DatasetSpec, register_dataset

    def load_toy(data_dir, download):
        x, y = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.arange(64) % 4
        return Dataset("toy", x[:48], y[:48], x[48:], y[48:], num_classes=4, crop=False, flip=False)

    register_dataset(DatasetSpec("toy", geometry=(1, 8, 4), train_size=48, loader=load_toy))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common import InputError, Registry
from . import fetch
from .dataset import Dataset, DatasetNotFoundError

__all__ = ["DATASETS", "DEFAULT_DATA_DIR", "DatasetSpec", "available", "conventional_eps", "geometry", "load",
           "locate", "register_dataset", "train_size", "unregister_dataset"]

Geometry = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, declared once.

    Attributes:
        name: the registry name (lowercase, ``_`` rather than ``-``; requests may use either).
        geometry: ``(channels, image_size, num_classes)``, or a function of the options giving it.
        train_size: training images before any hold-out, or a function of the options giving it.
        loader: ``loader(data_dir: Path, download: bool, **options) -> Dataset``.
        options: the options ``load`` accepts, with their defaults (others are refused before the loader runs).
        files: the dataset's files in words, for "put FILES in DATA_DIR" messages.
        urls: where a download fetches them (probed before a dry run promises a download).
        find: ``find(data_dir) -> str | None``: where the files are on disk, in words, or None if absent;
            no ``find`` means the dataset is built in (no files).
        eps: the conventional l_inf radius of its robustness literature (0.1 for MNIST-like images, 8/255 for
            CIFAR and SVHN), used to evaluate weights that do not record the radius they were trained for.
    """

    name: str
    geometry: Geometry | Callable[[dict[str, Any]], Geometry]
    train_size: int | Callable[[dict[str, Any]], int]
    loader: Callable[..., Dataset]
    options: Mapping[str, Any] = field(default_factory=dict)
    files: str = ""
    urls: tuple[str, ...] = ()
    find: Callable[[Path], str | None] | None = None
    eps: float | None = None


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


DATASETS: Registry[DatasetSpec] = Registry("dataset", sort=True, normalize=_normalize)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry: ``load(spec.name)`` and every config and command then know it."""
    if not isinstance(spec, DatasetSpec):
        raise InputError(f"register_dataset takes a DatasetSpec, got {type(spec).__name__}")
    if not spec.name or _normalize(spec.name) != spec.name:
        raise InputError(f"dataset name {spec.name!r} must be lowercase with _ (e.g. {_normalize(spec.name)!r})")
    return DATASETS.register(spec.name, spec)


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (tests and plug-ins that replace one)."""
    DATASETS.unregister(name)


# ------------------------------------------------------------- loader helpers
#: where datasets are looked for (and downloaded to) when no folder is given
DEFAULT_DATA_DIR = "./data"


class _DataDir(type(Path())):  # type: ignore[misc]
    """A Path that remembers how the caller spelled it (``./data`` stays ``./data``) and whether it was given."""

    shown: str = ""
    given: bool = True


def data_dir_path(p: str | os.PathLike | None) -> Path:
    """``p`` as a Path (``~`` expanded) whose ``shown`` attribute keeps the caller's spelling for messages.

    None (no folder given) is :data:`DEFAULT_DATA_DIR` with ``given`` False: only then may a loader fall back
    to a system-wide copy (Debian's Fashion-MNIST); a folder the caller names must hold the files itself.
    """
    shown = DEFAULT_DATA_DIR if p is None else os.fspath(p)
    d = _DataDir(os.path.expanduser(shown))
    d.shown, d.given = shown, p is not None
    return d


def given(data_dir: Path) -> bool:
    """Whether the caller named ``data_dir`` (False for the default ``./data``, which allows fallbacks)."""
    return getattr(data_dir, "given", True)


def shown(data_dir: Path) -> str:
    """The data folder as the caller spelled it."""
    return getattr(data_dir, "shown", "") or str(data_dir)


def not_found(name: str, data_dir: Path, download: bool, reason: str | None, what: str) -> DatasetNotFoundError:
    """The one-line error for a dataset neither on disk nor downloadable: put ``what`` in ``data_dir``."""
    where = shown(data_dir)
    if not download:
        how = "and download=False"
    elif reason == "no network":
        how = "and could not be downloaded (no network)"
    else:
        how = "and could not be downloaded" + (f" ({reason})" if reason else "")
    msg = f"{name} not found in {where} {how}: put {what} in {where}, or {DatasetNotFoundError.GENERIC}"
    return DatasetNotFoundError(" ".join(msg.split()))  # guarantee one line


def as_labels(t: Any) -> torch.Tensor:
    """Labels (a list, a numpy array) as a contiguous int64 tensor."""
    return torch.as_tensor(np.asarray(t), dtype=torch.int64).contiguous()


def _check_options(name: str, options: dict[str, Any], accepted: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        acc = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise InputError(f"unknown option(s) for dataset '{name}': {', '.join(unknown)}; accepted options: {acc}")
    return {**accepted, **options}


# ------------------------------------------------------------------ queries
def available() -> list[str]:
    """Names accepted by :func:`load`, sorted."""
    return DATASETS.names()


def geometry(name: str, **options: Any) -> tuple[int, int, int]:
    """``(channels, image_size, num_classes)`` of a dataset, without reading its files."""
    spec = DATASETS.get(name)
    g = spec.geometry({**spec.options, **options}) if callable(spec.geometry) else spec.geometry
    return int(g[0]), int(g[1]), int(g[2])


def train_size(name: str, **options: Any) -> int:
    """How many training images the dataset has (before any hold-out), without reading it."""
    spec = DATASETS.get(name)
    return int(spec.train_size({**spec.options, **options}) if callable(spec.train_size) else spec.train_size)


def conventional_eps(name: str) -> float | None:
    """The dataset's conventional l_inf radius (:attr:`DatasetSpec.eps`), or None if it declares none."""
    return DATASETS.get(name).eps


def locate(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """Where :func:`load` would find the dataset, in words, without reading it (for dry runs).

    ``on disk: PATH``, ``built in (no files)``, ``not on disk: will download to DIR``; a dataset that is
    neither on disk nor downloadable raises the same one-line :class:`DatasetNotFoundError` as
    :func:`load` would.
    """
    spec, d = DATASETS.get(name), data_dir_path(data_dir)
    if spec.find is None:
        return "built in (no files)"
    where = spec.find(d)
    if where is not None:
        return f"on disk: {where}"
    if not download:
        raise not_found(spec.name, d, False, None, spec.files)
    if not fetch.reachable(list(spec.urls)):
        raise not_found(spec.name, d, True, "no network", spec.files)
    return f"not on disk: will download to {shown(d)}"


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, **options: Any) -> Dataset:
    """Load dataset ``name`` as uint8 NCHW tensors; ``info["source"]`` names what was read.

    Args:
        name: one of :func:`available` (case-insensitive, ``-`` accepted for ``_``).
        data_dir: folder with the dataset's files (ignored by ``digits`` and
            ``synthetic``). For ``mnist``/``fashion_mnist`` it may also hold the
            four IDX files directly. None: ``./data``, and for ``fashion_mnist`` then
            ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``);
            a folder given explicitly must hold the files (or receive the download).
        download: try to download missing files (skipped quickly without network).
        **options: dataset-specific options (only ``synthetic`` has any).

    Raises:
        ValueError: unknown name or option.
        DatasetNotFoundError: files missing and not downloadable (one-line message).
        DatasetFormatError: a data file is corrupt or truncated.
    """
    spec = DATASETS.get(name)
    opts = _check_options(spec.name, dict(options), spec.options)
    return spec.loader(data_dir_path(data_dir), bool(download), **opts)

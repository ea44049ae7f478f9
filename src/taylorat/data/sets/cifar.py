"""CIFAR-10 and CIFAR-100, read through torchvision from its archive or the extracted folder.

The file names and URLs are torchvision's (``CIFAR10.filename``, ``.base_folder``, ``.url``); they are
spelled out here so that declaring the datasets does not import torchvision.
"""

from __future__ import annotations

import contextlib
import io
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...common import first_line
from .. import fetch
from ..dataset import Dataset
from ..registry import DatasetSpec, as_labels, not_found, register_dataset

# name -> (torchvision class, archive, extracted folder, classes)
_FILES = {"cifar10": ("CIFAR10", "cifar-10-python.tar.gz", "cifar-10-batches-py", 10),
          "cifar100": ("CIFAR100", "cifar-100-python.tar.gz", "cifar-100-python", 100)}
_URL = "https://www.cs.toronto.edu/~kriz/"


def _what(name: str) -> str:
    _, archive, folder, _ = _FILES[name]
    return f"{archive} (or the extracted {folder}/)"


def _find(name: str, d: Path) -> str | None:
    _, archive, folder, _ = _FILES[name]
    if (d / folder).is_dir():
        return f"{d / folder}"
    if (d / archive).is_file():
        return f"{d / archive} (extracted on first use)"
    return None


def _nhwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.uint8).transpose(0, 3, 1, 2)))


def _load(name: str, data_dir: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd  # noqa: PLC0415 - read only when the dataset is loaded

    cls = getattr(tvd, _FILES[name][0])
    archive, folder = cls.filename, cls.base_folder
    source = "disk"

    def make(dl: bool):
        return cls(root=str(data_dir), train=True, download=dl), cls(root=str(data_dir), train=False, download=dl)

    try:
        train, test = make(False)
    except RuntimeError:
        # The archive may be present but not yet extracted: torchvision's
        # "download" then only checks its md5 and extracts, with no network.
        has_archive = (data_dir / archive).is_file()
        if not (download or has_archive):
            raise not_found(name, data_dir, download, None, _what(name)) from None
        if has_archive:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    res, reason = make(True), None
            except Exception as e:  # noqa: BLE001 - corrupt archive, then no network
                res, reason = None, first_line(e)
            source = "archive"
        else:
            res, reason = fetch.try_download(lambda: make(True), [cls.url])
            source = "downloaded"
        if res is None:
            raise not_found(name, data_dir, download, reason, _what(name)) from None
        train, test = res
    return Dataset(
        name=name,
        train_x=_nhwc_to_nchw(train.data),
        train_y=as_labels(train.targets),
        test_x=_nhwc_to_nchw(test.data),
        test_y=as_labels(test.targets),
        num_classes=_FILES[name][3],
        crop=True,
        flip=True,
        info={
            "source": str(data_dir / folder),
            "obtained": source,
            "reader": f"torchvision.datasets.{cls.__name__}",
            "n_train": len(train.targets),
            "n_test": len(test.targets),
        },
    )


def _spec(name: str) -> DatasetSpec:
    _, archive, _, classes = _FILES[name]
    return DatasetSpec(name, geometry=(3, 32, classes), train_size=50_000, loader=partial(_load, name),
                       files=_what(name), urls=(_URL + archive,), find=partial(_find, name), eps=8 / 255)


register_dataset(_spec("cifar10"))
register_dataset(_spec("cifar100"))

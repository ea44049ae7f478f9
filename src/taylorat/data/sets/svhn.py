"""SVHN (cropped digits, train and test splits), read through torchvision from its two ``.mat`` files.

The file names and URL are torchvision's (``SVHN.split_list``), spelled out so that declaring the
dataset does not import torchvision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import fetch
from ..dataset import Dataset
from ..registry import DatasetSpec, as_labels, not_found, register_dataset

_FILES = ("train_32x32.mat", "test_32x32.mat")
_URL = "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"
_WHAT = " and ".join(_FILES)


def _find(d: Path) -> str | None:
    return f"{d}" if all((d / f).is_file() for f in _FILES) else None


def _load(data_dir: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd  # noqa: PLC0415 - read only when the dataset is loaded

    def make(dl: bool):
        return (
            tvd.SVHN(root=str(data_dir), split="train", download=dl),
            tvd.SVHN(root=str(data_dir), split="test", download=dl),
        )

    source = "disk"
    try:
        train, test = make(False)
    except RuntimeError:
        if not download:
            raise not_found("svhn", data_dir, download, None, _WHAT) from None
        res, reason = fetch.try_download(lambda: make(True), [tvd.SVHN.split_list["train"][0]])
        if res is None:
            raise not_found("svhn", data_dir, download, reason, _WHAT) from None
        train, test = res
        source = "downloaded"
    return Dataset(
        name="svhn",
        train_x=torch.from_numpy(np.ascontiguousarray(train.data, dtype=np.uint8)),
        train_y=as_labels(train.labels),
        test_x=torch.from_numpy(np.ascontiguousarray(test.data, dtype=np.uint8)),
        test_y=as_labels(test.labels),
        num_classes=10,
        crop=True,
        flip=False,  # flipped digits are different digits
        info={
            "source": str(data_dir),
            "obtained": source,
            "reader": "torchvision.datasets.SVHN",
            "n_train": len(train.labels),
            "n_test": len(test.labels),
        },
    )


register_dataset(DatasetSpec("svhn", geometry=(3, 32, 10), train_size=73_257, loader=_load, files=_WHAT,
                             urls=(_URL,), find=_find, eps=8 / 255))

"""MNIST and Fashion-MNIST: the four IDX files (gzipped or not), read directly, else downloaded by torchvision.

The files are looked for straight in ``data_dir`` (the Debian package layout), then in torchvision's
``<data_dir>/<Class>/raw/``, and for ``fashion_mnist`` when no folder was given then in the system-wide
copy of Debian's ``dataset-fashion-mnist`` package; only then downloaded. The conventional radius of
both is l_inf 0.1. The mirrors are torchvision's
(``MNIST.mirrors``, ``FashionMNIST.mirrors``), spelled out so that declaring the datasets does not
import torchvision.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from .. import fetch
from ..dataset import Dataset, DatasetNotFoundError
from ..idx import find_idx_files, load_idx_folder, missing_idx_files
from ..registry import DatasetSpec, as_labels, given, not_found, register_dataset, shown

#: where the Debian package ``dataset-fashion-mnist`` installs the four IDX files
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# name -> (torchvision class, download mirrors)
_SOURCES = {
    "mnist": ("MNIST", ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")),
    "fashion_mnist": ("FashionMNIST", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)),
}
_WHAT = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
         "t10k-labels-idx1-ubyte.gz (or uncompressed)")


def _folder_with_files(name: str, data_dir: Path) -> Path | None:
    """The first folder holding all four IDX files, or None; a folder with only some of them is an error."""
    folders = [data_dir, data_dir / _SOURCES[name][0] / "raw"]
    for f in folders:  # a folder with some of the files is a mistake to report, not to work around
        missing = missing_idx_files(f)
        if missing:
            raise DatasetNotFoundError(f"{name} in {shown(data_dir) if f is data_dir else f} is incomplete: "
                                       f"{', '.join(missing)} missing; put all four IDX files there")
    if name == "fashion_mnist" and not given(data_dir):  # the system copy only when no folder was named
        folders.append(DEBIAN_FASHION_MNIST_DIR)
    return next((f for f in folders if find_idx_files(f) is not None), None)


def _find(name: str, data_dir: Path) -> str | None:
    found = _folder_with_files(name, data_dir)
    return None if found is None else f"{found}"


def _load(name: str, data_dir: Path, download: bool) -> Dataset:
    found_in = _folder_with_files(name, data_dir)
    if found_in is not None:
        train_x, train_y, test_x, test_y, files = load_idx_folder(found_in)
        ds = _dataset(name, train_x, train_y, test_x, test_y, str(found_in), "idx files")
        ds.info["files"] = [str(f) for f in files.values()]
        return ds
    if not download:
        raise not_found(name, data_dir, download, None, _WHAT) from None
    import torchvision.datasets as tvd  # noqa: PLC0415 - read only when the dataset is loaded

    cls = getattr(tvd, _SOURCES[name][0])

    def make():
        return cls(root=str(data_dir), train=True, download=True), cls(root=str(data_dir), train=False, download=True)

    res, reason = fetch.try_download(make, list(cls.mirrors))
    if res is None:
        raise not_found(name, data_dir, download, reason, _WHAT) from None
    train, test = res
    return _dataset(name, train.data.to(torch.uint8).unsqueeze(1).contiguous(), as_labels(train.targets),
                    test.data.to(torch.uint8).unsqueeze(1).contiguous(), as_labels(test.targets),
                    str(data_dir / cls.__name__ / "raw"), "downloaded")


def _dataset(name, train_x, train_y, test_x, test_y, source: str, obtained: str) -> Dataset:
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        crop=False,
        flip=False,
        info={
            "source": source,
            "obtained": obtained,
            "n_train": int(train_x.shape[0]),
            "n_test": int(test_x.shape[0]),
        },
    )


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(name, geometry=(1, 28, 10), train_size=60_000, loader=partial(_load, name), files=_WHAT,
                       urls=_SOURCES[name][1], find=partial(_find, name), eps=0.1)


register_dataset(_spec("mnist"))
register_dataset(_spec("fashion_mnist"))

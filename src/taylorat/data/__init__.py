"""Datasets, splits and an on-device loader for taylorat.

This package sits at the bottom of the layering: it imports nothing else from
taylorat.

    >>> from taylorat.data import load, prepare, DeviceLoader
    >>> ds = load("digits")
    >>> p = prepare(ds, train_subset=None, holdout=100, seed=0)
    >>> loader = DeviceLoader(p.train_x, p.train_y, 128, "cpu", crop=ds.crop, flip=ds.flip)
    >>> x, y = next(iter(loader.batches(epoch=0)))
"""

from .dataset import Dataset, DatasetFormatError, DatasetNotFoundError
from .idx import read_idx
from .loader import DeviceLoader, EpochPlan, epoch_seed, to_float
from .registry import available, geometry, load, locate, train_size
from .splits import Prepared, holdout_indices, holdout_split, prepare, stratified_subset

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "load",
    "available",
    "geometry",
    "locate",
    "train_size",
    "prepare",
    "Prepared",
    "stratified_subset",
    "holdout_split",
    "holdout_indices",
    "DeviceLoader",
    "EpochPlan",
    "epoch_seed",
    "to_float",
    "read_idx",
]

"""Datasets, splits and an on-device loader for taylorat.

This package sits at the bottom of the layering: of taylorat it imports only
:mod:`taylorat.common`. Each dataset is one :class:`DatasetSpec` in a registry
(:mod:`taylorat.data.sets` holds the built-in ones); :func:`register_dataset`
adds one of your own.

    >>> from taylorat.data import load, prepare, DeviceLoader
    >>> ds = load("digits")
    >>> p = prepare(ds, train_subset=None, holdout=100, seed=0)
    >>> loader = DeviceLoader(p.train_x, p.train_y, 128, "cpu", crop=ds.crop, flip=ds.flip)
    >>> x, y = next(iter(loader.batches(epoch=0)))
"""

from .dataset import Dataset, DatasetFormatError, DatasetNotFoundError
from .extra import ExtraPool, MixedLoader, extra_count, open_pool
from .idx import read_idx
from .loader import DeviceLoader, EpochPlan, epoch_seed, to_float
from .registry import (
                       DATASETS,
                       DEFAULT_DATA_DIR,
                       DatasetSpec,
                       available,
                       conventional_eps,
                       geometry,
                       load,
                       locate,
                       register_dataset,
                       train_size,
                       unregister_dataset,
)
from .splits import Prepared, holdout_indices, holdout_split, prepare, stratified_subset

from . import sets  # noqa: F401  isort: skip  (registers the built-in datasets)

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "DatasetSpec",
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "conventional_eps",
    "register_dataset",
    "unregister_dataset",
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
    "ExtraPool",
    "MixedLoader",
    "extra_count",
    "open_pool",
    "EpochPlan",
    "epoch_seed",
    "to_float",
    "read_idx",
]

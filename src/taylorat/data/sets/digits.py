"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no files, no download).

Pixel values 0..16 become uint8 by ``round(v * 255 / 16)``; a fixed stratified split holds out
360 images as the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..dataset import Dataset
from ..registry import DatasetSpec, register_dataset
from ..splits import holdout_indices

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def _load(data_dir: Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits  # noqa: PLC0415 - heavy: only when digits is loaded

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    x = torch.from_numpy(np.rint(images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = holdout_indices(y, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    return Dataset(
        name="digits",
        train_x=x[train_idx].contiguous(),
        train_y=y[train_idx].contiguous(),
        test_x=x[test_idx].contiguous(),
        test_y=y[test_idx].contiguous(),
        num_classes=10,
        crop=False,
        flip=False,
        info={
            "source": "sklearn.datasets.load_digits (bundled with scikit-learn)",
            "scaling": "round(v * 255 / 16)",
            "split": f"stratified, seed {DIGITS_SPLIT_SEED}, test {DIGITS_TEST_SIZE} of {len(y)}",
            "n_train": int(train_idx.numel()),
            "n_test": int(test_idx.numel()),
        },
    )


DIGITS_EPS = 0.2  # the demo's l_inf radius: 3.2 of the 16 grey levels

register_dataset(DatasetSpec("digits", geometry=(1, 8, 10), train_size=1_797 - DIGITS_TEST_SIZE, loader=_load,
                             eps=DIGITS_EPS))

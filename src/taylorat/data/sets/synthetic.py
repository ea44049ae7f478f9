"""``synthetic``: generated class templates plus noise, for tests and demos (no files, no download).

Each class has a low-frequency template (a coarse random grid, smoothly upsampled, scaled to [0,1]);
an image is ``0.6 * template[y] + 0.4 * U(0,1)`` noise, rounded to uint8. Templates survive small
crops and flips, so the task stays learnable with augmentation. Sizes and shapes are options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...common import InputError
from ..dataset import Dataset
from ..registry import DatasetSpec, register_dataset

SYNTHETIC_DEFAULTS = {
    "n_train": 512,
    "n_test": 256,
    "num_classes": 10,
    "channels": 3,
    "image_size": 32,
    "seed": 0,
}
MAX_VALUES = 2**28  # per split (and for the class templates): 256 MB as uint8, 1 GB while generated as float


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    for k, lo in (("n_train", 1), ("n_test", 1), ("num_classes", 2), ("channels", 1), ("image_size", 1)):
        v = opts[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"synthetic option {k} must be an integer >= {lo}, got {v!r}")
        opts[k] = int(v)
    opts["seed"] = int(opts["seed"])
    pixels = opts["channels"] * opts["image_size"] ** 2
    for k in ("n_train", "n_test", "num_classes"):
        if opts[k] * pixels > MAX_VALUES:
            raise InputError(f"synthetic option {k}={opts[k]} with {opts['channels']}x{opts['image_size']}x"
                             f"{opts['image_size']} images is more than {MAX_VALUES:,} values; choose fewer or "
                             "smaller images")
    return opts


def _templates(k: int, c: int, s: int, g: torch.Generator) -> torch.Tensor:
    coarse = max(2, s // 8)
    grid = torch.rand((k, c, coarse, coarse), generator=g)
    t = torch.nn.functional.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)
    lo, hi = t.amin(dim=(1, 2, 3), keepdim=True), t.amax(dim=(1, 2, 3), keepdim=True)
    return (t - lo) / (hi - lo + 1e-8)


def _load(data_dir: Path, download: bool, **options: Any) -> Dataset:
    opts = _checked(options)
    k, c, s = opts["num_classes"], opts["channels"], opts["image_size"]
    g = torch.Generator().manual_seed(opts["seed"])
    templates = _templates(k, c, s, g)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n, dtype=torch.int64) % k  # balanced: counts differ by <= 1
        y = y[torch.randperm(n, generator=g)]
        noise = torch.rand((n, c, s, s), generator=g)
        x = 0.6 * templates[y] + 0.4 * noise
        return torch.round(x * 255).clamp_(0, 255).to(torch.uint8).contiguous(), y

    train_x, train_y = make(opts["n_train"])
    test_x, test_y = make(opts["n_test"])
    return Dataset(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=k,
        crop=True,
        flip=True,
        pad=max(1, min(4, s // 8)),
        info={
            "source": "generated (0.6 * class template + 0.4 * uniform noise)",
            "options": dict(opts),
            "n_train": opts["n_train"],
            "n_test": opts["n_test"],
        },
    )


register_dataset(DatasetSpec(
    "synthetic",
    geometry=lambda o: (int(o["channels"]), int(o["image_size"]), int(o["num_classes"])),
    train_size=lambda o: int(o["n_train"]),
    loader=_load,
    options=SYNTHETIC_DEFAULTS,
))

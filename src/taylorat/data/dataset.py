"""The in-memory dataset record shared by every loader in :mod:`taylorat.data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..common import InputError, TayloratError

__all__ = ["Dataset", "DatasetNotFoundError", "DatasetFormatError"]


class DatasetNotFoundError(TayloratError, FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded.

    The message is a single line that says which files to put where; a front end replaces the
    generic "point data_dir at the folder" with its own spelling (:meth:`with_hint`).
    """

    GENERIC = "point data_dir at the folder that holds them"

    def with_hint(self, hint: str) -> str:
        """The message with the generic hint replaced by ``hint`` (e.g. ``set data.data_dir=DIR``)."""
        return str(self).replace(self.GENERIC, hint)


class DatasetFormatError(InputError):
    """A dataset file exists but is truncated, corrupt or of the wrong kind.

    The message is a single line naming the file.
    """


def _check_images(what: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise InputError(f"{what} must be uint8, got {x.dtype}")
    if x.dim() != 4:
        raise InputError(f"{what} must be N x C x H x W, got shape {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise InputError(f"{what} must live on the CPU, got {x.device}")
    return x.contiguous()


def _check_labels(what: str, y: torch.Tensor, n: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise InputError(f"{what} must be int64, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{what} must have shape ({n},), got {tuple(y.shape)}")
    if y.device.type != "cpu":
        raise InputError(f"{what} must live on the CPU, got {y.device}")
    return y.contiguous()


@dataclass
class Dataset:
    """A whole image-classification dataset held in memory as uint8 tensors.

    Attributes:
        name: registry name, e.g. ``"cifar10"``.
        train_x, test_x: uint8 images, ``N x C x H x W``, contiguous, on the CPU.
        train_y, test_y: int64 labels in ``[0, num_classes)``.
        num_classes: number of classes.
        crop: whether random crop with zero padding is a valid augmentation.
        flip: whether horizontal flip is a valid augmentation.
        pad: padding (pixels) used by random crop.
        info: free-form provenance (source path, split sizes, options ...).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    crop: bool
    flip: bool
    pad: int = 4
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_x = _check_images("train_x", self.train_x)
        self.test_x = _check_images("test_x", self.test_x)
        self.train_y = _check_labels("train_y", self.train_y, self.train_x.shape[0])
        self.test_y = _check_labels("test_y", self.test_y, self.test_x.shape[0])
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise InputError(
                f"train and test images differ in shape: {tuple(self.train_x.shape[1:])} "
                f"vs {tuple(self.test_x.shape[1:])}"
            )
        if int(self.num_classes) < 1:
            raise InputError(f"num_classes must be >= 1, got {self.num_classes}")
        if int(self.pad) < 0:
            raise InputError(f"pad must be >= 0, got {self.pad}")
        self.num_classes = int(self.num_classes)
        self.pad = int(self.pad)
        self.crop = bool(self.crop)
        self.flip = bool(self.flip)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        h, w = int(self.train_x.shape[2]), int(self.train_x.shape[3])
        assert h == w, f"{self.name}: images are not square ({h}x{w})"
        return h

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_x.shape[0])

    def provenance(self) -> dict[str, Any]:
        """What was read: ``{"source": folder or origin, "files": [paths]}`` (files where the loader lists them)."""
        return {k: self.info[k] for k in ("source", "files") if k in self.info}

    def describe(self) -> str:
        """One line: name, sizes, image shape, classes and augmentation."""
        c, h, w = (int(s) for s in self.train_x.shape[1:])
        aug = [a for a, on in (("crop", self.crop), ("flip", self.flip)) if on]
        aug_s = "+".join(aug) if aug else "none"
        if self.crop:
            aug_s += f" (pad {self.pad})"
        return (
            f"{self.name}: {self.n_train} train / {self.n_test} test, {c}x{h}x{w} uint8, "
            f"{self.num_classes} classes, augmentation: {aug_s}"
        )

    def __repr__(self) -> str:  # the default repr would print whole tensors
        return f"Dataset({self.describe()})"

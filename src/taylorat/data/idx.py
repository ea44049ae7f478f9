"""Reader for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte), a byte
giving the number of dimensions ``d``, then ``d`` big-endian uint32 sizes, then
the data in C order.  Images use magic number 2051 (``0x00000803``), labels
2049 (``0x00000801``).  Files may be gzip-compressed (detected from content).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetFormatError

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "read_idx", "find_idx_files", "load_idx_folder"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_GZIP_MAGIC = b"\x1f\x8b"

# (split, kind) -> base name of the standard files
_STANDARD = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a cut-off stream raises EOFError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetFormatError(f"{path}: corrupt or truncated gzip file ({reason})") from None


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes into a numpy uint8 array.

    Raises:
        DatasetFormatError: wrong magic number, unsupported type, or a size
            that does not match the header (truncated or padded file). The
            message is one line naming the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetFormatError(
            f"{path}: bad IDX magic number {magic} (expected {expected_magic})"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise DatasetFormatError(
            f"{path}: not an unsigned-byte IDX file (magic number {magic})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "oversized"
        raise DatasetFormatError(
            f"{path}: {kind} IDX file: header {'x'.join(map(str, dims))} needs "
            f"{expected} data bytes, found {got}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _candidates(base: str) -> list[str]:
    # standard name, gzipped, and the dotted variant some mirrors use
    dotted = base.replace("-idx", ".idx")
    return [base + ".gz", base, dotted + ".gz", dotted]


def find_idx_files(folder: str | os.PathLike) -> dict[tuple[str, str], Path] | None:
    """The four standard IDX files directly in ``folder``, or None if any is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found: dict[tuple[str, str], Path] = {}
    for key, base in _STANDARD.items():
        for name in _candidates(base):
            p = folder / name
            if p.is_file():
                found[key] = p
                break
        else:
            return None
    return found


def missing_idx_files(folder: str | os.PathLike) -> list[str]:
    """Standard file names missing from ``folder`` when it holds some but not all four; else []."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    missing = [base + ".gz" for base in _STANDARD.values()
               if not any((folder / name).is_file() for name in _candidates(base))]
    return missing if len(missing) < len(_STANDARD) else []


def load_idx_folder(
    folder: str | os.PathLike, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[tuple[str, str], Path]]:
    """Load an MNIST-style folder holding the four standard IDX files.

    Returns ``(train_x, train_y, test_x, test_y, files)`` with images as uint8
    ``N x 1 x H x W`` tensors and labels as int64.

    Raises:
        FileNotFoundError: not all four files are there (check first with
            :func:`find_idx_files`).
        DatasetFormatError: a file is corrupt, truncated or inconsistent.
    """
    files = find_idx_files(folder)
    if files is None:
        raise FileNotFoundError(f"{folder}: the four IDX files are not all present")
    out = []
    for split in ("train", "test"):
        img_path, lab_path = files[(split, "images")], files[(split, "labels")]
        images = read_idx(img_path, IMAGES_MAGIC)
        labels = read_idx(lab_path, LABELS_MAGIC)
        if images.ndim != 3:
            raise DatasetFormatError(f"{img_path}: expected 3 dimensions, got {images.ndim}")
        if labels.ndim != 1:
            raise DatasetFormatError(f"{lab_path}: expected 1 dimension, got {labels.ndim}")
        if images.shape[0] != labels.shape[0]:
            raise DatasetFormatError(
                f"{img_path}: {images.shape[0]} images but {lab_path.name} has "
                f"{labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) >= num_classes:
            raise DatasetFormatError(
                f"{lab_path}: label {int(labels.max())} out of range for {num_classes} classes"
            )
        x = torch.from_numpy(images.copy()).unsqueeze(1).contiguous()
        y = torch.from_numpy(labels.astype(np.int64))
        out += [x, y]
    return out[0], out[1], out[2], out[3], files

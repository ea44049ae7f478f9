"""An extra labelled pool (e.g. generated images) mixed into every training batch.

The pool is an uncompressed ``.npz`` (``np.savez``, not ``savez_compressed``) in the layout of
Wang et al. 2023's code: ``image`` uint8 N x H x W x C and ``label`` integer N. Its ``image``
member is opened as a memory map at its offset inside the zip, so a 50M-image file is never read
whole. A batch of ``B`` images holds ``round(fraction·B)`` pool images (a fixed share, as that
code) after ``B − round(fraction·B)`` images of the original set; an epoch is still one pass over
the original set.

Pool images are taken in the order of a seeded permutation of the pool, one permutation per pass
over it: the images of global step ``t`` are positions ``t·n … t·n + n − 1`` of that stream, so the
draw of a step depends only on (seed, step) and a resumed run draws the same images. Small pools
live on the device (``on_device``); larger ones are gathered from the memory map by a background
thread into pinned host buffers, a bounded queue ahead of the training step.
"""

from __future__ import annotations

import queue
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetFormatError
from .loader import DeviceLoader, augment, epoch_seed, to_float

__all__ = ["ExtraPool", "MixedLoader", "extra_count", "open_member", "open_pool"]

DEVICE_BYTES = 2 << 30  # on_device=auto: pools up to 2 GiB go to the device
PREFETCH = 4  # batches the streaming thread prepares ahead


def extra_count(fraction: float, batch_size: int) -> int:
    """Pool images per batch of ``batch_size``: ``round(fraction·B)``, leaving at least one original image."""
    return min(batch_size - 1, round(fraction * batch_size))


def open_member(path: Path, key: str) -> np.ndarray:
    """The ``key`` array of an uncompressed ``.npz`` as a read-only memory map (no data read)."""
    name = f"{key}.npy"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise DatasetFormatError(f"{path}: member {name} is compressed; write the pool with np.savez "
                                 "(not savez_compressed) so that it can be memory-mapped")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DatasetFormatError(f"{path}: member {name} has no valid zip header; rewrite it with np.savez")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise DatasetFormatError(f"{path}: member {name} must be a C-ordered numeric array")
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)


class ExtraPool:
    """A validated pool: ``images`` (memory map, N x H x W x C uint8) and ``labels`` (int64 tensor)."""

    def __init__(self, path: Path, images: np.ndarray, labels: torch.Tensor) -> None:
        self.path, self.images, self.labels = path, images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        """uint8 N x C x H x W images ``idx`` read from the memory map (in sorted order for locality)."""
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx),) + self.images.shape[1:], dtype=np.uint8)
        out[order] = self.images[idx[order]]
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def open_pool(path: str | Path, channels: int, size: int, num_classes: int) -> ExtraPool:
    """Open and check a pool against the dataset's geometry; one-line :class:`DatasetFormatError` otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetFormatError(f"data.extra.path {p} not found; point it at an .npz with image and label")
    if not zipfile.is_zipfile(p):
        raise DatasetFormatError(f"data.extra.path {p} is not an .npz (zip) file; write it with np.savez")
    with zipfile.ZipFile(p) as zf:
        keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
    if "image" not in keys or "label" not in keys:
        raise DatasetFormatError(f"data.extra.path {p} has keys {keys}; it needs image (uint8 N x H x W x C) "
                                 "and label (int N)")
    images = open_member(p, "image")
    labels = np.asarray(open_member(p, "label"))
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DatasetFormatError(f"{p}: image must be uint8 N x H x W x C, got {images.dtype} {images.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1 or len(labels) != len(images):
        raise DatasetFormatError(f"{p}: label must be integers of shape ({len(images)},), got {labels.dtype} "
                                 f"{labels.shape}")
    if len(images) == 0:
        raise DatasetFormatError(f"{p}: the pool is empty; give at least one image or set data.extra.fraction=0")
    if images.shape[1:] != (size, size, channels):
        raise DatasetFormatError(f"{p}: images are {images.shape[1]}x{images.shape[2]}x{images.shape[3]} (H x W x C)"
                                 f"; the dataset's are {size}x{size}x{channels}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DatasetFormatError(f"{p}: labels span [{lo}, {hi}]; the dataset has classes 0..{num_classes - 1}")
    return ExtraPool(p, images, torch.from_numpy(labels.astype(np.int64)))


class _Stream:
    """Pool indices by global step: a seeded permutation of the pool per pass over it."""

    def __init__(self, n_pool: int, per_batch: int, seed: int) -> None:
        self.n, self.per_batch, self.seed = n_pool, per_batch, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, k: int) -> torch.Tensor:
        if k not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(epoch_seed(self.seed, 7919 + k))
            self._perms[k] = torch.randperm(self.n, generator=g)
        return self._perms[k]

    def indices(self, step: int) -> torch.Tensor:
        """The pool indices of global step ``step`` (0-based)."""
        pos = step * self.per_batch + torch.arange(self.per_batch)
        passes, at = pos // self.n, pos % self.n
        return torch.cat([self._perm(int(k))[at[passes == k]] for k in torch.unique(passes)])


class MixedLoader:
    """A :class:`DeviceLoader` over the original set with ``extra_count(fraction, B)`` pool images in every batch.

    ``len()`` and the steps are those of the original set at ``B − n`` images a batch; the pool
    images of a step are augmented like the original ones, with offsets and flips seeded by the step.
    """

    def __init__(self, loader: DeviceLoader, pool: ExtraPool, per_batch: int, on_device: bool, seed: int) -> None:
        self.loader, self.pool, self.per_batch, self.on_device = loader, pool, int(per_batch), bool(on_device)
        self.device, self.seed = loader.device, int(seed)
        self.stream = _Stream(len(pool), self.per_batch, self.seed)
        self.labels = pool.labels.to(self.device)
        self.images = pool.gather(np.arange(len(pool))).to(self.device) if self.on_device else None
        self.pin = self.device.type == "cuda"

    def __len__(self) -> int:
        return len(self.loader)

    def _rows(self, step: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pool rows ``a:b`` of global step ``step`` on the host: indices, crop offsets and flips (seeded by step)."""
        ld = self.loader
        g = torch.Generator().manual_seed(epoch_seed(self.seed, 104729 + step))
        offsets = torch.randint(0, 2 * ld.pad + 1, (self.per_batch, 2), generator=g)[a:b] if ld.crop else None
        flips = torch.randint(0, 2, (self.per_batch,), generator=g).bool()[a:b] if ld.flip else None
        return self.stream.indices(step)[a:b], offsets, flips

    def _host_rows(self, step: int, a: int, b: int) -> tuple:
        """``_rows`` with the images read from the memory map (pinned when the device is a GPU)."""
        idx, offsets, flips = self._rows(step, a, b)
        x = self.pool.gather(idx.numpy())
        return (x.pin_memory() if self.pin else x), idx, offsets, flips

    def _on_device(self, images: torch.Tensor, at: torch.Tensor, offsets, flips) -> torch.Tensor:
        dev = self.device
        if offsets is None and flips is None:
            return images[at]
        return augment(images, at, None if offsets is None else offsets.to(dev),
                       None if flips is None else flips.to(dev), self.loader.pad)

    def _prefetched(self, steps: list[tuple[int, int, int]]) -> Iterator[tuple]:
        """:meth:`_host_rows` of ``steps`` ``(step, a, b)``, prepared ahead by a background thread."""
        q: queue.Queue = queue.Queue(maxsize=PREFETCH)
        done = threading.Event()

        def work() -> None:
            try:
                for step, a, b in steps:
                    item = self._host_rows(step, a, b)
                    while not done.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if done.is_set():
                        return
            except Exception as e:  # noqa: BLE001  handed to the training thread, which raises it
                q.put(e)

        thread = threading.Thread(target=work, name="extra-pool-prefetch", daemon=True)
        thread.start()
        try:
            for _ in steps:
                item = q.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            done.set()
            thread.join(timeout=5)

    def shard_batches(self, epoch: int, rank: int, world: int, start: int = 0
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]]:
        """Like :meth:`DeviceLoader.shard_batches` over the mixed global batch (original rows, then pool rows)."""
        ld = self.loader
        p, n, bs = ld.plan(epoch), ld.num_examples, ld.batch_size
        stop = (n // bs) * bs if ld.drop_last else n
        plan = []
        for i, first in enumerate(range(start * bs, stop, bs), start=start):
            n_orig = min(first + bs, n) - first
            total = n_orig + self.per_batch
            lo = (total // world) * rank + min(rank, total % world)
            hi = lo + total // world + (1 if rank < total % world else 0)
            plan.append((first, n_orig, total, lo, hi, (epoch - 1) * len(ld) + i))
        host = None
        if not self.on_device:
            host = self._prefetched([(t, max(lo, n_orig) - n_orig, max(hi, n_orig) - n_orig)
                                     for _, n_orig, _, lo, hi, t in plan if hi > n_orig])
        for first, n_orig, total, lo, hi, t in plan:
            xs, ys = [], []
            if lo < n_orig:
                x, y = ld.plan_rows(p, first + lo, first + min(hi, n_orig))
                xs.append(x)
                ys.append(y)
            if hi > n_orig:
                if host is not None:
                    images, idx, offsets, flips = next(host)
                    images = images.to(self.device, non_blocking=True)
                    xs.append(self._on_device(images, torch.arange(len(idx), device=self.device), offsets, flips))
                else:
                    idx, offsets, flips = self._rows(t, max(lo, n_orig) - n_orig, hi - n_orig)
                    xs.append(self._on_device(self.images, idx.to(self.device), offsets, flips))
                ys.append(self.labels[idx.to(self.device)])
            x = torch.cat(xs) if len(xs) > 1 else xs[0]
            yield to_float(x, ld.memory_format), torch.cat(ys) if len(ys) > 1 else ys[0], (lo, hi, total)


def write_training_pool(path: str | Path, ds, n: int, train_subset: int, holdout: int, seeds: list[int],
                        seed: int = 0) -> Path:
    """Write ``n`` training images of ``ds`` as a pool ``.npz``, none of them in the ``train_subset`` images
    or the ``holdout`` of any of ``seeds`` (as :func:`taylorat.data.prepare` chooses them): real images
    standing in for generated ones. Deterministic in (``ds``, its arguments)."""
    from .splits import holdout_indices, stratified_subset  # noqa: PLC0415

    used = torch.zeros(ds.train_y.shape[0], dtype=torch.bool)
    for s in seeds:
        train_idx, hold_idx = holdout_indices(ds.train_y, holdout, s)
        used[hold_idx] = True
        used[train_idx[stratified_subset(ds.train_y[train_idx], train_subset, s + 7919)]] = True
    free = torch.nonzero(~used).flatten()
    if n > free.numel():
        raise DatasetFormatError(f"only {free.numel()} training images are outside the subsets; ask for n <= that")
    g = torch.Generator().manual_seed(epoch_seed(seed, 15485863))
    pick = free[torch.randperm(free.numel(), generator=g)[:n]].sort().values
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, image=ds.train_x[pick].permute(0, 2, 3, 1).numpy(), label=ds.train_y[pick].numpy())
    return out

"""A data loader that keeps the whole dataset on the compute device.

Images stay uint8 on the device; each batch is selected, augmented (random
crop with zero padding, horizontal flip) and converted to float32 in [0, 1]
there, with whole-batch tensor ops and no host synchronisation. Every random
number of an epoch comes from a generator seeded from ``(seed, epoch)``, so
replaying an epoch replays its batches exactly (on the same kind of device),
which is what exact resumption of training relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..common import InputError

__all__ = ["DeviceLoader", "EpochPlan", "augment", "to_float", "epoch_seed"]

_MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)


def to_float(x_u8: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] on the same device, in ``memory_format``."""
    if x_u8.dtype != torch.uint8:
        raise InputError(f"to_float expects uint8 images, got {x_u8.dtype}")
    return x_u8.to(dtype=torch.float32, memory_format=memory_format).div_(255)


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed for ``epoch`` of a loader seeded with ``seed``."""
    return int(seed) * 1_000_003 + int(epoch)


@dataclass
class EpochPlan:
    """All the randomness of one epoch, drawn up front on the device.

    order: example indices in the order they are served (N,).
    offsets: per-position crop offsets ``(row, col)`` in ``[0, 2*pad]`` into the
        zero-padded image, shape (N, 2), or None without crop.
    flips: per-position horizontal-flip mask (N,), or None without flip.
    """

    order: torch.Tensor
    offsets: torch.Tensor | None
    flips: torch.Tensor | None


def augment(images: torch.Tensor, idx: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None,
            pad: int) -> torch.Tensor:
    """Rows ``idx`` of uint8 ``images`` (N x C x H x W), each cropped at ``offsets`` (into the image
    zero-padded by ``pad``) and flipped where ``flips``, in one gather."""
    _, c, h, w = images.shape
    dev, b = images.device, idx.shape[0]
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    if offsets is not None:
        rows = offsets[:, :1] - pad + ar_h  # (B, H) source rows
        cols_base = offsets[:, 1:] - pad  # (B, 1)
    else:
        rows = ar_h.expand(b, h)
        cols_base = torch.zeros((b, 1), dtype=torch.int64, device=dev)
    if flips is not None:  # flipping the crop = reading its columns right to left
        cols = cols_base + torch.where(flips[:, None], torch.flip(ar_w, (0,)), ar_w)
    else:
        cols = cols_base + ar_w
    x = images[idx.view(b, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
               rows.clamp(0, h - 1).view(b, 1, h, 1), cols.clamp(0, w - 1).view(b, 1, 1, w)]
    if offsets is not None:
        inside = ((rows >= 0) & (rows < h)).view(b, 1, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, 1, w)
        x.masked_fill_(~inside, 0)  # the zero padding
    return x


class DeviceLoader:
    """Serve mini-batches from uint8 images held on ``device``.

    Args:
        images_u8: uint8 ``N x C x H x W`` images (any device; copied to ``device``).
        labels: integer labels (N,).
        batch_size: examples per batch.
        device: where the data lives and batches are made.
        shuffle: random order each epoch; otherwise the stored order.
        crop: random crop after zero-padding by ``pad`` on each side.
        flip: random horizontal flip with probability 1/2.
        pad: padding for ``crop``.
        drop_last: drop the final short batch.
        seed: base seed; epoch ``e`` uses ``epoch_seed(seed, e)``.
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last``
            for the float batches.
    """

    def __init__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        crop: bool = False,
        flip: bool = False,
        pad: int = 4,
        drop_last: bool = False,
        seed: int = 0,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
            raise InputError(
                f"images must be uint8 N x C x H x W, got {images_u8.dtype} {tuple(images_u8.shape)}"
            )
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != images_u8.shape[0]:
            raise InputError(
                f"labels must have shape ({images_u8.shape[0]},), got {tuple(labels.shape)}"
            )
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if int(pad) < 0:
            raise InputError(f"pad must be >= 0, got {pad}")
        if memory_format not in _MEMORY_FORMATS:
            raise InputError(
                f"memory_format must be torch.contiguous_format or torch.channels_last, got {memory_format}"
            )
        self.device = torch.device(device)
        self.images = images_u8.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64).contiguous()
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.crop = bool(crop) and int(pad) > 0
        self.flip = bool(flip)
        self.pad = int(pad)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.memory_format = memory_format
        self.epoch = 0  # used by plain iteration, see __iter__

    # ------------------------------------------------------------------ sizes
    @property
    def num_examples(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    # ------------------------------------------------------------- randomness
    def plan(self, epoch: int) -> EpochPlan:
        """Draw the order, crop offsets and flip mask of ``epoch`` (deterministic)."""
        n = self.num_examples
        g = torch.Generator(device=self.device)
        g.manual_seed(epoch_seed(self.seed, epoch))
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        offsets = None
        if self.crop:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g, device=self.device)
        flips = None
        if self.flip:
            flips = torch.randint(0, 2, (n,), generator=g, device=self.device).bool()
        return EpochPlan(order=order, offsets=offsets, flips=flips)

    # ---------------------------------------------------------------- batches
    def _augment(
        self, idx: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
    ) -> torch.Tensor:
        """Select, crop and flip a batch in one gather from the uint8 images."""
        return augment(self.images, idx, offsets, flips, self.pad)

    def plan_rows(self, p: EpochPlan, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions ``a:b`` of the epoch ``p``: uint8 images (augmented as planned) and labels."""
        if p.offsets is None and p.flips is None:
            idx = p.order[a:b] if self.shuffle else slice(a, b)
            return self.images[idx], self.labels[idx]
        idx = p.order[a:b]
        flips = None if p.flips is None else p.flips[a:b]
        return self._augment(idx, None if p.offsets is None else p.offsets[a:b], flips), self.labels[idx]

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` for ``epoch``: x float32 in [0, 1] (N x C x H x W), y int64.

        The same ``epoch`` always yields the same batches; ``start`` skips the first batches
        (resuming in the middle of an epoch).
        """
        for x, y, _ in self.shard_batches(epoch, 0, 1, start):
            yield x, y

    def shard_batches(
        self, epoch: int, rank: int, world: int, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]]:
        """Data-parallel view: rank ``rank`` of ``world`` gets its contiguous share of every global batch.

        Yields ``(x, y, (lo, hi, total))``: rows ``lo:hi`` of the global batch of ``total``
        examples (shares differ by at most one example, like ``torch.tensor_split``).
        """
        if not 0 <= rank < world:
            raise InputError(f"rank must be in [0, {world}), got {rank}")
        p = self.plan(epoch)
        n, bs = self.num_examples, self.batch_size
        stop = (n // bs) * bs if self.drop_last else n
        for first in range(start * bs, stop, bs):
            total = min(first + bs, n) - first
            lo = first + (total // world) * rank + min(rank, total % world)
            end = lo + total // world + (1 if rank < total % world else 0)
            x, y = self.plan_rows(p, lo, end)
            yield to_float(x, self.memory_format), y, (lo - first, end - first, total)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that plain iteration (``for x, y in loader``) serves."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate ``batches(self.epoch)`` (epoch 0 unless :meth:`set_epoch` was called)."""
        return self.batches(self.epoch)

    def __repr__(self) -> str:
        aug = [a for a, on in (("crop", self.crop), ("flip", self.flip)) if on]
        return (
            f"DeviceLoader({self.num_examples} examples, batch {self.batch_size}, {len(self)} batches, "
            f"device {self.device}, shuffle={self.shuffle}, aug={'+'.join(aug) or 'none'}, seed={self.seed})"
        )

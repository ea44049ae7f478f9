"""Seeded, class-stratified subsets and hold-out splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..common import InputError
from .dataset import Dataset

__all__ = [
    "stratified_subset",
    "holdout_indices",
    "holdout_split",
    "Prepared",
    "prepare",
]


def _as_labels(y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dim() != 1:
        raise InputError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    return y.detach().to("cpu", torch.int64)


def _allocate(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Split ``n`` over classes proportionally to ``counts`` (largest remainder).

    Each class gets floor or ceil of its exact share ``n * count / total``, so
    for balanced classes the per-class numbers differ by at most one. Ties in
    the remainders go to the lower class index, which keeps the result a pure
    function of the label counts. Every class gets at least one example.
    """
    total = int(counts.sum())
    share_num = counts * n  # exact share = share_num / total
    base = share_num // total
    frac = share_num - base * total  # remainder numerators, integer exact
    left = n - int(base.sum())
    if left > 0:
        # stable sort by descending remainder: ties keep class order
        order = torch.sort(-frac, stable=True).indices
        base[order[:left]] += 1
    # every class at least one example (only matters for rare classes)
    while bool((base == 0).any()):
        k_zero = int(torch.nonzero(base == 0)[0])
        k_big = int(torch.argmax(base))
        base[k_big] -= 1
        base[k_zero] += 1
    return base


def stratified_subset(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded, class-stratified choice of ``n`` indices into ``y``.

    Per-class counts are proportional to the class frequencies in ``y``
    (floor or ceil of the exact share; differing by at most one for balanced
    labels). The result is a sorted int64 tensor, a pure function of
    ``(y, n, seed)``.

    Raises:
        ValueError: ``n`` is larger than ``len(y)`` or smaller than the number
            of distinct classes in ``y``.
    """
    y = _as_labels(y)
    n = int(n)
    if n > y.numel():
        raise InputError(f"cannot choose {n} examples from {y.numel()}")
    classes, counts = torch.unique(y, sorted=True, return_counts=True)
    if n < classes.numel():
        raise InputError(
            f"a stratified subset needs at least one example per class: n={n} < "
            f"{classes.numel()} classes"
        )
    if n == y.numel():
        return torch.arange(n, dtype=torch.int64)
    per_class = _allocate(counts, n)
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c, k in zip(classes.tolist(), per_class.tolist()):
        members = torch.nonzero(y == c).flatten()
        pick = torch.randperm(members.numel(), generator=g)[:k]
        chosen.append(members[pick])
    return torch.sort(torch.cat(chosen)).values


def holdout_indices(y: torch.Tensor, n_holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train_idx, holdout_idx)`` of a stratified hold-out split.

    Both are sorted, disjoint, and together cover ``range(len(y))``.
    ``n_holdout=0`` gives an empty hold-out.
    """
    y = _as_labels(y)
    n_holdout = int(n_holdout)
    if n_holdout < 0:
        raise InputError(f"n_holdout must be >= 0, got {n_holdout}")
    if n_holdout == 0:
        return torch.arange(y.numel(), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    if n_holdout >= y.numel():
        raise InputError(
            f"hold-out of {n_holdout} leaves no training examples (only {y.numel()})"
        )
    hold = stratified_subset(y, n_holdout, seed)
    keep = torch.ones(y.numel(), dtype=torch.bool)
    keep[hold] = False
    return torch.nonzero(keep).flatten(), hold


def holdout_split(
    x: torch.Tensor, y: torch.Tensor, n_holdout: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out a fixed, stratified ``n_holdout`` examples (for model selection).

    Returns ``(train_x, train_y, hold_x, hold_y)``; deterministic for a seed.
    ``n_holdout=0`` returns empty hold-out tensors (0 x C x H x W and (0,)).
    """
    if x.shape[0] != y.shape[0]:
        raise InputError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    train_idx, hold_idx = holdout_indices(y, n_holdout, seed)
    return x[train_idx], y[train_idx], x[hold_idx], y[hold_idx]


@dataclass
class Prepared:
    """The tensors a run trains, selects and evaluates on (all uint8 / int64, CPU)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    holdout_x: torch.Tensor
    holdout_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    # copied from the Dataset for convenience
    name: str = ""
    num_classes: int = 0
    crop: bool = False
    flip: bool = False
    pad: int = 4

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Prepared({self.name}: train {i.get('n_train')}, holdout {i.get('n_holdout')}, "
            f"test {i.get('n_test')})"
        )


def prepare(ds: Dataset, train_subset: int | None = None, holdout: int = 0, seed: int = 0) -> Prepared:
    """Hold out ``holdout`` training examples, then optionally subsample the rest.

    The hold-out is drawn first (stratified, from the full training set), then
    ``train_subset`` examples (stratified) from what is left; ``None`` keeps
    all of it. The test set is passed through unchanged. Deterministic given
    ``seed``: the same seed gives the same hold-out whatever ``train_subset``.
    """
    try:
        train_idx, hold_idx = holdout_indices(ds.train_y, holdout, seed)
    except ValueError as e:
        raise InputError(f"holdout={holdout} for {ds.name} ({ds.train_x.shape[0]} training images, "
                         f"{ds.num_classes} classes): {e}") from None
    if train_subset is not None:
        train_subset = int(train_subset)
        if train_subset > train_idx.numel():
            raise InputError(
                f"train_subset={train_subset} exceeds the {train_idx.numel()} training "
                f"examples left after a hold-out of {int(holdout)}"
            )
        # a different stream than the hold-out's, still a function of seed
        try:
            sub = stratified_subset(ds.train_y[train_idx], train_subset, seed + 7919)
        except ValueError as e:
            raise InputError(f"train_subset={train_subset} for {ds.name}: {e}") from None
        train_idx = train_idx[sub]
    info = {
        "dataset": ds.name,
        "train_subset": train_subset,
        "holdout": int(holdout),
        "seed": int(seed),
        "n_train": int(train_idx.numel()),
        "n_holdout": int(hold_idx.numel()),
        "n_test": int(ds.test_x.shape[0]),
    }
    if train_idx.numel() == ds.train_x.shape[0]:  # everything kept: no copy
        train_x, train_y = ds.train_x, ds.train_y
    else:
        train_x, train_y = ds.train_x[train_idx].contiguous(), ds.train_y[train_idx].contiguous()
    return Prepared(
        train_x=train_x,
        train_y=train_y,
        holdout_x=ds.train_x[hold_idx].contiguous(),
        holdout_y=ds.train_y[hold_idx].contiguous(),
        test_x=ds.test_x,
        test_y=ds.test_y,
        info=info,
        name=ds.name,
        num_classes=ds.num_classes,
        crop=ds.crop,
        flip=ds.flip,
        pad=ds.pad,
    )

"""Abstract classifier base class shared by all `taylorat` models."""

from __future__ import annotations

import abc
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..common import InputError


def _positive_int(value: Any, what: str) -> int:
    try:
        out = operator.index(value)  # accepts numpy ints, rejects floats
    except TypeError:
        out = 0
    if isinstance(value, bool) or out < 1:
        raise InputError(f"{what} must be a positive int, got {value!r}")
    return out


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with ``mean``/``std`` stored as buffers of shape (1, C, 1, 1)."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_channels: int) -> None:
        super().__init__()
        # on the CPU even under a meta-device context (a checkpoint's spec checked before allocating): the values
        # are checked here, and are a handful
        m = torch.as_tensor(mean, dtype=torch.float32, device="cpu").flatten()
        s = torch.as_tensor(std, dtype=torch.float32, device="cpu").flatten()
        if m.numel() != in_channels or s.numel() != in_channels:
            raise InputError(
                f"mean/std need {in_channels} values (one per input channel), "
                f"got {m.numel()} and {s.numel()}"
            )
        if not bool(torch.all(s > 0)):
            raise InputError(f"std values must all be > 0, got {s.tolist()}")
        self.register_buffer("mean", m.view(1, -1, 1, 1))
        self.register_buffer("std", s.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module, abc.ABC):
    """Image classifier on [0, 1] inputs of shape (B, in_channels, image_size, image_size).

    Subclasses build ``self.head: nn.Linear(D, num_classes)`` and implement
    ``forward_features(x) -> (B, D)``, starting with ``x = self.normalize(x)``
    (an ``nn.Identity`` unless ``mean``/``std`` were given). ``forward`` is
    ``head(forward_features(x))``. Subclasses with extra constructor arguments
    override ``extra_spec`` so that ``create(**model.spec)`` rebuilds the model.
    """

    name: str = ""
    head: nn.Linear

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.image_size = _positive_int(image_size, "image_size")
        if (mean is None) != (std is None):
            raise InputError("give both mean and std for input normalization, or neither")
        self.normalize: nn.Module = (
            nn.Identity() if mean is None else Normalize(mean, std, in_channels)  # type: ignore[arg-type]
        )

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Return the pooled penultimate representation, shape (B, head.in_features)."""

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape (B, num_classes). Does not validate x; see ``check_input``."""
        return self.head(self.forward_features(x))

    def extra_spec(self) -> dict[str, Any]:
        """Constructor kwargs beyond num_classes/in_channels/image_size/mean/std."""
        return {}

    @property
    def spec(self) -> dict[str, Any]:
        """Kwargs that rebuild this architecture via ``taylorat.models.create(**spec)``."""
        out: dict[str, Any] = {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }
        if isinstance(self.normalize, Normalize):
            out["mean"] = self.normalize.mean.flatten().tolist()
            out["std"] = self.normalize.std.flatten().tolist()
        out.update(self.extra_spec())
        return out

    def check_input(self, x: Any) -> None:
        """Raise ValueError unless x is a float tensor of shape (B, in_channels, image_size, image_size)."""
        c, s = self.in_channels, self.image_size
        want = f"model '{self.name}' expects images of shape (B, {c}, {s}, {s})"
        if not isinstance(x, Tensor):
            raise InputError(f"{want}, got {type(x).__name__}; pass a torch.Tensor")
        if x.dim() != 4:
            raise InputError(
                f"{want}, got shape {tuple(x.shape)}; add/remove dimensions to get a 4-D batch"
            )
        if not x.is_floating_point():
            raise InputError(
                f"{want} as floats in [0, 1], got dtype {x.dtype}; convert with x.float() / 255"
            )
        if tuple(x.shape[1:]) != (c, s, s):
            got = "(B, " + ", ".join(str(d) for d in x.shape[1:]) + ")"
            raise InputError(
                f"{want}, got {got}; pick the model for this dataset with in_channels/image_size"
            )

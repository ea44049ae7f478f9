"""timm architectures as taylorat models: ``create("timm:resnet18", num_classes=10)`` (needs ``taylorat[timm]``).

The timm model is built from scratch (``pretrained=False``) for the dataset's channels, classes and
(for vision transformers) image size; ``forward_features`` is timm's pre-logits vector
(``forward_head(forward_features(x), pre_logits=True)``: pooled for CNNs, the class token for
ViTs) and ``head`` its classifier, so the Taylor terms, the trainer and every checkpoint work as
for the built-in models. Inputs are [0,1] images; ``mean``/``std`` put normalization inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..common import InputError, did_you_mean, require
from .base import Classifier

PREFIX = "timm:"


def check_timm_name(name: str) -> None:
    timm = require("timm", "timm", f"model {name!r}")
    arch = name[len(PREFIX):]
    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models(), prefix=PREFIX)
        raise InputError(f"unknown timm model {arch!r}" + (hint or "; see timm.list_models()"))


class TimmClassifier(Classifier):
    """A timm model behind the Classifier contract (``forward_features`` + linear ``head``)."""

    def __init__(self, arch: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(num_classes, in_channels, image_size, mean, std)
        check_timm_name(PREFIX + arch)
        import timm  # noqa: PLC0415 - optional extra [timm]

        kw: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
        try:
            self.net = timm.create_model(arch, img_size=image_size, **kw)
        except TypeError:  # CNNs take any image size and no img_size argument
            self.net = timm.create_model(arch, **kw)
        if not isinstance(self.net.get_classifier(), nn.Linear):
            raise InputError(f"timm model {arch!r} has no nn.Linear classifier; the Taylor terms need one")

    @property
    def head(self) -> nn.Linear:  # the timm model's own classifier (registered once, under net.)
        return self.net.get_classifier()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)

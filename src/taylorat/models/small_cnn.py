"""TRADES' small MNIST CNN, with BatchNorm after each conv and no dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..common import InputError
from .base import Classifier
from .registry import register


def _conv_bn_relu(cin: int, cout: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


@register("small_cnn")
class SmallCNN(Classifier):
    """4 conv (32, 32, 64, 64; two 2x2 max-pools) + FC 200-200 + head.

    ``padding=None`` picks 0 for image_size >= 24 (MNIST-style 28x28) and 1
    otherwise (e.g. 8x8 scikit-learn digits). 312,394 parameters for 1x28x28, 10 classes.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        padding: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, image_size, mean, std)
        if padding is None:
            padding = 0 if image_size >= 24 else 1
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise InputError(f"padding must be a non-negative int or None, got {padding!r}")
        self.padding = padding
        side = image_size
        for _ in range(2):  # two (conv, conv, pool) stages
            side = (side + 2 * padding - 2 + 2 * padding - 2) // 2
            if side < 1:
                raise InputError(
                    f"small_cnn with padding={padding} cannot take {image_size}x{image_size} images; "
                    "use a larger image_size or padding=1"
                )
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 32, padding), *_conv_bn_relu(32, 32, padding), nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64, padding), *_conv_bn_relu(64, 64, padding), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU()
        )
        self.head = nn.Linear(200, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.fc(self.features(self.normalize(x)))

    def extra_spec(self) -> dict[str, Any]:
        return {"padding": self.padding}

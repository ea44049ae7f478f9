"""VGG-16 with BatchNorm for small images, as in the kuangliu/pytorch-cifar ``VGG('VGG16')`` code."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Classifier
from .registry import register

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def _make_features(cfg: Sequence[int | str], in_channels: int) -> nn.Sequential:
    """conv3x3(pad 1, bias)-BN-ReLU per int, MaxPool2d(2) per "M"; same indices as the reference code.

    The pools use ``ceil_mode=True`` so odd maps (e.g. 28 -> 14 -> 7 -> 4 -> 2 -> 1) never
    shrink to 0; for even maps (every stage of a 32x32 input) this equals the floor pool.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=True), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


@register("vgg16")
class VGG16(Classifier):
    """VGG-16-BN: 13 conv3x3+BN+ReLU, 5 max-pools, global average pool, head Linear(512, C).

    14,728,266 parameters for 10 classes (the kuangliu/pytorch-cifar count). For 32x32 inputs
    the last map is already 1x1, so the adaptive average pool is the reference's no-op
    AvgPool2d(1); other sizes (e.g. 28x28) are pooled to 1x1. ``features.<i>`` keys match the
    reference; its ``classifier`` is ``head`` here.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, image_size, mean, std)
        self.features = _make_features(VGG16_CFG, in_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        return self.pool(self.features(x)).flatten(1)

"""WideResNet-<depth>-<width> as in the TRADES repository (dropRate 0)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..common import InputError
from .base import Classifier
from .preact_resnet import ACTIVATIONS, check_activation
from .registry import register


class BasicBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 conv shortcut when shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str = "relu") -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        if not self.equal_in_out:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.act(self.bn1(x))
        out = self.conv2(self.act(self.bn2(self.conv1(act))))
        # As in TRADES: the projection shortcut is applied to the pre-activated input.
        return out + (x if self.equal_in_out else self.shortcut(act))  # structural, fixed at init


def _valid_depths() -> str:
    return ", ".join(str(6 * n + 4) for n in range(1, 12)) + ", ..."


@register("wrn_<depth>_<width>", example="wrn_34_10", small="wrn_16_2", named=("wrn_28_10", "wrn_70_16"))
class WideResNet(Classifier):
    """WideResNet (depth and width live in the name); ``wrn_34_10`` has 46,160,474 parameters for 10 classes.

    ``activation="silu"``: SiLU in place of every ReLU (``wrn_28_10`` / ``wrn_70_16`` with SiLU are the
    networks of Wang et al. 2023's recipe); the parameters are the same.
    """

    def __init__(
        self,
        depth: int = 34,
        width: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        activation: str = "relu",
    ) -> None:
        check_activation(activation)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise InputError(
                f"WideResNet depth must satisfy (depth - 4) % 6 == 0 with depth >= 10 "
                f"(valid: {_valid_depths()}), got {depth!r}"
            )
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise InputError(f"WideResNet width must be a positive int, got {width!r}")
        super().__init__(num_classes, in_channels, image_size, mean, std)
        self.depth, self.width, self.activation = depth, width, activation
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            blocks = [BasicBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], stride if j == 0 else 1,
                                 activation) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = ACTIVATIONS[self.activation](self.bn(out))
        return self.pool(out).flatten(1)

    def extra_spec(self) -> dict:
        return {} if self.activation == "relu" else {"activation": self.activation}

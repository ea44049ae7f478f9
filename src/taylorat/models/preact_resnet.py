"""PreAct ResNet-18 (He et al. 2016) as in the robust_overfitting / TRADES CIFAR code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..common import InputError
from .base import Classifier
from .registry import register

ACTIVATIONS = {"relu": F.relu, "silu": F.silu}


def check_activation(activation: str) -> None:
    """One line naming the choices unless ``activation`` is relu or silu."""
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; 1x1 conv shortcut (no BN) on the pre-activation when shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, activation: str = "relu") -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.has_shortcut else x  # structural, fixed at init
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


@register("preact_resnet18")
class PreActResNet18(Classifier):
    """PreAct ResNet-18 for 3x32x32 inputs and 10 classes.

    ``final_bn=True`` (default) ends with BN+ReLU before pooling, as the robust_overfitting / AWP
    code the paper builds on: 11,172,170 parameters. ``final_bn=False`` is the kuangliu
    pytorch-cifar variant without it: 11,171,146 parameters. ``activation="silu"``: SiLU in place
    of every ReLU (the recipe of Wang et al. 2023); the parameters are the same.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        final_bn: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__(num_classes, in_channels, image_size, mean, std)
        if not isinstance(final_bn, bool):
            raise InputError(f"final_bn must be true or false, got {final_bn!r}")
        check_activation(activation)
        self.final_bn, self.activation = final_bn, activation
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks = [PreActBlock(in_planes, planes, stride, activation), PreActBlock(planes, planes, 1, activation)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn: nn.Module = nn.BatchNorm2d(512) if final_bn else nn.Identity()
        self.act: nn.Module = ({"relu": nn.ReLU, "silu": nn.SiLU}[activation]() if final_bn else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.act(self.bn(out))
        return self.pool(out).flatten(1)

    def extra_spec(self) -> dict[str, Any]:
        return {**({} if self.final_bn else {"final_bn": False}),
                **({} if self.activation == "relu" else {"activation": self.activation})}

"""Switches that change only speed, resolved for the machine a run is on (``auto``).

``channels_last: auto`` turns the NHWC memory layout on where it measured faster and off where
it did not (README "Performance", measured with ``taylorat bench --defaults``): on for the
convolutional networks on 3-channel images (PreAct ResNet, WideResNet, VGG, MobileNetV2, timm
CNNs) on CPU and CUDA; off for 1-channel images (MNIST-like data) and the small CNN, where the
layout conversions cost more than the convolutions gain. ``true`` / ``false`` always win. The
result changes only floating-point reordering (tested: a run with ``auto`` ends with the weights
of the same run with ``false``, to float tolerance).
"""

from __future__ import annotations

import torch

SMALL_MODELS = ("small_cnn",)


def resolve_channels_last(setting: str, model_name: str, in_channels: int, device: torch.device) -> tuple[bool, str]:
    """``(on, why)`` for the ``channels_last`` setting of a run."""
    if setting in ("true", "false"):
        return setting == "true", "set in the config"
    if device.type not in ("cpu", "cuda"):
        return False, f"auto: not measured on {device.type}"
    if in_channels < 3:
        return False, f"auto: {in_channels}-channel images gain nothing from NHWC"
    if model_name in SMALL_MODELS:
        return False, f"auto: {model_name} is too small to gain from NHWC"
    return True, f"auto: convolutional network on {in_channels}-channel images on {device.type}"

"""Switches that change only speed, resolved for the machine a run is on (``auto``).

``channels_last: auto`` turns the NHWC memory layout on for convolutional networks — models whose
multiply-adds are mostly in convolutions: PreAct ResNet, WideResNet, VGG, MobileNetV2, the small
CNN, timm CNNs — on CPU and CUDA, and off for the others (vision transformers, whose convolution
is only the patch embedding) and on other devices. Measured with ``taylorat bench --defaults`` on
a 2-core CPU (README "Performance"): NHWC was faster or equal for every convolutional network here,
1-channel 28×28 images and the small CNN included; on CUDA it is what the tensor cores want for
convolutions (measured on an H100, docs/performance.md: PreAct-18 fp32 73.3 ms/step on, 84.0 off).
``true`` / ``false`` always win. The result changes only floating-point reordering (tested: a run
with ``auto`` ends with the weights of the same run with ``false``, to float tolerance).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import models

CONV_SHARE = 0.5  # convolutions' share of the multiply-adds above which a model counts as convolutional


def conv_share(model: nn.Module, in_channels: int, image_size: int) -> float:
    """The fraction of one forward pass's multiply-adds spent in 2-d convolutions (counted on the meta device)."""
    macs = {"conv": 0, "other": 0}

    def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # (C_in / groups) · kh · kw per output element
            macs["conv"] += out.numel() * k
        elif isinstance(module, nn.Linear):
            macs["other"] += out.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    total = macs["conv"] + macs["other"]
    return macs["conv"] / total if total else 0.0


def resolve_channels_last(setting: str, model: nn.Module, device: torch.device) -> tuple[bool, str]:
    """``(on, why)`` for a run's ``channels_last`` setting; ``model`` is measured on a meta-device copy."""
    if setting in ("true", "false"):
        return setting == "true", "set in the config"
    if device.type not in ("cpu", "cuda"):
        return False, f"auto: not measured on {device.type}"
    spec = getattr(model, "spec", None)
    if spec is None:
        return False, "auto: not a taylorat model"

    spec = {k: v for k, v in spec.items() if k not in ("mean", "std")}  # its buffers stay on the CPU; no MACs
    with torch.device("meta"):
        probe = models.create(**spec).eval()
    share = conv_share(probe, spec["in_channels"], spec["image_size"])
    if share < CONV_SHARE:
        return False, f"auto: only {share:.0%} of the multiply-adds are convolutions"
    return True, f"auto: convolutional network ({share:.0%} of the multiply-adds in convolutions) on {device.type}"


def in_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x`` (an ``N×C×H×W`` batch) with exactly the strides ``memory_format`` gives its shape; a copy only
    where they differ. A 1-channel batch is contiguous in both layouts and operators hand back either
    stride for its channel dimension; ``torch.compile`` guards on exact strides, so without this each
    switch is one more compiled graph. Other shapes pass through."""
    if x.dim() != 4:
        return x
    _, c, h, w = x.shape
    want = (c * h * w, 1, w * c, c) if memory_format == torch.channels_last else (c * h * w, h * w, w, 1)
    return x if x.stride() == want else x.clone(memory_format=memory_format)

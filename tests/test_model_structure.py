"""Each built-in architecture's parameter count and structure, against hand counts and the reference code.

The contract every registered model meets (forward = head(features), channels_last/bf16, spec round
trip) is tested over all of them in test_models.py.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from taylorat.models import available, create
from taylorat.models.mobilenetv2 import MOBILENETV2_CFG, InvertedResidual


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_bn(cin: int, cout: int, k: int, bias: bool) -> int:
    return cin * cout * k * k + (cout if bias else 0) + 2 * cout


# VGG-16-BN (kuangliu/pytorch-cifar), 3x3 convs with bias, BN, head 512 -> 10.
_VGG_CONVS = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG16_PARAMS = sum(_conv_bn(a, b, 3, True) for a, b in zip(_VGG_CONVS, _VGG_CONVS[1:])) + 512 * 10 + 10
assert VGG16_PARAMS == 14_728_266


def _mobilenetv2_hand_count(num_classes: int = 10) -> int:
    total = _conv_bn(3, 32, 3, False)  # stem
    cin = 32
    for t, cout, n, s in MOBILENETV2_CFG:
        for i in range(n):
            stride = s if i == 0 else 1
            p = t * cin
            total += _conv_bn(cin, p, 1, False) + (9 * p + 2 * p) + _conv_bn(p, cout, 1, False)
            if stride == 1 and cin != cout:
                total += _conv_bn(cin, cout, 1, False)  # projection shortcut
            cin = cout
    total += _conv_bn(320, 1280, 1, False) + 1280 * num_classes + num_classes
    return total


MOBILENETV2_PARAMS = _mobilenetv2_hand_count()
assert MOBILENETV2_PARAMS == 2_296_922

# Hand count for small_cnn on 1x28x28, 10 classes (padding 0):
#   conv 1->32 (3x3, no bias) 288 + BN 64            =     352
#   conv 32->32              9,216 + BN 64          =   9,280
#   conv 32->64             18,432 + BN 128         =  18,560
#   conv 64->64             36,864 + BN 128         =  36,992
#   spatial 28 -26 -24 -pool 12 -10 -8 -pool 4  => flatten 64*4*4 = 1,024
#   fc 1024->200  204,800 + 200                     = 205,000
#   fc 200->200    40,000 + 200                     =  40,200
#   head 200->10    2,000 + 10                      =   2,010
SMALL_CNN_MNIST_PARAMS = 352 + 9_280 + 18_560 + 36_992 + 205_000 + 40_200 + 2_010
assert SMALL_CNN_MNIST_PARAMS == 312_394

# PreAct ResNet-18 with the final BN(512) before pooling, as in robust_overfitting:
# 11,171,146 (no final BN, kuangliu/pytorch-cifar variant) + 1,024 (BN weight+bias).
PREACT18_PARAMS = 11_171_146 + 1_024


def test_parameter_counts():
    assert n_params(create("preact_resnet18")) == PREACT18_PARAMS
    assert n_params(create("preact_resnet18", final_bn=False)) == 11_171_146
    assert n_params(create("wrn_34_10")) == 46_160_474
    assert n_params(create("small_cnn", in_channels=1, image_size=28)) == SMALL_CNN_MNIST_PARAMS


def test_extra_parameter_counts():
    assert n_params(create("vgg16")) == VGG16_PARAMS
    assert n_params(create("mobilenetv2")) == MOBILENETV2_PARAMS
    assert n_params(create("vgg16", num_classes=100)) == VGG16_PARAMS + 90 * 513
    assert n_params(create("mobilenetv2", num_classes=100)) == _mobilenetv2_hand_count(100)


def test_available():
    names = available()
    assert "vgg16" in names and "mobilenetv2" in names


def test_mobilenetv2_shortcuts():
    blocks = [b for b in create("mobilenetv2").layers if isinstance(b, InvertedResidual)]
    assert len(blocks) == 17
    kinds = [
        "none" if not b.residual else "identity" if isinstance(b.shortcut, nn.Identity) else "conv"
        for b in blocks
    ]
    # Blocks 0 | 1-2 | 3-5 | 6-9 | 10-12 | 13-15 | 16 (16, 24, 32, 64, 96, 160, 320 channels).
    # Projection shortcuts: 32->16, 16->24, 64->96, 160->320 (all stride 1).
    assert [i for i, k in enumerate(kinds) if k == "conv"] == [0, 1, 10, 16]
    assert [i for i, k in enumerate(kinds) if k == "none"] == [3, 6, 13]  # the stride-2 blocks


def test_vgg16_ceil_pool_matches_floor_pool_at_32():
    torch.manual_seed(0)
    model = create("vgg16").eval()
    floor = copy.deepcopy(model)
    for m in floor.features:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = False
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert model.features(x).shape == (2, 512, 1, 1)
        torch.testing.assert_close(model(x), floor(x), rtol=0, atol=0)


def test_wide_resnet_variants_parameter_counts():
    from taylorat.models import create as make

    with torch.device("meta"):  # count without allocating 266M parameters
        counts = {n: sum(p.numel() for p in make(n).parameters()) for n in ("wrn_34_10", "wrn_34_20", "wrn_70_16")}
    assert counts["wrn_34_10"] == 46_160_474
    assert counts["wrn_70_16"] == 266_796_506  # RobustBench's WRN-70-16: 266.8M
    assert counts["wrn_34_20"] == 184_531_674

"""Tests for taylorat.models: architectures, registry, input checks, spec, normalization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taylorat.models import Classifier, available, create, register


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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

CASES = [
    ("preact_resnet18", dict(), (3, 32, 32)),
    ("preact_resnet18", dict(in_channels=1, image_size=28), (1, 28, 28)),
    ("wrn_16_2", dict(), (3, 32, 32)),
    ("small_cnn", dict(in_channels=1, image_size=28), (1, 28, 28)),
    ("small_cnn", dict(in_channels=1, image_size=8), (1, 8, 8)),
    ("vgg16", dict(), (3, 32, 32)),
    ("vgg16", dict(in_channels=1, image_size=28), (1, 28, 28)),
    ("mobilenetv2", dict(), (3, 32, 32)),
    ("mobilenetv2", dict(in_channels=1, image_size=28), (1, 28, 28)),
]
CASE_IDS = [f"{n}-{'x'.join(map(str, s))}" for n, _, s in CASES]


def test_parameter_counts():
    assert n_params(create("preact_resnet18")) == PREACT18_PARAMS
    assert n_params(create("preact_resnet18", final_bn=False)) == 11_171_146
    assert n_params(create("wrn_34_10")) == 46_160_474
    assert n_params(create("small_cnn", in_channels=1, image_size=28)) == SMALL_CNN_MNIST_PARAMS


def test_available():
    assert available() == ["mobilenetv2", "preact_resnet18", "small_cnn", "vgg16", "wrn_<depth>_<width>"]


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=CASE_IDS)
def test_forward_is_head_of_features(name, kwargs, shape):
    torch.manual_seed(0)
    model = create(name, num_classes=7, **kwargs).eval()
    assert isinstance(model, Classifier) and model.name == name
    x = torch.rand(2, *shape)
    model.check_input(x)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.head.in_features)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model.head(feats), rtol=0, atol=1e-6)


LAYOUT_CASES = [2, 4, 5, 6, 7, 8]  # skip the large preact_resnet18 cases


@pytest.mark.parametrize("name,kwargs,shape", [CASES[i] for i in LAYOUT_CASES], ids=[CASE_IDS[i] for i in LAYOUT_CASES])
def test_channels_last_and_bf16_autocast(name, kwargs, shape):
    torch.manual_seed(0)
    model = create(name, **kwargs).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wrn_34_10_single_forward():
    model = create("wrn_34_10", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_name():
    with pytest.raises(
        ValueError,
        match=r"^unknown model 'resnet50'; available: mobilenetv2, preact_resnet18, small_cnn, vgg16, "
        r"wrn_<depth>_<width> \(e\.g\. wrn_34_10\)$",
    ):
        create("resnet50")
    with pytest.raises(ValueError, match="unknown model 'wrn_34'"):
        create("wrn_34")


@pytest.mark.parametrize("name", ["wrn_33_10", "wrn_4_2", "wrn_35_1"])
def test_bad_wrn_depth(name):
    with pytest.raises(ValueError, match=r"\(depth - 4\) % 6 == 0.*valid: 10, 16, 22, 28, 34"):
        create(name)


def test_unknown_kwargs():
    with pytest.raises(TypeError, match=r"model 'wrn_16_2' got unexpected keyword argument\(s\) dropout"):
        create("wrn_16_2", dropout=0.3)
    with pytest.raises(TypeError, match=r"accepted: padding, mean, std"):
        create("small_cnn", in_channels=1, image_size=28, bogus=1)
    with pytest.raises(TypeError, match=r"depth is set by the name"):
        create("wrn_16_2", depth=28)


def test_bad_constructor_values():
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        create("small_cnn", num_classes=0)
    with pytest.raises(ValueError, match="give both mean and std"):
        create("small_cnn", mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="need 3 values"):
        create("preact_resnet18", mean=[0.5], std=[0.2])
    with pytest.raises(ValueError, match="cannot take 4x4 images"):
        create("small_cnn", in_channels=1, image_size=4, padding=0)
    with pytest.raises(TypeError):
        Classifier()  # abstract
    with pytest.raises(ValueError, match="already registered"):
        register("small_cnn")


def test_check_input_messages():
    model = create("preact_resnet18")
    with pytest.raises(
        ValueError,
        match=r"^model 'preact_resnet18' expects images of shape \(B, 3, 32, 32\), got \(B, 1, 28, 28\); "
        r"pick the model for this dataset with in_channels/image_size$",
    ):
        model.check_input(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\), got \(B, 3, 28, 28\)"):
        model.check_input(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\), got shape \(3, 32, 32\)"):
        model.check_input(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"dtype torch.uint8; convert with x.float\(\) / 255"):
        model.check_input(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    model.check_input(torch.rand(2, 3, 32, 32))
    digits = create("small_cnn", in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"model 'small_cnn' expects images of shape \(B, 1, 8, 8\)"):
        digits.check_input(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("preact_resnet18", dict(num_classes=100)),
        ("wrn_16_2", dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2471, 0.2435, 0.2616])),
        ("small_cnn", dict(in_channels=1, image_size=8, num_classes=3)),
        ("small_cnn", dict(in_channels=1, image_size=28, padding=1)),
        ("vgg16", dict(num_classes=100)),
        ("vgg16", dict(in_channels=1, image_size=28, mean=[0.5], std=[0.25])),
        ("mobilenetv2", dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2471, 0.2435, 0.2616])),
        ("mobilenetv2", dict(in_channels=1, image_size=28, num_classes=3)),
    ],
)
def test_spec_round_trip(name, kwargs):
    model = create(name, **kwargs)
    spec = model.spec
    assert spec["name"] == name
    rebuilt = create(**spec)
    assert rebuilt.spec == spec
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    if "mean" in kwargs:
        assert torch.equal(a["normalize.mean"], b["normalize.mean"])


def test_small_cnn_spec_records_resolved_padding():
    assert create("small_cnn", in_channels=1, image_size=28).spec["padding"] == 0
    assert create("small_cnn", in_channels=1, image_size=8).spec["padding"] == 1


@pytest.mark.parametrize("name,kwargs,shape", [CASES[0], CASES[3]], ids=[CASE_IDS[0], CASE_IDS[3]])
def test_normalize_matches_prenormalized_input(name, kwargs, shape):
    c = shape[0]
    mean = [0.4914, 0.4822, 0.4465][:c]
    std = [0.2471, 0.2435, 0.2616][:c]
    torch.manual_seed(0)
    normed = create(name, mean=mean, std=std, **kwargs).eval()
    plain = create(name, **kwargs).eval()
    sd = normed.state_dict()
    assert torch.equal(sd["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.equal(sd["normalize.std"].flatten(), torch.tensor(std))
    assert not any(k.startswith("normalize.") for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith("normalize.")})
    x = torch.rand(2, *shape)
    m = torch.tensor(mean).view(1, c, 1, 1)
    s = torch.tensor(std).view(1, c, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed(x), plain((x - m) / s), rtol=1e-5, atol=1e-5)

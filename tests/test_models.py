"""Tests for taylorat.models: architectures, registry, input checks, spec, normalization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taylorat.models import Classifier, available, create, examples, named, register

GEOMETRIES = [(3, 32), (1, 28)]  # CIFAR-shaped and MNIST-shaped inputs
# every registered model, as timm's tests do: a newly registered architecture is checked without editing this file
CONTRACT = [(name, c, s) for name in examples() for c, s in GEOMETRIES]
CONTRACT_IDS = [f"{n}-{c}x{s}x{s}" for n, c, s in CONTRACT]
# the model options a config can set (model.activation), on the models that take them
OPTIONS = [("preact_resnet18", {"activation": "silu"}), ("wrn_16_2", {"activation": "silu"}),
           ("wrn_28_10", {"activation": "silu"})]


def check_contract(name: str, channels: int, size: int, **options) -> None:
    """What taylorat needs of a model: features + linear head, [0,1] input checks, a spec that rebuilds it,
    channels_last and bf16 autocast (training) that agree with the default layout."""
    torch.manual_seed(0)
    model = create(name, num_classes=7, in_channels=channels, image_size=size, **options).eval()
    assert isinstance(model, Classifier) and model.name == name and isinstance(model.head, nn.Linear)
    x = torch.rand(2, channels, size, size)
    model.check_input(x)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        assert feats.shape == (2, model.head.in_features) and logits.shape == (2, 7)
        torch.testing.assert_close(logits, model.head(feats), rtol=0, atol=1e-6)
        spec = model.spec
        assert all(spec[k] == v for k, v in options.items() if v != "relu")
        rebuilt = create(**spec)
        assert rebuilt.spec == spec and spec["name"] == name
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt.eval()(x), logits, rtol=0, atol=0)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, logits, rtol=1e-4, atol=1e-5)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and out.shape == logits.shape
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,channels,size", CONTRACT, ids=CONTRACT_IDS)
def test_every_registered_model_meets_the_contract(name, channels, size):
    check_contract(name, channels, size)


@pytest.mark.parametrize("name,options", OPTIONS, ids=[f"{n}-{o['activation']}" for n, o in OPTIONS])
def test_model_options_meet_the_contract(name, options):
    check_contract(name, 3, 32, **options)
    relu, silu = create(name), create(name, **options)
    assert sum(p.numel() for p in relu.parameters()) == sum(p.numel() for p in silu.parameters())


def test_named_examples_and_bad_activation():
    assert {"wrn_28_10", "wrn_70_16", "wrn_34_10"} <= set(named())
    with pytest.raises(ValueError, match="activation must be one of relu, silu, got 'gelu'"):
        create("wrn_16_2", activation="gelu")


class ToyNet(Classifier):
    """A model registered from outside the package, as a user would."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32, mean=None, std=None, width=8):
        super().__init__(num_classes, in_channels, image_size, mean, std)
        self.width = width
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x):
        return self.bn(self.conv(self.normalize(x))).relu().mean((2, 3))


def test_a_model_registered_from_outside_is_checked_and_trains(tmp_path):
    from taylorat.models import unregister
    from taylorat.train import from_dict, train

    register("toy_<width>", example="toy_8")(lambda width, **kw: ToyNet(width=width, **kw))
    try:
        assert "toy_<width>" in available() and "toy_8" in examples()
        for c, size in GEOMETRIES:
            check_contract("toy_8", c, size)
        cfg = from_dict({"out_dir": str(tmp_path / "run"), "device": "cpu", "progress": False,
                         "checkpoints": "none", "model": {"name": "toy_4"},
                         "data": {"dataset": "synthetic", "holdout": 10,
                                  "options": {"n_train": 40, "n_test": 10, "channels": 1, "image_size": 8}},
                         "attack": {"eps": 0.1, "step": 0.05, "steps": 1}, "optim": {"epochs": 1, "batch_size": 16},
                         "eval": {"n": 10, "eps": 0.1, "step": 0.05, "steps": 1}})
        assert train(cfg, log=lambda s: None).epochs_done == 1
    finally:
        unregister("toy_<width>")
    assert "toy_<width>" not in available()


def test_available():
    assert {"mobilenetv2", "preact_resnet18", "small_cnn", "vgg16", "wrn_<depth>_<width>"} <= set(available())
    assert "wrn_16_2" in examples() and "wrn_34_10" in examples(small=False)


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


@pytest.mark.parametrize("name,kwargs,shape", [("preact_resnet18", {}, (3, 32, 32)),
                                               ("small_cnn", dict(in_channels=1, image_size=28), (1, 28, 28))],
                         ids=["preact_resnet18", "small_cnn"])
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

"""Checkpoints in the layouts users have: TRADES / RobustBench WideResNets, the robust_overfitting / AWP /
RobustBench PreAct ResNet-18 (with RobustBench's mu / sigma), imported into ours and exported back.

The reference architectures are re-written here with their key names and forward passes (TRADES'
``models/wideresnet.py``, RobustBench's ``WideResNet(sub_block1=True)`` and
``PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)`` with ``mu``/``sigma`` buffers);
the test is that the logits agree, not only the tensors.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.cli import main
from taylorat.models import layouts


class RBBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equalInOut = cin == cout
        self.convShortcut = None if self.equalInOut else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equalInOut else self.convShortcut(x)) + out


class RBNetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[RBBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class RBWideResNet(nn.Module):
    """TRADES' / RobustBench's WideResNet key layout; sub_block1 is built and never used."""

    def __init__(self, depth=16, widen=2, num_classes=10, sub_block1=True):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = RBNetworkBlock(n, ch[0], ch[1], 1)
        if sub_block1:
            self.sub_block1 = RBNetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = RBNetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = RBNetworkBlock(n, ch[2], ch[3], 2)
        self.bn1, self.relu = nn.BatchNorm2d(ch[3]), nn.ReLU()
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.flatten(1))


class RBPreActBlockV2(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + shortcut


class RBPreActResNet18(nn.Module):
    """RobustBench's PreActResNet(PreActBlockV2, [2,2,2,2], bn_before_fc=True) with mu/sigma (Rice et al.)."""

    def __init__(self, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cin, layers = 64, []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(RBPreActBlockV2(cin, planes, stride), RBPreActBlockV2(planes, planes, 1)))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)
        self.register_buffer("mu", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("sigma", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        out = self.conv1((x - self.mu) / self.sigma)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.flatten(1))


NORMALIZATION = ("mu", "sigma", "normalize.mean", "normalize.std")


def randomize(model, seed=0):
    """Random weights and BatchNorm statistics (not the normalization), so that every tensor shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point() and k not in NORMALIZATION:
                positive = "running_var" in k or (k.endswith(".weight") and v.dim() == 1)  # BN scale and variance
                v.copy_(torch.rand(v.shape, generator=g) * 0.2 + (0.9 if positive else -0.1))
    return model.eval()


def close(a, b, tol=1e-5):
    """Equal up to float32 reordering, relative to the logits' scale (random weights give large logits)."""
    return ((a - b).abs().max() / b.abs().max()).item() < tol


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_trades_and_robustbench_wideresnet_import_with_unused_sub_block(tmp_path, images):
    ref = randomize(RBWideResNet(16, 2, sub_block1=True))
    state = {"module." + k: v for k, v in ref.state_dict().items()}  # saved from DataParallel, as TRADES does
    assert "module.sub_block1.layer.0.conv1.weight" in state and "module.block1.layer.0.convShortcut.weight" in state
    torch.save(state, tmp_path / "model-wideres-epoch76.pt")
    ours = models.create("wrn_16_2", num_classes=10)
    dropped = ckpt.import_pickled_weights(tmp_path / "model-wideres-epoch76.pt", ours, allow_pickle=True)
    assert dropped and all(k.startswith("sub_block1.") for k in dropped)
    ours.eval()
    with torch.no_grad():
        assert close(ours(images), ref(images))


def test_robust_overfitting_preact_resnet18_imports_with_its_normalization(tmp_path, images):
    ref = randomize(RBPreActResNet18())
    assert "layer2.0.shortcut.0.weight" in ref.state_dict() and "mu" in ref.state_dict()
    torch.save(ref.state_dict(), tmp_path / "model_best.pth")
    out = tmp_path / "imported.safetensors"
    assert main(["import", str(tmp_path / "model_best.pth"), "--model", "preact_resnet18", "--dataset", "cifar10",
                 "--out", str(out), "--allow-pickle"]) == 0
    ours, meta = ckpt.load_model(out)
    assert meta["model"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    with torch.no_grad():
        assert close(ours(images), ref(images))


def test_unmapped_or_missing_keys_are_one_line_errors(tmp_path):
    ref = RBWideResNet(16, 2, sub_block1=False)
    state = dict(ref.state_dict())
    state["block9.extra.weight"] = torch.zeros(3)
    del state["fc.bias"]
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.import_pickled_weights(tmp_path / "odd.pt", models.create("wrn_16_2"), allow_pickle=True)
    msg = str(e.value)
    assert "\n" not in msg and "missing ['head.bias']" in msg and "unexpected ['block9.extra.weight']" in msg


@pytest.mark.parametrize("name,ref_cls", [("wrn_16_2", lambda: RBWideResNet(16, 2, sub_block1=False)),
                                          ("preact_resnet18", RBPreActResNet18)])
def test_export_to_robustbench_names_loads_into_their_model(name, ref_cls, images):
    kw = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]} if name == "preact_resnet18" else {}
    ours = randomize(models.create(name, num_classes=10, **kw), seed=3)
    theirs = ref_cls().eval()
    theirs.load_state_dict(layouts.to_robustbench(ours.state_dict(), name), strict=True)
    with torch.no_grad():
        assert close(theirs(images), ours(images))

"""Export for RobustBench / ONNX / a plain state dict, and evaluating checkpoints taylorat did not write."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.cli import main
from test_layouts import RBPreActResNet18, RBWideResNet, close, randomize

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]


def report(eps=8 / 255, n=1000):
    """What `taylorat eval --attacks clean,aa --out DIR` writes (the parts export reads)."""
    return {"dataset": "cifar10", "n": n, "results": {"clean": 84.5, "aa": 51.25},
            "settings": {"aa": {"name": "autoattack", "eps": eps, "norm": "linf", "version": "standard"}},
            "extra": {"aa_log": ["DEBUG: using standard version including apgd-ce, apgd-t, fab-t, square.",
                                 "DEBUG: robust accuracy after APGD-CE: 53.10%"]}}


@pytest.fixture
def preact(tmp_path):
    torch.manual_seed(0)
    model = randomize(models.create("preact_resnet18", num_classes=10, mean=MEAN, std=STD), seed=2)
    path = tmp_path / "best.safetensors"
    ckpt.save_model(path, model, {"method": {"name": "trades+1st+2nd", "eta": 0.2}, "epoch": 142,
                                  "config": {"data": {"dataset": "cifar10"}, "optim": {"epochs": 200}}})
    return model, path


def test_robustbench_bundle_loads_into_their_architecture(preact, tmp_path):
    model, path = preact
    (tmp_path / "report.json").write_text(json.dumps(report()))
    assert main(["export", str(path), "--format", "robustbench", "--out", str(tmp_path / "rb"),
                 "--report", str(tmp_path / "report.json")]) == 0
    out = tmp_path / "rb"
    state = torch.load(out / "Jin2023Randomized.pt", weights_only=True)  # as their model zoo reads it
    assert state.keys() == load_file(str(out / "Jin2023Randomized.safetensors")).keys()
    theirs = RBPreActResNet18().eval()
    theirs.load_state_dict(state, strict=True)  # their key names, normalization as mu / sigma
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert close(theirs(x), model(x))
    info = json.loads((out / "Jin2023Randomized.json").read_text())
    assert info["architecture"] == "PreActResNet-18" and info["eps"] == "8/255" and info["dataset"] == "cifar10"
    assert info["clean_acc"] == "84.50" and info["autoattack_acc"] == "51.25" and info["n_examples"] == 1000
    assert "first 1000 test images" in info["footnote"] and info["venue"] == "CVPR 2023"
    assert info["training"]["method"] == "trades+1st+2nd" and info["training"]["checkpoint_epoch"] == 142
    assert "robust accuracy after APGD-CE" in (out / "autoattack_log.txt").read_text()


def test_robustbench_refuses_another_autoattack_radius(preact, tmp_path, capsys):
    _, path = preact
    (tmp_path / "report.json").write_text(json.dumps(report(eps=0.031)))
    assert main(["export", str(path), "--format", "robustbench", "--out", str(tmp_path / "rb"),
                 "--report", str(tmp_path / "report.json")]) == 2
    assert "Linf leaderboard is at 8/255" in capsys.readouterr().err


def test_wideresnet_export_uses_their_names(tmp_path):
    torch.manual_seed(0)
    model = randomize(models.create("wrn_16_2"), seed=4)
    ckpt.save_model(tmp_path / "w.safetensors", model, {"config": {"data": {"dataset": "cifar10"}}})
    (tmp_path / "r.json").write_text(json.dumps(report(n=10000)))
    assert main(["export", str(tmp_path / "w.safetensors"), "--format", "robustbench", "--out", str(tmp_path / "o"),
                 "--report", str(tmp_path / "r.json"), "--name", "Me2026Mine"]) == 0
    theirs = RBWideResNet(16, 2, sub_block1=False).eval()
    theirs.load_state_dict(torch.load(tmp_path / "o" / "Me2026Mine.pt", weights_only=True), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert close(theirs(x), model(x))
    assert "footnote" not in json.loads((tmp_path / "o" / "Me2026Mine.json").read_text())


def test_onnx_output_equals_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")  # test-only dependency (taylorat[test])
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=28).eval()
    ckpt.save_model(tmp_path / "m.safetensors", model)
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "onnx", "--out", str(tmp_path)]) == 0
    x = torch.rand(5, 1, 28, 28)  # another batch size than the traced one
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


def test_onnx_export_is_one_self_contained_file(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=28).eval()
    ckpt.save_model(tmp_path / "m.safetensors", model)
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "onnx", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["m.onnx"]  # no external data file, no temp file
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    (alone / "copy.onnx").write_bytes((out / "m.onnx").read_bytes())  # copied alone, it still loads
    x = torch.rand(2, 1, 28, 28)
    got = ort.InferenceSession(str(alone / "copy.onnx")).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


def test_robustbench_export_into_a_full_disk_leaves_nothing(preact, tmp_path, monkeypatch):
    import taylorat.export as export_mod

    _, path = preact
    (tmp_path / "report.json").write_text(json.dumps(report()))
    real, calls = export_mod.atomic_write_text, []

    def disk_full_on_third(p, text):
        calls.append(p)
        if len(calls) == 2:  # the AutoAttack log, the last file: after the weights and the json
            raise OSError(28, "No space left on device")
        real(p, text)

    monkeypatch.setattr(export_mod, "atomic_write_text", disk_full_on_third)
    for out in (tmp_path / "new", tmp_path):  # a new folder, and one that holds other files
        before = sorted(p.name for p in out.iterdir()) if out.exists() else None
        calls.clear()
        with pytest.raises(OSError, match="No space"):
            export_mod.export(path, "robustbench", out, report())
        assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_plain_state_dict_loads_without_taylorat(tmp_path):
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    ckpt.save_model(tmp_path / "m.safetensors", model)
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "state-dict", "--out", str(tmp_path / "sd"),
                 "--name", "plain"]) == 0
    fresh = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    fresh.load_state_dict(load_file(str(tmp_path / "sd" / "plain.safetensors")), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_eval_takes_a_foreign_state_dict(tmp_path, capsys):
    ref = randomize(RBWideResNet(16, 2, sub_block1=True))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "rb.safetensors"))
    torch.save(ref.state_dict(), tmp_path / "rb.pt")
    base = ["eval", "--arch", "wrn_16_2", "--dataset", "synthetic", "--attacks", "clean", "--n", "8"]
    assert main([*base, "--checkpoint", str(tmp_path / "rb.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["model"] == "wrn_16_2" and rep["n"] == 8
    assert main([*base, "--checkpoint", str(tmp_path / "rb.pt")]) == 2  # a pickle needs the opt-in
    assert "--allow-pickle" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "rb.pt"), "--allow-pickle", "--mean", ",".join(map(str, MEAN)),
                 "--std", ",".join(map(str, STD))]) == 0
    capsys.readouterr()
    assert main([*base[:2], "preact_resnet18", *base[3:], "--checkpoint", str(tmp_path / "rb.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this model" in err[0] and "missing" in err[0]

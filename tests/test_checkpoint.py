"""Checkpoints: round trip, atomic writes, and clear errors for anything that is not ours."""

import json
import os
import pickle
import random

import pytest
import torch
from safetensors.torch import save_file

from taylorat import checkpoint as ckpt
from taylorat import models


def model(name="small_cnn", **kw):
    torch.manual_seed(0)
    return models.create(name, num_classes=10, in_channels=1, image_size=8, **kw)


def test_round_trip_rebuilds_the_model_exactly(tmp_path):
    m = model()
    m.train()
    m(torch.rand(4, 1, 8, 8))  # move BN running stats away from their init
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, m, {"epoch": 7})
    loaded, meta = ckpt.load_model(path)
    assert meta["epoch"] == 7 and meta["model"] == m.spec
    assert not loaded.training
    a, b = m.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_spec_keeps_architecture_options(tmp_path):
    m = models.create("preact_resnet18", num_classes=10, final_bn=False)
    ckpt.save_model(tmp_path / "p.safetensors", m)
    loaded, _ = ckpt.load_model(tmp_path / "p.safetensors")
    assert sum(p.numel() for p in loaded.parameters()) == 11_171_146


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    ckpt.save(path, {"a": torch.ones(3)}, {"epoch": 1})
    good = path.read_bytes()
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ckpt.save(path, {"a": torch.zeros(3)}, {"epoch": 2})
    assert path.read_bytes() == good  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_missing_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load(tmp_path / "nope.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):  # a folder is not one either
        ckpt.load(tmp_path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.safetensors"
    junk = random.Random(0).randbytes(300)  # fixed: 1 in 256 random files starts like a pickle (0x80)
    assert junk[:1] != b"\x80" and junk[:4] != b"PK\x03\x04"
    p.write_bytes(junk)
    with pytest.raises(ckpt.CheckpointError, match="not a taylorat checkpoint"):
        ckpt.load(p)


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "t.safetensors"
    ckpt.save_model(p, model())
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ckpt.CheckpointError, match="not a taylorat checkpoint"):
        ckpt.load(p)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"state": Payload()}, protocol=2))
    with pytest.raises(ckpt.CheckpointError, match="pickle"):
        ckpt.load(p)
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(ckpt.CheckpointError, match="pickle"):
        ckpt.load(tmp_path / "plain.pt")
    assert not (tmp_path / "pwned").exists()


def test_foreign_safetensors_file(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(p))
    with pytest.raises(ckpt.CheckpointError, match="without taylorat metadata"):
        ckpt.load(p)
    save_file({"w": torch.ones(2)}, str(p), metadata={"taylorat": json.dumps({"format": "else"})})
    with pytest.raises(ckpt.CheckpointError, match="not a taylorat checkpoint"):
        ckpt.load(p)


def test_checkpoint_of_another_architecture(tmp_path):
    p = tmp_path / "m.safetensors"
    ckpt.save_model(p, model())
    tensors, _ = ckpt.load(p)
    other = models.create("small_cnn", num_classes=100, in_channels=1, image_size=8)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model .*shape mismatch"):
        ckpt.load_state_strict(other, tensors)
    wrn = models.create("wrn_16_2", num_classes=10)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model .*missing"):
        ckpt.load_state_strict(wrn, tensors)


def test_import_of_a_reference_state_dict(tmp_path):
    from taylorat.cli import main

    src = model()
    state = {("module." + k).replace("module.head.", "module.linear."): v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "epoch200.pt")  # as the reference code saves (DataParallel, fc)
    out = tmp_path / "imported.safetensors"
    args = ["import", str(tmp_path / "epoch200.pt"), "--model", "small_cnn", "--in-channels", "1", "--image-size",
            "8", "--dataset", "digits", "--out", str(out)]
    assert main(args) == 2  # no opt-in, no pickle
    assert main(args + ["--allow-pickle"]) == 0
    loaded, meta = ckpt.load_model(out)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in src.state_dict().items())
    assert meta["config"]["data"]["dataset"] == "digits"


def test_opted_in_pickle_still_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    with pytest.raises(ckpt.CheckpointError, match="not a plain tensor state dict; refused"):
        ckpt.import_pickled_weights(tmp_path / "evil.pt", model(), allow_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_import_of_the_trades_wideresnet_layout(tmp_path):
    import re

    ours = models.create("wrn_16_2", num_classes=10)
    trades = {}
    for k, v in ours.state_dict().items():  # rename to TRADES' models/wideresnet.py layout
        k = re.sub(r"^(block\d)\.(\d+)\.", r"\1.layer.\2.", k).replace(".shortcut.", ".convShortcut.")
        k = re.sub(r"^bn\.", "bn1.", k).replace("head.", "fc.")
        trades[k] = v
    assert "block1.layer.0.convShortcut.weight" in trades and "fc.weight" in trades
    torch.save(trades, tmp_path / "model-wideres-epoch76.pt")
    fresh = models.create("wrn_16_2", num_classes=10)
    ckpt.import_pickled_weights(tmp_path / "model-wideres-epoch76.pt", fresh, allow_pickle=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_flipped_tensor_bytes_are_refused_as_damaged(tmp_path):
    p = tmp_path / "m.safetensors"
    ckpt.save_model(p, model())
    raw = bytearray(p.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(json.loads(raw[8:8 + n])["__metadata__"]["taylorat"])["data_crc32"]
    ckpt.load(p)  # intact
    mid = 8 + n + (len(raw) - 8 - n) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    p.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointDamaged, match=f"{p.name} is damaged") as e:
        ckpt.load_model(p)
    assert "\n" not in str(e.value)
    with pytest.raises(ckpt.CheckpointDamaged):
        ckpt.read_meta(p)  # the metadata alone is not trusted either


def test_checkpoint_without_checksum_loads_with_a_note(tmp_path):
    m = model()
    p = tmp_path / "old.safetensors"
    meta = {"format": ckpt.FORMAT, "version": 1, "kind": "model", "model": m.spec}
    save_file(ckpt.model_tensors(m), str(p), metadata={"taylorat": json.dumps(meta)})
    with pytest.warns(ckpt.UnverifiedCheckpoint, match="no checksum"):
        loaded, got = ckpt.load_model(p)
    assert got["model"] == m.spec and "data_crc32" not in got
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))

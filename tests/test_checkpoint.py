"""Checkpoints: round trip, atomic writes, and clear errors for anything that is not ours."""

import json
import os
import pickle

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


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(os.urandom(300))
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

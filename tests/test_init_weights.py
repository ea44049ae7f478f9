"""``model.init``: a run starts from a checkpoint's weights, strictly, and refuses one that does not fit."""

import hashlib
import json

import pytest
import torch

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.cli import main
from taylorat.common import InputError
from taylorat.train import ConfigError, train
from taylorat.train.dryrun import dry_run
from taylorat.train.trainer import Trainer
from test_train import tiny

QUIET = {"log": lambda e: None}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A one-epoch run of the tiny config: its ``best`` and ``last`` checkpoints."""
    out = tmp_path_factory.mktemp("source")
    train(tiny(out, optim__epochs=1), **QUIET)
    return out


def model_state(path):
    tensors, _ = ckpt.load(path)
    return {k[len(ckpt.MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(ckpt.MODEL_PREFIX)}


@pytest.mark.parametrize("which", ["best", "last"])
def test_the_run_starts_from_every_weight_and_buffer_of_the_checkpoint(source, tmp_path, which):
    path = source / f"{which}.safetensors"
    t = Trainer(tiny(tmp_path / "b", model__init=str(path)), **QUIET)
    want, got = model_state(path), t.model.state_dict()
    assert set(got) == set(want) and any("running_mean" in k for k in got)  # BatchNorm statistics come too
    assert all(torch.equal(got[k], want[k]) for k in want)
    fresh = Trainer(tiny(tmp_path / "c"), **QUIET).model.state_dict()
    assert not all(torch.equal(fresh[k], want[k]) for k in want)  # which a random initialisation is not
    assert t.start_epoch == 1 and not t.opt.state  # only the weights: no momentum, epoch 1
    assert t.init["path"] == str(path) and t.init["epoch"] == 1 and t.init["head"] == "keep"


def test_a_finished_run_names_its_starting_point_and_resumes_to_the_same_weights(source, tmp_path):
    init = str(source / "last.safetensors")
    lines = []
    whole = train(tiny(tmp_path / "whole", model__init=init), log=lambda e: lines.append(e.get("text", "")))
    assert any(f"started from the weights of {init}" in line for line in lines)
    summary = json.loads((whole.out_dir / "summary.json").read_text())

    assert summary["init"]["sha256"] == hashlib.sha256((source / "last.safetensors").read_bytes()).hexdigest()
    cfg = tiny(tmp_path / "split", model__init=init)
    train(cfg, stop_after=1, **QUIET)
    train(cfg, resume=True, **QUIET)
    a, b = model_state(whole.out_dir / "last.safetensors"), model_state(tmp_path / "split" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the weights moved from where they started (it trained)
    start = model_state(source / "last.safetensors")
    assert not all(torch.equal(a[k], start[k]) for k in start)


def test_an_input_normalization_stored_in_the_checkpoint_comes_with_it(tmp_path):
    path = tmp_path / "normalized.safetensors"
    m = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=[0.3], std=[0.2])
    ckpt.save_model(path, m)
    t = Trainer(tiny(tmp_path / "b", model__init=str(path), channels_last="false"), **QUIET)
    assert t.model.spec["mean"] == pytest.approx([0.3]) and t.model.spec["std"] == pytest.approx([0.2])
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(t.model.eval()(x), m.eval()(x))
    auto = Trainer(tiny(tmp_path / "c", model__init=str(path)), **QUIET)  # the layout probe skips the normalization
    assert auto.channels_last_why.startswith("auto:")
    assert torch.allclose(auto.model.eval()(x.contiguous(memory_format=auto.memory_format)), m(x), atol=1e-6)


@pytest.mark.parametrize("change,match", [
    ({"model__name": "preact_resnet18"}, r"holds small_cnn with name='small_cnn'.*set model.name=small_cnn"),
    ({"data__options": {"n_train": 160, "n_test": 64, "channels": 1, "image_size": 8, "num_classes": 5}},
     r"num_classes=10.*num_classes=5; set model.init_head=new to train a fresh head"),
    ({"data__options": {"n_train": 160, "n_test": 64, "channels": 3, "image_size": 8}},
     r"in_channels=1.*in_channels=3; use a checkpoint of this dataset"),
    ({"data__options": {"n_train": 160, "n_test": 64, "channels": 1, "image_size": 16}},
     r"image_size=8.*image_size=16; use a checkpoint of this dataset"),
])
def test_a_checkpoint_of_another_model_is_refused_by_name(source, tmp_path, change, match):
    cfg = tiny(tmp_path / "b", model__init=str(source / "best.safetensors"), **change)
    for attempt in (lambda: Trainer(cfg, **QUIET), lambda: dry_run(cfg)):
        with pytest.raises(InputError, match=match) as e:
            attempt()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "b").exists()  # refused before the run folder is made


def test_files_that_are_not_a_checkpoint_get_the_fix(source, tmp_path):
    pickle = tmp_path / "weights.pt"
    torch.save(models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).state_dict(), pickle)
    for init, match in ((pickle, r"torch.save pickle; convert it once with `taylorat import"),
                        (source, r"is a folder; give one of its checkpoints, e\.g\. .*best\.safetensors"),
                        (tmp_path / "nothing.safetensors", r"no checkpoint at")):
        with pytest.raises(InputError, match=match):
            Trainer(tiny(tmp_path / "b", model__init=str(init)), **QUIET)


def test_the_dry_run_reads_the_checkpoint_and_names_it(source, tmp_path):
    path = source / "best.safetensors"
    lines = dry_run(tiny(tmp_path / "b", model__init=str(path)))
    assert any(line.startswith(f"init: the weights of {path} (sha256 ") for line in lines)


def test_a_torch_save_state_dict_starts_a_run_after_taylorat_import(tmp_path):
    """The README's path: ``taylorat import`` once, then ``model.init`` (here on the tiny config's geometry)."""
    theirs = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).state_dict()
    torch.save(theirs, tmp_path / "weights.pt")
    out = tmp_path / "weights.safetensors"
    assert main(["import", str(tmp_path / "weights.pt"), "--model", "small_cnn", "--in-channels", "1",
                 "--image-size", "8", "--allow-pickle", "--out", str(out)]) == 0
    got = Trainer(tiny(tmp_path / "b", model__init=str(out)), **QUIET).model.state_dict()
    assert all(torch.equal(got[k], theirs[k]) for k in theirs)


FIVE = {"n_train": 160, "n_test": 64, "channels": 1, "image_size": 8, "num_classes": 5}


def test_a_new_head_takes_every_other_weight_and_fits_the_run_s_classes(source, tmp_path):
    """Transfer: a 10-class checkpoint starts a 5-class run; the head is the architecture's own initialisation."""
    path = source / "best.safetensors"
    t = Trainer(tiny(tmp_path / "b", model__init=str(path), model__init_head="new", data__options=FIVE), **QUIET)
    want, got = model_state(path), t.model.state_dict()
    assert got["head.weight"].shape[0] == 5 and t.model.spec["num_classes"] == 5
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("head."))
    again = Trainer(tiny(tmp_path / "c", model__init=str(path), model__init_head="new", data__options=FIVE), **QUIET)
    assert torch.equal(again.model.head.weight, t.model.head.weight)  # seeded: the same fresh head each time
    same = Trainer(tiny(tmp_path / "d", model__init=str(path), model__init_head="new"), **QUIET)
    assert not torch.equal(same.model.head.weight, want["head.weight"])  # new even where the classes agree
    lines = dry_run(tiny(tmp_path / "e", model__init=str(path), model__init_head="new", data__options=FIVE))
    assert any(line.endswith(", a new head") for line in lines)


def test_a_new_head_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="model.init_head=new replaces the head of a checkpoint: set model.init"):
        tiny(tmp_path / "b", model__init_head="new")

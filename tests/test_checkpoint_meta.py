"""CheckpointMeta: the typed view of a checkpoint's JSON state, for new, old and foreign files."""

import torch

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.train import from_dict, train


def test_a_run_checkpoint_reads_back_through_the_view(tmp_path):
    cfg = from_dict({"out_dir": str(tmp_path), "device": "cpu", "progress": False, "checkpoints": "none",
                     "data": {"dataset": "synthetic", "holdout": 10,
                              "options": {"n_train": 34, "n_test": 10, "channels": 1, "image_size": 8}},
                     "model": {"name": "small_cnn"}, "method": {"name": "trades+1st"}, "minimizer": {"name": "sam"},
                     "attack": {"eps": 0.1, "step": 0.05, "steps": 1}, "optim": {"epochs": 1, "batch_size": 12},
                     "eval": {"n": 10, "eps": 0.1, "step": 0.05, "steps": 2}})
    train(cfg, log=lambda e: None)
    m = ckpt.CheckpointMeta.from_meta(ckpt.read_meta(tmp_path / "best.safetensors"))
    assert m.model_name == "small_cnn" and m.model_kwargs["in_channels"] == 1
    assert m.dataset == "synthetic" and m.data_options["n_train"] == 34
    assert m.method_name == "trades+1st" and m.label == "trades+1st" and m.method["eta"] == 0.3
    assert m.minimizer == {"name": "sam", "rho": 0.05, "warmup": 0}
    assert (m.eval_settings.eps, m.eval_settings.step, m.eval_settings.steps) == (0.1, 0.05, 2)
    assert m.epoch == 1 and m.best_epoch == 1 and set(m.best) >= {"pgd"}


def test_an_old_or_foreign_checkpoint_reads_as_empty_sections(tmp_path):
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    ckpt.save_model(tmp_path / "m.safetensors", model, {})
    m = ckpt.CheckpointMeta.from_meta(ckpt.read_meta(tmp_path / "m.safetensors"))
    assert m.model_name == "small_cnn" and m.label == "small_cnn"  # no method: the model names it
    assert m.dataset is None and m.data_dir == "./data" and m.data_options == {}
    assert m.method == {} and m.minimizer == {} and m.epoch is None and m.history == [] and m.partial is None

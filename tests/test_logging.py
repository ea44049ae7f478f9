"""What a run reports: dicts to the log callback, the same numbers in metrics.jsonl and in TensorBoard."""

import json

import pytest

from taylorat.train import from_dict, train


def cfg(out, **extra):
    return from_dict({"out_dir": str(out), "device": "cpu", "progress": False, "checkpoints": "none", "curves": False,
                      "log_every": 1, "model": {"name": "small_cnn"},
                      "data": {"dataset": "synthetic", "holdout": 10,
                               "options": {"n_train": 42, "n_test": 10, "channels": 1, "image_size": 8}},
                      "attack": {"eps": 0.1, "step": 0.05, "steps": 1}, "optim": {"epochs": 2, "batch_size": 16},
                      "eval": {"n": 10, "eps": 0.1, "step": 0.05, "steps": 1}, **extra})


def test_the_log_callback_receives_dicts(tmp_path):
    events = []
    train(cfg(tmp_path / "r"), log=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 2 and kinds.count("step") == 4 and "message" in kinds
    history = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for ev, rec in zip([e for e in events if e["event"] == "epoch"], history):
        assert {k: ev[k] for k in rec} == rec  # the epoch event is metrics.jsonl's record, plus context
    step = next(e for e in events if e["event"] == "step")
    assert {"epoch", "step", "steps", "loss", "lr", "global_step"} <= step.keys()


def test_tensorboard_gets_the_numbers_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")  # taylorat[tensorboard]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(cfg(tmp_path / "r", logging=["jsonl", "tensorboard"]), log=lambda e: None)
    history = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    for key in ("train_loss", "holdout_pgd", "train_first", "lr"):
        got = acc.Scalars(f"epoch/{key}")
        assert [s.step for s in got] == [h["epoch"] for h in history]
        assert [s.value for s in got] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert len(acc.Scalars("step/loss")) == 4


def test_unknown_logging_backend_is_a_config_error():
    with pytest.raises(ValueError, match="logging='mlflow' is not one of jsonl, tensorboard, wandb"):
        from_dict({"logging": ["jsonl", "mlflow"]})


def test_wandb_gets_the_same_numbers(tmp_path, monkeypatch):
    """W&B is optional (taylorat[wandb]); a stand-in module records what the sink sends."""
    import sys
    import types

    logged, inits = [], []

    class Run:
        def log(self, values):
            logged.append(values)

        def finish(self):
            logged.append("finished")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: inits.append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(cfg(tmp_path / "r", logging=["jsonl", "wandb"]), log=lambda e: None)
    history = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    epochs = [v for v in logged if isinstance(v, dict) and "epoch/train_loss" in v]
    assert [v["epoch/train_loss"] for v in epochs] == pytest.approx([h["train_loss"] for h in history])
    assert inits[0]["config"]["method"]["name"] == "trades+1st+2nd" and logged[-1] == "finished"

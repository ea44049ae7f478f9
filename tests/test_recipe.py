"""Today's recipe: extra data in every batch, cosine + warm-up, label smoothing, EMA warm-up, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taylorat import data as datasets
from taylorat.common import InputError
from taylorat.data.extra import MixedLoader, extra_count, open_member, open_pool
from taylorat.models import create
from taylorat.objectives import Method, Threat
from taylorat.train import ConfigError, from_dict, lr_at, train
from taylorat.train.averaging import WeightAverage
from taylorat.train.dryrun import dry_run
from taylorat.train.schedule import lr_at_step
from taylorat.train.step import train_step


def pool_file(path, n=64, size=8, channels=1, classes=10, seed=0, **arrays):
    rng = np.random.default_rng(seed)
    values = {"image": rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
              "label": rng.integers(0, classes, n).astype(np.int64)}
    values.update(arrays)
    np.savez(path, **values)
    return path


# ------------------------------------------------------------------ extra pool


def test_pool_is_memory_mapped_and_matches_numpy(tmp_path):
    f = pool_file(tmp_path / "pool.npz", n=20)
    mm = open_member(f, "image")
    assert isinstance(mm, np.memmap)
    with np.load(f) as z:
        np.testing.assert_array_equal(np.asarray(mm), z["image"])
    pool = open_pool(f, 1, 8, 10)
    assert len(pool) == 20 and pool.labels.dtype == torch.int64
    idx = np.array([7, 2, 19, 2])
    np.testing.assert_array_equal(pool.gather(idx).permute(0, 2, 3, 1).numpy(), np.asarray(mm)[idx])


@pytest.mark.parametrize("arrays,match", [
    ({"image": np.zeros((64, 8, 8, 1), np.float32)}, "image must be uint8 N x H x W x C"),
    ({"image": np.zeros((64, 8, 8), np.uint8)}, "image must be uint8 N x H x W x C"),
    ({"image": np.zeros((64, 9, 9, 1), np.uint8)}, r"images are 9x9x1 \(H x W x C\); the dataset's are 8x8x1"),
    ({"image": np.zeros((64, 8, 8, 3), np.uint8)}, "the dataset's are 8x8x1"),
    ({"label": np.full(64, 10)}, r"labels span \[10, 10\]; the dataset has classes 0\.\.9"),
    ({"label": np.zeros(3, np.int64)}, r"label must be integers of shape \(64,\)"),
    ({"label": np.zeros(64, np.float32)}, "label must be integers"),
    ({"image": np.zeros((0, 8, 8, 1), np.uint8), "label": np.zeros(0, np.int64)}, "the pool is empty"),
])
def test_bad_pools_are_one_line_errors(tmp_path, arrays, match):
    f = pool_file(tmp_path / "pool.npz", **arrays)
    with pytest.raises(InputError, match=match) as e:
        open_pool(f, 1, 8, 10)
    assert "\n" not in str(e.value)


def test_bad_pool_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_pool(tmp_path / "nope.npz", 1, 8, 10)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="is not an .npz"):
        open_pool(tmp_path / "text.npz", 1, 8, 10)
    np.savez(tmp_path / "keys.npz", x=np.zeros((2, 8, 8, 1), np.uint8), y=np.zeros(2))
    with pytest.raises(InputError, match=r"has keys \['x', 'y'\]; it needs image"):
        open_pool(tmp_path / "keys.npz", 1, 8, 10)
    np.savez_compressed(tmp_path / "small.npz", image=np.zeros((2, 8, 8, 1), np.uint8), label=np.zeros(2, np.int64))
    with pytest.raises(InputError, match="is compressed; write the pool with np.savez"):
        open_pool(tmp_path / "small.npz", 1, 8, 10)


@pytest.mark.parametrize("over,match", [
    ({"fraction": 1.0}, r"data.extra.fraction must be in \[0, 1\)"),
    ({"fraction": -0.1}, r"data.extra.fraction must be in \[0, 1\)"),
    ({"fraction": 0.5}, "needs data.extra.path"),
    ({"path": "x.npz"}, "data.extra.fraction is 0"),
])
def test_extra_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({"data": {"extra": over}})


def mixed(tmp_path, n_orig=100, batch=20, fraction=0.3, on_device=True, n_pool=37, crop=True, flip=True):
    pool = open_pool(pool_file(tmp_path / "pool.npz", n=n_pool), 1, 8, 10)
    per = extra_count(fraction, batch)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n_orig, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.full((n_orig,), -1)  # original rows labelled -1: the pool's labels are 0..9
    base = datasets.DeviceLoader(x, y, batch - per, "cpu", crop=crop, flip=flip, pad=2, seed=3)
    return MixedLoader(base, pool, per, on_device, seed=3)


def test_every_batch_has_the_fixed_share_and_an_epoch_is_one_pass(tmp_path):
    loader = mixed(tmp_path, fraction=0.3)
    per = extra_count(0.3, 20)
    assert per == 6 and len(loader) == math.ceil(100 / 14)
    n_orig = 0
    for x, y, (lo, hi, total) in loader.shard_batches(1, 0, 1):
        assert (y >= 0).sum() == per and total == y.shape[0] == x.shape[0]
        assert (y[-per:] >= 0).all()  # original rows first, then the pool's
        n_orig += int((y < 0).sum())
    assert n_orig == 100


def test_pool_share_within_binomial_bounds_over_many_batches(tmp_path):
    """Over all batches the pool share is the configured fraction: far inside the binomial 5σ band."""
    loader = mixed(tmp_path, n_orig=2000, batch=50, fraction=0.7, crop=False, flip=False)
    extra = total = 0
    for epoch in (1, 2):
        for _, y, _ in loader.shard_batches(epoch, 0, 1):
            extra, total = extra + int((y >= 0).sum()), total + y.shape[0]
    p = 0.7
    assert abs(extra - p * total) <= 5 * math.sqrt(total * p * (1 - p))


def test_pool_draws_are_a_permutation_per_pass_and_resume_exactly(tmp_path):
    loader = mixed(tmp_path, n_pool=37)
    seen = torch.cat([loader.stream.indices(t) for t in range(37)])  # 6 per step: 222 positions, 6 passes
    for k in range(6):
        assert sorted(seen[37 * k: 37 * (k + 1)].tolist()) == list(range(37))
    full = list(loader.shard_batches(2, 0, 1))
    resumed = list(loader.shard_batches(2, 0, 1, start=3))
    assert len(resumed) == len(full) - 3
    for (xa, ya, _), (xb, yb, _) in zip(full[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(loader.shard_batches(3, 0, 1))
    assert not torch.equal(full[0][1], other[0][1])


def test_streaming_matches_on_device_and_shards_cover_the_global_batch(tmp_path):
    dev = mixed(tmp_path, on_device=True)
    stream = mixed(tmp_path, on_device=False)
    assert stream.images is None
    one = list(dev.shard_batches(1, 0, 1))
    for (xa, ya, ra), (xb, yb, rb) in zip(one, stream.shard_batches(1, 0, 1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb
    shards = [list(stream.shard_batches(1, r, 3)) for r in range(3)]
    for i, (x, y, _) in enumerate(one):
        parts = [s[i] for s in shards]
        assert [p[2][:2] for p in parts] == sorted(p[2][:2] for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_streaming_stops_cleanly_when_left_early(tmp_path):
    loader = mixed(tmp_path, on_device=False)
    it = loader.shard_batches(1, 0, 1)
    next(it)
    it.close()  # the prefetch thread ends with the generator
    assert next(iter(loader.shard_batches(1, 0, 1)))[0].shape[0] == 20


# ------------------------------------------------------------------ schedules, smoothing, EMA


def test_step_schedule_per_step_is_the_epoch_schedule():
    for step in range(40):
        assert lr_at_step(step, 4, 0.1, 10, [0.5, 0.75], 0.1) == lr_at(step // 4 + 1, 0.1, 10, [0.5, 0.75], 0.1)


def test_cosine_with_linear_warmup_per_step():
    lr = [lr_at_step(s, 10, 0.4, 5, [], 0.1, "cosine", 1.0) for s in range(50)]
    assert lr[:10] == pytest.approx([0.4 * (s + 1) / 10 for s in range(10)])
    assert lr[10] == pytest.approx(0.4) and lr[49] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert lr_at_step(25, 10, 0.4, 5, [], 0.1, "cosine") == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi / 2)))
    step_warm = [lr_at_step(s, 10, 0.1, 5, [0.5], 0.1, "step", 0.5) for s in range(10)]
    assert step_warm[:5] == pytest.approx([0.1 * (s + 1) / 5 for s in range(5)]) and step_warm[5:] == [0.1] * 5


def outputs(seed=0, b=6, c=5, d=4):
    g = torch.Generator().manual_seed(seed)
    z, za = torch.randn(b, c, generator=g), torch.randn(b, c, generator=g)
    h, ha = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    return (z, h, za, ha), torch.randint(0, c, (b,), generator=g)


@pytest.mark.parametrize("base,logits", [("trades", 0), ("at", 2), ("mart", 2)])
def test_label_smoothing_changes_the_ce_only(base, logits):
    out, y = outputs()
    plain = Method(base=base, eta=0.2, eta2=0.1).loss_from_outputs(out, y)
    smooth = Method(base=base, eta=0.2, eta2=0.1, label_smoothing=0.1).loss_from_outputs(out, y)
    delta = F.cross_entropy(out[logits], y, label_smoothing=0.1) - F.cross_entropy(out[logits], y)
    torch.testing.assert_close(smooth.ce - plain.ce, delta)
    assert torch.equal(smooth.kl, plain.kl) and torch.equal(smooth.first, plain.first)
    assert torch.equal(smooth.second, plain.second)
    torch.testing.assert_close(smooth.loss - plain.loss, (1 - 0.2) * delta)


def test_label_smoothing_range_and_unknown_bases():
    with pytest.raises(ConfigError, match=r"method.label_smoothing must be in \[0, 1\)"):
        from_dict({"method": {"label_smoothing": 1.0}})
    from taylorat.objectives import Base, register_base, unregister_base

    @register_base("plainloss")
    class PlainLoss(Base):
        pass

    try:
        with pytest.raises(ConfigError, match="base 'plainloss' does not take it"):
            from_dict({"method": {"name": "plainloss", "label_smoothing": 0.1}})
    finally:
        unregister_base("plainloss")


def test_ema_decay_warms_up_as_the_reference():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    avg = WeightAverage(model, "ema", 10, ema_decay=0.995, ema_warmup=True)
    expected = None
    for t in range(30):
        with torch.no_grad():
            model.weight.fill_(float(t + 1))
        avg.after_step(model)
        d = min(0.995, (1 + t) / (10 + t))
        expected = float(t + 1) if expected is None else d * expected + (1 - d) * (t + 1)
        assert avg.module.weight.item() == pytest.approx(expected, rel=1e-6)
    plain = WeightAverage(model, "ema", 10, ema_decay=0.995)
    assert not plain.ema_warmup


# ------------------------------------------------------------------ accumulation


@pytest.mark.parametrize("name", ["trades+1st+2nd", "at+1st", "mart"])
def test_accumulation_gives_the_whole_batch_gradient_in_float64(name):
    """K = 2 micro-batches: the gradient and loss of K = 1 (BatchNorm in eval mode, so that the micro-batches'
    statistics do not enter; in train mode each micro-batch is normalised with its own statistics)."""
    base = name.split("+")[0]
    order = name[len(base):]
    eta = {"": 0.0, "+1st": 0.3, "+1st+2nd": 0.2}[order]
    method = Method(base=base, eta=eta, eta2=eta / 2 if order == "+1st+2nd" else 0.0, noise_std=0.01,
                    label_smoothing=0.1, threat=Threat(eps=0.1, step=0.03, steps=3))
    grads, losses = [], []
    for k in (1, 2):
        torch.manual_seed(0)
        model = create("small_cnn", num_classes=5, in_channels=1, image_size=8).double().eval()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        g = torch.Generator().manual_seed(5)
        x = torch.rand(7, 1, 8, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (7,), generator=g)
        gen = torch.Generator().manual_seed(11)
        parts = train_step(model, opt, method, x, y, generator=gen, accumulate=k)
        grads.append([p.grad.clone() for p in model.parameters()])
        losses.append(parts)
        assert parts.logits_adv.shape == (7, 5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for f in ("loss", "ce", "kl", "first", "second"):
        torch.testing.assert_close(getattr(losses[0], f), getattr(losses[1], f), rtol=1e-10, atol=1e-12)


def test_accumulation_refuses_minimizers():
    with pytest.raises(ConfigError, match="works with minimizer none only"):
        from_dict({"optim": {"accumulate": 2}, "minimizer": {"name": "sam"}})
    with pytest.raises(ConfigError, match="works with minimizer none only"):
        from_dict({"optim": {"accumulate": 2}, "method": {"name": "awp-trades"}})
    with pytest.raises(ConfigError, match="exceeds optim.batch_size"):
        from_dict({"optim": {"accumulate": 8, "batch_size": 4}})


def test_activation_needs_a_model_that_takes_it():
    assert from_dict({"model": {"name": "wrn_28_10", "activation": "silu"}}).model.activation == "silu"
    with pytest.raises(ConfigError, match="vgg16 has relu only"):
        from_dict({"model": {"name": "vgg16", "activation": "silu"}})
    with pytest.raises(ConfigError, match="model.activation='gelu' is not one of relu, silu"):
        from_dict({"model": {"activation": "gelu"}})


# ------------------------------------------------------------------ the whole recipe


def recipe(tmp_path, pool, **optim):
    return from_dict({
        "name": "recipe", "seed": 0, "out_dir": str(tmp_path / "run"), "device": "cpu", "progress": False,
        "checkpoints": "none", "curves": False, "log_every": 2,
        "data": {"dataset": "digits", "holdout": 100, "extra": {"path": str(pool), "fraction": 0.5}},
        "model": {"name": "small_cnn"},
        "method": {"name": "trades+1st+2nd", "label_smoothing": 0.1},
        "attack": {"eps": 0.1, "step": 0.03, "steps": 2},
        "optim": {"epochs": 1, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "warmup_epochs": 0.5,
                  "accumulate": 2, "average": "ema", "ema_decay": 0.99, "ema_warmup": True, **optim},
        "eval": {"n": 100, "eps": 0.1, "step": 0.03, "steps": 2},
    })


def digits_pool(tmp_path):
    ds = datasets.load("digits")
    x, y = ds.train_x[:300], ds.train_y[:300]
    np.savez(tmp_path / "extra.npz", image=x.permute(0, 2, 3, 1).numpy(), label=y.numpy())
    return tmp_path / "extra.npz"


def test_one_epoch_of_the_recipe_trains_on_digits(tmp_path):
    pool = digits_pool(tmp_path)
    cfg = recipe(tmp_path, pool)
    steps = []
    result = train(cfg, log=lambda ev: steps.append(ev) if ev["event"] == "step" else None)
    rec = result.history[0]
    assert result.epochs_done == 1 and math.isfinite(rec["train_loss"]) and rec["averaged"]
    n_train = 1_797 - 360 - 100  # digits' training images less the holdout
    assert len(steps) == math.ceil(n_train / 32) // 2  # 32 original + 32 pool images a batch, logged every 2
    lrs = [ev["lr"] for ev in steps]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)  # warm-up, then the cosine decay
    assert rec["holdout_clean"] > 30  # ten classes: well above chance after one epoch


def test_dry_run_checks_the_pool_before_training(tmp_path):
    pool = digits_pool(tmp_path)
    lines = dry_run(recipe(tmp_path, pool))
    assert any(line.startswith("extra data:") and "32 of every 64 images" in line for line in lines)
    assert any("cosine" in line and "warm-up" in line and "2 micro-batches" in line for line in lines)
    np.savez(tmp_path / "bad.npz", image=np.zeros((3, 28, 28, 1), np.uint8), label=np.zeros(3, np.int64))
    with pytest.raises(InputError, match="the dataset's are 8x8x1"):
        dry_run(recipe(tmp_path, tmp_path / "bad.npz"))


# ------------------------------------------------------------------ the Fashion-MNIST sanity study, at toy size


@pytest.mark.slow
def test_recipe_study_runs_at_toy_size(tmp_path):
    import json
    from pathlib import Path

    import yaml

    from taylorat.cli import main
    from taylorat.data.extra import write_training_pool

    root = Path(__file__).resolve().parent.parent
    study = yaml.safe_load((root / "configs" / "studies" / "recipe_extra_cpu.yaml").read_text())
    options = {"n_train": 200, "n_test": 40, "channels": 1, "image_size": 28}
    ds = datasets.load("synthetic", **options)
    pool = write_training_pool(tmp_path / "extra.npz", ds, 60, train_subset=40, holdout=20, seeds=[0])
    with np.load(pool) as z:
        assert z["image"].shape == (60, 28, 28, 1)
    assert pool.read_bytes() == write_training_pool(tmp_path / "again.npz", ds, 60, 40, 20, [0]).read_bytes()
    study["runs"][1]["data"]["extra"]["path"] = str(pool)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    tiny = ["base.data.dataset=synthetic", f"base.data.options={json.dumps(options)}", "base.data.train_subset=40",
            "base.data.holdout=20", "base.optim.epochs=2", "base.optim.warmup_epochs=1", "base.attack.steps=2",
            "base.eval.n=20", "base.eval.steps=2", "base.progress=false", "seeds=[0]", "evaluate.n=12"]
    out = tmp_path / "docs"
    assert main(["reproduce", str(tmp_path / "study.yaml"), *tiny, "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in res["runs"]] == ["250 images", "250 images + pool"]
    assert all(r["clean"] >= r["pgd20"] for r in res["runs"])

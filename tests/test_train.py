"""Config validation, schedules, the training loop, exact resume and run-directory safety."""

import json
from pathlib import Path

import pytest
import torch

from taylorat import checkpoint as ckpt
from taylorat.train import (
    ConfigError,
    RunDirError,
    TrainingDiverged,
    from_dict,
    load,
    lr_at,
    paper_checkpoint_epochs,
    train,
)


def tiny(out_dir, **over):
    """A config that trains small_cnn on 1×8×8 synthetic data in about a second per epoch."""
    values = {
        "name": "tiny", "seed": 0, "out_dir": str(out_dir), "device": "cpu", "progress": False, "log_every": 2,
        "checkpoints": "none",
        "data": {"dataset": "synthetic", "holdout": 32,
                 "options": {"n_train": 160, "n_test": 64, "channels": 1, "image_size": 8}},
        "model": {"name": "small_cnn"},
        "method": {"name": "trades+1st+2nd", "noise_std": 0.01},
        "attack": {"eps": 0.1, "step": 0.03, "steps": 3},
        "optim": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "eval": {"n": 32, "eps": 0.1, "step": 0.02, "steps": 3},
    }
    for key, val in over.items():
        sec, _, leaf = key.rpartition("__")
        (values[sec] if sec else values)[leaf] = val
    return from_dict(values)


# ------------------------------------------------------------------ config


def test_defaults_are_the_paper_settings():
    cfg = from_dict({})
    assert cfg.model.name == "preact_resnet18" and cfg.data.dataset == "cifar10"
    assert cfg.attack.eps == pytest.approx(8 / 255) and cfg.attack.step == pytest.approx(2 / 255)
    assert cfg.attack.steps == 10 and cfg.optim.batch_size == 128 and cfg.optim.lr == 0.1
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4 and cfg.optim.epochs == 200
    r = cfg.resolved_method()
    assert (r["beta"], r["eta"], r["eta2"], r["noise_std"], r["noise_scope"]) == (6.0, 0.2, 0.1, 1e-4, "conv")


@pytest.mark.parametrize("name,eta,eta2,noise", [
    ("trades", 0.0, 0.0, 0.0), ("trades+1st", 0.3, 0.0, 1e-4), ("trades+1st+2nd", 0.2, 0.1, 1e-4)])
def test_method_defaults_per_order(name, eta, eta2, noise):
    r = from_dict({"method": {"name": name}}).resolved_method()
    assert (r["eta"], r["eta2"], r["noise_std"]) == (pytest.approx(eta), pytest.approx(eta2), noise)


def test_fractions_and_overrides():
    cfg = from_dict({"attack": {"eps": "8/255"}}, ["optim.epochs=30", "method.name=trades", "eval.eps=0.1"])
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.optim.epochs == 30 and cfg.method.name == "trades" and cfg.eval.eps == 0.1


def test_a_config_file_run_on_another_model_says_so_in_its_name():
    path = Path(__file__).resolve().parent.parent / "configs" / "cifar10_preact18_trades.yaml"
    assert load(path).name == "cifar10_preact18_trades"
    assert load(path, ["model.name=timm:resnet18"]).name == "cifar10_preact18_trades-timm:resnet18"
    assert load(path, ["model.name=preact_resnet18"]).name == "cifar10_preact18_trades"  # the file's own model
    assert load(path, ["model.name=wrn_28_10", "name=mine"]).name == "mine"


@pytest.mark.parametrize("values,overrides,match", [
    ({"optim": {"lrr": 0.1}}, [], r"unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ({}, ["lr=0.1"], r"unknown config key 'lr'; did you mean 'optim.lr'"),
    ({"attack": {"eps": -0.1}}, [], "attack.eps must be >= 0"),
    ({"attack": {"eps": 8}}, [], "exceeds the \\[0,1\\] pixel range"),
    ({"attack": {"step": 0}}, [], "attack.step must be > 0"),
    ({"attack": {"steps": 2.5}}, [], "attack.steps must be an integer"),
    ({"attack": {"norm": "l1"}}, [], "attack.norm='l1' is not one of"),
    ({"method": {"name": "trade"}}, [], "did you mean 'trades'"),
    ({"method": {"name": "trades", "eta": 0.2}}, [], "method 'trades' has no Taylor terms"),
    ({"method": {"eta": 1.5}}, [], "method.eta must be in"),
    ({"method": {"noise_scope": "bn"}}, [], "method.noise_scope='bn'"),
    ({"optim": {"epochs": 0}}, [], "optim.epochs must be >= 1"),
    ({"optim": {"lr": "fast"}}, [], "optim.lr must be a number"),
    ({"progress": "yes"}, [], "progress must be true or false"),
    ({"eval": {"select_on": "holdout"}, "data": {"holdout": 0}}, [], "needs data.holdout >= 1"),
    ({"optim": 3}, [], "optim must be a mapping"),
    ({}, ["optim.epochs"], "is not key=value"),
])
def test_bad_config_values_get_one_line_errors(values, overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        from_dict(values, overrides)
    assert "\n" not in str(e.value)


CHOICE_KEYS = {"precision", "channels_last", "compile", "taylor_stats", "checkpoints", "logging", "method.compat",
               "method.noise_scope", "attack.norm", "attack.mode", "attack.projection", "optim.average",
               "eval.select_on", "minimizer.name", "model.activation", "model.init_head", "optim.schedule",
               "data.extra.on_device"}
RANGED_KEYS = {"seed", "log_every", "data.holdout", "data.train_subset", "method.beta", "method.eta", "method.eta2",
               "method.noise_std", "attack.eps", "attack.step", "attack.steps", "optim.epochs", "optim.batch_size",
               "optim.lr", "optim.momentum", "optim.weight_decay", "optim.gamma", "optim.ema_decay", "optim.swa_start",
               "optim.diverge_factor",
               "eval.n", "eval.eps", "eval.step", "eval.steps", "eval.batch_size", "eval.every", "eval.track_test",
               "eval.track_train", "minimizer.rho", "minimizer.eta", "minimizer.gamma", "minimizer.warmup",
               "data.extra.fraction", "method.label_smoothing", "optim.warmup_epochs", "optim.accumulate"}


def test_choices_and_ranges_are_declared_on_their_fields():
    from taylorat.train.config import _leaves, choices

    assert set(choices()) == CHOICE_KEYS
    assert {key for key, *_, f in _leaves(from_dict({})) if "range" in f.metadata} == RANGED_KEYS


NEEDS = {"model.init_head": ["model.init=weights.safetensors"]}  # keys whose values need another key set


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_every_choice_key_accepts_its_values_and_names_them_when_wrong(key):
    from taylorat.train.config import choices, validate

    allowed = choices()[key]
    for good in allowed:  # every declared value is accepted (true / false also as YAML booleans)
        value = from_dict(overrides=[f"{key}={good}", *NEEDS.get(key, [])])
        for part in key.split("."):
            value = getattr(value, part)
        assert value == ([good] if key == "logging" else good)
    typo = allowed[-1] + "x"
    with pytest.raises(ConfigError) as e:
        from_dict(overrides=[f"{key}={typo}"])
    assert str(e.value) == f"{key}={typo!r} is not one of {', '.join(allowed)}; did you mean {allowed[-1]!r}?"
    cfg = from_dict({})  # a config edited in code is checked the same way
    section, _, leaf = key.rpartition(".")
    owner = cfg
    for part in section.split(".") if section else []:  # nested sections (data.extra) as well
        owner = getattr(owner, part)
    setattr(owner, leaf, [typo] if key == "logging" else typo)
    with pytest.raises(ConfigError, match=f"^{key}='{typo}' is not one of"):
        validate(cfg)


def test_a_choice_error_names_the_closest_value():
    with pytest.raises(ConfigError) as e:
        from_dict({"attack": {"norm": "linf2"}})
    assert str(e.value) == "attack.norm='linf2' is not one of linf, l2; did you mean 'linf'?"
    assert from_dict({"channels_last": False}).channels_last == "false"
    with pytest.raises(ConfigError, match="^precision=True is not one of fp32, bf16$"):
        from_dict({"precision": True})


@pytest.mark.parametrize("key", sorted(RANGED_KEYS))
def test_every_declared_range_rejects_the_value_just_outside_it(key):
    from taylorat.train.config import _leaves

    bound, tp = next((f.metadata["range"], tp) for k, _, tp, f in _leaves(from_dict({})) if k == key)
    if bound.startswith(">"):
        op, lo = bound.split()
        outside = [float(lo) - (op == ">=")]
    else:
        lo, hi = (float(x) for x in bound[4:-1].split(","))
        outside = [lo - (bound[3] == "["), hi + (bound[-1] == "]")]
    cases = [(str(int(x)), int(x)) for x in outside] if "int" in str(tp) else \
        [(str(x), x) for x in outside] + [(".nan", "nan"), (".inf", "inf")]  # a float must also be finite
    for text, shown in cases:
        with pytest.raises(ConfigError) as e:
            from_dict(overrides=[f"{key}={text}"])
        assert str(e.value) == f"{key} must be {bound}, got {shown}"


def test_choice_sets_are_the_ones_the_code_implements():
    """Each declared set mirrors the constant of the module that acts on it (same values, same order)."""
    from taylorat.attacks.pgd import NORMS, PROJECTIONS
    from taylorat.objectives import Threat
    from taylorat.objectives.taylor import COMPAT
    from taylorat.objectives.weight_noise import SCOPES
    from taylorat.train.averaging import KINDS
    from taylorat.train.config import choices
    from taylorat.train.logs import BACKENDS

    c = choices()
    assert c["attack.norm"] == NORMS and c["attack.projection"] == PROJECTIONS
    assert c["method.compat"] == COMPAT and c["method.noise_scope"] == SCOPES
    assert c["optim.average"] == KINDS and c["logging"] == BACKENDS
    assert [Threat(mode=m).mode for m in c["attack.mode"]] == ["eval", "train"]


def test_order_defaults_and_half_eta_live_in_one_place():
    """``ORDERS`` holds η, η2 per Taylor order and ``resolve_eta2`` reads η2 = None as η/2; all else follows."""
    import inspect

    from taylorat.objectives import (
        Method,
        at_taylor_from_outputs,
        mart_taylor_from_outputs,
        trades_taylor_from_outputs,
        trades_taylor_loss,
    )
    from taylorat.objectives.bases import ORDERS
    from taylorat.objectives.combine import resolve_eta2

    for order, (eta, eta2) in ORDERS.items():
        r = from_dict({"method": {"name": "trades" + order}}).resolved_method()
        assert (r["eta"], r["eta2"]) == (eta, resolve_eta2(eta, eta2))
    assert from_dict({"method": {"eta": 0.4}}).resolved_method()["eta2"] == pytest.approx(0.2)  # half the η used
    assert from_dict({"method": {"eta": 0.4, "eta2": 0.0}}).resolved_method()["eta2"] == 0.0
    assert (Method().eta, Method().eta2) == ORDERS["+1st+2nd"]
    for fn in (trades_taylor_from_outputs, trades_taylor_loss, at_taylor_from_outputs, mart_taylor_from_outputs):
        p = inspect.signature(fn).parameters
        assert (p["eta"].default, p["eta2"].default) == ORDERS["+1st+2nd"], fn.__name__


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_shipped_configs_validate():
    from taylorat.studies import study as studies

    root = Path(__file__).parent.parent / "configs"
    files = sorted(p for p in root.rglob("*.yaml") if "studies" not in p.parts)
    assert files
    names = {load(f).method.name for f in files}
    for table, _ in studies.list_tables():  # the paper's runs are built from the table files
        names |= {r.config.method.name for r in studies.load(table).runs("runs")}
    assert {"trades", "trades+1st", "trades+1st+2nd", "awp-trades", "awp-trades+1st+2nd", "at", "at+1st+2nd"} <= names


# ------------------------------------------------------------------ schedules


def test_paper_checkpoint_schedule_for_200_epochs():
    want = (set(range(100, 111)) | set(range(115, 151, 5)) | set(range(150, 161)) | set(range(165, 201, 5)))
    assert paper_checkpoint_epochs(200) == sorted(want)


def test_lr_schedule_divides_at_half_and_three_quarters():
    lrs = {e: lr_at(e, 0.1, 200, [0.5, 0.75], 0.1) for e in (1, 99, 100, 149, 150, 200)}
    assert lrs[1] == lrs[99] == 0.1
    assert lrs[100] == lrs[149] == pytest.approx(0.01)
    assert lrs[150] == lrs[200] == pytest.approx(0.001)
    assert lr_at(1, 0.1, 1, [0.5, 0.75], 0.1) == 0.1  # a short run never starts decayed
    assert [lr_at(e, 0.1, 4, [0.5, 0.75], 0.1) for e in (1, 2, 3, 4)] == pytest.approx([0.1, 0.01, 0.001, 0.001])


# ------------------------------------------------------------------ training


def state(path):
    tensors, meta = ckpt.load(path)
    return tensors, meta


def test_train_writes_run_directory(tmp_path):
    cfg = tiny(tmp_path / "run", checkpoints="paper")
    res = train(cfg)
    out = tmp_path / "run"
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "last.safetensors", "best.safetensors", "summary.json"} <= names
    assert "epoch_0002.safetensors" in names  # the paper's schedule scaled to 2 epochs
    assert not any(n.endswith(".tmp") for n in names)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all(0 <= x["holdout_pgd"] <= x["holdout_clean"] <= 100 for x in lines)
    assert res.best_epoch in (1, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["select_on"] == "holdout" and summary["n_select"] == 32
    model, meta = ckpt.load_model(out / "best.safetensors")
    assert meta["epoch"] == res.best_epoch and meta["method"]["eta"] == pytest.approx(0.2)
    assert meta["data"]["n_holdout"] == 32


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights(tmp_path):
    full = train(tiny(tmp_path / "full", **{"optim__epochs": 3}))
    part = tiny(tmp_path / "part", **{"optim__epochs": 3})
    first = train(part, stop_after=1)
    assert first.epochs_done == 1
    resumed = train(part, resume=True)
    assert resumed.epochs_done == 3
    a, _ = state(tmp_path / "full" / "last.safetensors")
    b, _ = state(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume changed the result"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert full.best == resumed.best


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    cfg = tiny(tmp_path / "run", **{"optim__epochs": 1})
    train(cfg)
    with pytest.raises(RunDirError, match="already holds a run; pass --resume"):
        train(cfg)
    other = tiny(tmp_path / "run", **{"optim__epochs": 1, "optim__lr": 0.01})
    with pytest.raises(RunDirError, match="holds a different run .*optim.lr"):
        train(other, resume=True)
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    assert train(cfg, resume=True).epochs_done == 1  # finished: nothing to do
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


def test_config_written_by_an_older_version_still_resumes():
    from taylorat.train.run_dir import config_diff

    new = from_dict({}).to_dict()
    old = from_dict({}).to_dict()
    del old["channels_last"], old["optim"]["nesterov"]  # keys an older taylorat did not write
    assert config_diff(old, new) == []
    new["optim"]["nesterov"] = True
    assert config_diff(old, new) == ["optim.nesterov"]


def test_a_one_process_run_resumes_across_the_taylor_stats_default(tmp_path):
    """taylor_stats (and sync_bn) act only across ranks: a one-process run of an older default resumes."""
    assert from_dict({}).taylor_stats == "global"  # the reference's whole-batch statistics
    old = tiny(tmp_path / "run", taylor_stats="local")
    train(old, stop_after=1)
    assert train(tiny(tmp_path / "run"), resume=True).epochs_done == 2


def test_non_empty_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        train(tiny(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_diverging_loss_stops_with_a_message_and_no_checkpoint(tmp_path):
    cfg = tiny(tmp_path / "run", **{"optim__lr": 1e30, "optim__epochs": 1})
    with pytest.raises(TrainingDiverged, match="not finite.*lower optim.lr"):
        train(cfg)
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_trades_run_uses_no_weight_noise_and_zero_taylor_terms(tmp_path):
    cfg = tiny(tmp_path / "run", **{"optim__epochs": 1})
    cfg.method.name, cfg.method.noise_std = "trades", None
    res = train(cfg)
    h = res.history[0]
    assert h["train_first"] == 0 and h["train_second"] == 0
    assert h["train_loss"] == pytest.approx(h["train_ce"] + 6.0 * h["train_kl"], rel=1e-5)


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    a = train(tiny(tmp_path / "fp32", **{"optim__epochs": 1}))
    b = train(tiny(tmp_path / "bf16", precision="bf16", **{"optim__epochs": 1}))
    ha, hb = a.history[0], b.history[0]
    assert abs(ha["train_loss"] - hb["train_loss"]) < 0.05 * ha["train_loss"]
    assert abs(ha["train_ce"] - hb["train_ce"]) < 0.05 * ha["train_ce"]


def test_channels_last_matches_contiguous(tmp_path):
    # PGD's sign() turns rounding differences into slightly different x', so the epoch agrees
    # to about 1%; the loss on identical inputs agrees tightly (test_objectives).
    a = train(tiny(tmp_path / "a", channels_last="false", **{"optim__epochs": 1}))
    b = train(tiny(tmp_path / "b", channels_last=True, **{"optim__epochs": 1}))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=2e-2)


def test_channels_last_auto_changes_speed_not_results(tmp_path):
    """auto resolves to on for a convolutional net on 3-channel images and ends where off ends.

    The attack radius is 0 here (the adversarial batch is the clean one), so the two runs differ
    only by float reordering; with a real attack PGD's sign() can flip a pixel (test above).
    """
    from safetensors.torch import load_file

    kw = {"model__name": "wrn_16_1", "data__options": {"n_train": 64, "n_test": 16, "channels": 3, "image_size": 8},
          "attack__eps": 0.0, "optim__epochs": 2, "eval__eps": 0.0}
    auto = train(tiny(tmp_path / "auto", **kw))
    off = train(tiny(tmp_path / "off", channels_last=False, **kw))
    speed = json.loads((tmp_path / "auto" / "summary.json").read_text())["speed"]
    assert speed["channels_last"] is True and speed["channels_last_setting"] == "auto"
    assert "channels_last true" in (tmp_path / "auto" / "config.yaml").read_text()
    assert auto.history[-1]["train_loss"] == pytest.approx(off.history[-1]["train_loss"], rel=1e-5)
    a, b = (load_file(str(tmp_path / d / "last.safetensors")) for d in ("auto", "off"))
    for k in a:
        if k.startswith("model.") and a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    small = from_dict({"model": {"name": "small_cnn"}, "channels_last": "auto"})
    assert small.channels_last == "auto"


def test_channels_last_auto_rule():
    from torch import nn

    from taylorat import models
    from taylorat.train.speed import resolve_channels_last

    cpu = torch.device("cpu")
    for name in ("small_cnn", "wrn_16_2", "preact_resnet18", "vgg16", "mobilenetv2"):
        with torch.device("meta"):
            m = models.create(name, num_classes=10, in_channels=1 if name == "small_cnn" else 3,
                              image_size=28 if name == "small_cnn" else 32)
        assert resolve_channels_last("auto", m, cpu)[0], name
    from taylorat.train.speed import conv_share

    mlp = nn.Sequential(nn.Conv2d(3, 4, 16, 16), nn.Flatten(), nn.Linear(16, 4096), nn.Linear(4096, 10))
    assert conv_share(mlp.to("meta"), 3, 32) < 0.5  # mostly linear layers, like a vision transformer
    assert resolve_channels_last("auto", mlp, cpu)[0] is False
    assert resolve_channels_last("false", models.create("wrn_16_2"), cpu) == (False, "set in the config")
    assert not resolve_channels_last("auto", models.create("wrn_16_2"), torch.device("meta"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["cifar10_preact18_trades_1st_2nd.yaml", "cifar10_wrn34_10_trades_1st_2nd.yaml"])
def test_shipped_cifar_configs_train_a_step(config, tmp_path):
    """The paper's configs run end to end (CIFAR-shaped synthetic data, one tiny step)."""
    from pathlib import Path

    cfg = load(Path(__file__).parent.parent / "configs" / config, [
        f"out_dir={tmp_path}", "device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic",
        "data.holdout=10", "data.options={n_train: 20, n_test: 2}", "optim.epochs=1", "optim.batch_size=10",
        "attack.steps=1", "eval.n=2", "eval.steps=1"])
    res = train(cfg)
    assert res.epochs_done == 1 and res.history[0]["train_first"] > 0
    model, meta = ckpt.load_model(tmp_path / "best.safetensors")
    assert meta["model"]["name"] == cfg.model.name and meta["data"]["dataset"] == "synthetic"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_weight_averaging_is_evaluated_saved_and_resumed_exactly(kind, tmp_path):
    over = {"optim__epochs": 2, "optim__average": kind, "optim__swa_start": 0.0, "optim__ema_decay": 0.9}
    full = train(tiny(tmp_path / "full", **over))
    assert all(h["averaged"] for h in full.history)
    part = tiny(tmp_path / "part", **over)
    train(part, stop_after=1)
    w1, _ = state(tmp_path / "part" / "last.safetensors")
    train(part, resume=True)
    a, _ = state(tmp_path / "full" / "last.safetensors")
    b, _ = state(tmp_path / "part" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # exact resume, averaged model included
    avg = {k[len("avg.module."):]: v for k, v in b.items() if k.startswith("avg.module.")}
    raw = {k[len("model."):]: v for k, v in b.items() if k.startswith("model.")}
    assert avg.keys() == raw.keys()
    w = "features.0.weight" if "features.0.weight" in raw else next(k for k in raw if k.endswith("weight"))
    if kind == "swa":  # the equal average of the end-of-epoch weights
        w1m = {k[len("model."):]: v for k, v in w1.items() if k.startswith("model.")}
        assert torch.allclose(avg[w], (w1m[w] + raw[w]) / 2, atol=1e-7)
    assert not torch.equal(avg[w], raw[w])
    bn = next(k for k in raw if k.endswith("running_mean"))
    assert not torch.equal(avg[bn], raw[bn])  # BN statistics recomputed for the averaged weights
    best, meta = ckpt.load_model(tmp_path / "full" / "best.safetensors")
    epoch_avg = {k: v for k, v in best.state_dict().items()}
    if meta["epoch"] == 2:
        assert torch.equal(epoch_avg[w], avg[w])  # `best` holds the averaged weights


def test_fused_sgd_matches_the_default_kernel(tmp_path):
    a = train(tiny(tmp_path / "a", **{"optim__epochs": 1}))
    b = train(tiny(tmp_path / "b", **{"optim__epochs": 1, "optim__fused": True}))
    ta, _ = state(tmp_path / "a" / "last.safetensors")
    tb, _ = state(tmp_path / "b" / "last.safetensors")
    worst = max(((ta[k].double() - tb[k].double()).abs().max() / ta[k].double().abs().max().clamp_min(1e-12)).item()
                for k in ta if ta[k].is_floating_point())
    assert worst < 1e-3  # rounding only (PGD's sign() turns it into slightly different x')
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=2e-2)


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tmp_path):
    a = train(tiny(tmp_path / "a", **{"optim__epochs": 1}))
    b = train(tiny(tmp_path / "b", compile="default", **{"optim__epochs": 1}))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=2e-2)
    model, _ = ckpt.load_model(tmp_path / "b" / "best.safetensors")  # saved weights are plain tensors
    assert sum(p.numel() for p in model.parameters()) > 0

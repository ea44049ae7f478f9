"""Extending taylorat from outside the package: an attack (one function), a base method (one class) and a
dataset (one declaration in one file, found by the command line through ``TAYLORAT_PLUGINS``).

Each is registered here as a user would, then seen end to end: the attack as a row of `taylorat eval`'s
report and of a study page; the base as a `method.name` a config trains with its Taylor orders; the
dataset as `data.dataset` of a `taylorat train` run. (A model registered from outside is in test_models.py.)
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from taylorat import checkpoint as ckpt
from taylorat import common, models
from taylorat.attacks import PGD
from taylorat.cli import main
from taylorat.common import InputError, Registry, did_you_mean, import_plugins
from taylorat.evaluate import (
    AttackResult,
    available_attacks,
    evaluate,
    labels,
    register_attack,
    report_dict,
    unregister_attack,
)
from taylorat.objectives import Base, Method, PairForward, register_base, unregister_base, with_taylor
from taylorat.train import from_dict, train


@pytest.fixture
def fgsm():
    @register_attack("fgsm", label="FGSM", help="one signed-gradient step of size eps")
    def run(ctx):
        attack = PGD(ctx.model, eps=ctx.eps, step=ctx.eps, steps=1, norm=ctx.norm, start="none")
        return AttackResult(ctx.masks(attack, "fgsm"), attack.settings())

    yield run
    unregister_attack("fgsm")


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    m = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, m, {"config": {"data": {"dataset": "digits"}}})
    return m, path


def test_a_registered_attack_is_a_report_row(fgsm, model_file, tmp_path):
    model, path = model_file
    assert "fgsm" in available_attacks() and labels()["fgsm"] == "FGSM"
    from taylorat import data as datasets

    res = evaluate(model, datasets.load("digits"), ["clean", "fgsm", "pgd20"], n=16, eps=0.2, progress=False)
    assert res.results["fgsm"] >= res.results["pgd20"] - 1e-9  # one step finds no more than twenty
    assert res.eps["fgsm"] == 0.2 and report_dict(res, checkpoint="x")["eps"]["fgsm"] == 0.2
    assert main(["eval", "--checkpoint", str(path), "--attacks", "clean,fgsm", "--n", "8", "--device", "cpu",
                 "--out", str(tmp_path / "ev")]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(rep["results"]) == {"clean", "fgsm"} and rep["eps"]["fgsm"] == 0.031


def test_a_registered_attack_is_a_study_column(fgsm, tmp_path):
    from taylorat.studies import study as studies
    from taylorat.studies.render import render_readme

    st = studies.from_values({"name": "s", "runs": [{"label": "a", "method": {"name": "trades"}}],
                              "evaluate": {"attacks": ["clean", "fgsm"]}})
    run = {"method": "a", "seed": 0, "clean": 90.0, "fgsm": 70.0,
           "settings": {"eps": 0.031, "step": 0.003, "attack_eps": {"fgsm": 0.031}}}
    page = render_readme({"title": "s", "runs": [run], "config": {"resolved": st.runs("r")[0].config.to_dict()}}, st)
    assert "| method | seeds | clean | FGSM |" in page and "| a | 1 | 90.00 | 70.00 |" in page


class CEOnly(Base):
    """Clean cross-entropy plus the Taylor terms; a CE-PGD attack from a uniform start."""

    attack_loss, attack_start = "ce", "uniform"

    def loss_from_outputs(self, outputs, y, *, beta, eta, eta2, compat, stats_reduce=None):
        z = outputs[0]
        return with_taylor(F.cross_entropy(z.float(), y), None, 0.0, eta, eta2, compat, outputs, y, stats_reduce)


@pytest.fixture
def ce_only():
    register_base("ce-only")(CEOnly)
    yield
    unregister_base("ce-only")


def test_a_registered_base_trains_with_its_taylor_orders(ce_only, tmp_path):
    cfg = from_dict({"out_dir": str(tmp_path / "run"), "device": "cpu", "progress": False, "checkpoints": "none",
                     "model": {"name": "small_cnn"}, "method": {"name": "ce-only+1st+2nd"},
                     "data": {"dataset": "synthetic", "holdout": 10,
                              "options": {"n_train": 42, "n_test": 10, "channels": 1, "image_size": 8}},
                     "attack": {"eps": 0.1, "step": 0.05, "steps": 2}, "optim": {"epochs": 1, "batch_size": 16},
                     "eval": {"n": 10, "eps": 0.1, "step": 0.05, "steps": 2}})
    assert cfg.resolved_method()["eta"] == 0.2 and cfg.resolved_method()["noise_std"] == 1e-4
    result = train(cfg, log=lambda s: None)
    assert result.epochs_done == 1 and result.history[0]["train_first"] > 0
    # the loss is the base's plus the Taylor terms, from one clean and one adversarial pass
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).train()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    m = Method(base="ce-only", eta=0.2)
    x_adv = m.perturb(model, x, y)
    parts = m.loss(model, x, x_adv, y)
    z, h, za, ha = PairForward(model)(x, x_adv)
    assert torch.allclose(parts.ce, F.cross_entropy(z, y)) and parts.first > 0
    with pytest.raises(ValueError, match="unknown base 'ce_only'.*did you mean 'ce-only'"):
        Method(base="ce_only")


TOY_DATASET = """
import torch

from taylorat.data import Dataset, DatasetSpec, register_dataset


def load_toy(data_dir, download):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(64) % 4
    return Dataset("{name}", x[:48], y[:48], x[48:], y[48:], num_classes=4, crop=False, flip=False)


register_dataset(DatasetSpec("{name}", geometry=(1, 8, 4), train_size=48, loader=load_toy))
"""


def test_a_dataset_declared_in_one_new_file_trains_through_the_cli(tmp_path):
    plugin = tmp_path / "toy_data.py"
    plugin.write_text(TOY_DATASET.format(name="toy_noise"))
    run = tmp_path / "run"
    overrides = [f"out_dir={run}", "device=cpu", "progress=false", "data.dataset=toy-noise", "data.holdout=8",
                 "model.name=small_cnn", "attack.eps=0.1", "attack.step=0.05", "attack.steps=1", "optim.epochs=1",
                 "optim.batch_size=16", "eval.n=8", "eval.eps=0.1", "eval.step=0.05", "eval.steps=1"]
    env = {**os.environ, "TAYLORAT_PLUGINS": str(plugin)}
    r = subprocess.run([sys.executable, "-m", "taylorat", "train", *overrides], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "small_cnn on toy_noise (40 training images)" in r.stdout + r.stderr  # declared 48, 8 held out
    assert (run / "last.safetensors").is_file() and (run / "best.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records if "epoch" in rec] == [1]
    # without the plug-in the name is unknown, in one line
    env.pop("TAYLORAT_PLUGINS")
    r = subprocess.run([sys.executable, "-m", "taylorat", "train", "--dry-run", *overrides], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "unknown dataset 'toy-noise'" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_registry_lists_suggests_and_keeps_metadata():
    widgets = Registry("widget")
    widgets.register("gizmo", 1, size="small")

    @widgets.register("gadget", size="large")
    def gadget():
        return 2

    assert widgets.names() == ["gizmo", "gadget"] and list(widgets) == ["gizmo", "gadget"] and len(widgets) == 2
    assert widgets.get("gizmo") == 1 and widgets.get("gadget") is gadget and "gadget" in widgets
    assert widgets.metadata("gadget") == {"size": "large"} and "gadgets" not in widgets
    assert widgets.known("gizmo") and not widgets.known("gadgets")
    unknown = r"^unknown widget 'gadgt'; available: gizmo, gadget; did you mean 'gadget'\?$"
    with pytest.raises(InputError, match=unknown):
        widgets.get("gadgt")
    with pytest.raises(InputError, match=r"^unknown widget 'x'; available: gizmo, gadget$"):
        widgets.metadata("x")
    with pytest.raises(InputError, match=r"^widget 'gizmo' is already registered$"):
        widgets.register("gizmo", 3)
    widgets.unregister("gizmo")
    assert widgets.names() == ["gadget"]
    sorted_listing = Registry("thing", listing="choose from", sort=True, normalize=str.lower,
                              describe=lambda name, meta: f"{name} ({meta['n']})")
    sorted_listing.register("b", 0, n=2)
    sorted_listing.register("a", 0, n=1)
    assert sorted_listing.get("B") == 0
    assert str(sorted_listing.error("c")) == "unknown thing 'c'; choose from a (1), b (2)"
    assert did_you_mean("trades+1sd", ["trades+1st", "at"]) == "; did you mean 'trades+1st'?"
    assert did_you_mean("xyz", ["trades", "at"]) == "" and did_you_mean("resnt18", ["resnet18"], "timm:") == (
        "; did you mean 'timm:resnet18'?")


def test_plugins_are_imported_once_from_a_file_or_a_module(tmp_path, monkeypatch):
    log = tmp_path / "imports.log"
    plugin = f"with open({str(log)!r}, 'a') as f:\n    f.write('imported\\n')\n"
    (tmp_path / "tayloratplug_widgets.py").write_text(plugin)
    (tmp_path / "tayloratplug_needs_more.py").write_text("import tayloratplug_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_plugins(["tayloratplug_widgets", "", str(tmp_path / "tayloratplug_widgets.py")])
    import_plugins(["tayloratplug_widgets", str(tmp_path / "tayloratplug_widgets.py")])
    assert log.read_text().splitlines() == ["imported"] * 2  # once as a module, once as a file; never again
    with pytest.raises(InputError, match=r"^plugin 'tayloratplug_nowhere' not found: no module"):
        import_plugins(["tayloratplug_nowhere"])
    with pytest.raises(InputError, match=r"^plugin file '.*nowhere\.py' not found"):
        import_plugins([str(tmp_path / "nowhere.py")])
    with pytest.raises(ModuleNotFoundError, match="tayloratplug_not_installed"):  # the plug-in's own bug: not hidden
        import_plugins(["tayloratplug_needs_more"])


def test_taylorat_plugins_is_read_once_when_a_registry_is_first_asked(tmp_path, monkeypatch):
    from taylorat import data

    plugin = tmp_path / "env_toy.py"
    plugin.write_text(TOY_DATASET.format(name="env_toy"))
    monkeypatch.setattr(common.registry, "_env_plugins_loaded", False)
    monkeypatch.setenv(common.PLUGINS_ENV, f" {plugin} ,")
    try:
        assert "env_toy" in data.available() and data.load("env_toy").n_train == 48
        monkeypatch.setenv(common.PLUGINS_ENV, str(tmp_path / "gone.py"))
        assert "env_toy" in data.available()  # read once: the changed variable is not read again
    finally:
        data.unregister_dataset("env_toy")

"""Extending taylorat from outside the package: an attack (one function) and a base method (one class).

Each is registered here as a user would, then seen end to end: the attack as a row of `taylorat eval`'s
report and of a study page; the base as a `method.name` a config trains with its Taylor orders.
(A model registered from outside is in test_models.py.)
"""

import json

import pytest
import torch
import torch.nn.functional as F

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.attacks import PGD
from taylorat.cli import main
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

"""The evaluation suite: ordering of attacks, guard rails, AutoAttack through the library, reports."""

import json

import jsonschema
import pytest
import torch
from torch import nn

from taylorat import checkpoint as ckpt
from taylorat import data as datasets
from taylorat.attacks import AutoAttack
from taylorat.cli import main
from taylorat.evaluate import EvalResult, evaluate, masking_flags, report_dict, report_markdown, schema
from taylorat.studies.demo import demo_config
from taylorat.train import train

pytestmark = pytest.mark.slow  # a trained model and AutoAttack


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """small_cnn adversarially trained on digits for a few epochs (about 5 s)."""
    out = tmp_path_factory.mktemp("run")
    cfg = demo_config("trades", out, epochs=4, device="cpu", progress=False)
    train(cfg, log=lambda s: None)
    model, meta = ckpt.load_model(out / "best.safetensors")
    return model, datasets.load("digits"), out / "best.safetensors"


def test_trained_model_clean_ge_pgd20_ge_autoattack(trained):
    model, ds, _ = trained
    res = evaluate(model, ds, ["clean", "pgd20", "aa"], n=32, eps=0.1, step=0.01, progress=False)
    r = res.results
    assert r["clean"] >= r["pgd20"] >= r["aa"]
    assert r["clean"] > 50 and r["aa"] > 0  # the ordering is informative
    assert not (res.correct["aa"] & ~res.correct["clean"]).any()
    assert set(res.extra["aa_per_attack"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert res.settings["aa"]["library"].startswith("pyautoattack") and res.settings["aa"]["seed"] == 0


def test_evaluation_leaves_mode_and_weights_unchanged(trained):
    model, ds, _ = trained
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, ds, ["clean", "pgd20", "cw20", "sweep"], n=16, eps=0.2, step=0.02, progress=False)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()


def test_full_report_validates_against_schema(trained, tmp_path):
    model, ds, path = trained
    res = evaluate(model, ds, ["clean", "pgd20", "cw20", "transfer", "rays", "sweep"], n=16, eps=0.2, step=0.02,
                   surrogate=model, cache_dir=tmp_path, rays_queries=200, progress=False)
    rep = report_dict(res, checkpoint=str(path), model="small_cnn", dataset="digits", split="test", seed=0)
    jsonschema.validate(json.loads(json.dumps(rep)), schema())
    assert {"clean", "pgd20", "cw20", "transfer_pgd20", "transfer_cw20", "rays"} <= rep["results"].keys()
    assert rep["worst_case"] <= min(v for k, v in rep["results"].items() if k != "clean")
    assert rep["extra"]["rays_adbd"] > 0 and len(rep["extra"]["sweep"]) == 5
    # a transfer attack from the model itself is the white-box attack replayed
    assert rep["results"]["transfer_pgd20"] == rep["results"]["pgd20"]
    md = report_markdown(rep, "trades")
    assert "| trades |" in md and "n=16" in md and "ε per attack: pgd20 0.2 (step 0.02)" in md
    assert rep["eps"] == {"pgd20": 0.2, "cw20": 0.2, "transfer_pgd20": 0.2, "transfer_cw20": 0.2, "rays": 0.2}
    bad = dict(rep, results={"clean": 140.0})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_transfer_examples_are_cached_and_reused(trained, tmp_path):
    model, ds, _ = trained
    kw = dict(n=8, eps=0.2, step=0.02, surrogate=model, surrogate_id="s1", cache_dir=tmp_path, progress=False)
    a = evaluate(model, ds, ["transfer"], **kw)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("transfer-") for f in files)
    b = evaluate(model, ds, ["transfer"], **kw)
    assert b.settings["transfer_pgd20"]["cached"] and a.results == b.results


def test_guard_rails(trained):
    model, ds, _ = trained
    x = ds.test_x[:4].float() / 255
    with pytest.raises(ValueError, match=r"must lie in \[0,1\]"):
        evaluate(model, ((x - 0.5) / 0.25, ds.test_y[:4]), progress=False)
    with pytest.raises(ValueError, match="expects images of shape"):
        evaluate(model, (torch.rand(4, 3, 8, 8), ds.test_y[:4]), progress=False)
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        evaluate(model, ds, ["fgsm"], progress=False)
    with pytest.raises(ValueError, match="needs a surrogate"):
        evaluate(model, ds, ["transfer"], progress=False)
    res = evaluate(model, ds, ["clean"], n=8, precision="bf16", progress=False)
    assert res.precision == "bf16" and any("bf16" in w for w in res.warnings)


class Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.01 * torch.randn(x.shape[0], 10)

    def check_input(self, x):
        return self.inner.check_input(x)


def test_randomized_model_is_flagged(trained):
    model, ds, _ = trained
    res = evaluate(Noisy(model), ds, ["clean"], n=8, progress=False)
    assert any("randomized" in w for w in res.warnings)


class Softmaxed(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).softmax(1)


def test_autoattack_library_warnings_are_kept(trained):
    model, ds, _ = trained
    x, y = ds.test_x[:6].float() / 255, ds.test_y[:6]
    _, out = AutoAttack(Softmaxed(model), eps=0.2, seed=0).run(x, y)
    assert any("probability" in w for w in out.warnings), out.warnings


def flags_for(**results):
    return masking_flags(EvalResult(n=100, results=results, settings={}, seconds={}))


def test_masking_flags():
    assert flags_for(clean=90.0, pgd20=50.0, aa=48.0) == []
    assert "overstates robustness" in flags_for(clean=90.0, pgd20=60.0, aa=45.0)[0]
    assert "beats white-box" in flags_for(clean=90.0, pgd20=40.0, transfer_pgd20=30.0)[0]
    assert "RayS" in flags_for(clean=90.0, pgd20=50.0, rays=40.0)[0]
    r = EvalResult(n=10, results={}, settings={}, seconds={},
                   extra={"sweep": [{"eps": e, "pgd20": a} for e, a in ((0.1, 60), (0.2, 70), (1.0, 30))]})
    f = masking_flags(r)
    assert any("rises as eps grows" in x for x in f) and any("whole [0,1] box" in x for x in f)


def test_cli_eval_all_attacks_on_a_checkpoint(trained, tmp_path, capsys):
    _, _, path = trained
    assert main(["eval", "--checkpoint", str(path), "--attacks", "clean,pgd20,cw20,aa,transfer,rays,sweep",
                 "--surrogate", str(path), "--n", "8", "--rays-queries", "100", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(rep, schema())
    assert {"clean", "pgd20", "cw20", "aa", "transfer_pgd20", "transfer_cw20", "rays"} == set(rep["results"])
    assert rep["settings"]["pgd20"]["eps"] == 0.2  # the run's own threat model by default
    assert set(rep["eps"].values()) == {0.2} and rep["settings"]["aa"]["eps"] == 0.2
    assert "| trades |" in capsys.readouterr().out


def untrained():
    """An untrained small_cnn for digits: AutoAttack breaks it at once, so the radius checks stay quick."""
    from taylorat import models

    torch.manual_seed(0)
    return models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)


def test_autoattack_runs_at_8_over_255_and_pgd_at_the_reference_radius():
    model, ds = untrained(), datasets.load("digits")
    res = evaluate(model, ds, ["clean", "pgd20", "cw20", "aa"], n=8, progress=False)
    assert res.eps == {"clean": 0.0, "pgd20": 0.031, "cw20": 0.031, "aa": 8 / 255}
    assert res.settings["aa"]["eps"] == 8 / 255 and res.settings["pgd20"]["step"] == 0.003
    both = evaluate(model, ds, ["pgd20", "aa"], n=8, eps=0.2, eps_by_attack={"aa": 0.1}, progress=False)
    assert both.eps == {"pgd20": 0.2, "aa": 0.1} and both.settings["pgd20"]["step"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown attack 'aaa'"):
        evaluate(model, ds, ["pgd20"], n=4, eps_by_attack={"aaa": 0.1}, progress=False)


def test_eps_from_the_run_keeps_the_reference_threat_model():
    from taylorat.evaluate import eps_from_run

    assert eps_from_run("linf", 0.031) is None  # 0.031 stands for 8/255: each attack's own default
    assert eps_from_run("linf", 0.1) == 0.1 and eps_from_run("l2", 0.5) == 0.5 and eps_from_run("linf", None) is None


def test_cli_eval_of_a_reference_radius_run_gives_autoattack_8_over_255(tmp_path, capsys):
    path = tmp_path / "run" / "best.safetensors"  # a run whose per-epoch check used the reference 0.031
    ckpt.save_model(path, untrained(), {"config": {"data": {"dataset": "digits"}, "attack": {"norm": "linf"},
                                                   "eval": {"eps": 0.031, "step": 0.003}}})
    assert main(["eval", "--checkpoint", str(path), "--attacks", "pgd20,aa", "--n", "8",
                 "--device", "cpu", "--out", str(tmp_path / "ev"), "--attack-eps", "pgd20=0.05"]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["eps"] == {"pgd20": 0.05, "aa": 8 / 255}
    assert "aa 0.031373" in (tmp_path / "ev" / "report.md").read_text()
    assert main(["eval", "--checkpoint", str(path), "--attack-eps", "aa", "--n", "4"]) == 2
    assert "NAME=EPS" in capsys.readouterr().err


def test_slow_attacks_report_progress(trained, capsys):
    model, ds, _ = trained
    evaluate(model, ds, ["aa", "rays"], n=4, eps=0.1, rays_queries=40, progress=True)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "AutoAttack: robust accuracy after APGD-CE" in text  # one line per sub-attack, as it finishes
    assert "RayS on 4 images" in text and "query" in text


def test_a_log_gets_each_attack_as_it_starts_and_ends(trained):
    model, ds, _ = trained
    lines = []
    res = evaluate(model, ds, ["clean", "pgd20", "sweep"], n=8, eps=0.1, step=0.01, progress=False, log=lines.append)
    assert [line.split(" ...")[0].split(":")[0] for line in lines] == [
        "clean on 8 images", "clean on 8 images", "pgd20 on 8 images (eps 0.1)", "pgd20 on 8 images",
        "sweep on 8 images (eps 0.1)", "sweep on 8 images"]
    assert lines[0] == "clean on 8 images ..."  # no ε: nothing is perturbed
    assert lines[3].startswith(f"pgd20 on 8 images: {res.results['pgd20']:.2f} (") and lines[3].endswith(" s)")
    assert lines[5].startswith("sweep on 8 images: done (")  # a curve, not one accuracy


def test_randomized_models_get_eot_automatically_and_by_flag(trained):
    model, ds, _ = trained
    res = evaluate(Noisy(model), ds, ["clean", "pgd20", "aa"], n=4, eps=0.1, progress=False)
    assert res.settings["eot"] == {"draws": 20, "chosen": "automatically: the model is randomized"}
    assert res.settings["pgd20"]["eot"] == 20 and res.settings["aa"]["version"] == "rand"
    assert res.settings["aa"]["attacks"] == ["apgd-ce", "apgd-dlr"]
    assert any("EOT" in w for w in res.warnings)
    plain = evaluate(model, ds, ["pgd20"], n=4, eps=0.1, progress=False, eot=3)
    assert plain.settings["pgd20"]["eot"] == 3 and plain.settings["eot"]["chosen"] == "given"
    off = evaluate(Noisy(model), ds, ["pgd20"], n=4, eps=0.1, progress=False, eot=1)
    assert off.settings["pgd20"]["eot"] == 1
    with pytest.raises(ValueError, match="eot must be an integer >= 1"):
        evaluate(model, ds, ["pgd20"], n=4, eot=0, progress=False)


def test_eot_averages_the_gradient_over_draws():
    """On a deterministic model EOT changes nothing; pgd's gradient is the mean of the draws' gradients."""
    from taylorat.attacks import pgd

    torch.manual_seed(0)
    from taylorat import models

    m = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    kw = dict(eps=0.1, step=0.02, steps=3, start="none")
    assert torch.equal(pgd(m, x, y, **kw), pgd(m, x, y, eot=4, **kw))


def test_eval_runs_the_papers_autoattack_by_name(tmp_path):
    """``--aa-version reference`` runs the library's custom version, APGD-CE + APGD-T only (how it is configured
    is checked in test_hostile without running it)."""
    from taylorat import models

    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, models.create("small_cnn", num_classes=10, in_channels=1, image_size=8),
                    {"config": {"data": {"dataset": "digits"}}})
    assert main(["eval", "--checkpoint", str(path), "--attacks", "clean,aa", "--n", "4", "--device", "cpu",
                 "--aa-version", "reference", "--out", str(tmp_path / "ref")]) == 0
    rep = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert rep["settings"]["aa"]["version"] == "reference"
    assert set(rep["extra"]["aa_per_attack"]) <= {"apgd-ce", "apgd-t"}  # the library ran only those

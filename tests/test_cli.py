"""The command line: dry runs, one-line errors, train -> eval, and the demo report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taylorat.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic", "data.holdout=32",
    "data.options={n_train: 96, n_test: 48, channels: 1, image_size: 8}", "model.name=small_cnn",
    "attack.eps=0.1", "attack.step=0.03", "attack.steps=2", "optim.epochs=1", "optim.batch_size=32",
    "eval.n=32", "eval.eps=0.1", "eval.step=0.02", "eval.steps=2",
]


def test_dry_run_prints_resolved_config(capsys, tmp_path):
    cfg = ROOT / "configs" / "cifar10_preact18_trades_1st_2nd.yaml"
    data = tmp_path / "data" / "cifar-10-batches-py"  # where CIFAR-10 would be: a dry run reads nothing
    data.mkdir(parents=True)
    assert main(["train", "--config", str(cfg), "--dry-run", "optim.epochs=30", f"data.data_dir={data.parent}",
                 f"out_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 30" in out and "preact_resnet18" in out and '"eta2": 0.1' in out and "config OK" in out
    assert "# model: preact_resnet18, 11,172,170 parameters for 3x32x32 inputs, 10 classes" in out
    assert f"# data: cifar10 (on disk: {data})" in out


@pytest.mark.parametrize("args,match", [
    (["train", "--dry-run", "optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    (["train", "--dry-run", "attack.eps=-1"], "attack.eps must be >= 0"),
    (["train", "--config", "nope.yaml"], "config file nope.yaml not found"),
    (["train", "out_dir=RUN", "data.dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["train", "out_dir=RUN", "data.dataset=cifar10", "data.data_dir=EMPTY", "data.download=false"],
     "cifar10 not found in"),
    (["train", "out_dir=RUN", *TINY, "model.name=resnet9000"], "unknown model 'resnet9000'"),
    (["eval", "--checkpoint", "EMPTY/none.safetensors"], "no checkpoint at"),
    (["demo", "--epochs", "0"], "--epochs must be >= 1"),
])
def test_bad_input_exits_2_with_one_line(args, match, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.replace("RUN", str(tmp_path / "run")).replace("EMPTY", str(tmp_path / "empty")) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taylorat: error: ") and len(err.splitlines()) == 1
    assert match in err
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_train_then_eval_writes_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"out_dir={run}", *TINY]) == 0
    assert (run / "best.safetensors").exists()
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "best.safetensors"), "--n", "40", "--out", str(out),
                 "--device", "cpu"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert {"checkpoint", "model", "dataset", "split", "n", "seed", "results", "settings", "seconds"} <= rep.keys()
    assert rep["n"] == 40 and rep["dataset"] == "synthetic" and rep["split"] == "test"
    assert set(rep["results"]) == {"clean", "pgd20", "cw20"}
    assert rep["results"]["clean"] >= rep["results"]["pgd20"]
    assert rep["settings"]["pgd20"]["eps"] == 0.1  # the run's own eval settings by default
    assert rep["settings"]["pgd20"]["steps"] == 20
    assert "| method | clean | pgd20 | cw20 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_demo_prints_both_methods_and_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| trades |" in out and "| trades+1st+2nd |" in out
    rep = json.loads((tmp_path / "report.json").read_text())
    assert [r["method"] for r in rep["runs"]] == ["trades", "trades+1st+2nd"]
    for r in rep["runs"]:
        assert {"clean", "pgd20", "cw20", "seconds"} <= r.keys()
        assert 0 <= r["cw20"] <= r["clean"] <= 100 and 0 <= r["pgd20"] <= r["clean"]
    assert rep["n"] == 360 and rep["split"] == "test"
    # a second call resumes the finished runs instead of retraining
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--device", "cpu"]) == 0


@pytest.mark.slow
def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "taylorat", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("taylorat ")


@pytest.mark.slow
def test_landscape_command_on_two_checkpoints(tmp_path, capsys):
    for name, method in (("a", "trades"), ("b", "trades+1st+2nd")):
        assert main(["train", f"out_dir={tmp_path / name}", *TINY, f"method.name={method}"]) == 0
    out = tmp_path / "land"
    assert main(["landscape", "--checkpoint", str(tmp_path / "a" / "best.safetensors"), "--checkpoint",
                 str(tmp_path / "b" / "best.safetensors"), "--images", "2", "--steps", "5", "--out", str(out),
                 "--flatness", "--flatness-images", "8", "--draws", "2", "--device", "cpu"]) == 0
    for f in ("landscape.png", "landscapes.npz", "landscape.json", "flatness.png", "flatness.json"):
        assert (out / f).stat().st_size > 0
    rep = json.loads((out / "landscape.json").read_text())
    assert set(rep["models"]) == {"trades", "trades+1st+2nd"}
    assert rep["settings"]["radius"] == pytest.approx(0.2)  # twice the runs' eval eps
    text = capsys.readouterr().out
    assert "flatness (mean |L - L(0,0)|)" in text and "expected clean-loss increase" in text

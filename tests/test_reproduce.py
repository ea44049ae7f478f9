"""The study runner: a whole (tiny) study end to end, resume/skip, rendering, and bad study files."""

import json
from pathlib import Path

import pytest

from taylorat.cli import main
from taylorat.reproduce import study as studies
from taylorat.reproduce.render import summarise
from taylorat.train import ConfigError

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "configs" / "studies" / "fashion_mnist_cpu.yaml"
TINY = [  # the shipped study, on synthetic 1x28x28 data, in seconds
    "base.data.dataset=synthetic", "base.data.options={n_train: 120, n_test: 40, channels: 1, image_size: 28}",
    "base.data.train_subset=80", "base.data.holdout=20", "base.optim.epochs=1", "base.optim.batch_size=40",
    "base.attack.steps=2", "base.eval.n=20", "base.eval.steps=2", "base.progress=false", "seeds=[0]",
    "evaluate.n=12", "evaluate.n_aa=4",
]


def test_shipped_study_validates():
    st = studies.load(STUDY)
    runs = st.runs("runs")
    assert [r.label for r in runs] == ["trades", "trades+1st+2nd"] * 3
    assert {r.seed for r in runs} == {0, 1, 2}
    taylor = [r for r in runs if r.label == "trades+1st+2nd"][0].config
    m = taylor.resolved_method()
    assert (m["eta"], m["eta2"], m["noise_std"], m["noise_scope"]) == (0.2, 0.1, 1e-4, "conv")
    assert taylor.data.train_subset == 10000 and taylor.eval.select_on == "holdout"
    assert st.evaluate.n == 1000 and st.evaluate.n_aa == 500 and "aa" in st.evaluate.attacks


def test_study_end_to_end_on_synthetic_data(tmp_path, capsys):
    runs_dir, out = tmp_path / "runs", tmp_path / "docs"
    assert main(["reproduce", str(STUDY), *TINY, "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in res["runs"]] == [("trades", 0), ("trades+1st+2nd", 0)]
    for r in res["runs"]:
        assert {"clean", "pgd20", "cw20", "aa", "n_aa", "train_seconds", "eval_seconds"} <= r.keys()
        assert r["n_aa"] == 4 and r["n"] == 12
        assert r["clean"] >= r["pgd20"] and r["clean_on_aa_images"] >= r["aa"]
    assert res["config"]["resolved"]["data"]["train_subset"] == 80
    readme = (out / "README.md").read_text()
    assert "| trades | 1 |" in readme and "| trades+1st+2nd | 0 |" in readme
    assert "seed spread" in readme and "taylorat reproduce" in readme
    # a second call trains nothing and reuses the evaluations
    before = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.safetensors")}
    assert main(["reproduce", str(STUDY), *TINY, "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.safetensors")}
    assert json.loads((out / "results.json").read_text())["runs"] == res["runs"]
    # re-render only
    (out / "README.md").unlink()
    assert main(["reproduce", str(STUDY), *TINY, "--runs-dir", str(runs_dir), "--out", str(out),
                 "--render-only"]) == 0
    assert (out / "README.md").read_text() == readme


def test_summary_and_spread_rule():
    runs = [{"method": "a", "seed": s, "clean": c, "pgd20": p} for s, c, p in ((0, 80, 40), (1, 82, 44))]
    runs += [{"method": "b", "seed": s, "clean": c, "pgd20": p} for s, c, p in ((0, 90, 41), (1, 92, 43))]
    s = summarise(runs, ["a", "b"])
    assert s["a"]["clean"]["mean"] == 81 and s["b"]["pgd20"]["mean"] == 42
    from taylorat.reproduce.render import findings
    text = "\n".join(findings(s, ["a", "b"], [("clean", "clean"), ("pgd20", "PGD-20")], runs))
    assert "clean +10.00 (outside" in text and "PGD-20 +0.00 (inside" in text
    assert "higher than `a` beyond the seed spread in: clean" in text


@pytest.mark.parametrize("over,match", [
    (["foo=1"], "unknown study key 'foo'"),
    (["evaluate.nn=3"], "unknown evaluate key 'nn'"),
    (["evaluate.attacks=[clean, fgsm]"], "'fgsm' is not one of"),
    (["base.optim.lrr=0.1"], "run 'trades': unknown config key 'optim.lrr'"),
    (["seeds=[-1]"], "seeds"),
    (["evaluate.n_aa=2000"], "n_aa <= n"),
])
def test_bad_study_files(over, match):
    with pytest.raises(ConfigError, match=match):
        studies.load(STUDY, over)


def test_unknown_only_label(capsys):
    assert main(["reproduce", str(STUDY), "--only", "mart", "--dry-run"]) == 2
    assert "is not a run of fashion_mnist_cpu" in capsys.readouterr().err

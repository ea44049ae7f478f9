"""The study runner: a whole (tiny) study end to end, resume/skip, rendering, and bad study files."""

import json
from pathlib import Path

import pytest

from taylorat.cli import main
from taylorat.studies import study as studies
from taylorat.studies.render import summarise
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


@pytest.mark.slow
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
    from taylorat.studies.render import findings
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


@pytest.mark.slow
def test_paper_table_end_to_end_on_synthetic_data(tmp_path):
    """Table 7 (TRADES vs TRADES+1st+2nd, RayS), shrunk to synthetic data and one epoch."""
    tiny = ["device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic", "data.holdout=10",
            "data.options={n_train: 40, n_test: 10}", "optim.epochs=1", "optim.batch_size=10",
            "attack.steps=1", "eval.n=10", "eval.steps=1"]
    st = studies.load("table7", ["evaluate.n=6", "evaluate.rays_queries=30"], seeds=1, run_overrides=tiny)
    from taylorat.studies import runner

    res = runner.run_study(st, tmp_path / "runs", tmp_path / "out", log=lambda s: None, command="taylorat ...")
    assert [r["method"] for r in res["runs"]] == ["TRADES", "TRADES+1st+2nd"]
    for r in res["runs"]:
        assert r["n"] == 6 and r["n_rays"] == 6 and 0 <= r["rays"] <= r["clean"] <= 100
        assert r["adbd"] is None or r["adbd"] >= 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"] == res["runs"] and saved["study"] == "table7"
    page = (tmp_path / "out" / "README.md").read_text()
    assert "| TRADES | 1 |" in page and "/ 82.89 (" in page and "0.0412" in page
    assert "the paper chose on test images" in page


def test_study_page_counts_runs_per_environment():
    from taylorat.studies.render import _env

    a = {"torch": "2.14.1", "device": "cpu", "cpu threads": 2, "gpu": "none"}
    env = _env({"runs": [{"environment": a}, {"environment": a}]})
    assert env == "torch 2.14.1, device cpu, cpu threads 2, gpu none"
    mixed = _env({"runs": [{"environment": a}, {}, {}]})
    assert mixed == "torch 2.14.1, device cpu, cpu threads 2, gpu none (1 run); not recorded (2 runs)"
    assert _env({"runs": [{}]}) == "not recorded"


def test_dry_run_lists_the_runs_and_estimates_the_training_time(tmp_path, capsys):
    assert main(["reproduce", str(STUDY), *TINY, "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# 2 runs validated (dry run: nothing trained), 0 already trained" in out
    estimate = next(line for line in out.splitlines() if line.startswith("# estimate on this machine"))
    assert "for 2 runs" in estimate and "ms per step of small_cnn at batch 40" in estimate
    assert not any(tmp_path.iterdir())  # nothing written


def _run(method, seed, best, last, train, test):
    return {"method": method, "seed": seed, "clean": 80.0, "pgd20": best, "best_epoch": 40,
            "last": {"clean": 82.0, "pgd20": last},
            "curves": {"epoch": [1, 2], "track_test_pgd": [30.0, test], "track_train_pgd": [31.0, train]}}


def test_best_vs_last_and_the_generalisation_gap():
    from taylorat.studies.render import best_vs_last

    runs = [_run("a", 0, 60, 55, 90, 55), _run("a", 1, 62, 55, 92, 55),   # overfits by 6, gap 36
            _run("b", 0, 61, 60, 70, 60), _run("b", 1, 61, 61, 71, 61)]   # overfits by 0.5, gap 10
    text = "\n".join(best_vs_last(runs, ["a", "b"]))
    assert "| train − test |" in text
    assert ("| a | 2 | 61.00 ± 1.41 | 55.00 ± 0.00 | 6.00 ± 1.41 | 80.00 ± 0.00 | 82.00 ± 0.00 | 36.00 ± 1.41 "
            "| 40, 40 |") in text
    assert "best − last of `b` vs `a`: -5.50 points (outside the seed spread ±2.12): `b` overfits less" in text
    assert "train − test of `b` vs `a`: -26.00 points (outside the seed spread ±1.41): `b` generalises better" in text
    untracked = [{**r, "curves": {}} for r in runs]
    text = "\n".join(best_vs_last(untracked, ["a", "b"]))
    assert "train − test" not in text and "`b` overfits less" in text


def test_robust_overfitting_study_validates():
    st = studies.load(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml")
    runs = st.runs("runs")
    assert len(runs) == 15 and {r.seed for r in runs} == {0, 1, 2}
    m = {r.label: r.config.resolved_method() for r in runs if r.seed == 0}
    assert (m["trades"]["eta"], m["trades"]["noise_std"]) == (0.0, 0.0)
    assert (m["trades+1st+2nd"]["eta"], m["trades+1st+2nd"]["noise_std"]) == (0.2, 1e-4)
    assert m["trades+1st+2nd sigma=0.01"]["noise_std"] == 0.01 and m["trades+1st+2nd sigma=0.01"]["eta"] == 0.2
    s = m["trades sigma=0.01"]
    assert (s["eta"], s["eta2"], s["noise_std"]) == (0.0, 0.0, 0.01)
    assert m["awp-trades"]["base"] == "awp-trades" and m["awp-trades"]["eta"] == 0.0
    cfg = runs[0].config
    assert cfg.eval.track_test == 500 and cfg.eval.select_on == "holdout"
    assert st.evaluate.n == 1000 and st.evaluate.n_aa == 500 and st.evaluate.last == ["clean", "pgd20", "cw20"]


def test_one_seed_gets_no_verdict():
    from taylorat.studies.render import best_vs_last, findings

    runs = [_run("a", 0, 60, 55, 90, 55), _run("b", 0, 61, 60, 70, 60)]
    text = "\n".join(best_vs_last(runs, ["a", "b"]) + findings(summarise(runs, ["a", "b"]), ["a", "b"],
                                                                 [("pgd20", "PGD-20")], runs))
    assert "best − last of `b` vs `a`: -4.00 points (one seed: no spread to judge it against)." in text
    assert "`b` vs `a`: PGD-20 +1.00 (one seed: no spread" in text
    assert "outside" not in text and "inside" not in text and "cannot be told apart" not in text


def test_an_unfinished_study_says_so():
    from taylorat.studies.render import _progress

    st = studies.load(STUDY)
    assert _progress([{"method": "trades", "seed": s} for s in (0, 1, 2)]
                     + [{"method": "trades+1st+2nd", "seed": s} for s in (0, 1, 2)], st.runs("runs")) == []
    text = "".join(_progress([{"method": "trades", "seed": 0}], st.runs("runs")))
    assert text.startswith("**In progress: 1 of 6 runs finished.**")
    assert "`trades+1st+2nd` seed 0" in text and "`trades` seed 0" not in text


@pytest.mark.slow
def test_parallel_runs_give_the_records_of_sequential_ones(tmp_path, capfd):
    """--jobs 2: two runs at once in their own processes, the same numbers as one after the other."""
    from taylorat.studies import runner

    over = [x for x in TINY if not x.startswith("evaluate.n_aa")] + ["evaluate.attacks=[clean, pgd20]",
                                                                      "evaluate.last=[]", "base.progress=true"]
    st = studies.load(STUDY, over)
    seq = runner.run_study(st, tmp_path / "seq", tmp_path / "seq_out", log=lambda s: None)
    assert "epoch 1/1" in capfd.readouterr().err   # one run at a time draws its progress bar
    lines = []
    par, failed = runner.run_study_parallel(st, tmp_path / "par", tmp_path / "par_out", 2, log=lines.append,
                                            threads=1)
    assert failed == [] and len(par["runs"]) == 2
    assert "epoch 1/1" not in capfd.readouterr().err   # parallel runs draw none over each other
    keys = ("method", "seed", "clean", "pgd20", "best_epoch")
    assert [{k: r[k] for k in keys} for r in par["runs"]] == [{k: r[k] for k in keys} for r in seq["runs"]]
    assert sum(x.startswith("started ") for x in lines) == 2 and any(x.startswith("[2/2] ") for x in lines)
    for label in ("trades", "trades_1st_2nd"):
        text = (tmp_path / "par" / "logs" / f"{label}_seed0.log").read_text()
        assert "done: clean" in text
        # the evaluation says what it is doing: the checkpoint, then each attack as it starts and ends
        assert "evaluating best.safetensors (epoch 1)" in text and "pgd20 on 12 images (eps " in text
        rec = next(r for r in par["runs"] if studies.slug(r["method"]) == label)
        assert f"pgd20 on 12 images: {rec['pgd20']:.2f} (" in text
    assert main(["reproduce", str(STUDY), *TINY, "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capfd.readouterr().err


@pytest.mark.slow
def test_a_failed_parallel_run_is_reported_and_the_others_finish(tmp_path, capsys):
    over = [x for x in TINY if not x.startswith("evaluate.n_aa")] + ["evaluate.attacks=[clean]", "evaluate.last=[]"]
    damaged = tmp_path / "runs" / "trades" / "seed0"
    damaged.mkdir(parents=True)
    (damaged / "last.safetensors").write_bytes(b"not a checkpoint")
    assert main(["reproduce", str(STUDY), *over, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                 "--jobs", "2"]) == 2
    captured = capsys.readouterr()
    assert "FAILED trades seed 0: RunDirError" in captured.out and "1 run(s) failed: trades seed 0" in captured.err
    assert "run the same command again to resume" in captured.err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["method"] for r in res["runs"]] == ["trades+1st+2nd"] and "--jobs 2" in res["command"]
    assert "holds a damaged run" in (tmp_path / "runs" / "logs" / "trades_seed0.log").read_text()


@pytest.mark.parametrize("holdout, subset, text", [
    (250, 250, "250 training images held out for choosing `best` (seeded, stratified), 250 of the rest trained on"),
    (200, None, "200 training images held out for choosing `best` (seeded, stratified), the rest trained on"),
    (0, None, "the whole training set trained on"),
])
def test_study_page_states_the_split_as_prepare_draws_it(holdout, subset, text):
    """The page's data line matches `data.prepare`: the hold-out is drawn first, the subset from the rest."""
    import torch

    from taylorat.data import Dataset, prepare
    from taylorat.studies.render import render_readme

    y = torch.arange(10).repeat(60)
    ds = Dataset(name="toy", train_x=torch.zeros(600, 1, 2, 2, dtype=torch.uint8), train_y=y,
                 test_x=torch.zeros(10, 1, 2, 2, dtype=torch.uint8),
                 test_y=torch.arange(10), num_classes=10, crop=False, flip=False)
    p = prepare(ds, train_subset=subset, holdout=holdout, seed=0)
    assert (p.info["n_holdout"], p.info["n_train"]) == (holdout, subset or 600 - holdout)
    st = studies.from_values({"name": "s", "runs": [{"label": "a", "method": {"name": "trades"}}],
                              "base": {"data": {"train_subset": subset, "holdout": holdout},
                                       "eval": {"select_on": "holdout" if holdout else "test"}}})
    run = {"method": "a", "seed": 0, "clean": 90.0, "settings": {"eps": 0.031, "step": 0.003}}
    page = render_readme({"title": "s", "runs": [run], "config": {"resolved": st.runs("r")[0].config.to_dict()}}, st)
    assert text in page


def test_study_figure_bands_are_seed_means_and_ranges(tmp_path):
    """The figure's lines are per-epoch means over seeds, its bands the lowest and highest seed."""
    from taylorat.studies.figures import band, lr_drops, plot_curves

    def run(method, test, train, lr):
        return {"method": method, "curves": {"epoch": [1, 2, 3][:len(test)], "track_test_pgd": test,
                                             "track_train_pgd": train, "lr": lr}}

    runs = [run("a", [40.0, 50.0, 48.0], [41.0, 60.0, 70.0], [0.1, 0.01, 0.01]),
            run("a", [42.0, 54.0, 44.0], [43.0, 66.0, 80.0], [0.1, 0.01, 0.01]),
            run("b", [30.0, 35.0], [30.0, 36.0], [0.1, 0.1]),   # a shorter run: cut, not padded
            {"method": "b", "curves": {}}]                      # a run without curves is left out
    test = band(runs, "a", "track_test_pgd")
    assert test == {"epoch": [1, 2, 3], "mean": [41.0, 52.0, 46.0], "lo": [40.0, 50.0, 44.0],
                    "hi": [42.0, 54.0, 48.0], "seeds": 2}
    gap = band(runs, "a", "gap")   # training-image accuracy minus test accuracy, per seed, then averaged
    assert gap["mean"] == [1.0, 11.0, 29.0] and gap["lo"] == [1.0, 10.0, 22.0] and gap["hi"] == [1.0, 12.0, 36.0]
    assert band(runs, "b", "gap") == {"epoch": [1, 2], "mean": [0.0, 1.0], "lo": [0.0, 1.0], "hi": [0.0, 1.0],
                                      "seeds": 1}
    assert band(runs, "c", "track_test_pgd") is None
    assert lr_drops(runs) == [2] and lr_drops([{"method": "b", "curves": {}}]) == []
    png = plot_curves(runs, ["a", "b"], tmp_path / "curves.png", "a title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_one_seed_shows_its_value_without_a_spread():
    """A method with one seed has no spread: its cells carry the value alone, never a made-up ± 0.00."""
    from taylorat.studies.render import best_vs_last, findings, summarise

    runs = [_run("a", 0, 60, 55, 90, 55), _run("a", 1, 62, 55, 92, 55), _run("b", 0, 61, 60, 70, 60)]
    for r, gap in zip(runs, (3.0, 5.0, 4.0)):
        r.update(aa=r["pgd20"] - gap, pgd20_on_aa_images=r["pgd20"], clean_on_aa_images=80.0)
    text = "\n".join(best_vs_last(runs, ["a", "b"]))
    assert "| b | 1 | 61.00 | 60.00 | 1.00 | 80.00 | 82.00 | 10.00 | 40 |" in text
    assert "| a | 2 | 61.00 ± 1.41 | 55.00 ± 0.00 |" in text   # two equal seeds: a real zero spread
    summary = summarise(runs, ["a", "b"])
    out = "\n".join(findings(summary, ["a", "b"], [("pgd20", "PGD-20")], runs))
    assert "`a`: PGD-20 reads 4.00 ± 1.41 points above AutoAttack" in out
    assert "`b`: PGD-20 reads 4.00 points above AutoAttack" in out and "± 0.00" not in out


@pytest.mark.slow
def test_sigterm_to_a_parallel_study_stops_its_workers_with_checkpoints(tmp_path):
    """`kill PID` of `reproduce --jobs 2`: both workers checkpoint and let go of their runs, the parent exits 143."""
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    over = [x for x in TINY if x != "base.optim.epochs=1"] + ["base.optim.epochs=200", "evaluate.attacks=[clean]",
                                                              "evaluate.last=[]"]
    cmd = [sys.executable, "-m", "taylorat", "reproduce", str(STUDY), *over, "--runs-dir", str(runs),
           "--out", str(tmp_path / "out"), "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [runs / "logs" / f"{label}_seed0.log" for label in ("trades", "trades_1st_2nd")]
    try:
        deadline = time.time() + 240
        while not all(p.is_file() and "epoch 2/200" in p.read_text() for p in logs):
            assert proc.poll() is None and time.time() < deadline, "the runs did not reach epoch 2"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # a hang fails the test without leaving the study running
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, out[-2000:] + err[-2000:]
    assert "SIGTERM: stopping 2 running run(s)" in out and "run the same command again to continue" in err
    for p in logs:  # each worker stopped at a step boundary with a checkpoint, and released its folder's lock
        assert "stopped by SIGTERM" in p.read_text()
    for run in ("trades", "trades_1st_2nd"):
        folder = runs / run / "seed0"
        assert (folder / "last.safetensors").is_file() and not (folder / ".taylorat.lock").exists()
    assert not (runs / ".taylorat.lock").exists()


def test_stops_reach_a_parent_process_intact():
    """A stop raised in a study's worker is pickled to its parent: it must come back whole (exit code, text)."""
    import pickle
    import signal

    from taylorat.studies.parallel_stop import StudyStopped
    from taylorat.train.signals import Stopped

    for e in (Stopped(signal.SIGTERM, 3, 1, "/runs/a/last.safetensors"), StudyStopped(signal.SIGTERM)):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.exit_code == 143


def test_a_study_page_says_how_long_its_runs_took():
    from taylorat.studies.render_setup import compute_text

    runs = [{"train_seconds": 3000.0, "eval_seconds": 1200.0, "check_seconds": 600.0},
            {"train_seconds": 1500.0, "eval_seconds": 30.0, "flatness": {"seconds": 45.0}, "reused": {}},
            {"train_seconds": 900.0, "eval_seconds": 20.0, "reused": {"from": "x"}}]
    text = compute_text(runs)
    assert text.startswith("Compute over 3 runs: 1.5 h of training steps, 10 min of per-epoch checks in the 1 that "
                           "record them and 22 min of evaluation (weight-space flatness included)")
    assert "the other runs' per-epoch checks are not in their records" in text and "1 reused run count" in text
    assert compute_text(runs[:1]) == ("Compute over 1 run: 50 min of training steps, 10 min of per-epoch checks and "
                                      "20 min of evaluation, on the machine named under Setup.")
    assert "and 30 s of evaluation" in compute_text([{"train_seconds": 5.0, "eval_seconds": 30.0}])


def test_time_left_costs_each_run_as_its_label_did_so_far():
    from taylorat.studies.pace import time_left

    assert time_left(["a", "b"], [], {}, 2) is None  # nothing timed yet: no guess
    took = {"a": [600.0, 800.0], "b": [6000.0]}
    # pending: a (700) + b (6000) + c (untimed: not guessed, named); running: b had 1000 of 6000, d untimed
    seconds, untimed = time_left(["a", "b", "c", "c"], [("b", 1000.0), ("d", 50.0)], took, 2)
    assert seconds == pytest.approx((700 + 6000 + 5000) / 2) and untimed == ["c", "c", "d"]
    assert time_left([], [("a", 900.0)], took, 1) == (0.0, [])  # a run past its label's mean counts nothing more


def start_parallel_study(tmp_path, epochs):
    """``reproduce --jobs 2`` of the tiny study, returned once both runs are in epoch 2: (process, command, logs)."""
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    over = [x for x in TINY if x != "base.optim.epochs=1"] + ["evaluate.attacks=[clean]", "evaluate.last=[]",
                                                              f"base.optim.epochs={epochs}"]
    cmd = [sys.executable, "-m", "taylorat", "reproduce", str(STUDY), *over, "--runs-dir", str(runs),
           "--out", str(tmp_path / "out"), "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [runs / "logs" / f"{label}_seed0.log" for label in ("trades", "trades_1st_2nd")]
    deadline = time.time() + 240
    while not all(p.is_file() and f"epoch 2/{epochs}" in p.read_text() for p in logs):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("the runs did not reach epoch 2: " + proc.communicate()[1][-2000:])
        time.sleep(0.5)
    return proc, cmd, logs


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["a worker", "the parent"])
def test_a_killed_study_process_leaves_every_run_resumable(tmp_path, victim):
    """SIGKILL (as by the out-of-memory killer) of one worker of `reproduce --jobs 2`: the pool stops the other at a
    checkpoint, the study says so in one line per run and exits 2. SIGKILL of the parent: each worker gets SIGTERM
    (Linux's parent-death signal) and stops at a checkpoint instead of training on alone. Either way the same
    command resumes both runs."""
    import os
    import signal
    import subprocess

    from helpers.procs import alive, children

    proc, cmd, logs = start_parallel_study(tmp_path, 12)
    try:
        workers = [pid for pid in children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        os.kill(workers[0] if victim == "a worker" else proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stopped = sum("stopped by SIGTERM" in p.read_text() for p in logs)
    if victim == "a worker":
        assert proc.returncode == 2, out[-2000:] + err[-2000:]
        assert out.count("a worker process of the study died (killed, or out of memory)") == 2
        assert "run the same command again to resume them" in err and stopped == 1
    else:
        import time

        deadline = time.time() + 60
        while any(alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
        # each worker stopped at a checkpoint instead of training on to epoch 12 (the stop is read from the
        # checkpoint, not the log: once, on a loaded machine, a worker checkpointed on the signal and exited
        # before its log line; the resume below takes over its lock, as for any killed process)
        from taylorat import checkpoint as ckpt

        done = [ckpt.read_meta(tmp_path / "runs" / label / "seed0" / "last.safetensors")["epoch"]
                for label in ("trades", "trades_1st_2nd")]
        assert all(1 <= e < 12 for e in done), (done, err[-3000:])
        assert sum("stopped by SIGTERM" in p.read_text() for p in logs) >= 1, err[-3000:]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "took over the lock" in r.stdout + "".join(p.read_text() for p in logs)  # a killed process's stale lock
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["runs"]) == 2


@pytest.mark.slow
def test_a_study_times_its_fresh_runs_and_not_those_it_reads_back(tmp_path, capsys):
    """Two seeds of one label: the first call times seed 0 (trained here) and estimates seed 1; a second call
    reads both back and gives no estimate (timing a read-back would say "about 0 min left")."""
    over = [*[x for x in TINY if x != "seeds=[0]"], "seeds=[0, 1]", "evaluate.attacks=[clean]", "evaluate.last=[]"]
    call = ["reproduce", str(STUDY), *over, "--only", "trades", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out")]
    assert main(call) == 0
    first = capsys.readouterr()
    assert "left for 1 run, from the runs timed in this call" in first.out + first.err
    assert main(call) == 0
    second = capsys.readouterr()
    assert "[1/2] trades seed 0" in second.out + second.err and "left for" not in second.out + second.err


def test_pace_times_only_runs_that_started_from_scratch_and_says_what_is_left(tmp_path):
    """A run that resumes, or is only evaluated or read back, does part of a run's work in this call: timing it
    would make the estimate too short (a study resumed at a finished run's flatness once said "about 8 min left
    for 8 runs" of about an hour each)."""
    from taylorat.studies.pace import Pace, from_scratch

    run = tmp_path / "trades" / "seed0"
    assert from_scratch(run)  # no folder yet
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("{}")
    assert from_scratch(run)  # made, but no epoch trained
    for name in ("last.safetensors", "last.prev.safetensors", "eval.json"):
        (run / name).write_text("x")
        assert not from_scratch(run), name
        (run / name).unlink()
    pace, lines = Pace(jobs=2), []
    pace.finished("a", 300.0, scratch=False)  # resumed or read back: not timed
    pace.report(["a"], [], lines.append)
    assert lines == []
    pace.finished("a", 1800.0, scratch=True)
    pace.report(["a", "a"], [("a", 600.0)], lines.append)  # (1800 + 1800 + 1200) / 2 = 40 min
    pace.report([], [], lines.append)  # nothing left: nothing said
    assert lines == ["about 40 min left for 3 runs, from the runs timed in this call"]
    # a cheap label timed first (a reuse run) once said "about 23 min left for 5 runs" of about 2 h each: runs of a
    # label not timed yet are named, not guessed
    pace.report(["a", "b + SAM", "b + SAM"], [("c", 60.0)], lines.append)
    assert lines[1] == ("about 15 min left for the 1 run of methods timed in this call, and 3 more of methods "
                        "not timed yet (b + SAM, c)")
    pace.report(["b + SAM"], [], lines.append)  # no run of a timed label left: no time to give
    assert len(lines) == 2

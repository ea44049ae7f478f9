"""The flatness study: flatness of `last` in the records, reuse of a reproduced run's evaluation, the page."""

import json
import math
from pathlib import Path

import pytest
import torch

from taylorat import checkpoint as ckpt
from taylorat.cli import main
from taylorat.studies import study as studies
from taylorat.studies.flatness_page import flatness_section, pearson, plot_flatness_gap
from taylorat.studies.reuse import first_difference, reused_record
from taylorat.train import ConfigError, from_dict, train

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "configs" / "studies" / "flatness_cpu.yaml"
TINY = [  # the shipped study, on synthetic 1x28x28 data, in seconds
    "base.data.dataset=synthetic", "base.data.options={n_train: 120, n_test: 40, channels: 1, image_size: 28}",
    "base.data.train_subset=60", "base.data.holdout=20", "base.optim.epochs=2", "base.optim.batch_size=30",
    "base.attack.steps=2", "base.eval.n=20", "base.eval.steps=2", "base.eval.track_test=10",
    "base.eval.track_train=10", "base.progress=false", "seeds=[0]", "evaluate.n=12", "evaluate.n_aa=0",
    "evaluate.attacks=[clean, pgd20]", "evaluate.last=[clean, pgd20]",
    "evaluate.flatness={alphas: [0.05, 0.1], draws: 2, n: 8, steps: 2}",
]


def test_shipped_flatness_study_validates():
    st = studies.load(STUDY)
    runs = st.runs("runs")
    assert len(runs) == 18 and {r.seed for r in runs} == {0, 1, 2}
    mz = {r.label: r.config.resolved_minimizer()["name"] for r in runs}
    assert mz == {"trades": "none", "trades+1st+2nd": "none", "trades + SAM": "sam", "trades+1st+2nd + SAM": "sam",
                  "trades + AWP": "awp", "trades+1st+2nd + AWP": "awp"}
    # the robust-overfitting study's settings, so its records can be reused where a retrained run reproduces them
    ro = studies.load(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml").runs("runs")[0].config.to_dict()
    mine = runs[0].config.to_dict()
    for key in ("data", "model", "attack", "optim"):
        assert mine[key] == ro[key], key
    assert mine["eval"] == {**ro["eval"], "every": 100}  # retrained for `last`: one check, at the last epoch
    only = {m["label"] for m in st.methods if m.get("reuse_only")}
    assert only == {"trades", "trades+1st+2nd", "trades + AWP"}
    assert all(r.config.eval.every == (100 if r.label in only else 1) for r in runs)
    assert st.evaluate.flatness == {"alphas": [0.05, 0.1, 0.2], "draws": 5, "n": 500, "steps": 10, "seed": 0}
    assert st.reuse and all((STUDY.parent / p).resolve().name == "results.json" for p in st.reuse)


def test_bad_flatness_settings_are_one_line_errors():
    with pytest.raises(studies.ConfigError, match="unknown evaluate.flatness key 'alpha'"):
        studies.load(STUDY, ["evaluate.flatness={alpha: [0.1]}"])
    with pytest.raises(studies.ConfigError, match="alphas must be a list of sizes > 0"):
        studies.load(STUDY, ["evaluate.flatness={alphas: [0, 0.1]}"])


def test_reuse_only_needs_true_and_the_study_reuse_list():
    with pytest.raises(studies.ConfigError, match="reuse_only must be true or false, and needs the study's 'reuse'"):
        studies.load(STUDY, ["reuse=[]"])
    with pytest.raises(studies.ConfigError, match="reuse_only must be true or false"):
        studies.load(STUDY, ["runs=[{label: a, reuse_only: 'yes'}]"])


def test_checking_fewer_epochs_does_not_change_training(tmp_path):
    """The per-epoch checks run in eval mode with their own seeds: a run checked at its last epoch only
    trains the very weights of one checked every epoch, so it may stand in for it (``reuse_only``)."""
    def run(out, every):
        return train(from_dict({
            "seed": 3, "out_dir": str(out), "device": "cpu", "progress": False, "checkpoints": "none",
            "data": {"dataset": "synthetic", "holdout": 16, "options": {"n_train": 96, "n_test": 32, "channels": 1,
                                                                       "image_size": 8}},
            "model": {"name": "small_cnn"}, "method": {"name": "trades+1st+2nd", "noise_std": 0.01},
            "attack": {"eps": 0.1, "step": 0.03, "steps": 2}, "optim": {"epochs": 3, "batch_size": 32},
            "eval": {"n": 16, "eps": 0.1, "step": 0.03, "steps": 2, "every": every, "track_test": 16,
                     "track_train": 16}}))
    a, b = run(tmp_path / "a", 1), run(tmp_path / "b", 3)
    assert [h["train_acc_adv"] for h in a.history] == [h["train_acc_adv"] for h in b.history]
    assert "track_test_pgd" in a.history[0] and "track_test_pgd" not in b.history[0]
    assert a.history[-1]["track_test_pgd"] == b.history[-1]["track_test_pgd"]
    wa, _ = ckpt.load_model(tmp_path / "a" / "last.safetensors")
    wb, _ = ckpt.load_model(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(wa.state_dict().values(), wb.state_dict().values()))


def test_a_run_reproduces_a_record_when_every_number_it_measured_is_equal():
    record = {"epoch": [1, 2, 3], "train_acc_adv": [20.0, 30.0, 40.0], "track_test_pgd": [10.0, 12.0, 15.0]}
    assert first_difference(record, {"epoch": [1, 2, 3], "train_acc_adv": [20.0, 30.0, 40.0],
                                     "track_test_pgd": [None, None, 15.0]}) is None
    assert first_difference(record, {"epoch": [1, 2, 3], "train_acc_adv": [20.0, 30.0, 40.0],
                                     "track_test_pgd": [None, None, 15.2]}) == \
        (2, "track_test_pgd at epoch 3 (15.2 here, 15.0 there)")
    assert first_difference(record, {"epoch": [1, 2, 3], "train_acc_adv": [20.0, 31.0, 40.0],
                                     "track_train_pgd": [None, None, 1.0]})[0] == 1  # the earliest difference
    assert first_difference(record, {"epoch": [1, 2], "train_acc_adv": [20.0, 30.0]})[0] == -1


def test_a_reuse_only_run_that_reproduces_no_record_stops_the_study(tmp_path):
    st = studies.load(STUDY, [*TINY, "seeds=[1]"])
    run = next(r for r in st.runs(tmp_path / "runs") if r.label == "trades")
    out = Path(run.config.out_dir)
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"train_seconds": 1.0}))
    (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in (
        {"epoch": 1, "train_acc_adv": 20.0, "lr": 0.05},
        {"epoch": 2, "train_acc_adv": 31.0, "lr": 0.005, "track_test_pgd": 12.0, "track_train_pgd": 20.0})))
    settings = {"n": 12}
    rec = {"method": "awp-trades", "seed": 1, "settings": settings, "pgd20": 50.0, "train_seconds": 99.0,
           "curves": {"epoch": [1, 2], "train_acc_adv": [20.0, 30.0], "lr": [0.05, 0.005],
                      "track_test_pgd": [10.0, 12.0], "track_train_pgd": [15.0, 20.0]}}
    (tmp_path / "results.json").write_text(json.dumps({"runs": [rec]}))
    st.reuse = [str(tmp_path / "results.json")]
    with pytest.raises(ConfigError, match=r"is reuse_only but reproduces no record of .* \(the closest, 'awp-trades', "
                                          r"differs in train_acc_adv at epoch 2 \(31.0 here, 30.0 there\)\)"):
        reused_record(st, run, settings)
    rec["curves"]["train_acc_adv"][1] = 31.0
    (tmp_path / "results.json").write_text(json.dumps({"runs": [rec]}))
    got = reused_record(st, run, settings)
    assert got["pgd20"] == 50.0 and got["method"] == "trades" and got["reused"]["method"] == "awp-trades"
    assert got["train_seconds"] == 99.0 and got["reused"]["retrain_seconds"] == 1.0  # trained as evaluated there
    assert got["curves"] == rec["curves"]  # the record's full curves, not the run's one check


def _rec(method, seed, pgd_mid, gap):
    return {"method": method, "seed": seed, "curves": {"epoch": [1, 2], "track_train_pgd": [50, 50 + gap],
                                                       "track_test_pgd": [40, 50]},
            "flatness": {"alphas": [0.05, 0.1, 0.2], "clean": [0.01, 0.02 + pgd_mid / 10, 0.2],
                         "pgd": [0.01, pgd_mid, 0.5], "clean_std": [0] * 3, "pgd_std": [0] * 3,
                         "loss_at_w": {"clean": 0.6 + seed / 10, "pgd": 0.9 + pgd_mid},
                         "settings": {"n": 500, "draws": 5, "steps": 10, "eps": 0.1}}}


def test_flatness_section_says_what_the_records_show(tmp_path):
    runs = [_rec("trades", s, 0.30 + 0.01 * s, 20 + s) for s in range(3)] + \
           [_rec("trades+1st+2nd", s, 0.50 + 0.01 * s, 30 + s) for s in range(3)]
    text = "\n".join(flatness_section(runs, ["trades", "trades+1st+2nd"]))
    assert "| trades | 3 | 0.010 ± 0.000 | 0.051 ± 0.001 | 0.200 ± 0.000 | 0.010 ± 0.000 | 0.310 ± 0.010 |" in text
    assert "| 21.00 ± 1.00 | 0.700 ± 0.100 | 1.210 ± 0.010 |" in text  # the gap, then L(w) clean and under PGD
    assert "| 31.00 ± 1.00 | 0.700 ± 0.100 | 1.410 ± 0.010 |" in text
    assert "Flattest under attack (smallest mean PGD loss increase at α = 0.1): `trades` (0.310)" in text
    r = pearson([0.30, 0.31, 0.32, 0.50, 0.51, 0.52], [20, 21, 22, 30, 31, 32])
    assert r > 0.99 and f"flatness tracks the robust generalisation gap: Pearson r = {r:+.2f}" in text
    assert "`trades+1st+2nd` vs `trades`: PGD loss increase +0.200 (outside the seed spread ±0.020): the Taylor " \
           "terms make it sharper. Both start from the same clean L(w) within the seed spread (0.700 and " \
           "0.700)." in text
    for r in runs[3:]:
        r["flatness"]["loss_at_w"]["clean"] += 0.5
    text = "\n".join(flatness_section(runs, ["trades", "trades+1st+2nd"]))
    assert "make it sharper. The increases start from a higher clean L(w), 1.200 against 0.700 (outside the seed " \
           "spread ±0.200)." in text
    assert plot_flatness_gap(runs, ["trades", "trades+1st+2nd"], tmp_path / "f.png").stat().st_size > 5000
    assert flatness_section([{k: v for k, v in r.items() if k != "flatness"} for r in runs], ["trades"]) == []
    few = "\n".join(flatness_section(runs[:2], ["trades"]))
    assert "2 runs so far: too few to say whether flatness tracks the gap" in few


@pytest.mark.slow
def test_a_reproduced_run_reuses_the_evaluation_and_adds_flatness(tmp_path):
    only = ["--only", "trades,trades + SAM"]
    first, again = tmp_path / "first", tmp_path / "again"
    checked = ("runs=[{label: trades, method: {name: trades}}, {label: trades + SAM, method: {name: trades}, "
               "minimizer: {name: sam}}]")
    assert main(["reproduce", str(STUDY), *TINY, checked, *only, "--runs-dir", str(first / "runs"), "--out",
                 str(first / "out")]) == 0
    res = json.loads((first / "out" / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in res["runs"]] == [("trades", 0), ("trades + SAM", 0)]
    for r in res["runs"]:
        f = r["flatness"]
        assert f["alphas"] == [0.05, 0.1] and len(f["pgd"]) == 2 and f["settings"]["checkpoint"] == "last"
        assert all(math.isfinite(v) for v in f["pgd"] + f["clean"]) and f["loss_at_w"]["pgd"] > 0
        assert "reused" not in r and r["check_seconds"] > 0  # measured here: its per-epoch checks' time
    assert (first / "out" / "flatness.png").exists()
    assert "## Flatness and the robust generalisation gap" in (first / "out" / "README.md").read_text()
    # retrained from scratch in another folder, reusing the first results: same curves, so the evaluation is reused
    # (`trades` as shipped: reuse_only, checked at the last epoch only, which does not change training)
    assert main(["reproduce", str(STUDY), *TINY, *only, f"reuse=[{first / 'out' / 'results.json'}]",
                 "--runs-dir", str(again / "runs"), "--out", str(again / "out")]) == 0
    res2 = json.loads((again / "out" / "results.json").read_text())
    for a, b in zip(res["runs"], res2["runs"]):
        assert b["reused"]["method"] == a["method"] and b["curves"] == a["curves"]
        assert b["check_seconds"] == a["check_seconds"]  # a reused record keeps the times of the study it comes from
        assert (b["clean"], b["pgd20"], b["last"]) == (a["clean"], a["pgd20"], a["last"])
        assert b["flatness"]["pgd"] == a["flatness"]["pgd"]  # measured again on the reproduced `last`: equal

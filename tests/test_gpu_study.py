"""The GPU study script is ready for the next GPU: its plan, estimate, packing and whole path work on a CPU."""

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_budget  # noqa: E402
import gpu_carry  # noqa: E402
import gpu_study  # noqa: E402
import gpu_study_page  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_study.sh"
VALUES = yaml.safe_load(gpu_study.STUDY.read_text())
LABELS = ["trades", "trades+1st+2nd"]


def _env():
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _script(*args, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _record(method, seed, gpu):
    """A run's eval.json as the runner writes it (numbers made up)."""
    return {"method": method, "seed": seed, "clean": 90.1, "pgd20": 75.2, "cw20": 74.3, "n": 10000, "aa": 72.5,
            "n_aa": 1000, "aa_per_attack": {"apgd-ce": 73.0}, "pgd20_on_aa_images": 75.0, "clean_on_aa_images": 90.0,
            "environment": {"torch": "2.11.0", "device": "cuda" if gpu else "cpu", "cpu threads": 8,
                            "gpu": "NVIDIA H100 80GB HBM3" if gpu else "none"},
            "best_epoch": 4, "train_seconds": 60.0, "eval_seconds": 140.0,
            "settings": {"n": 10000, "n_aa": 1000, "attacks": ["clean", "pgd20", "cw20", "aa"], "eps": 0.1,
                         "step": 0.01, "norm": "linf", "seed": 0, "checkpoint": "best",
                         "attack_eps": {"pgd20": 0.1, "cw20": 0.1, "aa": 0.1}},
            "warnings": [], "flags": [], "selection": {"split": "holdout", "n": 1000, "best": {"clean": 90, "pgd": 75}}}


def _fake_fashion_mnist(folder: Path, n_train=700, n_test=200):
    """Four gzipped IDX files of 28x28 images, the label drawn into the image (learnable, like the real ones)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c: 2 * c + 6, 4:24] += 180
        for kind, arr, magic in (("images-idx3", x, 2051), ("labels-idx1", y, 2049)):
            arr = np.asarray(arr, dtype=np.uint8)
            head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            with gzip.open(folder / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(head + arr.tobytes())
    return folder


def test_next_runs_picks_the_first_seed_missing_a_run():
    assert gpu_study.next_runs(VALUES, []) == (0, LABELS)
    done0 = [_record(m, 0, True) for m in LABELS]
    assert gpu_study.next_runs(VALUES, done0) == (1, LABELS)
    assert gpu_study.next_runs(VALUES, done0 + [_record("trades", 1, True)]) == (1, ["trades+1st+2nd"])
    every = [_record(m, s, True) for s in VALUES["seeds"] for m in LABELS]
    assert gpu_study.next_runs(VALUES, every) == (None, [])
    assert gpu_study.next_runs(VALUES, done0, seed=2) == (2, LABELS)


def test_the_epochs_are_the_most_that_fit_and_the_config_shows_the_arithmetic():
    m, a, sizes = gpu_budget.measured(), gpu_budget.Assumptions(), gpu_budget.study_sizes(VALUES)
    epochs = VALUES["base"]["optim"]["epochs"]
    assert epochs == gpu_budget.fit_epochs(m, a, sizes) >= 1
    now, more = gpu_budget.estimate(m, a, sizes), gpu_budget.estimate(m, a, sizes, epochs + 1)
    assert now["side_by_side_s"] <= gpu_budget.BUDGET_S and now["sequential_s"] <= gpu_budget.LIMIT_S
    assert more["side_by_side_s"] > gpu_budget.BUDGET_S or more["sequential_s"] > gpu_budget.LIMIT_S
    assert now["side_by_side_s"] < now["sequential_s"]  # side by side hides one run's host work
    # the inputs are the H100 measurements, not constants typed here
    assert m.step_ms == {"trades": 34.339, "trades+1st+2nd": 36.584} and 0.5 < m.check_ms < 1.5
    assert set(m.aa_overhead_ms) == set(gpu_budget.AA_PHASES) and 0 < m.compile_s < 60
    bigger = gpu_budget.estimate(m, a, {**sizes, "n_aa": 2000})
    assert bigger["runs"]["trades"]["aa"]["gpu"] == pytest.approx(2 * now["runs"]["trades"]["aa"]["gpu"])
    text = gpu_study.STUDY.read_text()
    for t in (f"one after the other 30 + {now['gpu']['trades'] + now['host']['trades']:.0f}",
              f"= {now['sequential_s']:.0f} s;", f"= {now['side_by_side_s']:.0f} s.",
              f"A {epochs + 1}th epoch would take {more['side_by_side_s']:.0f} s side by side", f"{epochs} epochs:"):
        assert t in text, t


def test_the_committed_page_says_not_yet_run_on_a_gpu_until_it_has_been():
    page = (gpu_study.PAGE_DIR / "README.md").read_text()
    records = gpu_study.read_records(gpu_study.PAGE_DIR / "results.json")
    if records:
        assert page.endswith("\n".join(gpu_study_page.seed_section(VALUES, records, False)))
    else:
        assert page == gpu_study_page.plan_page(VALUES)
        assert f"- training: {VALUES['base']['optim']['epochs']} epochs, batch 128" in page
    on_gpu = any(gpu_study_page.ran_on_gpu(r) for r in records)
    assert ("**Not yet run on a GPU" in page) == (not on_gpu)
    assert "bash benchmarks/gpu_study.sh OUT" in page


def test_the_seed_section_drops_the_note_once_a_run_was_on_a_gpu():
    cpu = "\n".join(gpu_study_page.seed_section(VALUES, [_record("trades", 0, False)], tiny=True))
    gpu = "\n".join(gpu_study_page.seed_section(VALUES, [_record("trades", 0, True)], tiny=False))
    assert "Not yet run on a GPU" in cpu and "toy size on CPU" in cpu
    assert "Not yet run on a GPU" not in gpu and "min side by side" in gpu


def test_slim_wheel_keeps_the_modules_with_a_true_record(tmp_path):
    full = tmp_path / "full" / "pkg-1.0-py3-none-any.whl"
    full.parent.mkdir()
    with zipfile.ZipFile(full, "w") as z:
        z.writestr("pkg/__init__.py", "VALUE = 7\n")
        z.writestr("pkg/examples/model_test.pt", b"\0" * 100_000)
        z.writestr("pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
        z.writestr("pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("pkg-1.0.dist-info/RECORD", "stale\n")
    slim = gpu_carry.slim_wheel(full, tmp_path / "slim")
    with zipfile.ZipFile(slim) as z:
        names = z.namelist()
        record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
        init = z.read("pkg/__init__.py")
    assert "pkg/examples/model_test.pt" not in names and "pkg/__init__.py" in names
    digest = base64.urlsafe_b64encode(hashlib.sha256(init).digest()).rstrip(b"=").decode()
    assert f"pkg/__init__.py,sha256={digest},{len(init)}" in record and "pkg-1.0.dist-info/RECORD,," in record
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(tmp_path / "site"), str(slim)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "pkg" / "__init__.py").read_text() == "VALUE = 7\n"


def test_pack_copies_the_data_and_names_the_fix_when_it_is_missing(tmp_path):
    data = _fake_fashion_mnist(tmp_path / "fm", 20, 10)
    copied = gpu_carry.copy_data(data, tmp_path / "carry" / "fashion-mnist")
    assert sorted(p.name for p in copied) == sorted(gpu_carry.IDX_FILES)
    assert gpu_carry.status(tmp_path / "carry")["data"]
    with pytest.raises(gpu_carry.PackError, match="apt-get install dataset-fashion-mnist"):
        gpu_carry.copy_data(tmp_path / "empty", tmp_path / "c2")


def test_sizes_add_the_tree_and_the_carry_against_the_limit(tmp_path):
    empty = gpu_carry.sizes(tmp_path / "none")
    assert 0 < empty["tree_mib"] == empty["total_mib"] < 64 and empty["fits"]
    (tmp_path / "big").mkdir()
    with open(tmp_path / "big" / "blob", "wb") as f:
        f.truncate(65 * 2**20)
    big = gpu_carry.sizes(tmp_path / "big")
    assert big["carry_mib"] == 65.0 and not big["fits"]


def test_the_gpu_command_is_printed_as_typed():
    call = gpu_carry.run_call(gpu_study.DEVICE_COMMAND, [".gpu_carry"], 600)
    assert call == 'bash benchmarks/gpu_study.sh "$OUT" (with .gpu_carry beside the working tree), within 600 s'
    with pytest.raises(ValueError, match="2,000 characters"):
        gpu_carry.run_call("x" * 2001)


@pytest.mark.parametrize("args, message", [
    (["--jobs", "3"], "--jobs must be 1"), (["--seed", "7"], "--seed 7 is not one of"), ([], None)])
def test_bad_arguments_stop_with_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        gpu_study.main(([str(tmp_path)] if message else []) + args)
    assert e.value.code == 2
    assert (message or "give OUT") in capsys.readouterr().err


def test_a_data_folder_without_the_four_files_stops_the_call(tmp_path):
    (tmp_path / "fm").mkdir()
    assert gpu_study.main([str(tmp_path / "out"), "--tiny", "--data", str(tmp_path / "fm")]) == 2
    assert "lacks the four Fashion-MNIST files" in (tmp_path / "out" / "study.log").read_text()


def test_without_a_gpu_the_real_run_refuses(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_study.main([str(tmp_path)]) == 2
    assert "no CUDA GPU is visible" in (tmp_path / "study.log").read_text()


def test_dry_run_prints_the_plan_the_epochs_and_an_estimate_inside_8_minutes(tmp_path):
    r = _script(tmp_path, "--dry-run", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    committed = gpu_study.read_records(gpu_study.PAGE_DIR / "results.json")
    seed, labels = gpu_study.next_runs(VALUES, committed)  # the next seed the committed page lacks
    assert plan["problems"] == [] and plan["seed"] == seed and plan["labels"] == labels and plan["jobs"] == 2
    assert plan["epochs"] == VALUES["base"]["optim"]["epochs"] == plan["epochs_that_fit"]
    assert plan["estimate"]["side_by_side_s"] <= 480 and plan["estimate"]["sequential_s"] <= 570
    assert f"epochs: {plan['epochs']} per method" in r.stdout and "one seed, side by side:" in r.stdout
    assert "2 runs validated" in r.stdout
    assert plan["gpu_command"] in r.stdout and plan["carry"]["tree_mib"] < 64


@pytest.mark.slow  # two CLI calls of taylorat reproduce
def test_render_merges_the_committed_records_into_one_page(tmp_path):
    results = tmp_path / "committed.json"
    results.write_text(json.dumps({"runs": [_record(m, 0, True) for m in LABELS]}))
    assert gpu_study.main([str(tmp_path / "out"), "--render", "--results", str(results),
                           "--work", str(tmp_path / "work")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in res["runs"]] == [(m, 0) for m in LABELS]
    assert res["command"] == "taylorat reproduce configs/studies/fashion_mnist_gpu.yaml --out " \
                             "docs/studies/fashion_mnist_gpu"
    page = (tmp_path / "out" / "README.md").read_text()
    assert "| trades | 0 | 90.10 | 75.20 | 74.30 | 72.50 |" in page and "Not yet run on a GPU" not in page
    assert "**In progress: 2 of 6 runs finished.**" in page and "## One seed per GPU call" in page


@pytest.mark.slow  # trains and evaluates two small runs, then renders
def test_tiny_runs_the_whole_path_on_cpu_and_the_next_call_adds_a_seed(tmp_path):
    data = _fake_fashion_mnist(tmp_path / "fm")
    out = tmp_path / "out"
    r = _script(out, "--tiny", "--data", data, "--work", tmp_path / "work", timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    assert {"results.json", "README.md", "study.log", "timing.json", "trades_seed0.log",
            "trades_1st_2nd_seed0.log"} == set(files)
    res = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in res["runs"]] == [(m, 0) for m in LABELS]
    for run in res["runs"]:
        assert run["n"] == 64 and run["n_aa"] == 16 and run["environment"]["device"] == "cpu"
        assert run["clean"] >= run["pgd20"] and run["clean_on_aa_images"] >= run["aa"]
    resolved = res["config"]["resolved"]
    assert resolved["model"]["name"] == "small_cnn" and resolved["optim"]["epochs"] == 2
    assert resolved["data"]["train_subset"] == 256 and resolved["device"] == "cpu"
    page = (out / "README.md").read_text()
    assert "| trades | 0 |" in page and "**Not yet run on a GPU.** The runs on this page" in page
    timing = json.loads((out / "timing.json").read_text())
    assert timing["seed"] == 0 and timing["labels"] == LABELS and timing["returncode"] == 0
    r = _script(out, "--dry-run", "--tiny", timeout=300)  # the next call would add seed 1
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert json.loads((out / "plan.json").read_text())["seed"] == 1 and "this call: seed 1:" in r.stdout


def test_the_configs_measured_time_is_the_committed_calls():
    """The study file's "Measured" lines quote the timing.json that the seed-0 call on a GPU wrote."""
    timing = json.loads((gpu_study.ROOT / "benchmarks" / "results" / "h200-2026-11-28-gpu-study-seed0"
                         / "timing.json").read_text())
    assert timing["seed"] == 0 and timing["returncode"] == 0 and not timing["tiny"]
    text = " ".join(line.lstrip("# ") for line in gpu_study.STUDY.read_text().splitlines())
    assert (f"{timing['phases']['train_eval']:.0f} s to train and evaluate both, {timing['total_s']:.0f} s for the "
            f"whole call, over the {timing['estimate']['side_by_side_s']:.0f} s estimate") in text

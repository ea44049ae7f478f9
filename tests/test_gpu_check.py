"""The GPU check script is ready for the next GPU: its dry run passes on a CPU machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.slow  # runs the benchmark and the trainer in subprocesses
def test_dry_run_prints_the_plan_and_finds_no_problem(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert not plan["problems"] and len(plan["cuda_tests"]) >= 9
    names = [s["name"] for s in plan["sections"]]
    assert names[0] == "tests" and "bench_wrn34_10" in names and "train_eval" in names
    assert sum(s["limit"] for s in plan["sections"]) <= 570  # the whole check inside one 10-minute command
    assert "time limits add up to" in r.stdout


@pytest.mark.slow
def test_without_a_gpu_the_real_run_refuses(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible: the real check would run")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU is visible" in r.stderr


def _arg(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_quick_plan_is_the_cuda_tests_and_the_goal_rows_in_4_minutes(tmp_path):
    quick = gpu_check.plan(tmp_path, quick=True)
    assert [s["name"] for s in quick] == ["tests", "bench_preact18_compile", "bench_wrn34_10_compile"]
    assert sum(s["limit"] for s in quick) <= 240
    assert "-m" in quick[0]["cmd"] and "cuda" in quick[0]["cmd"]
    for sec, model in zip(quick[1:], ["preact_resnet18", "wrn_34_10"]):
        cmd = sec["cmd"]
        assert _arg(cmd, "--models") == model and _arg(cmd, "--methods") == "trades,trades+1st+2nd"
        assert _arg(cmd, "--precision") == "bf16" and "--channels-last" in cmd
        assert _arg(cmd, "--compile") == "reduce-overhead" and _arg(cmd, "--batch") == "128"
        rounds = int(_arg(cmd, "--rounds"))  # the overhead: median of per-round ratios, an odd count
        assert rounds >= 3 and rounds % 2 == 1 and _arg(cmd, "--out") == str(tmp_path / sec["json"])
    full = {s["name"]: s for s in gpu_check.plan(tmp_path)}
    assert len(full) == 7 and full["bench_wrn34_10_compile"]["cmd"] == quick[2]["cmd"]
    rows = [{"model": "preact_resnet18", "method": "trades+1st+2nd", "precision": "bf16", "variant": "channels_last on",
             "compile": "reduce-overhead", "ms_per_iter": 29.0, "time_ratio_to_trades": 1.04}]
    assert gpu_check.verdicts(rows) == [
        "preact_resnet18 bf16 channels_last on compile=reduce-overhead: 29.0 ms/iter (goal <= 30: met)",
        "preact_resnet18 bf16 channels_last on compile=reduce-overhead: Taylor overhead 1.040 x TRADES "
        "(goal <= 1.03: NOT met)"]


@pytest.mark.slow  # the two benchmark commands at the smallest size on the CPU
def test_quick_dry_run_finds_no_problem(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--quick", "--dry-run"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["quick"] and not plan["problems"] and len(plan["sections"]) == 3
    assert 'on the GPU machine: bash benchmarks/gpu_check.sh "$OUT" --quick, within 295 s' in r.stdout

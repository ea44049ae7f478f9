"""The GPU check script is ready for the next GPU: its dry run passes on a CPU machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark and the trainer in subprocesses
ROOT = Path(__file__).resolve().parent.parent


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


def test_without_a_gpu_the_real_run_refuses(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible: the real check would run")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU is visible" in r.stderr

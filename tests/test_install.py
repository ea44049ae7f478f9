"""An installed taylorat (not an editable checkout) lists and validates the paper's tables."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_reproduce_from_a_non_editable_install(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                        str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"  # no configs/ here: everything must come from the package
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def taylorat(*args):
        return subprocess.run([sys.executable, "-m", "taylorat", *args], capture_output=True, text=True, cwd=work,
                              env=env, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import taylorat; print(taylorat.__file__)"], capture_output=True,
                           text=True, cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(target)  # the installed copy, not the checkout
    listed = taylorat("reproduce", "--list")
    assert listed.returncode == 0 and "table2" in listed.stdout and "table8" in listed.stdout
    dry = taylorat("reproduce", "table2", "--dry-run", "--seeds", "1", "--no-estimate")
    assert dry.returncode == 0, dry.stderr
    assert "# 12 runs validated" in dry.stdout and "wrn_34_10 cifar100 linf awp-trades+1st+2nd" in dry.stdout
    out = taylorat("reproduce", "table1", "--write-configs", "cfgs", "--only", "1st+2nd (η=0.2)", "--seeds", "1")
    assert out.returncode == 0, out.stderr
    written = sorted(p.relative_to(work / "cfgs").as_posix() for p in (work / "cfgs").rglob("*.yaml"))
    assert written == ["1st_2nd_eta=0.2/seed0.yaml"]
    (work / "data" / "cifar-10-batches-py").mkdir(parents=True)  # where CIFAR-10 would be (a dry run reads none)
    check = taylorat("train", "--config", "cfgs/1st_2nd_eta=0.2/seed0.yaml", "--dry-run")
    assert check.returncode == 0 and "eta" in check.stdout, check.stderr

"""The shipped examples of the Taylor loss in your own loop: plain DDP (torchrun, 2 CPU ranks) and Lightning.

Each ends with equal weights on both ranks, equal (to float tolerance) to one process on the same global
batches. The attack radius is 0 here: then the adversarial batch is the clean one on any layout, so the test
measures the data-parallel update (the attack's sharding is tested exactly in test_attacks; PGD's sign() can
turn batch-size-dependent float rounding into different pixels).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# torchrun / Lightning subprocesses; under `-n N --dist loadgroup` one at a time, in one worker (no shared port)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchrun")]
ROOT = Path(__file__).resolve().parent.parent


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       cwd=ROOT, **kw)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def same_weights(one: Path, two: Path):
    a, r0, r1 = (torch.load(p, weights_only=True) for p in (one / "rank0.pt", two / "rank0.pt", two / "rank1.pt"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "the ranks diverged"
    for k in a:
        if a[k].is_floating_point():
            err = ((a[k] - r0[k]).norm() / a[k].norm().clamp_min(1e-12)).item()
            assert err < 1e-5, f"{k}: {err:.2e} from one process"


def test_plain_ddp_example(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    run([sys.executable, "examples/ddp_loop.py", "--eps", "0", "--out", str(tmp_path / "one")])
    run(torchrun("examples/ddp_loop.py", "--eps", "0", "--out", str(tmp_path / "two")))
    same_weights(tmp_path / "one", tmp_path / "two")


def needs_lightning():
    """The Lightning example needs `taylorat[lightning]` (part of `[test]`); without it, say so and skip."""
    pytest.importorskip("lightning", reason="lightning is not installed: pip install 'taylorat[lightning]'")


def test_ddp_example_prints_the_global_batch_loss_of_one_process():
    one = run([sys.executable, "examples/ddp_loop.py", "--eps", "0"]).stdout
    two = run(torchrun("examples/ddp_loop.py", "--eps", "0")).stdout

    def losses(out):
        return [float(line.split("loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("step ")]

    assert len(losses(one)) == 3 and losses(one) == pytest.approx(losses(two), abs=2e-4), (one, two)
    assert "(global batch of 16)" in two


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_runs_as_written(example):
    """Each file in examples/ runs with its defaults, one process, as its docstring shows."""
    if example == "lightning_module.py":
        needs_lightning()
    out = run([sys.executable, f"examples/{example}"])
    assert out.returncode == 0


def test_lightning_example(tmp_path):
    needs_lightning()
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    run([sys.executable, "examples/lightning_module.py", "--eps", "0", "--out", str(tmp_path / "one")])
    run([sys.executable, "examples/lightning_module.py", "--devices", "2", "--eps", "0", "--out",
         str(tmp_path / "two")])
    same_weights(tmp_path / "one", tmp_path / "two")


def test_the_two_wrong_ways_are_refused_with_the_right_one_shown():
    out = run(torchrun(str(ROOT / "tests" / "helpers" / "wrong_ddp.py"))).stdout
    for name in ("wrapped", "module"):
        line = next(x for x in out.splitlines() if x.startswith(f"{name}:"))
        assert "REFUSED" in line and "PairForward(model) in DDP" in line, line

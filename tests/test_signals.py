"""Hard stops: SIGTERM finishes the step and checkpoints; SIGKILL loses at most the current epoch.

Both runs are resumed and must end with exactly the weights of an uninterrupted run.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from taylorat import checkpoint as ckpt

pytestmark = pytest.mark.slow  # real signals to training subprocesses

CONFIG = """
device: cpu
progress: false
checkpoints: none
log_every: 5
data: {dataset: synthetic, holdout: 10, options: {n_train: 330, n_test: 10, channels: 1, image_size: 8}}
model: {name: small_cnn}
method: {name: trades+1st+2nd, noise_std: 0.01}
attack: {eps: 0.1, step: 0.03, steps: 3}
optim: {epochs: 4, batch_size: 16, lr: 0.05}
eval: {n: 10, eps: 0.1, step: 0.03, steps: 2}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(cfg, out, *extra):
    return [sys.executable, "-m", "taylorat", "train", "--config", str(cfg), f"out_dir={out}", *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig")
    cfg = root / "cfg.yaml"
    cfg.write_text(CONFIG)
    ref = root / "reference"
    r = subprocess.run(command(cfg, ref), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return cfg, ckpt.load(ref / "last.safetensors")[0]


def start_and_signal(cfg, out, sig, delay):
    """Start a run; once epoch 1 is checkpointed, wait ``delay`` s (into epoch 2) and send ``sig``."""
    p = subprocess.Popen(command(cfg, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    last = out / "last.safetensors"
    deadline = time.time() + 300
    while not last.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be interrupted"
    time.sleep(delay)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_checkpoints_mid_epoch_and_resume_is_exact(setup, tmp_path):
    cfg, reference = setup
    out = tmp_path / "run"
    code, err = start_and_signal(cfg, out, signal.SIGTERM, 0.3)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "continue with --resume" in err
    tensors, meta = ckpt.load(out / "last.safetensors")
    assert meta["kind"] == "train_state"
    if meta.get("partial"):  # stopped inside an epoch: position and RNG saved
        assert 0 < meta["partial"]["step"] < 20 and "rng.attack" in tensors
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    r = subprocess.run(command(cfg, out, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert same_weights(ckpt.load(out / "last.safetensors")[0], reference)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert ckpt.read_meta(out / "last.prev.safetensors")["epoch"] == 3  # the fallback beside the newest


def test_sigkill_then_resume_completes_with_valid_best_and_last(setup, tmp_path):
    cfg, reference = setup
    out = tmp_path / "run"
    code, _ = start_and_signal(cfg, out, signal.SIGKILL, 0.2)
    assert code == -signal.SIGKILL
    ckpt.load(out / "last.safetensors")  # the last complete checkpoint is intact
    r = subprocess.run(command(cfg, out, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    model, meta = ckpt.load_model(out / "best.safetensors")
    assert meta["kind"] == "model" and 1 <= meta["epoch"] <= 4
    assert same_weights(ckpt.load(out / "last.safetensors")[0], reference)
    assert [int(line.split('"epoch": ')[1].split(",")[0]) for line in
            (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

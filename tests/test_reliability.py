"""Machines that misbehave: damaged checkpoints, interrupted writes, two writers, divergence, partial outputs.

Each test stands for one promise of the README's "Reliability" section (the torchrun ones are in
test_distributed.py and test_signals.py).
"""

import os
import subprocess
import sys

import pytest
import torch

from taylorat import checkpoint as ckpt
from taylorat.common import FolderLock, FolderLocked, atomic_folder
from taylorat.train import RunDirError, TrainingDiverged, train
from test_train import tiny


def flip(path, n=64):
    """Flip ``n`` bytes in the middle of a file's tensor data (the header stays valid)."""
    raw = bytearray(path.read_bytes())
    mid = len(raw) - (len(raw) - 8 - int.from_bytes(raw[:8], "little")) // 2
    raw[mid:mid + n] = bytes(b ^ 0xFF for b in raw[mid:mid + n])
    path.write_bytes(bytes(raw))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run: what every resumed run must end with."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(tiny(out, optim__epochs=3))
    return ckpt.load(out / "last.safetensors")[0]


# 1 + 2: a damaged newest checkpoint is skipped, the run goes on from the one before
def test_damaged_last_falls_back_to_prev_and_ends_exact(tmp_path, reference):
    out = tmp_path / "run"
    train(tiny(out, optim__epochs=3), stop_after=2)
    assert ckpt.read_meta(out / "last.prev.safetensors")["epoch"] == 1
    flip(out / "last.safetensors")
    messages = []
    train(tiny(out, optim__epochs=3), resume=True, log=lambda ev: messages.append(ev.get("text", "")))
    said = [m for m in messages if m.startswith("resuming")]
    assert len(said) == 1 and "after epoch 1 from last.prev.safetensors, skipping last.safetensors (is damaged" \
        in said[0], said
    assert same(ckpt.load(out / "last.safetensors")[0], reference)
    assert ckpt.load_model(out / "best.safetensors")[1]["epoch"] <= 3


def test_no_intact_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, optim__epochs=3), stop_after=2)
    flip(out / "last.safetensors")
    (out / "last.prev.safetensors").write_bytes((out / "last.prev.safetensors").read_bytes()[:-50])
    with pytest.raises(RunDirError, match="damaged run: no intact checkpoint .*last.safetensors .*last.prev") as e:
        train(tiny(out, optim__epochs=3), resume=True)
    assert "\n" not in str(e.value)


# 2: temp files of an interrupted write never block a run and are removed on resume
def test_interrupted_first_config_write_does_not_block_the_run(tmp_path, reference):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.yaml.k3j2x9.tmp").write_text("name: tin")  # killed while writing config.yaml
    train(tiny(out, optim__epochs=3), resume=True)  # what reproduce does on every rerun
    assert same(ckpt.load(out / "last.safetensors")[0], reference)
    (out / ".last.safetensors.ab12.tmp").write_bytes(os.urandom(2000))
    train(tiny(out, optim__epochs=3), resume=True)  # finished: nothing to train, the temp file goes
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# 5: divergence that stays finite stops the run, names the epoch and only a checkpoint that exists
def test_exploding_finite_loss_stops_and_is_never_best(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"exploded .*epoch 1, step \d+; lower optim.lr; no checkpoint was kept"):
        train(tiny(out, optim__epochs=2, optim__lr=1e6))
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()


def test_divergence_after_resume_checks_the_checkpoint_and_names_it(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, optim__epochs=3), stop_after=1)
    best = (out / "best.safetensors").read_bytes()
    # the same run, resumed with a bound no epoch can meet: its epoch 2 "explodes"
    with pytest.raises(TrainingDiverged) as e:
        train(tiny(out, optim__epochs=3, optim__diverge_factor=1e-6), resume=True)
    msg = str(e.value)
    assert "epoch 2" in msg and "the checkpoint it resumed from (last.safetensors) is intact" in msg
    assert f"the last kept checkpoint is {out / 'last.safetensors'} (epoch 1)" in msg and "\n" not in msg
    assert (out / "best.safetensors").read_bytes() == best  # the diverged epoch never became best


# 6: a live writer's lock
def test_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / FolderLock.NAME).write_text(f"{sleeper.pid}\n")  # a live process writes this run
        with pytest.raises(RunDirError, match=f"being written by process {sleeper.pid}") as e:
            train(tiny(out, optim__epochs=1))
        assert "\n" not in str(e.value)
    finally:
        sleeper.kill()
        sleeper.wait()
    messages = []  # the process is gone: its lock is stale
    train(tiny(out, optim__epochs=1), log=lambda ev: messages.append(ev.get("text", "")))
    assert f"took over the lock of process {sleeper.pid}, which is gone" in messages
    assert not (out / FolderLock.NAME).exists()  # released at the end


def test_lock_is_exclusive_within_and_across_processes(tmp_path):
    with FolderLock(tmp_path, "study runs folder"):
        with pytest.raises(FolderLocked, match="study runs folder .* is being written by process"):
            FolderLock(tmp_path, "study runs folder").acquire()
        code = ("import sys; from taylorat.common import FolderLock, FolderLocked\n"
                "try:\n    FolderLock(sys.argv[1]).acquire()\nexcept FolderLocked as e:\n    print(e); sys.exit(9)")
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert r.returncode == 9 and f"process {os.getpid()}" in r.stdout
    FolderLock(tmp_path).acquire().release()


# 4: several files whole or absent
@pytest.mark.parametrize("exists", [False, True])
def test_atomic_folder_is_whole_or_absent(tmp_path, exists):
    out = tmp_path / "report"
    if exists:
        out.mkdir()
        (out / "other.txt").write_text("kept")
    before = sorted(p.name for p in out.iterdir()) if exists else None
    with pytest.raises(OSError, match="disk full"):
        with atomic_folder(out) as tmp:
            (tmp / "report.json").write_text("{}")
            raise OSError("disk full")
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before
    assert [p.name for p in tmp_path.iterdir()] == (["report"] if exists else [])
    with atomic_folder(out) as tmp:
        (tmp / "report.json").write_text("{}")
        (tmp / "report.md").write_text("#")
    assert sorted(p.name for p in out.iterdir()) == (["other.txt"] if exists else []) + ["report.json", "report.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left beside it


def test_a_rank_that_cannot_join_the_group_stops_in_one_line(tmp_path, monkeypatch, capsys):
    """Under torchrun, gloo failing to connect (a restarted rank that cannot reach its peer, an endpoint out of
    reach) is exit 75 and one line naming the fix, not an internal error with a traceback."""
    import pickle

    import torch.distributed as dist

    from taylorat.cli import main
    from taylorat.train import distributed

    def refused(*a, **k):
        raise RuntimeError("Gloo connectFullMesh failed with [pair.cc:152] timed out connecting: SO_ERROR: "
                           "Connection refused, remote=[127.0.0.1]:32130\nframe #0: ...")

    monkeypatch.setattr(dist, "init_process_group", refused)
    monkeypatch.setattr(distributed, "stop_with_parent", lambda: True)  # not the test process's parent-death signal
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("device: cpu\nprogress: false\ndata: {dataset: synthetic}\nmodel: {name: small_cnn}\n")
    assert main(["train", "--config", str(cfg), f"out_dir={tmp_path / 'run'}"]) == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "rank 1 of 2: could not join the other ranks (Gloo connectFullMesh failed" in err
    assert err.rstrip().endswith("run the same command with --resume")
    assert not (tmp_path / "run").exists()  # nothing written before the group formed
    e = distributed.JoinFailed(1, 2, "x")  # crosses process boundaries (study workers) intact
    assert str(pickle.loads(pickle.dumps(e))) == str(e)

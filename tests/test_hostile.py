"""Hostile input cannot escape or exhaust: study names and labels are safe folder names, checkpoint metadata is
bounded by its tensors, every failure from the user's files, paths or machine is one line (never exit 70), and
nothing is left behind."""

import json
from pathlib import Path

import pytest
import yaml

from taylorat.cli import main

BASE = {"device": "cpu", "progress": False, "checkpoints": "none", "model": {"name": "small_cnn"},
        "data": {"dataset": "synthetic", "holdout": 10,
                 "options": {"n_train": 50, "n_test": 20, "channels": 1, "image_size": 8}},
        "attack": {"eps": 0.1, "step": 0.03, "steps": 1}, "optim": {"epochs": 1, "batch_size": 20},
        "eval": {"n": 10, "eps": 0.1, "step": 0.03, "steps": 1}}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def one_line(err: str) -> str:
    """The one line a terminal shows: progress bars redraw (``\r``) and erase themselves on it."""
    lines = [line.rsplit("\r", 1)[-1] for line in err.strip().split("\n")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


def study_file(folder: Path, name: str, labels: list[str]) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": BASE, "runs": [{"label": lab} for lab in labels],
                                    "seeds": [0], "evaluate": {"n": 10, "attacks": ["clean"]}}, allow_unicode=True))
    return path


# ------------------------------------------------------------------ study names and labels -> folders
@pytest.mark.parametrize("name", ["../../../escaped", "/some/other/folder", "a/b", "..", "a\\b", "x" * 300])
@pytest.mark.parametrize("mode", [["--dry-run", "--no-estimate"], ["--render-only"], []])
def test_a_study_name_is_never_a_path(tmp_path, monkeypatch, capsys, name, mode):
    work = tmp_path / "w" / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = study_file(tmp_path, name, ["trades"])
    before = tree(tmp_path)
    assert main(["reproduce", str(path), *mode]) == 2
    err = one_line(capsys.readouterr().err)
    assert "study name" in err and "--runs-dir" in err
    assert tree(tmp_path) == before


def test_an_absolute_name_does_not_overwrite_that_folder(tmp_path, monkeypatch, capsys):
    victim = tmp_path / "other" / "folder"
    victim.mkdir(parents=True)
    (victim / "README.md").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, str(victim), ["trades"])
    assert main(["reproduce", str(path), "--render-only"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "study name" in err and "--out" in err
    assert sorted(p.name for p in victim.iterdir()) == ["README.md"] and (victim / "README.md").read_text() == "mine\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("labels, match", [
    (["trades", ".."], "'..' gives no usable folder name"),
    (["trades", "."], "'.' gives no usable folder name"),
    (["trades", "+++"], "gives no usable folder name"),
    (["α", "alpha"], "run labels 'α' and 'alpha' share the folder name 'alpha'"),
    (["η=0.2", "eta=0.2"], "run labels 'η=0.2' and 'eta=0.2' share the folder name 'eta=0.2'"),
    (["Trades", "trades"], "run labels 'Trades' and 'trades' share the folder name"),
    (["trades", "x" * 300], "too long for a folder name (300 characters, at most 64)"),
])
@pytest.mark.parametrize("mode", [["--dry-run", "--no-estimate"], ["--render-only"]])
def test_labels_map_to_distinct_short_folders(tmp_path, monkeypatch, capsys, labels, match, mode):
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, "s", labels)
    before = tree(tmp_path)
    assert main(["reproduce", str(path), "--runs-dir", str(tmp_path / "runs"), *mode]) == 2
    assert match in one_line(capsys.readouterr().err)
    assert tree(tmp_path) == before


def test_label_folders_are_ascii_and_distinct(tmp_path):
    from taylorat.studies import study as studies

    assert studies.run_folders(["α=0.1", "η=0.2", "trades+1st+2nd σ=0.01", "é", "1st+2nd (eta=0.2)"]) == {
        "α=0.1": "alpha=0.1", "η=0.2": "eta=0.2", "trades+1st+2nd σ=0.01": "trades_1st_2nd_sigma=0.01", "é": "e",
        "1st+2nd (eta=0.2)": "1st_2nd_eta=0.2"}
    st = studies.load(study_file(tmp_path, "s", ["α", "b"]))
    assert [Path(r.config.out_dir) for r in st.runs(tmp_path / "runs")] == [tmp_path / "runs" / "alpha" / "seed0",
                                                                          tmp_path / "runs" / "b" / "seed0"]


# ------------------------------------------------------------------ checkpoint metadata, bounded by its tensors
def _write_raw(path: Path, header: bytes, body: bytes = b"") -> None:
    path.write_bytes(len(header).to_bytes(8, "little") + header + body)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """A real small checkpoint and copies whose metadata lies: ``{name: path}``."""
    from safetensors.torch import save_file

    from taylorat import checkpoint as ckpt
    from taylorat import models

    root = tmp_path_factory.mktemp("crafted")
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    tensors = ckpt.model_tensors(model)
    options = {"n_train": 50, "n_test": 20, "channels": 1, "image_size": 8}
    meta = {"kind": "model", "model": model.spec, "config": {"data": {"dataset": "synthetic", "options": options}}}
    ckpt.save(root / "good.safetensors", tensors, meta)

    def variant(name: str, **changes) -> None:
        m = json.loads(json.dumps(meta))
        for key, value in changes.items():
            node = m
            *parents, last = key.split(".")
            for p in parents:
                node = node[p]
            node[last] = value
        ckpt.save(root / f"{name}.safetensors", tensors, m)

    variant("classes_1e7", **{"model.num_classes": 10**7})
    variant("classes_1e10", **{"model.num_classes": 10**10})
    variant("n_test_1e12", **{"config.data.options.n_test": 10**12})
    variant("other_arch", **{"model.name": "wrn_16_2", "model.padding": 1})
    variant("unknown_model", **{"model.name": "resnet9000"})
    variant("unknown_option", **{"model.dropout": 0.5})
    deep = "[" * 2000 + "]" * 2000
    flat = {k: v.contiguous() for k, v in tensors.items()}
    save_file(flat, str(root / "nested.safetensors"), metadata={
        "taylorat": json.dumps({"format": ckpt.FORMAT, "version": 1, "kind": "model", "model": model.spec})[:-1]
        + f', "x": {deep}}}'})
    save_file(flat, str(root / "huge_meta.safetensors"), metadata={
        "taylorat": json.dumps({"format": ckpt.FORMAT, "version": 1, "pad": "x" * 20_000_000})})
    _write_raw(root / "nested_header.safetensors", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    return root


def test_a_real_checkpoint_still_loads(crafted):
    from taylorat import checkpoint as ckpt

    model, meta = ckpt.load_model(crafted / "good.safetensors")
    assert model.spec["num_classes"] == 10 and meta["kind"] == "model"


CRAFTED = [
    ("classes_1e7", "holds 10000000, more than its tensors imply"),
    ("classes_1e10", "holds 10000000000, more than its tensors imply"),
    ("other_arch", "does not build"),
    ("unknown_model", "unknown model 'resnet9000'"),
    ("unknown_option", "does not build"),
    ("nested", "nested more than 32 levels deep"),
    ("nested_header", "nested more than 32 levels deep"),
    ("huge_meta", "more than 16,000,000"),
]


@pytest.mark.parametrize("name, match", CRAFTED + [("n_test_1e12", "synthetic option n_test=1000000000000")])
def test_crafted_metadata_is_refused_quickly_in_one_line(crafted, tmp_path, capsys, name, match):
    import resource
    import time

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    code = main(["eval", "--checkpoint", str(crafted / f"{name}.safetensors"), "--attacks", "clean", "--n", "4",
                 "--out", str(tmp_path / "out")])
    assert time.monotonic() - start < 5
    assert code not in (0, 70)
    assert match in one_line(capsys.readouterr().err)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 1_000_000  # KiB: nothing large allocated
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, match", CRAFTED)
@pytest.mark.parametrize("command", ["export", "landscape"])
def test_crafted_metadata_is_refused_by_every_loader(crafted, tmp_path, capsys, name, match, command):
    path = str(crafted / f"{name}.safetensors")
    argv = (["export", path, "--format", "state-dict", "--out", str(tmp_path / "out")] if command == "export" else
            ["landscape", "--checkpoint", path, "--images", "1", "--steps", "3", "--out", str(tmp_path / "out")])
    code = main(argv)
    assert code not in (0, 70)
    assert match in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ one line for every failure of files, paths, machine
TINY = ["device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic", "data.holdout=10",
        "data.options={n_train: 50, n_test: 20, channels: 1, image_size: 8}", "model.name=small_cnn",
        "attack.eps=0.1", "attack.step=0.03", "attack.steps=1", "optim.epochs=1", "optim.batch_size=20",
        "eval.n=10", "eval.eps=0.1", "eval.step=0.03", "eval.steps=1"]
LONG = "n" * 300  # longer than any file system's NAME_MAX (255)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Good and bad files for every command: a finished run, a finished tiny study, and files that are wrong."""
    root = tmp_path_factory.mktemp("hostile")
    assert main(["train", f"out_dir={root / 'run'}", *TINY]) == 0
    study = study_file(root, "tiny", ["a"])
    assert main(["reproduce", str(study), "--runs-dir", str(root / "study"), "--out", str(root / "page")]) == 0
    (root / "latin1.yaml").write_bytes("optim: {epochs: 1}  # température\n".encode("latin-1"))
    (root / "latin1_study.yaml").write_bytes(study.read_text().replace("tiny", "tïny").encode("latin-1"))
    (root / "a_file").write_text("in the way\n")
    (root / "folder").mkdir()
    (root / "readonly").mkdir()
    (root / "full").mkdir()  # on a full disk
    (root / "corrupt_run").mkdir()
    (root / "corrupt_run" / "metrics.jsonl").write_text('{"epoch": 1, "lr": 0.1}\n{"epoch": 2, "lr"\n')
    (root / "binary_run").mkdir()
    (root / "binary_run" / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n\xff\xfe\x00\n')
    assert main(["reproduce", str(study), "--runs-dir", str(root / "corrupt_study"), "--out", str(root / "page2")]) == 0
    eval_json = root / "corrupt_study" / "a" / "seed0" / "eval.json"
    eval_json.write_text(eval_json.read_text()[:40])
    torch_state = root / "state.pt"
    import torch

    from taylorat import models

    torch.save(models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).state_dict(), torch_state)
    return root


CKPT = "ROOT/run/best.safetensors"
EVAL = ["eval", "--checkpoint", CKPT, "--attacks", "clean", "--n", "4", "--device", "cpu"]
LAND = ["landscape", "--checkpoint", CKPT, "--images", "1", "--steps", "3", "--device", "cpu"]
EXPORT = ["export", CKPT, "--format", "state-dict"]
IMPORT = ["import", "ROOT/state.pt", "--model", "small_cnn", "--in-channels", "1", "--image-size", "8",
          "--allow-pickle"]
STUDY = ["reproduce", "ROOT/study.yaml", "--runs-dir", "ROOT/study"]
BENCH = ["bench", "--device", "cpu", "--models", "small_cnn", "--methods", "trades", "--batch", "2", "--steps", "1",
         "--warmup", "0", "--iters", "1", "--rounds", "1"]
# (command line, what the one line says); ROOT is the fixture's folder
FILE_CASES = [
    (["train", "--config", "ROOT/latin1.yaml", "out_dir=ROOT/new", *TINY], "is not UTF-8 text"),
    (["train", "--config", "ROOT/folder", "out_dir=ROOT/new", *TINY], "not found"),
    (["train", "out_dir=ROOT/a_file", *TINY], "ROOT/a_file"),
    (["train", "out_dir=ROOT/a_file/run", *TINY], "not a folder"),
    (["train", f"out_dir=ROOT/{LONG}", *TINY], "file name too long"),
    (["train", "out_dir=ROOT/readonly/run", *TINY], "permission denied"),
    (["train", "out_dir=ROOT/full", *TINY], "no space left on the device"),
    ([*EVAL[:2], "ROOT/folder", *EVAL[3:]], "ROOT/folder"),
    ([*EVAL[:2], f"ROOT/{LONG}.safetensors", *EVAL[3:]], "ROOT/"),
    ([*EVAL, "--out", "ROOT/a_file"], "ROOT/a_file"),
    ([*EVAL, "--out", f"ROOT/{LONG}"], "file name too long"),
    ([*EVAL, "--out", "ROOT/readonly/ev"], "permission denied"),
    ([*EVAL, "--out", "ROOT/full"], "no space left on the device"),
    (["reproduce", "ROOT/latin1_study.yaml", "--dry-run", "--no-estimate"], "is not UTF-8 text"),
    (["reproduce", "ROOT/study.yaml", "--runs-dir", "ROOT/corrupt_study", "--render-only", "--out", "ROOT/new"],
     "evaluation ROOT/corrupt_study/a/seed0/eval.json is not valid JSON"),
    (["reproduce", "ROOT/study.yaml", "--runs-dir", "ROOT/corrupt_study", "--out", "ROOT/new"],
     "evaluation ROOT/corrupt_study/a/seed0/eval.json is not valid JSON"),
    ([*STUDY, "--render-only", "--out", "ROOT/a_file"], "ROOT/a_file"),
    ([*STUDY, "--render-only", "--out", f"ROOT/{LONG}"], "file name too long"),
    ([*STUDY, "--render-only", "--out", "ROOT/readonly/page"], "permission denied"),
    ([*STUDY, "--render-only", "--out", "ROOT/full"], "no space left on the device"),
    ([*LAND[:2], "ROOT/folder", *LAND[3:], "--out", "ROOT/new"], "ROOT/folder"),
    ([*LAND, "--out", "ROOT/a_file"], "ROOT/a_file"),
    ([*LAND, "--out", "ROOT/readonly/l"], "permission denied"),
    ([*EXPORT, "--out", "ROOT/a_file"], "ROOT/a_file"),
    ([*EXPORT, "--out", f"ROOT/{LONG}"], "file name too long"),
    ([*EXPORT, "--out", "ROOT/full"], "no space left on the device"),
    (["export", "ROOT/folder", "--format", "state-dict", "--out", "ROOT/new"], "ROOT/folder"),
    ([*IMPORT, "--out", "ROOT/a_file/m.safetensors"], "ROOT/a_file: already exists and is in the way"),
    ([*IMPORT, "--out", "ROOT/readonly/m.safetensors"], "permission denied"),
    ([*IMPORT, "--out", "ROOT/full/m.safetensors"], "no space left on the device"),
    (["import", "ROOT/folder", "--model", "small_cnn", "--allow-pickle", "--out", "ROOT/new.safetensors"],
     "ROOT/folder"),
    (["plot", "ROOT/corrupt_run", "--out", "ROOT/new.png"], "ROOT/corrupt_run/metrics.jsonl line 2 is not valid JSON"),
    (["plot", "ROOT/binary_run", "--out", "ROOT/new.png"], "ROOT/binary_run/metrics.jsonl is not UTF-8 text"),
    (["plot", "ROOT/run", "--out", "ROOT/folder"], "ROOT/folder"),
    (["plot", "ROOT/run", "--out", f"ROOT/{LONG}.png"], "file name too long"),
    (["plot", "ROOT/run", "--out", "ROOT/full/c.png"], "no space left on the device"),
    ([*BENCH, "--out", "ROOT/folder"], "ROOT/folder: is a folder"),
    (["demo", "--epochs", "1", "--device", "cpu", "--out", "ROOT/a_file"], "ROOT/a_file"),
]


def _id(case) -> str:
    return " ".join(case[0][:1] + [a.replace("ROOT/", "")[:24] for a in case[0][1:] if "ROOT" in a])


@pytest.mark.parametrize("argv, match", FILE_CASES, ids=[_id(c) for c in FILE_CASES])
def test_every_command_reports_bad_paths_and_files_in_one_line(hostile, monkeypatch, capsys, argv, match):
    import errno
    import os

    import taylorat.common

    root = hostile
    monkeypatch.chdir(root / "folder")
    argv = [a.replace("ROOT", str(root)) for a in argv]
    readonly, full = root / "readonly", root / "full"
    readonly.chmod(0o555)
    real_open, real_mkdir, real_fsync = os.open, os.mkdir, os.fsync

    def refuse(path, what: int) -> None:
        p = os.path.abspath(os.fspath(path))
        if p.startswith(str(readonly) + os.sep) and (os.geteuid() == 0 or what == errno.ENOSPC):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), p)  # root ignores the mode bits

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path, errno.EACCES)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        refuse(path, errno.EACCES)
        return real_mkdir(path, *args, **kwargs)

    def fake_fsync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(full)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write on a full disk names no file
        return real_fsync(fd)

    monkeypatch.setattr(taylorat.common.os, "open", fake_open)
    monkeypatch.setattr(taylorat.common.os, "mkdir", fake_mkdir)
    monkeypatch.setattr(taylorat.common.os, "fsync", fake_fsync)
    before = tree(root)
    try:
        code = main(argv)
    finally:
        readonly.chmod(0o755)
    err = one_line(capsys.readouterr().err)
    assert code not in (0, 70), err
    assert match.replace("ROOT", str(root)) in err
    assert tree(root) == before


# ------------------------------------------------------------------ AutoAttack by name: standard or the paper's script
def test_eval_configures_the_papers_autoattack_by_name(tmp_path, monkeypatch):
    import pyautoattack

    from taylorat import checkpoint as ckpt
    from taylorat import models

    made = []

    class Spy(pyautoattack.AutoAttack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def run_standard_evaluation(self, x, y, batch_size=250, **kwargs):  # the configuration is what is checked
            self.logger.info("robust accuracy after APGD-CE: 50.00% (total time 0.0 s)")
            return x.clone(), y

    monkeypatch.setattr(pyautoattack, "AutoAttack", Spy)
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, models.create("small_cnn", num_classes=10, in_channels=1, image_size=8),
                    {"config": {"data": {"dataset": "digits"}}})
    base = ["eval", "--checkpoint", str(path), "--attacks", "clean,aa", "--n", "8", "--device", "cpu"]
    assert main([*base, "--aa-version", "reference", "--out", str(tmp_path / "ref")]) == 0
    lib = made[-1]
    assert (lib.version, lib.attacks_to_run, lib.apgd.n_restarts, lib.apgd_targeted.n_restarts) == (
        "custom", ["apgd-ce", "apgd-t"], 2, 2)
    rep = json.loads((tmp_path / "ref" / "report.json").read_text())
    aa = rep["settings"]["aa"]
    assert (aa["version"], aa["attacks"], aa["restarts"]) == ("reference", ["apgd-ce", "apgd-t"], 2)
    md = (tmp_path / "ref" / "report.md").read_text()
    assert "AutoAttack version reference: apgd-ce, apgd-t, 2 restarts each" in md
    assert main([*base, "--out", str(tmp_path / "std")]) == 0  # standard stays the default (RobustBench)
    assert made[-1].version == "standard" and made[-1].attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    aa = json.loads((tmp_path / "std" / "report.json").read_text())["settings"]["aa"]
    assert aa["version"] == "standard" and "restarts" not in aa
    assert "AutoAttack version standard: apgd-ce, apgd-t, fab-t, square" in (tmp_path / "std" / "report.md").read_text()


def test_a_study_chooses_the_autoattack_version_and_standard_records_stay_as_they_were(tmp_path):
    from taylorat.studies import runner
    from taylorat.studies import study as studies
    from taylorat.train import ConfigError

    path = study_file(tmp_path, "s", ["a"])
    std = studies.load(path, ["evaluate.attacks=[clean, aa]", "evaluate.n_aa=4"])
    ref = studies.load(path, ["evaluate.attacks=[clean, aa]", "evaluate.n_aa=4", "evaluate.aa_version=reference"])
    run = std.runs(tmp_path / "runs")[0]
    assert "aa_version" not in runner._eval_settings(std, run) and "aa_version" not in std.to_dict()["evaluate"]
    assert runner._eval_settings(ref, ref.runs(tmp_path / "runs")[0])["aa_version"] == "reference"
    assert ref.to_dict()["evaluate"]["aa_version"] == "reference"
    with pytest.raises(ConfigError, match="evaluate.aa_version must be one of standard, reference"):
        studies.load(path, ["evaluate.aa_version=custom"])
    from taylorat.studies.render import _aa_version

    assert _aa_version(std) == "" and "APGD-CE + APGD-T, 2 restarts each" in _aa_version(ref)

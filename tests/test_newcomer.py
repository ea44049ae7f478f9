"""What a new user meets first: dry runs that check what a real run checks, hints that name real options,
schedules that mean what they say, ASCII names, pictures of a run."""

import argparse
import re
from pathlib import Path

import pytest

from taylorat.cli import build_parser, main
from taylorat.train import from_dict
from taylorat.train.config import Config, _all_keys
from taylorat.train.schedule import lr_at, milestone_epochs, schedule_warning

ROOT = Path(__file__).resolve().parent.parent
TINY = ["device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic", "data.holdout=10",
        "data.options={n_train: 42, n_test: 10, channels: 1, image_size: 8}", "model.name=small_cnn",
        "attack.eps=0.1", "attack.step=0.05", "attack.steps=1", "optim.epochs=2", "optim.batch_size=16",
        "eval.n=10", "eval.eps=0.1", "eval.step=0.05", "eval.steps=1"]


def test_dry_run_reports_model_data_schedule_and_out_dir(tmp_path, capsys):
    assert main(["train", "--dry-run", f"out_dir={tmp_path / 'r'}", *TINY, "optim.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "# model: small_cnn, " in out and "parameters for 1x8x8 inputs, 10 classes" in out
    assert "# data: synthetic (built in (no files))" in out
    assert "# schedule: 3 epochs, lr 0.1 for epoch 1, 0.01 for epoch 2, 0.001 for epoch 3" in out
    assert f"# out_dir: {tmp_path / 'r'}: will be created" in out and not (tmp_path / "r").exists()
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--dry-run", "--resume", f"out_dir={tmp_path / 'r'}", *TINY]) == 0
    assert "holds this run, finished (2 epochs): nothing to train" in capsys.readouterr().out


def test_dry_run_finds_fashion_mnist_on_disk_or_says_where_it_looked(tmp_path, capsys):
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"")  # located by name: a dry run reads no data
    args = ["train", "--dry-run", f"out_dir={tmp_path / 'r'}", *TINY, "data.dataset=fashion_mnist", "data.options={}",
            f"data.data_dir={folder}"]
    assert main(args) == 0
    assert f"# data: fashion_mnist (on disk: {folder})" in capsys.readouterr().out


def test_short_schedules_keep_distinct_drops_and_warn_when_they_cannot():
    assert milestone_epochs(3, [0.5, 0.75]) == [2, 3]  # not both on epoch 2 (÷100 after one epoch)
    assert [lr_at(e, 0.1, 3, [0.5, 0.75], 0.1) for e in (1, 2, 3)] == pytest.approx([0.1, 0.01, 0.001])
    assert milestone_epochs(200, [0.5, 0.75]) == [100, 150] and milestone_epochs(10, [0.5, 0.75]) == [5, 8]
    assert schedule_warning(200, [0.5, 0.75]) is None and schedule_warning(3, [0.5, 0.75]) is None
    assert "never apply" in schedule_warning(2, [0.5, 0.75])


def test_every_hint_names_a_real_option():
    """Flags and config keys that error messages and the README's bad-input table tell a user to use exist."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = {opt for p in subs.values() for a in p._actions for opt in a.option_strings}
    keys = set(_all_keys(Config()))
    sources = [p.read_text() for p in (ROOT / "src" / "taylorat").rglob("*.py")]
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Bad input")[1].split("\n## ")[0]
    hints = []
    for text in sources + [table]:
        for msg in re.findall(r"(?:raise \w+\(|return )f?\"([^\"]*)\"", text) + [table]:
            hints += re.findall(r"(?:pass|use|with|needs|set) (--[a-z][a-z-]+)", msg)
            hints += re.findall(r"(?:set|e\.g\.) ((?:data|model|method|attack|optim|eval)\.[a-z_]+)=", msg)
    assert hints, "the scan found no hints at all: the test would show nothing"
    bad = [h for h in hints if (h.startswith("--") and h not in flags) or (not h.startswith("--") and h not in keys)]
    assert not bad, f"hints naming options that do not exist: {sorted(set(bad))}"


def test_hinted_commands_run(tmp_path, capsys):
    """The data-folder hint each command prints is the spelling that command accepts."""
    args = ["train", f"out_dir={tmp_path / 'r'}", *TINY, "data.dataset=mnist", "data.options={}",
            f"data.data_dir={tmp_path / 'none'}", "data.download=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    hint = re.search(r"or set (data\.data_dir)=DIR", err)
    assert hint, err
    fm = "/usr/share/datasets/fashion-mnist"
    if Path(fm).is_dir():  # the hinted key, with the folder that holds the files, passes the dry run
        assert main(["train", "--dry-run", *args[1:-2], "data.dataset=fashion_mnist", f"{hint.group(1)}={fm}"]) == 0


def test_run_labels_and_folders_are_ascii():
    from taylorat.studies import study as studies

    st = studies.load("table1")
    assert all(label.isascii() for label in st.labels())
    assert studies.match_labels(st, ["1st+2nd (η=0.2)"]) == studies.match_labels(st, ["1st+2nd (eta=0.2)"])
    assert all(Path(r.config.out_dir).as_posix().isascii() for r in st.runs("runs"))
    assert studies.slug("trades+1st+2nd σ=0.01") == "trades_1st_2nd_sigma=0.01"
    assert studies.pretty_label("1st (eta=0.2)") == "1st (η=0.2)"
    with pytest.raises(ValueError, match="did you mean"):
        studies.match_labels(st, ["1st+2nd (eta=0.25)"])


def test_train_draws_curves_and_plot_draws_several_runs(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["train", f"out_dir={tmp_path / name}", *TINY]) == 0
        assert (tmp_path / name / "curves.png").stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "holds no metrics.jsonl" in capsys.readouterr().err


def test_eval_draws_its_chart(tmp_path):
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY]) == 0
    assert main(["eval", "--checkpoint", str(tmp_path / "r" / "best.safetensors"), "--attacks", "clean,pgd20,sweep",
                 "--n", "10", "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_config_accepts_every_key_the_docs_name():
    cfg = from_dict(overrides=["curves=false", "eval.track_test=100", "eval.track_train=50"])
    assert cfg.curves is False and cfg.eval.track_test == 100


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    import importlib

    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY, "optim.epochs=1"]) == 0
    capsys.readouterr()
    real = importlib.import_module

    def without_pyautoattack(name, package=None):
        if name.split(".")[0] == "pyautoattack":
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_pyautoattack)
    assert main(["eval", "--checkpoint", str(tmp_path / "r" / "best.safetensors"), "--attacks", "clean,aa",
                 "--n", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "taylorat: error: AutoAttack needs pyautoattack: pip install 'taylorat[aa]'"


def test_overrides_may_follow_the_options(tmp_path, capsys):
    """`taylorat reproduce STUDY --only LABEL seeds=[1]` and `train --dry-run ... key=value` both take the
    trailing key=value overrides; anything else unknown is still refused by argparse."""
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY[:-1], "--dry-run", "optim.epochs=3"]) == 0
    assert "# schedule: 3 epochs" in capsys.readouterr().out
    study = str(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml")
    assert main(["reproduce", study, "--only", "trades", "seeds=[1]", "--runs-dir", str(tmp_path / "s"),
                 "--dry-run", "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "seed 1" in out and "seed 0" not in out
    with pytest.raises(SystemExit):
        main(["train", "--dry-run", "--nonsense", *TINY])
    assert "unrecognized arguments: --nonsense" in capsys.readouterr().err


# ------------------------------------------------------------- issue 33: round two
def _idx_folder(folder: Path, n_train: int = 40, n_test: int = 12) -> Path:
    """The four Fashion-MNIST IDX files (28x28, random pixels), gzipped."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in (("train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28))),
                    ("train-labels-idx1-ubyte", np.arange(n_train) % 10),
                    ("t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28))),
                    ("t10k-labels-idx1-ubyte", np.arange(n_test) % 10)):
        magic = 2051 if a.ndim == 3 else 2049
        head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(head + a.astype(np.uint8).tobytes()))
    return folder


def _plain_state_dict(path: Path, dataset: str) -> Path:
    """A small_cnn's weights as a plain safetensors state dict (no taylorat metadata)."""
    from safetensors.torch import save_file

    from taylorat import data, models

    c, s, k = data.geometry(dataset)
    model = models.create("small_cnn", num_classes=k, in_channels=c, image_size=s)
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(path))
    return path


def test_datasets_declare_their_conventional_radius():
    from taylorat.data import conventional_eps

    assert conventional_eps("mnist") == conventional_eps("fashion_mnist") == 0.1
    assert conventional_eps("cifar10") == conventional_eps("cifar100") == conventional_eps("svhn") == 8 / 255
    assert conventional_eps("digits") == 0.2 and conventional_eps("synthetic") is None


def test_a_plain_state_dict_is_evaluated_at_its_datasets_radius_and_the_report_says_why(tmp_path, capsys):
    import json

    plain = _plain_state_dict(tmp_path / "plain.safetensors", "digits")
    base = ["eval", "--arch", "small_cnn", "--dataset", "digits", "--checkpoint", str(plain), "--n", "8",
            "--attacks", "clean,pgd20"]
    assert main([*base, "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["eps"]["pgd20"] == pytest.approx(0.2)  # digits' radius, not CIFAR's 0.031
    radius = report["settings"]["radius"]
    assert radius["source"] == "dataset" and radius["eps"] == pytest.approx(0.2)
    assert "record no radius" in radius["why"] and "digits's conventional" in radius["why"]
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "radius: 0.2 (assumed: the weights record no radius; digits's conventional l_inf radius 0.2" in md
    assert main([*base, "--eps", "0.05", "--out", str(tmp_path / "ev2")]) == 0  # the flag wins, and says so
    report = json.loads((tmp_path / "ev2" / "report.json").read_text())
    assert report["eps"]["pgd20"] == pytest.approx(0.05) and report["settings"]["radius"]["source"] == "flag"


def test_a_plain_cifar_state_dict_keeps_each_attacks_reference_radius():
    import argparse as ap

    from taylorat.checkpoint import CheckpointMeta
    from taylorat.cli.eval import _threat

    args = ap.Namespace(norm=None, eps=None, step=None)
    foreign = CheckpointMeta({"imported_from": "plain.safetensors"})
    norm, eps, step, radius = _threat(args, foreign, "cifar10")
    assert (norm, eps, step) == ("linf", None, None) and radius["source"] == "dataset"
    assert "PGD/CW 0.031, AutoAttack 8/255" in radius["why"]
    _, eps, _, radius = _threat(args, foreign, "synthetic")  # no conventional radius: the defaults
    assert eps is None and radius["source"] == "default"
    assert _threat(args, CheckpointMeta({}), "digits")[1] is None  # our own weights without a check: the defaults


def test_an_explicit_data_folder_must_hold_the_files(tmp_path, monkeypatch, capsys):
    from taylorat import data
    from taylorat.data import DatasetNotFoundError
    from taylorat.data.sets import mnist

    system = _idx_folder(tmp_path / "system")
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST_DIR", system)
    monkeypatch.chdir(tmp_path)  # no ./data here
    assert data.load("fashion_mnist", download=False).info["source"] == str(system)  # no folder given: fallback
    assert "on disk: " + str(system) in data.locate("fashion_mnist", None, download=False)
    with pytest.raises(DatasetNotFoundError, match=r"fashion_mnist not found in .*wrongdir and download=False"):
        data.load("fashion_mnist", tmp_path / "wrongdir", download=False)
    plain = _plain_state_dict(tmp_path / "plain.safetensors", "fashion_mnist")
    assert main(["eval", "--arch", "small_cnn", "--dataset", "fashion_mnist", "--checkpoint", str(plain),
                 "--data-dir", str(tmp_path / "nonexistent"), "--n", "4", "--attacks", "clean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent" in err[0] and "pass --data-dir DIR" in err[0]
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY, "data.dataset=fashion_mnist", "data.options={}",
                 f"data.data_dir={tmp_path / 'wrongdir'}", "data.download=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrongdir" in err[0] and "set data.data_dir=DIR" in err[0]
    assert main(["train", "--dry-run", f"out_dir={tmp_path / 'r'}", *TINY, "data.dataset=fashion_mnist",
                 "data.options={}"]) == 0  # the config default is no folder: the dry run finds the system copy
    assert f"# data: fashion_mnist (on disk: {system})" in capsys.readouterr().out


def test_the_run_and_the_report_name_the_files_they_read(tmp_path, capsys):
    import json

    folder = _idx_folder(tmp_path / "fm")
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY, "data.dataset=fashion_mnist", "data.options={}",
                 "data.holdout=10", f"data.data_dir={folder}", "optim.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert f"(30 training images from {folder})" in out and "1 epoch," in out and "1 epochs" not in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["data"]["source"] == str(folder)
    assert sorted(Path(f).name for f in summary["data"]["files"]) == sorted(p.name for p in folder.iterdir())
    assert main(["eval", "--checkpoint", str(tmp_path / "r" / "best.safetensors"), "--n", "4", "--attacks", "clean",
                 "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["settings"]["data"]["source"] == str(folder) and len(report["settings"]["data"]["files"]) == 4
    assert "data read: " + str(folder) in (tmp_path / "ev" / "report.md").read_text()


_NO_PYAUTOATTACK = """
import sys
sys.modules["pyautoattack"] = None  # as if taylorat[aa] were not installed
from taylorat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_eval_checks_every_attacks_extra_before_any_work(tmp_path):
    import subprocess
    import sys

    plain = _plain_state_dict(tmp_path / "plain.safetensors", "digits")
    r = subprocess.run([sys.executable, "-c", _NO_PYAUTOATTACK, "eval", "--arch", "small_cnn", "--dataset", "digits",
                        "--checkpoint", str(plain), "--attacks", "clean,pgd20,aa", "--n", "360",
                        "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "taylorat: error: AutoAttack needs pyautoattack: pip install 'taylorat[aa]'"
    assert "clean" not in r.stdout and not (tmp_path / "ev").exists()  # nothing ran, nothing written


def test_a_study_with_autoattack_checks_its_extra_before_training(tmp_path):
    import subprocess
    import sys

    study = str(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml")
    r = subprocess.run([sys.executable, "-c", _NO_PYAUTOATTACK, "reproduce", study, "--only", "trades", "seeds=[0]",
                        "--runs-dir", str(tmp_path / "s"), "--out", str(tmp_path / "page")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("taylorat: error: AutoAttack needs pyautoattack: "
                                                 "pip install 'taylorat[aa]'")
    assert not (tmp_path / "s").exists()  # no run was started


def test_check_dependencies_reads_the_attack_registry(monkeypatch):
    import sys

    from taylorat.common import MissingDependency
    from taylorat.evaluate import check_dependencies, get_attack

    assert get_attack("aa").requires == ("pyautoattack", "aa") and get_attack("pgd20").requires is None
    check_dependencies(["clean", "pgd20", "transfer"])  # nothing optional
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(MissingDependency, match=r"^AutoAttack needs pyautoattack: pip install 'taylorat\[aa\]'$"):
        check_dependencies(["clean", "aa"])


@pytest.mark.parametrize("values, overrides, message", [
    ({"optm": {"epochs": 3}}, [], "unknown config key 'optm.epochs' in CFG; did you mean 'optim.epochs'?"),
    ({"optim": {"learning_rate": 0.1}}, [],
     "unknown config key 'optim.learning_rate' in CFG; did you mean 'optim.lr'?"),
    ({"optim": {"lr_rate": 0.1}}, [], "unknown config key 'optim.lr_rate' in CFG; did you mean 'optim.lr'?"),
    ({"optimizer": {"lr": 0.1}}, [], "unknown config key 'optimizer.lr' in CFG; did you mean 'optim.lr'?"),
    ({"optimiser": {"epoch": 3}}, [], "unknown config key 'optimiser.epoch' in CFG; did you mean 'optim.epochs'?"),
    ({"optimizer": {"zzz": 3}}, [], "unknown config section 'optimizer' in CFG; did you mean 'optim'?"),
    ({"model": {"arch": "small_cnn"}}, [], "unknown config key 'model.arch' in CFG; did you mean 'model.name'?"),
    ({"optim": {"bs": 64}}, [], "unknown config key 'optim.bs' in CFG; did you mean 'optim.batch_size'?"),
    ({"optim": {"batch": 64}}, [], "unknown config key 'optim.batch' in CFG; did you mean 'optim.batch_size'?"),
    ({"optim": {"eps": 0.1}}, [], "unknown config key 'optim.eps' in CFG; did you mean 'attack.eps'?"),
    ({"epoch": 3}, [], "unknown config key 'epoch' in CFG; did you mean 'optim.epochs'?"),
    ({}, ["optim.learning_rate=0.1"], "unknown config key 'optim.learning_rate'; did you mean 'optim.lr'?"),
    ({}, ["optimizer.epochs=3"], "unknown config key 'optimizer.epochs'; did you mean 'optim.epochs'?"),
])
def test_key_suggestions_match_section_and_key_and_name_the_file(tmp_path, values, overrides, message):
    import yaml

    from taylorat.train import load
    from taylorat.train.config import ConfigError

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as e:
        load(cfg, overrides)
    assert str(e.value) == message.replace("CFG", str(cfg))


def test_curves_tell_every_quantity_apart_with_legends_outside_and_whole_epochs(tmp_path, monkeypatch):
    from taylorat.train import curves

    for table in (curves.LOSSES, curves.ACCURACIES):
        assert len({str(style) for _, _, style, _ in table}) == len(table)  # no two share a line style
        assert len({marker for *_, marker in table}) == len(table)  # nor a marker
    figures = []
    monkeypatch.setattr(curves, "write_figure", lambda fig, path: figures.append(fig) or Path(path))
    hist = [{"epoch": e, "lr": lr, "train_loss": 2.0 / e, "train_ce": 1.5, "train_kl": 0.4, "train_first": 0.2,
             "train_second": 0.1, "train_acc_clean": 50.0 + e, "train_acc_adv": 30.0 + e, "holdout_clean": 40.0,
             "holdout_pgd": 20.0 + e} for e, lr in ((1, 0.1), (2, 0.01))]
    curves.plot_histories({"a": hist, "b": hist}, tmp_path / "c.png")
    fig = figures[0]
    fig.canvas.draw()
    ax_loss, ax_acc, ax_lr = fig.axes[:3]
    for ax in (ax_loss, ax_acc, ax_lr):
        legend = ax.get_legend()
        assert legend is not None and legend.get_texts()[0].get_fontsize() >= 8
        assert legend.get_window_extent().y1 < ax.get_window_extent().y0  # below the axes, not over the data
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # whole epochs only
    assert len({(line.get_linestyle(), line.get_marker()) for line in ax_loss.get_lines()}) == 5
    steps = [p for p in ax_lr.patches if type(p).__name__ == "StepPatch"]
    assert len(steps) == 2 and list(steps[0].get_data().edges) == [0, 1, 2]  # lr drawn as steps over each epoch


def test_eval_help_and_the_readme_list_the_same_attacks(capsys):
    from taylorat.evaluate import available_attacks, get_attack

    with pytest.raises(ValueError) as e:
        get_attack("fgsm")
    readme = (ROOT / "README.md").read_text()
    assert f"| unknown attack | 2 | `{e.value}` |" in readme  # the table shows the message as it is
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"comma-separated: {', '.join(available_attacks())}" in help_text


def test_every_option_has_help_text():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in subs.items() if sp.format_help()
               for a in sp._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing, missing


def test_export_and_import_take_the_file_positionally_or_as_checkpoint(tmp_path, capsys):
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY, "optim.epochs=1"]) == 0
    best = str(tmp_path / "r" / "best.safetensors")
    assert main(["export", "--checkpoint", best, "--format", "state-dict", "--out", str(tmp_path / "a")]) == 0
    assert main(["export", best, "--format", "state-dict", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a").is_dir() and sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir())
    capsys.readouterr()
    assert main(["export", "--format", "state-dict", "--out", str(tmp_path / "c")]) == 2
    assert "give the checkpoint file" in capsys.readouterr().err
    assert main(["import", "--checkpoint", str(tmp_path / "missing.pt"), "--model", "small_cnn",
                 "--out", str(tmp_path / "m.safetensors")]) == 2  # accepted as the file: refused for being absent
    err = capsys.readouterr().err
    assert "missing.pt" in err and "give the file file" not in err
    assert main(["eval", "--checkpoint", str(tmp_path / "r"), "--n", "4"]) == 2
    assert (f"{tmp_path / 'r'} is a run folder, not a checkpoint; give one of its checkpoints, e.g. "
            f"{tmp_path / 'r' / 'best.safetensors'}") in capsys.readouterr().err


def test_the_quick_start_says_cpu_numbers_may_differ_across_machines():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    assert "may differ by a few of the 360 images" in quick and "CPU kernels" in quick


def test_dry_run_states_the_per_epoch_checks_cost(tmp_path, capsys):
    assert main(["train", "--dry-run", f"out_dir={tmp_path / 'r'}", *TINY, "eval.n=10", "eval.steps=20"]) == 0
    out = capsys.readouterr().out
    # 32 training images x (1 + 2) passes against 10 checked images x 21 passes
    assert "# per-epoch check: PGD-20 on 10 holdout images every epoch, about 219% of an epoch's training cost" in out
    assert "lower eval.n" in out


def test_resuming_with_more_epochs_says_a_finished_schedule_cannot_be_extended(tmp_path, capsys):
    assert main(["train", f"out_dir={tmp_path / 'r'}", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", f"out_dir={tmp_path / 'r'}", *TINY, "optim.epochs=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run of 2 epochs; extending a schedule to optim.epochs=4 is not supported" in err
    assert "train the longer run in another out_dir" in err and "\n" not in err

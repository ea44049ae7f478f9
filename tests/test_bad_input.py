"""Bad input stops with one line naming the fix and a non-zero exit, and corrupts nothing.

Every case runs the real command line against a finished run directory (``VICTIM``) and an
empty one (``EMPTY``) and checks that neither changed. README's "Bad input" table lists the
same messages (checked below).
"""

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "device=cpu", "progress=false", "checkpoints=none", "data.dataset=synthetic", "data.holdout=10",
    "data.options={n_train: 50, n_test: 20, channels: 1, image_size: 8}", "model.name=small_cnn",
    "attack.eps=0.1", "attack.step=0.03", "attack.steps=1", "optim.epochs=1", "optim.batch_size=20",
    "eval.n=10", "eval.eps=0.1", "eval.step=0.03", "eval.steps=1",
]


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("PWNED"),))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    victim = root / "victim"
    assert main(["train", f"out_dir={victim}", *TINY]) == 0
    (root / "empty").mkdir()
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("not a run")
    (root / "bad.yaml").write_text("optim: [1, 2\n")
    (root / "truncated.safetensors").write_bytes((victim / "best.safetensors").read_bytes()[:-64])
    save_file({"w": torch.ones(2)}, str(root / "foreign.safetensors"))
    (root / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}))
    other = models.create("wrn_16_2", num_classes=10)  # weights of another architecture...
    spec = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).spec
    ckpt.save(root / "mismatch.safetensors", ckpt.model_tensors(other), {"kind": "model", "model": spec})
    idx = root / "fmnist_partial"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b")
    return root


# (command line, exit code, message); ROOT-relative names are filled in from the fixture
CASES = [
    (["train", "out_dir=EMPTY/r", *TINY, "model.name=resnet9000"], 2, "unknown model 'resnet9000'"),
    (["train", "out_dir=EMPTY/r", *TINY, "data.dataset=imagenet"], 2, "unknown dataset 'imagenet'"),
    (["train", "out_dir=EMPTY/r", *TINY, "method.name=tradez"], 2, "method.name='tradez' is not one of"),
    (["train", "out_dir=EMPTY/r", *TINY, "attack.eps=-0.1"], 2, "attack.eps must be >= 0"),
    (["train", "out_dir=EMPTY/r", *TINY, "attack.eps=8"], 2, "exceeds the [0,1] pixel range"),
    (["train", "out_dir=EMPTY/r", *TINY, "attack.step=0"], 2, "attack.step must be > 0"),
    (["train", "out_dir=EMPTY/r", *TINY, "method.eta=1.5"], 2, "method.eta must be in [0, 1]"),
    (["train", "out_dir=EMPTY/r", *TINY, "optim.lrr=0.1"], 2, "unknown config key 'optim.lrr'; did you mean"),
    (["train", "out_dir=EMPTY/r", *TINY, "optim.epochs=ten"], 2, "optim.epochs must be an integer"),
    (["train", "out_dir=EMPTY/r", *TINY, "optim.epochs"], 2, "is not key=value"),
    (["train", "--config", "ROOT/bad.yaml"], 2, "is not valid YAML"),
    (["train", "--config", "ROOT/missing.yaml"], 2, "not found; see configs/"),
    (["train", "out_dir=EMPTY/r", *TINY, "data.dataset=cifar10", "data.data_dir=EMPTY", "data.download=false",
      "data.options={}"], 2, "cifar10 not found in"),
    (["train", "out_dir=EMPTY/r", *TINY, "data.dataset=fashion_mnist", "data.data_dir=ROOT/fmnist_partial",
      "data.options={}"], 2, "is incomplete"),
    (["train", "out_dir=VICTIM", *TINY], 2, "already holds a run; pass --resume"),
    (["train", "--resume", "out_dir=VICTIM", *TINY, "optim.lr=0.5"], 2, "holds a different run"),
    (["train", "out_dir=ROOT/foreign", *TINY], 2, "is not empty and holds no taylorat run"),
    (["train", "out_dir=EMPTY/r", *TINY, "optim.lr=1e30"], 3, "loss is not finite"),
    (["train", "--dry-run", "out_dir=EMPTY/r", *TINY, "model.name=resnet9000"], 2, "model.name: unknown model"),
    (["train", "--dry-run", "out_dir=EMPTY/r", *TINY, "data.dataset=cifar10", "data.data_dir=EMPTY",
      "data.download=false", "data.options={}"], 2, "or set data.data_dir=DIR"),
    (["train", "--dry-run", "out_dir=VICTIM", *TINY], 2, "already holds a run; pass --resume"),
    (["train", "out_dir=EMPTY/r", *TINY, "model.init=VICTIM/best.safetensors", "model.name=vgg16"], 2,
     "holds small_cnn with name='small_cnn'; this run builds name='vgg16'; set model.name=small_cnn"),
    (["train", "--dry-run", "out_dir=EMPTY/r", *TINY, "model.init=ROOT/evil.pt"], 2,
     "is a torch.save pickle; convert it once with `taylorat import"),
    (["train", "out_dir=EMPTY/r", *TINY, "model.init_head=new"], 2,
     "model.init_head=new replaces the head of a checkpoint: set model.init to one"),
    (["eval", "--checkpoint", "ROOT/truncated.safetensors"], 2, "is not a taylorat checkpoint"),
    (["eval", "--checkpoint", "ROOT/foreign.safetensors"], 2, "without taylorat metadata"),
    (["eval", "--checkpoint", "ROOT/evil.pt"], 2, "is a pickle"),
    (["eval", "--checkpoint", "ROOT/mismatch.safetensors", "--dataset", "digits"], 2, "does not fit this model"),
    (["eval", "--checkpoint", "VICTIM/best.safetensors", "--dataset", "digits", "--n", "0"], 2,
     "--n must be >= 1"),
    (["eval", "--checkpoint", "VICTIM/best.safetensors", "--dataset", "synthetic"], 2,
     "expects images of shape (B, 1, 8, 8)"),
    (["eval", "--checkpoint", "VICTIM/best.safetensors", "--attacks", "clean,fgsm"], 2, "unknown attack 'fgsm'"),
    (["eval", "--checkpoint", "VICTIM"], 2, "is a run folder, not a checkpoint; give one of its checkpoints, e.g. "),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,code,message", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input(args, code, message, files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    fresh = f"empty/r{hashlib.sha256(message.encode()).hexdigest()[:8]}"  # a fresh out_dir per case
    args = [a.replace("EMPTY/r", str(files / fresh)).replace("VICTIM", str(files / "victim"))
             .replace("EMPTY", str(files / "empty"))
             .replace("ROOT", str(files)) for a in args]
    before = {d: snapshot(files / d) for d in ("victim", "foreign")}
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("taylorat: error: "), err
    assert message in err[0]
    assert {d: snapshot(files / d) for d in ("victim", "foreign")} == before  # nothing touched
    for p in (files / "empty").rglob("*"):  # whatever a failed run left is sound
        assert not p.name.endswith(".tmp")
        if p.suffix == ".safetensors":
            ckpt.load(p)
    assert not (files / "PWNED").exists()  # the pickle's payload never ran


def test_readme_documents_every_message():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bad input")[1].split("\n## ")[0]
    missing = [m for _, _, m in CASES if m not in section]
    assert not missing, f"README's Bad input table lacks: {missing}"


def test_attack_mode_and_projection_are_checked():
    from taylorat.train import ConfigError, from_dict

    cfg = from_dict(overrides=["attack.mode=train", "attack.projection=box_then_ball"])
    assert cfg.attack.mode == "train" and cfg.attack.projection == "box_then_ball"
    for bad, msg in (("attack.mode=training", "attack.mode='training' is not one of eval, train"),
                     ("attack.projection=box", "attack.projection='box' is not one of")):
        with pytest.raises(ConfigError, match=msg):
            from_dict(overrides=[bad])


def test_every_choice_key_stops_the_command_line_with_one_line(tmp_path, capsys, monkeypatch):
    """A wrong value of any key with declared choices: exit 2, one line naming the key and its values."""
    from taylorat.train.config import choices

    monkeypatch.chdir(tmp_path)
    declared = choices()
    assert len(declared) >= 13
    for key, allowed in declared.items():
        assert main(["train", "--dry-run", f"out_dir={tmp_path}/r", f"{key}=zzz"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"taylorat: error: {key}='zzz' is not one of {', '.join(allowed)}"], err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("error, one_line", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 4096 bytes"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),  # a bug stays a bug report
])
def test_out_of_memory_is_one_line_naming_the_fix(tmp_path, capsys, monkeypatch, error, one_line):
    from taylorat.train import trainer

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(trainer, "train_step", fail)
    code = main(["train", f"out_dir={tmp_path / 'run'}", *TINY])
    err = capsys.readouterr().err
    if one_line:
        assert code == 2 and "Traceback" not in err and "internal error" not in err
        assert err.startswith("taylorat: error: out of memory in taylorat train (") and err.count("\n") == 1
        assert "lower optim.batch_size" in err and "optim.accumulate=K" in err
    else:
        assert code == 70 and "Traceback" in err and "internal error" in err
    assert not (tmp_path / "run" / ".taylorat.lock").exists()

"""Imports point one way: cli -> studies / bench -> train / evaluate / analysis -> objectives -> attacks, and every
layer may use models, data, checkpoint and the bottom helpers (common), which import nothing above them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parent.parent / "src" / "taylorat"
# what each top-level part of the package may import (besides itself)
ALLOWED = {
    "common": set(),
    "models": {"common"},
    "data": {"common"},
    "checkpoint_meta": set(),
    "checkpoint": {"common", "models", "checkpoint_meta"},
    "attacks": {"common", "models", "data", "checkpoint"},
    "objectives": {"common", "models", "data", "checkpoint", "attacks"},
    "evaluate": {"common", "models", "data", "checkpoint", "attacks"},
    "analysis": {"common", "models", "data", "checkpoint", "attacks", "evaluate"},
    "train": {"common", "models", "data", "checkpoint", "attacks", "objectives"},
    "studies": {"common", "models", "data", "checkpoint", "attacks", "objectives", "train", "evaluate", "analysis"},
    "bench": {"common", "models", "data", "checkpoint", "attacks", "objectives", "train", "evaluate", "analysis"},
    "export": {"common", "models", "data", "checkpoint", "attacks", "evaluate"},
    "cli": {"common", "models", "data", "checkpoint", "attacks", "objectives", "train", "evaluate", "analysis",
            "studies", "bench", "export", "__init__"},
    "__main__": {"cli"},
    "__init__": set(),
}


def part_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of taylorat a module imports (relative or absolute imports)."""
    rel = path.relative_to(SRC)
    package = list(rel.parts[:-1])  # the package the module lives in, below taylorat
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                names = target or [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "taylorat":
                names = node.module.split(".")[1:] or [a.name for a in node.names]
            else:
                continue
            out.add(names[0] if names[0] not in ("__version__",) else "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("taylorat."):
                    out.add(a.name.split(".")[1])
    return out


def test_imports_point_one_way():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = part_of(path)
        for other in imported_parts(path) - {me}:
            if other not in ALLOWED[me]:
                bad.append(f"{path.relative_to(SRC)} imports {other}")
    assert not bad, bad


@pytest.mark.slow
def test_eval_from_the_command_line_never_imports_the_trainer(tmp_path):
    from taylorat import checkpoint as ckpt
    from taylorat import models

    torch.manual_seed(0)
    ckpt.save_model(tmp_path / "m.safetensors", models.create("small_cnn", num_classes=10, in_channels=1,
                                                               image_size=8),
                    {"config": {"data": {"dataset": "digits"}}})
    code = ("import sys; from taylorat.cli import main; "
            f"rc = main(['eval', '--checkpoint', {str(tmp_path / 'm.safetensors')!r}, '--attacks', 'clean,pgd20', "
            "'--n', '8', '--device', 'cpu']); "
            "print(sorted(m for m in sys.modules if m.startswith(('taylorat.train', 'taylorat.objectives')))); "
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_rooms_stay_small():
    """One concept per module: no module in src/ over 400 lines, no function over 80."""
    big, long_functions = [], []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            big.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert not big, big
    assert not long_functions, long_functions

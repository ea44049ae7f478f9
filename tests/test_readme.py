"""The README's quick-start commands and API example stay true."""

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_command", ROOT / "tools" / "readme_command.py")
readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme)


def test_quick_start_has_the_two_commands():
    demo, tests = readme.command("demo-command"), readme.command("test-command")
    assert "\n" not in demo and "\n" not in tests
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("taylorat demo --out runs/demo")
    assert tests.startswith("python3 -m venv .venv")
    assert tests.endswith("python -m pytest -q -n auto --maxprocesses 8 --dist loadgroup")  # a worker per core
    assert "-e '.[test]'" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test-command" in ci and 'bash -c "$cmd"' in ci


def test_api_example_runs():
    code = readme.command("api-example")
    scope: dict = {}  # as pasted: the snippet defines everything it uses
    exec(compile(code, "README.md:api-example", "exec"), scope)  # noqa: S102 - our own README
    x = scope["loader"][-1][0]
    assert torch.isfinite(scope["loss"]) and scope["x_adv"].shape == x.shape
    assert (scope["x_adv"] - x).abs().max() <= 8 / 255 + 1e-6


def test_every_python_block_in_the_readme_runs_as_written():
    """Each ```python block of README.md is a named, tested snippet that runs in a fresh namespace."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)\n```", text, re.S)
    named = {readme.command(m): m for m in re.findall(r"<!-- ([\w-]+) -->\s*```python", text)}
    assert blocks and all(b in named for b in blocks), "a ```python block without its <!-- name --> marker"
    for code, name in named.items():
        scope: dict = {}
        exec(compile(code, f"README.md:{name}", "exec"), scope)  # noqa: S102 - our own README
        assert torch.isfinite(scope["loss"]), name


def test_any_model_example_runs():
    import pytest

    pytest.importorskip("timm")
    code = readme.command("any-model-example")
    scope: dict = {}
    exec(compile(code, "README.md:any-model-example", "exec"), scope)  # noqa: S102 - our own README
    assert torch.isfinite(scope["loss"])


def test_ddp_example_commands_are_the_tested_examples():
    lines = readme.command("ddp-example").splitlines()
    assert lines[0].startswith("torchrun --nproc_per_node 2 examples/ddp_loop.py")
    assert lines[1].startswith("python examples/lightning_module.py --devices 2")
    assert all((ROOT / line.split()[i]).is_file() for line, i in ((lines[0], 3), (lines[1], 1)))


def test_every_taylorat_command_in_the_readme_parses():
    """Each `taylorat ...` line of a bash block names a real command and real flags."""
    import re
    import shlex

    from taylorat.cli import build_parser

    parser = build_parser()
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()
                if line.strip().startswith("taylorat ")]
    assert len(commands) >= 15
    for cmd in commands:
        args = shlex.split(cmd)[1:]
        if args[0] == "bench":  # the benchmark has its own parser
            from taylorat.bench.bench import main as bench

            with pytest_raises_system_exit():
                bench(args[1:] + ["--help"])
            continue
        parser.parse_args(args)  # raises SystemExit on an unknown command or flag


class pytest_raises_system_exit:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is SystemExit and value.code == 0


def test_minimizer_example_applies_the_gradient_at_the_perturbed_weights():
    """The README's SAM loop: ``w`` after ``sam.step`` is ``w`` before it, bit for bit, and ``p.grad`` is the
    gradient at ``w + e`` (recomputed here by hand, BatchNorm statistics frozen), not the one at ``w``."""
    from taylorat.objectives import frozen_bn_stats

    code = readme.command("minimizer-example")
    assert code.count("parts = sam.step(") == 1 and code.count("opt.step()\n") == 1
    code = code.replace("parts = sam.step(", "w = [p.detach().clone() for p in model.parameters()]\nparts = sam.step(")
    scope: dict = {}
    exec(compile(code.replace("opt.step()\n", ""), "README.md:minimizer-example", "exec"), scope)  # noqa: S102
    model, outer, sam = scope["model"], scope["outer"], scope["sam"]
    assert all(torch.equal(p, v) for p, v in zip(model.parameters(), scope["w"]))
    applied = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    outer().loss.backward()  # g at w (train mode: the batch's own BN statistics)
    at_w = [p.grad.clone() for p in model.parameters()]
    params, e = sam.perturbation(model)
    model.zero_grad()
    with torch.no_grad(), frozen_bn_stats(model):
        torch._foreach_add_(params, e)
    with frozen_bn_stats(model):
        outer().loss.backward()
    assert all(torch.allclose(a, p.grad, rtol=1e-4, atol=1e-6) for a, p in zip(applied, model.parameters()))
    assert not all(torch.allclose(a, g, rtol=1e-4, atol=1e-6) for a, g in zip(applied, at_w))

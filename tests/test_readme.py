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
    assert tests.startswith("python3 -m venv .venv") and tests.endswith("python -m pytest -q")
    assert "-e '.[test]'" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test-command" in ci and 'bash -c "$cmd"' in ci


def test_api_example_runs():
    code = readme.command("api-example")
    g = torch.Generator().manual_seed(0)
    loader = [(torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))]
    scope = {"loader": loader}
    exec(compile(code, "README.md:api-example", "exec"), scope)  # noqa: S102 - our own README
    assert torch.isfinite(scope["loss"]) and scope["x_adv"].shape == (4, 3, 32, 32)
    assert (scope["x_adv"] - loader[0][0]).abs().max() <= 8 / 255 + 1e-6

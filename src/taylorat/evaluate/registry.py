"""Evaluation attacks by report name: one registry that the suite, the CLI, studies and reports read.

An evaluation attack is a function ``fn(ctx: EvalContext) -> AttackResult`` registered under the
name its row carries in every report (``pgd20``, ``aa``, ...)::

    from taylorat.attacks import PGD
    from taylorat.evaluate import AttackResult, register_attack

    @register_attack("fgsm", label="FGSM")
    def fgsm(ctx):
        attack = PGD(ctx.model, eps=ctx.eps, step=ctx.eps, steps=1, norm=ctx.norm, start="none")
        return AttackResult(ctx.masks(attack, "fgsm"), {**attack.settings(), "eps": ctx.eps})

after which ``evaluate(model, data, ["clean", "fgsm"])``, ``taylorat eval --attacks clean,fgsm``
and a study's ``evaluate.attacks`` know it, and its row appears in every report and page.

Each attack runs at its own ε (``AttackResult.settings["eps"]``): the reference's defaults are
ℓ∞ 0.031 for the PGD family (TRADES' evaluation) and 8/255 for AutoAttack (the paper's tables,
the authors' ``eval_autoattack.py``, RobustBench); ℓ2 128/255 for all. See docs/method.md §8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..attacks import correct_mask
from ..common import InputError, Registry, as_float_images, require

REFERENCE_EPS = {"linf": 0.031, "l2": 128 / 255}  # TRADES' PGD-20 / CW-20 evaluation radius
REFERENCE_STEP = {"linf": 0.003, "l2": 15 / 255}
AA_EPS = {"linf": 8 / 255, "l2": 128 / 255}  # AutoAttack as the paper's tables and RobustBench


@dataclass
class AttackResult:
    """What one attack found on the evaluated images.

    ``correct``: (N,) bool, an image counts as robust if True (None: the attack adds no row,
    like the ε-sweep). ``settings`` must hold ``eps``. ``extra``: numbers for the report's
    ``extra`` section (e.g. ``aa_per_attack``); ``warnings``: the library's own and ours.
    """

    correct: torch.Tensor | None
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class EvalContext:
    """Everything an attack needs: the model (in eval mode, float32 unless asked), the images, its ε."""

    model: nn.Module
    x: torch.Tensor  # (N, C, H, W) float in [0,1] or uint8, on any device
    y: torch.Tensor
    device: torch.device
    norm: str
    eps: float
    step: float
    seed: int
    batch_size: int
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # surrogate, cache_dir, rays_queries, ...
    eot: int = 1  # > 1 for a randomized model: gradients averaged over this many draws

    def masks(self, attack: Callable | None, desc: str, x: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image correctness after ``attack`` (None: clean), batched, with a progress bar."""
        x = self.x if x is None else x
        return correct_mask(self.model, x, self.y, attack, self.batch_size, self.device,
                            progress=desc if self.progress else None).cpu()

    def images(self) -> torch.Tensor:
        """All images as float32 in [0,1] on the evaluation device."""
        return as_float_images(self.x, self.device)


@dataclass(frozen=True)
class AttackSpec:
    """A registered evaluation attack.

    ``label``: its column title on rendered pages; ``default_eps``: ε by norm when the user
    gives none; ``norms``: the threat models it supports; ``needs``: options it requires
    (``surrogate``); ``flags``: plain-language gradient-masking checks on a finished result;
    ``row``: whether it adds an accuracy row (the sweep adds a curve instead); ``gradient``:
    whether it uses the step size; ``requires``: the optional dependency it imports, as
    ``(module, extra)`` (``("pyautoattack", "aa")``: ``pip install 'taylorat[aa]'``), checked before any work.
    """

    name: str
    fn: Callable[[EvalContext], AttackResult]
    label: str
    default_eps: dict[str, float]
    norms: tuple[str, ...] = ("linf", "l2")
    needs: tuple[str, ...] = ()
    flags: Callable[[Any], list[str]] | None = None
    row: bool = True
    help: str = ""
    requires: tuple[str, str] | None = None


ATTACKS: Registry[AttackSpec] = Registry("attack", listing="choose from")
ALIASES: dict[str, tuple[str, ...]] = {}


def register_attack(name: str, *, label: str | None = None, default_eps: dict[str, float] | None = None,
                    norms: Sequence[str] = ("linf", "l2"), needs: Sequence[str] = (),
                    flags: Callable[[Any], list[str]] | None = None, row: bool = True,
                    help: str = "", requires: tuple[str, str] | None = None) -> Callable:
    """Decorator: register ``fn(ctx) -> AttackResult`` as the evaluation attack ``name``."""
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise InputError(f"attack name {name!r} must be lowercase letters, digits and _")
    if name in ALIASES:
        raise InputError(f"attack {name!r} is already registered")
    add = ATTACKS.register(name)

    def deco(fn: Callable[[EvalContext], AttackResult]) -> Callable[[EvalContext], AttackResult]:
        add(AttackSpec(name, fn, label or name, dict(default_eps or REFERENCE_EPS), tuple(norms), tuple(needs),
                       flags, row, help or (fn.__doc__ or "").strip().split("\n")[0],
                       None if requires is None else (str(requires[0]), str(requires[1]))))
        return fn

    return deco


def unregister_attack(name: str) -> None:
    """Remove a registered attack (for tests and plug-ins that replace one)."""
    ATTACKS.unregister(name)


def register_alias(name: str, members: Sequence[str]) -> None:
    """``name`` stands for several attacks (``transfer`` = ``transfer_pgd20, transfer_cw20``)."""
    if ATTACKS.known(name):
        raise InputError(f"{name!r} is already an attack")
    ALIASES[name] = tuple(members)


def available_attacks() -> list[str]:
    """Registered attack names in registration order, then the aliases."""
    return ATTACKS.names() + list(ALIASES)


def attack_specs() -> list[AttackSpec]:
    """Every registered attack, in registration order."""
    return [ATTACKS.get(n) for n in ATTACKS.names()]


def get_attack(name: str) -> AttackSpec:
    """The registered attack ``name``; a one-line "unknown attack ...; choose from ..." error otherwise."""
    if name not in ATTACKS:
        raise ATTACKS.error(name, available_attacks())
    return ATTACKS.get(name)


def expand(names: Sequence[str]) -> list[str]:
    """Attack names with aliases expanded, duplicates dropped, every name checked."""
    out: list[str] = []
    for n in names:
        for m in ALIASES.get(n, (n,)):
            get_attack(m)
            if m not in out:
                out.append(m)
    return out


def labels() -> dict[str, str]:
    """Report name -> column title, for every attack that adds a row."""
    return {s.name: s.label for s in attack_specs() if s.row}


def check_dependencies(names: Sequence[str]) -> None:
    """Import every optional dependency the attacks ``names`` need (``AttackSpec.requires``), before any work;
    the first one missing is a one-line :class:`~taylorat.common.MissingDependency` naming its extra."""
    for name in expand(names):
        spec = get_attack(name)
        if spec.requires is not None:
            require(spec.requires[0], spec.requires[1], spec.label)


def attack_eps(name: str, norm: str, eps: float | None = None, per_attack: dict[str, float] | None = None) -> float:
    """The ε attack ``name`` runs at: ``per_attack[name]``, else ``eps``, else its default for ``norm``."""
    if per_attack and name in per_attack:
        return float(per_attack[name])
    if eps is not None:
        return float(eps)
    return get_attack(name).default_eps[norm]


def eps_from_run(norm: str, run_eps: float | None) -> float | None:
    """The ``eps`` to evaluate a run at, from its per-epoch check radius.

    The reference's PGD radius (ℓ∞ 0.031) stands for the 8/255 threat model: then every attack
    keeps its own default (PGD-20 0.031, AutoAttack 8/255), so None; any other radius (e.g.
    0.1 on Fashion-MNIST) is the threat the run trained for and every attack uses it.
    """
    if run_eps is None or abs(run_eps - REFERENCE_EPS.get(norm, float("nan"))) < 1e-12:
        return None
    return float(run_eps)

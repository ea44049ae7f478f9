"""Robustness evaluation: every attack on one fixed, recorded set of test images.

The attacks are those of :mod:`taylorat.evaluate.registry` (built in: ``clean``, ``pgd20``,
``cw20``, ``aa``, ``transfer`` = ``transfer_pgd20`` + ``transfer_cw20``, ``rays``, ``sweep``; see
:mod:`taylorat.evaluate.builtin`), each at its own ε: the PGD family at the reference's 0.031 and
AutoAttack at 8/255 on ℓ∞ unless told otherwise.

Guard rails: eval mode and float32 (``precision="bf16"`` only when asked, and then recorded),
[0,1] inputs of the model's shape, the model's mode and weights left as they were, the same
images for every attack (so a per-example worst case over attacks is reported), and flags that
say when the numbers look like gradient masking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..attacks import eval_mode
from ..common import InputError, as_float_images, check_unit_range
from . import builtin  # noqa: F401  (registers the built-in attacks)
from .registry import (
    REFERENCE_EPS,
    REFERENCE_STEP,
    EvalContext,
    attack_eps,
    attack_specs,
    check_dependencies,
    expand,
    get_attack,
)

EOT_DRAWS = 20  # as AutoAttack's rand version


@dataclass
class EvalResult:
    n: int
    results: dict[str, float]  # accuracy in % per attack
    settings: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    correct: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # per-example masks
    extra: dict[str, Any] = field(default_factory=dict)  # ADBD, AA per-attack, sweep curve
    warnings: list[str] = field(default_factory=list)  # the libraries' own and ours
    flags: list[str] = field(default_factory=list)  # signs of gradient masking
    precision: str = "fp32"
    eps: dict[str, float] = field(default_factory=dict)  # the radius each attack with a row ran at

    def worst_case(self, names: Sequence[str] | None = None) -> float:
        """Accuracy when an example counts as robust only if it survives every listed attack."""
        names = [n for n in (names or self.correct) if n != "clean"] or list(self.correct)
        mask = torch.stack([self.correct[n] for n in names]).all(0)
        return 100.0 * mask.float().mean().item()


class _Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast and returns float32 logits (explicit opt-in only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


def check_images(x: torch.Tensor, model: nn.Module) -> None:
    """Refuse images outside [0,1] (e.g. normalized ones) or of the wrong shape."""
    if hasattr(model, "check_input"):
        model.check_input(as_float_images(x[:1]))
    check_unit_range(x)


def is_deterministic(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two eval-mode forward passes give the same logits (a randomized model does not)."""
    with eval_mode(model), torch.no_grad():
        xb = as_float_images(x)
        return torch.equal(model(xb), model(xb))


def as_tensors(data: Any, n: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, description) from an ``(x, y)`` pair or a taylorat Dataset (its test split), first n."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        what = "given images"
    elif hasattr(data, "test_x") and hasattr(data, "test_y"):
        x, y = data.test_x, data.test_y
        what = f"{getattr(data, 'name', 'dataset')} test split"
    else:
        raise TypeError("data must be an (images, labels) pair or a taylorat Dataset")
    if n is not None:
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
    return x, y, f"first {len(y)} images of the {what}"


def evaluate(
    model: nn.Module,
    data: Any,
    attacks: Sequence[str] = ("clean", "pgd20", "cw20"),
    *,
    n: int | None = None,
    eps: float | None = None,
    step: float | None = None,
    norm: str = "linf",
    eps_by_attack: dict[str, float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    precision: str = "fp32",
    surrogate: nn.Module | None = None,
    surrogate_id: str = "",
    cache_dir: str | Path | None = None,
    rays_queries: int = builtin.RAYS_QUERIES,
    progress: bool = True,
    eot: int | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> EvalResult:
    """Accuracy (%) of ``model`` on ``data`` (``(x, y)`` or a Dataset's test split) under each attack.

    ε per attack: ``eps_by_attack[name]``, else ``eps`` for every attack, else the attack's own
    default for ``norm`` (ℓ∞: 0.031 for the PGD family, 8/255 for AutoAttack). ``step`` defaults
    to the reference's (0.003 on ℓ∞) at the reference radius and to ε/10 otherwise. ``transfer``
    needs a ``surrogate`` model (its examples are cached in ``cache_dir`` under ``surrogate_id``);
    extra keyword ``options`` reach attacks registered by the user (``ctx.options``).

    ``eot``: draws per gradient for a randomized model (PGD/CW average the gradient over them,
    AutoAttack runs its ``rand`` version). None: 1, or ``EOT_DRAWS`` when two forward passes of
    the model disagree, with a note in the report.

    ``log``: a line when each attack starts and when it ends (its accuracy and seconds), for a log file
    that gets no progress bar (a study's workers).
    """
    names = expand(attacks)
    options = {"surrogate": surrogate, "surrogate_id": surrogate_id, "cache_dir": cache_dir,
               "rays_queries": rays_queries, **options}
    _check_request(names, norm, precision, options, eps_by_attack)
    device = next(model.parameters()).device
    batch_size = batch_size or (500 if device.type == "cuda" else 256)
    x, y, subset = as_tensors(data, n)
    check_images(x, model)
    was_training = model.training
    target = _Autocast(model) if precision == "bf16" else model
    res = EvalResult(n=len(y), results={}, settings={"subset": {"description": subset, "n": len(y)}},
                     seconds={}, precision=precision)
    if precision == "bf16":
        res.warnings.append("evaluated under bf16 autocast on request; the reference evaluation is float32")
    if eot is not None and (isinstance(eot, bool) or not isinstance(eot, int) or eot < 1):
        raise InputError(f"eot must be an integer >= 1, got {eot!r}")
    try:
        eot = _choose_eot(model, x[: min(len(x), 16)].to(device), eot, res)
        for name in names:
            t = time.time()
            e = attack_eps(name, norm, eps, eps_by_attack)
            st = step if step is not None else (REFERENCE_STEP[norm] if e == REFERENCE_EPS[norm] else e / 10)
            if log is not None:
                log(f"{name} on {len(y)} images" + ("" if name == "clean" else f" (eps {e:g})") + " ...")
            _run_attack(name, EvalContext(target, x, y, device, norm, e, st, seed, batch_size, progress, options, eot),
                        res)
            res.seconds[name] = time.time() - t
            if log is not None:
                acc = f"{res.results[name]:.2f}" if name in res.results else "done"
                log(f"{name} on {len(y)} images: {acc} ({res.seconds[name]:.0f} s)")
    finally:
        model.train(was_training)
    res.flags = masking_flags(res)
    return res


def _check_request(names: list[str], norm: str, precision: str, options: dict[str, Any],
                   eps_by_attack: dict[str, float] | None) -> None:
    """Refuse an unknown norm or precision, an attack that does not support ``norm`` or lacks a model it
    needs (``surrogate``), and a radius for an attack that does not exist."""
    if norm not in REFERENCE_EPS:
        raise InputError(f"unknown norm {norm!r}; use linf or l2")
    if precision not in ("fp32", "bf16"):
        raise InputError(f"precision must be fp32 or bf16, got {precision!r}")
    for name in names:
        spec = get_attack(name)
        if norm not in spec.norms:
            raise InputError(f"{name} supports {', '.join(spec.norms)} only; use --norm {spec.norms[0]}")
        for need in spec.needs:
            if options.get(need) is None:
                raise InputError(f"the {name} attack needs a {need} model (--{need} CHECKPOINT)")
    for name in eps_by_attack or {}:
        get_attack(name)
    check_dependencies(names)


def _choose_eot(model: nn.Module, x: torch.Tensor, eot: int | None, res: EvalResult) -> int:
    """The draws per gradient: ``eot`` when given, else ``EOT_DRAWS`` for a model whose two forward passes on
    ``x`` disagree (randomized) and 1 otherwise; recorded in ``res`` with a warning for a randomized model."""
    randomized = not is_deterministic(model, x)
    if randomized:
        res.warnings.append("two forward passes gave different logits: the model is randomized; its accuracy "
                            "varies between runs and gradient-based attacks may be masked")
    chosen = "given"
    if eot is None:
        eot, chosen = (EOT_DRAWS, "automatically: the model is randomized") if randomized else (1, "default")
        if randomized:
            res.warnings.append(f"randomized model: PGD/CW average each gradient over {EOT_DRAWS} draws (EOT) and "
                                "AutoAttack runs its 'rand' version (APGD-CE, APGD-DLR with EOT); set eot=1 "
                                "(--eot 1) to turn this off")
    res.settings["eot"] = {"draws": eot, "chosen": chosen}
    return eot


def _run_attack(name: str, ctx: EvalContext, res: EvalResult) -> None:
    """Run one registered attack and add its accuracy, settings, radius, extra numbers and warnings to ``res``."""
    out = get_attack(name).fn(ctx)
    settings = {**out.settings, "eps": out.settings.get("eps", ctx.eps)}
    res.settings[name] = settings
    if out.correct is not None:
        res.correct[name] = out.correct.cpu()
        res.results[name] = 100.0 * out.correct.float().mean().item()
        res.eps[name] = settings["eps"]
    res.extra.update(out.extra)
    res.warnings += out.warnings


def masking_flags(res: EvalResult) -> list[str]:
    """Plain-language flags for numbers that suggest gradient masking or a weak evaluation.

    Each registered attack contributes its own checks (AutoAttack far below PGD-20, a black-box
    or hard-label attack beating PGD-20, a PGD curve that does not fall as ε grows).
    """
    flags: list[str] = []
    for spec in attack_specs():
        if spec.flags is not None:
            flags += spec.flags(res)
    return flags

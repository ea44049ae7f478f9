"""Robustness evaluation: clean, PGD-20 and CW-20 accuracy on one fixed set of test images.

Settings follow the reference evaluation (TRADES / the paper's code): l_inf eps = 0.031, step
0.003, 20 steps, uniform random start; CW-20 is the CW margin loss (κ = 50) optimised by the
same PGD core. Every attack sees the same images, in eval mode and float32, with inputs in
[0,1]; the model's mode and weights are left as they were. A randomized model (two forward
passes that disagree) is flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import CW, PGD, Attack, correct_mask, eval_mode

ATTACKS = ("clean", "pgd20", "cw20")


@dataclass
class EvalResult:
    n: int
    results: dict[str, float]  # accuracy in % per attack
    settings: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    correct: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # per-example masks
    warnings: list[str] = field(default_factory=list)

    def worst_case(self, names: Sequence[str] | None = None) -> float:
        """Accuracy when an example counts as robust only if it survives every listed attack."""
        names = [n for n in (names or self.correct) if n != "clean"] or list(self.correct)
        mask = torch.stack([self.correct[n] for n in names]).all(0)
        return 100.0 * mask.float().mean().item()


def make_attack(name: str, model: nn.Module, eps: float, step: float, norm: str, seed: int) -> Attack | None:
    """The attack named ``name`` (``clean`` -> None)."""
    if name == "clean":
        return None
    if name == "pgd20":
        return PGD(model, eps=eps, step=step, steps=20, norm=norm, seed=seed)
    if name == "cw20":
        return CW(model, eps=eps, step=step, steps=20, norm=norm, seed=seed)
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


def check_images(x: torch.Tensor, model: nn.Module) -> None:
    """Refuse images outside [0,1] (e.g. normalized ones) or of the wrong shape."""
    if hasattr(model, "check_input"):
        model.check_input(x[:1].float() if x.dtype == torch.uint8 else x[:1])
    if x.dtype != torch.uint8 and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0,1] (got [{x.min().item():.3g}, {x.max().item():.3g}]); "
                         "keep normalization inside the model")


def is_deterministic(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two eval-mode forward passes give the same logits (a randomized model does not)."""
    with eval_mode(model), torch.no_grad():
        xb = x.float() / 255 if x.dtype == torch.uint8 else x
        return torch.equal(model(xb), model(xb))


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[str] = ATTACKS,
    eps: float = 0.031,
    step: float = 0.003,
    norm: str = "linf",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Accuracy (%) of ``model`` on ``(x, y)`` under each attack in ``attacks``."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    device = next(model.parameters()).device
    check_images(x, model)
    warnings = []
    if not is_deterministic(model, x[: min(len(x), 16)].to(device)):
        warnings.append("two forward passes gave different logits: the model is randomized; its accuracy "
                        "varies between runs and gradient-based attacks may be masked")
    res = EvalResult(n=len(y), results={}, settings={}, seconds={}, warnings=warnings)
    for name in attacks:
        attack = make_attack(name, model, eps, step, norm, seed)
        t = time.time()
        masks = []
        bar = tqdm(total=len(y), desc=name, leave=False, disable=not progress, unit="img")
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            masks.append(correct_mask(model, xb, yb, attack, batch_size, device).cpu())
            bar.update(len(yb))
        bar.close()
        mask = torch.cat(masks)
        res.correct[name] = mask
        res.results[name] = 100.0 * mask.float().mean().item()
        res.settings[name] = attack.settings() if attack is not None else {"name": "clean"}
        res.seconds[name] = time.time() - t
    return res

"""Robustness evaluation: every attack on one fixed, recorded set of test images.

Attacks (names for ``attacks=[...]`` and ``--attacks``):

* ``clean``: accuracy on the unmodified images;
* ``pgd20``: PGD-20 with cross-entropy, uniform random start (reference l_inf settings:
  eps = 0.031, step 0.003; l_2: eps = 128/255, step 15/255);
* ``cw20``: the CW margin loss (κ = 50) optimised by the same PGD core;
* ``aa``: AutoAttack ``standard`` through the maintained library, fixed seed;
* ``transfer``: PGD-20 and CW-20 examples made on a surrogate model, replayed (black box);
* ``rays``: the RayS hard-label attack, and ADBD, the average l_inf distance to the decision
  boundary it finds (paper Table 7);
* ``sweep``: PGD-20 at eps × {0.5, 1, 2, 4} and at the whole [0,1] box, a gradient-masking check.

Guard rails: eval mode and float32 (``precision="bf16"`` only when asked, and then recorded),
[0,1] inputs of the model's shape, the model's mode and weights left as they were, the same
images for every attack (so a per-example worst case over attacks is reported), and flags that
say when the numbers look like gradient masking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import CW, PGD, Attack, AutoAttack, correct_mask, eval_mode
from ..attacks.rays import RayS
from .transfer import transfer_examples

ATTACKS = ("clean", "pgd20", "cw20", "aa", "transfer", "rays", "sweep")
DEFAULT_EPS = {"linf": 0.031, "l2": 128 / 255}
DEFAULT_STEP = {"linf": 0.003, "l2": 15 / 255}
SWEEP = (0.5, 1.0, 2.0, 4.0)
AA_GAP_POINTS = 4.0  # PGD-20 more than this above AutoAttack is flagged


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
        model.check_input(x[:1].float() if x.dtype == torch.uint8 else x[:1])
    if x.dtype != torch.uint8 and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0,1] (got [{x.min().item():.3g}, {x.max().item():.3g}]); "
                         "keep normalization inside the model")


def is_deterministic(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two eval-mode forward passes give the same logits (a randomized model does not)."""
    with eval_mode(model), torch.no_grad():
        xb = x.float() / 255 if x.dtype == torch.uint8 else x
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
            raise ValueError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
    return x, y, f"first {len(y)} images of the {what}"


def _masks(model, x, y, attack, batch_size, device, desc, progress) -> torch.Tensor:
    out = []
    bar = tqdm(total=len(y), desc=desc, leave=False, disable=not progress, unit="img")
    for i in range(0, len(y), batch_size):
        out.append(correct_mask(model, x[i : i + batch_size], y[i : i + batch_size], attack, batch_size, device).cpu())
        bar.update(len(y[i : i + batch_size]))
    bar.close()
    return torch.cat(out)


def _to_float(x: torch.Tensor, device) -> torch.Tensor:
    x = x.to(device)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def evaluate(
    model: nn.Module,
    data: Any,
    attacks: Sequence[str] = ("clean", "pgd20", "cw20"),
    *,
    n: int | None = None,
    eps: float | None = None,
    step: float | None = None,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int | None = None,
    precision: str = "fp32",
    surrogate: nn.Module | None = None,
    surrogate_id: str = "",
    cache_dir: str | Path | None = None,
    rays_queries: int = 10_000,
    progress: bool = True,
) -> EvalResult:
    """Accuracy (%) of ``model`` on ``data`` (``(x, y)`` or a Dataset's test split) under each attack.

    ``eps``/``step`` default to the reference settings of ``norm``. ``transfer`` needs a
    ``surrogate`` model (its examples are cached in ``cache_dir`` under ``surrogate_id``).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    if norm not in DEFAULT_EPS:
        raise ValueError(f"unknown norm {norm!r}; use linf or l2")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if "transfer" in attacks and surrogate is None:
        raise ValueError("the transfer attack needs a surrogate model (--surrogate CHECKPOINT)")
    eps = DEFAULT_EPS[norm] if eps is None else eps
    step = (DEFAULT_STEP[norm] if eps == DEFAULT_EPS[norm] else eps / 10) if step is None else step
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
    try:
        if not is_deterministic(model, x[: min(len(x), 16)].to(device)):
            res.warnings.append("two forward passes gave different logits: the model is randomized; its accuracy "
                                "varies between runs and gradient-based attacks may be masked")
        for name in attacks:
            t = time.time()
            if name in ("clean", "pgd20", "cw20"):
                attack: Attack | None = {
                    "clean": None,
                    "pgd20": PGD(target, eps=eps, step=step, steps=20, norm=norm, seed=seed),
                    "cw20": CW(target, eps=eps, step=step, steps=20, norm=norm, seed=seed),
                }[name]
                _record(res, name, _masks(target, x, y, attack, batch_size, device, name, progress),
                        attack.settings() if attack else {"name": "clean"})
            elif name == "aa":
                aa = AutoAttack(target, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
                if progress:
                    tqdm.write(f"AutoAttack ({aa.version}) on {len(y)} images ...")
                _, out = aa.run(_to_float(x, device), y.to(device))
                _record(res, "aa", out.correct.cpu(), aa.settings())
                res.extra["aa_per_attack"] = out.per_attack
                res.warnings += [f"AutoAttack: {w}" for w in out.warnings]
            elif name == "transfer":
                for base in ("pgd20", "cw20"):
                    xa, info = transfer_examples(surrogate, x, y, base, eps, step, norm, seed, batch_size,
                                                 cache_dir, surrogate_id, progress)
                    _record(res, f"transfer_{base}", _masks(target, xa, y, None, batch_size, device,
                                                            f"transfer_{base}", progress), info)
            elif name == "rays":
                if norm != "linf":
                    raise ValueError("RayS is an l_inf attack; use --norm linf")
                rays = RayS(target, eps=eps, queries=rays_queries, early_stop=False, seed=seed)
                r = rays.run(_to_float(x, device), y.to(device))
                _record(res, "rays", r.robust.cpu(), rays.settings())
                d = r.dist[r.clean_correct]
                found = torch.isfinite(d)
                # ADBD over initially-correct images (full budget, as paper Table 7); images with no
                # boundary inside the [0,1] box are counted separately instead of making it infinite
                res.extra["rays_adbd"] = d[found].mean().item() if found.any() else None
                res.extra["rays_no_boundary"] = int((~found).sum().item())
            elif name == "sweep":
                curve = []
                top = 1.0 if norm == "linf" else float(x[0].numel()) ** 0.5
                for k, e in [(k, k * eps) for k in SWEEP] + [("box", top)]:
                    a = PGD(target, eps=e, step=max(e / 10, step), steps=20, norm=norm, seed=seed)
                    m = _masks(target, x, y, a, batch_size, device, f"sweep eps={e:.3g}", progress)
                    curve.append({"eps": e, "scale": k, "pgd20": 100.0 * m.float().mean().item()})
                res.extra["sweep"] = curve
                res.settings["sweep"] = {"name": "pgd", "steps": 20, "eps": [c["eps"] for c in curve],
                                         "step": "max(eps/10, step)", "seed": seed}
            res.seconds[name] = time.time() - t
    finally:
        model.train(was_training)
    res.flags = masking_flags(res)
    return res


def _record(res: EvalResult, name: str, mask: torch.Tensor, settings: dict) -> None:
    res.correct[name] = mask
    res.results[name] = 100.0 * mask.float().mean().item()
    res.settings[name] = settings


def masking_flags(res: EvalResult) -> list[str]:
    """Plain-language flags for numbers that suggest gradient masking or a weak evaluation."""
    r, flags = res.results, []
    if "aa" in r and "pgd20" in r and r["pgd20"] - r["aa"] > AA_GAP_POINTS:
        flags.append(f"PGD-20 ({r['pgd20']:.2f}%) is {r['pgd20'] - r['aa']:.1f} points above AutoAttack "
                     f"({r['aa']:.2f}%): PGD-20 overstates robustness here; report AutoAttack, and suspect "
                     "gradient masking if the gap is large")
    for k in ("transfer_pgd20", "transfer_cw20"):
        if k in r and "pgd20" in r and r[k] < r["pgd20"] - 1.0:
            flags.append(f"the black-box {k} attack ({r[k]:.2f}%) beats white-box PGD-20 ({r['pgd20']:.2f}%): "
                         "gradients do not point where the loss rises, a classic sign of gradient masking")
    if "rays" in r and "pgd20" in r and r["rays"] < r["pgd20"] - 1.0:
        flags.append(f"the hard-label RayS attack ({r['rays']:.2f}%) beats PGD-20 ({r['pgd20']:.2f}%): "
                     "suspect gradient masking")
    curve = res.extra.get("sweep")
    if curve:
        accs = [c["pgd20"] for c in curve]
        if any(b > a + 1.0 for a, b in zip(accs, accs[1:])):
            flags.append("PGD accuracy rises as eps grows (" + ", ".join(f"{c['eps']:.3g}: {c['pgd20']:.1f}%"
                         for c in curve) + "): the attack is failing, suspect gradient masking")
        if accs[-1] > 1.0:
            flags.append(f"PGD over the whole [0,1] box leaves {accs[-1]:.1f}% accuracy (should be ~0): "
                         "the attack is not converging, suspect gradient masking")
    return flags

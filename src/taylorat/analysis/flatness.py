"""Weight-space flatness along filter-normalized random directions (Li et al., NeurIPS 2018).

For weights ``w`` a direction ``d`` is drawn per parameter tensor:

* tensors with ``dim > 1`` (conv kernels, linear weights): ``g ~ N(0, I)`` of the same shape,
  every filter (slice ``i`` along dim 0) rescaled, ``d_i = g_i · ||w_i|| / ||g_i||``;
* biases and BatchNorm affine parameters (``dim <= 1``): ``d = 0``.

With ``L(α) = mean_n CE(f_{w + α·d}(x_n), y_n)`` (clean, or on ``attack(f_{w+α·d}, x, y)`` made
against the perturbed model), ``α`` is a size relative to each filter's norm, so models of
different weight scale are compared fairly. Curves are averaged over ``draws`` directions from
a CPU generator seeded with ``seed`` (the same raw Gaussian draws for two models of one
architecture). The score is the expected loss increase ``E_d[L(α*) - L(0)]`` at
``α* = SCORE_ALPHA = 0.1`` (a 10 % perturbation of every filter) and its std over draws: smaller
means flatter. The model is evaluated in eval mode (BatchNorm running statistics untouched) and
its weights are restored bit-exactly by copying back saved tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks import PGD, eval_mode
from ..common import InputError, require
from ._common import ModelLike, check_batch, model_device, resolve_models, save_figure, write_json

DEFAULT_ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
SCORE_ALPHA = 0.1
DEFAULT_DRAWS = 5
DPI = 120

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def pgd_attack(eps: float = 0.031, step: float = 0.003, steps: int = 10, norm: str = "linf", seed: int = 0) -> AttackFn:
    """``attack(model, x, y) -> x_adv``: PGD-``steps`` with CE, built afresh for each (perturbed) model."""

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return PGD(model, eps=eps, step=step, steps=steps, norm=norm, seed=seed)(x, y)

    attack.settings = {"name": "pgd", "eps": eps, "step": step, "steps": steps, "norm": norm, "seed": seed}  # type: ignore[attr-defined]
    return attack


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One direction per named parameter (module docstring); Gaussians drawn on the CPU."""
    out = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        g = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
        w_norm = p.detach().flatten(1).norm(dim=1)
        g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
        out[name] = g * (w_norm / g_norm).view(-1, *([1] * (p.dim() - 1)))
    return out


@dataclass
class Flatness:
    """Curves over ``alphas``; arrays are (draws, len(alphas)); ``adv_*`` are None without an attack."""

    alphas: np.ndarray
    loss: np.ndarray  # clean mean CE
    acc: np.ndarray  # clean accuracy in %
    adv_loss: np.ndarray | None
    adv_acc: np.ndarray | None
    score_alpha: float
    draws: int
    seed: int
    n_images: int
    attack: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def _at(self, values: np.ndarray) -> np.ndarray:
        i = int(np.flatnonzero(np.isclose(self.alphas, self.score_alpha, rtol=0, atol=1e-12))[0])
        j = int(np.flatnonzero(self.alphas == 0.0)[0])
        return values[:, i] - values[:, j]

    @property
    def score(self) -> float:
        """E_d[L(score_alpha) - L(0)] on clean images (smaller = flatter)."""
        return float(self._at(self.loss).mean())

    @property
    def score_std(self) -> float:
        return float(self._at(self.loss).std())

    def summary(self) -> dict[str, Any]:
        def curve(v):
            return None if v is None else {"mean": v.mean(0).tolist(), "std": v.std(0).tolist()}

        out: dict[str, Any] = {
            "score_alpha": self.score_alpha,
            "loss_increase": self.score, "loss_increase_std": self.score_std,
            "alphas": self.alphas.tolist(),
            "loss": curve(self.loss), "acc": curve(self.acc),
        }
        if self.adv_loss is not None:
            d = self._at(self.adv_loss)
            out.update({"adv_loss_increase": float(d.mean()), "adv_loss_increase_std": float(d.std()),
                        "adv_loss": curve(self.adv_loss), "adv_acc": curve(self.adv_acc)})
        return out


def _evaluate(model, x, y, attack, batch_size) -> tuple[float, float, float, float]:
    """(clean loss, clean acc %, adv loss, adv acc %); adv values are nan without an attack."""
    sums = np.zeros(4)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        batches = [(0, xb)] + ([(2, attack(model, xb, yb))] if attack is not None else [])
        for k, inp in batches:
            with torch.no_grad():
                logits = model(inp).float()
            sums[k] += F.cross_entropy(logits, yb, reduction="none").double().sum().item()
            sums[k + 1] += (logits.argmax(1) == yb).sum().item()
    if attack is None:
        sums[2:] = math.nan
    n = len(x)
    return sums[0] / n, 100 * sums[1] / n, sums[2] / n, 100 * sums[3] / n


def weight_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    attack: AttackFn | None = None,
    *,
    score_alpha: float = SCORE_ALPHA,
    batch_size: int = 256,
    progress: bool = False,
) -> Flatness:
    """Loss/accuracy at ``w + α·d`` for each α and ``draws`` filter-normalized directions ``d``.

    ``0`` and ``score_alpha`` are added to ``alphas`` if missing; α = 0 is the unperturbed
    model, evaluated once. Weights are restored bit-exactly (saved copies), also on errors.
    """
    check_batch(x, y)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise InputError(f"draws must be an int >= 1, got {draws!r}")
    vals = [float(a) for a in alphas] + [0.0, float(score_alpha)]
    if not all(math.isfinite(a) and a >= 0 for a in vals):
        raise InputError(f"alphas and score_alpha must be finite numbers >= 0, got {list(alphas)}, {score_alpha}")
    grid = np.array(sorted(set(vals)), dtype=np.float64)
    device = model_device(model, x.device)
    x = x.detach().to(device, torch.float32)
    y = y.detach().to(device, torch.long)
    params = dict(model.named_parameters())
    saved = {k: p.detach().clone() for k, p in params.items()}
    res = np.zeros((4, draws, len(grid)))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=draws * int((grid > 0).sum()), desc="flatness", leave=False, disable=not progress,
               unit="point")
    try:
        with eval_mode(model), torch.autocast(device.type, enabled=False):
            base = _evaluate(model, x, y, attack, batch_size)
            for k in range(draws):
                direction = filter_normalized_direction(model, gen)
                for j, alpha in enumerate(grid):
                    if alpha == 0.0:
                        res[:, k, j] = base
                        continue
                    with torch.no_grad():
                        for name, p in params.items():
                            p.copy_(saved[name] + float(alpha) * direction[name])
                    res[:, k, j] = _evaluate(model, x, y, attack, batch_size)
                    bar.update()
                del direction
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        bar.close()
    return Flatness(alphas=grid, loss=res[0], acc=res[1],
                    adv_loss=res[2] if attack is not None else None, adv_acc=res[3] if attack is not None else None,
                    score_alpha=float(score_alpha), draws=draws, seed=seed, n_images=len(x),
                    attack=_attack_settings(attack))


def _attack_settings(attack: AttackFn | None) -> dict[str, Any] | None:
    if attack is None:
        return None
    s = getattr(attack, "settings", None)
    s = s() if callable(s) else s
    return dict(s) if isinstance(s, Mapping) else {"name": getattr(attack, "__name__", type(attack).__name__)}


def plot_flatness(results: Mapping[str, Flatness], path: str | Path, *, dpi: int = DPI) -> Path:
    """Loss (left) and accuracy (right) vs α, one colour per model, mean ± std band over draws;
    solid = clean, dashed = under the attack (if any). Agg canvas, PNG."""
    require("matplotlib", "plot", "drawing this figure")
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra [plot]

    if not results:
        raise InputError("give at least one result as {label: Flatness}")
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for c, (label, r) in enumerate(results.items()):
        colour = f"C{c % 10}"
        curves = [("clean", "-", r.loss, r.acc)]
        if r.adv_loss is not None:
            curves.append(("adv", "--", r.adv_loss, r.adv_acc))
        for kind, style, loss, acc in curves:
            for ax, v in ((ax_loss, loss), (ax_acc, acc)):
                m, s = v.mean(0), v.std(0)
                ax.plot(r.alphas, m, style, color=colour, marker="o", ms=3, label=f"{label} ({kind})")
                ax.fill_between(r.alphas, m - s, m + s, color=colour, alpha=0.15, linewidth=0)
    ax_loss.set(xlabel="α (relative filter-normalized step)", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="α (relative filter-normalized step)", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    first = next(iter(results.values()))
    fig.suptitle(f"weight-space flatness: {first.draws} filter-normalized directions, mean ± std", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def flatness_report(
    models: Mapping[str, ModelLike],
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    out_dir: str | Path = "flatness",
    attack: AttackFn | None = None,
    *,
    score_alpha: float = SCORE_ALPHA,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """``weight_flatness`` for several models (modules or checkpoint paths); writes
    ``flatness.png`` and ``flatness.json`` (settings, per label the score, its std and the
    mean/std curves). Returns the JSON dict with the results under ``"results"`` (not written)."""
    resolved = resolve_models(models, x.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, model in tqdm(resolved.items(), desc="models", leave=False, disable=not progress or len(resolved) < 2):
        results[label] = weight_flatness(model, x, y, alphas, draws, seed, attack, score_alpha=score_alpha,
                                         batch_size=batch_size, progress=progress)
    plot_flatness(results, out / "flatness.png")
    first = next(iter(results.values()))
    report = {
        "kind": "weight_flatness",
        "settings": {"alphas": first.alphas.tolist(), "draws": draws, "seed": seed, "score_alpha": score_alpha,
                     "n_images": first.n_images, "attack": first.attack,
                     "direction": "filter-normalized Gaussian (Li et al. 2018); zero for biases and BatchNorm",
                     "score": "mean over draws of L(score_alpha) - L(0), clean cross-entropy"},
        "models": {label: r.summary() for label, r in results.items()},
        "files": {"plot": "flatness.png"},
    }
    write_json(out / "flatness.json", report)
    return {**report, "results": results}

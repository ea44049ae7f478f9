"""Input-space loss landscapes (Engstrom et al. 2018; the paper's Fig. 2/3).

For an image ``x`` with label ``y`` and a classifier ``f`` (eval mode, float32):

* ``d1 = sign(∇_x CE(f(x), y))``, the direction of steepest l_inf ascent;
* ``d2 ~ Rademacher(0.5)``: every pixel ±1 with probability 1/2, drawn on the CPU from a
  generator seeded with ``seed`` (so the same images and seed give the same ``d2`` for every
  model and device, and two checkpoints are compared along the same random direction);
* ``L(a, b) = CE(f(clip(x + a·d1 + b·d2, 0, 1)), y)`` on the grid
  ``a, b ∈ linspace(-radius, radius, steps)``.

``a·d1`` and ``b·d2`` each have l_inf norm ``|a|`` and ``|b|`` (pixel units on [0,1]), so the
radius is read against the l_inf threat budget. A flat, low surface means the loss cannot be
raised much by moving along the gradient sign; a steep one shows a non-robust model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks import eval_mode
from ..common import InputError, require
from ._common import ModelLike, check_batch, model_device, resolve_models, save_figure, write_json, write_npz

DEFAULT_RADIUS = 2 * 0.031  # twice the l_inf budget eps = 0.031 (≈ 8/255): the threat ball and beyond
DEFAULT_STEPS = 21
PANEL_SIZE = (3.2, 3.0)  # inches (width, height) of one surface panel
DPI = 120


@dataclass
class Landscape:
    """Loss and correctness on a grid; ``loss[n, i, j]`` is image n at ``(a[i], b[j])``."""

    a: np.ndarray  # (steps,) magnitude along d1 = sign(∇_x loss)
    b: np.ndarray  # (steps,) magnitude along d2 ~ Rademacher(0.5)
    loss: np.ndarray  # (N, steps, steps) float64 cross-entropy
    acc: np.ndarray  # (N, steps, steps) bool, prediction correct
    clean_loss: np.ndarray  # (N,) loss at a = b = 0
    labels: np.ndarray  # (N,) the labels y
    radius: float
    steps: int
    seed: int
    clip: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return {"radius": self.radius, "steps": self.steps, "seed": self.seed, "clip": self.clip,
                "n_images": int(self.loss.shape[0]), "d1": "sign(grad_x CE)", "d2": "Rademacher(0.5)",
                "loss": "cross-entropy", **self.extra}

    def summary(self) -> list[dict[str, float]]:
        """Per image: centre, max and mean loss over the grid, flatness = mean |L - L(0,0)|,
        and the fraction of grid points still classified correctly."""
        out = []
        for n in range(self.loss.shape[0]):
            grid, centre = self.loss[n], float(self.clean_loss[n])
            out.append({
                "index": n,
                "label": int(self.labels[n]),
                "centre_loss": centre,
                "max_loss": float(grid.max()),
                "mean_loss": float(grid.mean()),
                "flatness": float(np.abs(grid - centre).mean()),
                "grid_accuracy": float(self.acc[n].mean()),
            })
        return out


def grid(radius: float, steps: int) -> np.ndarray:
    """``linspace(-radius, radius, steps)``, made exactly antisymmetric (the middle of an odd grid is 0.0)."""
    g = np.linspace(-radius, radius, steps, dtype=np.float64)
    return (g - g[::-1]) / 2


def rademacher(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A float32 ±1 tensor, each entry +1 with probability 1/2, from a CPU generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)


def sign_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sign(∇_x CE(f(x), y))`` per image (the batch-summed loss has per-image gradients).
    Uses the model in its current mode; no parameter gradients are accumulated."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, [x])
    return g.sign()


def _check(radius: float, steps: int) -> None:
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise InputError(f"radius must be a finite number > 0 (l_inf, in [0,1] pixel units), got {radius!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise InputError(f"steps must be an int >= 2 (odd to include the centre), got {steps!r}")


def input_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: float = DEFAULT_RADIUS,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    clip: bool = True,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> Landscape:
    """The loss surface ``L(a, b)`` around each of the N images (module docstring).

    Grid points of all images are evaluated ``batch_size`` at a time. The model runs in eval
    mode and float32; its previous mode is restored and its weights are not touched.
    """
    _check(radius, steps)
    check_batch(x, y)
    device = model_device(model, x.device)
    x = x.detach().to(device, torch.float32)
    y = y.detach().to(device, torch.long)
    a, b = grid(radius, steps), grid(radius, steps)
    n_img, n_grid = len(x), steps * steps
    loss = torch.empty(n_img * n_grid, dtype=torch.float64)
    acc = torch.empty(n_img * n_grid, dtype=torch.bool)
    d2 = rademacher(tuple(x.shape), seed).to(device)
    ga = torch.tensor(a, dtype=torch.float32, device=device).repeat_interleave(steps)  # a[i] for flat i*steps+j
    gb = torch.tensor(b, dtype=torch.float32, device=device).repeat(steps)  # b[j]
    view = (-1,) + (1,) * (x.dim() - 1)
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        d1 = sign_gradient(model, x, y)
        with torch.no_grad():
            clean = F.cross_entropy(model(x).float(), y, reduction="none").double().cpu()
            total = n_img * n_grid
            for start in tqdm(range(0, total, batch_size), desc="landscape", leave=False, disable=not progress,
                              unit="batch"):
                idx = torch.arange(start, min(start + batch_size, total), device=device)
                n, g = idx // n_grid, idx % n_grid
                pts = x[n] + ga[g].view(view) * d1[n] + gb[g].view(view) * d2[n]
                if clip:
                    pts = pts.clamp(0.0, 1.0)
                logits = model(pts).float()
                loss[start:start + len(idx)] = F.cross_entropy(logits, y[n], reduction="none").double().cpu()
                acc[start:start + len(idx)] = (logits.argmax(1) == y[n]).cpu()
    shape = (n_img, steps, steps)
    return Landscape(a=a, b=b, loss=loss.view(shape).numpy(), acc=acc.view(shape).numpy(),
                     clean_loss=clean.numpy(), labels=y.cpu().numpy(), radius=float(radius), steps=steps,
                     seed=seed, clip=clip)


def plot_landscapes(
    landscapes: Mapping[str, Landscape],
    path: str | Path,
    zlim: tuple[float, float] | None = None,
    *,
    dpi: int = DPI,
) -> Path:
    """3-D loss surfaces laid out like the paper's Fig. 2: one row per label (checkpoint), one
    column per image, one z-scale (``zlim``, default ``(min(0, min L), max L)``) for all panels.

    The figure is exactly ``PANEL_SIZE`` inches per panel at ``dpi``, rendered with the Agg
    canvas (headless, no pyplot state). Returns the path.
    """
    require("matplotlib", "plot", "drawing this figure")
    from matplotlib import cm  # noqa: PLC0415 - optional extra [plot]
    from matplotlib.colors import Normalize  # noqa: PLC0415 - optional extra [plot]
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra [plot]
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional extra [plot]
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401, PLC0415  registers the 3-D projection

    if not landscapes:
        raise InputError("give at least one landscape as {label: Landscape}")
    rows, cols = len(landscapes), max(ls.loss.shape[0] for ls in landscapes.values())
    if zlim is None:
        lo = min(0.0, min(float(ls.loss.min()) for ls in landscapes.values()))
        hi = max(float(ls.loss.max()) for ls in landscapes.values())
        zlim = (lo, hi if hi > lo else lo + 1.0)
    norm = Normalize(*zlim)
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows))
    for r, (label, ls) in enumerate(landscapes.items()):
        A, B = np.meshgrid(ls.a, ls.b, indexing="ij")
        for c in range(ls.loss.shape[0]):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1, projection="3d")
            ax.plot_surface(A, B, ls.loss[c], cmap=cm.viridis, norm=norm, linewidth=0, antialiased=True)
            ax.set_zlim(*zlim)
            ax.set_title(f"{label} · image {c} (y={int(ls.labels[c])})", fontsize=8)
            ax.set_xlabel("sign-gradient dir.", fontsize=7, labelpad=-2)
            ax.set_ylabel("Rademacher dir.", fontsize=7, labelpad=-2)
            ax.set_zlabel("loss", fontsize=7, labelpad=-2)
            ax.tick_params(labelsize=6, pad=0)
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_major_locator(MaxNLocator(4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.04, top=0.92, wspace=0.05, hspace=0.15)
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def landscape_report(
    models: Mapping[str, ModelLike],
    x: torch.Tensor,
    y: torch.Tensor,
    radius: float = DEFAULT_RADIUS,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    out_dir: str | Path = "landscape",
    *,
    clip: bool = True,
    zlim: tuple[float, float] | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """Landscapes of several models (modules or checkpoint paths) on the same images and d2.

    Writes ``landscape.png`` (``plot_landscapes``), ``landscapes.npz`` (``a``, ``b``, ``y``,
    ``labels`` and per label ``<label>/loss``, ``<label>/acc``, ``<label>/clean_loss``) and
    ``landscape.json`` (settings; per label and image: centre, max and mean loss, flatness =
    mean |L - L(0,0)| over the grid, grid accuracy; and their means). Returns the JSON dict
    with the landscapes under ``"landscapes"`` (not written).
    """
    resolved = resolve_models(models, x.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lands = {}
    for label, model in tqdm(resolved.items(), desc="models", leave=False, disable=not progress or len(resolved) < 2):
        lands[label] = input_landscape(model, x, y, radius, steps, seed, clip, batch_size=batch_size,
                                       progress=progress)
    plot_landscapes(lands, out / "landscape.png", zlim)
    first = next(iter(lands.values()))
    arrays: dict[str, np.ndarray] = {"a": first.a, "b": first.b, "y": first.labels,
                                     "labels": np.array(list(lands), dtype=str)}
    for label, ls in lands.items():
        arrays.update({f"{label}/loss": ls.loss, f"{label}/acc": ls.acc, f"{label}/clean_loss": ls.clean_loss})
    write_npz(out / "landscapes.npz", arrays)
    per_model = {}
    for label, ls in lands.items():
        images = ls.summary()
        keys = ("centre_loss", "max_loss", "mean_loss", "flatness", "grid_accuracy")
        per_model[label] = {"images": images, "mean": {k: float(np.mean([im[k] for im in images])) for k in keys}}
    report = {"kind": "input_landscape", "settings": first.settings(), "models": per_model,
              "files": {"plot": "landscape.png", "grids": "landscapes.npz"}}
    write_json(out / "landscape.json", report)
    return {**report, "landscapes": lands}

"""Accuracy of a model on (optionally attacked) images, batched, in eval mode and float32."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..common import as_float_images
from .attack import eval_mode


def correct_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: str | None = None,
) -> torch.Tensor:
    """Bool tensor (on x's device): whether each example is classified correctly after ``attack``.

    ``x`` holds [0,1] images (float or uint8, converted per batch). Per-example results let a
    report take the worst case over several attacks. ``progress``: a progress bar with this label.
    """
    if device is None:
        device = next(model.parameters()).device
    out = []
    bar = tqdm(total=len(x), desc=progress, unit="img", leave=False, disable=progress is None, dynamic_ncols=True)
    with eval_mode(model), torch.autocast(torch.device(device).type, enabled=False):
        for i in range(0, len(x), batch_size):
            xb = as_float_images(x[i : i + batch_size], device)
            yb = y[i : i + batch_size].to(device)
            if attack is not None:
                xb = attack(xb, yb)
            with torch.no_grad():
                out.append(model(xb).argmax(1) == yb)
            bar.update(len(yb))
    bar.close()
    return torch.cat(out).to(x.device) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(model, x, y, attack=None, batch_size: int = 256) -> float:
    """Accuracy in percent."""
    mask = correct_mask(model, x, y, attack, batch_size)
    return 100.0 * mask.float().mean().item() if len(mask) else float("nan")

"""Randomized weights for the inner maximisation: the attack runs on ``w + u``, ``u ~ N(0, σ²)``.

One sample ``u`` per minibatch (paper Alg. 1; docs/method.md §2). Scopes: ``conv`` (every convolution weight, the
authors' code, σ = 1e-4), ``weights`` (convolution and linear weights), ``all`` (every
parameter) or ``none``. The weights are restored by copying the saved values back, so they are
bit-for-bit what they were (never ``+u−u``). The save, the add and the restore are multi-tensor
(``torch._foreach_*``, as torch.optim uses): three launches on a GPU instead of three per weight;
the draws stay one ``randn`` per weight, so the noise is the same stream as a per-weight loop.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..common import InputError

SCOPES = ("conv", "weights", "all", "none")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def noise_parameters(model: nn.Module, scope: str) -> list[nn.Parameter]:
    """The parameters that receive noise under ``scope``."""
    if scope not in SCOPES:
        raise InputError(f"unknown noise_scope {scope!r}; use one of {', '.join(SCOPES)}")
    if scope == "none":
        return []
    if scope == "all":
        return [p for p in model.parameters() if p.requires_grad]
    kinds = _CONV if scope == "conv" else _CONV + (nn.Linear,)
    return [m.weight for m in model.modules() if isinstance(m, kinds) and m.weight.requires_grad]


@contextmanager
def randomized_weights(
    model: nn.Module, std: float, scope: str = "conv", generator: torch.Generator | None = None
) -> Iterator[nn.Module]:
    """Inside the block the chosen weights hold ``w + σ·N(0, I)``; on exit exactly ``w`` again."""
    if not std >= 0:
        raise InputError(f"noise_std must be >= 0, got {std}")
    params = noise_parameters(model, scope) if std > 0 else []
    if not params:
        yield model
        return
    with torch.no_grad():
        saved = torch._foreach_mul(params, 1.0)  # copies (x·1 is exact)
        noise = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
        torch._foreach_add_(params, noise, alpha=std)
        del noise  # freed before the attack runs on the noisy weights
    try:
        yield model
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)

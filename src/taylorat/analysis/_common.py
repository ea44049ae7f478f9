"""Small helpers shared by the analysis modules: devices, model loading, atomic file output."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_model
from ..common import InputError, atomic_write_bytes, atomic_write_text, write_figure

ModelLike = nn.Module | str | os.PathLike


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter (or buffer); ``fallback`` for a model without any."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device(fallback)


def resolve_models(models: Mapping[str, ModelLike], device: torch.device | str | None = None) -> dict[str, nn.Module]:
    """``{label: model}``; checkpoint paths are loaded with ``taylorat.checkpoint.load_model``."""
    if not models:
        raise InputError("give at least one model as {label: model or checkpoint path}")
    out = {}
    for label, m in models.items():
        if not isinstance(label, str) or not label:
            raise InputError(f"model labels must be non-empty strings, got {label!r}")
        if isinstance(m, nn.Module):
            out[label] = m
        else:
            out[label] = load_model(m, device or "cpu")[0]
    return out


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """One-line ValueError unless x is a float (B, C, H, W) batch of [0,1] images with B labels."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"x must be a float tensor of [0,1] images of shape (B, C, H, W), got {got}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"y must be a 1-D tensor of {len(x)} labels, got {got}")
    if len(x) == 0:
        raise InputError("x holds no images")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_figure(fig, path: Path, dpi: int) -> None:
    """Render a matplotlib Figure to PNG (Agg canvas, no pyplot state) and write it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional extra [plot]

    FigureCanvasAgg(fig)
    write_figure(fig, path, dpi=dpi)

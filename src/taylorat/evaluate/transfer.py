"""Black-box transfer: adversarial examples made white-box on a surrogate, replayed on targets.

As the paper's Table 4: PGD-20 and CW-20 examples are generated on a surrogate (a normally
adversarially trained model of the same setting) and cached to disk, keyed by the surrogate's
identity, the images and the attack settings, so one cache serves many target checkpoints.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..attacks import CW, PGD
from ..common import as_float_images


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def model_digest(model: nn.Module) -> str:
    """A content hash of a model's weights and buffers (identifies a surrogate without its file)."""
    state = model.state_dict()
    return _digest(*[(k, tuple(v.shape)) for k, v in state.items()], *state.values())


def transfer_examples(
    surrogate: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    base: str,
    eps: float,
    step: float,
    norm: str,
    seed: int,
    batch_size: int,
    cache_dir: str | Path | None = None,
    surrogate_id: str = "",
    progress: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Adversarial images (float, on x's device) from ``base`` ∈ {pgd20, cw20} on the surrogate."""
    cls = {"pgd20": PGD, "cw20": CW}[base]
    attack = cls(surrogate, eps=eps, step=step, steps=20, norm=norm, seed=seed)
    sid = surrogate_id or model_digest(surrogate)
    key = _digest(sid, attack.settings(), x, y)
    info = {"name": f"transfer_{base}", "surrogate": sid, "attack": attack.settings(), "cache_key": key}
    path = Path(cache_dir) / f"transfer-{base}-{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        tensors, meta = ckpt.load(path)
        if meta.get("key") == key:
            info["cached"] = str(path)
            return tensors["x_adv"].to(x.device), info
    device = next(surrogate.parameters()).device
    out = []
    bar = tqdm(total=len(y), desc=f"surrogate {base}", leave=False, disable=not progress, unit="img")
    for i in range(0, len(y), batch_size):
        xb = as_float_images(x[i : i + batch_size], device)
        out.append(attack(xb, y[i : i + batch_size].to(device)).cpu())
        bar.update(len(xb))
    bar.close()
    x_adv = torch.cat(out)
    if path is not None:
        ckpt.save(path, {"x_adv": x_adv}, {"kind": "transfer_examples", "key": key, **info})
        info["cached"] = str(path)
    return x_adv.to(x.device), info

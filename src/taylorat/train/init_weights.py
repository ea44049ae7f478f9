"""``model.init``: a run that starts from the weights of a taylorat checkpoint instead of a random initialisation.

Adversarial fine-tuning of a trained model, the Taylor terms on top of a TRADES model, a longer schedule
after a short one: the file is read like any checkpoint (safetensors, checksum verified, never a pickle),
its model spec must name the architecture this run builds (name, classes, channels, image size and
options, compared key by key; an input normalization stored in it comes along), and every weight and
buffer, BatchNorm statistics included, is loaded strictly. Nothing else is taken: the optimizer, the
schedule and the history start at epoch 1. A ``torch.save`` state dict is converted once with
``taylorat import``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import models
from ..common import InputError

NORMALIZATION = ("mean", "std")  # may come from the checkpoint: a model imported with its normalization
HEAD = "head."  # every taylorat model's final nn.Linear (models.base.Classifier)


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, init: str | None = None,
                head: str = "keep", **options: Any) -> tuple[nn.Module, dict[str, Any] | None]:
    """The run's model, and what it was initialised from (``{"path", "sha256", "epoch", "head"}``, None when random).

    ``init`` is a checkpoint path; its spec must equal the spec of ``models.create(name, ...)`` apart
    from ``mean``/``std``, else a one-line InputError names the first field that differs. ``head="new"``
    (transfer to another dataset, e.g. Hendrycks et al. 2019) loads everything but ``head``, which is
    initialised as the architecture initialises it, for ``num_classes`` classes.
    """
    if init is None:
        return models.create(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                             **options), None
    path = Path(init)
    if path.is_dir():
        raise InputError(f"model.init={init} is a folder; give one of its checkpoints, e.g. "
                         f"{path / 'best.safetensors'}")
    raw = path.read_bytes() if path.is_file() else b""  # a missing file: ckpt.load says so
    if ckpt.is_pickle(raw):
        raise InputError(f"model.init={init} is a torch.save pickle; convert it once with `taylorat import "
                         "FILE --model NAME --allow-pickle --out W.safetensors`, then model.init=W.safetensors")
    tensors, meta = ckpt.load(path)
    spec = meta.get("model")
    if not isinstance(spec, dict):
        raise InputError(f"model.init={init} holds no model spec; give a checkpoint written by taylorat train, "
                         "import or export")
    with torch.device("meta"):
        want = models.create(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                             **options).spec
    for key in dict.fromkeys([*want, *spec]):
        if key in NORMALIZATION or want.get(key) == spec.get(key) or (key == "num_classes" and head == "new"):
            continue
        fix = {"name": f"set model.name={spec.get('name')}",
               "num_classes": "set model.init_head=new to train a fresh head for this dataset's classes",
               "in_channels": "use a checkpoint of this dataset", "image_size": "use a checkpoint of this dataset",
               }.get(key, f"set model.{key}={spec.get(key)}")
        raise InputError(f"model.init={init} holds {spec.get('name')} with {key}={spec.get(key)!r}; this run builds "
                         f"{key}={want.get(key)!r}; {fix}")
    # the spec now equals the run's own (but for the normalization and, with a new head, the classes): built as is,
    # then every tensor of the file must fit it
    model = models.create(**{**spec, "num_classes": num_classes})
    if head == "new":
        fresh = {ckpt.MODEL_PREFIX + k: v for k, v in model.state_dict().items() if k.startswith(HEAD)}
        tensors = {**{k: v for k, v in tensors.items() if not k.startswith(ckpt.MODEL_PREFIX + HEAD)}, **fresh}
    ckpt.load_state_strict(model, tensors, str(path))
    digest = hashlib.sha256(raw).hexdigest()
    return model, {"path": str(path), "sha256": digest, "epoch": meta.get("epoch"), "head": head}

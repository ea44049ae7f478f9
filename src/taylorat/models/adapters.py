"""Any classifier as ``forward_features`` + ``head``, what the Taylor terms need (docs/method.md §4).

The Taylor statistics come from the pooled penultimate vector ``h`` and the final linear layer
``W`` with ``logits = W h + b``. taylorat's own models expose both; for others:

* **timm** models: ``h = model.forward_head(model.forward_features(x), pre_logits=True)`` and
  ``head = model.get_classifier()`` (CNNs and ViTs alike: timm pools or picks the class token);
* **torchvision** classifiers (and any model whose output is the output of an ``nn.Linear``):
  the final ``nn.Linear`` is *found*, not guessed: on a probe input, the linear layer whose output
  tensor is the model's output is the head, and ``h`` is that layer's input. A model whose output
  no linear layer produces (a final softmax, an average of several heads, ...) gets a one-line
  error that says how to wrap it.

``adapt(model)`` returns a module with ``forward_features``, ``head`` and ``forward`` (=
``head(forward_features(x))``) that shares the model's parameters; it is cached on the model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..common import InputError

HINT = ("give the model forward_features(x) -> (B, D) and head = nn.Linear(D, C), or wrap it in "
        "taylorat.models.Classifier")


def is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_head") and hasattr(model, "get_classifier") and hasattr(model, "forward_features")


class TimmFeaturesHead(nn.Module):
    """A timm model seen as ``head(forward_features(x))`` with pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise InputError(f"{type(model).__name__}.get_classifier() is {type(head).__name__}, not nn.Linear "
                             f"(num_classes=0?); create it with num_classes > 0 or {HINT}")
        self.model, self.head = model, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class FinalLinearFeaturesHead(nn.Module):
    """A model whose output is that of one ``nn.Linear`` (found by probing): ``h`` is that layer's input."""

    def __init__(self, model: nn.Module, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def grab(module: nn.Module, args: tuple) -> None:
            captured.append(args[0])

        handle = self.head.register_forward_pre_hook(grab)
        try:
            self.model(x)  # the head runs once more below on the captured input; its cost is one matmul
        finally:
            handle.remove()
        if len(captured) != 1 or captured[0].dim() != 2:
            raise InputError(f"the head of {type(self.model).__name__} ran {len(captured)} times or on a "
                             f"non-pooled input; {HINT}")
        return captured[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def find_final_linear(model: nn.Module, example: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` whose output tensor is the model's output on ``example`` (one-line error if none)."""
    outputs: dict[int, nn.Linear] = {}
    handles = [m.register_forward_hook(lambda mod, a, out: outputs.__setitem__(id(out), mod))
               for m in model.modules() if isinstance(m, nn.Linear)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or id(logits) not in outputs:
        raise InputError(f"no nn.Linear of {type(model).__name__} produces its output (the Taylor terms need the "
                         f"final linear layer and its input); {HINT}")
    return outputs[id(logits)]


def adapt(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """``model`` itself when it has ``forward_features`` and an ``nn.Linear`` ``head``; else an adapter (cached).

    ``example``: a batch of inputs to probe a model that is neither a taylorat nor a timm model.
    """
    if isinstance(getattr(model, "head", None), nn.Linear) and hasattr(model, "forward_features") \
            and not is_timm(model):
        return model
    cached = model.__dict__.get("_taylorat_adapter")
    if cached is not None:
        return cached

    if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
        raise InputError(DDP_HINT)
    if is_timm(model):
        adapter: nn.Module = TimmFeaturesHead(model)
    else:
        if example is None:
            raise InputError(f"{type(model).__name__} has no forward_features/head: pass an example batch to "
                             "taylorat.models.adapt(model, example) (or call the loss, which passes its batch)")
        adapter = FinalLinearFeaturesHead(model, find_final_linear(model, example[:2]))
    model.__dict__["_taylorat_adapter"] = adapter  # not a submodule: the model's state dict is unchanged
    return adapter


DDP_HINT = ("a DistributedDataParallel-wrapped model cannot give the loss its features and head: wrap "
             "taylorat.objectives.PairForward(model) in DDP and call *_from_outputs on its outputs (README, "
             "'Your own loop')")

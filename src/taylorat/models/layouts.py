"""Other code bases' state-dict key layouts, mapped to ours (import) and back (export).

Layouts users have checkpoints in:

* TRADES' WideResNet (yaodongyu/TRADES) and RobustBench's ``WideResNet`` (e.g.
  ``Zhang2019Theoretically``): ``block1.layer.0.bn1``, ``convShortcut``, a final ``bn1`` and
  ``fc``; both build a ``sub_block1`` that their forward never uses — its keys are dropped on
  import (they cannot change the logits) and named in the record.
* The PreAct ResNet-18 of robust_overfitting / AWP and RobustBench (``PreActBlockV2``,
  ``bn_before_fc=True``): ``shortcut.0.weight`` (a one-conv ``nn.Sequential``), ``bn``,
  ``linear``.
* RobustBench's input normalization buffers ``mu`` / ``sigma`` (ours: ``normalize.mean`` /
  ``normalize.std``), and ``module.`` prefixes of (Distributed)DataParallel.

Renames apply only to names our model does not have itself, so our own layout passes
unchanged; the result must then fit the model exactly (``checkpoint.load_state_strict``).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from ..common import InputError

# (pattern, replacement) applied in order to names the model lacks
TO_OURS = (
    (re.compile(r"^(block\d+)\.layer\.(\d+)\."), r"\1.\2."),  # WideResNet NetworkBlock.layer
    (re.compile(r"\.convShortcut\."), ".shortcut."),
    (re.compile(r"\.shortcut\.0\."), ".shortcut."),  # PreAct shortcut as a one-conv Sequential
    (re.compile(r"^bn1\."), "bn."),  # WideResNet's final BatchNorm
    (re.compile(r"^(fc|linear|classifier|logits)\."), "head."),
    (re.compile(r"^mu$"), "normalize.mean"),
    (re.compile(r"^sigma$"), "normalize.std"),
)
# built by the reference architectures but never used in their forward pass
UNUSED = (re.compile(r"^sub_block1\."),)

# ours -> RobustBench's key names, per architecture family (export)
TO_ROBUSTBENCH = {
    "wrn": (
        (re.compile(r"^(block\d+)\.(\d+)\."), r"\1.layer.\2."),
        (re.compile(r"\.shortcut\."), ".convShortcut."),
        (re.compile(r"^bn\."), "bn1."),
        (re.compile(r"^head\."), "fc."),
        (re.compile(r"^normalize\.mean$"), "mu"),
        (re.compile(r"^normalize\.std$"), "sigma"),
    ),
    "preact_resnet18": (
        (re.compile(r"\.shortcut\.weight$"), ".shortcut.0.weight"),
        (re.compile(r"^head\."), "linear."),
        (re.compile(r"^normalize\.mean$"), "mu"),
        (re.compile(r"^normalize\.std$"), "sigma"),
    ),
}


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix of (Distributed)DataParallel checkpoints."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def to_ours(state: Mapping[str, torch.Tensor], own_keys: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state in our names, dropped unused keys)``; names already ours are kept as they are."""
    out, dropped = {}, []
    for k, v in strip_prefix(state).items():
        if k not in own_keys and any(p.match(k) for p in UNUSED):
            dropped.append(k)
            continue
        for pattern, repl in TO_OURS:
            if k not in own_keys:
                k = pattern.sub(repl, k)
        out[k] = v
    return out, dropped


def normalization(state: Mapping[str, torch.Tensor]) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` when the checkpoint normalizes its inputs itself (RobustBench ``mu``/``sigma``)."""
    s = strip_prefix(state)
    for mk, sk in (("mu", "sigma"), ("normalize.mean", "normalize.std")):
        if mk in s and sk in s:
            return s[mk].flatten().tolist(), s[sk].flatten().tolist()
    return None


def family(model_name: str) -> str | None:
    """The export layout family of one of our architectures (None: RobustBench has no such layout)."""
    if re.fullmatch(r"wrn_\d+_\d+", model_name):
        return "wrn"
    return model_name if model_name in TO_ROBUSTBENCH else None


def to_robustbench(state: Mapping[str, torch.Tensor], model_name: str) -> dict[str, torch.Tensor]:
    """Our state dict in RobustBench's key names (``WideResNet`` / ``PreActResNet`` with ``PreActBlockV2``)."""
    fam = family(model_name)
    if fam is None:
        raise InputError(f"RobustBench has no layout for {model_name!r}; export wrn_<depth>_<width> or "
                         "preact_resnet18, or use --format state-dict / onnx")
    out = {}
    for k, v in state.items():
        for pattern, repl in TO_ROBUSTBENCH[fam]:
            k = pattern.sub(repl, k)
        out[k] = v
    return out

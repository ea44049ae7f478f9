"""The study page's setup lines that depend on the run's recipe: the learning-rate schedule, weight
averaging, label smoothing, and the attacks the evaluation ran."""

from __future__ import annotations

from typing import Any

from ..evaluate import labels


def training_text(o: dict[str, Any], a: dict[str, Any], method: dict[str, Any]) -> str:
    """``- training: ...``: epochs, batch, SGD with its schedule (step or cosine with warm-up), then what
    is set beyond plain SGD (weight averaging, label smoothing), then the training attack."""
    if o.get("schedule", "step") == "cosine":
        warmup = o.get("warmup_epochs") or 0
        schedule = "cosine to 0 over the steps" + (f" after {warmup:g} linear warm-up epochs" if warmup else "")
    else:
        schedule = f"÷10 at {', '.join(str(m) for m in o['milestones'])} of the epochs"
    extras = ""
    if o.get("average", "none") == "ema":
        extras += f", EMA of the weights (decay {o['ema_decay']:g}{', warmed up' if o.get('ema_warmup') else ''})"
    elif o.get("average", "none") == "swa":
        extras += f", SWA of the weights from {o['swa_start']:g} of the epochs"
    if method.get("label_smoothing"):
        extras += f", label smoothing {method['label_smoothing']:g} (cross-entropy terms)"
    return (f"- training: {o['epochs']} epochs, batch {o['batch_size']}, SGD lr {o['lr']} ({schedule}), "
            f"momentum {o['momentum']}, wd {o['weight_decay']}{extras}; attack {a['norm']} ε={a['eps']:.4g}, "
            f"step {a['step']:.4g}, K={a['steps']}")


def attacks_text(attacks: list[str]) -> str:
    """The evaluated attacks other than AutoAttack, as a list in words: ``clean, PGD-20 and CW-20``."""
    names = [labels().get(k, k) for k in attacks if k != "aa"] or ["no attack besides AutoAttack"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def compute_text(runs: list[dict[str, Any]]) -> str:
    """How long the runs took: the sums of the per-seed table's columns (training steps, evaluation), of the
    flatness measurements and of the per-epoch checks where a record has them."""
    train = sum(r.get("train_seconds", 0) for r in runs)
    flat = sum((r.get("flatness") or {}).get("seconds", 0) for r in runs)
    evaluation = sum(r.get("eval_seconds", 0) for r in runs) + flat
    checked = [r["check_seconds"] for r in runs if "check_seconds" in r]
    checks = (f", {_duration(sum(checked))} of per-epoch checks" if len(checked) == len(runs) else
              f", {_duration(sum(checked))} of per-epoch checks in the {len(checked)} that record them" if checked
              else "")
    reused = sum(1 for r in runs if r.get("reused"))
    return (f"Compute over {len(runs)} run{'s' * (len(runs) != 1)}: {_duration(train)} of training steps{checks} "
            f"and {_duration(evaluation)} of evaluation{' (weight-space flatness included)' if flat else ''}, "
            "on the machine named under Setup"
            + ("" if len(checked) == len(runs) else "; the other runs' per-epoch checks are not in their records"
               if checked else "; the per-epoch checks are not in the records")
            + (f"; {reused} reused run{'s' * (reused != 1)} count with the time they took in the study they come "
               "from" if reused else "") + ".")

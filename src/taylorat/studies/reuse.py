"""Reusing another study's evaluation for a run retrained here (a study's ``reuse`` files).

A retrained run *reproduces* a record when it has the record's seed and evaluation settings and every
per-epoch number it measured equals the record's at that epoch: the training accuracy under attack
(every epoch) and, at each epoch it checked, the selection and tracked accuracies. The per-epoch
checks run in eval mode with their own seeds, so checking fewer epochs (``eval.every``) does not change
training, and a run retrained only for its ``last`` checkpoint may check the last epoch alone. A run
marked ``reuse_only`` must reproduce a record: its evaluation is never measured on its own ``best``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import read_json, read_jsonl
from ..train import ConfigError
from .study import RunSpec, Study

CURVE_KEYS = ("holdout_pgd", "test_pgd", "track_test_pgd", "track_train_pgd", "track_test_clean",
              "track_train_clean", "train_acc_adv", "lr")


def same_settings(prev: dict[str, Any], now: dict[str, Any]) -> bool:
    """Equal settings; a record from before per-attack radii ran every attack at its ``eps``."""
    if "attack_eps" not in prev and "eps" in prev:
        prev = {**prev, "attack_eps": {a: prev["eps"] for a in now.get("attack_eps", {})}}
    return prev == now


def run_curves(run_dir: Path) -> dict[str, list] | None:
    """The per-epoch curves of a run that tracked test / training images (``eval.track_*``), from metrics.jsonl;
    an epoch without a check has ``None`` for the checked keys."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    history = read_jsonl(path, "training log", "repair or remove the broken line")
    keys = [k for k in CURVE_KEYS if any(k in h for h in history)]
    if not any(k.startswith("track_") for k in keys):
        return None
    out: dict[str, list] = {"epoch": [h["epoch"] for h in history]}
    for k in keys:
        out[k] = [round(h[k], 2) if isinstance(h.get(k), float) and k != "lr" else h.get(k) for h in history]
    return out


def first_difference(record: dict[str, list], mine: dict[str, list]) -> tuple[int, str] | None:
    """The first epoch index where this run's measured numbers leave the record's, and what differs there
    (``None``: it reproduces the record)."""
    if record.get("epoch") != mine["epoch"]:
        return -1, f"its epochs ({len(mine['epoch'])} here, {len(record.get('epoch') or [])} there)"
    found = None
    for k, values in mine.items():
        theirs = record.get(k)
        i = next((i for i, v in enumerate(values) if v is not None and (theirs is None or theirs[i] != v)), None)
        if i is not None and (found is None or i < found[0]):
            there = None if theirs is None else theirs[i]
            found = i, f"{k} at epoch {mine['epoch'][i]} ({values[i]} here, {there} there)"
    return found


def with_check_seconds(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The record with the run's per-epoch check time (``summary.json``) when it was measured on this run: a
    reused record keeps the time of the study it comes from, which did not record it."""
    summary = run_dir / "summary.json"
    if record.get("reused") or "check_seconds" in record or not summary.is_file():
        return record
    seconds = read_json(summary, "run summary", "train the run again").get("check_seconds")
    return record if seconds is None else {**record, "check_seconds": round(seconds, 1)}


def reuse_path(study: Study, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or p.exists() or study.folder is None else study.folder / p


def reused_record(study: Study, run: RunSpec, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation of this very run from a ``reuse`` results.json (a record it reproduces), or ``None``;
    a ``reuse_only`` run without one is a one-line error naming the first difference."""
    out = Path(run.config.out_dir)
    curves = run_curves(out)
    reuse_only = any(m["label"] == run.label and m.get("reuse_only") for m in study.methods)
    if not study.reuse or not curves:
        if reuse_only:
            raise ConfigError(f"run {run.label!r} seed {run.seed} is reuse_only but tracked no curves to compare; "
                              "set eval.track_test and eval.track_train")
        return None
    summary = read_json(out / "summary.json", "run summary", "train the run again")
    closest: tuple[int, str] | None = None
    for name in study.reuse:
        path = reuse_path(study, name)
        if not path.is_file():
            continue
        for r in read_json(path, "reused results").get("runs", []):
            if r.get("seed") != run.seed or not same_settings(r.get("settings", {}), settings):
                continue
            diff = first_difference(r.get("curves") or {}, curves)
            if diff is None:
                rec = {k: v for k, v in r.items() if k != "flatness"}
                return {**rec, "method": run.label,  # train_seconds: the record's, trained as it was evaluated
                        "reused": {"from": str(name), "method": r.get("method"),
                                   "why": "retrained here; every per-epoch number it measured equals that record's",
                                   "retrain_seconds": round(summary["train_seconds"], 1)}}
            if closest is None or diff[0] > closest[0]:
                closest = diff[0], f"the closest, {r.get('method')!r}, differs in {diff[1]}"
    if reuse_only:
        why = closest[1] if closest else "no record of this seed with the same evaluation settings"
        raise ConfigError(f"run {run.label!r} seed {run.seed} is reuse_only but reproduces no record of "
                          f"{', '.join(study.reuse)} ({why}); train it with per-epoch checks without reuse_only")
    return None

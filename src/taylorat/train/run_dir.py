"""Run folders: which ``out_dir`` a run may use, what a resumed run takes back from it, the JSON state its
checkpoints carry, and the files written around the epochs (``config.yaml`` before them, ``metrics.jsonl``
after each, ``summary.json`` once the last one is done).

An ``out_dir`` is usable when it does not exist, is empty, or (with ``resume``) holds the same run: the stored
config equals this one except for keys that do not change the result (``RESUMABLE_DIFFS``). What interrupted
atomic writes leave (``.NAME.XXXX.tmp``) never counts and is removed once the run holds the folder's lock
(``.taylorat.lock``, rank 0's PID: a second live writer is refused).

The run keeps two resumable checkpoints: ``last.safetensors`` and the one before it, ``last.prev.safetensors``
(renamed from ``last`` before a new ``last`` is written). A resume takes the newest intact one (``RESUMABLE``),
saying what it skipped and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from .. import checkpoint as ckpt
from ..common import FolderLock, FolderLocked, TayloratError, atomic_write_text, is_temp_name
from . import distributed
from .config import Config

if TYPE_CHECKING:  # only for annotations: the trainer imports this module
    from .averaging import WeightAverage
    from .trainer import Trainer

# keys that may differ between a run and its resumption (they do not change the result)
RESUMABLE_DIFFS = {"progress", "log_every", "device", "data.data_dir", "data.download", "out_dir", "name", "curves",
                   "logging", "channels_last", "optim.diverge_factor"}
DATA_PARALLEL_ONLY = {"taylor_stats", "sync_bn"}
RESUMABLE = ("last.safetensors", "last.prev.safetensors")  # newest first


class RunDirError(TayloratError, RuntimeError):
    """The output directory holds something else than this run."""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "options":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ; a key one side lacks (an older taylorat) counts at its default."""
    fa, fb, default = _flatten(a), _flatten(b), _flatten(Config().to_dict())
    return sorted(k for k in set(fa) | set(fb)
                  if fa.get(k, default.get(k)) != fb.get(k, default.get(k)) and k not in RESUMABLE_DIFFS)


def newest_intact(out: Path) -> tuple[Path | None, list[str]]:
    """The newest resumable checkpoint in ``out`` that loads and passes its checksum, and why others were skipped."""
    skipped = []
    for name in RESUMABLE:
        path = out / name
        if not path.exists():
            continue
        try:
            ckpt.read_meta(path)
        except ckpt.CheckpointError as e:
            skipped.append(f"{name} ({str(e).splitlines()[0].replace(str(path) + ' ', '')})")
            continue
        return path, skipped
    return None, skipped


def _results(out: Path) -> list[Path]:
    """What ``out`` holds besides interrupted writes and the writer's lock."""
    return [p for p in out.iterdir() if not is_temp_name(p.name) and p.name != FolderLock.NAME]


def check_run_dir(cfg: Config, resume: bool, data_parallel: bool = False) -> str | None:
    """Why ``cfg`` may not use its ``out_dir`` (a one-line reason), or None when it may."""
    out = Path(cfg.out_dir)
    has_ckpt = any((out / n).exists() for n in RESUMABLE)
    has_run = (out / "config.yaml").exists() or has_ckpt
    if has_run and not resume:
        return f"{out} already holds a run; pass --resume to continue it or choose another out_dir"
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a directory; choose another out_dir"
    if out.exists() and not has_run and _results(out):
        return f"{out} is not empty and holds no taylorat run; choose another out_dir"
    if has_run:
        last, skipped = newest_intact(out) if has_ckpt else (None, [])
        if has_ckpt and last is None:
            return (f"{out} holds a damaged run: no intact checkpoint ({'; '.join(skipped)}); start the run again "
                    "in another out_dir")
        try:  # a checkpoint without its config is damaged (KeyError), unlike an older one missing other keys
            stored = (ckpt.read_meta(last)["config"] if last is not None
                      else yaml.safe_load((out / "config.yaml").read_text()) or {})
        except (ckpt.CheckpointError, yaml.YAMLError, KeyError) as e:
            return f"{out} holds a damaged run ({str(e).splitlines()[0]}); choose another out_dir"
        diff = config_diff(stored, cfg.to_dict())
        if not data_parallel:  # keys that only act across ranks do not change a one-process run
            diff = [k for k in diff if k not in DATA_PARALLEL_ONLY]
        if diff == ["optim.epochs"]:  # the schedule's drops sit at fractions of optim.epochs: no extending
            return (f"{out} holds a run of {(stored.get('optim') or {}).get('epochs')} epochs; extending a schedule "
                    f"to optim.epochs={cfg.optim.epochs} is not supported (its learning-rate drops would move); "
                    "train the longer run in another out_dir")
        if diff:
            return (f"{out} holds a different run (config differs in {', '.join(diff[:4])}); choose "
                    "another out_dir or resume with the same config")
    return None


def claim(cfg: Config, resume: bool, dist: distributed.Dist) -> FolderLock | None:
    """Lock ``out_dir`` and check it may be used (rank 0 does both, every rank raises :class:`RunDirError`).

    Returns rank 0's lock (release it when the run ends), None on the other ranks.
    """
    lock, problem = None, None
    if dist.main:
        out = Path(cfg.out_dir)
        problem = f"{out} is a file, not a directory; choose another out_dir" if out.is_file() else None
        if problem is None:
            try:
                lock = FolderLock(out, "run folder").acquire()
            except FolderLocked as e:
                problem = str(e)
        problem = problem or check_run_dir(cfg, resume, data_parallel=dist.enabled)
        if problem and lock is not None:
            lock.release()
    problem = distributed.broadcast_object(problem, dist)
    if problem:
        raise RunDirError(problem)
    return lock


def run_dir_state(cfg: Config) -> str:
    """What a (resumed) run would find in its ``out_dir``, in words (for dry runs)."""
    out = Path(cfg.out_dir)
    if not out.exists():
        return f"{out}: will be created"
    last, skipped = newest_intact(out)
    if last is None:
        return f"{out}: exists, " + (f"no intact checkpoint ({'; '.join(skipped)})" if skipped else "no checkpoint yet")
    meta = ckpt.CheckpointMeta.from_meta(ckpt.read_meta(last))
    done = meta.epoch or 0
    if done >= cfg.optim.epochs and not meta.partial:
        return f"{out}: holds this run, finished ({done} epochs): nothing to train"
    return f"{out}: holds this run after epoch {done}: --resume continues it"


def optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The SGD momentum buffers as ``optim.<parameter name>`` tensors (what ``last.safetensors`` keeps)."""
    out = {}
    for name, p in model.named_parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"optim.{name}"] = buf
    return out


def load_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        key = f"optim.{name}"
        if key in tensors:
            opt.state[p]["momentum_buffer"] = tensors[key].to(p.device, p.dtype).clone()


@dataclass
class ResumePoint:
    """What ``last.safetensors`` gives back besides the weights: the history, the best check, where to go on."""

    start_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    partial: dict[str, Any] | None = None  # position inside an epoch stopped by a signal
    partial_rng: torch.Tensor | None = None  # the attack generator's state at that position
    source: Path | None = None  # the checkpoint it came from
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that were damaged, and why
    rank_buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # ``rankN.<buffer>``: other ranks' BN stats

    def where(self) -> str:
        at = (f"in epoch {self.partial['epoch']} after step {self.partial['step']}" if self.partial
              else f"after epoch {self.start_epoch - 1}")
        if self.skipped and self.source is not None:
            at += f" from {self.source.name}, skipping {'; '.join(self.skipped)}"
        return at


def restore(out: Path, device: torch.device, model: torch.nn.Module, opt: torch.optim.Optimizer,
            avg: WeightAverage | None) -> ResumePoint | None:
    """Load weights, momentum and average of the newest intact checkpoint in ``out``; None when there is none.

    ``point.source`` names the file, ``point.skipped`` the newer ones that were damaged and why.
    """
    last, skipped = newest_intact(out)
    if last is None:
        return None
    tensors, raw = ckpt.load(last, device)
    meta = ckpt.CheckpointMeta.from_meta(raw)
    ckpt.load_state_strict(model, tensors, str(last))
    load_optimizer(model, opt, tensors)
    if avg is not None:
        avg.load_state_tensors(tensors)
    rank_bn = {k: v for k, v in tensors.items() if k.startswith("rank")}
    return ResumePoint(start_epoch=raw["epoch"] + 1, history=meta.history, best=meta.best, best_epoch=meta.best_epoch,
                       partial=meta.partial, partial_rng=tensors.get("rng.attack"), source=last, skipped=skipped,
                       rank_buffers=rank_bn)


def save_last(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``last.safetensors``, keeping the one it replaces as ``last.prev.safetensors`` (each step a rename)."""
    last, prev = out / RESUMABLE[0], out / RESUMABLE[1]
    if last.exists():
        last.replace(prev)
    ckpt.save(last, tensors, meta)


def state_meta(t: Trainer, epoch: int) -> dict[str, Any]:
    """The JSON state every checkpoint of the run carries after ``epoch`` (``checkpoint.CheckpointMeta`` reads it)."""
    cfg = t.cfg
    return {"model": t.model.spec, "epoch": epoch, "config": cfg.to_dict(),
            "method": {"name": cfg.method.name, **cfg.resolved_method()},
            "minimizer": cfg.resolved_minimizer(),
            "data": {"dataset": t.dataset.name, **t.prep.info},
            "select_on": cfg.eval.select_on, "best": t.best, "best_epoch": t.best_epoch,
            "world_size": t.dist.world, "torch": torch.__version__}


def write_config(out: Path, cfg: Config, device: torch.device, channels_last: bool, why: str) -> None:
    """``config.yaml``: the resolved config, with what ``channels_last`` resolved to on this device."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml() + f"# resolved on {device}: "
                      f"channels_last {'true' if channels_last else 'false'} ({why})\n")


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one line per finished epoch."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def write_summary(t: Trainer) -> None:
    """``summary.json`` of a finished run: the best check, the method, the data, the environment and the time."""
    cfg = t.cfg
    summary = {"name": cfg.name, "epochs": cfg.optim.epochs, "best_epoch": t.best_epoch,
               "best": t.best, "select_on": cfg.eval.select_on, "n_select": t.n_select,
               "method": {"name": cfg.method.name, **cfg.resolved_method()},
               "minimizer": cfg.resolved_minimizer(), "init": t.init,
               "data": {"dataset": t.dataset.name, **t.prep.info}, "world_size": t.dist.world,
               "environment": {"torch": torch.__version__, "device": str(t.device),
                               "cpu threads": torch.get_num_threads()},
               "speed": {"channels_last": t.channels_last, "channels_last_setting": cfg.channels_last,
                         "why": t.channels_last_why, "precision": cfg.precision, "compile": cfg.compile},
               "train_seconds": sum(h["train_seconds"] for h in t.history),
               "check_seconds": sum(h.get("eval_seconds", 0.0) for h in t.history)}
    atomic_write_text(t.out / "summary.json", json.dumps(summary, indent=2) + "\n")

"""What the trainer reports while it runs: events as dicts, for the console and for logging back ends.

Events: ``{"event": "message", "text": ...}``, ``{"event": "step", "epoch", "step", "steps", "loss",
"lr"}`` every ``log_every`` steps (the epoch's running mean loss), and ``{"event": "epoch", ...}``
with the epoch's record — the numbers ``metrics.jsonl`` holds. ``train(cfg, log=fn)`` hands every
event to ``fn``; :func:`format_event` is the console's rendering. ``logging: [jsonl, tensorboard,
wandb]`` adds back ends (``metrics.jsonl`` is always written: ``--resume`` reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..common import InputError, require

Event = dict[str, Any]
BACKENDS = ("jsonl", "tensorboard", "wandb")


def format_event(ev: Event) -> str:
    """One console line for an event."""
    kind = ev.get("event")
    if kind == "message":
        return str(ev["text"])
    if kind == "step":
        return f"epoch {ev['epoch']} step {ev['step']}/{ev['steps']}: loss {ev['loss']:.4f}, lr {ev['lr']:.4g}"
    if kind == "epoch":
        sel = ev.get("select_on", "holdout")
        acc = (f"{sel} clean {ev[sel + '_clean']:.2f} pgd{ev.get('check_steps', 20)} {ev[sel + '_pgd']:.2f}"
               if f"{sel}_pgd" in ev else "")
        acc += "".join(f", {k} pgd{ev.get('check_steps', 20)} {ev[f'track_{k}_pgd']:.2f}" for k in ("test", "train")
                       if f"track_{k}_pgd" in ev)
        return (f"epoch {ev['epoch']}/{ev['epochs']} loss {ev['train_loss']:.4f} lr {ev['lr']:.4g} {acc} "
                f"({ev['train_seconds']:.1f}s train + {ev.get('eval_seconds', 0.0):.1f}s check, "
                f"eta {ev['eta_minutes']:.1f} min)")
    return str(ev)


def numbers(ev: Event) -> dict[str, float]:
    return {k: float(v) for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardSink:
    """Scalars under ``OUT/tensorboard``: ``step/loss`` against the global step, ``epoch/*`` against the epoch."""

    def __init__(self, out_dir: Path, config: dict[str, Any]):
        require("tensorboard", "tensorboard", "logging to TensorBoard")
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional extra [tensorboard]

        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + str(config) + "\n```")

    def __call__(self, ev: Event) -> None:
        if ev.get("event") == "step":
            self.writer.add_scalar("step/loss", ev["loss"], ev["global_step"])
            self.writer.add_scalar("step/lr", ev["lr"], ev["global_step"])
        elif ev.get("event") == "epoch":
            for k, v in numbers(ev).items():
                if k not in ("epoch", "epochs"):
                    self.writer.add_scalar(f"epoch/{k}", v, ev["epoch"])
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """The same numbers to Weights & Biases (``wandb.init`` with the run's config; your W&B settings apply)."""

    def __init__(self, out_dir: Path, config: dict[str, Any], name: str):
        wandb = require("wandb", "wandb", "logging to Weights & Biases")
        self.run = wandb.init(dir=str(out_dir), config=config, name=name, resume="allow")

    def __call__(self, ev: Event) -> None:
        if ev.get("event") == "step":
            self.run.log({"step/loss": ev["loss"], "step/lr": ev["lr"], "global_step": ev["global_step"]})
        elif ev.get("event") == "epoch":
            self.run.log({f"epoch/{k}": v for k, v in numbers(ev).items()})

    def close(self) -> None:
        self.run.finish()


def make_sinks(backends: list[str], out_dir: Path, config: dict[str, Any], name: str) -> list[Callable]:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(f"logging: {unknown[0]!r} is not one of {', '.join(BACKENDS)}")
    sinks: list[Callable] = []
    if "tensorboard" in backends:
        sinks.append(TensorBoardSink(out_dir, config))
    if "wandb" in backends:
        sinks.append(WandbSink(out_dir, config, name))
    return sinks

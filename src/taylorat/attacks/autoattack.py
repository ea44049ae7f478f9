"""AutoAttack (Croce & Hein, ICML 2020) through the maintained library, never a re-implementation.

``pyautoattack`` on PyPI packages the authors' code (fra31/auto-attack: APGD-CE, APGD-T, FAB-T,
Square in the ``standard`` version). We call it with a fixed seed (it otherwise seeds from the
clock), collect its own log — per-attack robust accuracy and the warnings of its checks for
randomized models, non-softmax outputs and dynamic behaviour — and re-check its output: every
adversarial example must lie in the eps-ball and [0,1], and robustness is re-measured by our
own forward pass on the returned images.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..common import InputError, require
from .attack import Attack, eval_mode


@dataclass
class AutoAttackResult:
    correct: torch.Tensor  # (N,) bool, robust under the whole ensemble
    per_attack: dict[str, float] = field(default_factory=dict)  # robust accuracy (%) after each attack
    warnings: list[str] = field(default_factory=list)
    version: str = ""
    log: list[str] = field(default_factory=list)  # the library's own log lines, in order


class _Capture(logging.Handler):
    """Keeps the library's log records; with ``progress``, drives a bar over its sub-attacks as they run."""

    def __init__(self, attacks: list[str] | None = None, progress: bool = False, n: int = 0) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.bar = (tqdm(total=len(attacks), desc=f"AutoAttack on {n} images", unit="attack", leave=False,
                         dynamic_ncols=True) if progress and attacks else None)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.bar is None:
            return
        msg = record.getMessage()
        m = _AFTER.search(msg)
        if msg.startswith("running "):
            self.bar.set_description(f"AutoAttack {msg.split()[1]}")
        elif m:
            self.bar.update(1)
            self.bar.set_postfix(robust=f"{m.group(2)}%")
            tqdm.write(f"AutoAttack: robust accuracy after {m.group(1)} {m.group(2)}% "
                       f"({self.bar.n}/{self.bar.total} attacks)")
        elif "no robust datapoints left" in msg:
            self.bar.update(self.bar.total - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        super().close()


# the sub-attacks of each version (the library's "rand" runs them with EOT over 20 draws, for randomized models);
# "reference" is what the paper's eval_autoattack.py runs: the library's version='custom' with APGD-CE and APGD-T,
# 2 restarts each (their README says "standard"; RobustBench's leaderboard uses standard)
ATTACKS = {"standard": ["apgd-ce", "apgd-t", "fab-t", "square"], "reference": ["apgd-ce", "apgd-t"],
           "rand": ["apgd-ce", "apgd-dlr"]}
REFERENCE_RESTARTS = 2
VERSIONS = ("standard", "reference")  # what a user chooses; "rand" is chosen for randomized models (EOT)
_AFTER = re.compile(r"robust accuracy after (\S+): ([0-9.]+)%")


def library_version() -> str:
    """The installed pyautoattack version; a one-line error naming the extra when it is missing."""
    lib = require("pyautoattack", "aa", "AutoAttack")
    return getattr(lib, "__version__", "unknown")


class AutoAttack(Attack):
    """The AutoAttack ensemble: ``standard`` (RobustBench), ``reference`` (the paper's script: APGD-CE + APGD-T,
    2 restarts each) or ``rand`` (randomized models); ``forward`` returns the library's adversarial images."""

    name = "autoattack"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf", version: str = "standard",
                 seed: int = 0, batch_size: int = 250, progress: bool = False):
        super().__init__(model)
        self.progress = progress
        if norm not in ("linf", "l2"):
            raise InputError(f"AutoAttack norm must be linf or l2, got {norm!r}")
        if version not in ATTACKS:
            raise InputError(f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {version!r}")
        self.eps, self.norm, self.version, self.seed, self.batch_size = eps, norm, version, seed, batch_size
        self.last: AutoAttackResult | None = None

    def settings(self) -> dict:
        out = {"name": self.name, "library": f"pyautoattack {library_version()}", "version": self.version,
               "eps": self.eps, "norm": self.norm, "seed": self.seed,
               "attacks": ATTACKS.get(self.version)}
        return {**out, "restarts": REFERENCE_RESTARTS} if self.version == "reference" else out

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.run(images, labels)[0]

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, AutoAttackResult]:
        """Adversarial images and the library's report for one batch of [0,1] images."""
        library_version()
        from pyautoattack import AutoAttack as LibAutoAttack  # noqa: PLC0415 - optional extra [aa]

        device = images.device
        norm = {"linf": "Linf", "l2": "L2"}[self.norm]
        if self.version == "reference":  # the paper's eval_autoattack.py
            lib = LibAutoAttack(self.model, eps=self.eps, norm=norm, version="custom", seed=self.seed, device=device,
                                attacks=list(ATTACKS["reference"]))
            lib.apgd.n_restarts = lib.apgd_targeted.n_restarts = REFERENCE_RESTARTS
        else:
            lib = LibAutoAttack(self.model, eps=self.eps, norm=norm, version=self.version, seed=self.seed,
                                device=device)
        attacks = ATTACKS.get(self.version)
        handler = _Capture(attacks, self.progress, len(labels))
        logger = logging.getLogger("auto-attack")
        old_level, old_propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            with warnings.catch_warnings(record=True) as caught, eval_mode(self.model):
                warnings.simplefilter("always")
                x_adv, _ = lib.run_standard_evaluation(images, labels, batch_size=self.batch_size)
        finally:
            handler.close()
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
        x_adv = x_adv.to(device)
        _check_threat_set(x_adv, images, self.eps, self.norm)
        with torch.no_grad(), eval_mode(self.model):
            correct = self.model(x_adv).argmax(1) == labels
        per_attack, notes = {}, []
        for r in handler.records:
            msg = r.getMessage()
            m = _AFTER.search(msg)
            if m:
                per_attack[m.group(1).lower()] = float(m.group(2))
            if r.levelno >= logging.WARNING:
                notes.append(" ".join(msg.split()))
        notes += [" ".join(str(w.message).split()) for w in caught if " ".join(str(w.message).split()) not in notes]
        log = [f"{logging.getLevelName(r.levelno)}: {' '.join(r.getMessage().split())}" for r in handler.records]
        self.last = AutoAttackResult(correct=correct, per_attack=per_attack, warnings=notes, version=self.version,
                                     log=log)
        return x_adv, self.last


def _check_threat_set(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    if not torch.isfinite(x_adv).all() or (size > eps * (1 + 1e-4) + 1e-6).any() or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError("AutoAttack returned images outside the eps-ball or [0,1]; refusing to report them")

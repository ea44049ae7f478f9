"""Unknown config keys: the valid key a user most likely meant, by section and key, aliases and spelling.

``unknown_key("optm.epochs", keys)`` is the one-line :class:`ConfigError` ``unknown config key 'optm.epochs';
did you mean 'optim.epochs'?``; keys that moved (``method.awp_gamma``) name their new place.
"""

from __future__ import annotations

import difflib

from .config_types import ConfigError

MOVED = {"method.awp_gamma": "minimizer.gamma", "method.awp_warmup": "minimizer.warmup"}
#: what people write for a section or a key, and what taylorat calls it
SECTION_ALIASES = {"optimizer": "optim", "optimiser": "optim", "optimization": "optim", "opt": "optim",
                   "training": "optim", "train": "optim", "dataset": "data", "datasets": "data", "network": "model",
                   "arch": "model", "attacks": "attack", "adversary": "attack", "evaluation": "eval",
                   "evaluate": "eval", "loss": "method", "objective": "method"}
KEY_ALIASES = {"learning_rate": "lr", "lr_rate": "lr", "learningrate": "lr", "epoch": "epochs",
               "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs", "bs": "batch_size",
               "batch": "batch_size", "batchsize": "batch_size", "wd": "weight_decay", "decay": "weight_decay",
               "arch": "name", "architecture": "name", "model": "name", "method": "name", "type": "name",
               "epsilon": "eps", "radius": "eps", "step_size": "step", "alpha": "step", "num_steps": "steps",
               "iterations": "steps", "lambda": "beta", "sigma": "noise_std", "std": "noise_std", "path": "data_dir",
               "root": "data_dir", "dir": "data_dir", "name": "dataset", "output_dir": "out_dir", "out": "out_dir"}


def closest(name: str, choices: list[str], aliases: dict[str, str]) -> str | None:
    """``name`` itself, its alias, or its closest spelling among ``choices``; None if nothing is close."""
    name = name.strip().lower().replace("-", "_")
    if name in choices:
        return name
    if aliases.get(name) in choices:
        return aliases[name]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(key: str, choices: list[str], section: bool = False) -> str | None:
    """The valid key (or with ``section`` the valid section) a user most likely meant by ``key``.

    The section and the key are matched separately, each by its own name, its common aliases
    (``optimizer`` -> ``optim``, ``learning_rate`` -> ``lr``), then its spelling.
    """
    sections = list(dict.fromkeys(c.split(".")[0] for c in choices if "." in c))
    top = [c for c in choices if "." not in c]
    *head, leaf = key.split(".")
    if section:
        return closest(key, sections, SECTION_ALIASES)
    if not head:  # a top-level key: a run key, else the same key in a section (`lr` -> `optim.lr`)
        hit = closest(leaf, top, {})
        if hit:
            return hit
        for name in (leaf, KEY_ALIASES.get(leaf)):
            same = [c for c in choices if c.split(".")[-1] == name]
            if same:
                return same[0]
        return None
    sec = closest(head[0], sections, SECTION_ALIASES)
    if sec is None:
        return None
    leaves = [c.split(".", 1)[1] for c in choices if c.startswith(sec + ".")]
    name = leaf.strip().lower().replace("-", "_")
    for cand in (name, KEY_ALIASES.get(name)):
        if cand in leaves:
            return f"{sec}.{cand}"
    for cand in (name, KEY_ALIASES.get(name)):  # the key of another section (`optim.eps` -> `attack.eps`)
        same = [c for c in choices if c.split(".")[-1] == cand]
        if same:
            return same[0]
    hit = closest(name, leaves, {})
    return f"{sec}.{hit}" if hit else None


def unknown_key(key: str, choices: list[str], section: bool = False, source: str | None = None) -> ConfigError:
    """One line naming the key (in ``source``, the config file) and the valid key most likely meant."""
    where = f" in {source}" if source else ""
    if key in MOVED:
        return ConfigError(f"config key {key!r}{where} is now {MOVED[key]!r} (the minimizer section)")
    close = suggest(key, choices, section)
    sections = ", ".join(dict.fromkeys(c.split(".")[0] for c in choices if "." in c))
    hint = f"; did you mean {close!r}?" if close else (f"; the sections are {sections}" if section else "")
    what = "section" if section else "key"
    return ConfigError(f"unknown config {what} {key!r}{where}{hint}")

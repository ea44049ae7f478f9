"""A study (or paper table) as data: a base run config, methods, seeds and the evaluation to run.

```yaml
name: fashion_mnist_cpu
title: Fashion-MNIST, small_cnn, l_inf eps = 0.1
base: {...}            # a `taylorat train` config shared by every run
runs:                  # one entry per method; its keys override `base`
  - {label: trades, method: {name: trades}}
  - {label: trades+1st+2nd, method: {name: trades+1st+2nd}}
seeds: [0, 1, 2]
evaluate: {n: 1000, attacks: [clean, pgd20, cw20, aa], n_aa: 500, eps: 0.1, step: 0.01, seed: 0}
```

Every run's config is validated when the study is loaded, so ``--dry-run`` catches a bad key
before anything trains.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..train import Config, ConfigError, from_dict
from ..train.config import parse_overrides

STUDY_KEYS = ("name", "title", "description", "base", "runs", "seeds", "evaluate")
EVAL_KEYS = ("n", "attacks", "n_aa", "eps", "step", "norm", "seed", "batch_size")
RUN_ATTACKS = ("clean", "pgd20", "cw20", "aa")


@dataclass
class EvalSpec:
    n: int = 1000
    attacks: list[str] = field(default_factory=lambda: ["clean", "pgd20", "cw20", "aa"])
    n_aa: int = 500
    eps: float | None = None
    step: float | None = None
    norm: str = "linf"
    seed: int = 0
    batch_size: int | None = None


@dataclass
class RunSpec:
    label: str
    seed: int
    config: Config


@dataclass
class Study:
    name: str
    title: str
    description: str
    base: dict[str, Any]
    methods: list[dict[str, Any]]
    seeds: list[int]
    evaluate: EvalSpec
    source: str = ""

    def labels(self) -> list[str]:
        return [m["label"] for m in self.methods]

    def runs(self, runs_dir: str | Path, only: list[str] | None = None) -> list[RunSpec]:
        """One validated train config per (seed, method), its out_dir under ``runs_dir``."""
        out = []
        for s in self.seeds:  # seed-major, so a partial study already compares the methods
            for m in self.methods:
                if only and m["label"] not in only:
                    continue
                values = _merge(self.base, {k: v for k, v in m.items() if k != "label"})
                values.update(seed=s, name=f"{self.name}/{m['label']}/seed{s}",
                              out_dir=str(Path(runs_dir) / _slug(m["label"]) / f"seed{s}"))
                try:
                    cfg = from_dict(values)
                except ConfigError as e:
                    raise ConfigError(f"study {self.name}, run {m['label']!r}: {e}") from None
                out.append(RunSpec(m["label"], s, cfg))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "base": self.base, "runs": self.methods,
                "seeds": self.seeds, "evaluate": self.evaluate.__dict__}


def _slug(label: str) -> str:
    return label.replace("+", "_").replace("/", "_").replace(" ", "_")


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _unknown(kind: str, key: str, keys: tuple[str, ...]) -> ConfigError:
    close = difflib.get_close_matches(key, keys, n=1)
    return ConfigError(f"unknown {kind} key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def from_values(values: dict[str, Any], source: str = "", overrides: list[str] | None = None) -> Study:
    """A validated Study from parsed YAML (plus ``key=value`` overrides, e.g. ``base.optim.epochs=1``)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source or 'study'} must be a mapping with keys {', '.join(STUDY_KEYS)}")
    values = _merge(values, parse_overrides(overrides or []))
    for k in values:
        if k not in STUDY_KEYS:
            raise _unknown("study", k, STUDY_KEYS)
    for required in ("name", "base", "runs"):
        if required not in values:
            raise ConfigError(f"{source or 'study'} needs a {required!r} entry")
    methods = values["runs"]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, dict) and "label" in m for m in methods):
        raise ConfigError("study 'runs' must be a non-empty list of mappings, each with a 'label'")
    labels = [m["label"] for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"study run labels must be unique, got {labels}")
    seeds = values.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"study 'seeds' must be a list of integers >= 0, got {seeds!r}")
    ev = values.get("evaluate", {}) or {}
    for k in ev:
        if k not in EVAL_KEYS:
            raise _unknown("evaluate", k, EVAL_KEYS)
    spec = EvalSpec(**ev)
    bad = [a for a in spec.attacks if a not in RUN_ATTACKS]
    if bad:
        raise ConfigError(f"study evaluate.attacks: {bad[0]!r} is not one of {', '.join(RUN_ATTACKS)}")
    if spec.n < 1 or spec.n_aa < 0 or spec.n_aa > spec.n:
        raise ConfigError(f"study evaluate needs n >= 1 and 0 <= n_aa <= n, got n={spec.n}, n_aa={spec.n_aa}")
    study = Study(name=str(values["name"]), title=str(values.get("title", values["name"])),
                  description=str(values.get("description", "")), base=values["base"], methods=methods,
                  seeds=seeds, evaluate=spec, source=source)
    study.runs("runs")  # validate every run config now
    return study


def load(path: str | Path, overrides: list[str] | None = None) -> Study:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study file {p} not found; see configs/studies/")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"study file {p} is not valid YAML ({str(e).splitlines()[0]})") from None
    return from_values(values, str(p), overrides)

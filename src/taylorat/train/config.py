"""Run configuration: a YAML file (plus ``section.key=value`` overrides) that fully describes a run.

Sections: ``data``, ``model``, ``method``, ``attack`` (the training attack), ``optim``,
``eval`` (the per-epoch check and model selection) and top-level run keys. Unknown keys,
wrong types and out-of-range values stop with a one-line ``ConfigError`` naming the fix.
Numbers may be written as fractions (``8/255``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ..attacks.pgd import PROJECTIONS
from ..common import InputError
from ..data import available as available_datasets
from ..models import check_name as check_model_name
from ..objectives import ASAM, SAM, get_base, methods, minimizer_options, minimizers, order_defaults, split_name
from ..objectives.taylor import COMPAT
from ..objectives.weight_noise import SCOPES


class ConfigError(InputError):
    """A config value or key that cannot be used; the message names the fix."""


@dataclass
class DataConfig:
    """``data.*``: which dataset, where its files are, the held-out selection split and a training subset."""

    dataset: str = "cifar10"
    data_dir: str = "./data"
    download: bool = True
    holdout: int = 1000  # images held out of the training set for model selection
    train_subset: Union[int, None] = None  # seeded, class-stratified subset of the training set
    crop: Union[bool, None] = None  # None: the dataset's default
    flip: Union[bool, None] = None
    options: dict = field(default_factory=dict)  # dataset-specific (e.g. synthetic sizes)


@dataclass
class ModelConfig:
    """``model.*``: a registered architecture name (``taylorat.models.available()``)."""

    name: str = "preact_resnet18"


@dataclass
class MethodConfig:
    """``method.*``: the base method and Taylor order, their weights and the randomized-weight noise (docs/method.md)."""

    name: str = "trades+1st+2nd"  # BASE[+1st[+2nd]], BASE a registered base: trades | at | mart | awp-trades
    beta: float = 6.0  # 1/λ of TRADES (and MART's β); unused by at
    eta: Union[float, None] = None  # None: 0.3 for +1st, 0.2 for +1st+2nd, 0 for trades
    eta2: Union[float, None] = None  # None: η/2 for +1st+2nd, 0 otherwise
    compat: str = "symmetric"  # symmetric | reference (the authors' second-order targets)
    noise_std: Union[float, None] = None  # None: the base's σ for Taylor orders (1e-4; awp-trades 0, as its reference)
    noise_scope: str = "conv"  # conv | weights | all | none


@dataclass
class MinimizerConfig:
    """``minimizer.*``: how the step's gradient is taken (docs/method.md §10); composes with every method.

    ``name`` unset: the method's own (``awp`` for ``awp-trades``, else ``none``). Options a minimizer
    does not read must stay unset.
    """

    name: Union[str, None] = None  # none | sam | asam | awp
    rho: Union[float, None] = None  # sam, asam: radius ρ (None: 0.05 for sam, 0.5 for asam)
    eta: Union[float, None] = None  # asam: η in T = |w| + η (None: 0.01)
    gamma: Union[float, None] = None  # awp: relative size γ of the weight perturbation (None: 0.005)
    warmup: Union[int, None] = None  # first epoch the minimizer acts (None: 10 for awp, as its reference; else 0)


@dataclass
class AttackConfig:
    """``attack.*``: the training attack (PGD-K on the base's loss) and its threat model."""

    norm: str = "linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    mode: str = "eval"  # eval (TRADES, the paper) | train (the AT reference's attack, BN statistics move)
    projection: str = "ball_then_box"  # | box_then_ball (TRADES' l2 code: clip to [0,1], then into the ball)


@dataclass
class OptimConfig:
    """``optim.*``: SGD, the step schedule (milestones as fractions of the epochs) and weight averaging."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of the epochs
    gamma: float = 0.1
    fused: bool = False  # the fused SGD kernel (one kernel for all parameters)
    average: str = "none"  # none | ema | swa: weight averaging, evaluated with recomputed BN statistics
    ema_decay: float = 0.999
    swa_start: float = 0.5  # fraction of the epochs after which SWA averages (once per epoch)


@dataclass
class EvalConfig:
    """``eval.*``: the per-epoch PGD check that chooses ``best``, and the images tracked for curves only."""

    select_on: str = "holdout"  # holdout | test: where the per-epoch check and `best` are measured
    n: int = 1000
    eps: float = 0.031
    step: float = 0.003
    steps: int = 20
    batch_size: int = 256
    every: int = 1
    track_test: int = 0  # first N test images: clean and PGD accuracy every epoch, for curves only (never selection)
    track_train: int = 0  # N fixed training images (seeded): the same, to show the robust generalisation gap


@dataclass
class Config:
    """A whole run: top-level run keys and one section per concern; ``from_dict``/``load`` validate it."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs/run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast for training; evaluation stays fp32)
    channels_last: str = "auto"  # auto (on where it measures faster, README "Performance") | true | false
    compile: str = "none"  # none | default | reduce-overhead | max-autotune: torch.compile of the model's features and the loss
    sync_bn: bool = False  # torchrun: SyncBatchNorm (BN statistics over the global batch)
    taylor_stats: str = "global"  # torchrun: head statistics of the global batch (as the reference) | local (per rank)
    checkpoints: str = "paper"  # paper | none: extra checkpoints on the paper's App. B.2 schedule
    log_every: int = 20
    progress: bool = True
    curves: bool = True  # draw curves.png beside metrics.jsonl after every epoch (needs taylorat[plot])
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # + tensorboard, wandb (metrics.jsonl always)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    minimizer: MinimizerConfig = field(default_factory=MinimizerConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def resolved_method(self) -> dict[str, Any]:
        """The method's parameters after the per-name defaults (what the run actually uses)."""
        m = self.method
        base, order = split_name(m.name)
        spec = get_base(base)
        eta_d, eta2_d = order_defaults(m.name)
        eta = eta_d if m.eta is None else m.eta
        eta2 = (eta / 2 if eta2_d is None else eta2_d) if m.eta2 is None else m.eta2
        noise = spec.default_noise_std(order) if m.noise_std is None else m.noise_std
        out = {"base": base, "beta": m.beta, "eta": eta, "eta2": eta2, "compat": m.compat, "noise_std": noise,
               "noise_scope": m.noise_scope}
        out.update({k: getattr(m, k, v) for k, v in spec.options.items()})
        return out

    def resolved_minimizer(self) -> dict[str, Any]:
        """The minimizer's name and every option it reads, after the defaults (what the run uses)."""
        mz = self.minimizer
        name = mz.name if mz.name is not None else get_base(split_name(self.method.name)[0]).default_minimizer
        out = {"name": name}
        for key, default in minimizer_options(name).items():
            value = getattr(mz, key)
            out[key] = default if value is None else value
        if out.get("rho", 0) is None:
            out["rho"] = {"sam": SAM.default_rho, "asam": ASAM.default_rho}[name]
        return out


_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            return float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{key} must be a number (e.g. 0.031 or 8/255), got {value!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        return _number(value, key)
    if tp is str:
        if isinstance(value, bool) and key == "channels_last":  # true / false as well as auto
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if tp is list or get_origin(tp) is list:
        if get_args(tp) == (str,):  # a list of names; a single name is a list of one
            items = [value] if isinstance(value, str) else value
            if isinstance(items, (list, tuple)) and all(isinstance(v, str) for v in items):
                return list(items)
            raise ConfigError(f"{key} must be a list of names, got {value!r}")
        if isinstance(value, (list, tuple)):
            return [_number(v, key) for v in value]
        raise ConfigError(f"{key} must be a list, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


MOVED = {"method.awp_gamma": "minimizer.gamma", "method.awp_warmup": "minimizer.warmup"}


def _unknown(key: str, choices: list[str]) -> ConfigError:
    """One line naming the closest valid key (same leaf name anywhere, else the closest spelling)."""
    if key in MOVED:
        return ConfigError(f"config key {key!r} is now {MOVED[key]!r} (the minimizer section)")
    leaf = key.split(".")[-1]
    same = [c for c in choices if c.split(".")[-1] == leaf]
    close = same or difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _apply(obj: Any, values: dict[str, Any], all_keys: list[str], prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown(full, all_keys)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} must be a mapping of its keys, got {value!r}")
            _apply(current, value, all_keys, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        out += _all_keys(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else [f"{prefix}{f.name}"]
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.05", "method.name=trades"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.epochs=30)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def from_dict(values: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """A validated Config from nested values and ``key=value`` overrides."""
    cfg = Config()
    keys = _all_keys(cfg)
    if values is not None:
        if not isinstance(values, dict):
            raise ConfigError("a config must be a mapping of sections (data, model, method, attack, optim, eval)")
        _apply(cfg, values, keys)
    if overrides:
        _apply(cfg, parse_overrides(overrides), keys)
    validate(cfg)
    return cfg


def load(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (None: the defaults) and apply overrides."""
    values = None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; see configs/ for examples")
        try:
            values = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML ({first})") from None
    return from_dict(values, overrides)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(value: str, choices: tuple[str, ...] | list[str], key: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}{hint}")


def _validate_minimizer(cfg: Config) -> None:
    mz, base = cfg.minimizer, split_name(cfg.method.name)[0]
    if mz.name is not None:
        _choice(mz.name, minimizers(), "minimizer.name")
    implied = get_base(base).default_minimizer
    if implied != "none" and mz.name not in (None, implied):
        raise ConfigError(f"method {cfg.method.name!r} is {base.split('-', 1)[-1]} with minimizer.name={implied}; "
                          f"for minimizer.name={mz.name} use method.name={cfg.method.name.replace(base, 'trades')}")
    r = cfg.resolved_minimizer()
    for key in ("rho", "eta", "gamma", "warmup"):
        if getattr(mz, key) is not None and key not in r:
            raise ConfigError(f"minimizer.{key} is not an option of minimizer.name={r['name']} "
                              f"(its options: {', '.join(k for k in r if k != 'name')})")
    _check(r.get("rho", 1) > 0 and math.isfinite(r.get("rho", 1)), f"minimizer.rho must be > 0, got {r.get('rho')}")
    _check(r.get("eta", 0) >= 0 and math.isfinite(r.get("eta", 0)), f"minimizer.eta must be >= 0, got {r.get('eta')}")
    _check(r.get("gamma", 0) >= 0 and math.isfinite(r.get("gamma", 0)),
           f"minimizer.gamma must be >= 0, got {r.get('gamma')}")
    _check(r["warmup"] >= 0, f"minimizer.warmup must be >= 0, got {r['warmup']}")


def validate(cfg: Config) -> None:
    """Range and choice checks for every value (types were checked while reading)."""
    def finite(v: float) -> bool:
        return v is not None and math.isfinite(v)

    _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device) is not None,
           f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N")
    _choice(cfg.precision, ("fp32", "bf16"), "precision")
    _choice(cfg.checkpoints, ("paper", "none"), "checkpoints")
    _choice(cfg.compile, ("none", "default", "reduce-overhead", "max-autotune"), "compile")
    _choice(cfg.channels_last, ("auto", "true", "false"), "channels_last")
    _choice(cfg.taylor_stats, ("local", "global"), "taylor_stats")
    for backend in cfg.logging:
        _choice(backend, ("jsonl", "tensorboard", "wandb"), "logging")
    _check(cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}")
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    d = cfg.data
    try:
        check_model_name(cfg.model.name)
    except InputError as e:
        raise ConfigError(f"model.name: {e}") from None
    dataset = d.dataset.strip().lower().replace("-", "_")
    if dataset not in available_datasets():
        close = difflib.get_close_matches(dataset, available_datasets(), n=1)
        raise ConfigError(f"data.dataset: unknown dataset {d.dataset!r}; available: {', '.join(available_datasets())}"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
    _check(d.holdout >= 0, f"data.holdout must be >= 0, got {d.holdout}")
    _check(d.train_subset is None or d.train_subset > 0, f"data.train_subset must be > 0, got {d.train_subset}")
    m = cfg.method
    _choice(m.name, methods(), "method.name")
    _choice(m.compat, COMPAT, "method.compat")
    _choice(m.noise_scope, SCOPES, "method.noise_scope")
    _check(finite(m.beta) and m.beta >= 0, f"method.beta must be >= 0, got {m.beta}")
    base, order = split_name(m.name)
    if not order:
        _check(not m.eta and not m.eta2, f"method {m.name!r} has no Taylor terms (eta=0); use {base}+1st or "
                                         f"{base}+1st+2nd to set eta")
    if order == "+1st":
        _check(not m.eta2, f"method {m.name!r} has no second-order term; use {base}+1st+2nd to set eta2")
    _validate_minimizer(cfg)
    r = cfg.resolved_method()
    _check(finite(r["eta"]) and 0 <= r["eta"] <= 1, f"method.eta must be in [0, 1], got {r['eta']}")
    _check(finite(r["eta2"]) and r["eta2"] >= 0, f"method.eta2 must be >= 0, got {r['eta2']}")
    _check(finite(r["noise_std"]) and r["noise_std"] >= 0, f"method.noise_std must be >= 0, got {r['noise_std']}")
    for sec, name in ((cfg.attack, "attack"), (cfg.eval, "eval")):
        if name == "attack":
            _choice(sec.norm, ("linf", "l2"), "attack.norm")
            _choice(sec.mode, ("eval", "train"), "attack.mode")
            _choice(sec.projection, PROJECTIONS, "attack.projection")
        _check(finite(sec.eps) and sec.eps >= 0, f"{name}.eps must be >= 0, got {sec.eps}")
        _check(not (getattr(sec, "norm", "linf") == "linf" and sec.eps > 1),
               f"{name}.eps={sec.eps} exceeds the [0,1] pixel range; write it in [0,1] units, e.g. 8/255")
        _check(finite(sec.step) and sec.step > 0, f"{name}.step must be > 0, got {sec.step}")
        _check(sec.steps >= 1, f"{name}.steps must be >= 1, got {sec.steps}")
    o = cfg.optim
    _check(o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}")
    _check(o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}")
    _check(finite(o.lr) and o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(0 < o.gamma <= 1, f"optim.gamma must be in (0, 1], got {o.gamma}")
    _choice(o.average, ("none", "ema", "swa"), "optim.average")
    _check(0 < o.ema_decay < 1, f"optim.ema_decay must be in (0, 1), got {o.ema_decay}")
    _check(0 <= o.swa_start < 1, f"optim.swa_start must be in [0, 1), got {o.swa_start}")
    _check(all(0 < x <= 1 for x in o.milestones) and o.milestones == sorted(o.milestones),
           f"optim.milestones must be increasing fractions of the epochs in (0, 1], got {o.milestones}")
    e = cfg.eval
    _choice(e.select_on, ("holdout", "test"), "eval.select_on")
    _check(e.n >= 1, f"eval.n must be >= 1, got {e.n}")
    _check(e.batch_size >= 1, f"eval.batch_size must be >= 1, got {e.batch_size}")
    _check(e.every >= 1, f"eval.every must be >= 1, got {e.every}")
    _check(e.track_test >= 0 and e.track_train >= 0,
           f"eval.track_test and eval.track_train must be >= 0, got {e.track_test}, {e.track_train}")
    if e.select_on == "holdout":
        _check(d.holdout >= 1, "eval.select_on=holdout needs data.holdout >= 1 (or set eval.select_on=test)")

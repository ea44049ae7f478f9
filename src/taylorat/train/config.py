"""Run configuration: a YAML file (plus ``section.key=value`` overrides) that fully describes a run.

Sections: ``data``, ``model``, ``method``, ``attack`` (the training attack), ``optim``,
``eval`` (the per-epoch check and model selection) and top-level run keys. Unknown keys,
wrong types and out-of-range values stop with a one-line ``ConfigError`` naming the fix.
Numbers may be written as fractions (``8/255``). Each field declares its choices (``Literal``)
and its range (``_ranged``); ``validate`` adds the checks across keys and against registries.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_type_hints

import yaml

from ..common import InputError, read_text
from ..data import available as available_datasets
from ..models import accepts as model_accepts
from ..models import check_name as check_model_name
from ..objectives import ASAM, SAM, get_base, methods, minimizer_options, order_defaults, split_name
from ..objectives.combine import resolve_eta2
from .config_keys import suggest as _suggest
from .config_keys import unknown_key as _unknown
from .config_types import ConfigError
from .config_types import allowed as _allowed
from .config_types import choice as _choice
from .config_types import coerce as _coerce
from .config_types import ranged as _ranged
from .config_types import within as _within


@dataclass
class ExtraConfig:
    """``data.extra.*``: an extra labelled pool (e.g. generated images) mixed into every batch (data/extra.py)."""

    path: Union[str, None] = None  # an uncompressed .npz with image (uint8 N x H x W x C) and label (int N)
    fraction: float = _ranged(0.0, "in [0, 1)")  # share of every batch drawn from the pool: round(fraction * B)
    on_device: Literal["auto", "true", "false"] = "auto"  # auto: the pool goes to the device when it is small


@dataclass
class DataConfig:
    """``data.*``: which dataset, where its files are, the held-out selection split and a training subset."""

    dataset: str = "cifar10"
    data_dir: Union[str, None] = None  # None: ./data, then a system copy; a folder given must hold the files
    download: bool = True
    holdout: int = _ranged(1000, ">= 0")  # images held out of the training set for model selection
    train_subset: Union[int, None] = _ranged(None, "> 0")  # seeded, class-stratified subset of the training set
    crop: Union[bool, None] = None  # None: the dataset's default
    flip: Union[bool, None] = None
    options: dict = field(default_factory=dict)  # dataset-specific (e.g. synthetic sizes)
    extra: ExtraConfig = field(default_factory=ExtraConfig)


@dataclass
class ModelConfig:
    """``model.*``: a registered architecture name (``taylorat.models.available()``)."""

    name: str = "preact_resnet18"
    activation: Literal["relu", "silu"] = "relu"  # silu: PreAct ResNet and WideResNet only
    init: Union[str, None] = None  # a taylorat checkpoint to start from (train/init_weights.py); None: random
    init_head: Literal["keep", "new"] = "keep"  # new: a freshly initialised head for this dataset's classes


@dataclass
class MethodConfig:
    """``method.*``: the base method and Taylor order, their weights, the randomized-weight noise (docs/method.md)."""

    name: str = "trades+1st+2nd"  # BASE[+1st[+2nd]], BASE a registered base: trades | at | mart | awp-trades
    beta: float = _ranged(6.0, ">= 0")  # 1/λ of TRADES (and MART's β); unused by at
    eta: Union[float, None] = _ranged(None, "in [0, 1]")  # None: the order's η (objectives.bases.ORDERS)
    eta2: Union[float, None] = _ranged(None, ">= 0")  # None: the order's η2 (+1st+2nd: η/2, resolve_eta2)
    compat: Literal["symmetric", "reference"] = "symmetric"  # reference: the authors' second-order targets
    noise_std: Union[float, None] = _ranged(None, ">= 0")  # None: the base's σ for Taylor orders (1e-4; awp-trades 0)
    noise_scope: Literal["conv", "weights", "all", "none"] = "conv"
    label_smoothing: float = _ranged(0.0, "in [0, 1)")  # the CE terms only (docs/method.md), never KL or Taylor


@dataclass
class MinimizerConfig:
    """``minimizer.*``: how the step's gradient is taken (docs/method.md §10); composes with every method.

    ``name`` unset: the method's own (``awp`` for ``awp-trades``, else ``none``). Options a minimizer
    does not read must stay unset.
    """

    name: Union[Literal["none", "sam", "asam", "awp"], None] = None
    rho: Union[float, None] = _ranged(None, "> 0")  # sam, asam: radius ρ (None: 0.05 for sam, 0.5 for asam)
    eta: Union[float, None] = _ranged(None, ">= 0")  # asam: η in T = |w| + η (None: 0.01)
    gamma: Union[float, None] = _ranged(None, ">= 0")  # awp: relative size γ of the perturbation (None: 0.005)
    warmup: Union[int, None] = _ranged(None, ">= 0")  # first epoch it acts (None: 10 for awp, its reference; else 0)


@dataclass
class AttackConfig:
    """``attack.*``: the training attack (PGD-K on the base's loss) and its threat model."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = _ranged(8 / 255, ">= 0")
    step: float = _ranged(2 / 255, "> 0")
    steps: int = _ranged(10, ">= 1")
    mode: Literal["eval", "train"] = "eval"  # eval: TRADES, the paper; train: the AT reference's (BN statistics move)
    projection: Literal["ball_then_box", "box_then_ball"] = "ball_then_box"  # box_then_ball: TRADES' l2 code


@dataclass
class OptimConfig:
    """``optim.*``: SGD, the schedule (step: milestones as fractions of the epochs; cosine), warm-up,
    gradient accumulation and weight averaging."""

    epochs: int = _ranged(200, ">= 1")
    batch_size: int = _ranged(128, ">= 1")
    lr: float = _ranged(0.1, "> 0")
    momentum: float = _ranged(0.9, "in [0, 1)")
    weight_decay: float = _ranged(5e-4, ">= 0")
    nesterov: bool = False
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of the epochs
    gamma: float = _ranged(0.1, "in (0, 1]")
    schedule: Literal["step", "cosine"] = "step"  # cosine: lr·½(1 + cos(π·t)) over the steps after the warm-up
    warmup_epochs: float = _ranged(0.0, ">= 0")  # linear warm-up from 0, per step
    accumulate: int = _ranged(1, ">= 1")  # K micro-batches per optimizer step (the batch is optim.batch_size)
    fused: bool = False  # the fused SGD kernel (one kernel for all parameters)
    average: Literal["none", "ema", "swa"] = "none"  # weight averaging, evaluated with recomputed BN statistics
    ema_decay: float = _ranged(0.999, "in (0, 1)")
    ema_warmup: bool = False  # decay min(ema_decay, (1 + t) / (10 + t)) at step t, as Wang et al. 2023's code
    swa_start: float = _ranged(0.5, "in [0, 1)")  # fraction of the epochs after which SWA averages (once per epoch)
    # stop when the running loss exceeds this x max(ln K, median of the first 3 epochs' loss); 0: only NaN/inf
    diverge_factor: float = _ranged(1e4, ">= 0")


@dataclass
class EvalConfig:
    """``eval.*``: the per-epoch PGD check that chooses ``best``, and the images tracked for curves only."""

    select_on: Literal["holdout", "test"] = "holdout"  # where the per-epoch check and `best` are measured
    n: int = _ranged(1000, ">= 1")
    eps: float = _ranged(0.031, ">= 0")
    step: float = _ranged(0.003, "> 0")
    steps: int = _ranged(20, ">= 1")
    batch_size: int = _ranged(256, ">= 1")
    every: int = _ranged(1, ">= 1")
    track_test: int = _ranged(0, ">= 0")  # first N test images: clean/PGD accuracy for curves only
    track_train: int = _ranged(0, ">= 0")  # N seeded training images: the same (generalisation gap)


@dataclass
class Config:
    """A whole run: top-level run keys and one section per concern; ``from_dict``/``load`` validate it."""

    name: str = "run"
    seed: int = _ranged(0, ">= 0")
    out_dir: str = "runs/run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast for training; evaluation stays fp32
    channels_last: Literal["auto", "true", "false"] = "auto"  # auto: on where faster (README "Performance")
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"  # of the features and the loss
    sync_bn: bool = False  # torchrun: SyncBatchNorm (BN statistics over the global batch)
    taylor_stats: Literal["local", "global"] = "global"  # torchrun: head statistics of the global batch or per rank
    checkpoints: Literal["paper", "none"] = "paper"  # paper: extra checkpoints on the paper's App. B.2 schedule
    log_every: int = _ranged(20, ">= 1")
    progress: bool = True
    curves: bool = True  # draw curves.png beside metrics.jsonl after every epoch (needs taylorat[plot])
    logging: list[Literal["jsonl", "tensorboard", "wandb"]] = field(default_factory=lambda: ["jsonl"])  # jsonl: always
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
        eta2 = resolve_eta2(eta, eta2_d if m.eta2 is None else m.eta2)
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


def _apply(obj: Any, values: dict[str, Any], all_keys: list[str], prefix: str = "", source: str | None = None) -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            if not prefix and isinstance(value, dict) and value:  # a section: `optimizer: {lr: ...}`
                first = f"{full}.{next(iter(value))}"
                raise _unknown(*((first, all_keys) if _suggest(first, all_keys) else (full, all_keys, True)),
                               source=source)
            raise _unknown(full, all_keys, source=source)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} must be a mapping of its keys, got {value!r}")
            _apply(current, value, all_keys, f"{full}.", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any, dataclasses.Field]]:
    """``(key, value, type, field)`` of every non-section field, in declaration order."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v, hints[f.name], f


def _all_keys(obj: Any) -> list[str]:
    return [key for key, *_ in _leaves(obj)]


def choices() -> dict[str, tuple[str, ...]]:
    """Every key whose values its field declares, with them: ``{"attack.norm": ("linf", "l2"), ...}``."""
    return {key: _allowed(tp) for key, _, tp, _ in _leaves(Config()) if _allowed(tp)}


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


def from_dict(values: dict[str, Any] | None = None, overrides: list[str] | None = None,
              source: str | None = None) -> Config:
    """A validated Config from nested values (read from the file ``source``, named in errors) and overrides."""
    cfg = Config()
    keys = _all_keys(cfg)
    if values is not None:
        if not isinstance(values, dict):
            raise ConfigError("a config must be a mapping of sections (data, model, method, attack, optim, eval)")
        _apply(cfg, values, keys, source=source)
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
            values = yaml.safe_load(read_text(p, "config file"))
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML ({first})") from None
    over = parse_overrides(overrides or [])
    model = (over.get("model") or {}).get("name") if isinstance(over.get("model"), dict) else None
    if isinstance(values, dict) and values.get("name") and model and "name" not in over and \
            model != (values.get("model") or {}).get("name"):  # the file's name says its model: add the one that runs
        overrides = [*overrides, f"name={values['name']}-{model}"]
    return from_dict(values, overrides, source=None if path is None else str(path))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_declared(cfg: Config) -> None:
    """Every field's declared choices (``Literal``) and range (``_ranged``), also for a Config edited in code."""
    for key, value, tp, f in _leaves(cfg):
        if _allowed(tp):
            for item in value if isinstance(value, list) else ([] if value is None else [value]):
                _choice(item, _allowed(tp), key)
        bound = f.metadata.get("range")
        _check(bound is None or value is None or _within(value, bound), f"{key} must be {bound}, got {value}")


def _validate_minimizer(cfg: Config) -> None:
    """The minimizer fits the method and sets only options it reads (ranges are declared on the fields)."""
    mz, base = cfg.minimizer, split_name(cfg.method.name)[0]
    implied = get_base(base).default_minimizer
    if implied != "none" and mz.name not in (None, implied):
        raise ConfigError(f"method {cfg.method.name!r} is {base.split('-', 1)[-1]} with minimizer.name={implied}; "
                          f"for minimizer.name={mz.name} use method.name={cfg.method.name.replace(base, 'trades')}")
    r = cfg.resolved_minimizer()
    for key in ("rho", "eta", "gamma", "warmup"):
        if getattr(mz, key) is not None and key not in r:
            raise ConfigError(f"minimizer.{key} is not an option of minimizer.name={r['name']} "
                              f"(its options: {', '.join(k for k in r if k != 'name')})")


def validate(cfg: Config) -> None:
    """The declared choices and ranges, then the checks that involve a registry or several keys."""
    _check_declared(cfg)
    _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device) is not None,
           f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N")
    try:
        check_model_name(cfg.model.name)
    except InputError as e:
        raise ConfigError(f"model.name: {e}") from None
    d = cfg.data
    dataset = d.dataset.strip().lower().replace("-", "_")
    if dataset not in available_datasets():
        close = difflib.get_close_matches(dataset, available_datasets(), n=1)
        raise ConfigError(f"data.dataset: unknown dataset {d.dataset!r}; available: {', '.join(available_datasets())}"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
    m = cfg.method
    _choice(m.name, methods(), "method.name")
    base, order = split_name(m.name)
    if not order:
        _check(not m.eta and not m.eta2, f"method {m.name!r} has no Taylor terms (eta=0); use {base}+1st or "
                                         f"{base}+1st+2nd to set eta")
    if order == "+1st":
        _check(not m.eta2, f"method {m.name!r} has no second-order term; use {base}+1st+2nd to set eta2")
    _validate_minimizer(cfg)
    noise = cfg.resolved_method()["noise_std"]  # a registered base's default as well
    _check(math.isfinite(noise) and noise >= 0, f"method.noise_std must be >= 0, got {noise}")
    for sec, name in ((cfg.attack, "attack"), (cfg.eval, "eval")):
        _check(not (getattr(sec, "norm", "linf") == "linf" and sec.eps > 1),
               f"{name}.eps={sec.eps} exceeds the [0,1] pixel range; write it in [0,1] units, e.g. 8/255")
    o = cfg.optim
    _check(all(0 < x <= 1 for x in o.milestones) and o.milestones == sorted(o.milestones),
           f"optim.milestones must be increasing fractions of the epochs in (0, 1], got {o.milestones}")
    if cfg.eval.select_on == "holdout":
        _check(d.holdout >= 1, "eval.select_on=holdout needs data.holdout >= 1 (or set eval.select_on=test)")
    _validate_recipe(cfg)


def _validate_recipe(cfg: Config) -> None:
    """Extra data, warm-up, accumulation, activation and label smoothing against the rest of the config."""
    x, o = cfg.data.extra, cfg.optim
    _check(x.path is None or x.fraction > 0, f"data.extra.path={x.path} is set but data.extra.fraction is 0; "
                                             "set a fraction in (0, 1) (e.g. 0.7) or leave the path unset")
    _check(x.fraction == 0 or bool(x.path), f"data.extra.fraction={x.fraction} needs data.extra.path "
                                            "(an uncompressed .npz with image and label)")
    _check(o.warmup_epochs <= o.epochs, f"optim.warmup_epochs={o.warmup_epochs} exceeds optim.epochs={o.epochs}")
    _check(o.accumulate <= o.batch_size, f"optim.accumulate={o.accumulate} exceeds optim.batch_size={o.batch_size}: "
                                         "each micro-batch needs at least one image")
    mz = cfg.resolved_minimizer()["name"]
    _check(o.accumulate == 1 or mz == "none", f"optim.accumulate={o.accumulate} works with minimizer none only "
                                              f"(this run's minimizer is {mz}); set optim.accumulate=1")
    _check(cfg.model.activation == "relu" or model_accepts(cfg.model.name, "activation"),
           f"model.activation={cfg.model.activation} needs a model that takes it (preact_resnet18, wrn_<depth>_"
           f"<width>); {cfg.model.name} has relu only")
    _check(cfg.model.init_head == "keep" or cfg.model.init is not None,
           "model.init_head=new replaces the head of a checkpoint: set model.init to one")
    base = split_name(cfg.method.name)[0]
    _check(cfg.method.label_smoothing == 0 or get_base(base).label_smoothing,
           f"method.label_smoothing: base {base!r} does not take it (trades, at, mart and awp-trades do)")

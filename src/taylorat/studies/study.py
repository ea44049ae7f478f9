"""A study or a paper table as data: runs, seeds, the evaluation, and (for tables) the paper's numbers.

```yaml
name: fashion_mnist_cpu
title: Fashion-MNIST, small_cnn, l_inf eps = 0.1
base: {...}            # a `taylorat train` config shared by every run (optional)
runs:                  # one entry per row
  - {label: trades, method: {name: trades}}                 # keys override `base`
  - {label: "1st (eta=0.05)", method: {name: trades+1st, eta: 0.05},   # or config: a file next to this one
     paper: {clean: 83.19, pgd20: 53.98}, surrogate: "..."} # the paper's numbers; transfer source
seeds: [0, 1, 2]
columns: [clean, pgd20, cw20, aa]                           # what the rendered table shows
evaluate: {n: 1000, attacks: [clean, pgd20, cw20, aa], n_aa: 500, eps: 0.1, step: 0.01, seed: 0,
           attack_eps: {aa: 0.1}, last: [clean, pgd20, cw20],  # per-attack ε; attacks on `last` too
           flatness: {alphas: [0.05, 0.1, 0.2], draws: 5, n: 500}}  # weight-space flatness of `last`
context: [...]                                              # other papers' rows, shown as printed
reuse: [docs/studies/other/results.json]  # a retrained run reproducing a record there reuses it (.reuse; reuse_only)
```

Besides the keys of :class:`EvalSpec`'s base, ``evaluate`` takes each attack's own keys as
``taylorat.evaluate.builtin.ATTACK_OPTIONS`` declares them: its subset of the ``n`` images
(``n_aa``: AutoAttack, ``n_rays``: RayS) and its options (``rays_queries``).

Paper tables live in ``taylorat/studies/tables/`` (``taylorat reproduce --list``). Every run's
config is validated when the study is loaded, so ``--dry-run`` catches a bad key before training.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..common import read_text
from ..evaluate import available_attacks, labels
from ..evaluate.builtin import AA_VERSIONS, ATTACK_OPTIONS, attack_metrics, attack_options
from ..train import Config, ConfigError, from_dict
from ..train.config import parse_overrides

STUDY_KEYS = ("name", "title", "caption", "description", "base", "runs", "seeds", "evaluate", "columns", "context",
              "reuse")
RUN_KEYS = ("label", "config", "surrogate", "paper", "baseline", "reuse_only")


def metrics() -> tuple[str, ...]:
    """What a study row can report: every registered attack with a row, and the attacks' other numbers (ADBD)."""
    return tuple(labels()) + tuple(attack_metrics())


TABLES_DIR = Path(__file__).with_name("tables")
SHORT_EPOCHS = 30


def list_tables() -> list[tuple[str, str]]:
    """(name, title) of every paper table shipped with taylorat."""
    out = []
    for p in sorted(TABLES_DIR.glob("table*.yaml")):
        values = yaml.safe_load(p.read_text()) or {}
        out.append((values.get("name", p.stem), values.get("title", "")))
    return out


def _eval_fields() -> list[tuple[str, Any, Any]]:
    """The fields of :class:`EvalSpec`: the base ones with the attacks' own keys (``ATTACK_OPTIONS``) among
    them, each where results.json has always listed it: a count every evaluation records (``n_aa``) after
    ``attacks``, the others (``rays_queries``, ``n_rays``) before ``attack_eps``."""
    always, own = [], []
    for o in ATTACK_OPTIONS.values():
        if o.subset and o.subset_always:
            always.append((o.subset, int | None, None))  # None: n, set when the study is loaded
        own += [(k, Any, field(default_factory=lambda v=v: copy.deepcopy(v))) for k, v in o.options.items()]
        if o.subset and not o.subset_always:
            own.append((o.subset, int | None, None))  # None: n
    return [("n", int, 1000),
            ("attacks", list[str], field(default_factory=lambda: ["clean", "pgd20", "cw20", "aa"])),
            *always,
            ("eps", float | None, None),
            ("step", float | None, None),
            ("norm", str | None, None),  # None: the run's threat model
            ("seed", int, 0),
            ("batch_size", int | None, None),
            *own,
            ("attack_eps", dict, field(default_factory=dict)),  # radius of single attacks, e.g. {aa: 0.1}
            ("last", list[str], field(default_factory=list)),  # attacks also run on the `last` checkpoint (n images)
            # weight-space flatness of `last` (analysis.weight_flatness): {alphas, draws, n, steps, seed}; {}: none
            ("flatness", dict, field(default_factory=dict))]


EvalSpec = dataclasses.make_dataclass("EvalSpec", _eval_fields())
EvalSpec.__module__ = __name__  # where pickle finds it (runs in worker processes get the study)
EvalSpec.__doc__ = "A study's ``evaluate`` section: images, attacks, radii, and each attack's own keys."
EVAL_KEYS = tuple(f.name for f in dataclasses.fields(EvalSpec))
FLATNESS_KEYS = ("alphas", "draws", "n", "steps", "seed")


def _flatness_spec(spec: Any) -> dict[str, Any]:
    """``evaluate.flatness`` with its defaults (alphas 0.05, 0.1, 0.2; 5 draws; PGD-10; the study's n and seed)."""
    if not spec.flatness:
        return {}
    bad = [k for k in spec.flatness if k not in FLATNESS_KEYS]
    if bad:
        raise _unknown("evaluate.flatness", bad[0], FLATNESS_KEYS)
    out = {"alphas": [0.05, 0.1, 0.2], "draws": 5, "n": spec.n, "steps": 10, "seed": spec.seed, **spec.flatness}
    a = out["alphas"]
    if not (isinstance(a, list) and a and all(isinstance(v, (int, float)) and v > 0 for v in a)):
        raise ConfigError(f"study evaluate.flatness.alphas must be a list of sizes > 0, got {a!r}")
    return out


def _reuse_list(reuse: Any) -> list[str]:
    """The study's ``reuse`` entry: results.json files whose evaluations a reproduced run may reuse."""
    reuse = [reuse] if isinstance(reuse, str) else (reuse or [])
    if not isinstance(reuse, list) or not all(isinstance(r, str) for r in reuse):
        raise ConfigError(f"study 'reuse' must be a results.json path or a list of them, got {reuse!r}")
    return reuse


@dataclass
class RunSpec:
    label: str
    seed: int
    config: Config
    surrogate: str | None = None
    paper: dict[str, float] = field(default_factory=dict)


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
    columns: list[str] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)
    run_overrides: list[str] = field(default_factory=list)  # applied to every run (schedule, device, ...)
    is_table: bool = False
    folder: Path | None = None  # where the study file lives (``config:`` paths are relative to it)
    reuse: list[str] = field(default_factory=list)  # results.json files whose evaluations a reproduced run reuses

    def labels(self) -> list[str]:
        return [m["label"] for m in self.methods]

    def paper(self, label: str) -> dict[str, float]:
        return next(m.get("paper", {}) or {} for m in self.methods if m["label"] == label)

    def runs(self, runs_dir: str | Path, only: list[str] | None = None) -> list[RunSpec]:
        """One validated train config per (seed, run); surrogates first, then seed-major order."""
        wanted = set(only or self.labels())
        wanted |= {m["surrogate"] for m in self.methods if m["label"] in wanted and m.get("surrogate")}
        order = sorted(self.methods, key=lambda m: m["label"] not in {x.get("surrogate") for x in self.methods})
        folders = run_folders(self.labels())
        out = []
        for s in self.seeds:  # seed-major, so a partial study already compares the methods
            for m in order:
                if m["label"] not in wanted:
                    continue
                values = copy.deepcopy(self.base)
                if m.get("config"):
                    values = _merge(values, _read_config(m["config"], self.folder))
                values = _merge(values, {k: v for k, v in m.items() if k not in RUN_KEYS})
                values.update(seed=s, name=f"{self.name}/{m['label']}/seed{s}",
                              out_dir=str(Path(runs_dir) / folders[m["label"]] / f"seed{s}"))
                try:
                    cfg = from_dict(values, self.run_overrides)
                except ConfigError as e:
                    raise ConfigError(f"study {self.name}, run {m['label']!r}: {e}") from None
                out.append(RunSpec(m["label"], s, cfg, m.get("surrogate"), dict(m.get("paper") or {})))
        return out

    def to_dict(self) -> dict[str, Any]:
        unset = {k: v for o in ATTACK_OPTIONS.values() for k, v in o.options.items() if k in o.recorded_if_set}
        evaluate = {k: v for k, v in self.evaluate.__dict__.items()  # flatness {}: not measured; aa_version standard
                    if (k != "flatness" or v) and not (k in unset and v == unset[k])}
        out = {"name": self.name, "title": self.title, "base": self.base, "runs": self.methods,
               "seeds": self.seeds, "evaluate": evaluate, "run_overrides": self.run_overrides}
        return {**out, "reuse": self.reuse} if self.reuse else out


def _read_config(rel: str, study_dir: Path | None) -> dict[str, Any]:
    """A run's ``config:`` file, relative to the study file's folder (or absolute)."""
    path = Path(rel) if Path(rel).is_absolute() or study_dir is None else study_dir / rel
    if not path.is_file():
        raise ConfigError(f"run config {rel} not found (looked for {path}); give a path relative to the study file")
    try:
        values = yaml.safe_load(read_text(path, "run config")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"run config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    values.pop("out_dir", None)
    return values


GREEK = {"η": "eta", "σ": "sigma", "β": "beta", "γ": "gamma", "ε": "eps", "λ": "lambda"}


def ascii_label(label: str) -> str:
    """A label as typed on a command line: Greek letters spelled out (``η=0.2`` -> ``eta=0.2``)."""
    for g, a in GREEK.items():
        label = label.replace(g, a)
    return label


def pretty_label(label: str) -> str:
    """A label as rendered on a page: ``eta=0.2`` -> ``η=0.2`` (the reverse of :func:`ascii_label`)."""
    for g, a in GREEK.items():
        label = label.replace(f"{a}=", f"{g}=")
    return label


# the Greek alphabet spelled out, for folder names only (pages keep GREEK's round trip)
_FOLD = {**GREEK, **dict(zip("αδζθικμνξοπρτυφχψωΓΔΘΛΞΠΣΦΨΩ",
                             ["alpha", "delta", "zeta", "theta", "iota", "kappa", "mu", "nu", "xi", "omicron", "pi",
                              "rho", "tau", "upsilon", "phi", "chi", "psi", "omega", "Gamma", "Delta", "Theta",
                              "Lambda", "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega"]))}
MAX_FOLDER = 64  # characters of a study's or a run's folder name: portable, and far below NAME_MAX


def slug(label: str) -> str:
    """An ASCII folder name for a run label (``1st+2nd (eta=0.2)`` -> ``1st_2nd_eta=0.2``; ``α`` -> ``alpha``).

    Greek letters are spelled out, accents dropped (NFKD), anything else but letters, digits and ``-_.=``
    becomes ``_``. :func:`run_folders` refuses labels whose names are empty, dots only, too long or equal.
    """
    text = "".join(_FOLD.get(c, c) for c in str(label)).replace("+", "_")
    text = unicodedata.normalize("NFKD", text)
    keep = "".join(c if c.isascii() and (c.isalnum() or c in "-_.=") else ("" if unicodedata.combining(c) else "_")
                   for c in text)
    return "_".join(filter(None, keep.split("_")))


def check_study_name(name: str) -> str:
    """``name`` if it can be one folder under ``--runs-dir``'s parent: no separator, no ``..``, not absolute,
    at most :data:`MAX_FOLDER` characters; a one-line ConfigError otherwise (the folder is the command's to
    choose, with ``--runs-dir`` and ``--out``, never the study file's)."""
    if (not name or "/" in name or "\\" in name or ".." in name or "\0" in name or name.strip(". ") == ""
            or Path(name).is_absolute() or len(name) > MAX_FOLDER):
        raise ConfigError(f"study name {name[:80]!r} must be a plain folder name of at most {MAX_FOLDER} characters "
                          "(no '/', '\\' or '..'); choose where the study goes with --runs-dir and --out")
    return name


def run_folders(labels: list[str]) -> dict[str, str]:
    """Label -> folder name (:func:`slug`), checked to be usable and one-to-one.

    A folder name must be non-empty, not dots only and at most :data:`MAX_FOLDER` characters; two labels whose
    names are equal, ignoring case (``α`` and ``alpha``, ``η=0.2`` and ``eta=0.2``) are refused, naming both.
    """
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for label in labels:
        folder = slug(label)
        if not folder.strip("."):
            raise ConfigError(f"run label {str(label)[:80]!r} gives no usable folder name; use letters or digits")
        if len(folder) > MAX_FOLDER:
            raise ConfigError(f"run label {str(label)[:40]!r}... is too long for a folder name ({len(folder)} "
                              f"characters, at most {MAX_FOLDER}); shorten it")
        key = folder.casefold()
        if key in seen:
            raise ConfigError(f"run labels {seen[key]!r} and {label!r} share the folder name {folder!r}; "
                              "rename one of them")
        seen[key], out[label] = label, folder
    return out


def match_labels(study: Study, wanted: list[str]) -> list[str]:
    """The study's labels for ``--only`` values given in either spelling (``eta=0.2`` or ``η=0.2``)."""
    by_ascii = {ascii_label(lab): lab for lab in study.labels()}
    out = []
    for w in wanted:
        if ascii_label(w) not in by_ascii:
            close = difflib.get_close_matches(ascii_label(w), list(by_ascii), n=1)
            raise ConfigError(f"--only {w!r} is not a run of {study.name}"
                              + (f"; did you mean {close[0]!r}?" if close else f"; its runs: {', '.join(by_ascii)}"))
        out.append(by_ascii[ascii_label(w)])
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _unknown(kind: str, key: str, keys: tuple[str, ...]) -> ConfigError:
    close = difflib.get_close_matches(key, keys, n=1)
    return ConfigError(f"unknown {kind} key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def from_values(values: dict[str, Any], source: str = "", overrides: list[str] | None = None,
                seeds: int | None = None, schedule: str | None = None, run_overrides: list[str] | None = None,
                is_table: bool = False, folder: Path | None = None) -> Study:
    """A validated Study from parsed YAML.

    ``overrides`` address the study file (``base.optim.epochs=1``, ``seeds=[0]``); ``seeds=N``
    means seeds 0..N-1; ``schedule="short"`` trains every run for 30 epochs (lr ÷10 at 50% and
    75%), ``"paper"`` keeps the configs' schedule; ``run_overrides`` apply to every run config.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source or 'study'} must be a mapping with keys {', '.join(STUDY_KEYS)}")
    values = _merge(values, parse_overrides(overrides or []))
    for k in values:
        if k not in STUDY_KEYS:
            raise _unknown("study", k, STUDY_KEYS)
    for required in ("name", "runs"):
        if required not in values:
            raise ConfigError(f"{source or 'study'} needs a {required!r} entry")
    methods = values["runs"]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, dict) and "label" in m for m in methods):
        raise ConfigError("study 'runs' must be a non-empty list of mappings, each with a 'label'")
    labels = [m["label"] for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"study run labels must be unique, got {labels}")
    check_study_name(str(values["name"]))
    run_folders(labels)
    for m in methods:
        for ref in ("surrogate", "baseline"):
            if m.get(ref) and m[ref] not in labels:
                raise ConfigError(f"run {m['label']!r}: {ref} {m[ref]!r} is not a run of this study")
        if m.get("reuse_only") not in (None, False) and (m["reuse_only"] is not True or not values.get("reuse")):
            raise ConfigError(f"run {m['label']!r}: reuse_only must be true or false, and needs the study's 'reuse'")
        bad = [k for k in (m.get("paper") or {}) if k not in metrics()]
        if bad:
            raise ConfigError(f"run {m['label']!r}: paper metric {bad[0]!r} is not one of {', '.join(metrics())}")
    seed_list = values.get("seeds", [0]) if seeds is None else list(range(seeds))
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if not isinstance(seed_list, list) or not seed_list or not all(isinstance(s, int) and s >= 0 for s in seed_list):
        raise ConfigError(f"study 'seeds' must be a list of integers >= 0, got {seed_list!r}")
    ev = values.get("evaluate", {}) or {}
    for k in ev:
        if k not in EVAL_KEYS:
            raise _unknown("evaluate", k, EVAL_KEYS)
    spec = EvalSpec(**ev)
    spec.flatness = _flatness_spec(spec)
    reuse = _reuse_list(values.get("reuse"))
    for o in ATTACK_OPTIONS.values():
        if o.subset_always and getattr(spec, o.subset) is None:
            setattr(spec, o.subset, spec.n)
    for key in ("attacks", "last"):
        bad = [a for a in getattr(spec, key) if a not in available_attacks()]
        if bad:
            raise ConfigError(f"study evaluate.{key}: {bad[0]!r} is not one of {', '.join(available_attacks())}")
    if not isinstance(spec.attack_eps, dict) or any(a not in available_attacks() for a in spec.attack_eps):
        raise ConfigError(f"study evaluate.attack_eps must map attack names to radii, got {spec.attack_eps!r}")
    _check_counts(spec)
    if spec.aa_version not in AA_VERSIONS:
        raise ConfigError(f"study evaluate.aa_version must be one of {', '.join(AA_VERSIONS)}, got {spec.aa_version!r}")
    if "transfer" in spec.attacks and not any(m.get("surrogate") for m in methods):
        raise ConfigError("study evaluate.attacks has 'transfer' but no run names a surrogate")
    if schedule not in (None, "paper", "short"):
        raise ConfigError(f"--schedule must be paper or short, got {schedule!r}")
    extra = list(run_overrides or []) + ([f"optim.epochs={SHORT_EPOCHS}"] if schedule == "short" else [])
    columns = values.get("columns") or [a for a in spec.attacks if attack_options(a).column]
    study = Study(name=str(values["name"]), title=str(values.get("title", values["name"])),
                  description=str(values.get("description", values.get("caption", ""))),
                  base=values.get("base") or {}, methods=methods, seeds=seed_list, evaluate=spec, source=source,
                  columns=list(columns), context=list(values.get("context") or []), run_overrides=extra,
                  is_table=is_table, folder=folder, reuse=list(reuse))
    study.runs("runs")  # validate every run config now
    return study


def _check_counts(spec: EvalSpec) -> None:
    """``n >= 1``, and each count every evaluation records (``n_aa``) in [0, n]."""
    for name, o in ATTACK_OPTIONS.items():
        if not o.subset_always:
            continue
        count = getattr(spec, o.subset)
        if spec.n < 1 or count < 0 or (name in spec.attacks and count > spec.n):
            raise ConfigError(f"study evaluate needs n >= 1 and 0 <= {o.subset} <= n, got n={spec.n}, "
                              f"{o.subset}={count}")
    if spec.n < 1:
        raise ConfigError(f"study evaluate needs n >= 1, got n={spec.n}")


def load(path_or_table: str | Path, overrides: list[str] | None = None, **kw) -> Study:
    """A study file, or a paper table by name (``table1`` ... ``table8``)."""
    p = Path(path_or_table)
    is_table = False
    if not p.is_file() and (TABLES_DIR / f"{path_or_table}.yaml").is_file():
        p, is_table = TABLES_DIR / f"{path_or_table}.yaml", True
    if not p.is_file():
        names = ", ".join(n for n, _ in list_tables())
        raise ConfigError(f"study file {p} not found; give a YAML file (see configs/studies/) or a paper table "
                          f"({names})")
    try:
        values = yaml.safe_load(read_text(p, "study file"))
    except yaml.YAMLError as e:
        raise ConfigError(f"study file {p} is not valid YAML ({str(e).splitlines()[0]})") from None
    return from_values(values, str(path_or_table), overrides, is_table=is_table, folder=p.resolve().parent, **kw)

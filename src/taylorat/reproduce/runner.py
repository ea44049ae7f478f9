"""Run a study: train what is missing (resuming interrupted runs), evaluate, aggregate, render.

For each (method, seed) the runner trains the run (``resume=True``: finished runs are skipped,
interrupted ones continue from their last checkpoint), evaluates its ``best`` checkpoint (the
best PGD-20 on the run's selection split) on the first ``n`` test images — clean, PGD-20,
CW-20 on all of them, AutoAttack on the first ``n_aa`` — and stores ``eval.json`` beside the
checkpoint (reused when its settings match). ``results.json`` and ``README.md`` are then
rendered from those files alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checkpoint as ckpt
from .. import data as datasets
from ..evaluate import evaluate
from ..train import train
from ..train.trainer import resolve_device
from .render import render_readme
from .study import METRICS, RunSpec, Study, slug


def _eval_settings(study: Study, run: RunSpec) -> dict[str, Any]:
    e = study.evaluate
    cfg = run.config
    out = {"n": e.n, "n_aa": e.n_aa if "aa" in e.attacks else 0, "attacks": e.attacks,
           "eps": cfg.eval.eps if e.eps is None else e.eps, "step": cfg.eval.step if e.step is None else e.step,
           "norm": e.norm or cfg.attack.norm, "seed": e.seed, "checkpoint": "best"}
    if "rays" in e.attacks:
        out.update(rays_queries=e.rays_queries, n_rays=e.n_rays or e.n)
    if "transfer" in e.attacks and run.surrogate:
        out["surrogate"] = run.surrogate
    return out


def environment(device) -> dict[str, Any]:
    """What the numbers were produced on (thread counts change float rounding, hence PGD's path)."""
    return {"torch": torch.__version__, "device": str(device), "cpu threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def _best(run: RunSpec, device) -> tuple[Any, dict[str, Any]]:
    return ckpt.load_model(Path(run.config.out_dir) / "best.safetensors", device)


def evaluate_run(study: Study, run: RunSpec, progress: bool = True,
                 surrogate: RunSpec | None = None) -> dict[str, Any]:
    """Evaluate one finished run's best checkpoint (or reuse its eval.json)."""
    out = Path(run.config.out_dir)
    settings = _eval_settings(study, run)
    cached = out / "eval.json"
    if cached.exists():
        prev = json.loads(cached.read_text())
        if prev.get("settings") == settings:
            return prev
    device = resolve_device(run.config.device)
    model, meta = _best(run, device)
    d = run.config.data
    ds = datasets.load(d.dataset, d.data_dir, download=False, **d.options)
    t = time.time()
    kw = dict(eps=settings["eps"], step=settings["step"], norm=settings["norm"], seed=settings["seed"],
              batch_size=study.evaluate.batch_size, progress=progress)
    white = [a for a in settings["attacks"] if a in ("clean", "pgd20", "cw20")]
    if "transfer" in settings["attacks"] and run.surrogate:
        white.append("transfer")
        sur_model, _ = _best(surrogate, device)
        kw_t = dict(surrogate=sur_model, surrogate_id=f"{surrogate.label}/seed{surrogate.seed}",
                    cache_dir=Path(surrogate.config.out_dir) / "transfer_cache")
    else:
        kw_t = {}
    res = evaluate(model, ds, white, n=settings["n"], **kw, **kw_t)
    row: dict[str, Any] = {k: round(v, 2) for k, v in res.results.items()}
    row["n"] = res.n
    warnings, flags = list(res.warnings), list(res.flags)
    if settings["n_aa"]:
        aa = evaluate(model, ds, ["aa"], n=settings["n_aa"], **kw)
        row["aa"] = round(aa.results["aa"], 2)
        row["n_aa"] = aa.n
        m = settings["n_aa"]
        if "pgd20" in res.correct:  # PGD-20 on exactly the AutoAttack images, for an honest gap
            row["pgd20_on_aa_images"] = round(100.0 * res.correct["pgd20"][:m].float().mean().item(), 2)
        if "clean" in res.correct:
            row["clean_on_aa_images"] = round(100.0 * res.correct["clean"][:m].float().mean().item(), 2)
        row["aa_per_attack"] = aa.extra.get("aa_per_attack", {})
        warnings += aa.warnings
    if "rays" in settings["attacks"]:
        rays = evaluate(model, ds, ["rays"], n=settings["n_rays"], rays_queries=settings["rays_queries"], **kw)
        row["rays"] = round(rays.results["rays"], 2)
        row["adbd"] = rays.extra.get("rays_adbd")
        row["n_rays"] = rays.n
    summary = json.loads((out / "summary.json").read_text())
    record = {"method": run.label, "seed": run.seed, **row, "environment": environment(device),
              "best_epoch": meta.get("epoch"), "train_seconds": round(summary["train_seconds"], 1),
              "eval_seconds": round(time.time() - t, 1), "settings": settings, "warnings": warnings, "flags": flags,
              "selection": {"split": summary["select_on"], "n": summary["n_select"], "best": summary["best"]}}
    ckpt.atomic_write_text(cached, json.dumps(record, indent=2) + "\n")
    return record


def run_study(study: Study, runs_dir: str | Path, out: str | Path, only: list[str] | None = None,
              progress: bool = True, log: Callable[[str], None] = print, command: str = "") -> dict[str, Any]:
    """Train and evaluate every run of ``study`` that is not done yet; write results.json and README.md."""
    runs = study.runs(runs_dir, only)
    by_key = {(r.label, r.seed): r for r in runs}
    for i, run in enumerate(runs, 1):
        log(f"[{i}/{len(runs)}] {run.label} seed {run.seed} -> {run.config.out_dir}")
        t = time.time()
        train(run.config, resume=True, log=log)
        rec = evaluate_run(study, run, progress, by_key.get((run.surrogate, run.seed)))
        shown = ", ".join(f"{k} {rec[k]:.2f}" for k in METRICS if isinstance(rec.get(k), (int, float)))
        log(f"[{i}/{len(runs)}] {run.label} seed {run.seed}: {shown} ({time.time() - t:.0f}s this session)")
    return write_results(study, collect(study, runs_dir), out, runs_dir, command)


def collect(study: Study, runs_dir: str | Path) -> list[dict[str, Any]]:
    """The eval.json records that exist (for re-rendering without training)."""
    out = []
    for run in study.runs(runs_dir):
        p = Path(run.config.out_dir) / "eval.json"
        if p.exists():
            out.append(json.loads(p.read_text()))
    return out


def write_results(study: Study, records: list[dict[str, Any]], out: str | Path,
                  runs_dir: str | Path | None = None, command: str = "") -> dict[str, Any]:
    """results.json (every finished run's record) and README.md rendered from it."""
    out = Path(out)
    cfg0 = study.runs(runs_dir or "runs")[0].config.to_dict()
    results = {"study": study.name, "title": study.title, "command": command or f"taylorat reproduce {study.source}",
               "config": {"study": study.to_dict(), "resolved": cfg0},
               "runs": sorted(records, key=lambda r: (study.labels().index(r["method"]), r["seed"]))}
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    page = render_readme(results, study)
    if (out / "landscape.png").exists() and not study.is_table:  # made by `taylorat landscape` (see below)
        a, b = (Path(runs_dir or "runs") / slug(m) / f"seed{study.seeds[0]}" / "best.safetensors"
                for m in study.labels()[:2])
        page += ("\n## Loss landscape (paper Fig. 2 style)\n\n"
                 f"![input-space loss surfaces of {study.labels()[0]} (top) and {study.labels()[1]} (bottom), "
                 f"seed {study.seeds[0]}](landscape.png)\n\n"
                 f"Produced by `taylorat landscape --checkpoint {a} --checkpoint {b} --images 4 --out {out}`; "
                 "numbers in `landscape.json`.\n")
    ckpt.atomic_write_text(out / "README.md", page)
    return results

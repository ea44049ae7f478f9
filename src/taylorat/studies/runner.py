"""Run a study: train what is missing (resuming interrupted runs), evaluate, aggregate, render.

For each (method, seed) the runner trains the run (``resume=True``: finished runs are skipped,
interrupted ones continue from their last checkpoint), evaluates its ``best`` checkpoint (the
best PGD-20 on the run's selection split) on the first ``n`` test images — clean, PGD-20,
CW-20 on all of them, AutoAttack on the first ``n_aa``, each attack on the subset and with the
options that ``taylorat.evaluate.builtin.ATTACK_OPTIONS`` gives it — and stores ``eval.json``
beside the checkpoint (reused when its settings match). ``results.json`` and ``README.md`` are then
rendered from those files alone.

``jobs > 1`` trains and evaluates that many runs at once, each in its own process with its
share of the CPU threads and its log in ``RUNS_DIR/logs/``; a run whose evaluation needs a
surrogate starts once the surrogate's run has finished.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checkpoint as ckpt
from .. import data as datasets
from ..common import FolderLock, atomic_folder, atomic_write_text, read_json, resolve_device
from ..common.processes import stop_with_parent
from ..evaluate import attack_eps, check_dependencies, eps_from_run, evaluate, expand, get_attack
from ..evaluate.builtin import ATTACK_OPTIONS, attack_options
from ..train import train
from ..train.logs import format_event
from .figures import has_curves, plot_curves
from .flatness_of_last import flatness_of_last, flatness_settings
from .flatness_page import plot_flatness_gap
from .pace import Pace, from_scratch
from .parallel_stop import StudyStopped, forward_to_workers, sigterm_raises
from .render import render_readme
from .reuse import reused_record, run_curves, same_settings, with_check_seconds
from .study import EvalSpec, RunSpec, Study, metrics, slug


def _eval_settings(study: Study, run: RunSpec) -> dict[str, Any]:
    """What the evaluation of one run does; a cached eval.json is reused only when this matches."""
    e = study.evaluate
    cfg = run.config
    norm = e.norm or cfg.attack.norm
    eps = e.eps if e.eps is not None else eps_from_run(norm, cfg.eval.eps)
    step = e.step if e.step is not None else (cfg.eval.step if norm == cfg.attack.norm else None)
    rows = [a for a in expand(e.attacks) if get_attack(a).row]
    always, asked = _attack_settings(e)
    out = {"n": e.n, **always, "attacks": e.attacks,
           "eps": attack_eps("pgd20", norm, eps, e.attack_eps), "step": step,
           "norm": norm, "seed": e.seed, "checkpoint": "best",
           "attack_eps": {a: attack_eps(a, norm, eps, e.attack_eps) for a in rows if a != "clean"}, **asked}
    if "transfer" in e.attacks and run.surrogate:
        out["surrogate"] = run.surrogate
    if e.last:
        out["last"] = list(e.last)
    return out


def _attack_settings(e: EvalSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attacks' own settings (``ATTACK_OPTIONS``): the counts every evaluation records (``n_aa``, 0 when
    that attack is not asked for), and the options and counts of the attacks asked for (``rays_queries``,
    ``n_rays``; an unset count is ``n``)."""
    always, asked = {}, {}
    for name, o in ATTACK_OPTIONS.items():
        if o.subset_always:
            always[o.subset] = getattr(e, o.subset) if name in e.attacks else 0
        if name in e.attacks:
            asked.update({k: getattr(e, k) for k, v in o.options.items()
                          if k not in o.recorded_if_set or getattr(e, k) != v})
            if o.subset and not o.subset_always:
                asked[o.subset] = getattr(e, o.subset) or e.n
    return always, asked


def environment(device) -> dict[str, Any]:
    """What the numbers were produced on (thread counts change float rounding, hence PGD's path)."""
    return {"torch": torch.__version__, "device": str(device), "cpu threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def _best(run: RunSpec, device) -> tuple[Any, dict[str, Any]]:
    return ckpt.load_model(Path(run.config.out_dir) / "best.safetensors", device)


def _subset_sizes(settings: dict[str, Any]) -> dict[str, int]:
    """How many test images each attack sees: ``n``, or its own count (AutoAttack ``n_aa``, RayS ``n_rays``)."""
    sizes = {a: settings["n"] for a in expand(settings["attacks"]) if attack_options(a).subset is None}
    for name, o in ATTACK_OPTIONS.items():
        if o.subset and name in settings["attacks"] and settings[o.subset]:
            sizes[name] = settings[o.subset]
    return sizes


def evaluate_run(study: Study, run: RunSpec, progress: bool = True, surrogate: RunSpec | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate one finished run's best checkpoint (and ``last`` when asked), or reuse its eval.json;
    ``log`` gets a line as each attack starts and ends."""
    out = Path(run.config.out_dir)
    settings = _eval_settings(study, run)
    device = resolve_device(run.config.device)
    cached = out / "eval.json"
    if cached.exists():
        prev = read_json(cached, "evaluation", "delete it to evaluate the run again")
        if same_settings(prev.get("settings", {}), settings):
            return _with_flatness(study, run, with_check_seconds(prev, out), settings, device, progress)
    reused = reused_record(study, run, settings)
    if reused is not None:
        atomic_write_text(cached, json.dumps(reused, indent=2) + "\n")
        return _with_flatness(study, run, with_check_seconds(reused, out), settings, device, progress)
    model, meta = _best(run, device)
    d = run.config.data
    ds = datasets.load(d.dataset, d.data_dir, download=False, **d.options)
    t = time.time()
    kw = dict(step=settings["step"], norm=settings["norm"], seed=settings["seed"], eps_by_attack=settings["attack_eps"],
              batch_size=study.evaluate.batch_size, progress=progress, log=log,
              **{k: settings.get(k, v) for o in ATTACK_OPTIONS.values() for k, v in o.options.items()})
    if "surrogate" in settings:
        sur_model, _ = _best(surrogate, device)
        kw.update(surrogate=sur_model, surrogate_id=f"{surrogate.label}/seed{surrogate.seed}",
                  cache_dir=Path(surrogate.config.out_dir) / "transfer_cache")
    say = log or (lambda msg: None)
    say(f"evaluating best.safetensors (epoch {meta.get('epoch')})")
    row, warnings, flags = _evaluate_subsets(model, ds, settings, kw)
    summary = read_json(out / "summary.json", "run summary", "train the run again")
    if settings.get("last"):
        last_model, last_meta = ckpt.load_model(out / "last.safetensors", device)
        say(f"evaluating last.safetensors (epoch {last_meta.get('epoch')})")
        res = evaluate(last_model, ds, settings["last"], n=settings["n"], **kw)
        row["last"] = {k: round(v, 2) for k, v in res.results.items()}
        row["last_epoch"] = last_meta.get("epoch")
    curves = run_curves(out)
    if curves:
        row["curves"] = curves
    record = {"method": run.label, "seed": run.seed, **row, "environment": environment(device),
              "best_epoch": meta.get("epoch"), "train_seconds": round(summary["train_seconds"], 1),
              "eval_seconds": round(time.time() - t, 1), "settings": settings, "warnings": warnings, "flags": flags,
              "selection": {"split": summary["select_on"], "n": summary["n_select"], "best": summary["best"]}}
    atomic_write_text(cached, json.dumps(record, indent=2) + "\n")
    return _with_flatness(study, run, with_check_seconds(record, out), settings, device, progress)


def _with_flatness(study: Study, run: RunSpec, record: dict[str, Any], settings: dict[str, Any], device,
                   progress: bool) -> dict[str, Any]:
    """The record with the weight-space flatness of ``last`` when the study asks for it."""
    if not study.evaluate.flatness:
        return record
    fs = flatness_settings(study.evaluate.flatness, settings)
    return {**record, "flatness": flatness_of_last(run.config, fs, device, progress)}


def _evaluate_subsets(model: Any, ds: Any, settings: dict[str, Any],
                      kw: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The record's numbers, warnings and flags: every attack on its images, largest subset first (the
    others are its prefixes), with each attack's count, its extra numbers (``ATTACK_OPTIONS``), and the
    attacks it names scored on exactly its images (clean and PGD-20 on the AutoAttack images: an honest gap)."""
    sizes = _subset_sizes(settings)
    row: dict[str, Any] = {}
    warnings: list[str] = []
    flags: list[str] = []
    correct: dict[str, Any] = {}
    for n in sorted(set(sizes.values()), reverse=True):
        res = evaluate(model, ds, [a for a, m in sizes.items() if m == n], n=n, **kw)
        row.update({k: round(v, 2) for k, v in res.results.items()})
        correct.update(res.correct)
        warnings += [w for w in res.warnings if w not in warnings]
        flags += res.flags
        if n == settings["n"]:
            row["n"] = res.n
        for name, o in ATTACK_OPTIONS.items():
            if name in res.results:
                if o.subset:
                    row[o.subset] = res.n
                row.update({k: res.extra[src] for k, src in o.record.items() if src in res.extra})
    for name, o in ATTACK_OPTIONS.items():
        if o.same_images and name in correct:
            m = row[o.subset] if o.subset else row["n"]
            for k in o.same_images:
                if k in correct:
                    row[f"{k}_on_{name}_images"] = round(100.0 * correct[k][:m].float().mean().item(), 2)
    return row, warnings, flags


def run_study(study: Study, runs_dir: str | Path, out: str | Path, only: list[str] | None = None,
              progress: bool = True, log: Callable[[str], None] = print, command: str = "") -> dict[str, Any]:
    """Train and evaluate every run of ``study`` that is not done yet; write results.json and README.md."""
    check_dependencies([*study.evaluate.attacks, *study.evaluate.last])  # a missing extra stops before training
    with FolderLock(runs_dir, "study runs folder") as lock:
        if lock.took_over is not None:
            log(f"took over the lock of process {lock.took_over}, which is gone")
        _run_each(study, study.runs(runs_dir, only), progress, log)
        return write_results(study, collect(study, runs_dir), out, runs_dir, command)


def _run_each(study: Study, runs: list[RunSpec], progress: bool, log: Callable[[str], None]) -> None:
    by_key = {(r.label, r.seed): r for r in runs}
    pace = Pace(jobs=1)
    for i, run in enumerate(runs, 1):
        log(f"[{i}/{len(runs)}] {run.label} seed {run.seed} -> {run.config.out_dir}")
        t, scratch = time.time(), from_scratch(run.config.out_dir)
        train(run.config, resume=True, log=lambda ev: log(format_event(ev)) if ev['event'] != 'step' else None)
        rec = evaluate_run(study, run, progress, by_key.get((run.surrogate, run.seed)))
        log(f"[{i}/{len(runs)}] {run.label} seed {run.seed}: {_shown(rec)} ({time.time() - t:.0f}s in this call)")
        pace.finished(run.label, time.time() - t, scratch)
        pace.report([r.label for r in runs[i:]], [], log)


def _shown(rec: dict[str, Any]) -> str:
    """A run's metrics on one line: ``clean 74.00, pgd20 57.40, ...``."""
    return ", ".join(f"{k} {rec[k]:.2f}" for k in metrics() if isinstance(rec.get(k), (int, float)))


def _run_in_child(study: Study, run: RunSpec, surrogate: RunSpec | None, threads: int, log_path: str) -> str:
    """One run in a worker process: train (resuming), evaluate; everything it prints goes to ``log_path``.
    A SIGKILLed parent sends the worker SIGTERM, so the run checkpoints and stops instead of going on alone; the
    worker then exits, as nobody is left to take its result."""
    parent = os.getppid()
    stop_with_parent()
    torch.set_num_threads(threads)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as f:
        def log(msg: str) -> None:
            f.write(msg + "\n")

        log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {run.label} seed {run.seed} -> {run.config.out_dir} "
            f"({threads} threads)")
        try:
            # no progress bars: parallel runs would draw theirs over each other on the one terminal,
            # and the log already gets a line per epoch
            quiet = dataclasses.replace(run.config, progress=False)
            train(quiet, resume=True, log=lambda ev: log(format_event(ev)) if ev["event"] != "step" else None)
            rec = evaluate_run(study, run, False, surrogate, log)
        except BaseException as e:
            log(traceback.format_exc())
            _exit_if_orphaned(parent, log, getattr(e, "exit_code", 1))
            raise
        log(f"done: {_shown(rec)}")
        _exit_if_orphaned(parent, log, 0)  # the record is on disk either way
        return _shown(rec)


def _exit_if_orphaned(parent: int, log: Callable[[str], None], code: int) -> None:
    """Exit at once when the study's process is gone: nobody would take the result, and the pool's queues would
    keep this worker waiting forever. (``log`` writes whole lines to a line-buffered file.)"""
    if os.getppid() != parent:
        log("the study's parent process is gone: this worker exits")
        os._exit(code)


def run_study_parallel(study: Study, runs_dir: str | Path, out: str | Path, jobs: int,
                       only: list[str] | None = None, log: Callable[[str], None] = print,
                       command: str = "", threads: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """``run_study`` with ``jobs`` runs at a time (processes of ``threads`` CPU threads each, default an equal
    share of the cores); returns the results and the runs that failed."""
    check_dependencies([*study.evaluate.attacks, *study.evaluate.last])  # a missing extra stops before training
    with FolderLock(runs_dir, "study runs folder") as lock:
        if lock.took_over is not None:
            log(f"took over the lock of process {lock.took_over}, which is gone")
        return _run_parallel(study, runs_dir, out, jobs, only, log, command, threads)


def _run_parallel(study: Study, runs_dir: str | Path, out: str | Path, jobs: int, only: list[str] | None,
                  log: Callable[[str], None], command: str, threads: int | None) -> tuple[dict[str, Any], list[str]]:
    runs = study.runs(runs_dir, only)
    by_key = {(r.label, r.seed): r for r in runs}
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    logs = Path(runs_dir) / "logs"
    pending, running, finished, failed = list(runs), {}, set(), []
    pace = Pace(jobs)
    log(f"{len(runs)} runs, {jobs} at a time, {threads} CPU thread{'s' if threads > 1 else ''} each; "
        f"per-run logs in {logs}/")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool, sigterm_raises():
        try:
            while pending or running:
                for run in [r for r in pending if r.surrogate is None or (r.surrogate, r.seed) in finished]:
                    if len(running) >= jobs:
                        break
                    pending.remove(run)
                    sur = by_key.get((run.surrogate, run.seed))
                    path = logs / f"{slug(run.label)}_seed{run.seed}.log"
                    scratch = from_scratch(run.config.out_dir)
                    fut = pool.submit(_run_in_child, study, run, sur, threads, str(path))
                    running[fut] = (run, time.time(), path, scratch)
                    log(f"started {run.label} seed {run.seed} (log: {path})")
                if not running:  # what is left waits for a surrogate that failed
                    for run in pending:
                        failed.append(f"{run.label} seed {run.seed}")
                        log(f"skipped {run.label} seed {run.seed}: its surrogate {run.surrogate} did not finish")
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    run, t, path, scratch = running.pop(fut)
                    _report(fut, run, t, path, finished, failed, log, len(finished) + len(failed) + 1, len(runs))
                    if fut.exception() is None:
                        pace.finished(run.label, time.time() - t, scratch)
                now = time.time()
                pace.report([r.label for r in pending], [(r.label, now - t) for r, t, *_ in running.values()], log)
        except StudyStopped as e:  # a `kill PID`: the workers checkpoint their runs before the parent goes
            log(f"{signal.Signals(e.signum).name}: stopping {forward_to_workers(e.signum)} running run(s)")
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except KeyboardInterrupt:  # Ctrl-C reached the workers too
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return write_results(study, collect(study, runs_dir), out, runs_dir, command), failed


def _report(fut: Future, run: RunSpec, t: float, path: Path, finished: set, failed: list,
            log: Callable[[str], None], i: int, n: int) -> None:
    err = fut.exception()
    if err is None:
        finished.add((run.label, run.seed))
        log(f"[{i}/{n}] {run.label} seed {run.seed}: {fut.result()} ({time.time() - t:.0f}s)")
    elif isinstance(err, BrokenProcessPool):  # a worker was killed: the pool stops (SIGTERM) the others too
        failed.append(f"{run.label} seed {run.seed}")
        log(f"[{i}/{n}] STOPPED {run.label} seed {run.seed}: a worker process of the study died (killed, or out "
            f"of memory), which stops every running run at its last checkpoint (see {path})")
    else:
        failed.append(f"{run.label} seed {run.seed}")
        log(f"[{i}/{n}] FAILED {run.label} seed {run.seed}: {type(err).__name__}: {err} (see {path})")


def collect(study: Study, runs_dir: str | Path) -> list[dict[str, Any]]:
    """The eval.json records that exist (for re-rendering without training)."""
    out = []
    for run in study.runs(runs_dir):
        p = Path(run.config.out_dir) / "eval.json"
        if p.exists():
            rec = with_check_seconds(read_json(p, "evaluation", "delete it to evaluate the run again"), p.parent)
            flat = p.with_name("flatness.json")
            if study.evaluate.flatness and flat.exists():
                rec["flatness"] = read_json(flat, "flatness record", "delete it to measure again")
            out.append(rec)
    return out


def write_results(study: Study, records: list[dict[str, Any]], out: str | Path,
                  runs_dir: str | Path | None = None, command: str = "") -> dict[str, Any]:
    """results.json (every finished run's record) and README.md rendered from it."""
    out = Path(out)
    specs = study.runs(runs_dir or "runs")  # the setup shown is that of a run trained as evaluated (not reuse_only)
    only = {m["label"] for m in study.methods if m.get("reuse_only")}
    cfg0 = next((r for r in specs if r.label not in only), specs[0]).config.to_dict()
    results = {"study": study.name, "title": study.title, "command": command or f"taylorat reproduce {study.source}",
               "config": {"study": study.to_dict(), "resolved": cfg0},
               "runs": sorted(records, key=lambda r: (study.labels().index(r["method"]), r["seed"]))}
    with atomic_folder(out) as page_dir:  # results.json, curves.png and README.md whole or not at all
        _write_page(study, results, out, page_dir, runs_dir)
    return results


def _write_page(study: Study, results: dict[str, Any], out: Path, page_dir: Path, runs_dir: str | Path | None) -> None:
    atomic_write_text(page_dir / "results.json", json.dumps(results, indent=2) + "\n")
    if has_curves(results["runs"]):
        plot_curves(results["runs"], study.labels(), page_dir / "curves.png", study.title)
    plot_flatness_gap(results["runs"], study.labels(), page_dir / "flatness.png", study.title)  # runs with flatness
    page = render_readme(results, study)
    if (out / "landscape.png").exists() and not study.is_table:  # made by `taylorat landscape` (see below)
        a, b = (Path(runs_dir or "runs") / slug(m) / f"seed{study.seeds[0]}" / "best.safetensors"
                for m in study.labels()[:2])
        page += ("\n## Loss landscape (paper Fig. 2 style)\n\n"
                 f"![input-space loss surfaces of {study.labels()[0]} (top) and {study.labels()[1]} (bottom), "
                 f"seed {study.seeds[0]}](landscape.png)\n\n"
                 f"Produced by `taylorat landscape --checkpoint {a} --checkpoint {b} --images 4 --out {out}`; "
                 "numbers in `landscape.json`.\n")
    atomic_write_text(page_dir / "README.md", page)

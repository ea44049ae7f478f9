"""The GPU study: Fashion-MNIST, PreAct ResNet-18, TRADES against TRADES+1st+2nd, one seed per call.

    bash benchmarks/gpu_study.sh --pack               # here: data + slim AutoAttack wheel -> .gpu_carry/
    bash benchmarks/gpu_study.sh OUT --dry-run        # anywhere: next seed, epochs, time estimate, the GPU command
    bash benchmarks/gpu_study.sh OUT                  # on one CUDA GPU: the next seed, results under OUT
    bash benchmarks/gpu_study.sh OUT --tiny           # on CPU: the same path at toy size (small_cnn, 256 images)
    bash benchmarks/gpu_study.sh OUT --render         # re-render the page from the records, train nothing

The study is ``configs/studies/fashion_mnist_gpu.yaml``; its records live in the committed
``docs/studies/fashion_mnist_gpu/results.json`` (``--results``; none yet: zero runs). ``taylorat
reproduce`` collects records from the run folders' ``eval.json`` (it merges nothing from an existing
``results.json``), so each call first writes every committed record back as its run folder's
``eval.json`` (a record *is* that file's content), then trains and evaluates only the missing runs of the
first seed that lacks one (``seeds=[N] --only LABELS``; ``--seed N`` picks another), both methods side
by side (``--jobs 2``; ``--jobs 1``: one after the other), and re-renders the page from all records
(``--render-only``). The run folders live in ``--work`` (default ``runs/gpu_study``, ignored by git).
Side by side is the default because the estimate (``gpu_budget.py``) puts it below one after the other:
one process's compile and AutoAttack launches hide behind the other's GPU work. Neither has been timed on
a GPU yet; ``timing.json`` of a call, and of one with ``--jobs 1``, settles it.

OUT receives at most 6 plain files: ``results.json``, ``README.md`` (the page), ``study.log`` (all
output), one log per run trained, ``timing.json`` (seconds per phase beside the estimate); copy
``results.json`` and ``README.md`` into ``docs/studies/fashion_mnist_gpu/`` to add the seed.
Nothing is installed from the network: taylorat with ``pip install --no-deps -e .``, AutoAttack from
the slim wheel in ``.gpu_carry/``, Fashion-MNIST from ``.gpu_carry/fashion-mnist``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

import gpu_budget as budget
import gpu_carry as carry
import gpu_study_page as page

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "configs" / "studies" / "fashion_mnist_gpu.yaml"
PAGE_DIR = ROOT / "docs" / "studies" / "fashion_mnist_gpu"
DEVICE_COMMAND = 'bash benchmarks/gpu_study.sh "$OUT"'
DEADLINE_S = 560  # a GPU call stops training here, so that the page and the logs still reach OUT
TINY = ["base.device=cpu", "base.precision=fp32", "base.compile=none", "base.channels_last=false",
        "base.model.name=small_cnn", "base.optim.epochs=2", "base.optim.lr=0.05", "base.optim.milestones=[0.5]",
        "base.data.train_subset=256", "base.data.holdout=64", "base.eval.n=64", "base.log_every=2", "evaluate.n=64",
        "evaluate.n_aa=16", "evaluate.batch_size=128"]


class StudyError(RuntimeError):
    """Something the call needs is missing; the message names the fix."""


class Log:
    """Every line to stdout and to OUT/study.log."""

    def __init__(self, path: Path | None):
        self.file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - closed by the process end

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")


def study_values(path: Path = STUDY) -> dict:
    return yaml.safe_load(path.read_text())


def read_records(path: Path) -> list[dict]:
    """The runs of a results.json; none when it does not exist yet."""
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def next_runs(values: dict, records: list[dict], seed: int | None = None) -> tuple[int | None, list[str]]:
    """The first seed (or ``seed``) that lacks a run, and the labels it lacks; ``(None, [])`` when all are done."""
    done = {(r["method"], r["seed"]) for r in records}
    labels = [r["label"] for r in values["runs"]]
    for s in ([seed] if seed is not None else values["seeds"]):
        missing = [label for label in labels if (label, s) not in done]
        if missing:
            return s, missing
    return None, []


def run_logged(cmd: list[str], cwd: Path, log: Log, timeout: float | None = None) -> int:
    """Run ``cmd``, every output line into ``log``; past ``timeout`` seconds its process group is stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log("+ " + " ".join(cmd))
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    pump = threading.Thread(target=lambda: [log(line.rstrip("\n")) for line in p.stdout], daemon=True)
    pump.start()
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"stopped after {timeout:.0f} s (the call's deadline): the runs that finished are kept")
        os.killpg(p.pid, signal.SIGTERM)
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
    pump.join(timeout=5)
    return rc


def taylorat(*args: str) -> list[str]:
    return [sys.executable, "-m", "taylorat", *args]


def prepare_work(work: Path, study: Path) -> str:
    """The work folder mirrors the repository's layout, so that the page's command reads as a user types it."""
    rel = f"configs/studies/{study.name}"
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(study, work / rel)
    return rel


def run_dirs(work: Path, rel: str, overrides: list[str]) -> dict[tuple[str, int], Path]:
    """(label, seed) -> the run's folder under ``work``, as ``taylorat reproduce`` lays them out."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(taylorat("reproduce", rel, *overrides, "--write-configs", tmp), cwd=work, check=True,
                       capture_output=True, text=True)
        out = {}
        for f in Path(tmp).rglob("*.yaml"):
            cfg = yaml.safe_load(f.read_text())
            label = cfg["name"].split("/", 1)[1].rsplit("/seed", 1)[0]
            out[label, cfg["seed"]] = work / cfg["out_dir"]
    return out


def restore_records(records: list[dict], dirs: dict[tuple[str, int], Path], log: Log) -> int:
    """Each record back as its run folder's eval.json (what the runner collects), and no other eval.json: the
    records are the source of truth (a run trained again is evaluated again). Returns how many were written."""
    for folder in dirs.values():
        (folder / "eval.json").unlink(missing_ok=True)
    n = 0
    for r in records:
        folder = dirs.get((r["method"], r["seed"]))
        if folder is None:
            log(f"note: record {r['method']} seed {r['seed']} is not a run of this study; left out")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "eval.json").write_text(json.dumps(r, indent=2) + "\n")
        n += 1
    return n


def data_overrides(data: str | None, log: Log) -> list[str]:
    """Where Fashion-MNIST comes from: ``--data``, Debian's folder, or the carried copy (linked there as root)."""
    if data:
        folder = Path(data).resolve()
        if not carry.has_idx_files(folder):
            raise StudyError(f"{folder} lacks the four Fashion-MNIST files ({', '.join(carry.IDX_FILES)})")
        return [f"base.data.data_dir={folder}"]
    if carry.has_idx_files(carry.DEBIAN_DIR):
        return []
    packed = (carry.CARRY / "fashion-mnist").resolve()
    if not carry.has_idx_files(packed):
        raise StudyError("no Fashion-MNIST here: run `bash benchmarks/gpu_study.sh --pack` on a machine that has it "
                         "(apt-get install dataset-fashion-mnist) and carry .gpu_carry, or give --data DIR")
    try:
        carry.DEBIAN_DIR.parent.mkdir(parents=True, exist_ok=True)
        carry.DEBIAN_DIR.symlink_to(packed, target_is_directory=True)
        log(f"data: {carry.DEBIAN_DIR} -> {packed}")
        return []
    except OSError:
        return [f"base.data.data_dir={packed}"]


def render(out: Path, work: Path, rel: str, overrides: list[str], values: dict, tiny: bool, log: Log) -> int:
    """results.json and README.md from every record under ``work``; the plan page when there is none."""
    name = values["name"]
    page_dir = work / "docs" / "studies" / name
    shutil.rmtree(page_dir, ignore_errors=True)
    dirs = run_dirs(work, rel, overrides)
    if not any((d / "eval.json").is_file() for d in dirs.values()):
        out.mkdir(parents=True, exist_ok=True)
        (out / "README.md").write_text(page.plan_page(study_values(), tiny))
        log(f"no finished run: the plan -> {out / 'README.md'}")
        return 0
    rc = run_logged(taylorat("reproduce", rel, *overrides, "--render-only", "--out", f"docs/studies/{name}"),
                    work, log)
    if rc != 0:
        return rc
    records = read_records(page_dir / "results.json")
    text = (page_dir / "README.md").read_text() + "\n".join(page.seed_section(study_values(), records, tiny))
    out.mkdir(parents=True, exist_ok=True)
    for f in ("results.json", "curves.png"):
        if (page_dir / f).is_file() and (page_dir / f).resolve() != (out / f).resolve():
            shutil.copy2(page_dir / f, out / f)
    (out / "README.md").write_text(text)
    log(f"{len(records)} runs -> {out / 'results.json'}, {out / 'README.md'}")
    return 0


def estimate_lines(values: dict) -> tuple[dict, list[str], int]:
    """The H100 estimate of one seed for the study file's epochs, its arithmetic, and the epochs that fit."""
    m, a, sizes = budget.measured(), budget.Assumptions(), budget.study_sizes(values)
    return budget.estimate(m, a, sizes), budget.plan_lines(m, a, sizes), budget.fit_epochs(m, a, sizes)


def train_seed(args, work: Path, rel: str, overrides: list[str], seed: int, labels: list[str], log: Log,
               timeout: float | None) -> int:
    """Train and evaluate the missing runs of one seed (side by side with ``--jobs 2``)."""
    cmd = taylorat("reproduce", rel, *overrides, f"seeds=[{seed}]", "--only", ",".join(labels),
                   "--out", "partial", *(["--jobs", str(args.jobs)] if args.jobs > 1 else []))
    return run_logged(cmd, work, log, timeout)


def copy_run_logs(work: Path, name: str, seed: int, out: Path) -> list[str]:
    """The per-run logs of this seed (``--jobs`` > 1 writes one per run) into OUT."""
    copied = []
    for f in sorted((work / "runs" / "studies" / name / "logs").glob(f"*_seed{seed}.log")):
        shutil.copy2(f, out / f.name)
        copied.append(f.name)
    return copied


def run(args) -> int:
    """One call: install what is missing, train the next seed, render; everything under OUT."""
    t0 = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "study.log")
    phases: dict[str, float] = {}
    if not args.tiny:
        import gpu_check

        for note in gpu_check.install(carry.CARRY, dry_run=False):
            log(f"install: {note}")
        import torch

        if not torch.cuda.is_available():
            log("gpu_study: no CUDA GPU is visible; use --dry-run (plan) or --tiny (toy run on CPU) here")
            return 2
        phases["install"] = round(time.time() - t0, 1)
    values = study_values()
    try:
        overrides = (TINY if args.tiny else []) + data_overrides(args.data, log)
    except StudyError as e:
        log(f"gpu_study: {e}")
        return 2
    work = Path(args.work or ROOT / "runs" / ("gpu_study_tiny" if args.tiny else "gpu_study")).resolve()
    rel = prepare_work(work, STUDY)
    records = read_records(results_path(args, out))
    seed, labels = next_runs(values, records, args.seed)
    restored = restore_records(records, run_dirs(work, rel, overrides), log)
    log(f"{restored} finished runs from {results_path(args, out)}; this call: "
        + (f"seed {seed}: {', '.join(labels)} ({args.jobs} at a time)" if labels else "nothing left to train"))
    rc = 0
    if labels:
        t = time.time()
        left = None if args.tiny else DEADLINE_S - (t - t0)
        rc = train_seed(args, work, rel, overrides, seed, labels, log, left)
        phases["train_eval"] = round(time.time() - t, 1)
        copy_run_logs(work, values["name"], seed, out)
    t = time.time()
    rc = render(out, work, rel, overrides, values, args.tiny, log) or rc
    phases["render"] = round(time.time() - t, 1)
    timing = {"seed": seed, "labels": labels, "jobs": args.jobs, "tiny": args.tiny, "phases": phases,
              "total_s": round(time.time() - t0, 1), "returncode": rc}
    if not args.tiny:
        est = estimate_lines(values)[0]
        timing["estimate"] = {k: round(est[k], 1) for k in ("side_by_side_s", "sequential_s")}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    log(f"done in {timing['total_s']:.0f} s" + (f" (estimate: {timing['estimate']['side_by_side_s']:.0f} s side by "
                                                 "side)" if "estimate" in timing else "") + f", exit {rc}")
    return rc


def results_path(args, out: Path) -> Path:
    """Where the finished records come from: ``--results``, else OUT's for ``--tiny``, else the committed page's."""
    if args.results:
        return Path(args.results)
    return out / "results.json" if args.tiny else PAGE_DIR / "results.json"


def dry_run(args) -> int:
    """The plan, with what can be checked without a GPU: the next seed's configs validate, the estimate fits,
    the carried folder fits the device's limit; also OUT/plan.json."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    values, problems = study_values(), []
    records = read_records(results_path(args, out.resolve()))
    seed, labels = next_runs(values, records, args.seed)
    overrides = TINY if args.tiny else []
    print(f"GPU study plan ({'toy size on CPU' if args.tiny else 'one H100'}; dry run: nothing trained)")
    print(f"  study {STUDY.relative_to(ROOT)}: {len(values['runs'])} methods x seeds {values['seeds']}; "
          f"{len(records)} runs finished in {results_path(args, out.resolve())}")
    print("  this call: " + (f"seed {seed}: {', '.join(labels)}, {args.jobs} at a time" if labels
                              else "nothing left to train (re-render only)"))
    if labels:
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run(taylorat("reproduce", str(STUDY), *overrides, f"seeds=[{seed}]", "--only",
                                        ",".join(labels), "--dry-run", "--no-estimate", "--runs-dir", tmp),
                               cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        print("\n".join(f"  {line}" for line in r.stdout.splitlines() if line.strip()))
        if r.returncode != 0:
            problems.append(f"the study does not validate: {r.stderr.strip()[-400:]}")
    est, lines, fit = estimate_lines(values)
    epochs = values["base"]["optim"]["epochs"]
    print(f"  epochs: {epochs} per method on the GPU ({fit} fit the budget)" + (
        f"; --tiny trains {dict(o.split('=') for o in TINY)['base.optim.epochs']}" if args.tiny else ""))
    print("\n".join(f"  {line}" for line in lines))
    if est["side_by_side_s"] > budget.BUDGET_S or est["sequential_s"] > budget.LIMIT_S:
        problems.append(f"{epochs} epochs do not fit: {est['side_by_side_s']:.0f} s side by side (budget "
                        f"{budget.BUDGET_S:.0f}), {est['sequential_s']:.0f} s one after the other (limit "
                        f"{budget.LIMIT_S:.0f}); at most {fit} do")
    size = carry.sizes()
    if not size["packed"]["data"] or not size["packed"]["autoattack"]:
        print("  carry: .gpu_carry/ not packed yet (bash benchmarks/gpu_study.sh --pack)")
    elif not size["fits"]:
        problems.append(f"tree + .gpu_carry = {size['total_mib']} MiB, over the {size['limit_mib']:.0f} MiB a call "
                        "carries")
    print(f"  carry: tree {size['tree_mib']} MiB + .gpu_carry {size['carry_mib']} MiB = {size['total_mib']} MiB "
          f"(limit {size['limit_mib']:.0f} MiB)")
    call = carry.run_call(DEVICE_COMMAND, [".gpu_carry"], 600)
    print(f"  on the GPU machine: {call}")
    plan = {"tiny": args.tiny, "seed": seed, "labels": labels, "jobs": args.jobs, "epochs": epochs,
            "epochs_that_fit": fit, "estimate": {k: round(est[k], 1) for k in ("side_by_side_s", "sequential_s")},
            "arithmetic": lines, "carry": size, "gpu_command": call, "problems": problems}
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


def pack(args) -> int:
    try:
        lines = carry.pack(Path(args.data) if args.data else None, Path(args.wheel) if args.wheel else None)
    except carry.PackError as e:
        print(f"gpu_study --pack: {e}", file=sys.stderr)
        return 2
    size = carry.sizes()
    print("\n".join(lines))
    print(f"tree {size['tree_mib']} MiB + .gpu_carry {size['carry_mib']} MiB = {size['total_mib']} MiB "
          f"(limit {size['limit_mib']:.0f} MiB): {'fits' if size['fits'] else 'DOES NOT FIT'}")
    print(f"on the GPU machine: {carry.run_call(DEVICE_COMMAND, ['.gpu_carry'], 600)}")
    return 0 if size["fits"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", help="folder for results.json, README.md and the logs ($OUT on a GPU machine)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate; train nothing")
    mode.add_argument("--pack", action="store_true", help="fill .gpu_carry/ with the data and the AutoAttack wheel")
    mode.add_argument("--render", action="store_true", help="re-render the page from the records; train nothing")
    p.add_argument("--tiny", action="store_true", help="toy size on CPU: small_cnn, 256 images, 2 epochs")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs at a time: 2 side by side (default), 1 one after the other")
    p.add_argument("--seed", type=int, help="train this seed's missing runs (default: the first seed missing one)")
    p.add_argument("--results", help="the finished records (default: the committed page's; --tiny: OUT's)")
    p.add_argument("--work", help="run folders (default runs/gpu_study, runs/gpu_study_tiny with --tiny)")
    p.add_argument("--data", help="a folder with the four Fashion-MNIST .gz files (default: Debian's, or .gpu_carry)")
    p.add_argument("--wheel", help="--pack: a pyautoattack wheel to slim (default: downloaded from PyPI)")
    args = p.parse_args(argv)
    if args.pack:
        return pack(args)
    if not args.out:
        p.error("give OUT, the folder for the results (or --pack)")
    if args.jobs not in (1, 2):
        p.error(f"--jobs must be 1 (one after the other) or 2 (side by side), got {args.jobs}")
    if args.seed is not None and args.seed not in study_values()["seeds"]:
        p.error(f"--seed {args.seed} is not one of the study's seeds {study_values()['seeds']}")
    if args.dry_run:
        return dry_run(args)
    if args.render:
        out = Path(args.out).resolve()
        with tempfile.TemporaryDirectory(prefix="gpu_study_render_") as tmp:
            work = Path(args.work or tmp).resolve()
            rel = prepare_work(work, STUDY)
            overrides = TINY if args.tiny else []
            restore_records(read_records(results_path(args, out)), run_dirs(work, rel, overrides), Log(None))
            return render(out, work, rel, overrides, study_values(), args.tiny, Log(None))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check: everything taylorat must prove on a CUDA GPU, in one command, results as JSON.

    bash benchmarks/gpu_check.sh OUT              # on a machine with one CUDA GPU, about 6 minutes on an H100
    bash benchmarks/gpu_check.sh OUT --quick      # at most 4 minutes: the CUDA tests and the two goal rows
    bash benchmarks/gpu_check.sh OUT --dry-run    # anywhere: the plan, and every check that needs no GPU

Sections (each with its own time limit, so one slow part cannot starve the others):

1. ``tests``: the test suite's CUDA cases (``pytest -m cuda``: PGD stays in the threat set, bit-exact
   weight restore, closed-form statistics vs autograd, bf16 / channels_last / compile / fused SGD vs
   fp32 eager, loader replay, stop-and-resume of a 2-epoch run);
2. ``bench_*``: ``taylorat bench --device cuda`` for PreAct ResNet-18 and WideResNet-34-10, TRADES vs
   TRADES+1st+2nd at batch 128: fp32 eager (the layouts as ``train`` runs them and forced), bf16 +
   channels_last, compile (reduce-overhead) for both, and a timed epoch (data pipeline + per-epoch check);
   the compiled PreAct-18 cases also profiled (``--profile 3``: where the Taylor step's extra time goes);
3. ``train_eval``: one epoch of training and ``taylorat eval`` (clean, PGD-20, AutoAttack on 64
   images) of a small model on synthetic CIFAR-shaped data on ``cuda``.

``--quick`` (time limits adding up to 235 s) keeps ``tests`` and the two rows that decide the goals:
compiled bf16 channels_last PreAct-18 (11 rounds) and WRN-34-10 (3 rounds), TRADES and TRADES+1st+2nd
interleaved round by round, the Taylor overhead the median of the per-round ratios.

Nothing is installed from the network: taylorat with ``pip install --no-deps --no-build-isolation
-e .`` and missing packages (``pyautoattack``) from wheels in ``--wheels`` (default ``.whl``).
``OUT/summary.json`` collects every section; the summary printed last compares the numbers with the
goals (README "Performance").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS = {  # TRADES+1st+2nd whole step on an H100 at batch 128
    "wrn_34_10": {"ms_per_iter": 165.0, "peak_mib": 6 * 1024},
    "preact_resnet18": {"ms_per_iter": 30.0},
    "taylor_overhead": 1.03,
}
TRAIN = ["model.name=wrn_16_2", "data.dataset=synthetic", "data.options={n_train: 2048, n_test: 256}",
         "data.holdout=256", "optim.epochs=1", "precision=bf16", "eval.n=256", "progress=false"]
BENCH = ["-m", "taylorat", "bench", "--device", "cuda", "--methods", "trades,trades+1st+2nd", "--batch", "128"]


def _bench(out: Path, name: str, limit: int, *args: str) -> dict:
    return {"name": name, "limit": limit, "json": f"{name}.jsonl",
            "cmd": [sys.executable, *BENCH, *args, "--out", str(out / f"{name}.jsonl")]}


COMPILED = ["--precision", "bf16", "--channels-last", "--compile", "reduce-overhead"]


def plan(out: Path, quick: bool = False) -> list[dict]:
    """Every section: its name, command, time limit (s) and the JSON file it leaves.

    ``quick``: the CUDA tests and the two rows that decide the goals (README "Performance"), PreAct-18 and
    WRN-34-10 with bf16 + channels_last + ``compile=reduce-overhead``, TRADES and TRADES+1st+2nd interleaved
    round by round (the Taylor overhead: the median of the per-round ratios), in at most 4 minutes."""
    py = sys.executable
    run_dir, ev = out / "run", out / "eval"
    tests = {"name": "tests", "limit": 55 if quick else 75, "json": "tests.xml",
             "cmd": [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_devices.py",
                     f"--junitxml={out / 'tests.xml'}"]}
    wrn_compiled = _bench(out, "bench_wrn34_10_compile", 110 if quick else 150, "--models", "wrn_34_10", *COMPILED,
                          "--rounds", "3", "--iters", "5", "--warmup", "5")
    if quick:
        return [tests, _bench(out, "bench_preact18_compile", 70, "--models", "preact_resnet18", *COMPILED,
                              "--rounds", "11", "--iters", "10", "--warmup", "10"), wrn_compiled]
    return [
        tests,
        _bench(out, "bench_preact18_fp32", 60, "--models", "preact_resnet18", "--precision", "fp32", "--defaults",
               "--rounds", "5", "--iters", "10", "--warmup", "10"),
        _bench(out, "bench_preact18_bf16", 60, "--models", "preact_resnet18", "--precision", "bf16", "--channels-last",
               "--rounds", "5", "--iters", "10", "--warmup", "10", "--epoch", "--epoch-steps", "100",
               "--check-images", "1000"),
        _bench(out, "bench_preact18_compile", 90, "--models", "preact_resnet18", *COMPILED, "--rounds", "15",
               "--iters", "10", "--warmup", "10", "--profile", "3"),
        _bench(out, "bench_wrn34_10", 60, "--models", "wrn_34_10", "--precision", "fp32,bf16", "--channels-last",
               "--rounds", "3", "--iters", "5", "--warmup", "5"),
        wrn_compiled,
        {"name": "train_eval", "limit": 60, "json": "eval/report.json", "train": TRAIN + [f"out_dir={run_dir}"],
         "cmd": ["bash", "-c",
                 f"{py} -m taylorat train device=cuda out_dir={run_dir} " + " ".join(f"'{a}'" for a in TRAIN)
                 + f" && {py} -m taylorat eval --checkpoint {run_dir / 'best.safetensors'} --attacks clean,pgd20,aa "
                 f"--n 64 --device cuda --out {ev}"]},
    ]


def install(wheels: Path, dry_run: bool) -> list[str]:
    """taylorat (editable, no network) and the missing packages from wheels; returns what was done or found."""
    notes = []
    if importlib.util.find_spec("taylorat") is None:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
        notes.append(" ".join(cmd))
        if not dry_run:
            subprocess.run(cmd, check=True)
    for module, dist in (("pyautoattack", "pyautoattack"),):
        if importlib.util.find_spec(module) is not None:
            notes.append(f"{module}: installed")
            continue
        found = sorted(wheels.glob(f"{dist}-*.whl")) if wheels.is_dir() else []
        if not found:
            notes.append(f"{module}: MISSING and no {dist}-*.whl in {wheels} (AutoAttack will fail)")
            continue
        site = Path("/tmp/site")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target",
               str(site), *map(str, sorted(wheels.glob("*.whl")))]
        notes.append(" ".join(cmd))
        if not dry_run:
            subprocess.run(cmd, check=True)
            os.environ["PYTHONPATH"] = f"{site}:{os.environ.get('PYTHONPATH', '')}"
            sys.path.insert(0, str(site))
    return notes


def run_section(sec: dict, out: Path) -> dict:
    t = time.time()
    log = out / f"{sec['name']}.log"
    try:
        r = subprocess.run(sec["cmd"], cwd=ROOT, capture_output=True, text=True, timeout=sec["limit"],
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        status, rc, text = ("ok" if r.returncode == 0 else "failed"), r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        status, rc = "timeout", None
        text = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    log.write_text(text)
    return {"name": sec["name"], "status": status, "returncode": rc, "seconds": round(time.time() - t, 1),
            "log": log.name, "tail": text[-1500:]}


def bench_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("bench_*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """The goals, each as a line: measured value, goal, met or not."""
    lines = []
    for r in rows:
        if r["method"] != "trades+1st+2nd":
            continue
        goal = GOALS.get(r["model"], {})
        what = f"{r['model']} {r['precision']} {r['variant']}" + (f" compile={r['compile']}" if r["compile"] != "none"
                                                                 else "")
        if "ms_per_iter" in goal:
            ok = r["ms_per_iter"] <= goal["ms_per_iter"]
            lines.append(f"{what}: {r['ms_per_iter']:.1f} ms/iter (goal <= {goal['ms_per_iter']:.0f}: "
                         f"{'met' if ok else 'NOT met'})")
        if "peak_mib" in goal and r.get("peak_mib") is not None:
            ok = r["peak_mib"] <= goal["peak_mib"]
            lines.append(f"{what}: peak {r['peak_mib']:.0f} MiB (goal <= {goal['peak_mib']}: "
                         f"{'met' if ok else 'NOT met'})")
        if "time_ratio_to_trades" in r:
            ok = r["time_ratio_to_trades"] <= GOALS["taylor_overhead"]
            lines.append(f"{what}: Taylor overhead {r['time_ratio_to_trades']:.3f} x TRADES (goal <= "
                         f"{GOALS['taylor_overhead']}: {'met' if ok else 'NOT met'})")
    return lines


def dry_run(out: Path, sections: list[dict], notes: list[str], quick: bool = False) -> int:
    """Check what can be checked without a GPU: the CUDA tests exist, the commands' arguments parse."""
    problems = []
    env = {**os.environ, "TAYLORAT_LIST_CUDA_TESTS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                        "tests/test_devices.py"], cwd=ROOT, capture_output=True, text=True, env=env)
    cuda_tests = [line for line in r.stdout.splitlines() if "[cuda" in line]
    if r.returncode != 0 or not cuda_tests:
        problems.append(f"no CUDA test cases collected: {r.stdout[-500:]}{r.stderr[-500:]}")
    for sec in sections:
        if sec["name"].startswith("bench"):  # the same arguments, on the CPU with the smallest sizes
            args = _shrink(sec["cmd"][1:])
            r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                problems.append(f"{sec['name']}: {r.stderr[-500:]}")
        if "train" in sec:  # the training config validates (model, data, schedule, out_dir)
            r = subprocess.run([sys.executable, "-m", "taylorat", "train", "--dry-run", "device=cpu", *sec["train"]],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                problems.append(f"{sec['name']}: {r.stderr[-500:]}")
    (out / "plan.json").write_text(json.dumps({"sections": [{k: (v if k != "cmd" else " ".join(map(str, v)))
                                                             for k, v in s.items()} for s in sections],
                                               "cuda_tests": cuda_tests, "install": notes, "quick": quick,
                                               "problems": problems},
                                              indent=2) + "\n")
    print("GPU check plan (dry run, nothing needs a GPU here):")
    for sec in sections:
        print(f"  {sec['name']:24s} limit {sec['limit']:4d} s  -> {out / sec['json']}")
    print(f"  {len(cuda_tests)} CUDA test cases; install: " + "; ".join(notes))
    total = sum(s["limit"] for s in sections)
    print(f"  time limits add up to {total} s ({total / 60:.1f} min)")
    command = 'bash benchmarks/gpu_check.sh "$OUT"' + (" --quick" if quick else "")
    print(f"  on the GPU machine: {command}, within {min(600, total + 60)} s")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


def _shrink(args: list[str]) -> list[str]:
    """Smallest sizes for a CPU check of a bench command: small_cnn, one round of one step."""
    out, skip = [], False
    values = {"--device": "cpu", "--models": "small_cnn", "--rounds": "1", "--iters": "1", "--warmup": "0", "--batch": "4",
              "--epoch-steps": "1", "--check-images": "10", "--compile": "none"}
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in values:
            out += [a, values[a]]
            skip = True
        elif a == "--out":
            skip = True
        else:
            out.append(a)
    return out + ["--steps", "1"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for the JSON results (e.g. the $OUT a GPU machine hands back)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and check what needs no GPU")
    p.add_argument("--wheels", default=str(ROOT / ".whl" if (ROOT / ".whl").is_dir() else ROOT / ".gpu_carry"),
                   help="wheels of missing packages (default .whl, else .gpu_carry from gpu_study.sh --pack)")
    p.add_argument("--only", help="comma-separated section names")
    p.add_argument("--quick", action="store_true",
                   help="at most 4 minutes: the CUDA tests and the compiled PreAct-18 and WRN-34-10 rows of the goals")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = install(Path(args.wheels), args.dry_run)
    sections = [s for s in plan(out, args.quick) if not args.only or s["name"] in args.only.split(",")]
    if args.dry_run:
        return dry_run(out, sections, notes, args.quick)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; run with --dry-run on a machine without one", file=sys.stderr)
        return 2
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
           "date": time.strftime("%Y-%m-%d"), "install": notes, "quick": args.quick}
    results = []
    for sec in sections:
        print(f"== {sec['name']} (limit {sec['limit']} s)", flush=True)
        res = run_section(sec, out)
        results.append(res)
        print(f"   {res['status']} in {res['seconds']} s", flush=True)
    rows = bench_rows(out)
    ev = out / "eval" / "report.json"
    junit = out / "tests.xml"
    if junit.exists():
        import xml.etree.ElementTree as ET

        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        results[0]["counts"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary = {"environment": env, "sections": results, "bench": rows,
               "eval": json.loads(ev.read_text()) if ev.exists() else None, "goals": verdicts(rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nGPU check summary: " + f"{env['gpu']}, torch {env['torch']}, CUDA {env['cuda']}")
    for r in results:
        print(f"  {r['name']:24s} {r['status']:8s} {r['seconds']:7.1f} s" + (f"  {r['counts']}" if "counts" in r else ""))
    for line in summary["goals"]:
        print(f"  {line}")
    if summary["eval"]:
        print("  eval on cuda: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["eval"]["results"].items()))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

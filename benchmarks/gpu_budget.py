"""How long one seed of the GPU study takes on one H100, computed from what the GPU check measured there.

Inputs, all read from ``benchmarks/results/h100-2026-11-26/`` (CIFAR-shaped 3×32×32 images):

- ``step_ms[m]``: the compiled bf16 channels_last PreAct-18 training step of method ``m`` at batch 128
  (the slowest of the runs measured, ``cudnn.benchmark`` off);
- ``check_ms``: PGD-20 and the clean pass on one image, fp32 eager (the timed epoch's check:
  ``(epoch_s - epoch_train_s) / epoch_check_images``, the slowest row); one forward + backward of one
  image costs ``unit_ms = check_ms / 21``;
- ``pipeline``: a timed epoch's training part over its bare steps (data on the device, crop/flip);
- ``compile_s``: torch.compile's warm-up per method, the compiled bench section's seconds less its timed
  steps and a process start, halved (two methods);
- ``aa_overhead_ms[phase]``: AutoAttack's cost per iteration with (almost) nothing left to attack, from
  the log of AutoAttack on 64 images of a model at chance (APGD-CE 100, APGD-T and FAB-T 9 × 100
  iterations, Square 5,000 queries).

Fashion-MNIST images are 1×28×28: every compute term is scaled by the pixel ratio 28²/32² = 0.766
(one input channel changes only the first convolution); per-iteration overheads are not scaled.

One seed = setup (install, once) + per method: process start, compile warm-up (×2: the short last batch
recompiles the step's graphs with a dynamic batch size), ``epochs × ceil(n_train/B)`` steps,
the per-epoch PGD-20 check, clean + PGD-20 + CW-20 on ``n`` test images and AutoAttack on ``n_aa``.
AutoAttack's compute per phase: iterations × points still robust × ``unit_ms`` × a phase factor
(APGD 1, FAB-T 1.5: its targeted gradient and projection, Square 1/3: a forward pass only).

*One after the other* adds everything. *Side by side* (two processes on the one GPU: the GPU time-
slices between them, so GPU work still adds, ×1.05 for the switching) hides one process's host work
(start, compile, AutoAttack's per-iteration overhead) behind the other's GPU work, but not the larger
of the two. The epochs are the most for which side by side fits ``BUDGET_S`` and one after the other
still fits ``LIMIT_S`` (the device's 10-minute command, less a margin), so a wrong guess about the
overlap costs time, never the call.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "benchmarks" / "results" / "h100-2026-11-26"
BUDGET_S = 480.0  # one seed of both methods, side by side: 8 minutes
LIMIT_S = 570.0  # one seed one after the other must still end inside the 10-minute command
AA_PHASES = {"apgd-ce": 100, "apgd-t": 900, "fab-t": 900, "square": 5000}  # iterations (standard version)
AA_UNITS = {"apgd-ce": 1.0, "apgd-t": 1.0, "fab-t": 1.5, "square": 1 / 3}
_AA_LINE = re.compile(r"robust accuracy after ([A-Z-]+): .* \(total time ([0-9.]+) s\)")


@dataclass
class Assumptions:
    """What was not measured on a GPU, stated once."""

    setup_s: float = 30.0  # pip install -e . and the AutoAttack wheel, once per call
    start_s: float = 5.0  # a process: import torch, read the four data files, build the model
    compile_factor: float = 2.0  # training-step graphs measured; their dynamic-batch recompile on top
    aa_clean: float = 0.92  # share of the AutoAttack images APGD-CE attacks (clean accuracy)
    aa_robust: float = 0.80  # share APGD-T, FAB-T and Square attack (robust after APGD-CE; CPU study: 64 %)
    contention: float = 1.05  # side by side: GPU work of two processes time-sliced
    pixel_scale: float = 28 * 28 / (32 * 32)


@dataclass
class Measured:
    step_ms: dict[str, float]
    check_ms: float
    pipeline: float
    compile_s: float
    aa_overhead_ms: dict[str, float]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def unit_ms(self) -> float:
        return self.check_ms / 21


def _rows(folder: Path) -> list[dict]:
    rows = json.loads((folder / "gpu_check.json").read_text())["bench"]
    for f in sorted(folder.glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def measured(folder: Path = MEASURED) -> Measured:
    """The H100 numbers the estimate rests on, read from the GPU check's JSON."""
    check = json.loads((folder / "gpu_check.json").read_text())
    rows = [r for r in _rows(folder) if r["model"] == "preact_resnet18"]
    compiled = [r for r in rows if r["precision"] == "bf16" and r["compile"] == "reduce-overhead"
                and r.get("channels_last") and not r.get("cudnn_benchmark")]
    step_ms = {}
    for r in compiled:
        step_ms[r["method"]] = max(step_ms.get(r["method"], 0.0), r["ms_per_iter"])
    epochs = [r for r in rows if "epoch_s" in r]
    check_ms = max(1000 * (r["epoch_s"] - r["epoch_train_s"]) / r["epoch_check_images"] for r in epochs)
    pipeline = max(r["epoch_train_s"] / (r["epoch_steps"] * r["ms_per_iter"] / 1000) for r in epochs)
    sec = next(s for s in check["sections"] if s["name"] == "bench_preact18_compile")
    timed = sum((10 + 15 * 10 + 3) * r["ms_per_iter"] / 1000 for r in check["bench"]  # warm-up, rounds, profile
                if r["model"] == "preact_resnet18" and r["compile"] == "reduce-overhead")
    compile_s = (sec["seconds"] - Assumptions.start_s - timed) / 2
    cumulative, aa = 0.0, {}
    for line in check["eval"]["extra"]["aa_log"]:
        m = _AA_LINE.search(line)
        if m:
            phase = m.group(1).lower()
            aa[phase] = 1000 * (float(m.group(2)) - cumulative) / AA_PHASES[phase]
            cumulative = float(m.group(2))
    return Measured(step_ms, check_ms, pipeline, compile_s, aa, str(folder.relative_to(ROOT)),
                    [f"{check['environment']['gpu']}, torch {check['environment']['torch']}"])


def study_sizes(values: dict) -> dict:
    """What the estimate needs from a study file's values (its ``base`` and ``evaluate``)."""
    b, ev = values["base"], values["evaluate"]
    d, o, e = b["data"], b["optim"], b.get("eval", {})
    n_train = d.get("train_subset") or 60_000 - d.get("holdout", 1000)
    n_check = min(e.get("n", 1000), d.get("holdout", 1000)) + e.get("track_test", 0) + e.get("track_train", 0)
    return {"epochs": o["epochs"], "batch": o["batch_size"], "n_train": n_train, "n_check": n_check,
            "check_every": e.get("every", 1), "n_eval": ev["n"], "n_aa": ev.get("n_aa", ev["n"]),
            "eval_batch": ev.get("batch_size") or 500, "methods": [r["method"]["name"] for r in values["runs"]]}


def run_parts(m: Measured, a: Assumptions, sizes: dict, method: str, epochs: int) -> dict[str, dict[str, float]]:
    """Seconds of one run by phase, each split into ``gpu`` (compute) and ``host`` (launches, compile)."""
    s = a.pixel_scale
    steps = math.ceil(sizes["n_train"] / sizes["batch"])
    checks = math.ceil(epochs / sizes["check_every"])
    aa_batches = math.ceil(sizes["n_aa"] / sizes["eval_batch"])
    aa_gpu = aa_host = 0.0
    for phase, iters in AA_PHASES.items():
        points = sizes["n_aa"] * (a.aa_clean if phase == "apgd-ce" else a.aa_robust)
        aa_gpu += iters * points * m.unit_ms * s * AA_UNITS[phase] / 1000
        aa_host += iters * aa_batches * m.aa_overhead_ms[phase] / 1000
    return {
        "start": {"gpu": 0.0, "host": a.start_s},
        "compile": {"gpu": 0.0, "host": m.compile_s * a.compile_factor},
        "train": {"gpu": epochs * steps * m.step_ms[method] * s * m.pipeline / 1000, "host": 0.0},
        "check": {"gpu": checks * sizes["n_check"] * m.check_ms * s / 1000, "host": 0.0},
        "pgd20+cw20": {"gpu": 2 * sizes["n_eval"] * m.check_ms * s / 1000, "host": 0.0},
        "aa": {"gpu": aa_gpu, "host": aa_host},
    }


def estimate(m: Measured, a: Assumptions, sizes: dict, epochs: int | None = None) -> dict:
    """Seconds for one seed of every method: one after the other, and side by side."""
    epochs = sizes["epochs"] if epochs is None else epochs
    runs = {meth: run_parts(m, a, sizes, meth, epochs) for meth in sizes["methods"]}
    gpu = {meth: sum(p["gpu"] for p in parts.values()) for meth, parts in runs.items()}
    host = {meth: sum(p["host"] for p in parts.values()) for meth, parts in runs.items()}
    sequential = a.setup_s + sum(gpu.values()) + sum(host.values())
    side = a.setup_s + a.contention * sum(gpu.values()) + max(host.values())
    return {"epochs": epochs, "runs": runs, "gpu": gpu, "host": host, "sequential_s": sequential,
            "side_by_side_s": side, "steps_per_epoch": math.ceil(sizes["n_train"] / sizes["batch"])}


def fit_epochs(m: Measured, a: Assumptions, sizes: dict, most: int = 200) -> int:
    """The most epochs for which side by side fits BUDGET_S and one after the other fits LIMIT_S (0: none)."""
    best = 0
    for e in range(1, most + 1):
        est = estimate(m, a, sizes, e)
        if est["side_by_side_s"] > BUDGET_S or est["sequential_s"] > LIMIT_S:
            break
        best = e
    return best


def plan_lines(m: Measured, a: Assumptions, sizes: dict) -> list[str]:
    """The arithmetic, as printed by ``gpu_study.sh --dry-run``."""
    est = estimate(m, a, sizes)
    s = a.pixel_scale
    lines = [f"measured on {m.notes[0]} ({m.source}), 3x32x32; scaled by 28²/32² = {s:.3f} for 1x28x28:",
             "  step ms (compiled bf16 channels_last, batch 128): "
             + ", ".join(f"{k} {v:.1f} -> {v * s:.1f}" for k, v in m.step_ms.items()),
             f"  PGD-20 + clean per image {m.check_ms:.3f} ms -> {m.check_ms * s:.3f}; pipeline x{m.pipeline:.3f}; "
             f"compile warm-up {m.compile_s:.1f} s per method x{a.compile_factor:g}",
             "  AutoAttack overhead per iteration (ms): "
             + ", ".join(f"{k} {v:.1f}" for k, v in m.aa_overhead_ms.items()),
             f"assumed: setup {a.setup_s:.0f} s, process start {a.start_s:.0f} s, AutoAttack attacks "
             f"{a.aa_clean:.0%} then {a.aa_robust:.0%} of its images, side-by-side contention x{a.contention}",
             f"per method: {sizes['epochs']} epochs x {est['steps_per_epoch']} steps (n_train {sizes['n_train']}, "
             f"batch {sizes['batch']}), check on {sizes['n_check']} images per epoch, clean/PGD-20/CW-20 on "
             f"{sizes['n_eval']}, AutoAttack on {sizes['n_aa']} (eval batch {sizes['eval_batch']})"]
    for meth, parts in est["runs"].items():
        lines.append(f"  {meth:16s} " + ", ".join(f"{k} {p['gpu'] + p['host']:.0f} s" for k, p in parts.items())
                     + f" = {est['gpu'][meth] + est['host'][meth]:.0f} s (GPU {est['gpu'][meth]:.0f} s, "
                     f"host {est['host'][meth]:.0f} s)")
    lines += [f"one seed, one after the other: {a.setup_s:.0f} + " + " + ".join(
                  f"{est['gpu'][k] + est['host'][k]:.0f}" for k in est["runs"])
              + f" = {est['sequential_s']:.0f} s ({est['sequential_s'] / 60:.1f} min; limit {LIMIT_S:.0f} s)",
              f"one seed, side by side: {a.setup_s:.0f} + {a.contention} x ("
              + " + ".join(f"{v:.0f}" for v in est["gpu"].values()) + f") + max host {max(est['host'].values()):.0f}"
              f" = {est['side_by_side_s']:.0f} s ({est['side_by_side_s'] / 60:.1f} min; budget {BUDGET_S:.0f} s)"]
    return lines

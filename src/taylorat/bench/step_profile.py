"""Where a training step's time goes: ``torch.profiler`` over a few steps, summarised per step.

``aten_calls`` counts every ATen operator call (nested ones included, so it compares cases rather
than counting kernels); ``launches`` counts kernel launches (CUDA only: ``cudaLaunchKernel`` and
friends, one ``cudaGraphLaunch`` per replayed CUDA graph); ``top`` lists the operators with the most
self time — on the device where there is one, else on the CPU — in ms per step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def _self_device_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_steps(step: Callable[[int], None], device: torch.device, start: int, n: int, top: int = 10) -> dict:
    """Profile ``n`` calls ``step(start + i)``; per-step counts and the ``top`` operators by self time."""
    if n < 1:
        raise ValueError(f"profile needs at least one step, got {n}")
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(n):
            step(start + i)
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    time_of = _self_device_us if cuda else (lambda e: float(e.self_cpu_time_total))
    ranked = sorted((e for e in events if time_of(e) > 0), key=time_of, reverse=True)[:top]
    return {
        "steps": n,
        "aten_calls_per_step": sum(e.count for e in events if e.key.startswith("aten::")) / n,
        "launches_per_step": sum(e.count for e in events if e.key in LAUNCHES) / n if cuda else None,
        "clock": "device" if cuda else "cpu",
        "top": [{"op": e.key, "calls_per_step": e.count / n, "self_ms_per_step": round(time_of(e) / 1000 / n, 3)}
                for e in ranked],
    }


def profile_table(rows: list[dict]) -> str:
    """One block per profiled case: the counts, then its top operators."""
    out = []
    for r in rows:
        p = r.get("profile")
        if not p:
            continue
        if "error" in p:
            out.append(f"profile {r['model']} {r['method']} {r['precision']} {r['variant']}: failed ({p['error']})")
            continue
        launches = "" if p["launches_per_step"] is None else f", {p['launches_per_step']:.0f} kernel launches"
        out.append(f"profile {r['model']} {r['method']} {r['precision']} {r['variant']}: per step "
                   f"{p['aten_calls_per_step']:.0f} ATen calls{launches} (self time on the {p['clock']})")
        out += [f"  {t['self_ms_per_step']:9.3f} ms  {t['calls_per_step']:7.1f} x  {t['op']}" for t in p["top"]]
    return "\n".join(out) + ("\n" if out else "")

"""Timing primitives of the benchmark: ms per iteration (CUDA events on a GPU, wall clock on a CPU) and
the peak device memory of one step as if its case ran alone."""

from __future__ import annotations

import time

import torch

__all__ = ["allocated", "peak_mib", "sync", "timed"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, iters: int, device: torch.device, start: int) -> float:
    """ms per iteration over ``iters`` iterations."""
    sync(device)
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for i in range(iters):
            step(start + i)
        b.record()
        sync(device)
        return a.elapsed_time(b) / iters
    t = time.perf_counter()
    for i in range(iters):
        step(start + i)
    return 1000 * (time.perf_counter() - t) / iters


def allocated(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    sync(device)
    return torch.cuda.memory_allocated(device)


def peak_mib(step, device: torch.device, start: int, own_bytes: int) -> float | None:
    """Peak device memory of one step of this case as if it ran alone: what the case holds between steps
    (``own_bytes``: model, optimizer state, data, measured when it was built and warmed) plus the most the
    step allocates above what everything resident holds; the run's other cases do not count."""
    if device.type != "cuda":
        return None
    before = allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step(start)
    sync(device)
    return (own_bytes + torch.cuda.max_memory_allocated(device) - before) / 2**20

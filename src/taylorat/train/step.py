"""One training step, shared by the trainer and the benchmarks.

``x' = method.perturb(...)`` (eval mode, randomized weights), then the loss from one forward pass
per input and its gradient — at ``w``, or through a minimizer at perturbed weights (SAM, ASAM,
AWP: :mod:`taylorat.objectives.minimizers`; ``w`` restored exactly) — optimizer step,
weight-average update. Under ``precision="bf16"`` the attack and the
loss run under bf16 autocast (the statistics of the Taylor terms and the losses stay float32).

With ``compile`` on, the loss from the two passes' outputs (base loss, head statistics, soft
targets, Taylor KL terms: hundreds of small operators) is compiled too (:func:`compiled_loss`), so
that it runs as a few fused kernels instead of one launch per operator between the forward and
the backward pass.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..common import InputError
from ..objectives import LossParts, Method, Minimizer, PairForward, frozen_bn_stats, head_grad_rowsums
from .distributed import Dist, weighted_mean
from .speed import in_layout

SINGLE = Dist()  # one process


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    if precision not in ("fp32", "bf16"):
        raise InputError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compiled_loss(method: Method, mode: str) -> Callable[..., LossParts]:
    """``torch.compile(method.loss_from_outputs)``; under ``reduce-overhead`` (CUDA graphs for the model)
    the loss is compiled without CUDA graphs (``default``), as is ``max-autotune``'s."""
    loss_mode = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)
    return torch.compile(method.loss_from_outputs, mode=loss_mode)


RECOMPILE_LIMIT = 16  # graphs kept per compiled function (torch's default is 8)


def compile_for_training(model: nn.Module, method: Method, mode: str, memory_format: torch.memory_format,
                         ) -> Callable[..., LossParts] | None:
    """The ``compile`` switch: compiles ``model.forward_features`` in place for the training step and returns the
    compiled loss for :func:`train_step` (None and nothing compiled for ``mode="none"``).

    The step calls the features in three settings, each its own graph (the attack with an input gradient,
    no-grad passes, the training pass), and again once the short last batch makes the batch size dynamic;
    the per-epoch check runs them eager (:func:`eager_features`), as evaluation does. Past torch's limit of 8
    graphs a function runs eager: it is raised to :data:`RECOMPILE_LIMIT` for the process. Inputs are put in
    the exact strides of ``memory_format`` first (:func:`~taylorat.train.speed.in_layout`), so that a layout
    switch is never one more graph."""
    if mode == "none":
        return None
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    original = model.forward_features
    features = torch.compile(original, mode=mode)

    def forward_features(x: torch.Tensor) -> torch.Tensor:
        return features(in_layout(x, memory_format))

    forward_features.eager = original  # type: ignore[attr-defined]
    model.forward_features = forward_features
    return compiled_loss(method, mode)


@contextmanager
def eager_features(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block ``model`` runs its features eager, also where :func:`compile_for_training` compiled them:
    the per-epoch check is short and evaluated in fp32, and compiling it would add its graphs to every run's
    warm-up for little gain."""
    compiled = model.__dict__.get("forward_features")
    original = getattr(compiled, "eager", None)
    if original is None:
        yield model
        return
    model.forward_features = original
    try:
        yield model
    finally:
        model.forward_features = compiled


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    method: Method,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    minimizer: Minimizer | None = None,
    average=None,
    pair: nn.Module | None = None,
    rows: tuple[int, int, int] | None = None,
    dist: Dist = SINGLE,
    global_stats: bool = False,
    loss_from_outputs: Callable[..., LossParts] | None = None,
    accumulate: int = 1,
) -> LossParts:
    """One step of adversarial training on the batch ``(x, y)``; returns the loss and its parts.

    ``accumulate=K > 1``: the batch in K micro-batches and one optimizer step (:func:`accumulated_step`).

    Data-parallel (``dist.enabled``): ``(x, y)`` are rows ``rows = (lo, hi, B)`` of the global
    batch, ``pair`` is the DDP-wrapped :class:`PairForward`; the loss is scaled by
    ``world · b / B`` so that DDP's gradient average is the global-batch mean; AWP's proxy
    gradient and (``global_stats``) the Taylor head statistics are averaged the same way.
    ``loss_from_outputs`` replaces ``method.loss_from_outputs`` (a :func:`compiled_loss`), except where the
    head statistics are all-reduced across ranks (``global_stats``), which stays eager.
    """
    if accumulate > 1:
        if minimizer is not None:
            raise InputError(f"gradient accumulation ({accumulate} micro-batches) works with minimizer none only; "
                             "set optim.accumulate=1 for sam, asam or awp")
        return accumulated_step(model, opt, method, x, y, accumulate, generator=generator, precision=precision,
                                average=average, pair=pair, rows=rows, dist=dist, global_stats=global_stats)
    autocast = autocast_for(x.device, precision)
    weight = (rows[1] - rows[0]) / rows[2] if rows is not None else 1.0  # b / B
    reduce = (lambda g: weighted_mean(g, weight, dist)) if dist.enabled else None
    if pair is None:
        pair = PairForward(model, method.needs_clean_pass(), method.bn_passes())
    with autocast:
        x_adv = method.perturb(model, x, y, generator=generator, rows=rows)

    def outer() -> LossParts:  # the clean and adversarial passes and the loss, at the current weights
        with autocast:
            outputs = pair(x, x_adv)
            if loss_from_outputs is None or (global_stats and reduce is not None):
                return method.loss_from_outputs(outputs, y, stats_reduce=reduce if global_stats else None)
            return loss_from_outputs(outputs, y)

    def backward(parts: LossParts) -> None:
        opt.zero_grad(set_to_none=True)
        (parts.loss * (dist.world * weight) if dist.enabled else parts.loss).backward()

    if minimizer is None:
        parts = outer()
        backward(parts)
    else:
        parts = minimizer.step(model, outer, backward, autocast=autocast, grad_reduce=reduce,
                               base_loss=lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    opt.step()
    if average is not None:
        average.after_step(model)
    return parts


class _FixedStats:
    """A ``stats_reduce`` that replaces the head statistics by given ones: ``taylor_terms`` asks for the
    clean statistic first and the adversarial one second (``g``, then ``g'``)."""

    def __init__(self, g_nat: torch.Tensor, g_adv: torch.Tensor) -> None:
        self.values, self.calls = (g_nat, g_adv), 0

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        out = self.values[self.calls % 2]
        self.calls += 1
        return out


def whole_batch_stats(model: nn.Module, method: Method, micro: list[tuple], autocast, reduce=None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The head statistics ``(g, g')`` of the whole batch from its micro-batches ``[(x, x', y), ...]``.

    ``g`` is a batch mean, so ``g = Σ_k (b_k / b)·g_k``; each ``g_k`` comes from a forward pass without
    gradient in train mode (BatchNorm normalises with the micro-batch's statistics, as the pass with
    gradient will; its running statistics are left as they were). ``reduce`` maps the result to the
    global batch's under data parallelism. This is the extra forward pass that exact accumulation costs.
    """
    pair = PairForward(model, True, method.bn_passes())
    b = sum(int(yk.shape[0]) for _, _, yk in micro)
    g = ga = None
    with torch.no_grad(), frozen_bn_stats(model), autocast:
        for xk, xak, yk in micro:
            z, h, za, ha = pair(xk, xak)
            dtype = torch.promote_types(z.dtype, torch.float32)
            w = yk.shape[0] / b
            gk = w * head_grad_rowsums(F.softmax(z.to(dtype), 1), h.to(dtype), yk)
            gak = w * head_grad_rowsums(F.softmax(za.to(dtype), 1), ha.to(dtype), yk)
            g, ga = (gk, gak) if g is None else (g + gk, ga + gak)
    return (g, ga) if reduce is None else (reduce(g), reduce(ga))


def accumulated_step(model: nn.Module, opt: torch.optim.Optimizer, method: Method, x: torch.Tensor,
                     y: torch.Tensor, k: int, *, generator: torch.Generator | None = None, precision: str = "fp32",
                     average=None, pair: nn.Module | None = None, rows: tuple[int, int, int] | None = None,
                     dist: Dist = SINGLE, global_stats: bool = False) -> LossParts:
    """One optimizer step on ``(x, y)`` split into ``k`` micro-batches (sizes differ by at most one).

    The loss is ``Σ_k (b_k / b)·L_k``: every term is a batch mean, so its gradient is the whole batch's.
    The attack of each micro-batch restarts ``generator`` from the step's state and draws for the
    whole batch (``rows``): the same weight noise and random starts as one pass would. The Taylor
    terms use the whole batch's head statistics (:func:`whole_batch_stats`). BatchNorm normalises
    each micro-batch with its own statistics. Under data parallelism gradients are all-reduced once,
    on the last micro-batch.
    """
    autocast = autocast_for(x.device, precision)
    lo, hi, total = rows if rows is not None else (0, x.shape[0], x.shape[0])
    bounds, start = [], 0
    for part in torch.tensor_split(torch.arange(x.shape[0]), k):
        if len(part):
            bounds.append((start, start + len(part)))
            start += len(part)
    state = generator.get_state() if generator is not None else None
    micro = []
    for a, b in bounds:
        if generator is not None:
            generator.set_state(state)
        with autocast:
            xa = method.perturb(model, x[a:b], y[a:b], generator=generator, rows=(lo + a, lo + b, total))
        micro.append((x[a:b], xa, y[a:b]))
    reduce = (lambda g: weighted_mean(g, (hi - lo) / total, dist)) if dist.enabled and global_stats else None
    stats = whole_batch_stats(model, method, micro, autocast, reduce) if method.taylor else None
    forward = pair if pair is not None else PairForward(model, method.needs_clean_pass(), method.bn_passes())
    opt.zero_grad(set_to_none=True)
    parts = []
    for i, (xk, xak, yk) in enumerate(micro):
        share = yk.shape[0] / total if dist.enabled else yk.shape[0] / x.shape[0]
        sync = nullcontext() if i == len(micro) - 1 or not hasattr(forward, "no_sync") else forward.no_sync()
        with sync:
            with autocast:
                p = method.loss_from_outputs(forward(xk, xak), yk,
                                             stats_reduce=_FixedStats(*stats) if stats is not None else None)
            (p.loss * (share * dist.world if dist.enabled else share)).backward()
        parts.append((yk.shape[0] / x.shape[0], p))
    opt.step()
    if average is not None:
        average.after_step(model)
    mean = {f: sum(w * getattr(p, f).detach() for w, p in parts) for f in ("loss", "ce", "kl", "first", "second")}
    nat = [p.logits_nat for _, p in parts]
    return LossParts(**mean, logits_nat=None if nat[0] is None else torch.cat(nat),
                     logits_adv=torch.cat([p.logits_adv for _, p in parts]))

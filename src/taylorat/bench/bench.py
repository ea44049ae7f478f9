"""Training-step time and peak memory per model × method × precision (paper Table 6).

Times the whole training step of the trainer (`taylorat.train.step.train_step`: randomized-weight
attack, loss, backward, optimizer step) on random CIFAR-shaped data kept on the device, after a
warm-up. Cases are interleaved round by round so that drift of a shared machine hits all of
them alike; each case's ms/iter is the median over rounds, and the Taylor overhead is the median
over rounds of (method ÷ trades) measured in the same round. Prints a table (ms/iter, peak
memory, ratios to TRADES and, with ``--defaults``, to what ``taylorat train`` runs by default;
``--epoch``: one whole epoch as timed) and the overhead ratios; ``--json`` / ``--out`` the JSON.

    taylorat bench --device cpu --quick                  # CI: small CNN, 2 cores
    taylorat bench --device cpu --models wrn_16_2 --batch 32 --defaults   # what train runs vs forced layouts
    taylorat bench --device cpu --quick --epoch          # + a whole epoch with data and the PGD-20 check
    taylorat bench --device cpu --quick --epoch --extra-pool 50000   # + that epoch with an extra pool, streamed
    taylorat bench --device cuda --models preact_resnet18,wrn_34_10 --precision bf16 --channels-last
    taylorat bench --device cpu --quick --profile 2      # + where each case's step spends its time

(``python benchmarks/step_time.py ...`` is the same program.) :func:`add_arguments` puts these options on
any parser and :func:`run` runs what the parsed options ask for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from .. import data as datasets
from .. import models
from ..analysis import cost_table
from ..common import InputError, resolve_device
from ..train import from_dict
from ..train.speed import resolve_channels_last
from ..train.step import compile_for_training, train_step
from ..train.trainer import build_method, build_minimizer
from .epoch import POOL_ROUNDS, SHAPES, epoch_time, pool_epoch_times
from .step_profile import profile_steps, profile_table
from .timing import allocated, peak_mib, timed


def make_case(model_name: str, method: str, precision: str, device: torch.device, batch: int, channels_last: bool,
              compile_mode: str, steps: int, seed: int = 0, cudnn_benchmark: bool = False):
    channels, size = SHAPES.get(model_name, SHAPES["default"])
    method, _, minimizer = method.partition(" + ")  # "trades+1st+2nd + sam": a method with a minimizer
    cfg = from_dict({"method": {"name": method}, "attack": {"steps": steps}, "precision": precision,
                     "minimizer": {"name": minimizer, "warmup": 0} if minimizer else {}})
    torch.manual_seed(seed)
    model = models.create(model_name, num_classes=10, in_channels=channels, image_size=size).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    method_obj = build_method(cfg)
    mz = build_minimizer(cfg, model)  # before compiling, as the trainer does (AWP's proxy stays eager)
    loss_fn = compile_for_training(model, method_obj, compile_mode, fmt)  # as the trainer does
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                          foreach=device.type == "cuda")
    g = torch.Generator().manual_seed(seed)
    n = batch * 8
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    loader = datasets.DeviceLoader(images, labels, batch, device, crop=True, flip=True, drop_last=True,
                                   memory_format=fmt)
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = list(loader.batches(0))

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        torch.backends.cudnn.benchmark = cudnn_benchmark  # global: set per case, so cases can interleave
        train_step(model, opt, method_obj, x, y, generator=gen, precision=precision, loss_from_outputs=loss_fn,
                   minimizer=mz)

    return step


def _profile_steps(text: str) -> int:
    """``--profile N``: a number of steps, 0 for none."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"takes a number of steps to profile (0 = none), got {text}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``taylorat bench`` (and ``benchmarks/step_time.py``) on ``parser``."""
    p = parser
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--quick", action="store_true", help="small sizes for CI (small_cnn, batch 32, few rounds)")
    p.add_argument("--models", help="comma-separated (default: small_cnn with --quick, else preact_resnet18,wrn_34_10)")
    p.add_argument("--methods", default="trades,trades+1st+2nd",
                   help="comma-separated method names (default trades,trades+1st+2nd)")
    p.add_argument("--minimizers", default="none",
                   help="comma-separated: none,sam,asam,awp; each method timed with each ('trades+1st+2nd + sam')")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16")
    p.add_argument("--batch", type=int, help="batch size (default 128; 32 with --quick)")
    p.add_argument("--steps", type=int, default=10, help="attack steps K")
    p.add_argument("--warmup", type=int, help="untimed iterations per case first (default 10; 2 with --quick)")
    p.add_argument("--iters", type=int, help="iterations per case per round")
    p.add_argument("--rounds", type=int, help="rounds of interleaved cases (default 5; 15 with --quick)")
    p.add_argument("--channels-last", action="store_true", help="force channels_last on (default: what train runs)")
    p.add_argument("--defaults", action="store_true",
                   help="time what `taylorat train` runs with the shipped defaults (channels_last auto, resolved "
                        "here) beside the forced variants (channels_last on and off), interleaved")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="also time every case with torch.backends.cudnn.benchmark on (cuDNN times its convolution "
                        "algorithms once per shape and keeps the fastest), interleaved with it off")
    p.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"],
                   help="torch.compile mode of the step, as the config's compile (default none)")
    p.add_argument("--json", action="store_true", help="print one JSON line per case (besides the table)")
    p.add_argument("--out", help="append the JSON lines to this file")
    p.add_argument("--max-overhead", type=float, help="exit 1 if a Taylor method's time ratio to trades exceeds this")
    p.add_argument("--epoch", action="store_true",
                   help="also time one whole epoch (data pipeline, training, per-epoch PGD-20 check) per case")
    p.add_argument("--epoch-steps", type=int, help="steps in that epoch (default 391; 20 with --quick)")
    p.add_argument("--check-images", type=int, help="images in the per-epoch PGD-20 check (default 1000; 64 quick)")
    p.add_argument("--extra-pool", type=int, metavar="N",
                   help="with --epoch: also train each case's epoch with an N-image synthetic extra pool, on the "
                        "device and streamed from its memory map, and print the ratio (data.extra)")
    p.add_argument("--extra-fraction", type=float, default=0.5, help="share of every batch from that pool (0.5)")
    p.add_argument("--extra-rounds", type=int, default=POOL_ROUNDS,
                   help=f"rounds of alternating on-device and streamed epochs (default {POOL_ROUNDS})")
    p.add_argument("--profile", type=_profile_steps, default=0, metavar="N",
                   help="after timing, profile N steps of each case (torch.profiler): ATen calls and kernel "
                        "launches per step and the operators with the most self time")
    p.add_argument("--table6", action="store_true",
                   help="also the paper's Table 6 layout: minutes per CIFAR-10 epoch (391 steps of batch 128, from "
                        "ms/iter) and peak memory, with the ratios to TRADES")


@dataclass
class Plan:
    """What one bench run times, with the ``--quick`` or full defaults filled in."""

    device: torch.device
    device_name: str
    models: list[str]
    methods: list[str]  # trades first when it was not asked for: the ratios need it
    precisions: list[str]
    batch: int
    warmup: int
    iters: int
    rounds: int


def plan(args: argparse.Namespace) -> Plan:
    """The cases and sizes ``args`` ask for."""
    device = resolve_device(args.device)
    quick = args.quick
    if args.extra_pool is not None and (not args.epoch or args.extra_pool < 1):
        raise InputError(f"--extra-pool {args.extra_pool}: give a pool size of at least 1 and --epoch "
                         "(pools are timed in whole epochs)")
    if args.extra_rounds < 1:
        raise InputError(f"--extra-rounds {args.extra_rounds}: give at least 1 round")
    if not 0 < args.extra_fraction < 1:
        raise InputError(f"--extra-fraction {args.extra_fraction}: give a share of each batch in (0, 1), e.g. 0.5")
    methods = args.methods.split(",")
    if "trades" not in methods:
        methods = ["trades", *methods]
    extra = [mz for mz in args.minimizers.split(",") if mz != "none"]
    methods += [f"{m} + {mz}" for mz in extra for m in methods]
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({torch.get_num_threads()} threads)")
    return Plan(device=device, device_name=name,
                models=(args.models or ("small_cnn" if quick else "preact_resnet18,wrn_34_10")).split(","),
                methods=methods, precisions=args.precision.split(","), batch=args.batch or (32 if quick else 128),
                warmup=args.warmup if args.warmup is not None else (2 if quick else 10),
                iters=args.iters or (2 if quick else 10), rounds=args.rounds or (15 if quick else 5))


def variants(args: argparse.Namespace, model_name: str, device: torch.device) -> tuple[list[tuple], str]:
    """``[(variant, channels_last, cudnn_benchmark), ...]`` of one model, and what ``channels_last=auto`` chose."""
    channels, size = SHAPES.get(model_name, SHAPES["default"])
    with torch.device("meta"):
        meta_model = models.create(model_name, num_classes=10, in_channels=channels, image_size=size)
    auto, why = resolve_channels_last("auto", meta_model, device)
    if args.defaults:
        layouts = [("defaults", auto), ("channels_last on", True), ("channels_last off", False)]
    else:
        layouts = [("channels_last on", True)] if args.channels_last else [("defaults", auto)]
    out = [(v, cl, False) for v, cl in layouts]
    if args.cudnn_benchmark:
        out += [(f"{v} + cudnn.benchmark", cl, True) for v, cl, _ in out]
    return out, f"{'on' if auto else 'off'} ({why})"


@dataclass
class Cases:
    """The cases of one model at one precision, keyed by (variant, method)."""

    model: str
    precision: str
    variants: list[tuple]  # (variant, channels_last, cudnn_benchmark)
    auto: str  # what channels_last=auto chose, and why
    steps: dict = field(default_factory=dict)  # the warmed-up step function
    own: dict = field(default_factory=dict)  # device bytes the case holds between steps
    times: dict = field(default_factory=dict)  # ms/iter in each round


def progress(line: str) -> None:
    """One line on stderr as each case warms up and each round ends: a bench stopped at a time limit says how
    far it got (the rows come out only once every round is timed, the rounds being interleaved)."""
    print(line, file=sys.stderr, flush=True)


def build_cases(args: argparse.Namespace, pl: Plan, model_name: str, precision: str) -> Cases:
    """Each (variant, method)'s step, warmed up, and the device memory it holds between steps."""
    cs = Cases(model_name, precision, *variants(args, model_name, pl.device))
    for v, cl, cb in cs.variants:
        for m in pl.methods:
            before = allocated(pl.device)
            cs.steps[v, m] = step = make_case(model_name, m, precision, pl.device, pl.batch, cl, args.compile,
                                              args.steps, cudnn_benchmark=cb)
            start = time.perf_counter()
            for i in range(max(pl.warmup, 1)):  # the first step allocates the optimizer's momentum
                step(i)
            cs.own[v, m] = allocated(pl.device) - before
            progress(f"warmed up {model_name} {m} {precision} {v}: {max(pl.warmup, 1)} steps in "
                     f"{time.perf_counter() - start:.1f} s" + (f" (compile={args.compile} included)"
                                                              if args.compile != "none" else ""))
    return cs


def time_rounds(cs: Cases, pl: Plan) -> None:
    """ms/iter of each case in every round; interleaved, so drift of a shared machine hits every case alike."""
    cs.times = {k: [] for k in cs.steps}
    for r in range(pl.rounds):
        for k, step in cs.steps.items():
            cs.times[k].append(timed(step, pl.iters, pl.device, pl.warmup + r * pl.iters))
        progress(f"round {r + 1}/{pl.rounds} of {cs.model} {cs.precision}")


def _median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a / b`` measured in the same round."""
    return round(statistics.median([x / y for x, y in zip(a, b)]), 4)


def case_row(args: argparse.Namespace, pl: Plan, cs: Cases, key: tuple[str, str]) -> dict:
    """One case's JSON row: its timing, peak memory, ratios, and the profile / timed epoch when asked."""
    variant, m = key
    times = cs.times
    t = times[key]
    cl, cb = next((cl, cb) for v, cl, cb in cs.variants if v == variant)
    ms = statistics.median(t)
    row = {"model": cs.model, "method": m, "precision": cs.precision, "variant": variant,
           "channels_last": cl, "device": pl.device_name, "batch_size": pl.batch, "attack_steps": args.steps,
           "compile": args.compile, "cudnn_benchmark": cb, "ms_per_iter": round(ms, 3),
           "peak_mib": peak_mib(cs.steps[key], pl.device, 0, cs.own[key]),
           "rounds": pl.rounds, "iters_per_round": pl.iters, "torch": torch.__version__,
           "channels_last_auto": cs.auto}
    if m != "trades":
        row["time_ratio_to_trades"] = _median_ratio(t, times[variant, "trades"])
    plain, _, minimizer = m.partition(" + ")
    if minimizer:
        row["minimizer"] = minimizer
        row["time_ratio_to_no_minimizer"] = _median_ratio(t, times[variant, plain])
    if variant != "defaults" and ("defaults", m) in times:
        row["time_ratio_to_defaults"] = _median_ratio(t, times["defaults", m])
    if cb:
        off = variant.removesuffix(" + cudnn.benchmark")
        row["time_ratio_to_cudnn_benchmark_off"] = _median_ratio(t, times[off, m])
    if args.profile:  # auxiliary: a profiler that fails on this machine leaves the timings standing
        try:
            row["profile"] = profile_steps(cs.steps[key], pl.device, 0, args.profile)
        except RuntimeError as e:
            row["profile"] = {"error": f"{type(e).__name__}: {e}"}
    if args.epoch:
        steps = args.epoch_steps or (20 if args.quick else 391)
        row.update(epoch_time(cs.model, m, cs.precision, args, pl.batch, steps,
                              args.check_images or (64 if args.quick else 1000), ms, cl))
        if args.extra_pool:
            row.update(pool_epoch_times(cs.model, m, cs.precision, args, pl.batch, steps, cl))
    return row


def run(args: argparse.Namespace) -> int:
    """Time every case ``args`` ask for, print the tables; 1 when a Taylor overhead exceeds ``--max-overhead``."""
    pl = plan(args)
    if args.out:  # a path that cannot take the rows fails now, not after minutes of timing
        with open(args.out, "a"):
            pass
    rows = []
    cudnn_before = torch.backends.cudnn.benchmark
    for model_name in pl.models:
        for precision in pl.precisions:
            cs = build_cases(args, pl, model_name, precision)
            time_rounds(cs, pl)
            for key in cs.times:
                row = case_row(args, pl, cs, key)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                if args.out:  # row by row: a later case that crashes or times out keeps the finished ones
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
            del cs
            torch.backends.cudnn.benchmark = cudnn_before
    return report(args, pl, rows)


def report(args: argparse.Namespace, pl: Plan, rows: list[dict]) -> int:
    """Print the tables and the Taylor overheads; 1 when one exceeds ``--max-overhead``."""
    print(table(rows))
    if args.profile:
        print(profile_table(rows))
    if args.table6:
        print(cost_table([{**r, "iters_per_epoch": 391} for r in rows]))
        print("Table 6 layout: time per CIFAR-10 epoch = ms/iter x 391 steps (the steps alone; --epoch times a "
              "real one with its data pipeline and per-epoch check)\n")
    print(f"device: {pl.device_name}; batch {pl.batch}; K={args.steps}; median of {pl.rounds} interleaved rounds of "
          f"{pl.iters} iterations; channels_last auto -> "
          + "; ".join(sorted({f"{r['model']}: {r['channels_last_auto']}" for r in rows})))
    for r in rows:
        if "epoch_s" in r:
            print(f"timed epoch {r['model']} {r['method']} {r['precision']} {r['variant']}: {r['epoch_steps']} steps "
                  f"+ PGD-20 check on {r['epoch_check_images']} images = {r['epoch_s']:.2f} s "
                  f"({r['epoch_vs_steps']:.2f} x steps x step time)")
    for r in rows:
        if "pool_streamed_ratio" in r:
            print(f"extra pool {r['model']} {r['method']} {r['precision']} {r['variant']}: {r['extra_epoch_steps']} "
                  f"steps, {r['extra_fraction']:g} of each batch from {r['extra_pool_images']} images: on the device "
                  f"{r['pool_on_device_train_s']:.2f} s, streamed {r['pool_streamed_train_s']:.2f} s "
                  f"(streamed / on device = {r['pool_streamed_ratio']:.3f}, median of {r['pool_rounds']} rounds)")
    for r in rows:
        if "minimizer" in r:  # its extra forward and backward of the outer loss (the attack is not rerun)
            print(f"minimizer overhead {r['model']} {r['precision']} {r['variant']} {r['method']} / "
                  f"{r['method'].partition(' + ')[0]} = {r['time_ratio_to_no_minimizer']:.3f}")
    failed = False
    for r in rows:
        if "time_ratio_to_trades" not in r or "minimizer" in r:  # the limit is the Taylor terms'
            continue
        ratio = r["time_ratio_to_trades"]
        ok = args.max_overhead is None or ratio <= args.max_overhead
        failed |= not ok
        print(f"Taylor overhead {r['model']} {r['precision']} {r['variant']} {r['method']} / trades = {ratio:.3f}"
              + ("" if args.max_overhead is None else f" (limit {args.max_overhead}: {'ok' if ok else 'EXCEEDED'})"))
    return 1 if failed else 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``taylorat bench ARGS``: parse ``argv`` and run."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def table(rows: list[dict]) -> str:
    """The readable table: per case ms/iter, peak memory, ratios to TRADES and to the defaults, a timed epoch."""
    out = ["| model | method | precision | variant | ms/iter | peak MiB | × trades | × defaults | timed epoch |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        epoch = (f"{r['epoch_s']:.2f} s ({r['epoch_steps']} steps + check on {r['epoch_check_images']})"
                 if "epoch_s" in r else "–")
        out.append(f"| {r['model']} | {r['method']} | {r['precision']} | {r['variant']} | {r['ms_per_iter']:.1f} | "
                   + (f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "–")
                   + f" | {r.get('time_ratio_to_trades', 1.0):.3f} | "
                   + (f"{r['time_ratio_to_defaults']:.3f}" if "time_ratio_to_defaults" in r else "–")
                   + f" | {epoch} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())

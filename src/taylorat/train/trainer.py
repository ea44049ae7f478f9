"""The training loop: randomized-weight attack, base + Taylor loss, per-epoch check, checkpoints.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per
epoch), ``last.safetensors`` (weights, optimizer state and history: what ``resume`` reads),
``last.prev.safetensors`` (the one before: a resume falls back to it when ``last`` is damaged),
``best.safetensors`` (best PGD-20 accuracy on the selection split), ``epoch_XXXX.safetensors`` on
the paper's checkpoint schedule, and ``summary.json`` when finished. Every file is written
atomically; rank 0 holds the folder's lock while it trains. All randomness of epoch ``e`` (data
order, augmentation, weight noise, attack start) comes from generators seeded by (seed, e), so a
resumed run retraces the uninterrupted one; a SIGTERM/SIGINT saves the position inside the epoch
and the generator state as well. Under ``torchrun`` every rank trains on its share of each global
batch; only rank 0 writes, and ``last`` also keeps every other rank's buffers (BatchNorm
statistics, which each rank's attack and check read) and attack generator as ``rankN.*``, so a
resume is exact with or without ``sync_bn``.

Divergence: a non-finite running loss, or one above ``optim.diverge_factor`` x max(ln K, the median of the
first three epochs' mean loss), stops the run before anything of that epoch is saved.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from .. import data as datasets
from ..common import InputError, MissingDependency, derive_seed, first_line, remove_temp_files, resolve_device
from ..objectives import Method, Minimizer, PairForward, Threat, make_minimizer
from . import distributed, divergence, rank_state, run_dir, sync_bn
from .averaging import WeightAverage
from .checks import EpochCheck
from .config import Config
from .curves import plot_histories
from .divergence import TrainingDiverged  # noqa: F401 - importable from here, as before
from .init_weights import build_model
from .logs import format_event, make_sinks
from .run_dir import RunDirError, check_run_dir, config_diff, run_dir_state  # noqa: F401 (importable here as before)
from .schedule import describe, lr_at_step, paper_checkpoint_epochs, schedule_warning
from .signals import StopOnSignal, Stopped
from .speed import resolve_channels_last
from .step import compile_for_training, eager_features, train_step

METRICS = ("loss", "ce", "kl", "first", "second")


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    best_epoch: int | None
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def build_method(cfg: Config) -> Method:
    r = cfg.resolved_method()
    a = cfg.attack
    keys = ("base", "beta", "eta", "eta2", "compat", "noise_std", "noise_scope")
    threat = Threat(norm=a.norm, eps=a.eps, step=a.step, steps=a.steps, mode=a.mode, projection=a.projection)
    return Method(threat=threat, label_smoothing=cfg.method.label_smoothing, **{k: r[k] for k in keys})


def build_minimizer(cfg: Config, model: torch.nn.Module) -> Minimizer | None:
    """The run's minimizer for ``model`` (None: plain steps), from ``cfg.resolved_minimizer()``."""
    options = cfg.resolved_minimizer()
    return make_minimizer(options.pop("name"), model, **options)


class Trainer:
    """Builds data, model, method and optimizer from a Config and runs the epochs."""

    def __init__(self, cfg: Config, log: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.dist = distributed.from_env()
        self.device = distributed.setup(self.dist, resolve_device(cfg.device))
        self.on_event = (log or self._console) if self.dist.main else (lambda ev: None)
        self.sinks: list[Callable] = []
        self.out = Path(cfg.out_dir)
        self.dataset = ds = datasets.load(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download,
                                          **cfg.data.options)
        self.prep = datasets.prepare(ds, cfg.data.train_subset, cfg.data.holdout, cfg.seed)
        self.prep.info = {**self.prep.info, **ds.provenance()}  # summary.json and checkpoints name what was read
        if ds.num_classes < 3 and cfg.resolved_method()["eta"] + cfg.resolved_method()["eta2"] > 0:
            raise InputError(f"the Taylor terms need >= 3 classes; {ds.name} has {ds.num_classes}")
        torch.manual_seed(cfg.seed)
        options = {} if cfg.model.activation == "relu" else {"activation": cfg.model.activation}
        model, self.init = build_model(cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size,
                                       cfg.model.init, cfg.model.init_head, **options)
        self.model = model.to(self.device)
        if cfg.sync_bn and self.dist.enabled:
            self.model = sync_bn.convert(self.model, self.device)
        self.channels_last, self.channels_last_why = resolve_channels_last(cfg.channels_last, self.model,
                                                                           self.device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        o = cfg.optim
        self.opt = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                   weight_decay=o.weight_decay, nesterov=o.nesterov, fused=o.fused or None)
        self.method = build_method(cfg)
        self.minimizer = build_minimizer(cfg, self.model)  # AWP's proxy copies the model, for instance
        crop = ds.crop if cfg.data.crop is None else cfg.data.crop
        flip = ds.flip if cfg.data.flip is None else cfg.data.flip
        pool, per_batch = self._extra_pool()
        self.loader = datasets.DeviceLoader(self.prep.train_x, self.prep.train_y, o.batch_size - per_batch,
                                            self.device, shuffle=True, crop=crop, flip=flip, pad=ds.pad,
                                            seed=cfg.seed, memory_format=self.memory_format)
        if pool is not None:  # round(fraction·B) pool images after the original ones in every batch
            on_device = {"auto": pool.nbytes <= datasets.extra.DEVICE_BYTES, "true": True,
                         "false": False}[cfg.data.extra.on_device]
            self.loader = datasets.MixedLoader(self.loader, pool, per_batch, on_device, cfg.seed)
        self.check = EpochCheck(cfg, self.prep, self.device, self.dist, self.eval_model)
        self.n_select = self.check.n_select
        self.avg = (WeightAverage(self.model, o.average, o.epochs, o.ema_decay, o.swa_start, o.ema_warmup)
                    if o.average != "none" else None)
        self.bn_loader = datasets.DeviceLoader(self.prep.train_x, self.prep.train_y, o.batch_size, self.device,
                                               shuffle=False, memory_format=self.memory_format) if self.avg else None
        # after the copies above (AWP proxy, average), which stay eager
        self.loss_fn = compile_for_training(self.model, self.method, cfg.compile, self.memory_format)
        self.pair = None
        if self.dist.enabled:  # one DDP forward per step: the clean and the adversarial pass together
            from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: PLC0415

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.pair = DDP(PairForward(self.model, self.method.needs_clean_pass(), self.method.bn_passes()),
                            device_ids=ids)
        self.schedule = set(paper_checkpoint_epochs(o.epochs)) if cfg.checkpoints == "paper" else set()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, float] = {}
        self.best_epoch: int | None = None
        self.start_epoch = 1
        self.partial: dict[str, Any] | None = None  # position inside an epoch stopped by a signal
        self.partial_rng: torch.Tensor | None = None
        self.resumed_from: Path | None = None
        self.lock = None
        self._no_plots = False

    def _extra_pool(self) -> tuple[datasets.ExtraPool | None, int]:
        """The checked ``data.extra`` pool and its images per batch (None, 0 without one)."""
        x, ds = self.cfg.data.extra, self.dataset
        if not x.path:
            return None, 0
        pool = datasets.open_pool(x.path, ds.in_channels, ds.image_size, ds.num_classes)
        return pool, datasets.extra_count(x.fraction, self.cfg.optim.batch_size)

    def lr_at_step(self, step: int) -> float:
        """The learning rate of 0-based global ``step`` (optim.schedule, optim.warmup_epochs)."""
        o = self.cfg.optim
        return lr_at_step(step, len(self.loader), o.lr, o.epochs, o.milestones, o.gamma, o.schedule, o.warmup_epochs)

    # ---------------------------------------------------------------- run directory
    def prepare_run_dir(self, resume: bool) -> None:
        """Claim ``out_dir`` (RunDirError if it holds another run), take back a stopped run, write config.yaml."""
        self.lock = run_dir.claim(self.cfg, resume, self.dist)
        if self.lock is not None and self.lock.took_over is not None:
            self.log(f"took over the lock of process {self.lock.took_over}, which is gone")
        if self.dist.main:
            gone = remove_temp_files(self.out)
            if gone:
                self.log(f"removed {len(gone)} temporary file(s) of an interrupted write: {', '.join(gone)}")
        distributed.barrier(self.dist)
        point = run_dir.restore(self.out, self.device, self.model, self.opt, self.avg)
        if point is not None:
            self.history, self.best, self.best_epoch = point.history, point.best, point.best_epoch
            self.start_epoch, self.partial, self.partial_rng = point.start_epoch, point.partial, point.partial_rng
            self.resumed_from = point.source
            rank_state.restore(self, point.rank_buffers)
            self.log(f"resuming {self.out} {point.where()}")
        if self.dist.main and not self.sinks:
            self.sinks = make_sinks([b for b in self.cfg.logging if b != "jsonl"], self.out, self.cfg.to_dict(),
                                    self.cfg.name)
        if self.dist.main:
            run_dir.write_config(self.out, self.cfg, self.device, self.channels_last, self.channels_last_why)

    # ---------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int, stop: StopOnSignal | None = None) -> dict[str, float]:
        cfg, model, opt, d = self.cfg, self.model, self.opt, self.dist
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.seed, epoch, "attack"))
        sums = torch.zeros(len(METRICS) + 2, device=self.device)
        seen, first_step, seconds = 0, 0, 0.0
        if self.partial is not None and self.partial["epoch"] == epoch:  # continue a stopped epoch
            gen.set_state(self.partial_rng.cpu())
            first_step, seconds = self.partial["step"], self.partial["seconds"]
            if d.main:  # the saved sums are over all ranks: rank 0 carries them, the others start at 0
                sums = torch.tensor(self.partial["sums"], device=self.device)
                seen = self.partial["seen"]
        self.partial = None
        t0 = time.time()
        bar = tqdm(total=len(self.loader), initial=first_step, desc=f"epoch {epoch}/{cfg.optim.epochs}",
                   leave=False, disable=not (cfg.progress and d.main), mininterval=1.0, dynamic_ncols=True)
        method = self.method
        minimizer = self.minimizer if self.minimizer is not None and self.minimizer.active(epoch) else None
        model.train()
        batches = self.loader.shard_batches(epoch, d.rank, d.world, first_step)
        lr = self.lr_at_step((epoch - 1) * len(self.loader) + first_step)
        for i, (x, y, rows) in enumerate(batches, start=first_step):
            if i == first_step:
                model.check_input(x)
            lr = self.lr_at_step((epoch - 1) * len(self.loader) + i)  # per step: warm-up and cosine
            for group in opt.param_groups:
                group["lr"] = lr
            parts = train_step(model, opt, method, x, y, generator=gen, precision=cfg.precision, minimizer=minimizer,
                               average=self.avg, pair=self.pair, rows=rows if d.enabled else None, dist=d,
                               global_stats=cfg.taylor_stats == "global", loss_from_outputs=self.loss_fn,
                               accumulate=cfg.optim.accumulate)
            with torch.no_grad():
                b = y.shape[0]
                s = parts.scalars()
                nat = parts.logits_nat  # None for plain AT, which has no clean pass
                sums += torch.stack([s[k].float() * b for k in METRICS]
                                    + [(nat.argmax(1) == y).sum().float() if nat is not None else sums[-2] * 0,
                                       (parts.logits_adv.argmax(1) == y).sum().float()])
            seen += b
            bar.update(1)
            at_log = (i + 1) % cfg.log_every == 0
            if at_log:  # one host sync (and one all-reduce) every log_every steps
                n_seen = distributed.all_sum(torch.tensor([float(seen)], device=self.device), d).item()
                total = distributed.all_sum(sums[:1].clone(), d).item() / n_seen
                divergence.check_loss(self, total, epoch, i + 1)
                bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr:.4g}")
                self.emit({"event": "step", "epoch": epoch, "step": i + 1, "steps": len(self.loader), "loss": total,
                           "lr": lr, "global_step": (epoch - 1) * len(self.loader) + i + 1}, console=False)
            stop_now = stop is not None and (stop.requested if not d.enabled
                                              else at_log and distributed.any_rank(stop.requested, d, self.device))
            if stop_now and i + 1 < len(self.loader):
                self._save_partial(epoch, i + 1, gen, sums, seen, seconds + time.time() - t0)
                bar.close()
                raise Stopped(stop.signum or signal.SIGTERM, epoch, i + 1, str(self.out / "last.safetensors"))
        bar.close()
        sums = distributed.all_sum(sums, d)
        seen = distributed.all_sum(torch.tensor([float(seen)], device=self.device), d).item()
        vals = (sums / max(seen, 1)).tolist()
        if not all(math.isfinite(v) for v in vals):
            divergence.diverged(self, epoch, len(self.loader), "is not finite")
        divergence.check_loss(self, vals[0], epoch, len(self.loader))
        out = {"lr": lr, **{f"train_{k}": v for k, v in zip(METRICS, vals)}}  # lr: the epoch's last step's
        out["train_acc_clean"] = 100 * vals[len(METRICS)] if self.method.needs_clean_pass() else None
        out["train_acc_adv"] = 100 * vals[len(METRICS) + 1]
        out["train_seconds"] = seconds + time.time() - t0
        return out

    def log(self, text: str) -> None:
        self.emit({"event": "message", "text": text})

    def emit(self, ev: dict, console: bool = True) -> None:
        """An event to the ``log`` callback (console by default) and the logging back ends."""
        if console or self.on_event != self._console:
            self.on_event(ev)
        for sink in self.sinks:
            sink(ev)

    def _console(self, ev: dict) -> None:  # the default callback's identity, for emit()
        tqdm.write(format_event(ev))

    def close(self) -> None:
        self.pair = None  # DDP's reducer holds the process group and the tensors of its last collectives
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _save_partial(self, epoch: int, step: int, gen: torch.Generator, sums: torch.Tensor, seen: float,
                      seconds: float) -> None:
        """Checkpoint in the middle of ``epoch`` after ``step`` steps (signal): exact resume."""
        sums = distributed.all_sum(sums.clone(), self.dist)
        seen = distributed.all_sum(torch.tensor([float(seen)], device=self.device), self.dist).item()
        ranks = rank_state.gather(self, gen)
        if not self.dist.main:
            return
        meta = {**run_dir.state_meta(self, epoch - 1), "kind": "train_state", "history": self.history,
                "partial": {"epoch": epoch, "step": step, "sums": sums.tolist(), "seen": seen, "seconds": seconds}}
        tensors = {**self._state_tensors(), "rng.attack": gen.get_state(), **ranks}
        run_dir.save_last(self.out, tensors, meta)

    def evaluate(self) -> dict[str, float]:
        """Clean and PGD accuracy (%) on the selection split (:class:`~taylorat.train.checks.EpochCheck`), eager."""
        with eager_features(self.model):
            return self.check.evaluate()

    def track(self) -> dict[str, float]:
        """Clean and PGD accuracy (%) on the tracked test and training images (curves; never selection), eager."""
        with eager_features(self.model):
            return self.check.track()

    def eval_model(self) -> torch.nn.Module:
        """The model the per-epoch check and the saved checkpoints use: the average once it exists."""
        return self.avg.module if self.avg is not None and self.avg.ready else self.model

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {**ckpt.model_tensors(self.model), **run_dir.optimizer_tensors(self.model, self.opt),
                **(self.avg.state_tensors() if self.avg is not None else {})}

    def save(self, epoch: int, record: dict[str, Any]) -> None:
        ranks = rank_state.gather(self)
        if not self.dist.main:
            return
        meta, weights = run_dir.state_meta(self, epoch), ckpt.model_tensors(self.eval_model())
        model_meta = {**meta, "kind": "model", "metrics": record}
        if record.get("is_best"):
            ckpt.save(self.out / "best.safetensors", weights, model_meta)
        if epoch in self.schedule:
            ckpt.save(self.out / f"epoch_{epoch:04d}.safetensors", weights, model_meta)
        run_dir.save_last(self.out, {**self._state_tensors(), **ranks},
                          {**meta, "kind": "train_state", "history": self.history})
        run_dir.write_metrics(self.out, self.history)
        if self.cfg.curves and not self._no_plots:
            try:
                plot_histories({self.cfg.method.name: self.history}, self.out / "curves.png", self.cfg.name)
            except MissingDependency as e:
                self._no_plots = True
                self.log(f"curves.png not drawn: {e}")

    def run(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to the configured number of epochs (or ``stop_after`` epochs in this call).

        A SIGTERM or SIGINT finishes the current step, writes ``last.safetensors`` with the
        position in the epoch and raises :class:`~taylorat.train.signals.Stopped`.
        """
        cfg = self.cfg
        self.prepare_run_dir(resume)
        o = cfg.optim
        self.log(f"{cfg.name}: {cfg.model.name} on {self.dataset.name} ({self.prep.info['n_train']} training images"
                 + (f" from {self.prep.info['source']}" if "source" in self.prep.info else "") + "), "
                 f"{cfg.method.name}, {o.epochs} epoch{'s' if o.epochs != 1 else ''}, {describe(o)}; "
                 f"device {self.device}, precision {cfg.precision}, channels_last {cfg.channels_last} -> "
                 f"{'on' if self.channels_last else 'off'} ({self.channels_last_why})"
                 + (f"; started from the weights of {cfg.model.init}" if self.init else "")
                 + (" with a new head" if self.init and self.init["head"] == "new" else ""))
        warning = schedule_warning(o.epochs, o.milestones) if o.schedule == "step" else None
        if warning:
            self.log(f"WARNING: {warning}")
        t0 = time.time()
        done = 0
        with StopOnSignal() as stop:
            for epoch in range(self.start_epoch, cfg.optim.epochs + 1):
                if stop_after is not None and done >= stop_after:
                    break
                record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch, stop)}
                if self.avg is not None:
                    self.avg.after_epoch(self.model, epoch)
                    if self.avg.ready:
                        self.avg.recompute_bn(self.bn_loader.batches(0))
                    record["averaged"] = self.avg.ready
                if epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs:
                    tv = time.time()
                    ev = self.evaluate()
                    record.update({f"{cfg.eval.select_on}_clean": ev["clean"],
                                   f"{cfg.eval.select_on}_pgd": ev["pgd"]})
                    record.update(self.track())
                    record["eval_seconds"] = time.time() - tv
                    if not self.best or ev["pgd"] >= self.best["pgd"]:
                        self.best, self.best_epoch = ev, epoch
                        record["is_best"] = True
                self.history.append(record)
                self.save(epoch, record)
                done += 1
                per_epoch = (time.time() - t0) / done
                self.emit({"event": "epoch", **record, "epochs": cfg.optim.epochs, "select_on": cfg.eval.select_on,
                           "check_steps": cfg.eval.steps, "eta_minutes": (cfg.optim.epochs - epoch) * per_epoch / 60})
                # a signal during the epoch's last steps or its evaluation: stop here (all ranks agree)
                if distributed.any_rank(stop.requested, self.dist, self.device):
                    raise Stopped(stop.signum or signal.SIGTERM, epoch, 0, str(self.out / "last.safetensors"))
        finished = bool(self.history) and self.history[-1]["epoch"] == cfg.optim.epochs
        if finished and self.dist.main:
            run_dir.write_summary(self)
        return TrainResult(self.out, self.history[-1]["epoch"] if self.history else 0, self.best_epoch, self.best,
                           self.history, time.time() - t0)


def train(cfg: Config, resume: bool = False, stop_after: int | None = None,
          log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train the run described by ``cfg``; ``resume=True`` continues the run in ``cfg.out_dir``.

    ``log`` receives every event as a dict: ``{"event": "message", "text": ...}``, ``"step"`` every ``log_every``
    steps, ``"epoch"`` with the epoch's record (default: messages and epochs printed as ``logs.format_event``
    lines). ``stop_after`` ends this call after that many epochs; a later ``resume`` goes on. Under ``torchrun``
    each rank calls this; the process group is closed, and freed, before it returns.
    """
    trainer = Trainer(cfg, log)
    try:
        result = trainer.run(resume=resume, stop_after=stop_after)
        distributed.barrier(trainer.dist)  # every rank's last collective has completed before the group closes
        return result
    except RuntimeError as e:  # a collective that lost its peer: one line, not a bug report
        if trainer.dist.enabled and distributed.peer_gone(e):
            first = first_line(e)
            raise distributed.RankLost(trainer.dist.rank, trainer.dist.world, first[:300]) from e
        raise
    finally:
        trainer.close()
        distributed.shutdown(trainer.dist)

"""Command line: ``taylorat train | eval | reproduce | landscape | plot | import | export | bench | demo``.

Input errors are one line and exit 2; any other exception keeps its traceback (exit 70).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

from . import __version__
from .common import InputError, TayloratError

EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE: an internal error, printed with its traceback


class UserError(InputError):
    """Bad input on the command line: printed as one line, exit code 2."""


def _train(args: argparse.Namespace) -> int:
    from .train import load, train

    cfg = load(args.config, args.overrides)
    if args.dry_run:
        from .train.dryrun import dry_run

        lines = dry_run(cfg, resume=args.resume)
        print(cfg.to_yaml(), end="")
        print(f"# resolved method: {json.dumps({'name': cfg.method.name, **cfg.resolved_method()})}")
        print("\n".join(f"# {line}" for line in lines))
        print("# config OK (dry run: nothing trained)")
        return 0
    result = train(cfg, resume=args.resume)
    best = result.best
    if best:
        print(f"best epoch {result.best_epoch}: {cfg.eval.select_on} clean {best['clean']:.2f}%, "
              f"PGD-{cfg.eval.steps} {best['pgd']:.2f}% -> {Path(cfg.out_dir) / 'best.safetensors'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint as ckpt
    from . import data as datasets
    from .common import resolve_device
    from .evaluate import evaluate, markdown_table, report_dict, report_markdown, write_report

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    per_attack = _attack_eps(args.attack_eps)
    device = resolve_device(args.device)
    surrogate, surrogate_id = None, ""
    if "transfer" in attacks:
        if not args.surrogate:
            raise UserError("--attacks transfer needs --surrogate CHECKPOINT (the model the examples are made on)")
        surrogate, _ = ckpt.load_model(args.surrogate, device)
        surrogate_id = hashlib.sha256(Path(args.surrogate).read_bytes()).hexdigest()[:16]
    rows, reports = [], []
    for path in args.checkpoint:
        model, meta = _load_for_eval(path, args, device)
        run_cfg = meta.get("config", {})
        name = args.dataset or run_cfg.get("data", {}).get("dataset")
        if name is None:
            raise UserError(f"{path} does not name its dataset; pass --dataset")
        data_dir = args.data_dir or run_cfg.get("data", {}).get("data_dir", "./data")
        options = run_cfg.get("data", {}).get("options", {}) if not args.dataset else {}
        ds = datasets.load(name, data_dir, download=False, **options)
        norm, eps, step = _threat(args, run_cfg)
        torch.manual_seed(args.seed)
        res = evaluate(model, ds, attacks, n=args.n, eps=eps, step=step, norm=norm, eps_by_attack=per_attack,
                       seed=args.seed,
                       batch_size=args.batch_size, precision=args.precision, surrogate=surrogate,
                       surrogate_id=surrogate_id, cache_dir=args.cache_dir or (Path(args.out) / "transfer_cache"
                                                                             if args.out else None),
                       rays_queries=args.rays_queries, eot=args.eot)
        label = meta.get("method", {}).get("name", meta["model"]["name"])
        report = report_dict(res, checkpoint=str(path), model=meta["model"]["name"], dataset=ds.name,
                             split="test", seed=args.seed, method=label, trained_epoch=meta.get("epoch"))
        md = report_markdown(report, label)
        print(md + "\n")
        if args.out:
            out = Path(args.out) if len(args.checkpoint) == 1 else Path(args.out) / _run_label(path)
            write_report(out, report, md)
            print(f"report -> {out / 'report.json'}, {out / 'report.md'}" + _chart(report, out / "report.png", label))
        rows.append({"method": f"{label} ({_run_label(path)})", **report["results"]})
        reports.append(report)
    if len(args.checkpoint) > 1:
        cols = list(dict.fromkeys(k for r in reports for k in r["results"]))
        table = markdown_table(rows, cols)
        print(table)
        if args.out:
            from .common import atomic_write_text

            atomic_write_text(Path(args.out) / "summary.md", table + "\n")
    return 0


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r} is not comma-separated numbers (e.g. 0.4914,0.4822,0.4465)") from None


def _load_for_eval(path: str, args: argparse.Namespace, device):
    """A taylorat checkpoint, or with ``--arch`` a plain state dict in ours or a reference layout."""
    from . import checkpoint as ckpt

    if args.arch is None:
        return ckpt.load_model(path, device)
    from . import data as datasets
    from . import models
    from .models import layouts

    if not args.dataset:
        raise UserError("--arch needs --dataset (the dataset fixes the model's input shape and classes)")
    state = ckpt.read_foreign_state(path, allow_pickle=args.allow_pickle)
    if state and all(k.startswith(ckpt.MODEL_PREFIX) for k in state):  # a taylorat checkpoint's tensors
        state = {k[len(ckpt.MODEL_PREFIX):]: v for k, v in state.items()}
    channels, size, classes = datasets.geometry(args.dataset)
    mean, std = _floats(args.mean, "--mean"), _floats(args.std, "--std")
    if (mean is None) != (std is None):
        raise UserError("give both --mean and --std, or neither")
    norm = (mean, std) if mean is not None else layouts.normalization(state)
    model = models.create(args.arch, num_classes=classes, in_channels=channels, image_size=size,
                          **({"mean": norm[0], "std": norm[1]} if norm else {}))
    if mean is not None:  # the flags win over the file's own normalization buffers
        state = {k: v for k, v in state.items() if k not in ("mu", "sigma", "normalize.mean", "normalize.std")}
        state.update({"normalize.mean": model.normalize.mean, "normalize.std": model.normalize.std})
    dropped = ckpt.load_foreign_state(model, state, str(path))
    return model.to(device).eval(), {"model": model.spec, "imported_from": str(path), "dropped_unused": dropped,
                                     "config": {"data": {"dataset": args.dataset}}}


def _chart(report: dict, path: Path, title: str) -> str:
    """Draw the report's chart; returns ``", PATH"`` or a note when matplotlib is missing."""
    from .common import MissingDependency
    from .evaluate.figures import plot_report

    try:
        plot_report(report, path, title)
    except MissingDependency as e:
        return f" (no chart: {e})"
    return f", {path}"


def _threat(args: argparse.Namespace, run_cfg: dict) -> tuple[str, float | None, float | None]:
    """norm, eps, step: the flags, else the run's own per-epoch check (same norm), else each attack's default.

    A run checked at the reference radius (l_inf 0.031) is evaluated at every attack's own default
    (PGD-20 0.031, AutoAttack 8/255); a run with another radius at that radius for every attack.
    """
    from .evaluate import eps_from_run

    run_norm = run_cfg.get("attack", {}).get("norm", "linf")
    norm = args.norm or run_norm
    run_eval = run_cfg.get("eval", {}) if norm == run_norm else {}
    eps = args.eps if args.eps is not None else eps_from_run(norm, run_eval.get("eps"))
    step = args.step if args.step is not None else (run_eval.get("step") if args.eps is None and eps is not None
                                                    else None)
    return norm, eps, step


def _attack_eps(items: list[str] | None) -> dict[str, float]:
    """``["aa=8/255", "pgd20=0.031"]`` -> ``{"aa": 0.0314, "pgd20": 0.031}``."""
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            num, _, den = value.partition("/")
            out[name.strip()] = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--attack-eps {item!r} is not NAME=EPS (e.g. aa=8/255)") from None
        if not 0 <= out[name.strip()] <= 1e3 or not name.strip():
            raise UserError(f"--attack-eps {item!r} is not NAME=EPS with EPS >= 0 (e.g. aa=8/255)")
    return out


def _run_label(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem


def _demo(args: argparse.Namespace) -> int:
    from .studies.demo import run_demo

    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .common import atomic_write_text
    from .studies import runner
    from .studies import study as studies

    if args.list:
        for name, title in studies.list_tables():
            print(f"{name:8s} {title}")
        print("\nstudies: configs/studies/*.yaml; Table 6 comes from benchmarks/step_time.py, "
              "Fig. 2 from taylorat landscape")
        return 0
    if not args.study:
        raise UserError("give a paper table (see --list) or a study YAML file")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1 (runs at a time), got {args.jobs}")
    st = studies.load(args.study, args.overrides, seeds=args.seeds, schedule=args.schedule,
                      run_overrides=[f"device={args.device}"] if args.device else None)
    default_dir = Path("runs") / ("paper" if st.is_table else "studies") / st.name
    runs_dir = Path(args.runs_dir or (default_dir if args.schedule != "short" else default_dir.with_name(
        st.name + "_short")))
    out = Path(args.out or runs_dir)
    only = studies.match_labels(st, [x.strip() for x in args.only.split(",")]) if args.only else None
    runs = st.runs(runs_dir, only)
    if args.write_configs:
        folder = Path(args.write_configs)
        for r in runs:
            atomic_write_text(folder / studies.slug(r.label) / f"seed{r.seed}.yaml", r.config.to_yaml())
        print(f"{len(runs)} run configs -> {folder} (train one with: taylorat train --config FILE)")
        return 0
    if args.dry_run:
        from .bench.estimate import hours, measure
        from .train.trainer import run_dir_state

        todo = []
        for r in runs:
            m = r.config.resolved_method()
            state = run_dir_state(r.config)
            print(f"{r.label:28s} seed {r.seed}  {r.config.model.name} {r.config.data.dataset} "
                  f"{r.config.attack.norm} {r.config.method.name} eta={m['eta']} eta2={m['eta2']} "
                  f"sigma={m['noise_std']} epochs={r.config.optim.epochs} -> {state}")
            if "finished" not in state:
                todo.append(r)
        print(f"# {len(runs)} runs validated (dry run: nothing trained), {len(runs) - len(todo)} already trained; "
              f"results -> {out}")
        if todo and not args.no_estimate:
            est = measure(todo[0].config)
            total = sum(est.run_seconds(r.config) for r in todo)
            print(f"# estimate on this machine ({est.device}): training {hours(total)} for {len(todo)} runs "
                  f"({est.step_seconds * 1000:.0f} ms per step of {todo[0].config.model.name} at batch "
                  f"{todo[0].config.optim.batch_size}" + (f", scaled from batch {est.measured_batch}"
                                                           if est.measured_batch != todo[0].config.optim.batch_size
                                                           else "")
                  + "; the per-epoch checks included; measured now, so other work on this machine inflates it); "
                  "the final evaluation comes on top")
        return 0
    command = shlex.join(["taylorat", "reproduce", args.study, *args.overrides]
                         + (["--seeds", str(args.seeds)] if args.seeds else [])
                         + (["--schedule", args.schedule] if args.schedule else [])
                         + (["--runs-dir", str(args.runs_dir)] if args.runs_dir else [])
                         + (["--out", str(args.out)] if args.out else [])
                         + (["--jobs", str(args.jobs)] if args.jobs > 1 else []))
    if args.render_only:
        records = runner.collect(st, runs_dir)
        if not records and (out / "results.json").is_file():  # no runs here: re-render the published records
            records = json.loads((out / "results.json").read_text())["runs"]
            command = json.loads((out / "results.json").read_text()).get("command", command)
        res = runner.write_results(st, records, out, runs_dir, command)
    elif args.jobs > 1:
        res, failed = runner.run_study_parallel(st, runs_dir, out, args.jobs, only, command=command)
        print(f"{len(res['runs'])} runs -> {out / 'results.json'}, {out / 'README.md'}")
        if failed:
            raise UserError(f"{len(failed)} run(s) failed: {'; '.join(failed)}; their logs are in "
                            f"{runs_dir / 'logs'}; run the same command again to resume them")
        return 0
    else:
        res = runner.run_study(st, runs_dir, out, only, command=command)
    print(f"{len(res['runs'])} runs -> {out / 'results.json'}, {out / 'README.md'}")
    return 0


def _landscape(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from . import data as datasets
    from .analysis import flatness_report, landscape_report, pgd_attack
    from .common import as_float_images, resolve_device

    if args.images < 1:
        raise UserError(f"--images must be >= 1, got {args.images}")
    device = resolve_device(args.device)
    models, metas = {}, []
    for path in args.checkpoint:
        model, meta = ckpt.load_model(path, device)
        label = meta.get("method", {}).get("name", meta["model"]["name"])
        if label in models:
            label = f"{label} ({_run_label(path)})"
        models[label] = model
        metas.append(meta)
    run_cfg = metas[0].get("config", {})
    name = args.dataset or run_cfg.get("data", {}).get("dataset")
    if name is None:
        raise UserError(f"{args.checkpoint[0]} does not name its dataset; pass --dataset")
    ds = datasets.load(name, args.data_dir or run_cfg.get("data", {}).get("data_dir", "./data"), download=False,
                       **(run_cfg.get("data", {}).get("options", {}) if not args.dataset else {}))
    n = args.images if args.flatness_images is None else max(args.images, args.flatness_images)
    x = as_float_images(ds.test_x[:n], device)
    y = ds.test_y[:n].to(device)
    eps = run_cfg.get("eval", {}).get("eps", 0.031)
    radius = args.radius if args.radius is not None else 2 * eps
    out = Path(args.out)
    rep = landscape_report(models, x[: args.images], y[: args.images], radius=radius, steps=args.steps,
                           seed=args.seed, out_dir=out)
    print(f"landscape ({len(models)} checkpoints x {args.images} images, radius {radius:.4g}) -> "
          f"{out / 'landscape.png'}")
    for label, summ in rep["models"].items():
        mean = summ["mean"]
        print(f"  {label}: mean loss over the grid {mean['mean_loss']:.3f}, flatness (mean |L - L(0,0)|) "
              f"{mean['flatness']:.3f}, grid accuracy {100 * mean['grid_accuracy']:.1f}%")
    if args.flatness:
        m = args.flatness_images or 256
        attack = pgd_attack(eps=eps, step=run_cfg.get("eval", {}).get("step", eps / 10), steps=10, seed=args.seed)
        fl = flatness_report(models, x[:m], y[:m], draws=args.draws, seed=args.seed, out_dir=out, attack=attack)
        print(f"weight-space flatness ({m} images, {args.draws} draws) -> {out / 'flatness.png'}")
        for label, summ in fl["models"].items():
            print(f"  {label}: expected clean-loss increase at alpha={summ['score_alpha']}: "
                  f"{summ['loss_increase']:.4f} ± {summ['loss_increase_std']:.4f}"
                  + (f"; PGD loss increase {summ['adv_loss_increase']:.4f}" if "adv_loss_increase" in summ else ""))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .train.curves import plot_histories, read_history

    histories = {}
    for d in args.run_dir:
        label = "/".join(Path(d).resolve().parts[-2:])  # e.g. demo/trades
        histories[label if label not in histories else str(d)] = read_history(d)
    out = Path(args.out or (Path(args.run_dir[0]) / "curves.png" if len(args.run_dir) == 1 else "curves.png"))
    plot_histories(histories, out, args.title or "")
    print(f"{len(histories)} run{'s' if len(histories) > 1 else ''} -> {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    report = None
    if args.report:
        try:
            report = json.loads(Path(args.report).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--report {args.report}: not a readable report.json ({str(e).splitlines()[0]})") from None
    elif args.format == "robustbench":
        report = _robustbench_eval(args)
    files = export(args.checkpoint, args.format, args.out, report=report, name=args.name)
    print(f"{args.checkpoint} -> " + ", ".join(str(f) for f in files))
    return 0


def _robustbench_eval(args: argparse.Namespace) -> dict:
    """Clean accuracy and AutoAttack at RobustBench's radius on the first --n test images, with the log."""
    from . import checkpoint as ckpt
    from . import data as datasets
    from .common import resolve_device
    from .evaluate import evaluate, report_dict

    model, meta = ckpt.load_model(args.checkpoint, resolve_device(args.device))
    d = meta.get("config", {}).get("data", {})
    if not d.get("dataset"):
        raise UserError(f"{args.checkpoint} does not name its dataset; evaluate it first and pass --report")
    ds = datasets.load(d["dataset"], args.data_dir or d.get("data_dir", "./data"), download=False,
                       **d.get("options", {}))
    norm = meta.get("config", {}).get("attack", {}).get("norm", "linf")
    print(f"evaluating {args.checkpoint}: clean and AutoAttack on the first {args.n} test images")
    res = evaluate(model, ds, ["clean", "aa"], n=args.n, norm=norm)
    return report_dict(res, checkpoint=str(args.checkpoint), model=meta["model"]["name"], dataset=ds.name,
                       split="test", seed=0)


def _import(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from . import models
    from .models import layouts

    state = ckpt.read_pickled_state(args.file, allow_pickle=args.allow_pickle)
    norm = layouts.normalization(state)
    kw = {"mean": norm[0], "std": norm[1]} if norm else {}
    model = models.create(args.model, num_classes=args.num_classes, in_channels=args.in_channels,
                          image_size=args.image_size, **kw)
    dropped = ckpt.load_foreign_state(model, state, str(args.file))
    meta = {"imported_from": str(args.file), "dropped_unused": dropped}
    if args.dataset:
        meta["config"] = {"data": {"dataset": args.dataset}}
    ckpt.save_model(args.out, model, meta)
    print(f"{args.file} -> {args.out} ({args.model}, {sum(p.numel() for p in model.parameters()):,} parameters"
          + (", input normalization inside the model" if norm else "")
          + (f"; dropped {len(dropped)} keys of layers the source builds but never uses ({dropped[0]}, ...)"
             if dropped else "") + ")")
    return 0


def _attack_names() -> list[str]:
    from .evaluate import available_attacks

    return available_attacks()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorat", description="Randomized adversarial training via Taylor expansion")
    p.add_argument("--version", action="version", version=f"taylorat {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", "-c", help="YAML config (default: CIFAR-10, PreAct ResNet-18, TRADES+1st+2nd)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.epochs=30")
    t.add_argument("--dry-run", action="store_true", help="validate and print the resolved config")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its last checkpoint")
    t.set_defaults(func=_train, data_dir_hint="set data.data_dir=DIR")

    e = sub.add_parser("eval", help="evaluate checkpoints: clean, PGD-20, CW-20, AutoAttack, transfer, RayS")
    e.add_argument("--checkpoint", required=True, action="append", help="checkpoint to evaluate (repeatable)")
    e.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--attacks", default="clean,pgd20,cw20",
                   help=f"comma-separated: {', '.join(_attack_names())} (default clean,pgd20,cw20)")
    e.add_argument("--n", type=int, default=1000,
                   help="first N test images (default 1000, as the reference's AutoAttack; 10000 = all of CIFAR, "
                        "as the reference's PGD/CW numbers)")
    e.add_argument("--eps", type=float, help="radius for every attack (default: the run's eval.eps when it is not the "
                                             "reference 0.031, else each attack's own: PGD/CW 0.031, AutoAttack 8/255)")
    e.add_argument("--attack-eps", action="append", metavar="NAME=EPS",
                   help="radius of one attack, e.g. --attack-eps aa=8/255 (repeatable; wins over --eps)")
    e.add_argument("--step", type=float, help="PGD/CW step (default: the run's eval.step, else 0.003 / 15/255)")
    e.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    e.add_argument("--arch", help="evaluate a plain state dict (safetensors, or .pt with --allow-pickle) in ours or a "
                                  "reference layout (TRADES, RobustBench, robust_overfitting) as this architecture")
    e.add_argument("--mean", help="with --arch: per-channel input mean to fold into the model, e.g. 0.4914,0.4822,0.4465")
    e.add_argument("--std", help="with --arch: per-channel input std, e.g. 0.2471,0.2435,0.2616")
    e.add_argument("--allow-pickle", action="store_true",
                   help="with --arch: read a .pt file with torch.load(weights_only=True) (tensors only)")
    e.add_argument("--surrogate", help="checkpoint the transfer examples are made on")
    e.add_argument("--cache-dir", help="where transfer examples are cached (default OUT/transfer_cache)")
    e.add_argument("--rays-queries", type=int, default=10_000, help="RayS query budget per image")
    e.add_argument("--eot", type=int, help="gradient draws per step for a randomized model (PGD/CW average over them, "
                                           "AutoAttack runs its rand version); default: 20 when two forward passes "
                                           "disagree, else 1")
    e.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default, the reference) or bf16 autocast (recorded in the report)")
    e.add_argument("--batch-size", type=int, help="default 500 on GPU, 256 on CPU")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="directory for report.json and report.md")
    e.set_defaults(func=_eval, data_dir_hint="pass --data-dir DIR")

    r = sub.add_parser("reproduce", help="run a paper table or a study file: train what is missing, evaluate, "
                                         "render beside the paper")
    r.add_argument("study", nargs="?", help="a paper table (table1 ... table8, see --list) or a study YAML file")
    r.add_argument("overrides", nargs="*", help="key=value overrides of the study file, e.g. base.optim.epochs=1")
    r.add_argument("--list", action="store_true", help="list the paper tables")
    r.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the file's; 3 for studies)")
    r.add_argument("--schedule", choices=["paper", "short"], help="short: 30 epochs (lr / 10 at 50%% and 75%%)")
    r.add_argument("--runs-dir", help="where the runs live (default runs/paper/NAME or runs/studies/NAME)")
    r.add_argument("--out", help="where results.json and README.md go (default: the runs dir)")
    r.add_argument("--only", help="comma-separated run labels (their surrogates are run too)")
    r.add_argument("--device", help="device for every run (default: each config's)")
    r.add_argument("--jobs", type=int, default=1,
                   help="train and evaluate N runs at once, each in its own process with 1/N of the CPU threads "
                        "(default 1)")
    r.add_argument("--dry-run", action="store_true",
                   help="validate every run config, list the runs and estimate the training time on this machine")
    r.add_argument("--no-estimate", action="store_true", help="with --dry-run: skip the timing measurement")
    r.add_argument("--render-only", action="store_true", help="re-render results.json/README.md from finished runs")
    r.add_argument("--write-configs", metavar="DIR",
                   help="write every run's training config to DIR/LABEL/seedN.yaml (for taylorat train) and stop")
    r.set_defaults(func=_reproduce, data_dir_hint="set base.data.data_dir=DIR after the study file")

    ls = sub.add_parser("landscape", help="loss surfaces (paper Fig. 2) and weight-space flatness of checkpoints")
    ls.add_argument("--checkpoint", required=True, action="append", help="checkpoint (repeatable: one row each)")
    ls.add_argument("--images", type=int, default=4, help="first N test images, the same for every checkpoint")
    ls.add_argument("--out", required=True)
    ls.add_argument("--radius", type=float, help="grid half-width (default: twice the run's eval eps)")
    ls.add_argument("--steps", type=int, default=21, help="grid points per axis")
    ls.add_argument("--flatness", action="store_true", help="also weight-space flatness (Li et al. 2018)")
    ls.add_argument("--flatness-images", type=int, help="test images for the flatness curves (default 256)")
    ls.add_argument("--draws", type=int, default=5, help="random directions per relative size")
    ls.add_argument("--dataset")
    ls.add_argument("--data-dir")
    ls.add_argument("--seed", type=int, default=0)
    ls.add_argument("--device", default="auto")
    ls.set_defaults(func=_landscape, data_dir_hint="pass --data-dir DIR")

    ex = sub.add_parser("export", help="a checkpoint for RobustBench (weights in its layout, model_info JSON, "
                                       "AutoAttack log), as ONNX, or as a plain state dict")
    ex.add_argument("checkpoint")
    ex.add_argument("--format", required=True, choices=["robustbench", "onnx", "state-dict"])
    ex.add_argument("--out", required=True, help="folder for the exported files")
    ex.add_argument("--report", help="robustbench: report.json of taylorat eval --attacks clean,aa (at 8/255); "
                                     "without it clean and AutoAttack run here on the first --n test images")
    ex.add_argument("--n", type=int, default=1000, help="robustbench without --report: test images (default 1000)")
    ex.add_argument("--name", help="file name stem (robustbench default: Jin2023Randomized)")
    ex.add_argument("--data-dir")
    ex.add_argument("--device", default="auto")
    ex.set_defaults(func=_export, data_dir_hint="pass --data-dir DIR")

    im = sub.add_parser("import", help="convert a torch.save state dict (e.g. the reference code's) to a "
                                       "safetensors checkpoint")
    im.add_argument("file", help="a .pt/.pth state dict")
    im.add_argument("--model", required=True, help="architecture, e.g. wrn_34_10")
    im.add_argument("--num-classes", type=int, default=10)
    im.add_argument("--in-channels", type=int, default=3)
    im.add_argument("--image-size", type=int, default=32)
    im.add_argument("--dataset", help="recorded so that taylorat eval knows the data (e.g. cifar10)")
    im.add_argument("--out", required=True, help="the .safetensors file to write")
    im.add_argument("--allow-pickle", action="store_true",
                    help="required: read the pickle with torch.load(weights_only=True), tensors only")
    im.set_defaults(func=_import)

    pl = sub.add_parser("plot", help="training curves of one or several runs (losses, accuracies, lr) into a PNG")
    pl.add_argument("run_dir", nargs="+", help="run folders (a run's out_dir, with its metrics.jsonl)")
    pl.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png for one run, ./curves.png for several)")
    pl.add_argument("--title")
    pl.set_defaults(func=_plot)

    # listed for --help; main() hands `taylorat bench ...` to the benchmark's own parser
    sub.add_parser("bench", help="training-step time and memory per model x method x precision (Table 6)")

    d = sub.add_parser("demo", help="TRADES vs TRADES+1st+2nd on the embedded digits dataset (no download)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. taylorat's own errors (bad input, a missing dataset, a run directory that holds
    another run, a diverged loss) are one line; any other exception is a bug: its traceback is
    printed with a request to report it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .bench.bench import main as bench

        return bench(argv[1:], prog="taylorat bench")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the options (`train CFG --resume optim.epochs=3`)
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except TayloratError as e:  # bad input, missing data, a diverged loss (3), a stop on a signal (128 + signal)
        hint = getattr(args, "data_dir_hint", None)
        msg = e.with_hint(hint) if hint and hasattr(e, "with_hint") else str(e)
        print(f"taylorat: {e.prefix}{msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("taylorat: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug: keep the traceback, ask for a report
        import traceback

        traceback.print_exc()
        print(f"taylorat {__version__}: internal error (the traceback above); this is a bug in taylorat, please "
              "report it with the command you ran", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())

"""``taylorat reproduce``: run a paper table or a study file: train what is missing, evaluate, render beside
the paper."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..common import atomic_write_text, read_json
from .shared import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    r = subparsers.add_parser("reproduce", help="run a paper table or a study file: train what is missing, "
                                                "evaluate, render beside the paper")
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
    r.set_defaults(func=run, data_dir_hint="set base.data.data_dir=DIR after the study file")


def run(args: argparse.Namespace) -> int:
    # the study runner trains: it loads the trainer and the objectives, which no other command needs
    from ..studies import runner  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)
    from ..studies import study as studies  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)

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
        return _dry_run(runs, out, estimate=not args.no_estimate)
    command = _command(args)
    if args.render_only:
        records = runner.collect(st, runs_dir)
        if not records and (out / "results.json").is_file():  # no runs here: re-render the published records
            published = read_json(out / "results.json", "results", "delete it or restore it from version control")
            records, command = published["runs"], published.get("command", command)
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


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces these results, recorded in results.json."""
    return shlex.join(["taylorat", "reproduce", args.study, *args.overrides]
                      + (["--seeds", str(args.seeds)] if args.seeds else [])
                      + (["--schedule", args.schedule] if args.schedule else [])
                      + (["--runs-dir", str(args.runs_dir)] if args.runs_dir else [])
                      + (["--out", str(args.out)] if args.out else [])
                      + (["--jobs", str(args.jobs)] if args.jobs > 1 else []))


def _dry_run(runs: list, out: Path, estimate: bool) -> int:
    """List the validated runs and what their folders hold; estimate the training time of those left to train."""
    from ..bench.estimate import hours, measure  # noqa: PLC0415 - loads the trainer, as run() does
    from ..train.run_dir import run_dir_state  # noqa: PLC0415 - loads the trainer: only for this command (eval must not)

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
    if todo and estimate:
        est = measure(todo[0].config)
        total = sum(est.run_seconds(r.config) for r in todo)
        first = todo[0].config
        print(f"# estimate on this machine ({est.device}): training {hours(total)} for {len(todo)} runs "
              f"({est.step_seconds * 1000:.0f} ms per step of {first.model.name} at batch {first.optim.batch_size}"
              + (f", scaled from batch {est.measured_batch}" if est.measured_batch != first.optim.batch_size else "")
              + "; the per-epoch checks included; measured now, so other work on this machine inflates it); "
              "the final evaluation comes on top")
    return 0

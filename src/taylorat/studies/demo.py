"""The quick-start demo: TRADES vs TRADES+1st+2nd on the embedded digits dataset, same seed and budget.

Both runs train ``small_cnn`` on scikit-learn's handwritten digits (1×8×8, no download) with
the same seed, schedule and threat model, pick their best epoch by PGD-20 on a held-out split of
the training set, and are evaluated on the digits test split (360 images): clean, PGD-20 and
CW-20 accuracy. ``DIR/report.json`` = ``{"runs": [{"method", "clean", "pgd20", "cw20",
"seconds"}, ...], ...}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .. import checkpoint as ckpt
from .. import data as datasets
from ..common import MissingDependency, atomic_write_text, resolve_device
from ..evaluate import evaluate, markdown_table
from ..train import Config, from_dict, train
from ..train.curves import plot_histories
from ..train.logs import format_event

METHODS = ("trades", "trades+1st+2nd")
EPS = 0.2  # l_inf radius on [0,1] digits (3.2 of the dataset's 16 grey levels)


def demo_config(method: str, out_dir: Path, epochs: int = 30, seed: int = 0, device: str = "auto",
                progress: bool = True) -> Config:
    return from_dict({
        "name": f"demo-{method}", "seed": seed, "out_dir": str(out_dir), "device": device, "progress": progress,
        "checkpoints": "none", "log_every": 5,
        "data": {"dataset": "digits", "holdout": 200},
        "model": {"name": "small_cnn"},
        "method": {"name": method},
        "attack": {"norm": "linf", "eps": EPS, "step": EPS / 4, "steps": 10},
        "optim": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
        "eval": {"select_on": "holdout", "n": 200, "eps": EPS, "step": EPS / 10, "steps": 20},
    })


def run_demo(out: str | Path, epochs: int = 30, seed: int = 0, device: str = "auto", progress: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) both runs, evaluate their best checkpoints on the test split, write the report."""
    out = Path(out)
    runs, histories = [], {}
    for method in METHODS:
        run_dir = out / method.replace("+", "_")
        cfg = demo_config(method, run_dir, epochs, seed, device, progress)
        log(f"== {method}: training small_cnn on digits for {epochs} epoch{'s' if epochs != 1 else ''} -> {run_dir}")
        t = time.time()
        result = train(cfg, resume=True, log=lambda ev: log(format_event(ev)) if ev['event'] != 'step' else None)
        model, meta = ckpt.load_model(run_dir / "best.safetensors", resolve_device(device))
        ds = datasets.load("digits")
        ev = evaluate(model, ds, attacks=("clean", "pgd20", "cw20"), eps=EPS, step=EPS / 10, seed=seed,
                      progress=progress)
        histories[method] = result.history
        train_seconds = sum(h["train_seconds"] + h.get("eval_seconds", 0.0) for h in result.history)
        runs.append({"method": method, **{k: round(v, 2) for k, v in ev.results.items()},
                     "seconds": round(train_seconds + sum(ev.seconds.values()), 1),
                     "best_epoch": meta["epoch"], "checkpoint": str(run_dir / "best.safetensors")})
        log(f"   done in {time.time() - t:.0f}s")
    report = {
        "runs": runs,
        "dataset": "digits", "split": "test", "n": int(len(ds.test_y)), "seed": seed, "epochs": epochs,
        "settings": {"eps": EPS, "norm": "linf", "pgd20": {"step": EPS / 10, "steps": 20, "start": "uniform"},
                     "cw20": {"step": EPS / 10, "steps": 20, "kappa": 50}, "selection": "best PGD-20 on 200 "
                     "held-out training images"},
    }
    table = markdown_table(runs, ["clean", "pgd20", "cw20", "seconds"])
    note = (f"digits test split, n={report['n']}, l_inf eps={EPS}, seed {seed}, {epochs} epochs; seconds: training "
            "(every epoch with its PGD-20 check) plus the final evaluation, on this machine. One seed on 360 "
            "images: differences of a few points are within noise.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", table + "\n\n" + note + "\n")
    try:
        figure = str(plot_histories(histories, out / "curves.png", "TRADES vs TRADES+1st+2nd on digits"))
    except MissingDependency as e:
        figure = f"not drawn ({e})"
    log("\n" + table + "\n\n" + note)
    log(f"\nreport -> {out / 'report.json'}, {out / 'report.md'}; training curves of both runs -> {figure}; "
        f"each run's own curves.png and checkpoints are in {out / 'trades'} and {out / 'trades_1st_2nd'}")
    return report

"""The GPU study's page beyond what ``taylorat reproduce`` renders: a plan while no run has finished, and
a closing section on how seeds are added (one per GPU call) that says "not yet run on a GPU" until one has.
"""

from __future__ import annotations

from typing import Any

import gpu_budget as budget

NAMES = {"clean": "clean", "pgd20": "PGD-20", "cw20": "CW-20"}


def ran_on_gpu(record: dict[str, Any]) -> bool:
    """A record evaluated on a CUDA device (its eval.json environment)."""
    env = record.get("environment") or {}
    return str(env.get("device", "")).startswith("cuda") and env.get("gpu", "none") != "none"


def seed_section(values: dict[str, Any], records: list[dict[str, Any]], tiny: bool) -> list[str]:
    """How the page grows, with the H100 estimate for one seed; 'not yet run on a GPU' while that is so."""
    est = budget.estimate(budget.measured(), budget.Assumptions(), budget.study_sizes(values))
    lines = ["", "## One seed per GPU call", ""]
    if not any(ran_on_gpu(r) for r in records):
        lines += ["**Not yet run on a GPU.**" + (" The runs on this page are the same path at toy size on CPU "
                                                  "(`benchmarks/gpu_study.sh OUT --tiny`: small_cnn, 256 training "
                                                  "images, 2 epochs), not results." if tiny and records else ""), ""]
    lines += [f"`bash benchmarks/gpu_study.sh OUT` on a machine with one CUDA GPU trains and evaluates the next seed "
              "that `results.json` lacks, both methods side by side, and writes `results.json`, this page and the "
              "logs to `OUT`; copying `results.json` and `README.md` here adds that seed. Estimated for one seed on "
              f"one H100 from the GPU check's measurements: {est['side_by_side_s'] / 60:.1f} min side by side, "
              f"{est['sequential_s'] / 60:.1f} min one after the other (`bash benchmarks/gpu_study.sh OUT --dry-run` "
              "prints the arithmetic; `--pack` prepares what the GPU machine lacks).", ""]
    return lines


def _method(run: dict[str, Any]) -> str:
    m = run.get("method", {})
    extra = ", ".join(f"{k} {v}" for k, v in m.items() if k != "name")
    return f"`{run['label']}` ({m.get('name', run['label'])}{': ' + extra if extra else ''})"


def plan_page(values: dict[str, Any], tiny: bool = False) -> str:
    """The page of a study with no finished run: its title, what it will run, and the seed section."""
    b, ev = values["base"], values["evaluate"]
    d, o, a, e = b["data"], b["optim"], b["attack"], b.get("eval", {})
    train = f"{d['train_subset']} of the rest" if d.get("train_subset") else "all the rest"
    lines = [f"# {values['title']}", "",
             "**Not yet run on a GPU:** no run has finished, this page shows the plan. After the first GPU call it "
             "is rendered by `taylorat reproduce` from `results.json`.", ""]
    if values.get("description"):
        lines += [values["description"].strip(), ""]
    lines += ["## Plan", "",
              f"- data: `{d['dataset']}`, {d.get('holdout', 1000)} training images held out for choosing `best`, "
              f"{train} trained on; model `{b['model']['name']}`",
              f"- speed: precision {b.get('precision', 'fp32')}, channels_last "
              f"{str(b.get('channels_last', 'auto')).lower()}, "
              f"compile {b.get('compile', 'none')} on {b.get('device', 'auto')}",
              f"- training: {o['epochs']} epochs, batch {o['batch_size']}, SGD lr {o['lr']} (÷10 at "
              f"{', '.join(str(m) for m in o.get('milestones', [0.5, 0.75]))} of the epochs), momentum "
              f"{o.get('momentum', 0.9)}, wd {o.get('weight_decay', 5e-4)}; attack {a['norm']} ε={a['eps']}, step "
              f"{a['step']}, K={a['steps']}",
              f"- `best` checkpoint: highest PGD-{e.get('steps', 20)} accuracy on the {e.get('select_on', 'holdout')} "
              f"split ({e.get('n', 1000)} images), checked every epoch",
              f"- evaluation: {', '.join(NAMES.get(a, a) for a in ev['attacks'] if a != 'aa')} (ε={ev['eps']}, "
              f"step {ev['step']}) on the first {ev['n']} test images"
              + (f", AutoAttack standard (ε={ev['eps']}) on the first {ev.get('n_aa', ev['n'])}"
                 if "aa" in ev["attacks"] else ""),
              "- methods: " + "; ".join(_method(r) for r in values["runs"]),
              f"- seeds: {', '.join(str(s) for s in values['seeds'])}"]
    return "\n".join(lines + seed_section(values, [], tiny))

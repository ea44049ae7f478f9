"""Render a study's results.json as Markdown: mean ± std, per-seed values, and what they show.

Every number and every sentence comes from ``results.json``. A difference between two methods
counts as *inside the seed spread* when ``|Δ mean| <= std_a + std_b`` (sample standard
deviations over seeds; :mod:`taylorat.studies.spread`): with three seeds nothing finer can be claimed.
"""

from __future__ import annotations

from typing import Any

from ..evaluate import labels
from ..evaluate.builtin import attack_metrics
from .figures import has_curves, train_test_gap
from .flatness_page import flatness_section
from .render_setup import attacks_text, compute_text, training_text
from .spread import MeanStd, seed_spread, seed_stats, within_spread
from .study import pretty_label


def metric_names() -> tuple[tuple[str, str], ...]:
    """(key, column title) of every number a study row can hold: the registered attacks, then their other
    numbers (ADBD)."""
    return tuple(labels().items()) + tuple(attack_metrics().items())


def summarise(runs: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: for each metric, mean, std and the per-seed values."""
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        rs = [r for r in runs if r["method"] == label]
        if not rs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for key, _ in metric_names() + (("gap", ""),):
            vals = ([r["pgd20_on_aa_images"] - r["aa"] for r in rs if "aa" in r and "pgd20_on_aa_images" in r]
                    if key == "gap" else [r[key] for r in rs if isinstance(r.get(key), (int, float))])
            if vals:
                mean, std = seed_stats(vals)
                entry[key] = {"mean": mean, "std": std, "values": vals}
        out[label] = entry
    return out


def _mean_std(s: dict[str, Any]) -> MeanStd:
    """A summary entry's ``(mean, std)``."""
    return s["mean"], s["std"]


def _one_seed(s: dict[str, Any]) -> bool:
    """A summary entry from a single seed: it has no spread to show."""
    return len(s["values"]) < 2


def _pm(s: dict[str, Any] | None) -> str:
    """``mean ± std`` over seeds; the value alone for one seed."""
    if s is None:
        return "–"
    return f"{s['mean']:.2f}" if _one_seed(s) else f"{s['mean']:.2f} ± {s['std']:.2f}"


def _pm_values(vals: list[float]) -> str:
    mean, std = seed_stats(vals)
    return _pm({"mean": mean, "std": std, "values": vals})


def _aa_version(study: Any) -> str:
    """How the page names AutoAttack's version: nothing for ``standard`` (the default), else what it runs."""
    return (" reference (the paper's script: APGD-CE + APGD-T, 2 restarts each)"
            if study.evaluate.aa_version == "reference" else "")


def render_readme(results: dict[str, Any], study: Any) -> str:
    if study.is_table:
        return render_table(results, study)
    runs, labels = results["runs"], study.labels()
    summary = summarise(runs, labels)
    present = [m for m in metric_names() if any(m[0] in s for s in summary.values())]
    base = results["config"]["resolved"]
    ev = study.evaluate
    n_aa = max((r.get("n_aa", 0) for r in runs), default=0)
    lines = [f"# {results['title']}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    planned = study.runs("runs")  # every (label, seed) of the study file, finished or not
    lines += _progress(runs, planned)
    lines += ["Reproduce (resumes what is missing, then re-renders this page from `results.json`):", "",
              "```bash", results.get("command", f"taylorat reproduce {study.source}"), "```", ""]
    d, o, a, e = base["data"], base["optim"], base["attack"], base["eval"]
    every = f", every {e['every']} epochs" if e.get("every", 1) > 1 else ""
    lines += ["## Setup", "",
              f"- data: `{d['dataset']}`, {_split_text(d)}; model `{base['model']['name']}`",
              training_text(o, a, base["method"]),
              f"- `best` checkpoint: highest PGD-{e['steps']} accuracy on the {e['select_on']} split "
              f"({e['n']} images{every})",
              f"- evaluation on the first {ev.n} test images: {attacks_text(ev.attacks)} (ε={_eps_text(runs)}, "
              f"step {_step_text(runs)}, uniform random start)"
              + (f", AutoAttack standard (pyautoattack, seed {ev.seed}, ε={_eps_text(runs, 'aa')}) on the first "
                 f"{n_aa} of them" if n_aa else ""),
              "- methods: " + "; ".join(f"`{m['label']}` ({_method_desc(m)})" for m in study.methods),
              f"- seeds: {', '.join(str(s) for s in study.seeds)}",
              f"- ran on: {_env(results)}", ""]
    gap = any("gap" in s for s in summary.values())
    lines += ["## Results: mean ± std over seeds (accuracy %)", "",
              "| method | seeds | " + " | ".join(n for _, n in present)
              + (" | PGD-20 − AA (same images) |" if gap else " |"),
              "| --- | --- | " + " | ".join("---" for _ in present) + (" | --- |" if gap else " |")]
    for label, s in summary.items():
        lines.append(f"| {label} | {len(s['seeds'])} | " + " | ".join(_pm(s.get(k)) for k, _ in present)
                     + (f" | {_pm(s.get('gap'))} |" if gap else " |"))
    lines += best_vs_last(runs, labels)
    if has_curves(runs):
        n_track = max(len(r["curves"].get("epoch", [])) for r in runs if r.get("curves"))
        lines += ["", "## Curves", "",
                  "![left: test PGD-20 per epoch; right: training-image PGD-20 minus test PGD-20 per epoch; "
                  "mean over seeds with the seed range shaded](curves.png)", "",
                  f"PGD-20 accuracy each epoch ({n_track} epochs) on {_tracked(planned)}, with the per-epoch check's "
                  "settings; measured for this figure only, never used to choose a checkpoint. Left: test accuracy, "
                  "where robust overfitting shows as a fall after the learning-rate drops (dotted). Right: the "
                  "robust generalisation gap, training-image accuracy minus test accuracy. Lines are means over "
                  "seeds, bands run from the lowest to the highest seed. Drawn from `results.json` (`curves` of "
                  "each run)."]
    lines += flatness_section(runs, labels)
    lines += ["", "## Per seed", "",
              "| method | seed | " + " | ".join(n for _, n in present) + " | best epoch | train s | eval s |",
              "| --- | --- | " + " | ".join("---" for _ in present) + " | --- | --- | --- |"]
    for r in runs:
        lines.append(f"| {r['method']} | {r['seed']} | "
                     + " | ".join(f"{r[k]:.2f}" if k in r else "–" for k, _ in present)
                     + f" | {r.get('best_epoch', '–')} | {r.get('train_seconds', 0):.0f} | "
                     f"{r.get('eval_seconds', 0):.0f} |")
    lines += ["", compute_text(runs), "", "## What the numbers show", ""]
    lines += findings(summary, labels, present, runs)
    lines += ["", "A difference is *inside the seed spread* when |Δ mean| ≤ std(a) + std(b). Rendered by "
              "`taylorat reproduce` from `results.json`; no number on this page is typed by hand.", ""]
    return "\n".join(lines)


def _split_text(d: dict[str, Any]) -> str:
    """The training split as `data.prepare` draws it: the hold-out first, then the subset from the rest."""
    hold = f"{d['holdout']} training images held out for choosing `best` (seeded, stratified), " if d["holdout"] else ""
    if d["train_subset"]:
        return hold + f"{d['train_subset']} of the rest trained on (seeded, stratified)"
    return hold + ("the rest trained on" if d["holdout"] else "the whole training set trained on")


def _progress(runs: list[dict[str, Any]], planned: list[Any]) -> list[str]:
    """A line saying which of the ``planned`` runs are still missing when the study is not finished."""
    done = {(r["method"], r["seed"]) for r in runs}
    missing = [(r.label, r.seed) for r in planned if (r.label, r.seed) not in done]
    if not missing:
        return []
    total = len(done) + len(missing)
    return [f"**In progress: {len(done)} of {total} runs finished.** Not yet run: "
            + "; ".join(f"`{label}` seed {seed}" for label, seed in missing)
            + ". Every number below is from the finished runs only.", ""]


def _tracked(planned: list[Any]) -> str:
    """How many test and training images the curves track (each run's count when the runs differ)."""
    tests = {r.config.eval.track_test for r in planned}
    trains = {r.config.eval.track_train for r in planned}

    def count(vals: set[int]) -> str:
        return " or ".join(str(v) for v in sorted(vals))

    differ = len(tests) > 1 or len(trains) > 1
    return (f"the first {count(tests)} test images and {count(trains)} fixed training images"
            + (" (the count of each run: `eval.track_*` under Setup)" if differ else ""))


def best_vs_last(runs: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The `best` (selected) and `last` (final epoch) checkpoints side by side, their gap per method, and
    the robust generalisation gap (training-image minus test PGD-20 at the last epoch) when it was tracked."""
    rs = [r for r in runs if isinstance(r.get("last"), dict) and "pgd20" in r["last"]]
    if not rs:
        return []
    tracked = all(train_test_gap(r) is not None for r in rs)
    lines = ["", "## Best and last checkpoints", "",
             "`best` is the epoch with the highest PGD-20 on the held-out split, `last` the final epoch; both "
             "on the same test images. Robust overfitting shows as best − last > 0."
             + (" *train − test* is the robust generalisation gap at the last epoch: PGD-20 on the tracked "
                "training images minus PGD-20 on the tracked test images (the curves' last point)." if tracked else ""),
             "",
             "| method | seeds | PGD-20 best | PGD-20 last | best − last | clean best | clean last | "
             + ("train − test | " if tracked else "") + "best epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | " + ("--- | " if tracked else "") + "--- |"]
    gaps: dict[str, list[float]] = {}
    gen: dict[str, list[float]] = {}
    for label in labels:
        mine = [r for r in rs if r["method"] == label]
        if not mine:
            continue
        gaps[label] = [r["pgd20"] - r["last"]["pgd20"] for r in mine]
        cols = [[r["pgd20"] for r in mine], [r["last"]["pgd20"] for r in mine], gaps[label],
                [r["clean"] for r in mine], [r["last"].get("clean", float("nan")) for r in mine]]
        if tracked:
            gen[label] = [train_test_gap(r) for r in mine]
            cols.append(gen[label])
        lines.append(f"| {label} | {len(mine)} | " + " | ".join(
            _pm_values(v) for v in cols)
            + f" | {', '.join(str(r.get('best_epoch')) for r in mine)} |")
    base = labels[0]
    if base in gaps:
        lines.append("")
        for name, table, word in (("best − last", gaps, "overfits"), ("train − test", gen, "generalises")):
            for label, g in table.items():
                if label == base or base not in table:
                    continue
                a, b = seed_stats(table[base]), seed_stats(g)
                delta = b[0] - a[0]
                if min(len(table[base]), len(g)) < 2:
                    lines.append(f"- {name} of `{label}` vs `{base}`: {delta:+.2f} points (one seed: no spread "
                                 "to judge it against).")
                    continue
                inside = within_spread(a, b)
                verdict = (("less" if delta < 0 else "more") if word == "overfits"
                           else ("better (a smaller gap)" if delta < 0 else "worse (a larger gap)"))
                lines.append(f"- {name} of `{label}` vs `{base}`: {delta:+.2f} points "
                             f"({'inside' if inside else 'outside'} the seed spread ±{seed_spread(a, b):.2f})"
                             + ("" if inside else f": `{label}` {word} {verdict} than `{base}`") + ".")
    return lines


def _eps_text(runs, attack: str = "pgd20") -> str:
    """The radius an attack ran at, or each run's when they differ (``0.1 (a), 0.15 (b)``)."""
    per = {}
    for r in runs:
        s = r["settings"]
        per.setdefault(round((s.get("attack_eps") or {}).get(attack, s["eps"]), 6), []).append(r["method"])
    if len(per) <= 1:
        return f"{_eps(runs, attack):.4g}"
    return ", ".join(f"{e:.4g} ({', '.join(sorted(set(ms)))})" for e, ms in per.items())


def _step_text(runs) -> str:
    steps = sorted({round(r["settings"]["step"], 6) for r in runs if r["settings"].get("step") is not None})
    return ", ".join(f"{v:.4g}" for v in steps) or "–"


def _eps(runs, attack: str = "pgd20"):
    """The radius ``attack`` ran at (records from before per-attack radii ran every attack at ``eps``)."""
    if not runs:
        return float("nan")
    s = runs[0]["settings"]
    return (s.get("attack_eps") or {}).get(attack, s["eps"])


def _method_desc(m: dict[str, Any]) -> str:
    """The run's own settings (what differs from the study's base), e.g. ``method.name=trades, precision=bf16``."""
    def flat(d: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"]
        return out

    own = flat({k: v for k, v in m.items() if k not in ("label", "paper", "baseline", "surrogate", "reuse_only")})
    return ", ".join(own + (["evaluation reused (reuse_only)"] if m.get("reuse_only") else []))


def findings(summary: dict[str, Any], labels: list[str], present: list[tuple[str, str]],
             runs: list[dict[str, Any]]) -> list[str]:
    """Plain sentences computed from the numbers (no judgement typed by hand)."""
    out = []
    base = labels[0]
    for other in labels[1:]:
        if base not in summary or other not in summary:
            continue
        parts, outside = [], []
        single = min(len(summary[base]["seeds"]), len(summary[other]["seeds"])) < 2
        for k, name in present:
            a, b = summary[base].get(k), summary[other].get(k)
            if a is None or b is None:
                continue
            a, b = _mean_std(a), _mean_std(b)
            delta, inside = b[0] - a[0], within_spread(a, b)
            parts.append(f"{name} {delta:+.2f}" + ("" if single else
                         f" ({'inside' if inside else 'outside'} the seed spread ±{seed_spread(a, b):.2f})"))
            if not inside:
                outside.append((name, delta))
        out.append(f"- `{other}` vs `{base}`: " + "; ".join(parts)
                   + (" (one seed: no spread to judge these differences against)." if single else "."))
        if single:
            continue
        if not outside:
            out.append(f"- With {len(summary[other]['seeds'])} seeds, no difference between `{other}` and `{base}` "
                       "is larger than the seed-to-seed spread: on this setup the two cannot be told apart.")
        else:
            better = [n for n, d in outside if d > 0]
            worse = [n for n, d in outside if d < 0]
            if better:
                out.append(f"- `{other}` is higher than `{base}` beyond the seed spread in: {', '.join(better)}.")
            if worse:
                out.append(f"- `{other}` is lower than `{base}` beyond the seed spread in: {', '.join(worse)}.")
    for label, s in summary.items():
        if "gap" in s:
            out.append(f"- `{label}`: PGD-20 reads {_pm(s['gap'])} points above "
                       "AutoAttack on the same images; PGD-20 alone overstates robustness by that much.")
    bad = [f"{r['method']} seed {r['seed']}" for r in runs
           if r.get("pgd20", 0) > r.get("clean", 100) or r.get("aa", 0) > r.get("clean_on_aa_images", 100)]
    checked = " and ".join(f"clean ≥ {n}" for k, n in (("pgd20", "PGD-20"), ("aa", "AutoAttack"))
                           if any(k in r for r in runs))
    if checked:
        out.append(f"- {checked} hold{'s' if ' and ' not in checked else ''} in every run." if not bad
                   else f"- WARNING: clean < robust accuracy in {', '.join(bad)}: check the evaluation.")
    flags = sorted({f for r in runs for f in r.get("flags", [])})
    out += [f"- flag: {f}" for f in flags]
    return out


def _num(v: float, key: str) -> str:
    """Accuracies with 2 decimals, the attacks' other numbers (ADBD, a distance in [0,1]) with 4."""
    return f"{v:.4f}" if key in attack_metrics() else f"{v:.2f}"


def render_table(results: dict[str, Any], study: Any) -> str:
    """A paper table: per cell ``ours (mean ± std) / paper (Δ)``, the paper's other rows, the settings."""
    runs = results["runs"]
    summary = summarise(runs, study.labels())
    cols = [c for c in study.columns]
    names = dict(metric_names())
    lines = [f"# {results['title']}", ""]
    if study.description:
        lines += [f"Paper: {study.description.strip()}", ""]
    lines += ["Reproduce (trains what is missing, resumes what was interrupted, re-renders this page):", "",
              "```bash", results.get("command", f"taylorat reproduce {study.name}"), "```", "",
              "Each cell: **ours** mean ± std over seeds (one seed: its value) / paper (ours − paper). ≈ marks a "
              "difference to the row's baseline that lies inside the seed spread (|Δ| ≤ std + std).", "",
              "| row | seeds | " + " | ".join(names.get(c, c) for c in cols) + " |",
              "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for m in study.methods:
        label, s = m["label"], summary.get(m["label"], {})
        paper = m.get("paper") or {}
        base = summary.get(m.get("baseline", ""), {})
        cells = []
        for c in cols:
            ours, p = s.get(c), paper.get(c)
            if ours is None:
                cells.append("– / " + (_num(p, c) if p is not None else "–"))
                continue
            cell = (f"**{_num(ours['mean'], c)}**" if _one_seed(ours)
                    else f"**{_num(ours['mean'], c)} ± {_num(ours['std'], c)}**")
            if c in base and within_spread(_mean_std(base[c]), _mean_std(ours)):
                cell += " ≈"
            cell += f" / {_num(p, c)} ({ours['mean'] - p:+.2f})" if p is not None else " / –"
            cells.append(cell)
        lines.append(f"| {pretty_label(label)} | {len(s.get('seeds', []))} | " + " | ".join(cells) + " |")
    if study.context:
        lines += ["", "Other rows of the paper's table (not trained by taylorat):", "",
                  "| row | " + " | ".join(names.get(c, c) for c in cols) + " | notes |",
                  "| --- | " + " | ".join("---" for _ in cols) + " | --- |"]
        for r in study.context:
            arch = f" ({r['architecture']})" if r.get("architecture") else ""
            data = f" [{r['dataset']}]" if r.get("dataset") else ""
            lines.append(f"| {r['label']}{arch}{data} | " + " | ".join(
                _num(r[c], c) if isinstance(r.get(c), (int, float)) else "–" for c in cols)
                + f" | {r.get('notes', '')} |")
    base_cfg = results["config"]["resolved"]
    e = base_cfg["eval"]
    chose = " — the paper chose on test images" if e["select_on"] == "holdout" else ""
    lines += ["", "## How these numbers were produced", "",
              f"- training: {base_cfg['optim']['epochs']} epochs (paper: 200), seeds "
              f"{', '.join(str(s) for s in study.seeds)}; `best` checkpoint = highest PGD-{e['steps']} accuracy on "
              f"the {e['select_on']} split ({e['n']} images){chose}",
              f"- evaluation on the first {study.evaluate.n} test images"
              + (f" (AutoAttack{_aa_version(study)} on the first {study.evaluate.n_aa})"
                 if "aa" in study.evaluate.attacks else "")
              + f"; attacks: {', '.join(study.evaluate.attacks)}",
              f"- ε per attack: {_eps_line(runs)}",
              "- every number above is read from `results.json`, written by the same command", ""]
    return "\n".join(lines)


def _eps_line(runs: list[dict[str, Any]]) -> str:
    """``pgd20 0.031, cw20 0.031, aa 0.03137`` from the first run's record (none yet: not run)."""
    if not runs:
        return "not run yet (ℓ∞ defaults: PGD-20 and CW-20 0.031, AutoAttack 8/255)"
    s = runs[0]["settings"]
    per = s.get("attack_eps") or {a: s["eps"] for a in s.get("attacks", [])}
    return ", ".join(f"{k} {v:.5g}" for k, v in per.items())


def _env(results: dict[str, Any]) -> str:
    """The environments the runs were evaluated in (distinct ones), as recorded in their eval.json."""
    seen: dict[str, int] = {}
    for r in results["runs"]:
        e = ", ".join(f"{k} {v}" for k, v in (r.get("environment") or {}).items()) or "not recorded"
        seen[e] = seen.get(e, 0) + 1
    if len(seen) <= 1:
        return next(iter(seen), "not recorded")
    return "; ".join(f"{e} ({n} run{'s' if n > 1 else ''})" for e, n in seen.items())

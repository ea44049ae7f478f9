"""Numbers quoted in the docs are the ones the project's own commands produced."""

import json
import re
import statistics
from pathlib import Path

import pytest

from taylorat.studies.render import summarise
from taylorat.studies.spread import seed_spread, seed_stats, within_spread

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "docs" / "studies" / "fashion_mnist_cpu"


def test_front_page_quotes_the_fashion_mnist_study():
    res = json.loads((STUDY / "results.json").read_text())
    labels = ["trades", "trades+1st+2nd"]
    s = summarise(res["runs"], labels)
    front = (ROOT / "README.md").read_text()
    section = front.split("## Does it help? Fashion-MNIST on two CPU cores")[1].split("\n## ")[0]
    for label in labels:
        assert len(s[label]["seeds"]) >= 3
        for key in ("clean", "pgd20", "aa"):
            quoted = f"{s[label][key]['mean']:.2f} ± {s[label][key]['std']:.2f}"
            assert quoted in section, f"README quotes no {quoted} for {label} {key}"
    assert "docs/studies/fashion_mnist_cpu" in section
    page = (STUDY / "README.md").read_text()
    assert "no number on this page is typed by hand" in page
    for r in res["runs"]:  # the acceptance: AA on >= 500 images, clean >= PGD-20 and clean >= AA
        assert r["n_aa"] >= 500 and r["clean"] >= r["pgd20"] and r["clean_on_aa_images"] >= r["aa"]


STUDY_PAGES = sorted(p.parent.name for p in (ROOT / "docs" / "studies").glob("*/results.json"))


@pytest.mark.parametrize("name", STUDY_PAGES)
def test_study_page_is_rendered_from_its_results(name):
    """Each committed page is exactly what `taylorat reproduce` renders from its committed results.json."""
    from taylorat.studies import study as studies
    from taylorat.studies.render import render_readme

    folder = ROOT / "docs" / "studies" / name
    res = json.loads((folder / "results.json").read_text())
    st = studies.load(ROOT / "configs" / "studies" / f"{name}.yaml")
    page = (folder / "README.md").read_text()
    assert page.startswith(render_readme(res, st))
    if any((r.get("curves") or {}).get("epoch") for r in res["runs"]):
        assert (folder / "curves.png").is_file() and "(curves.png)" in page


def test_every_study_page_is_tested():
    assert {"fashion_mnist_cpu", "digits_bf16"} <= set(STUDY_PAGES)


def test_front_page_quotes_the_robust_overfitting_pilot():
    folder = ROOT / "docs" / "studies" / "robust_overfitting_pilot"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    section = (ROOT / "README.md").read_text().split("## Where could it help? Robust overfitting")[1].split("\n## ")[0]
    gaps = {r["method"]: r["pgd20"] - r["last"]["pgd20"] for r in runs}
    assert len(gaps) == 5
    for g in gaps.values():
        assert f"{g:.2f}" in section
    chosen = max(gaps, key=gaps.get)
    assert [m for m, g in gaps.items() if g >= 3] == [chosen] == ["trades 500 images eps=0.1 batch 32"]
    best = next(r for r in runs if r["method"] == chosen)
    assert f"{best['pgd20']:.2f} against last {best['last']['pgd20']:.2f}" in section
    spread = [r["curves"]["track_train_pgd"][-1] - r["curves"]["track_test_pgd"][-1] for r in runs]
    assert f"from {min(spread):.2f} to {max(spread):.2f} points" in section
    # the study trains in the chosen setting
    from taylorat.studies import study as studies

    st = studies.load(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml")
    pilot = studies.load(ROOT / "configs" / "studies" / "robust_overfitting_pilot.yaml")
    a = next(r for r in st.runs("runs") if r.label == "trades").config
    b = next(r for r in pilot.runs("runs") if r.label == chosen).config
    for key in ("data", "optim", "attack", "model"):
        assert getattr(a, key) == getattr(b, key), key
    assert "docs/studies/robust_overfitting_pilot" in section
    assert "docs/studies/robust_overfitting_cpu/README.md" in section
    assert (ROOT / "docs" / "studies" / "robust_overfitting_cpu" / "README.md").is_file()


def test_front_page_states_what_the_robust_overfitting_study_shows():
    """All 15 runs are in results.json, and the README quotes them: the table (mean ± std over
    seeds), the differences to `trades` with the page's spread judgement, and the tracked curves."""

    from taylorat.studies import study as studies

    folder = ROOT / "docs" / "studies" / "robust_overfitting_cpu"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    st = studies.load(ROOT / "configs" / "studies" / "robust_overfitting_cpu.yaml")
    planned = {(r.label, r.seed) for r in st.runs("runs")}
    assert len(planned) == 15 and {(r["method"], r["seed"]) for r in runs} == planned
    for r in runs:  # settings, environment and timings of each
        assert r["settings"] and r["environment"] and r["train_seconds"] > 0 and r["eval_seconds"] > 0
        assert r["n"] >= 1000 and r["n_aa"] >= 500 and len(r["curves"]["track_test_pgd"]) == 100

    by = {label: [r for r in runs if r["method"] == label] for label in dict.fromkeys(r.label for r in st.runs("runs"))}
    cols = {
        "pgd20": lambda r: r["pgd20"],
        "aa": lambda r: r["aa"],
        "last": lambda r: r["last"]["pgd20"],
        "best-last": lambda r: r["pgd20"] - r["last"]["pgd20"],
        "gap": lambda r: r["curves"]["track_train_pgd"][-1] - r["curves"]["track_test_pgd"][-1],
    }
    stats = {label: {k: (statistics.fmean(map(f, rs)), statistics.stdev(map(f, rs)))
                     for k, f in {**cols, "cw20": lambda r: r["cw20"]}.items()}
             for label, rs in by.items()}
    section = (ROOT / "README.md").read_text().split("## Where could it help? Robust overfitting")[1].split("\n## ")[0]
    for label, s in stats.items():  # the table: one row per method, the columns of `cols`
        row = f"| {label} | " + " | ".join(f"{s[k][0]:.2f} ± {s[k][1]:.2f}" for k in cols) + " |"
        assert row in section, row

    flat = " ".join(section.split())

    def delta(label, key):
        """``label`` minus trades, the seed spread, and whether the difference lies inside it (the pages' rule)."""
        a, b = stats["trades"][key], stats[label][key]
        return b[0] - a[0], seed_spread(a, b), within_spread(a, b)

    # the verdict's claims: Taylor terms lower robust accuracy beyond the spread and widen the gap
    for key, name in (("pgd20", "PGD-20"), ("cw20", "CW-20"), ("aa", "AutoAttack")):
        d, spread, inside = delta("trades+1st+2nd", key)
        assert d < 0 and not inside and f"{name} {d:.2f}" in flat
    for label in ("trades+1st+2nd", "trades+1st+2nd sigma=0.01"):
        d, spread, inside = delta(label, "gap")
        assert d > 0 and not inside and f"+{d:.2f} points" in flat and f"(outside the spread ±{spread:.2f})" in flat
    for key in stats["trades"]:  # randomized weights alone: inside the spread in every number
        d, spread, inside = delta("trades sigma=0.01", key)
        assert inside, key
    for label in stats:  # every best − last smaller than TRADES', none beyond the spread
        d, spread, inside = delta(label, "best-last")
        assert label == "trades" or (d < 0 and inside), label
    assert min(stats, key=lambda m: stats[m]["gap"][0]) == max(stats, key=lambda m: stats[m]["last"][0]) == "awp-trades"
    d, spread, inside = delta("awp-trades", "gap")
    assert d < 0 and inside and f"{d:.2f} points, inside the spread ±{spread:.2f}" in flat
    d, spread, inside = delta("awp-trades", "pgd20")
    assert not inside and f"{-d:.2f} points below TRADES (just outside the spread ±{spread:.2f})" in flat

    def tracked(label, key):
        return statistics.fmean(r["curves"][key][-1] for r in by[label])

    train_pgd = [tracked(m, "track_train_pgd") for m in ("trades+1st+2nd", "trades")]
    test_pgd = [tracked(m, "track_test_pgd") for m in ("trades+1st+2nd", "trades")]
    assert f"ends at {train_pgd[0]:.2f} against {train_pgd[1]:.2f}" in flat
    assert f"({test_pgd[0]:.2f} against {test_pgd[1]:.2f}" in flat
    page = (folder / "README.md").read_text()
    assert "In progress" not in page and "robust_overfitting_cpu/README.md" in section


def test_gpu_page_quotes_the_gpu_check_results():
    """Every row of docs/performance.md's H100 table, and the README's GPU numbers, come from the JSON
    that ``benchmarks/gpu_check.sh`` wrote on that card."""
    results = ROOT / "benchmarks" / "results" / "h100-2026-11-26"
    rows = [r for f in sorted(results.glob("*.json")) for r in json.loads(f.read_text())["bench"]]
    cudnn = [json.loads(line) for f in sorted(results.glob("cudnn_benchmark_*.jsonl")) for line in f.open()]
    page = (ROOT / "docs" / "performance.md").read_text()
    by_case = {}
    for r in rows:
        by_case.setdefault((r["model"], r["precision"], r["variant"], r["compile"]), {})[r["method"]] = r
    assert len(by_case) == 8
    for (model, precision, variant, compile_), m in by_case.items():
        layout = "defaults (auto → on)" if variant == "defaults" else variant
        t, tt = m["trades"], m["trades+1st+2nd"]
        line = (f"| {model} | {precision} | {layout} | {compile_} | {t['ms_per_iter']:.1f} | "
                f"{tt['ms_per_iter']:.1f} | {tt['time_ratio_to_trades']:.3f} | {tt['peak_mib']:.0f} |")
        assert line in page, line
    fast = {r["model"]: r["ms_per_iter"] for r in rows if r["method"] == "trades+1st+2nd" and r["compile"] != "none"}
    readme = (ROOT / "README.md").read_text()
    for ms in fast.values():
        assert f"{ms:.1f} ms" in readme and f"{ms:.1f} ms" in page
    ratios = [r["time_ratio_to_cudnn_benchmark_off"] for r in cudnn if r["cudnn_benchmark"]]
    assert len(ratios) == 10 and f"ran {min(ratios):.2f}–{max(ratios):.2f} × their time" in page
    on = {(r["model"], r["precision"], r["compile"]): r["ms_per_iter"] for r in cudnn
          if r["cudnn_benchmark"] and r["method"] == "trades+1st+2nd"}
    off = {(r["model"], r["precision"], r["compile"]): r["ms_per_iter"] for r in cudnn
           if not r["cudnn_benchmark"] and r["method"] == "trades+1st+2nd"}
    assert all(f"{off[k]:.1f} → {on[k]:.1f} ms" in page for k in on)


def test_front_page_states_the_extra_data_sanity_check():
    """All 6 runs of the extra-data sanity check are in its results.json, and "Today's recipe" quotes them:
    the table (mean ± std over seeds) and each difference with the pages' seed-spread judgement."""
    from taylorat.studies import study as studies

    folder = ROOT / "docs" / "studies" / "recipe_extra_cpu"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    st = studies.load(ROOT / "configs" / "studies" / "recipe_extra_cpu.yaml")
    planned = {(r.label, r.seed) for r in st.runs("runs")}
    assert len(planned) == 6 and {(r["method"], r["seed"]) for r in runs} == planned
    for r in runs:  # the setting: clean and PGD-20 on 1,000 test images
        assert r["n"] == 1000 and r["clean"] >= r["pgd20"] and r["train_seconds"] > 0
    labels = ["250 images", "250 images + pool"]
    s = summarise(runs, labels)
    section = (ROOT / "README.md").read_text().split("## Today's recipe")[1].split("\n## ")[0]
    flat = " ".join(section.split())
    for label in labels:
        row = f"| {label} | " + " | ".join(f"{s[label][k]['mean']:.2f} ± {s[label][k]['std']:.2f}"
                                           for k in ("clean", "pgd20")) + " |"
        assert row in section, row
    for key, name in (("clean", "clean"), ("pgd20", "PGD-20")):
        a, b = ((s[label][key]["mean"], s[label][key]["std"]) for label in labels)
        where = "inside" if within_spread(a, b) else "outside"
        phrase = f"{name} {b[0] - a[0]:+.2f} points ({where} the seed spread ±{seed_spread(a, b):.2f})"
        assert phrase in flat, phrase
    assert "docs/studies/recipe_extra_cpu/README.md" in section


def test_front_page_states_what_the_taylor_terms_do_on_top_of_the_recipe():
    """The recipe study's `trades` runs retrace the sanity check's pool runs seed by seed; while runs are missing the
    README counts them and claims nothing, and once all 6 are in it quotes the table and every difference with the
    pages' seed-spread judgement."""
    from taylorat.studies import study as studies

    folder = ROOT / "docs" / "studies" / "recipe_taylor_cpu"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    st = studies.load(ROOT / "configs" / "studies" / "recipe_taylor_cpu.yaml")
    planned = {(r.label, r.seed) for r in st.runs("runs")}
    done = {(r["method"], r["seed"]) for r in runs}
    assert len(planned) == 6 and done <= planned
    for r in runs:  # clean, PGD-20, CW-20 on 1,000 test images, AutoAttack on 500
        assert r["n"] == 1000 and r["n_aa"] == 500 and r["train_seconds"] > 0
        assert r["clean"] >= r["pgd20"] and r["clean_on_aa_images"] >= r["aa"]
    sanity = json.loads((ROOT / "docs" / "studies" / "recipe_extra_cpu" / "results.json").read_text())["runs"]
    before = {r["seed"]: r for r in sanity if r["method"] == "250 images + pool"}
    for r in (r for r in runs if r["method"] == "trades + recipe"):  # the same training, seed by seed
        assert (r["best_epoch"], r["clean"], r["pgd20"]) == tuple(before[r["seed"]][k] for k in
                                                                  ("best_epoch", "clean", "pgd20")), r["seed"]
    section = (ROOT / "README.md").read_text().split("## Today's recipe")[1].split("\n## ")[0]
    flat = " ".join(section.split())
    assert "docs/studies/recipe_taylor_cpu/README.md" in section
    if done != planned:
        assert f"**Not yet run to the end**: {len(done)} of the 6 runs are in" in flat
        assert "no result is claimed here until all 6 are" in flat and "| trades + recipe |" not in section
        return
    assert "Not yet run to the end" not in flat
    labels = ["trades + recipe", "trades+1st+2nd + recipe"]
    s = summarise(runs, labels)
    keys = (("clean", "clean"), ("pgd20", "PGD-20"), ("cw20", "CW-20"), ("aa", "AutoAttack"))
    for label in labels:
        row = f"| {label} | " + " | ".join(f"{s[label][k]['mean']:.2f} ± {s[label][k]['std']:.2f}" for k, _ in keys)
        assert row + " |" in section, row
    for key, name in keys:
        a, b = ((s[label][key]["mean"], s[label][key]["std"]) for label in labels)
        where = "inside" if within_spread(a, b) else "outside"
        phrase = f"{name} {b[0] - a[0]:+.2f} ({where} the seed spread ±{seed_spread(a, b):.2f})"
        assert phrase in flat, phrase
    assert "retrace the sanity check's `250 images + pool` runs" in flat


def test_front_page_states_how_far_the_flatness_study_is():
    """The README's flatness section counts the runs in the study's results.json; while some are missing it
    claims nothing, and once all 18 are in it names the flattest method and Pearson r as the page computes them."""
    from taylorat.studies import study as studies
    from taylorat.studies.figures import train_test_gap
    from taylorat.studies.flatness_page import flat_runs, pearson, score

    folder = ROOT / "docs" / "studies" / "flatness_cpu"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    st = studies.load(ROOT / "configs" / "studies" / "flatness_cpu.yaml")
    planned = {(r.label, r.seed) for r in st.runs("runs")}
    done = {(r["method"], r["seed"]) for r in runs}
    assert len(planned) == 18 and done <= planned and len(flat_runs(runs)) == len(runs)  # flatness in every record
    section = (ROOT / "README.md").read_text().split("## Flatness methods side by side")[1].split("\n## ")[0]
    flat = " ".join(section.split())
    assert "docs/studies/flatness_cpu/README.md" in section
    if done != planned:
        assert f"**Not yet run to the end**: {len(done)} of the 18 runs are in" in flat
        assert "no result is claimed here until all 18 are" in flat
        return
    assert "Not yet run to the end" not in flat
    means = {m: sum(score(r) for r in runs if r["method"] == m) / 3 for m in st.labels()}
    flattest = min(means, key=means.get)
    assert f"`{flattest}` flattens most ({means[flattest]:.3f})" in flat
    r = pearson([score(x) for x in runs], [train_test_gap(x) for x in runs])
    assert f"Pearson r = {r:+.2f}" in flat and ("does not track" if abs(r) < 0.5 else "tracks") in flat

    def mean(label, f):
        return sum(f(x) for x in runs if x["method"] == label) / 3

    pairs = [("trades", "trades+1st+2nd"), ("trades + SAM", "trades+1st+2nd + SAM"),
             ("trades + AWP", "trades+1st+2nd + AWP")]
    diffs = [mean(b, score) - mean(a, score) for a, b in pairs]
    assert all(d > 0 for d in diffs) and "do not make the minimum flatter" in flat
    assert f"(+{diffs[0]:.3f} plain, +{diffs[1]:.3f} with SAM, +{diffs[2]:.3f} with AWP;" in flat
    lw = {m: mean(m, lambda x: x["flatness"]["loss_at_w"]["clean"]) for m in st.labels()}
    taylor, plain = (sorted(lw[pair[i]] for pair in pairs) for i in (1, 0))
    assert plain[-1] < taylor[0]
    assert f"clean `L(w)` {taylor[0]:.2f}–{taylor[-1]:.2f} against {plain[0]:.2f}–{plain[-1]:.2f}" in flat
    aa = [f"{mean(m, lambda x: x['aa']):.2f}" for pair in pairs for m in pair]
    assert (f"AutoAttack {aa[1]} plain, {aa[3]} with SAM and {aa[5]} with AWP, against {aa[0]}, {aa[2]} and "
            f"{aa[4]} without them") in flat
    page = " ".join((folder / "README.md").read_text().split())
    hours = re.search(r"([\d.]+ h) of training steps and ([\d.]+ h) of evaluation", flat).groups()
    assert f"Compute over 18 runs: {hours[0]} of training steps" in page and f"and {hours[1]} of evaluation" in page
    assert "`trades + AWP` vs `trades`: clean" in page and "PGD-20 -1.53 (outside the seed spread ±1.37)" in page
    assert "AWP is lower in PGD-20 alone (−1.53, spread ±1.37)" in flat


def test_front_page_gpu_numbers_are_the_gpu_study_pages():
    """Every GPU-study run the README quotes is a record of the committed page, to two decimals."""
    folder = ROOT / "docs" / "studies" / "fashion_mnist_gpu"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "docs/studies/fashion_mnist_gpu/README.md" in readme
    seeds = sorted({r["seed"] for r in runs})
    assert len(seeds) >= 2, "the README quotes a mean over seeds: the page needs two at least"
    words = {2: "two", 3: "three"}
    assert f"over **{words[len(seeds)]} seeds**" in readme
    assert "mean ± std over seeds " + " and ".join(map(str, seeds)) + ", each on one " in readme
    gpus = {r["environment"].get("gpu", "").split()[-1] for r in runs}
    assert len(gpus) == 1 and f"each on one {gpus.pop()}" in readme

    def stat(method, key):
        values = [r[key] for r in runs if r["method"] == method]
        assert len(values) == len(seeds), (method, key)
        return seed_stats(values)

    for m in ("trades", "trades+1st+2nd"):
        (c, cs), (p, ps), (a, as_) = (stat(m, k) for k in ("clean", "pgd20", "aa"))
        phrase = f"`{m}` clean {c:.2f} ± {cs:.2f}, PGD-20 {p:.2f} ± {ps:.2f}, AutoAttack {a:.2f} ± {as_:.2f}"
        assert phrase in readme, phrase
    t, b = stat("trades", "aa"), stat("trades+1st+2nd", "aa")
    assert f"{b[0] - t[0]:+.2f} AutoAttack points for the Taylor terms, " \
           f"{'inside' if within_spread(t, b) else 'beyond'} the seed spread (±{seed_spread(t, b):.2f})" in readme
    for key, name in (("clean", "clean"), ("pgd20", "PGD-20")):
        t, b = stat("trades", key), stat("trades+1st+2nd", key)
        assert b[0] > t[0] and not within_spread(t, b) and f"{name} ({b[0] - t[0]:+.2f})" in readme, \
            "the README says both are higher beyond their spreads"
    assert "are higher beyond their spreads" in readme
    for r in runs:
        r["gap"] = r["pgd20_on_aa_images"] - r["aa"]
    (tg, tgs), (bg, bgs) = stat("trades", "gap"), stat("trades+1st+2nd", "gap")
    assert f"({bg:.2f} ± {bgs:.2f} points above AutoAttack on the same images, against {tg:.2f} ± {tgs:.2f})" \
        in readme

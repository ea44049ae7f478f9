"""The paper's reported numbers (src/taylorat/studies/tables/*.yaml): structure, counts, spot checks."""

import json
from pathlib import Path

import pytest
import yaml

from taylorat.studies import study as studies

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "src" / "taylorat" / "studies" / "tables"
NAMES = ["table1", "table2", "table3", "table4", "table5", "table7", "table8"]
METRICS = {"clean", "pgd20", "cw20", "aa", "transfer_pgd20", "transfer_cw20", "rays", "adbd"}
CONTEXT_INFO = {"label", "architecture", "dataset", "notes"}
# table: (runs, paper numbers over all runs, context rows)
COUNTS = {"table1": (11, 40, 0), "table2": (12, 48, 9), "table3": (6, 18, 0), "table4": (9, 18, 0),
          "table5": (8, 32, 0), "table7": (2, 6, 0), "table8": (2, 8, 4)}


def load(name: str) -> dict:
    return yaml.safe_load((TABLES / f"{name}.yaml").read_text(encoding="utf-8"))


def paper(name: str, label: str) -> dict:
    [run] = [r for r in load(name)["runs"] if r["label"] == label]
    return run["paper"]


def in_range(key: str, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 <= value <= (1 if key == "adbd" else 100)


def test_every_table_has_a_file():
    assert sorted(p.stem for p in TABLES.glob("*.yaml")) == sorted(NAMES)
    assert (TABLES / "__init__.py").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_table_structure(name):
    t = load(name)
    assert set(t) == {"name", "title", "caption", "columns", "runs", "context", "evaluate", "seeds", "base"}
    assert t["seeds"] == [0, 1, 2]  # three seeds by default (--seeds N overrides)
    assert t["name"] == name
    assert isinstance(t["title"], str) and t["title"].startswith(f"Table {name[5:]}:")
    assert isinstance(t["caption"], str) and t["caption"]
    cols = t["columns"]
    assert cols and len(set(cols)) == len(cols) and set(cols) <= METRICS
    assert isinstance(t["evaluate"]["attacks"], list) and t["evaluate"]["attacks"]

    labels = [r["label"] for r in t["runs"]]
    assert len(set(labels)) == len(labels), "run labels must be unique within a table"
    assert {"optim", "eval", "attack"} <= set(t["base"])  # the paper's shared settings (§5)
    for r in t["runs"]:
        assert r["label"].isascii(), r["label"]  # typed on a command line (--only); rendered with Greek letters
        own = set(r) - {"label", "paper", "surrogate", "baseline"}
        assert own <= {"data", "model", "method", "attack", "optim", "eval"} and "method" in own, r["label"]
        assert {"label", "paper"} <= set(r)
        if "baseline" in r:  # Taylor rows point at their zeroth-order row
            assert r["baseline"] in labels and labels.index(r["baseline"]) < labels.index(r["label"])
        assert set(r["paper"]) <= set(cols), r["label"]
        for k, v in r["paper"].items():
            assert in_range(k, v), (r["label"], k, v)
        if "surrogate" in r:
            assert r["surrogate"] in labels and r["surrogate"] != r["label"]
    runs = studies.load(name).runs("runs")  # every run's config, built and validated from the file
    distinct = {json.dumps({k: v for k, v in r.config.to_dict().items() if k not in ("name", "out_dir", "seed")},
                           sort_keys=True) for r in runs if r.seed == 0}
    assert len(distinct) == len(t["runs"]), "two runs of a table train the same config"

    for c in t["context"]:
        assert {"label", "architecture", "dataset"} <= set(c), c
        assert set(c) - CONTEXT_INFO <= set(cols), c
        for k in set(c) - CONTEXT_INFO:
            assert in_range(k, c[k]), (c["label"], k, c[k])


@pytest.mark.parametrize("name", NAMES)
def test_counts(name):
    t = load(name)
    runs, numbers, context = COUNTS[name]
    assert len(t["runs"]) == runs
    assert sum(len(r["paper"]) for r in t["runs"]) == numbers
    assert len(t["context"]) == context


def test_columns_and_attacks():
    assert load("table3")["columns"] == ["clean", "pgd20", "aa"]
    assert load("table4")["columns"] == ["clean", "transfer_pgd20", "transfer_cw20"]
    assert load("table4")["evaluate"] == {"attacks": ["clean", "transfer"]}
    assert load("table7")["columns"] == ["clean", "adbd", "rays"]
    assert load("table7")["evaluate"] == {"attacks": ["clean", "rays"]}
    for n in ("table1", "table2", "table5", "table8"):
        assert load(n)["columns"] == ["clean", "pgd20", "cw20", "aa"]


def test_table1_values():
    assert paper("table1", "TRADES (0th)") == {}
    assert paper("table1", "1st (eta=0.05)") == {"clean": 83.19, "pgd20": 53.98, "cw20": 52.12, "aa": 48.2}
    assert paper("table1", "1st (eta=0.3)")["pgd20"] == 55.05
    assert paper("table1", "1st+2nd (eta=0.2)") == {"clean": 84.13, "pgd20": 54.91, "cw20": 52.53, "aa": 50.3}
    assert paper("table1", "1st+2nd (eta=0.4)")["cw20"] == 51.56


def test_table2_values():
    assert paper("table2", "CIFAR-10: Wu et al. (2020) [76] + Ours (1st+2nd)")["aa"] == 57.4
    assert paper("table2", "CIFAR-10: Zhang et al. (2019) [82] (0th)") == {
        "clean": 84.65, "pgd20": 56.68, "cw20": 54.49, "aa": 53.0}
    assert paper("table2", "CIFAR-100: Wu et al. (2020) [76] + Ours (1st+2nd)") == {
        "clean": 64.71, "pgd20": 35.73, "cw20": 31.41, "aa": 30.2}
    assert paper("table2", "CIFAR-100: Zhang et al. (2019) [82] + Ours (1st)")["clean"] == 63.01
    ctx = {(c["label"], c["dataset"]): c for c in load("table2")["context"]}
    pang = ctx[("Pang et al. (2021) [56]", "cifar10")]
    assert pang["pgd20"] == 57.91 and "cw20" not in pang and "PGD-10" in pang["notes"]
    gowal = ctx[("Gowal et al. (2020) [24]", "cifar100")]
    assert gowal["architecture"] == "WRN-70-16" and gowal["pgd20"] == 31.47 and "PGD-40" in gowal["notes"]
    assert "PGD-40" in ctx[("Gowal et al. (2020) [24]", "cifar10")]["notes"]
    rice = ctx[("Rice et al. (2020) [62]", "cifar10")]
    assert rice == {"label": "Rice et al. (2020) [62]", "architecture": "WRN-34-20", "dataset": "cifar10",
                    "clean": 85.34, "aa": 53.42}
    assert ctx[("Cui et al. (2021) [11]", "cifar100")]["aa"] == 29.34
    assert sum("notes" in c for c in ctx.values()) == 3


def test_table3_values():
    assert paper("table3", "SVHN: Wu et al. (2020) [76] + Ours (1st+2nd)")["clean"] == 93.98
    assert paper("table3", "CIFAR-10: Wu et al. (2020) [76] (0th)") == {"clean": 87.05, "pgd20": 72.08, "aa": 71.6}
    assert paper("table3", "CIFAR-100: Wu et al. (2020) [76] + Ours (1st+2nd)")["aa"] == 42.4


def test_table4_values_and_surrogates():
    t = load("table4")
    surrogates = [r for r in t["runs"] if r["method"]["name"] == "at"]
    assert len(surrogates) == 3 and all(r["paper"] == {} and "surrogate" not in r for r in surrogates)
    by_label = {r["label"]: r for r in t["runs"]}
    for r in t["runs"]:
        if r not in surrogates:  # the surrogate is the AT run of the same dataset
            assert by_label[r["surrogate"]]["data"] == r["data"] and by_label[r["surrogate"]] in surrogates
    assert paper("table4", "CIFAR-10: Wu et al. (2020) [76] (0th)") == {
        "clean": 82.78, "transfer_pgd20": 61.79, "transfer_cw20": 59.42}
    assert paper("table4", "CIFAR-100: Wu et al. (2020) [76] + Ours (1st+2nd)")["transfer_cw20"] == 37.84
    assert paper("table4", "SVHN: Wu et al. (2020) [76] + Ours (1st+2nd)")["transfer_pgd20"] == 66.16


def test_table5_values():
    assert paper("table5", "VGG16: Zhang et al. (2019) [82] (0th)") == {
        "clean": 79.78, "pgd20": 49.88, "cw20": 46.95, "aa": 44.3}
    assert paper("table5", "MobileNetV2: Wu et al. (2020) [76] + Ours (1st+2nd)")["aa"] == 49.4
    assert paper("table5", "MobileNetV2: Zhang et al. (2019) [82] + Ours (1st+2nd)")["pgd20"] == 53.34


def test_table7_values():
    assert paper("table7", "TRADES") == {"clean": 82.89, "adbd": 0.0412, "rays": 56.06}
    assert paper("table7", "TRADES+1st+2nd") == {"clean": 84.13, "adbd": 0.0435, "rays": 57.03}


def test_table8_values():
    assert paper("table8", "AT") == {"clean": 82.41, "pgd20": 52.77, "cw20": 50.43, "aa": 47.1}
    assert paper("table8", "AT+1st+2nd")["aa"] == 48.7
    ctx = {c["label"]: c for c in load("table8")["context"]}
    assert list(ctx) == ["GAT", "TRADES+GAT", "HAT", "HAT(DDPM)"]
    assert ctx["TRADES+GAT"]["aa"] == 49.6 and "cw20" not in ctx["TRADES+GAT"]
    assert ctx["HAT(DDPM)"] == {"label": "HAT(DDPM)", "architecture": "ResNet-18", "dataset": "cifar10",
                                "clean": 86.86, "pgd20": 57.09}


def test_precision_is_kept():
    """Numbers are written as printed: 48.2 stays 48.2, 39.70 stays 39.70."""
    t1 = (TABLES / "table1.yaml").read_text(encoding="utf-8")
    assert "aa: 48.2}" in t1 and "cw20: 51.80," in t1
    t2 = (TABLES / "table2.yaml").read_text(encoding="utf-8")
    assert "aa: 39.70}" in t2 and "aa: 53.0}" in t2 and "clean: 86.10," in t2


@pytest.mark.parametrize("name", NAMES)
def test_tables_load_as_studies_and_validate_every_run(name):
    from taylorat.studies.study import load as load_study

    st = load_study(name, seeds=1)
    runs = st.runs("runs")
    assert st.is_table and len(runs) == len(st.methods)
    short = load_study(name, seeds=1, schedule="short")
    assert all(r.config.optim.epochs == 30 for r in short.runs("runs"))

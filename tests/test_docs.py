"""Numbers quoted in the docs are the ones the project's own commands produced."""

import json
from pathlib import Path

from taylorat.reproduce.render import summarise

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


def test_study_page_is_rendered_from_its_results():
    """The committed page is exactly what `taylorat reproduce` renders from the committed results.json."""
    from taylorat.reproduce import study as studies
    from taylorat.reproduce.render import render_readme

    res = json.loads((STUDY / "results.json").read_text())
    st = studies.load(ROOT / "configs" / "studies" / "fashion_mnist_cpu.yaml")
    page = (STUDY / "README.md").read_text()
    assert page.startswith(render_readme(res, st))

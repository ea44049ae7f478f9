"""Evaluation reports: a Markdown table and a JSON document that say what produced each number.

``report.json`` follows ``report.schema.json`` (JSON Schema, shipped beside this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..common import atomic_write_text
from .suite import EvalResult

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def report_dict(result: EvalResult, **context: Any) -> dict[str, Any]:
    """``{"checkpoint", "model", "dataset", "split", "n", "seed", "results", "settings", "seconds", ...}``."""
    out = {**context, "n": result.n, "precision": result.precision,
           "results": {k: round(v, 2) for k, v in result.results.items()},
           "eps": {k: v for k, v in result.eps.items() if k != "clean"},
           "settings": result.settings, "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
           "extra": result.extra, "warnings": result.warnings, "flags": result.flags}
    attacked = [k for k in result.correct if k != "clean"]
    if len(attacked) > 1:
        out["worst_case"] = round(result.worst_case(attacked), 2)
    return out


def markdown_table(rows: list[dict[str, Any]], columns: list[str], first: str = "method") -> str:
    """A Markdown table: one row per dict, ``first`` then ``columns`` (numbers with 2 decimals)."""
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    head = [first, *columns]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in head) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(report: dict[str, Any], label: str) -> str:
    """The table of one report, the settings that produced it, its flags and warnings."""
    cols = list(report["results"]) + (["worst_case"] if "worst_case" in report else [])
    row = {"method": label, **report["results"]}
    if "worst_case" in report:
        row["worst_case"] = report["worst_case"]
    lines = [markdown_table([row], cols), ""]
    s = report["settings"]
    norm = next((v["norm"] for v in s.values() if isinstance(v, dict) and "norm" in v), None)
    lines.append(f"{report.get('dataset', '?')} {report.get('split', 'test')}: {s['subset']['description']} "
                 f"(n={report['n']}); seed {report.get('seed')}; precision {report['precision']}"
                 + (f"; threat model {norm}" if norm else ""))
    eps = report.get("eps") or {}
    if eps:
        lines.append("ε per attack: " + ", ".join(f"{k} {v:.5g}" + (f" (step {s[k]['step']:.4g})"
                                                                   if isinstance(s.get(k, {}).get("step"), float)
                                                                   else "") for k, v in eps.items()))
    radius = s.get("radius") or {}
    if radius.get("why"):
        lines.append(f"radius: {'each attack its own' if radius.get('eps') is None else format(radius['eps'], '.5g')}"
                     f" ({radius['why']})")
    data = s.get("data") or {}
    if data.get("files") or data.get("source"):
        lines.append("data read: " + (", ".join(data["files"]) if data.get("files") else data["source"]))
    eot = s.get("eot", {})
    if eot.get("draws", 1) > 1:
        lines.append(f"EOT: gradients averaged over {eot['draws']} draws ({eot.get('chosen')}); "
                     "AutoAttack version rand")
    extra = report.get("extra", {})
    if extra.get("rays_adbd") is not None:
        lines.append(f"RayS average decision-boundary distance (ADBD): {extra['rays_adbd']:.4f} over clean-correct "
                     f"images ({extra.get('rays_no_boundary', 0)} with no boundary in the [0,1] box left out)")
    aa = s.get("aa") or {}
    if aa.get("version"):
        lines.append(f"AutoAttack version {aa['version']}: {', '.join(aa.get('attacks') or [])}"
                     + (f", {aa['restarts']} restarts each" if aa.get("restarts") else ""))
    if "aa_per_attack" in extra:
        lines.append("AutoAttack robust accuracy after each attack: "
                     + ", ".join(f"{k} {v:.2f}%" for k, v in extra["aa_per_attack"].items()))
    if "sweep" in extra:
        lines.append("PGD-20 by eps: " + ", ".join(f"{c['eps']:.3g}: {c['pgd20']:.2f}%" for c in extra["sweep"]))
    lines += [f"FLAG: {f}" for f in report.get("flags", [])]
    if report.get("flags"):
        lines.append("(A flag says the numbers look like gradient masking; on a small or barely trained model it "
                     "often means PGD-20 is simply too weak for it: trust AutoAttack, RayS and the ε-sweep over it.)")
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def write_report(out_dir: str | Path, report: dict[str, Any], markdown: str) -> None:
    """``report.json`` and ``report.md`` in ``out_dir`` (one may be written without the other; the CLI writes the
    set through ``common.atomic_folder``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown + "\n")

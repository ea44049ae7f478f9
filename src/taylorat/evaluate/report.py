"""Evaluation reports: a Markdown table and a JSON document that say what produced each number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text
from .suite import EvalResult


def report_dict(result: EvalResult, **context: Any) -> dict[str, Any]:
    """``{"checkpoint", "model", "dataset", "split", "n", "seed", "results", "settings", "seconds", ...}``."""
    return {**context, "n": result.n, "results": {k: round(v, 2) for k, v in result.results.items()},
            "settings": result.settings, "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
            "warnings": result.warnings}


def markdown_table(rows: list[dict[str, Any]], columns: list[str], first: str = "method") -> str:
    """A Markdown table: one row per dict, ``first`` then ``columns`` (numbers with 2 decimals)."""
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    head = [first, *columns]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in head) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out_dir: str | Path, report: dict[str, Any], markdown: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown + "\n")

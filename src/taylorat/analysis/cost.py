"""The cost table (paper Table 6): time per epoch and peak GPU memory per training method.

Input: benchmark JSON lines such as ``{"model": "wrn_34_10", "method": "trades+1st+2nd",
"precision": "bf16", "device": "...", "batch_size": 128, "ms_per_iter": 160.2,
"peak_mib": 5800.0, "iters_per_epoch": 391}``. Per row:

* time per epoch (min) = ``ms_per_iter · iters_per_epoch / 60000``;
* time ratio = ``ms_per_iter / ms_per_iter(trades)`` and memory ratio =
  ``peak_mib / peak_mib(trades)``, against the ``trades`` row of the same model and precision
  (preferring one on the same device and batch size).

Missing or non-numeric fields are shown as "–".
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable

from ..common import InputError

DASH = "–"
BASELINE = "trades"
COLUMNS = ("model", "method", "precision", "ms/iter", "time/epoch (min)", "peak memory (MiB)",
           "time vs trades", "memory vs trades")


def load_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; blank lines and ``#`` comments are skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{i} is not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{i} holds a JSON {type(obj).__name__}, expected an object")
            out.append(obj)
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return DASH if v is None else format(v, spec) + suffix


def _text(v: Any) -> str:
    return DASH if v is None or v == "" else str(v).replace("|", "\\|")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _baseline(row: dict, rows: list[dict]) -> dict | None:
    cands = [r for r in rows if str(r.get("method", "")).lower() == BASELINE
             and r.get("model") == row.get("model") and r.get("precision") == row.get("precision")]
    same = [r for r in cands if r.get("device") == row.get("device") and r.get("batch_size") == row.get("batch_size")]
    return (same or cands or [None])[0]


def cost_table(lines: Iterable[dict[str, Any]]) -> str:
    """A Markdown table, one row per benchmark line in input order (module docstring)."""
    rows = list(lines)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
    for r in rows:
        ms, mem, iters = _num(r.get("ms_per_iter")), _num(r.get("peak_mib")), _num(r.get("iters_per_epoch"))
        epoch = None if ms is None or iters is None else ms * iters / 60000.0
        base = _baseline(r, rows)
        t_ratio = _ratio(ms, _num(base.get("ms_per_iter"))) if base else None
        m_ratio = _ratio(mem, _num(base.get("peak_mib"))) if base else None
        cells = [_text(r.get("model")), _text(r.get("method")), _text(r.get("precision")), _fmt(ms, ".1f"),
                 _fmt(epoch, ".2f"), _fmt(mem, ".0f"), _fmt(t_ratio, ".2f", "×"), _fmt(m_ratio, ".2f", "×")]
        out.append("| " + " | ".join(cells) + " |")
    notes = []
    for key, what in (("device", "device"), ("batch_size", "batch size")):
        vals = sorted({str(r[key]) for r in rows if r.get(key) is not None})
        if vals:
            notes.append(f"{what}: {', '.join(vals)}")
    if notes:
        text = "; ".join(notes)
        out += ["", text[0].upper() + text[1:] + "."]
    return "\n".join(out) + "\n"

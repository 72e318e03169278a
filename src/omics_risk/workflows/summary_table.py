"""The held-out metrics table ``train.py`` prints, within 120 columns.

summary.csv keeps every column with full precision; the printed table is for reading in a terminal: a C-index
with its CI in one cell, the difference from the reference with its sign, p-values as values (``<0.001``), the other
p-value of the comparison (bootstrap or corrected resampled t, whichever is not the headline ``p``) beside it, and the
columns that do not fit left out by name (they are in summary.csv, whose path ends the table).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["WIDTH", "format_summary_table"]

#: Widest line the printed table may have.
WIDTH = 120
#: Columns left out first when the table is too wide (the rest go from the right).
_DROP_FIRST = ("fit_seconds", "C mean±sd", "external_response_auc", "external_cindex")


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _with_ci(table: pd.DataFrame, value: str, low: str, high: str) -> list[str]:
    return [f"{_num(v)} [{_num(lo)}, {_num(hi)}]" for v, lo, hi in zip(table[value], table[low], table[high],
                                                                        strict=True)]


def _p(value: Any) -> str:
    if value is None or pd.isna(value):
        return "-"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Compact cells: value [CI] together, signed differences, p-values; unknown columns pass through."""
    names = [str(m) for m in table["model"]]
    width = max([len("model"), *map(len, names)])
    cols: dict[str, list[str]] = {"model": [n.ljust(width) for n in names]}  # left-aligned: same-length cells
    used = {"model"}
    if {"cindex_pooled", "ci_low", "ci_high"} <= set(table):
        cols["pooled C [95% CI]"] = _with_ci(table, "cindex_pooled", "ci_low", "ci_high")
        used |= {"cindex_pooled", "ci_low", "ci_high"}
    if {"cindex", "cindex_sd"} <= set(table):
        cols["C mean±sd"] = [f"{_num(c)}±{_num(s)}" for c, s in zip(table["cindex"], table["cindex_sd"], strict=True)]
        used |= {"cindex", "cindex_sd"}
    for col in (c for c in table if str(c).startswith("delta_vs_")):
        cols[f"diff vs {str(col)[len('delta_vs_'):]}"] = ["-" if pd.isna(v) else f"{float(v):+.3f}" for v in table[col]]
        used.add(col)
    if "p" in table:
        cols["p"] = [_p(v) for v in table["p"]]
        used.add("p")
    for col, label in (("p_bootstrap", "p (bootstrap)"), ("p_corrected_t", "p (corrected t)")):
        if col in table:  # the other p of the comparison; the headline one is already the p column
            used.add(col)
            same = "p" in table and all((pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(table["p"], table[col],
                                                                                             strict=True))
            if not same and table[col].notna().any():
                cols[label] = [_p(v) for v in table[col]]
    if {"response_auc", "response_auc_ci_low", "response_auc_ci_high"} <= set(table):
        cols["response AUC [95% CI]"] = _with_ci(table, "response_auc", "response_auc_ci_low", "response_auc_ci_high")
        used |= {"response_auc", "response_auc_ci_low", "response_auc_ci_high"}
    for col in (c for c in table if c not in used):
        digits = 1 if str(col).endswith("seconds") else 3
        cols[str(col)] = [_num(v, digits) if v is None or pd.api.types.is_number(v) else str(v) for v in table[col]]
    shown = pd.DataFrame(cols)
    return shown.rename(columns={"model": "model".ljust(width)})


def _fit(shown: pd.DataFrame, width: int, keep: Sequence[str]) -> tuple[str, list[str]]:
    """The table as text within ``width`` columns, and the names of the columns left out to get there."""
    dropped: list[str] = []
    while True:
        text = shown.to_string(index=False)
        if max(len(line) for line in text.splitlines()) <= width:
            return text, dropped
        optional = [c for c in _DROP_FIRST if c in shown] + [c for c in reversed(shown.columns) if c not in keep]
        if not optional:
            return text, dropped
        dropped.append(optional[0])
        shown = shown.drop(columns=optional[0])


def format_summary_table(table: pd.DataFrame, *, head: str, csv_path: str | Path, width: int = WIDTH) -> str:
    """``head`` (wrapped), the table within ``width`` columns, and where the full table is."""
    shown = _display(table)
    keep = [shown.columns[0], "pooled C [95% CI]", *[c for c in shown if c.startswith("diff vs ")], "p"]
    body, dropped = _fit(shown, width, keep)
    note = f"Full table, every column: {csv_path}"
    if dropped:
        note = f"Left out here to fit {width} columns: {', '.join(dropped)}. {note}"
    wrap = textwrap.TextWrapper(width=width, break_on_hyphens=False, break_long_words=False)
    return "\n" + wrap.fill(head) + "\n" + body + "\n" + wrap.fill(note)

"""``report.html`` of a surveillance simulation: titled blocks of text, a table and/or a figure each, rendered from
the package template ``surveil_report.html.j2`` with autoescaping (text from configs and cohorts cannot inject
markup); figures are embedded PNGs, so the page is one file that opens offline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from omics_risk.evaluation.report import package_version, paragraphs, png_base64, report_environment, section_anchor

__all__ = ["Block", "render_report"]


@dataclass
class Block:
    """One section: a title, paragraphs (blank lines split them), an optional table and figure."""

    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None
    caption: str = ""
    digits: dict[str, int] = field(default_factory=dict)


def _text(value: Any, digits: int) -> dict[str, Any]:
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return {"text": "–", "num": True}
    if isinstance(value, bool | np.bool_):
        return {"text": "yes" if value else "no", "num": False}
    if isinstance(value, int | np.integer):
        return {"text": f"{int(value):,}", "num": True}
    if isinstance(value, float | np.floating):
        return {"text": f"{float(value):,.{digits}f}", "num": True}
    return {"text": str(value), "num": False}


def _table(frame: pd.DataFrame, digits: Mapping[str, int]) -> dict[str, Any]:
    cols = [str(c) for c in frame.columns]
    rows = [[_text(v, digits.get(c, 2)) for v, c in zip(row, cols, strict=True)]
            for row in frame.itertuples(index=False)]
    return {"columns": cols, "rows": rows}


def render_report(title: str, blocks: Sequence[Block], meta: Mapping[str, Any]) -> str:
    """The HTML text of the report."""
    env = report_environment()
    used = {"run"}
    out = []
    for b in blocks:
        out.append({"title": b.title, "anchor": section_anchor(b.title, used), "paragraphs": paragraphs(b.text),
                    "table": None if b.table is None else _table(b.table, b.digits),
                    "figure": None if b.figure is None else png_base64(b.title, b.figure),
                    "caption": b.caption})
    return env.get_template("surveil_report.html.j2").render(
        title=title, version=package_version(), generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        meta=[(str(k), "–" if v is None else str(v)) for k, v in meta.items()], blocks=out)

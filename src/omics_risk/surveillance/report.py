"""``report.html`` of a surveillance simulation: titled blocks of text, a table and/or a figure each, rendered from
the package template ``surveil_report.html.j2`` with autoescaping (text from configs and cohorts cannot inject
markup); figures are embedded PNGs, so the page is one file that opens offline."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from matplotlib.figure import Figure

from omics_risk.evaluation.plot_style import figure_png

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


def _anchor(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    anchor, k = base, 2
    while anchor in used:
        anchor, k = f"{base}-{k}", k + 1
    used.add(anchor)
    return anchor


def render_report(title: str, blocks: Sequence[Block], meta: Mapping[str, Any]) -> str:
    """The HTML text of the report."""
    env = Environment(loader=PackageLoader("omics_risk.evaluation", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    used = {"run"}
    out = []
    for b in blocks:
        out.append({"title": b.title, "anchor": _anchor(b.title, used),
                    "paragraphs": [p.strip() for p in re.split(r"\n\s*\n", b.text) if p.strip()],
                    "table": None if b.table is None else _table(b.table, b.digits),
                    "figure": None if b.figure is None else base64.b64encode(figure_png(b.figure)).decode("ascii"),
                    "caption": b.caption})
    try:
        ver = version("omics-risk")
    except PackageNotFoundError:  # a source checkout on sys.path
        ver = "unknown"
    return env.get_template("surveil_report.html.j2").render(
        title=title, version=ver, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        meta=[(str(k), "–" if v is None else str(v)) for k, v in meta.items()], blocks=out)

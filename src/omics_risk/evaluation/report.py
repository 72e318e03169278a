"""One self-contained HTML report per run, for a statistician to open in any browser, offline.

The page is rendered from the package template ``templates/report.html.j2`` with jinja2 autoescaping on: every
metric name, model name, metadata value and note is escaped, so text from configs or cohort files cannot
inject markup. Figures are embedded as base64 PNGs and the CSS is inline: no CDN, no JavaScript, no side files.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from matplotlib.figure import Figure

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.plot_style import figure_png
from omics_risk.evaluation.tables import format_p, is_p_value

__all__ = ["estimates_table", "html_table", "package_version", "paragraphs", "png_base64", "render_html_report",
           "report_environment", "section_anchor", "write_html_report"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report_environment() -> Environment:
    """The Jinja environment of every report template (package templates, autoescaped: text from configs and cohorts
    cannot inject markup)."""
    return Environment(
        loader=PackageLoader("omics_risk.evaluation", "templates"),
        autoescape=select_autoescape(["html", "html.j2", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def package_version() -> str:
    """omics-risk's installed version, for the report footer ("unknown" in a source checkout)."""
    try:
        return version("omics-risk")
    except Exception:  # not installed (source checkout on sys.path)
        return "unknown"


def estimates_table(metrics: Mapping[str, Estimate | float], *, digits: int = 3) -> pd.DataFrame:
    """``{name: Estimate}`` -> a report table: metric, estimate, 95% CI low/high, resamples, and the usual
    ``0.712 (0.650-0.770)`` text (p-values as values, without a CI). Plain floats (no CI) are allowed."""
    rows = []
    for name, est in metrics.items():
        if isinstance(est, Estimate) and is_p_value(name):
            rows.append({"metric": name, "estimate": est.value, "ci_low": np.nan, "ci_high": np.nan,
                         "n_boot": est.n_boot, "estimate (95% CI)": format_p(est.value)})
        elif isinstance(est, Estimate):
            text = f"{est.value:.{digits}f} ({est.low:.{digits}f}–{est.high:.{digits}f})"
            rows.append({"metric": name, "estimate": est.value, "ci_low": est.low, "ci_high": est.high,
                         "n_boot": est.n_boot, "estimate (95% CI)": text})
        else:
            v = float(est)
            rows.append({"metric": name, "estimate": v, "ci_low": np.nan, "ci_high": np.nan, "n_boot": pd.NA,
                         "estimate (95% CI)": f"{v:.{digits}f}"})
    out = pd.DataFrame(rows, columns=["metric", "estimate", "ci_low", "ci_high", "n_boot", "estimate (95% CI)"])
    return out.astype({"n_boot": "Int64"})


def _cell(value: Any, column: str, digits: int) -> dict[str, Any]:
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value)):
        return {"text": "–", "num": True}
    if isinstance(value, bool | np.bool_):
        return {"text": "yes" if value else "no", "num": False}
    if isinstance(value, int | np.integer):
        return {"text": str(int(value)), "num": True}
    if isinstance(value, float | np.floating):
        v = float(value)
        if is_p_value(column):
            return {"text": format_p(v), "num": True}
        return {"text": f"{v:.{digits}f}", "num": True}
    if isinstance(value, Estimate):
        return {"text": str(value), "num": True}
    return {"text": str(value), "num": False}


def html_table(frame: pd.DataFrame, digits: int) -> dict[str, Any]:
    f = frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index()
    columns = [str(c) for c in f.columns]
    rows = [[_cell(v, c, digits) for v, c in zip(row, columns, strict=True)] for row in f.itertuples(index=False)]
    return {"columns": columns, "rows": rows}


def section_anchor(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    anchor, k = base, 2
    while anchor in used:
        anchor, k = f"{base}-{k}", k + 1
    used.add(anchor)
    return anchor


def png_base64(name: str, fig: Figure | str | Path | bytes) -> str:
    if isinstance(fig, Figure):
        data = figure_png(fig)
    elif isinstance(fig, bytes):
        data = fig
    else:
        path = Path(fig)
        if not path.is_file():
            raise FileNotFoundError(f"figure '{name}': {path} does not exist")
        data = path.read_bytes()
    if not data.startswith(_PNG_MAGIC):
        raise ValueError(f"figure '{name}' is not a PNG image; give a matplotlib Figure or a .png file")
    return base64.b64encode(data).decode("ascii")


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", str(text)) if p.strip()]


def render_html_report(*, title: str, metrics_table: pd.DataFrame | Mapping[str, Estimate],
                       figures: Mapping[str, Figure | str | Path | bytes] | None = None,
                       sections: Mapping[str, str] | None = None, meta: Mapping[str, Any] | None = None,
                       captions: Mapping[str, str] | None = None, digits: int = 3,
                       metrics_note: str | None = None, headline: pd.DataFrame | None = None,
                       headline_note: str | None = None) -> str:
    """The HTML text of the report (see :func:`write_html_report`)."""
    if not isinstance(metrics_table, pd.DataFrame):
        metrics_table = estimates_table(metrics_table, digits=digits)
    used: set[str] = {"run", "metrics", "figures"}
    figs = [{"name": str(name), "anchor": section_anchor(f"fig-{name}", used), "data": png_base64(str(name), fig),
             "caption": (captions or {}).get(name, "")} for name, fig in (figures or {}).items()]
    secs = [{"title": str(t), "anchor": section_anchor(str(t), used), "paragraphs": paragraphs(body)}
            for t, body in (sections or {}).items()]
    note = metrics_note if metrics_note is not None else (
        "Intervals are 95% percentile bootstrap confidence intervals over patients; p-values below 0.001 are "
        "shown as <0.001. Harrell's and Uno's C and AUCs: 0.5 = random ranking, 1 = perfect.")
    return report_environment().get_template("report.html.j2").render(
        title=str(title),
        version=package_version(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        meta=[(str(k), "–" if v is None else str(v)) for k, v in (meta or {}).items()],
        metrics=html_table(metrics_table, digits),
        headline=None if headline is None or headline.empty else html_table(headline, digits),
        headline_note=headline_note or "",
        metrics_note=note,
        figures=figs,
        sections=secs,
    )


def write_html_report(path: str | Path, *, title: str, metrics_table: pd.DataFrame | Mapping[str, Estimate],
                      figures: Mapping[str, Figure | str | Path | bytes] | None = None,
                      sections: Mapping[str, str] | None = None, meta: Mapping[str, Any] | None = None,
                      captions: Mapping[str, str] | None = None, digits: int = 3,
                      metrics_note: str | None = None, headline: pd.DataFrame | None = None,
                      headline_note: str | None = None) -> Path:
    """Write one self-contained HTML report and return its path.

    Args:
        path: output file (parent directories are created).
        title: page title.
        metrics_table: any table (one row per metric or per model; floats shown with ``digits`` decimals,
            p-value columns as ``<0.001``), or ``{name: Estimate}`` (turned into :func:`estimates_table`).
        figures: ``{name: Figure | PNG path | PNG bytes}``, embedded as base64 PNGs in this order.
        sections: ``{heading: text}`` notes; blank lines separate paragraphs; text is escaped, not HTML.
        meta: run metadata shown first (run id, model URI, cohort, date, git SHA...).
        captions: ``{figure name: caption}``.
        headline: a short table shown first as "Model comparison" (:func:`~omics_risk.evaluation.tables.
            headline_table`: C-index, difference from the reference, p), with ``headline_note`` under it.
    """
    html = render_html_report(title=title, metrics_table=metrics_table, figures=figures, sections=sections,
                              meta=meta, captions=captions, digits=digits, metrics_note=metrics_note,
                              headline=headline, headline_note=headline_note)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path

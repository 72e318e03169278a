"""The house style of the evaluation figures: a fresh Agg-backed :class:`~matplotlib.figure.Figure` per plot (no
pyplot: nothing leaks across runs, nothing pops up), the per-figure style, the Okabe-Ito colour-blind-safe palette,
PNG output, time ticks and p-value text shared by :mod:`~omics_risk.evaluation.plots` and
:mod:`~omics_risk.evaluation.plot_bars`."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from omics_risk.evaluation.horizons import DAYS_PER_MONTH, DAYS_PER_YEAR

__all__ = ["PALETTE", "STYLE", "figure_png", "save_figure"]

_UNIT_DAYS = {"days": 1.0, "months": DAYS_PER_MONTH, "years": DAYS_PER_YEAR}

#: Okabe-Ito palette (colour-blind safe); risk groups low / intermediate / high get blue / orange / vermillion.
PALETTE = ["#0072B2", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_RISK_COLOURS = {"low": PALETTE[0], "intermediate": PALETTE[1], "high": PALETTE[2]}
_GREY = "#6b6b6b"
_ENDPOINT_LABELS = {
    "rfs": "Recurrence-free probability",
    "dfs": "Disease-free probability",
    "efs": "Event-free probability",
    "pfs": "Progression-free probability",
    "pfi": "Progression-free probability",
    "os": "Overall survival probability",
    "dss": "Disease-specific survival probability",
}

STYLE: dict[str, Any] = {
    "axes.axisbelow": True,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "savefig.dpi": 150,
    "figure.dpi": 100,
}


# ------------------------------------------------------------------------------------------------ helpers
@contextmanager
def _style():
    with matplotlib.rc_context(STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 150) -> bytes:
    """The PNG bytes of ``fig`` (tight bounding box), e.g. to embed in HTML or log to MLflow."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` as a PNG (parent directories created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig, dpi=dpi))
    return path


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _time_ticks(max_time: float, unit: str) -> np.ndarray:
    """Round tick steps (3/6/12/24 months, 1/2/5 years) from 0, about 4-8 ticks, none beyond ``max_time``."""
    steps = {"months": [1, 3, 6, 12, 24, 36, 60], "years": [0.5, 1, 2, 5, 10], "days": [30, 90, 180, 365, 730]}[unit]
    step = next((s for s in steps if max_time / s <= 7), steps[-1])
    return np.arange(0, max_time * (1 + 1e-9), step)



"""The surveillance figures in the house style (:mod:`omics_risk.evaluation.plot_style`): the trade-off between
scans and detection delay, and the trial's power over the margin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from omics_risk.evaluation.plot_style import PALETTE, STYLE
from omics_risk.surveillance.summary import ScheduleStats

__all__ = ["plot_power", "plot_tradeoff"]

#: The palette without its first colour (the risk-adapted curve) and its yellow (unreadable as a point).
_POINT_COLOURS = [c for c in PALETTE[1:] if c != "#F0E442"]
_MARKERS = {"fixed": "s", "stage": "D", "ctdna": "^", "table": "v"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_tradeoff(stats: Mapping[str, ScheduleStats], metric: str = "median_delay_days",
                  label: str = "Median detection delay (days)") -> Figure:
    """Scans per patient against ``metric`` with 95% CIs: the risk-adapted family as a curve (its threshold at
    each point), every other schedule as a point."""
    with matplotlib.rc_context(STYLE):
        fig = _figure(6.4, 4.4)
        ax = fig.add_subplot(111)
        fam = sorted((s for s in stats.values() if s.family == "risk_adapted"),
                     key=lambda s: s.point["scans_per_patient"])
        if fam:
            x = np.array([s.point["scans_per_patient"] for s in fam])
            y = np.array([s.point[metric] for s in fam])
            lo = np.array([s.estimate(metric).low for s in fam])
            hi = np.array([s.estimate(metric).high for s in fam])
            ax.fill_between(x, lo, hi, color=PALETTE[0], alpha=0.15, linewidth=0)
            ax.plot(x, y, "-o", color=PALETTE[0], markersize=3.5, label="risk-adapted (threshold)")
            for s, xi, yi in zip(fam, x, y, strict=True):
                ax.annotate(s.name.rsplit("_", 1)[-1], (xi, yi), textcoords="offset points", xytext=(4, 3),
                            fontsize=6.5, color=PALETTE[0])
        others = [s for s in stats.values() if s.family != "risk_adapted"]
        for k, s in enumerate(others):
            e, c = s.estimate(metric), s.estimate("scans_per_patient")
            colour = _POINT_COLOURS[k % len(_POINT_COLOURS)]
            ax.errorbar([c.value], [e.value], yerr=[[e.value - e.low], [e.high - e.value]],
                        xerr=[[c.value - c.low], [c.high - c.value]], fmt=_MARKERS.get(s.family, "o"),
                        color=colour, markersize=5, capsize=2, linewidth=0.9, label=s.name)
        ax.set_xlabel("CT scans per patient")
        ax.set_ylabel(label)
        ax.set_title("Follow-up schedules: scans against detection delay")
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.legend(loc="upper right", fontsize=7)
    return fig


def plot_power(curves: pd.DataFrame, margin_col: str = "margin", sizes: Sequence[int] | None = None) -> Figure:
    """Simulated power against the margin, one line per number of patients per arm (``curves``: columns margin,
    patients_per_arm, power)."""
    with matplotlib.rc_context(STYLE):
        fig = _figure(6.0, 4.0)
        ax = fig.add_subplot(111)
        for k, (n, g) in enumerate(curves.groupby("patients_per_arm", sort=True)):
            if sizes is not None and n not in sizes:
                continue
            g = g.sort_values(margin_col)
            ax.plot(g[margin_col], g["power"], "-o", markersize=3, color=PALETTE[k % len(PALETTE)],
                    label=f"{int(n)} patients per arm")
        ax.axhline(0.8, color="#6b6b6b", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("Non-inferiority margin (share of recurrences found in the window)")
        ax.set_ylabel("Power (simulated trials)")
        ax.set_title("ctDNA-guided vs standard follow-up: power over the margin")
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.legend(loc="lower right", fontsize=7)
    return fig

"""Monitoring figures in the house style (:mod:`~omics_risk.evaluation.plot_style`): swimmer plot, lead-time
distribution, per-patient trajectories and a rule's operating-characteristic curve.

No figure shows a patient identifier (they go to MLflow): patients are numbered in the order drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from omics_risk.evaluation.plot_style import PALETTE, _figure, _style

__all__ = ["plot_grid_curve", "plot_lead_times", "plot_swimmer", "plot_trajectories", "swimmer_order"]

_ALERT, _PROG, _POS, _NEG = PALETTE[2], "#000000", PALETTE[0], "#9a9a9a"


def swimmer_order(patients: pd.DataFrame, limit: int) -> pd.Index:
    """Patients to draw: progressors first (by progression day), then the others (by follow-up), at most ``limit``."""
    p = patients[patients["n_usable_draws"] > 0]
    prog = p["endpoint_event"] == 1
    end = p["progression_day"].where(prog, np.fmax(p["last_draw_day"], p["endpoint_time"].fillna(-np.inf)))
    key = pd.DataFrame({"np": (~prog).astype(int), "end": end}, index=p.index).sort_values(["np", "end"],
                                                                                         kind="stable")
    return key.index[:limit]


def plot_swimmer(patients: pd.DataFrame, draws: pd.DataFrame, order: pd.Index) -> Figure:
    """One lane per patient: follow-up, draws (filled = ctDNA-positive), the alert and the progression."""
    n = max(len(order), 1)
    pos_of = pd.Series(np.arange(len(order)), index=order)
    d = draws[draws["patient_id"].isin(order)]
    y = pos_of.reindex(d["patient_id"]).to_numpy(float)
    p = patients.loc[order]
    with _style():
        fig = _figure(7.5, 1.2 + 0.11 * n)
        ax = fig.add_axes((0.08, 0.9 / (1.2 + 0.11 * n), 0.9, 0.11 * n / (1.2 + 0.11 * n)))
        end = np.fmax(p["last_draw_day"].to_numpy(float), p["endpoint_time"].fillna(-np.inf).to_numpy(float))
        ax.hlines(np.arange(len(order)), p["first_draw_day"].to_numpy(float), end, color="#d0d0d0", lw=2.2, zorder=1)
        pos = d["positive"].to_numpy() > 0
        ax.scatter(d["day"].to_numpy(float)[~pos], y[~pos], s=7, facecolors="white", edgecolors=_NEG, lw=0.6,
                   zorder=2)
        ax.scatter(d["day"].to_numpy(float)[pos], y[pos], s=7, color=_POS, zorder=2)
        a = p["alert_day"].to_numpy(float)
        ax.scatter(a, np.arange(len(order)), marker="v", s=26, color=_ALERT, zorder=3)
        pr = p["progression_day"].to_numpy(float)
        ax.scatter(pr, np.arange(len(order)), marker="X", s=26, color=_PROG, zorder=3)
        ax.set_ylim(max(len(order), 1) - 0.5, -0.5)
        ax.set_yticks([])
        ax.set_ylabel("Patients (progressors first)")
        ax.set_xlabel("Day")
        handles = [Line2D([], [], color="#d0d0d0", lw=2.2, label="follow-up"),
                   Line2D([], [], marker="o", ls="", color=_POS, ms=4, label="draw, ctDNA-positive"),
                   Line2D([], [], marker="o", ls="", mfc="white", mec=_NEG, ms=4, label="draw, negative"),
                   Line2D([], [], marker="v", ls="", color=_ALERT, ms=6, label="alert (molecular progression)"),
                   Line2D([], [], marker="X", ls="", color=_PROG, ms=6, label="radiological progression")]
        fig.legend(handles=handles, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.0), fontsize=7)
    return fig


def plot_lead_times(patients: pd.DataFrame) -> Figure:
    """Days from the alert to the progression for progressors with an alert (negative: the alert came after)."""
    p = patients[(patients["endpoint_event"] == 1) & patients["alert_day"].notna()]
    lead = (p["progression_day"] - p["alert_day"]).to_numpy(float)
    with _style():
        fig = _figure(6.0, 3.2)
        ax = fig.add_axes((0.11, 0.16, 0.85, 0.72))
        if len(lead):
            bins = np.histogram_bin_edges(lead, bins=min(30, max(5, len(lead) // 3)))
            ax.hist(lead[lead < 0], bins=bins, color=_NEG, label="alert after progression")
            ax.hist(lead[lead >= 0], bins=bins, color=_POS, label="alert on or before progression")
            ahead = lead[lead >= 0]
            if len(ahead):
                med = float(np.median(ahead))
                ax.axvline(med, color=_ALERT, ls="--", lw=1.2, label=f"median lead {med:.0f} days")
            ax.legend(loc="upper right")
        ax.set_xlabel("Lead time, days (progression day - alert day)")
        ax.set_ylabel("Patients")
    return fig


def plot_trajectories(draws: pd.DataFrame, patients: pd.DataFrame, order: pd.Index, lod: float) -> Figure:
    """Small multiples of the level (log scale) per patient with the LOD, the alert and the progression."""
    k = len(order)
    cols = 4
    rows = max(1, int(np.ceil(k / cols)))
    with _style():
        fig = _figure(7.5, 1.75 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        floor = lod / 10
        for i, ax in enumerate(axes.flat):
            if i >= k:
                ax.set_visible(False)
                continue
            pid = order[i]
            d = draws[draws["patient_id"] == pid]
            lvl = np.maximum(d["level"].fillna(0).to_numpy(float), floor)
            pos = d["positive"].to_numpy() > 0
            ax.plot(d["day"], lvl, color="#8a8a8a", lw=0.9)
            ax.scatter(d["day"].to_numpy(float)[pos], lvl[pos], s=9, color=_POS, zorder=3)
            ax.scatter(d["day"].to_numpy(float)[~pos], lvl[~pos], s=9, facecolors="white", edgecolors=_NEG,
                       zorder=3)
            ax.axhline(lod, color=_NEG, ls=":", lw=0.8)
            row = patients.loc[pid]
            if np.isfinite(row["alert_day"]):
                ax.axvline(row["alert_day"], color=_ALERT, lw=1.0)
            if np.isfinite(row["progression_day"]):
                ax.axvline(row["progression_day"], color=_PROG, ls="--", lw=1.0)
            ax.set_yscale("log")
            ax.set_title(f"patient {i + 1}", fontsize=8, fontweight="normal")
            ax.tick_params(labelsize=7)
        fig.supxlabel("Day (red: alert, dashed: progression, dotted: LOD)", fontsize=8)
        fig.supylabel("ctDNA level", fontsize=8)
        fig.tight_layout()
    return fig


def plot_grid_curve(curve: pd.DataFrame, params: list[str], current: dict[str, object] | None = None) -> Figure:
    """Sensitivity (progressions preceded by an alert) against false alerts per patient-year, one point per grid
    point, labelled with its parameters; the rule as configured is ringed."""
    with _style():
        fig = _figure(6.5, 4.0)
        ax = fig.add_axes((0.1, 0.13, 0.86, 0.8))
        x = curve["false_alerts_per_patient_year"].to_numpy(float)
        y = curve["sensitivity"].to_numpy(float)
        ax.scatter(x, y, color=_POS, s=18, zorder=3)
        labels: dict[tuple[float, float], list[str]] = {}  # points that coincide share one label
        for xi, yi, (_, row) in zip(x, y, curve.iterrows(), strict=True):
            labels.setdefault((round(float(xi), 6), round(float(yi), 6)), []).append(
                ", ".join(f"{p}={row[p]}" for p in params))
            if current is not None and all(str(row[p]) == str(current.get(p)) for p in params):
                ax.scatter([xi], [yi], s=80, facecolors="none", edgecolors=_ALERT, lw=1.4, zorder=4)
        for (xi, yi), texts in labels.items():
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate("\n".join(texts), (xi, yi), xytext=(4, 0), textcoords="offset points", fontsize=6,
                            color="#444", va="center")
        ax.set_xlabel("False alerts per patient-year (non-progressors)")
        ax.set_ylabel("Progressions preceded by an alert")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
    return fig

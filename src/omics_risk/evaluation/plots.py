"""Publication-style evaluation figures, logged as PNG artifacts and embedded in the HTML report.

Every function builds a fresh :class:`matplotlib.figure.Figure` attached to an Agg canvas, without pyplot: no
global figure registry, so nothing leaks across hundreds of runs, nothing needs ``plt.close``, and nothing pops up
on a display. Style is set per figure through ``rc_context`` (global rcParams are left untouched).

Units: times come in **days** (as everywhere in omics-risk) and are shown in months (30.4375 days) or years
(365.25 days). Risk groups are ordered low -> intermediate -> high when labelled that way (see
:class:`~omics_risk.evaluation.riskgroups.RiskGroups`), and the first group is the hazard-ratio reference.
Colours are the Okabe-Ito colour-blind-safe palette.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from lifelines.statistics import multivariate_logrank_test
from matplotlib.figure import Figure

from omics_risk.evaluation.horizons import DAYS_PER_MONTH, DAYS_PER_YEAR, horizon_label
from omics_risk.evaluation.plot_bars import plot_contribution, plot_model_comparison, plot_top_features
from omics_risk.evaluation.plot_style import (
    _ENDPOINT_LABELS,
    _GREY,
    _RISK_COLOURS,
    _UNIT_DAYS,
    PALETTE,
    STYLE,
    _figure,
    _p_text,
    _style,
    _time_ticks,
    figure_png,
    save_figure,
)

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
    "PALETTE",
    "STYLE",
    "figure_png",
    "horizon_label",
    "plot_calibration",
    "plot_contribution",
    "plot_km_by_group",
    "plot_model_comparison",
    "plot_td_auc",
    "plot_top_features",
    "save_figure",
]

def _risk_rank(label: str) -> float | None:
    """Position of a RiskGroups label (low < intermediate < intermediate_1 < ... < high); None otherwise."""
    if label in ("low", "intermediate", "high"):
        return {"low": 0.0, "intermediate": 1.0, "high": 2.0}[label]
    head, _, k = label.partition("_")
    return 1.0 + int(k) / 1000 if head == "intermediate" and k.isdigit() else None


def _group_order(groups: np.ndarray, order: Sequence[str] | None) -> list[str]:
    present = list(pd.unique(groups))
    if order is not None:
        missing = [g for g in present if g not in order]
        if missing:
            raise ValueError(f"groups {missing} are not in order={list(order)}")
        return [g for g in order if g in present]
    if all(_risk_rank(g) is not None for g in present):
        return sorted(present, key=_risk_rank)
    return sorted(present, key=str)


def _group_colours(order: Sequence[str]) -> dict[str, str]:
    if all(_risk_rank(g) is not None for g in order):
        middle = iter([PALETTE[1], PALETTE[3], PALETTE[4], PALETTE[5], PALETTE[7]] * 4)
        return {g: _RISK_COLOURS[g] if g in ("low", "high") else next(middle) for g in order}
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(order)}


def _hazard_ratios(t: np.ndarray, e: np.ndarray, g: np.ndarray, order: list[str]) -> dict[str, tuple[float, ...]]:
    """HR (95% CI) of each group against ``order[0]`` from one lifelines Cox model on group indicators."""
    if len(order) < 2 or e.sum() == 0:
        return {}
    X = pd.DataFrame({f"g{i}": (g == lvl).astype(float) for i, lvl in enumerate(order[1:], start=1)})
    X["T"], X["E"] = t, e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph = CoxPHFitter().fit(X, duration_col="T", event_col="E")
    except Exception:  # separation (a group without events): no finite HR, the plot still draws
        return {}
    s = cph.summary
    return {
        lvl: (float(s.loc[f"g{i}", "exp(coef)"]), float(s.loc[f"g{i}", "exp(coef) lower 95%"]),
              float(s.loc[f"g{i}", "exp(coef) upper 95%"]))
        for i, lvl in enumerate(order[1:], start=1)
    }


# ------------------------------------------------------------------------------------------- Kaplan-Meier
def plot_km_by_group(time: np.ndarray, event: np.ndarray, groups: np.ndarray, *, title: str | None = None,
                     horizon_days: float | Sequence[float] | None = None, time_unit: str = "months",
                     order: Sequence[str] | None = None, max_time_days: float | None = None, ci: bool = True,
                     endpoint: str | None = None, ylabel: str | None = None) -> Figure:
    """Kaplan-Meier curves per risk group with a numbers-at-risk table, log-rank p and hazard ratios.

    One lifelines ``KaplanMeierFitter`` per group (pointwise 95% CI bands, censoring ticks); the at-risk table
    under the axes comes from lifelines ``add_at_risk_counts`` at the x ticks; the legend carries n, events and
    the Cox HR (95% CI) of each group against the first (lowest-risk) group; its title the multivariate log-rank
    p. ``horizon_days`` draws dotted vertical lines at evaluation horizons. ``max_time_days`` cuts the x axis
    (default: the last observed time). The y label follows ``endpoint`` (rfs, pfs, os, ...) unless ``ylabel``
    is given.
    """
    if time_unit not in _UNIT_DAYS:
        raise ValueError(f"time_unit must be one of {list(_UNIT_DAYS)}, got {time_unit!r}")
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64)
    g = np.asarray(groups, dtype=object)
    if not len(t) == len(e) == len(g):
        raise ValueError(f"time, event and groups differ in length ({len(t)}, {len(e)}, {len(g)})")
    ok = np.isfinite(t) & np.isfinite(e) & pd.notna(g)
    t, e, g = t[ok] / _UNIT_DAYS[time_unit], e[ok].astype(bool), g[ok].astype(str)
    if len(t) == 0:
        raise ValueError("no patient with a finite time, event and group")
    levels = _group_order(g, None if order is None else [str(o) for o in order])
    colours = _group_colours(levels)
    hrs = _hazard_ratios(t, e.astype(float), g, levels)
    p = multivariate_logrank_test(t, g, e).p_value if len(levels) > 1 else float("nan")
    t_max = (max_time_days / _UNIT_DAYS[time_unit]) if max_time_days is not None else float(t.max())
    ticks = _time_ticks(t_max, time_unit)

    # Layout in inches: [title][legend][horizon labels][axes][x label + at-risk table].
    n_rows = len(levels) + 1  # at-risk header + one row per group
    width, left, right, ax_h = 7.0, 1.35, 0.25, 3.0
    table_h = 0.17 * n_rows + 0.6
    # Horizon labels sit above the axes; labels closer than ~0.6 in to the previous one go one row up.
    hz = sorted(float(h) for h in np.atleast_1d(horizon_days)) if horizon_days is not None else []
    x_span = t_max * 1.02
    hz_level: list[int] = []
    for i, h in enumerate(hz):
        close = i > 0 and (h - hz[i - 1]) / _UNIT_DAYS[time_unit] / x_span * (width - left - right) < 0.6
        hz_level.append(hz_level[-1] + 1 if close and hz_level[-1] == 0 else 0)
    hz_h = 0.06 + 0.14 * (max(hz_level) + 1) if hz else 0.04
    ncol = len(levels) if len(levels) <= 3 else 2
    legend_h = (0.2 if len(levels) > 1 else 0.05) + 0.36 * int(np.ceil(len(levels) / ncol))
    title_h = 0.22 if title else 0.0
    height = table_h + ax_h + hz_h + legend_h + title_h + 0.08
    with _style():
        fig = _figure(width, height)
        ax = fig.add_axes((left / width, table_h / height, 1 - (left + right) / width, ax_h / height))
        fitters = []
        for lvl in levels:
            m = g == lvl
            name = lvl.capitalize().replace("_", " ")
            label = f"{name} (n={m.sum()}, {int(e[m].sum())} events)"
            if lvl in hrs:
                hr, lo, hi = hrs[lvl]
                label += f"\nHR {hr:.2f} ({lo:.2f}–{hi:.2f})"
            elif len(levels) > 1 and lvl == levels[0]:
                label += "\nHR reference"
            kmf = KaplanMeierFitter(label=name).fit(t[m], e[m])
            kmf.plot_survival_function(ax=ax, ci_show=ci, ci_alpha=0.15, color=colours[lvl], show_censors=True,
                                       censor_styles={"ms": 5, "marker": "|", "mew": 0.9}, label=label)
            fitters.append(kmf)
        for h, level in zip(hz, hz_level, strict=True):
            x = h / _UNIT_DAYS[time_unit]
            ax.axvline(x, color=_GREY, ls=":", lw=0.9, zorder=0)
            ax.annotate(horizon_label(h), (x, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(0, 2 + 10 * level),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7, color=_GREY)
        ax.set_xlim(0, x_span)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{x:g}" for x in ticks])
        ax.set_xlabel(f"Time since baseline ({time_unit})")
        ax.set_ylabel(ylabel or _ENDPOINT_LABELS.get(str(endpoint).lower(), "Event-free probability"))
        ax.grid(axis="y", color="#e6e6e6", lw=0.6)
        legend_y = (table_h + ax_h + hz_h) / height
        handles, labels = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:  # lifelines draws its own legend inside the axes
            ax.get_legend().remove()
        fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(left / width - 0.01, legend_y),
                   ncol=ncol, title=f"Log-rank {_p_text(p)}" if len(levels) > 1 else None,
                   alignment="left", title_fontsize=8, handlelength=1.4, columnspacing=1.2, borderaxespad=0,
                   borderpad=0)
        if title:
            fig.text(0.012, 1 - 0.06 / height, title, ha="left", va="top", fontsize=10, fontweight="bold")
        add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"], xticks=list(ticks),
                           ypos=-0.5, fontsize=8)
    return fig


# -------------------------------------------------------------------------------------------- calibration
def plot_calibration(tables: Mapping[float, pd.DataFrame], *, title: str | None = None,
                     max_prob: float | None = None) -> Figure:
    """Predicted vs observed event probability per horizon: one panel each, risk groups as points.

    ``tables``: ``{horizon_days: calibration_table(...)}`` with columns ``predicted`` (mean predicted 1 - S(h) in
    the group), ``observed`` (Kaplan-Meier 1 - S(h)), ``observed_low``/``observed_high`` (its 95% CI) and
    optionally ``n``. Points on the dotted identity line are perfectly calibrated; above it the model
    under-predicts risk. Both axes share the same limits so the identity is the diagonal.
    """
    if not tables:
        raise ValueError("plot_calibration needs at least one {horizon_days: calibration table}")
    need = {"predicted", "observed", "observed_low", "observed_high"}
    for h, tab in tables.items():
        missing = need - set(tab.columns)
        if missing:
            raise ValueError(f"calibration table at horizon {h} lacks columns {sorted(missing)} "
                             f"(has {list(tab.columns)})")
    horizons = sorted(tables, key=float)
    top = max_prob
    if top is None:
        vals = np.concatenate([np.asarray(tables[h][c], dtype=float) for h in horizons
                               for c in ("predicted", "observed", "observed_high")])
        top = float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0
        top = min(1.0, np.ceil((top * 1.08) * 10) / 10)
    k = len(horizons)
    with _style():
        fig = _figure(2.9 * k + 0.4, 3.35 if title else 3.1)
        axes = fig.subplots(1, k, sharex=True, sharey=True, squeeze=False)[0]
        for i, (ax, h) in enumerate(zip(axes, horizons, strict=True)):
            tab = tables[h]
            pred = np.asarray(tab["predicted"], dtype=float)
            obs = np.asarray(tab["observed"], dtype=float)
            lo = np.asarray(tab["observed_low"], dtype=float)
            hi = np.asarray(tab["observed_high"], dtype=float)
            ax.plot([0, top], [0, top], ls=":", color=_GREY, lw=1, label="Perfect calibration", zorder=0)
            yerr = np.vstack([np.clip(obs - lo, 0, None), np.clip(hi - obs, 0, None)])
            yerr = np.where(np.isfinite(yerr), yerr, 0.0)
            ax.errorbar(pred, obs, yerr=yerr, fmt="o-", color=PALETTE[i % len(PALETTE)], ms=4.5, lw=1.1,
                        elinewidth=0.9, capsize=2.5, label="Risk groups (KM 95% CI)")
            ax.set_xlim(-0.01 * top, top * 1.025)  # room for points at 0 or at the top
            ax.set_ylim(-0.01 * top, top * 1.025)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(horizon_label(float(h)), loc="left")
            ax.set_xlabel("Predicted event probability")
            ax.grid(color="#eeeeee", lw=0.6)
            if i == 0:
                ax.set_ylabel("Observed event probability (KM)")
                ax.legend(loc="upper left", fontsize=7)
        if title:
            fig.suptitle(title, x=0.02, ha="left", fontweight="bold", fontsize=10)
        fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------- time-dependent AUC
def plot_td_auc(horizons_days: Sequence[float], auc: Sequence[float], low: Sequence[float] | None = None,
                high: Sequence[float] | None = None, *, mean_auc: float | None = None, label: str | None = None,
                time_unit: str = "months", title: str | None = None) -> Figure:
    """Cumulative/dynamic AUC against the horizon, with its 95% CI band and the 0.5 line of a random score."""
    x = np.asarray(horizons_days, dtype=float) / _UNIT_DAYS[time_unit]
    y = np.asarray(auc, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"horizons_days ({x.shape}) and auc ({y.shape}) differ in shape")
    order = np.argsort(x)
    x, y = x[order], y[order]
    bottom = 0.4
    with _style():
        fig = _figure(6.4, 3.3)
        ax = fig.add_subplot()
        if low is not None and high is not None:
            lo, hi = np.asarray(low, float)[order], np.asarray(high, float)[order]
            ax.fill_between(x, lo, hi, color=PALETTE[0], alpha=0.18, lw=0, label="95% CI")
            bottom = min(bottom, float(np.nanmin(lo)) - 0.05)
        ax.plot(x, y, "o-", color=PALETTE[0], ms=4.5, label=label or "Time-dependent AUC")
        ax.axhline(0.5, color=_GREY, ls=":", lw=1, label="Random (0.5)")
        if mean_auc is not None and np.isfinite(mean_auc):
            ax.axhline(mean_auc, color=PALETTE[2], ls="--", lw=0.9, label=f"Mean AUC {mean_auc:.3f}")
        span = max(x.max() - 0.0, 1e-9)
        ax.set_xlim(0, x.max() + 0.08 * span)
        # a little beyond the last horizon: 1095 days is 35.98 months, and its 36-month tick belongs on the axis
        ticks = _time_ticks(float(x.max()) * 1.05, time_unit) if time_unit != "days" else None
        if ticks is not None:
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{v:g}" for v in ticks])
        ax.set_ylim(max(0.0, bottom), 1.0)
        ax.set_xlabel(f"Horizon ({time_unit})")
        ax.set_ylabel("Cumulative/dynamic AUC")
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # outside: never hides the band
        if title:
            ax.set_title(title, loc="left")
        fig.tight_layout()
    return fig



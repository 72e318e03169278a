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

import io
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
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

DAYS_PER_MONTH = 30.4375
DAYS_PER_YEAR = 365.25
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


def horizon_label(days: float) -> str:
    """A horizon in words: whole years as ``2 years``, otherwise months (``18 months``)."""
    years = days / DAYS_PER_YEAR
    if abs(years - round(years)) < 0.02 and round(years) >= 1:
        n = round(years)
        return f"{n} year" + ("s" if n != 1 else "")
    months = days / DAYS_PER_MONTH
    return f"{months:.0f} months" if abs(months - round(months)) < 0.05 else f"{days:.0f} days"


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
    from lifelines import CoxPHFitter

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
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import multivariate_logrank_test

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


# ---------------------------------------------------------------------------------- modality contribution
def _hbar_height(n: int) -> float:
    return 0.9 + 0.28 * max(n, 2)


def plot_contribution(frame: pd.DataFrame, *, title: str | None = None,
                      xlabel: str = "Drop in C-index when the modality is hidden (95% bootstrap CI)") -> Figure:
    """Per-modality contribution: horizontal bars of the C-index drop with 95% CIs (columns ``modality``,
    ``delta_cindex``, ``low``, ``high``; optional ``n_present`` is shown with the name). Bars right of 0: the
    model is worse without the modality; coloured bars have a CI excluding 0 (vermillion: helps, blue: hurts)."""
    need = {"modality", "delta_cindex", "low", "high"}
    if need - set(frame.columns):
        raise ValueError(f"contribution frame lacks columns {sorted(need - set(frame.columns))} "
                         f"(has {list(frame.columns)})")
    f = frame.sort_values("delta_cindex").reset_index(drop=True)
    names = [f"{m} (n={int(n)})" for m, n in zip(f["modality"], f["n_present"], strict=True)] \
        if "n_present" in f else [str(m) for m in f["modality"]]
    v, lo, hi = (f[c].to_numpy(dtype=float) for c in ("delta_cindex", "low", "high"))
    xerr = np.where(np.isfinite([v - lo, hi - v]), np.clip([v - lo, hi - v], 0, None), 0.0)
    with _style():
        fig = _figure(5.6, _hbar_height(len(f)))
        ax = fig.add_subplot()
        y = np.arange(len(f))
        colours = [PALETTE[2] if lo_ > 0 else (PALETTE[0] if hi_ < 0 else "#9e9e9e") for lo_, hi_ in zip(lo, hi,
                                                                                                        strict=True)]
        ax.barh(y, v, color=colours, height=0.6, alpha=0.85)
        ax.errorbar(v, y, xerr=xerr, fmt="none", ecolor="#333333", elinewidth=0.9, capsize=2.5)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names)
        lim = np.nanmax(np.abs(np.concatenate([lo, hi, v]))) if len(f) else 0.05
        lim = max(float(lim) * 1.35, 0.02)
        ax.set_xlim(min(-0.02, float(np.nanmin(lo)) * 1.35 if len(f) else 0), lim)
        for yi, vi, hi_ in zip(y, v, hi, strict=True):
            ax.text(max(vi, hi_ if np.isfinite(hi_) else vi) + lim * 0.02, yi, f"{vi:+.3f}", va="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", color="#eeeeee", lw=0.6)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        if title:
            ax.set_title(title, loc="left")
        fig.tight_layout()
    return fig


def _short(name: str, width: int = 46) -> str:
    """Long feature names keep their ``modality/`` prefix and their (most specific) end."""
    if len(name) <= width:
        return name
    head = name.split("/", 1)[0] + "/" if "/" in name[:20] else ""
    return head + "…" + name[-(width - len(head) - 1):]


def plot_top_features(series_or_frame: pd.Series | pd.DataFrame, n: int = 20, *, title: str | None = None,
                      xlabel: str | None = None) -> Figure:
    """The ``n`` largest feature importances (by absolute value), largest on top.

    A Series (feature -> importance, e.g. coefficients) or a frame from :func:`~omics_risk.evaluation.
    contribution.top_features` (``feature``, ``importance`` and optionally ``std`` for error bars, ``modality``
    for colour). Signed values (coefficients) are coloured by sign.
    """
    if isinstance(series_or_frame, pd.Series):
        f = pd.DataFrame({"feature": series_or_frame.index.astype(str), "importance": series_or_frame.to_numpy(float)})
    else:
        f = series_or_frame.copy()
        if "feature" not in f:
            f = f.reset_index().rename(columns={f.index.name or "index": "feature"})
        if "importance" not in f:
            raise ValueError(f"top-features frame needs an 'importance' column (has {list(f.columns)})")
    f = f[np.isfinite(f["importance"].to_numpy(float))]
    f = f.reindex(f["importance"].abs().sort_values(ascending=False).index).head(n).iloc[::-1].reset_index(drop=True)
    vals = f["importance"].to_numpy(float)
    signed = bool((vals < 0).any() and (vals > 0).any()) and "std" not in f
    if "modality" in f and not signed:
        mods = list(dict.fromkeys(f["modality"].astype(str)[::-1]))  # legend order = top-down order of first bar
        cmap = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(mods)}
        colours = [cmap[m] for m in f["modality"].astype(str)]
    elif signed:
        colours = [PALETTE[2] if v > 0 else PALETTE[0] for v in vals]
    else:
        colours = [PALETTE[0]] * len(f)
    with _style():
        fig = _figure(7.4, _hbar_height(len(f)))
        ax = fig.add_subplot()
        y = np.arange(len(f))
        ax.barh(y, vals, color=colours, height=0.65, alpha=0.9)
        if "std" in f:
            ax.errorbar(vals, y, xerr=np.nan_to_num(f["std"].to_numpy(float)), fmt="none", ecolor="#333333",
                        elinewidth=0.8, capsize=2)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([_short(str(s)) for s in f["feature"]], fontsize=7.5)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # small importances have long tick labels: keep them apart
        ax.spines["left"].set_visible(False)
        ax.grid(axis="x", color="#eeeeee", lw=0.6)
        if xlabel is None:
            xlabel = ("Coefficient (standardised)" if signed else
                      "Drop in C-index when permuted" + (" (mean ± SD over repeats)" if "std" in f else ""))
        ax.set_xlabel(xlabel)
        if "modality" in f and not signed:
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(color=c, label=m) for m, c in cmap.items()], loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title="Modality", title_fontsize=8,
                      alignment="left")
        elif signed:
            from matplotlib.patches import Patch

            signs = [Patch(color=PALETTE[2], label="higher risk"), Patch(color=PALETTE[0], label="lower risk")]
            ax.legend(handles=signs, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        if title:
            ax.set_title(title, loc="left")
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ model comparison
def _pick(frame: pd.DataFrame, candidates: Sequence[str], what: str) -> str:
    for c in candidates:
        if c in frame.columns:
            return c
    raise ValueError(f"model-comparison table has no {what} column (tried {list(candidates)}; "
                     f"has {list(frame.columns)})")


def plot_model_comparison(table: pd.DataFrame, *, reference: str | None = None, metric: str | None = None,
                          title: str | None = None, xlabel: str | None = None, sort: bool = True) -> Figure:
    """Forest plot of each model's C-index with its 95% CI; the reference model's C as a vertical dashed line.

    ``table``: one row per model; model names in ``model`` (else the index); the value in ``metric`` (default:
    the first of ``cindex``, ``harrell_c``, ``cindex_pooled``, ``value``) with ``<metric>_ci_low`` /
    ``<metric>_ci_high`` (or ``low``/``high``). A ``p_value`` (or ``p``) column, the paired-bootstrap test
    against the reference, is printed in the right-hand column next to C (95% CI).
    """
    t = table.copy()
    if "model" not in t:
        t = t.rename_axis("model").reset_index()
    value = metric or _pick(t, ["cindex", "harrell_c", "cindex_pooled", "value"], "C-index")
    low = _pick(t, [f"{value}_ci_low", f"{value}_low", "low", "ci_low"], "lower CI")
    high = _pick(t, [f"{value}_ci_high", f"{value}_high", "high", "ci_high"], "upper CI")
    pcol = next((c for c in ("p_value", "p", f"{value}_p") if c in t), None)
    t["model"] = t["model"].astype(str)
    if reference is not None and reference not in set(t["model"]):
        raise ValueError(f"reference model {reference!r} is not in the table (models: {list(t['model'])})")
    if sort:
        t = t.sort_values(value, ascending=True)
    t = t.reset_index(drop=True)
    v, lo, hi = (t[c].to_numpy(float) for c in (value, low, high))
    n = len(t)
    is_ref = (t["model"] == reference).to_numpy() if reference is not None else np.zeros(n, bool)
    names = [f"{m}  (reference)" if r else m for m, r in zip(t["model"], is_ref, strict=True)]
    # Layout in inches: [model names][forest axes][C (95% CI)][p]; names get ~0.075 in per character.
    left, ax_w, right = 0.2 + 0.068 * max(len(x) for x in names), 3.4, 2.75
    bottom, row, top = 0.55, 0.32, 0.3 + (0.22 if title else 0.0)
    width, height = left + ax_w + right, bottom + row * max(n, 2) + top
    with _style():
        fig = _figure(width, height)
        ax = fig.add_axes((left / width, bottom / height, ax_w / width, row * max(n, 2) / height))
        y = np.arange(n)
        xerr = np.where(np.isfinite([v - lo, hi - v]), np.clip([v - lo, hi - v], 0, None), 0.0)
        for i in range(n):
            c = PALETTE[2] if is_ref[i] else PALETTE[0]
            ax.errorbar(v[i], y[i], xerr=xerr[:, i:i + 1], fmt="s" if is_ref[i] else "o", color=c, ms=5.5,
                        elinewidth=1.2, capsize=2.5)
        if reference is not None:
            ref_c = float(v[is_ref][0])
            ax.axvline(ref_c, color=PALETTE[2], ls="--", lw=0.9, zorder=0)
        ax.axvline(0.5, color=_GREY, ls=":", lw=0.9, zorder=0)
        ax.set_yticks(y)
        ax.set_yticklabels(names)
        for lbl, r in zip(ax.get_yticklabels(), is_ref, strict=True):
            if r:
                lbl.set_fontweight("bold")
        finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)], v[np.isfinite(v)], [0.5]])
        span = finite.max() - finite.min()
        ax.set_xlim(finite.min() - 0.06 * span, finite.max() + 0.06 * span)
        ax.set_ylim(-0.6, n - 0.4)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.grid(axis="x", color="#eeeeee", lw=0.6)
        ax.set_xlabel(xlabel or ("Harrell's C-index (95% CI)" if "c" in value.lower() else f"{value} (95% CI)"))
        # Right-hand text columns in axes-fraction x, data y: estimate (CI) and the paired test.
        tr = ax.get_yaxis_transform()
        x_c, x_p = 1 + 0.15 / ax_w, 1 + 1.85 / ax_w
        ax.text(x_c, n - 0.4, "C (95% CI)", transform=tr, fontweight="bold", fontsize=8, va="bottom")
        if pcol is not None:
            ax.text(x_p, n - 0.4, "p vs ref.", transform=tr, fontweight="bold", fontsize=8, va="bottom")
        for i in range(n):
            ax.text(x_c, y[i], f"{v[i]:.3f} ({lo[i]:.3f}–{hi[i]:.3f})", transform=tr, va="center", fontsize=8)
            if pcol is not None:
                pv = float(t[pcol].iloc[i]) if pd.notna(t[pcol].iloc[i]) else float("nan")
                txt = "–" if is_ref[i] or not np.isfinite(pv) else _p_text(pv).replace("p ", "").replace("= ", "")
                ax.text(x_p, y[i], txt, transform=tr, va="center", fontsize=8)
        if title:
            fig.text(0.1 / width, 1 - 0.08 / height, title, ha="left", va="top", fontsize=10, fontweight="bold")
    return fig

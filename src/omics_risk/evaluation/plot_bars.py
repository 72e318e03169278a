"""Bar and forest figures: the modality contribution, the top features and the model comparison (C-index with CIs
against a reference), in the house style of :mod:`~omics_risk.evaluation.plot_style`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from omics_risk.evaluation.plot_style import _GREY, PALETTE, _figure, _p_text, _style

__all__ = ["plot_contribution", "plot_model_comparison", "plot_top_features"]


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
            ax.legend(handles=[Patch(color=c, label=m) for m, c in cmap.items()], loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title="Modality", title_fontsize=8,
                      alignment="left")
        elif signed:
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

"""Metric tables of reports and the console: ``{model: {metric: Estimate}}`` as a long table with the metric
descriptions of :mod:`~omics_risk.evaluation.metric_defs`, a wide text table with CIs, plain text, JSON and the flat
``<prefix><model>/<metric>`` mapping logged to MLflow (one name per metric)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.metric_defs import METRICS, describe_metric

__all__ = ["METRIC_DESCRIPTIONS", "describe_metric", "estimates_json", "flat_metrics", "format_metrics",
           "metrics_long", "metrics_wide"]

#: What each (non-templated) metric measures and which direction is better, read from ``metric_defs.METRICS``
#: (kept for callers of the old dict; :func:`describe_metric` also reads templated keys such as ``auc_365d``).
METRIC_DESCRIPTIONS: dict[str, str] = {m.name: m.description for m in METRICS if "{" not in m.name}


def metrics_long(metrics: Mapping[str, Mapping[str, Estimate]]) -> pd.DataFrame:
    """``{model: {metric: Estimate}}`` -> one row per model and metric: model, metric, estimate, ci_low, ci_high,
    n_boot, description."""
    rows = [{"model": model, "metric": name, "estimate": est.value, "ci_low": est.low, "ci_high": est.high,
             "n_boot": est.n_boot, "description": describe_metric(name)}
            for model, ests in metrics.items() for name, est in ests.items()]
    return pd.DataFrame(rows, columns=["model", "metric", "estimate", "ci_low", "ci_high", "n_boot", "description"])


def _text(value: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(value):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def metrics_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """One row per model, one ``estimate (95% CI)`` text column per metric (metric order kept)."""
    if long.empty:
        return pd.DataFrame(columns=["model"])
    cells = long.assign(text=[_text(v, lo, hi, digits) for v, lo, hi in
                              zip(long["estimate"], long["ci_low"], long["ci_high"], strict=True)])
    wide = cells.pivot(index="model", columns="metric", values="text")
    wide = wide.reindex(index=list(dict.fromkeys(long["model"])), columns=list(dict.fromkeys(long["metric"])))
    return wide.fillna("–").reset_index()


def format_metrics(long: pd.DataFrame, *, title: str | None = None, digits: int = 3) -> str:
    """A plain-text metric table for the console: one row per model and metric with its 95% CI."""
    if long.empty:
        return (title or "") + "\n(no metrics)"
    show = long.assign(**{"estimate (95% CI)": [_text(v, lo, hi, digits) for v, lo, hi in
                                                zip(long["estimate"], long["ci_low"], long["ci_high"], strict=True)]})
    cols = (["model"] if long["model"].nunique() > 1 else []) + ["metric", "estimate (95% CI)", "n_boot"]
    text = show[cols].to_string(index=False)
    return f"{title}\n{text}" if title else text


def estimates_json(metrics: Mapping[str, Estimate]) -> dict[str, dict[str, float]]:
    """``{metric: Estimate}`` as JSON-able ``{metric: {value, ci_low, ci_high, n_boot}}`` (NaN as None)."""
    def num(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {k: {"value": num(e.value), "ci_low": num(e.low), "ci_high": num(e.high), "n_boot": int(e.n_boot)}
            for k, e in metrics.items()}


def flat_metrics(metrics: Mapping[str, Mapping[str, Estimate]], prefix: str) -> dict[str, float]:
    """``{model: {metric: Estimate}}`` as ``{<prefix><model>/<metric>: value}`` with ``_ci_low``/``_ci_high``."""
    out: dict[str, float] = {}
    for model, ests in metrics.items():
        for name, est in ests.items():
            key = f"{prefix}{model}/{name}" if model else f"{prefix}{name}"
            out.update({key: est.value, f"{key}_ci_low": est.low, f"{key}_ci_high": est.high})
    return out


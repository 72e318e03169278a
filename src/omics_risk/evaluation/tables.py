"""Metric tables of reports and the console: ``{model: {metric: Estimate}}`` as a long table with the metric
descriptions of :mod:`~omics_risk.evaluation.metric_defs`, a wide text table with CIs, plain text, JSON, the flat
``<prefix><model>/<metric>`` mapping logged to MLflow (one name per metric), and the headline comparison (C-index,
difference from the reference, p) that reports, the console and MLflow show.

p-values are shown as values (``0.003``, ``<0.001``), never with a CI: a bootstrap interval of a p-value means nothing
(:func:`is_p_value`, :func:`format_p`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.metric_defs import METRICS, describe_metric

__all__ = ["METRIC_DESCRIPTIONS", "comparison_metrics", "delta_name", "describe_metric", "estimates_json",
           "flat_metrics", "format_metrics", "format_p", "headline_table", "is_p_value", "metrics_long",
           "metrics_wide", "p_name"]

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


def is_p_value(name: str) -> bool:
    """A p-value metric or column (``logrank_p``, ``d_calibration_p``, ``p_value``, ``p_vs_clinical_cox``, ``p``)."""
    n = str(name).lower()
    return n in {"p", "p_value", "pvalue", "p-value"} or n.endswith(("_p", "_p_value")) or n.startswith("p_vs_")


def format_p(p: float) -> str:
    """A p-value as text: ``<0.001`` below 0.001, else three decimals; ``–`` when missing."""
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def delta_name(reference: str) -> str:
    """MLflow name of the paired C-index difference from ``reference`` (+ ``_ci_low``/``_ci_high``)."""
    return f"delta_c_vs_{reference}"


def p_name(reference: str) -> str:
    """MLflow name of the paired bootstrap p of that difference (never with a CI)."""
    return f"p_vs_{reference}"


def _text(value: float, low: float, high: float, digits: int = 3, *, signed: bool = False) -> str:
    if not np.isfinite(value):
        return "–"
    sign = "+" if signed else ""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:{sign}.{digits}f}"
    return f"{value:{sign}.{digits}f} ({low:{sign}.{digits}f} to {high:{sign}.{digits}f})" if signed else \
        f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _cell_text(metric: str, value: float, low: float, high: float, digits: int) -> str:
    return format_p(value) if is_p_value(metric) else _text(value, low, high, digits)


def metrics_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """One row per model, one ``estimate (95% CI)`` text column per metric (metric order kept)."""
    if long.empty:
        return pd.DataFrame(columns=["model"])
    cells = long.assign(text=[_cell_text(m, v, lo, hi, digits) for m, v, lo, hi in
                              zip(long["metric"], long["estimate"], long["ci_low"], long["ci_high"], strict=True)])
    wide = cells.pivot(index="model", columns="metric", values="text")
    wide = wide.reindex(index=list(dict.fromkeys(long["model"])), columns=list(dict.fromkeys(long["metric"])))
    return wide.fillna("–").reset_index()


def format_metrics(long: pd.DataFrame, *, title: str | None = None, digits: int = 3) -> str:
    """A plain-text metric table for the console: one row per model and metric with its 95% CI."""
    if long.empty:
        return (title or "") + "\n(no metrics)"
    show = long.assign(**{"estimate (95% CI)": [_cell_text(m, v, lo, hi, digits) for m, v, lo, hi in
                                                zip(long["metric"], long["estimate"], long["ci_low"], long["ci_high"],
                                                    strict=True)]})
    cols = (["model"] if long["model"].nunique() > 1 else []) + ["metric", "estimate (95% CI)", "n_boot"]
    text = show[cols].to_string(index=False)
    return f"{title}\n{text}" if title else text


def estimates_json(metrics: Mapping[str, Estimate]) -> dict[str, dict[str, float]]:
    """``{metric: Estimate}`` as JSON-able ``{metric: {value, ci_low, ci_high, n_boot}}`` (NaN as None)."""
    def num(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {k: {"value": num(e.value), "ci_low": num(e.low), "ci_high": num(e.high), "n_boot": int(e.n_boot)}
            for k, e in metrics.items()}


def flat_metrics(metrics: Mapping[str, Mapping[str, Estimate]], prefix: str = "") -> dict[str, float]:
    """``{model: {metric: Estimate}}`` as ``{<prefix><model>/<metric>: value}`` with ``_ci_low``/``_ci_high``
    (``{<prefix><metric>: ...}`` for the model ``""``); p-values without a CI."""
    out: dict[str, float] = {}
    for model, ests in metrics.items():
        for name, est in ests.items():
            key = f"{prefix}{model}/{name}" if model else f"{prefix}{name}"
            out[key] = est.value
            if not is_p_value(name):
                out.update({f"{key}_ci_low": est.low, f"{key}_ci_high": est.high})
    return out


def _other_p(row: Mapping[str, Any]) -> tuple[str, float] | None:
    """The comparison's p that is not the headline one, with its label: the corrected resampled t p beside a
    bootstrap headline, or the bootstrap p beside a corrected-t headline; None when there is none."""
    if str(row.get("p_method", "bootstrap")) == "corrected_t":
        p = row.get("p_bootstrap", np.nan)
        return ("bootstrap", float(p)) if p is not None and np.isfinite(p) else None
    p = row.get("p_corrected_t", np.nan)
    return ("corrected_t", float(p)) if p is not None and np.isfinite(p) else None


def comparison_metrics(row: Mapping[str, float], reference: str, prefix: str = "") -> dict[str, float]:
    """One model's row of a comparison (``harrell_c`` + CI, ``delta_c`` + CI, ``p_value``) under the MLflow names
    that training and ``evaluate.py mode=compare`` share: ``<prefix>harrell_c`` (+ ``_ci_low``/``_ci_high``),
    ``<prefix>delta_c_vs_<reference>`` (+ CI), ``<prefix>p_vs_<reference>`` (the headline p,
    ``evaluation.headline_p``); with folds also ``<prefix>p_vs_<reference>_corrected_t`` (or ``_bootstrap`` when
    the corrected t is the headline) and ``<prefix>delta_c_vs_<reference>_corrected_t`` (+ CI: the mean per-fold
    difference with its corrected t interval); the reference's own row has no difference. ``prefix`` is
    ``<model>/`` on runs that hold several models (job and comparison runs)."""
    out = {f"{prefix}harrell_c": row["harrell_c"], f"{prefix}harrell_c_ci_low": row["harrell_c_ci_low"],
           f"{prefix}harrell_c_ci_high": row["harrell_c_ci_high"]}
    if np.isfinite(row.get("delta_c", np.nan)):
        d = delta_name(reference)
        out.update({f"{prefix}{d}": row["delta_c"], f"{prefix}{d}_ci_low": row["delta_c_ci_low"],
                    f"{prefix}{d}_ci_high": row["delta_c_ci_high"]})
        if np.isfinite(row.get("p_value", np.nan)):
            out[f"{prefix}{p_name(reference)}"] = row["p_value"]
        other = _other_p(row)
        if other is not None:
            out[f"{prefix}{p_name(reference)}_{other[0]}"] = other[1]
        if np.isfinite(row.get("delta_c_fold_mean", np.nan)):
            out.update({f"{prefix}{d}_corrected_t{s}": row.get(f"delta_c_fold_mean{s}", np.nan)
                        for s in ("", "_ci_low", "_ci_high")})
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


_P_LABEL = {"bootstrap": "p (bootstrap)", "corrected_t": "p (corrected t)"}


def headline_table(comparison: pd.DataFrame, reference: str | None, *, label: str = "model",
                   digits: int = 3) -> pd.DataFrame:
    """The comparison as people read it, one row per model: ``model``, ``C-index (95% CI)``,
    ``ΔC vs <reference> (95% CI)`` (``reference`` in the reference's row) and ``p`` (the headline p, never with a
    CI), then the comparison's other p where there is one (``p (corrected t)`` beside a bootstrap headline, ``p
    (bootstrap)`` beside a corrected-t one); narrow enough for a 120-column terminal and MLflow's file viewer."""
    ref = reference or "reference"
    records = comparison.to_dict(orient="records")
    others = {lab for r in records if (o := _other_p(r)) is not None for lab in [_P_LABEL[o[0]]]}
    rows = []
    for r in records:
        c = _text(r.get("harrell_c", np.nan), r.get("harrell_c_ci_low", np.nan), r.get("harrell_c_ci_high", np.nan),
                  digits)
        is_ref = r.get("model") == reference and not np.isfinite(r.get("delta_c", np.nan))
        d = "reference" if is_ref else _text(r.get("delta_c", np.nan), r.get("delta_c_ci_low", np.nan),
                                             r.get("delta_c_ci_high", np.nan), digits, signed=True)
        row = {"model": r.get(label, r.get("model")), "C-index (95% CI)": c, f"ΔC vs {ref} (95% CI)": d,
               "p": "" if is_ref else format_p(r.get("p_value", np.nan))}
        other = _other_p(r)
        for lab in sorted(others):
            row[lab] = "" if is_ref else format_p(other[1]) if other and _P_LABEL[other[0]] == lab else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "C-index (95% CI)", f"ΔC vs {ref} (95% CI)", "p", *sorted(others)])


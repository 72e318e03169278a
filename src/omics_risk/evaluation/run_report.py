"""The evaluation report of a training run (pooled out-of-fold risks of every model) and the model card of a
registered model.

:func:`build_run_report` is what ``train()`` calls at the end of a cross-validation run: every survival metric with a
bootstrap CI for every model (:func:`~omics_risk.evaluation.metrics.evaluate_survival`), the paired bootstrap test
of each model's C-index against the reference on the same patients, Kaplan-Meier curves by risk group of the fused
model and of the reference, time-dependent AUC, the model-comparison forest plot, calibration when survival curves
are given, and one self-contained ``report.html``. :func:`register_model_card` writes the Markdown model card of a
registered model version, logs it to the version's run and sets the version's description.

The helpers here (:func:`metrics_long`, :func:`metrics_wide`, :func:`format_metrics`, :func:`usable_horizons`,
:func:`td_auc_curve`, :func:`fixed_risk_groups`, :func:`within_fold_ranks`) are shared with
:mod:`omics_risk.workflows.external` and :mod:`omics_risk.evaluation.compare`.

Out-of-fold risks of different folds come from different fitted models, so their scales differ (a Cox log hazard
is only defined up to a constant per fit). As in ``train()``, risks are made comparable by their percentile rank
within their own test fold (``folds=``) before pooling. Rank-based metrics (Harrell's and Uno's C, td-AUC, log-rank,
group HRs) are valid on pooled ranks; the calibration slope is not (ranks are not log hazards) and is left out then.
Risk groups of pooled out-of-fold risks are quantiles within each test fold (the fold's own cut-offs), the closest
analogue of "cut-offs fixed on training data" that cross-validation offers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import (
    Estimate,
    HorizonError,
    calibration_table,
    check_horizons,
    evaluate_survival,
    paired_bootstrap_difference,
    time_dependent_auc,
)
from omics_risk.evaluation.plots import (
    DAYS_PER_MONTH,
    PALETTE,
    horizon_label,
    plot_calibration,
    plot_km_by_group,
    plot_model_comparison,
    plot_td_auc,
    save_figure,
)
from omics_risk.evaluation.riskgroups import RiskGroups

log = logging.getLogger(__name__)

__all__ = [
    "CHEAP_EXCLUDE",
    "DEFAULT_INTENDED_USE",
    "DEFAULT_LIMITATIONS",
    "METRIC_DESCRIPTIONS",
    "RunReport",
    "build_run_report",
    "card_metrics",
    "describe_metric",
    "estimates_json",
    "fixed_risk_groups",
    "format_metrics",
    "log_outputs",
    "metrics_long",
    "metrics_wide",
    "register_model_card",
    "td_auc_curve",
    "usable_horizons",
    "within_fold_ranks",
]

#: ``evaluate_survival(exclude=...)`` of the quick setting: the Cox-based bootstraps (~30 ms per resample each).
CHEAP_EXCLUDE: tuple[str, ...] = ("calibration_slope", "hr_*")

#: What each metric measures and which direction is better (shown next to the numbers in reports).
METRIC_DESCRIPTIONS: dict[str, str] = {
    "harrell_c": "Harrell's C-index: share of comparable pairs ranked correctly (0.5 random, higher better)",
    "uno_c": "Uno's C-index, IPCW, truncated at tau (0.5 random, higher better)",
    "mean_auc": "Time-dependent AUC averaged over the horizons (higher better)",
    "ibs": "Integrated Brier score over the time grid (lower better; 0.25 = constant 50%)",
    "calibration_slope": "Cox coefficient of the outcome on the score (1 ideal; <1 too extreme, >1 too modest)",
    "d_calibration_p": "D-calibration goodness-of-fit p (small = survival curves miscalibrated)",
    "logrank_p": "Log-rank test across risk groups (small = groups separate)",
    "auc": "ROC AUC of the response probability (0.5 random, higher better)",
    "brier": "Brier score of the response probability (lower better)",
    "balanced_accuracy": "Balanced accuracy at probability 0.5 (0.5 random, higher better)",
}
_PREFIX_DESCRIPTIONS = (
    ("auc_", "Cumulative/dynamic AUC at {h} (higher better)"),
    ("brier_", "Brier score at {h} (lower better)"),
    ("calibration_in_the_large_", "Mean predicted minus observed (KM) event probability at {h} (0 ideal)"),
)

DEFAULT_INTENDED_USE = (
    "Research use: ranking patients of a cohort like the training cohort by their risk of the endpoint, to study "
    "multimodal prognostic signal, to enrich or stratify research studies, and to compare against clinical models. "
    "Scores are relative (higher = riskier); survival probabilities are only as calibrated as the validation shows."
)
DEFAULT_LIMITATIONS = [
    "Internal validation by cross-validation only unless an external validation is listed: performance on other "
    "sites, assays or populations is unknown.",
    "Patients lacking a modality are scored from the modalities they have (presence mask); performance for "
    "patients with few modalities can be lower than the pooled metrics.",
    "Calibration was assessed only at the listed horizons and needs checking (and possibly recalibration) before "
    "absolute probabilities are used in a new cohort.",
    "Feature extraction settings, reference genome and assay platform must match the training cohort's.",
]


# ------------------------------------------------------------------------------------------------ tables
def describe_metric(name: str) -> str:
    """A one-line description of a metric key of ``evaluate_survival`` / ``evaluate_response`` (prefixes such as
    ``response_`` or ``delta_`` are understood)."""
    base = name.removeprefix("response_")
    if base in METRIC_DESCRIPTIONS:
        return METRIC_DESCRIPTIONS[base]
    for prefix, text in _PREFIX_DESCRIPTIONS:
        m = re.fullmatch(rf"{prefix}(\d+(?:\.\d+)?)d", base)
        if m:
            return text.format(h=horizon_label(float(m.group(1))))
    m = re.fullmatch(r"hr_(\w+)_vs_(\w+)", base)
    if m:
        return f"Hazard ratio of the {m.group(1)}-risk group vs the {m.group(2)}-risk group (Cox, lifelines)"
    return ""


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


# ------------------------------------------------------------------------------------------------ horizons, risks
def usable_horizons(horizons: Sequence[float] | None, time: np.ndarray, event: np.ndarray, *,
                    train_time: np.ndarray | None = None, strict: bool = False) -> tuple[np.ndarray, list[str]]:
    """The horizons (days) this follow-up supports, sorted, and a note per horizon left out.

    ``strict``: raise :class:`HorizonError` for the first horizon that cannot be evaluated (horizons the user asked
    for); otherwise leave it out with a note (default horizons carried by a model or a config).
    """
    if horizons is None or np.size(horizons) == 0:
        return np.array([], dtype=float), []
    kept, notes = [], []
    for h in np.atleast_1d(np.asarray(horizons, dtype=float)):
        try:
            check_horizons([h], time, event)
            if train_time is not None and h >= np.max(train_time):
                raise HorizonError(f"horizon {h:g} days is beyond the training follow-up (last time "
                                   f"{np.max(train_time):g} days), where the censoring weights are not estimable")
        except HorizonError as err:
            if strict:
                raise
            notes.append(f"horizon {h:g} days left out: {err}")
            continue
        kept.append(float(h))
    return np.unique(np.asarray(kept, dtype=float)), notes


def within_fold_ranks(risk: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Percentile rank of each out-of-fold risk within its own test fold (what ``train()`` pools)."""
    risk, folds = np.asarray(risk, dtype=float), np.asarray(folds)
    if risk.shape != folds.shape:
        raise ValueError(f"risk {risk.shape} and folds {folds.shape} differ in shape")
    out = np.empty_like(risk)
    for f in np.unique(folds):
        sel = folds == f
        out[sel] = pd.Series(risk[sel]).rank(pct=True).to_numpy()
    return out


def fixed_risk_groups(scheme: str | Sequence[float], cutoffs: Sequence[float]) -> RiskGroups:
    """A :class:`RiskGroups` with given cut-offs (e.g. the training cut-offs a registered model stores)."""
    groups = RiskGroups(scheme)
    cut = np.asarray(list(cutoffs), dtype=float)
    if cut.shape != groups.quantiles.shape or not np.isfinite(cut).all():
        raise ValueError(f"{len(groups.quantiles)} finite cut-off(s) are needed for scheme {scheme!r}, "
                         f"got {list(cutoffs)}")
    groups.cutoffs_ = cut
    return groups


def td_auc_curve(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float], *,
                 train_time: np.ndarray, train_event: np.ndarray, n_boot: int = 200, seed: int = 0,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Cumulative/dynamic AUC at each horizon with percentile bootstrap CIs (one sksurv call per resample for all
    horizons). Horizons that a resample cannot evaluate are NaN in it and dropped from that horizon's CI."""
    h = np.asarray(horizons, dtype=float)
    auc, _ = time_dependent_auc(time, event, risk, h, train_time=train_time, train_event=train_event)
    time, event, risk = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(risk, float)
    rng = np.random.default_rng(seed)
    boots = np.full((n_boot, len(h)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(n_boot):
            idx = rng.integers(0, len(time), len(time))
            for j, x in enumerate(h):
                try:
                    boots[b, j] = time_dependent_auc(time[idx], event[idx], risk[idx], [x], train_time=train_time,
                                                     train_event=train_event)[0][0]
                except (ValueError, ZeroDivisionError):
                    continue
    low = [np.quantile(c[np.isfinite(c)], alpha / 2) if np.isfinite(c).any() else np.nan for c in boots.T]
    high = [np.quantile(c[np.isfinite(c)], 1 - alpha / 2) if np.isfinite(c).any() else np.nan for c in boots.T]
    return pd.DataFrame({"horizon_days": h, "auc": auc, "low": low, "high": high,
                         "n_boot": np.isfinite(boots).sum(axis=0)})


def surv_at(surv: np.ndarray, times: np.ndarray, horizon: float) -> np.ndarray:
    """Survival probabilities at ``horizon`` from curves on ``times`` (linear interpolation between columns)."""
    times = np.asarray(times, dtype=float)
    if horizon < times[0] or horizon > times[-1]:
        raise HorizonError(f"horizon {horizon:g} days is outside the survival-curve times "
                           f"{times[0]:g}-{times[-1]:g} days")
    j = int(np.searchsorted(times, horizon))
    if j < len(times) and np.isclose(times[j], horizon):
        return np.asarray(surv[:, j], dtype=float)
    w = (horizon - times[j - 1]) / (times[j] - times[j - 1])
    return (1 - w) * surv[:, j - 1] + w * surv[:, j]


# ------------------------------------------------------------------------------------------------ MLflow
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "model"


def log_outputs(paths: Mapping[str, Path], *, run_id: str | None = None, artifact_path: str | None = None,
                metrics: Mapping[str, float] | None = None) -> None:
    """Log files as artifacts (PNGs under ``<artifact_path>/plots``) and metrics, through the identifier-guarded
    helpers, to ``run_id`` or the active run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from omics_risk.tracking import mlflow_utils as mu

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no active MLflow run to log the evaluation to: pass run_id=")
        run_id = active.info.run_id
    client = MlflowClient()
    for path in paths.values():
        path = Path(path)
        if not path.is_file():
            continue
        sub = "/".join(p for p in (artifact_path, "plots" if path.suffix == ".png" else None) if p) or None
        client.log_artifact(run_id, str(path), sub)
    if metrics:
        finite = {k: v for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for start in range(0, len(finite), 500):  # MLflow batches are capped at 1000 entries
            chunk = dict(list(finite.items())[start:start + 500])
            mu.safe_log_metrics(chunk, run_id=run_id)


def _flat_metrics(metrics: Mapping[str, Mapping[str, Estimate]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for model, ests in metrics.items():
        for name, est in ests.items():
            key = f"{prefix}{model}/{name}" if model else f"{prefix}{name}"
            out.update({key: est.value, f"{key}_ci_low": est.low, f"{key}_ci_high": est.high})
    return out


# ------------------------------------------------------------------------------------------------ run report
@dataclass
class RunReport:
    """What :func:`build_run_report` wrote."""

    output_dir: Path
    metrics: dict[str, dict[str, Estimate]]  # model -> metric -> Estimate
    table: pd.DataFrame  # long metric table (metrics_long)
    comparison: pd.DataFrame  # per model: C-index with CI, paired difference vs the reference, p
    paths: dict[str, Path] = field(default_factory=dict)  # name -> file (report, CSVs, PNGs)
    horizons: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.paths["report"]


def _comparison(time: np.ndarray, event: np.ndarray, scores: Mapping[str, np.ndarray],
                metrics: Mapping[str, Mapping[str, Estimate]], reference: str | None, n_boot: int, seed: int,
                alpha: float) -> pd.DataFrame:
    rows = []
    for name, risk in scores.items():
        c = metrics[name]["harrell_c"]
        row = {"model": name, "harrell_c": c.value, "harrell_c_ci_low": c.low, "harrell_c_ci_high": c.high,
               "delta_c": np.nan, "delta_c_ci_low": np.nan, "delta_c_ci_high": np.nan, "p_value": np.nan}
        if reference is not None and name != reference:
            diff, p = paired_bootstrap_difference(time, event, risk, scores[reference], n_boot=n_boot, seed=seed,
                                                  alpha=alpha)
            row.update(delta_c=diff.value, delta_c_ci_low=diff.low, delta_c_ci_high=diff.high, p_value=p)
        rows.append(row)
    return pd.DataFrame(rows)


def build_run_report(risks: Mapping[str, np.ndarray], data: MultimodalData, *, output_dir: str | Path,
                     horizons: Sequence[float] | None = None, folds: np.ndarray | None = None,
                     survival: Mapping[str, np.ndarray] | None = None, times: np.ndarray | None = None,
                     fused: str | None = None, reference: str | None = "clinical_cox", n_boot: int = 200,
                     seed: int = 0, alpha: float = 0.05, risk_groups: str | Sequence[float] = "median",
                     slow_metrics: bool = False, mlflow_run: str | bool | None = None,
                     artifact_path: str = "evaluation", title: str | None = None,
                     meta: Mapping[str, Any] | None = None, progress: bool = False) -> RunReport:
    """Metrics with CIs, plots and ``report.html`` of one training run; logged to MLflow when asked.

    Args:
        risks: ``{model: risk (n,)}``, the pooled out-of-fold risks of one CV repeat (higher = riskier), in the
            patient order of ``data``. The first model is the fused model unless ``fused`` names another.
        data: the training patients (``time``/``event`` in days).
        output_dir: where ``report.html``, ``metrics.csv``, ``comparison.csv``, ``risk_groups_<model>.csv`` and
            ``plots/*.png`` go (created).
        horizons: evaluation horizons in days (td-AUC, calibration); those the follow-up cannot support are left
            out with a note in the report.
        folds: the test-fold id of each patient; risks are then ranked within their fold before pooling (see the
            module docstring). Without it the risks are used as they are (one model fitted once, e.g. a hold-out).
        survival: ``{model: (n, len(times))}`` out-of-fold survival probabilities on ``times`` (days): adds the
            integrated Brier score, Brier scores and calibration at the horizons, and the calibration plot of
            the fused model.
        reference: model of the paired C-index tests (skipped when not in ``risks``).
        n_boot: bootstrap resamples for every CI (patients resampled; 200 is enough for a run summary).
        risk_groups: ``median``, ``tertiles`` or quantiles (:class:`RiskGroups`).
        slow_metrics: also bootstrap the calibration slope and group hazard ratios (lifelines Cox fits, ~30 ms per
            resample each); the slope is never computed on within-fold ranks.
        mlflow_run: a run id, or True for the active run: log the files under ``artifact_path`` and the metrics as
            ``eval/<model>/<metric>`` (+ ``_ci_low``/``_ci_high``).

    Returns:
        :class:`RunReport` (paths, metrics, tables).
    """
    from omics_risk.evaluation.report import write_html_report

    if data.time is None or data.event is None:
        raise ValueError(f"build_run_report needs a survival endpoint; '{data.endpoint}' has no time/event")
    if not risks:
        raise ValueError("build_run_report needs at least one model's risks")
    out = Path(output_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    time, event = np.asarray(data.time, float), np.asarray(data.event).astype(bool)
    n = len(time)
    scores: dict[str, np.ndarray] = {}
    for name, r in risks.items():
        r = np.asarray(r, dtype=float)
        if r.shape != (n,) or not np.isfinite(r).all():
            raise ValueError(f"risks['{name}'] must hold one finite score per patient ({n}), got shape {r.shape} "
                             f"with {int((~np.isfinite(r)).sum()) if r.shape == (n,) else '?'} non-finite")
        scores[name] = within_fold_ranks(r, folds) if folds is not None else r
    fused = fused or next(iter(scores))
    if fused not in scores:
        raise ValueError(f"fused model '{fused}' is not in risks (has: {', '.join(scores)})")
    reference = reference if reference in scores else None
    h, notes = usable_horizons(horizons, time, event)
    exclude = [] if slow_metrics else list(CHEAP_EXCLUDE)
    if folds is not None:
        exclude.append("calibration_slope")
        notes.append("Risks are percentile ranks within their test fold (pooled out-of-fold predictions of "
                     "different fits); the calibration slope needs log hazards and is not reported.")
    if not slow_metrics:
        notes.append("Quick setting: calibration slope and group hazard ratios are not bootstrapped "
                     "(hazard ratios with Wald CIs are in the Kaplan-Meier legends and risk_groups_*.csv).")
    grid = None
    if survival is not None:
        if times is None:
            raise ValueError("survival needs the times (days) its columns are evaluated at")
        times = np.asarray(times, dtype=float)
        grid = (times >= time.min()) & (times < time.max())
        if grid.sum() < len(times):
            notes.append(f"{len(times) - int(grid.sum())} survival-curve time(s) outside the follow-up "
                         f"({time.min():g}-{time.max():g} days) are not used for the Brier scores.")

    metrics: dict[str, dict[str, Estimate]] = {}
    groups: dict[str, RiskGroups] = {}
    for name, risk in scores.items():
        groups[name] = RiskGroups(risk_groups).fit(risk)
        surv_kw: dict[str, Any] = {}
        if survival is not None and name in survival and grid is not None and grid.sum() >= 2:
            s = np.asarray(survival[name], dtype=float)
            if s.shape != (n, len(times)):
                raise ValueError(f"survival['{name}'] must have shape {(n, len(times))}, got {s.shape}")
            surv_kw = {"surv": s[:, grid], "times": times[grid]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            metrics[name] = evaluate_survival(time, event, risk, horizons=h if len(h) else None, train_time=time,
                                              train_event=event, groups=groups[name], n_boot=n_boot, seed=seed,
                                              alpha=alpha, exclude=exclude, progress=progress, **surv_kw)
    long = metrics_long(metrics)
    comparison = _comparison(time, event, scores, metrics, reference, n_boot, seed, alpha)

    paths: dict[str, Path] = {}
    figures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    paths["metrics"] = out / "metrics.csv"
    long.to_csv(paths["metrics"], index=False)
    paths["comparison"] = out / "comparison.csv"
    comparison.to_csv(paths["comparison"], index=False)
    what = "within-fold percentile ranks of out-of-fold risks" if folds is not None else "risk scores"
    for name in dict.fromkeys([fused, reference]):
        if name is None:
            continue
        summary = groups[name].summary(time, event, scores[name])
        paths[f"risk_groups_{_slug(name)}"] = out / f"risk_groups_{_slug(name)}.csv"
        summary.to_csv(paths[f"risk_groups_{_slug(name)}"], index=False)
        fig = plot_km_by_group(time, event, groups[name].assign(scores[name]), horizon_days=h if len(h) else None,
                               endpoint=data.endpoint, title=f"{name}: {data.endpoint.upper()} by risk group")
        key = f"km_{_slug(name)}"
        figures[key] = save_figure(fig, plots / f"{key}.png")
        captions[key] = (f"Kaplan-Meier curves of {name}'s risk groups ({_scheme_text(risk_groups)} of the "
                         f"{what}) with numbers at risk, log-rank p and hazard ratios vs the low-risk group.")
    if len(h):
        fig = _td_auc_figure(metrics, h, fused, reference)
        figures["td_auc"] = save_figure(fig, plots / "td_auc.png")
        captions["td_auc"] = "Cumulative/dynamic AUC at each horizon with 95% bootstrap CIs (IPCW, scikit-survival)."
    if len(scores) > 1:
        fig = plot_model_comparison(comparison, reference=reference, metric="harrell_c",
                                    title="Pooled out-of-fold C-index" if folds is not None else "C-index")
        figures["model_comparison"] = save_figure(fig, plots / "model_comparison.png")
        captions["model_comparison"] = ("Harrell's C with 95% bootstrap CIs; p from the paired bootstrap of the "
                                        f"difference to {reference} on the same resampled patients."
                                        if reference else "Harrell's C with 95% bootstrap CIs.")
    if survival is not None and fused in survival and len(h):
        s = np.asarray(survival[fused], dtype=float)
        tables = {float(x): calibration_table(time, event, surv_at(s, times, x), x) for x in h
                  if times[0] <= x <= times[-1]}
        if tables:
            for x, tab in tables.items():
                tab.to_csv(out / f"calibration_{int(x)}d.csv", index=False)
                paths[f"calibration_{int(x)}d"] = out / f"calibration_{int(x)}d.csv"
            figures["calibration"] = save_figure(plot_calibration(tables, title=f"{fused}: calibration"),
                                                 plots / "calibration.png")
            captions["calibration"] = ("Observed (Kaplan-Meier, 95% CI) vs mean predicted event probability in "
                                       "quintiles of predicted risk; the dotted diagonal is perfect calibration.")
    paths.update(figures)
    sections = {
        "How to read this report": (
            "Every number is computed on held-out predictions: each patient's risk comes from the model fitted "
            "without that patient (cross-validation), pooled over folds as " + what + ". Risk scores follow one "
            "convention: higher = riskier. Intervals are 95% percentile bootstrap CIs over patients "
            f"({n_boot} resamples); IPCW metrics (Uno's C, td-AUC, Brier) weight by the censoring distribution of "
            "this cohort."),
        "Notes": "\n\n".join(notes) if notes else "None.",
    }
    run_meta = {"patients": n, "events": int(event.sum()), "endpoint": data.endpoint,
                "horizons (days)": ", ".join(f"{x:g}" for x in h) or "none", "reference": reference or "none",
                **dict(meta or {})}
    table = metrics_wide(long)
    paths["report"] = write_html_report(out / "report.html", title=title or f"Training run: {data.endpoint}",
                                        metrics_table=table, figures=figures, captions=captions, sections=sections,
                                        meta=run_meta)
    (out / "metrics.json").write_text(json.dumps({m: estimates_json(e) for m, e in metrics.items()}, indent=1))
    paths["metrics_json"] = out / "metrics.json"
    if mlflow_run:
        flat = _flat_metrics(metrics, "eval/")
        flat.update({f"eval/{r['model']}/delta_c_vs_{reference}": r["delta_c"] for _, r in comparison.iterrows()
                     if reference and r["model"] != reference})
        log_outputs(paths, run_id=mlflow_run if isinstance(mlflow_run, str) else None, artifact_path=artifact_path,
                    metrics=flat)
    return RunReport(output_dir=out, metrics=metrics, table=long, comparison=comparison, paths=paths,
                     horizons=[float(x) for x in h], notes=notes)


def _scheme_text(scheme: str | Sequence[float]) -> str:
    if isinstance(scheme, str):
        return {"median": "median split", "tertiles": "tertiles"}.get(scheme, scheme)
    return "quantiles " + ", ".join(f"{q:g}" for q in scheme)


def _td_auc_figure(metrics: Mapping[str, Mapping[str, Estimate]], h: np.ndarray, fused: str,
                   reference: str | None):
    def series(name: str) -> tuple[list[float], list[float], list[float]]:
        ests = [metrics[name].get(f"auc_{int(x) if float(x).is_integer() else x}d") for x in h]
        return ([e.value if e else np.nan for e in ests], [e.low if e else np.nan for e in ests],
                [e.high if e else np.nan for e in ests])

    auc, low, high = series(fused)
    mean = metrics[fused].get("mean_auc")
    fig = plot_td_auc(h, auc, low, high, mean_auc=mean.value if mean else None, label=fused,
                      title="Time-dependent AUC")
    if reference is not None and reference != fused:
        ax = fig.axes[0]
        r_auc, _, _ = series(reference)
        ax.plot(np.asarray(h) / DAYS_PER_MONTH, r_auc, "s--", color=PALETTE[3], ms=4, lw=1.2,
                label=f"{reference} (reference)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------------------------ model card
def card_metrics(metrics: Mapping[str, float], model: str, *, n_boot: int = 0) -> dict[str, Estimate | float]:
    """The C-index (and response AUC, external C-index) of ``model`` with CIs from ``train()``'s flat metrics
    (``<model>/cindex_pooled``, ``<model>/cindex_ci_low`` ...) as Estimates for :func:`register_model_card`;
    ``n_boot`` is the number of resamples behind those CIs (``evaluation.bootstrap``). The mean C over folds has
    no CI and stays a plain number."""
    out: dict[str, Estimate | float] = {}
    specs = [("harrell_c (pooled out-of-fold)", f"{model}/cindex_pooled", f"{model}/cindex_ci"),
             ("response_auc (pooled out-of-fold)", f"{model}/response_auc", f"{model}/response_auc_ci"),
             ("harrell_c (external)", f"external/{model}/cindex", f"external/{model}/cindex_ci")]
    for label, key, ci in specs:
        if key in metrics:
            out[label] = Estimate(float(metrics[key]), float(metrics.get(f"{ci}_low", np.nan)),
                                  float(metrics.get(f"{ci}_high", np.nan)), int(n_boot))
    if f"{model}/cindex" in metrics:
        out["harrell_c (mean over folds)"] = float(metrics[f"{model}/cindex"])
    return out


def _coverage(data: MultimodalData) -> dict[str, dict[str, float]]:
    present = data.present
    return {str(m): {"n": int(present[m].sum()), "fraction": float(present[m].mean())} for m in present.columns}


def _short_description(card: str, limit: int = 4800) -> str:
    """The registry description: the card up to its "Intended use" section, cut to MLflow's 5000-character field."""
    head = card.split("\n## Out-of-scope uses", 1)[0]
    tail = "\n\n(Full model card: artifact model_card.md of the model's run.)"
    if len(head) + len(tail) > limit:
        head = head[: limit - len(tail) - 4].rsplit("\n", 1)[0] + "\n..."
    return head + tail


def register_model_card(*, registered_model_name: str, version: str | int, data: MultimodalData | Mapping[str, Any],
                        metrics: Mapping[str, Estimate | float], cohort: str, cv: str, task: str = "survival",
                        endpoint: str | None = None, horizons: Sequence[float] | None = None,
                        training: Mapping[str, Any] | None = None, alias: str | None = None,
                        intended_use: str = DEFAULT_INTENDED_USE, limitations: Sequence[str] | None = None,
                        metrics_note: str | None = None, output_dir: str | Path | None = None,
                        tracking_uri: str | None = None, set_description: bool = True) -> Path:
    """Write the model card of a registered model version, log it to the version's run and describe the version.

    Args:
        registered_model_name, version, alias: the registry entry (``log_model``'s ``registered_model_name`` and
            ``ModelInfo.registered_model_version``).
        data: the training patients (cohort size, events and modality coverage are read from it), or the card's
            ``data`` mapping (``n_patients``, ``n_events``, ``modalities``) when the data are not at hand.
        metrics: ``{name: Estimate}``, e.g. :func:`card_metrics` of ``train()``'s metrics or
            ``RunReport.metrics[fused]``; say where they come from with ``metrics_note``.
        cohort: training cohort name (cohort.yaml ``name``).
        cv: the internal validation, e.g. ``"5-fold stratified CV x 1 repeat, patient level"``.
        endpoint: e.g. ``rfs``; ``horizons`` (days) are listed with it.
        training: model class, hyper-parameters, seed, run id... (one row each).
        output_dir: where ``model_card.md`` is written (default: a temporary folder, logged then removed).

    Returns:
        The path of ``model_card.md`` (gone when ``output_dir`` was not given).
    """
    from mlflow.tracking import MlflowClient

    from omics_risk.evaluation.modelcard import write_model_card
    from omics_risk.tracking.mlflow_utils import check_identifiers

    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    mv = client.get_model_version(registered_model_name, str(version))
    if isinstance(data, MultimodalData):
        card_data: dict[str, Any] = {"cohort": cohort, "n_patients": len(data),
                                     "n_events": int(np.nansum(data.event)) if data.event is not None else None,
                                     "modalities": _coverage(data)}
        if data.time is not None:
            card_data["median follow-up (days, reverse KM)"] = _reverse_km_median(data.time, data.event)
    else:
        card_data = {"cohort": cohort, **dict(data)}
    endpoint_details = {"horizons (days)": [float(h) for h in horizons]} if horizons else None
    train_rows = {"cv": cv, **dict(training or {}), "run id": mv.run_id}
    kw = dict(name=registered_model_name, version=str(version), task="binary" if task == "binary" else "survival",
              endpoint=endpoint or (data.endpoint if isinstance(data, MultimodalData) else "") or "–",
              data=card_data, metrics=dict(metrics), intended_use=intended_use,
              limitations=list(limitations or DEFAULT_LIMITATIONS), training=train_rows, alias=alias,
              endpoint_details=endpoint_details, metrics_note=metrics_note or (
                  "Internal validation: 95% percentile bootstrap CIs over patients of pooled out-of-fold "
                  "predictions."))
    with tempfile.TemporaryDirectory(prefix="omics_risk_card_") as tmp:
        path = Path(output_dir or tmp) / "model_card.md"
        write_model_card(path, **kw)
        text = path.read_text(encoding="utf-8")
        check_identifiers(values=[text], what="model card")
        client.log_artifact(mv.run_id, str(path))
        if set_description:
            client.update_model_version(registered_model_name, str(version), description=_short_description(text))
    return path


def _reverse_km_median(time: np.ndarray, event: np.ndarray | None) -> float:
    """Median follow-up by the reverse Kaplan-Meier (censoring as the event)."""
    from lifelines import KaplanMeierFitter

    e = np.zeros(len(time)) if event is None else np.asarray(event, float)
    kmf = KaplanMeierFitter().fit(np.asarray(time, float), 1 - e)
    return float(kmf.median_survival_time_)

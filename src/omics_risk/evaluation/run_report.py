"""The evaluation report of a training run (pooled out-of-fold risks of every model) and the model card of a
registered model.

:func:`build_run_report` is what ``train()`` calls at the end of a cross-validation run: every survival metric with a
bootstrap CI for every model (:func:`~omics_risk.evaluation.metrics.evaluate_survival`), the paired bootstrap test
of each model's C-index against the reference on the same patients, Kaplan-Meier curves by risk group of the fused
model and of the reference, time-dependent AUC, the model-comparison forest plot, calibration when survival curves
are given, and one self-contained ``report.html``. :func:`register_model_card` writes the Markdown model card of a
registered model version, logs it to the version's run and sets the version's description.

The shared helpers live in one-job modules and are re-exported here: metric tables in
:mod:`~omics_risk.evaluation.tables`, horizons/ranks/risk groups in :mod:`~omics_risk.evaluation.pooling`, MLflow
logging in :mod:`~omics_risk.evaluation.mlflow_log`, the registered model's card in
:mod:`~omics_risk.evaluation.card_registry`. Which metrics are computed and under which names comes from
:mod:`~omics_risk.evaluation.metric_defs`.

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
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import metric_resamples, paired_comparison, pooled_cindex
from omics_risk.evaluation.card_registry import (
    DEFAULT_INTENDED_USE,
    DEFAULT_LIMITATIONS,
    card_metrics,
    register_model_card,
)
from omics_risk.evaluation.metric_defs import PRIMARY, describe_metric, rank_invalid_patterns, slow_metric_patterns
from omics_risk.evaluation.metrics import Estimate, calibration_table, evaluate_survival
from omics_risk.evaluation.mlflow_log import log_outputs, log_run_report
from omics_risk.evaluation.plots import (
    DAYS_PER_MONTH,
    PALETTE,
    plot_calibration,
    plot_km_by_group,
    plot_model_comparison,
    plot_td_auc,
    save_figure,
)
from omics_risk.evaluation.pooling import (
    fixed_risk_groups,
    surv_at,
    td_auc_curve,
    usable_horizons,
    within_fold_ranks,
)
from omics_risk.evaluation.report import write_html_report
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.tables import (
    METRIC_DESCRIPTIONS,
    estimates_json,
    flat_metrics,
    format_metrics,
    headline_table,
    metrics_long,
    metrics_wide,
)
from omics_risk.progress import progress_bar

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
    "flat_metrics",
    "format_metrics",
    "headline_table",
    "log_outputs",
    "metrics_long",
    "metrics_wide",
    "register_model_card",
    "td_auc_curve",
    "usable_horizons",
    "within_fold_ranks",
]

#: ``evaluate_survival(exclude=...)`` of the quick setting: the metrics ``metric_defs`` marks slow (Cox-based
#: bootstraps, ~30 ms per resample each).
CHEAP_EXCLUDE: tuple[str, ...] = slow_metric_patterns()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "model"


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
    model_plots: dict[str, dict[str, Path]] = field(default_factory=dict)  # model -> its own plots (model runs)
    model_runs: dict[str, str] = field(default_factory=dict)  # model -> MLflow model run the metrics went to

    @property
    def report(self) -> Path:
        return self.paths["report"]


def _comparison_row(name: str, c: Estimate, paired: Mapping[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, PRIMARY: c.value, f"{PRIMARY}_ci_low": c.low, f"{PRIMARY}_ci_high": c.high,
                           "delta_c": np.nan, "delta_c_ci_low": np.nan, "delta_c_ci_high": np.nan, "p_value": np.nan}
    row.update(paired or {})
    return row


def build_run_report(risks: Mapping[str, np.ndarray], data: MultimodalData, *, output_dir: str | Path,
                     horizons: Sequence[float] | None = None, folds: np.ndarray | None = None,
                     survival: Mapping[str, np.ndarray] | None = None, times: np.ndarray | None = None,
                     fused: str | None = None, reference: str | None = "clinical_cox", n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05, headline_p: str = "bootstrap",
                     risk_groups: str | Sequence[float] = "median",
                     slow_metrics: bool = False, mlflow_run: str | bool | None = None,
                     artifact_path: str = "evaluation", title: str | None = None,
                     meta: Mapping[str, Any] | None = None, progress: bool = False) -> RunReport:
    """Metrics with CIs, plots and ``report.html`` of one training run; logged to MLflow when asked.

    Args:
        risks: ``{model: risk}``, the pooled out-of-fold risks (higher = riskier) in the patient order of ``data``:
            ``(n,)`` for one CV repeat or ``(n_repeats, n)`` for repeated CV. With repeats, Harrell's C, its CI and
            the paired comparison use every repeat (mean over repeats on the same resampled patients, as
            ``summary.json``); the other metrics and the plots are of repeat 0 (said in the report's notes). The
            first model is the fused model unless ``fused`` names another.
        data: the training patients (``time``/``event`` in days).
        output_dir: where ``report.html``, ``metrics.csv``, ``comparison.csv``, ``risk_groups_<model>.csv`` and
            ``plots/*.png`` go (created).
        horizons: evaluation horizons in days (td-AUC, calibration); those the follow-up cannot support are left
            out with a note in the report.
        folds: the test-fold id of each patient (``(n,)`` or ``(n_repeats, n)`` like the risks); risks are then ranked
            within their fold before pooling (see the module docstring), and the comparison adds the corrected
            resampled t-test of the per-fold C differences. Without it the risks are used as they are (one model
            fitted once, e.g. a hold-out).
        survival: ``{model: (n, len(times))}`` out-of-fold survival probabilities on ``times`` (days): adds the
            integrated Brier score, Brier scores and calibration at the horizons, and the calibration plot of
            the fused model.
        reference: model of the paired C-index tests (skipped when not in ``risks``).
        n_boot, seed: the run's one bootstrap (``evaluation.bootstrap``, ``evaluation.seed``), for every CI and the
            paired test: the same resamples as summary.json's, the model card's and ``evaluate.py mode=compare``'s.
        headline_p: the p the tables and the forest plot show (``bootstrap`` or ``corrected_t``); both are in
            ``comparison.csv``.
        risk_groups: ``median``, ``tertiles`` or quantiles (:class:`RiskGroups`).
        slow_metrics: also bootstrap the calibration slope and group hazard ratios (lifelines Cox fits, ~30 ms per
            resample each); the slope is never computed on within-fold ranks.
        mlflow_run: a run id, or True for the active run: log the files under ``artifact_path``, each model's
            metrics to its model run as ``<metric>`` (+ ``_ci_low``/``_ci_high``) and the comparison to the job run as
            ``<model>/<metric>`` (:func:`~omics_risk.evaluation.mlflow_log.log_run_report`).

    Returns:
        :class:`RunReport` (paths, metrics, tables).
    """
    if data.time is None or data.event is None:
        raise ValueError(f"build_run_report needs a survival endpoint; '{data.endpoint}' has no time/event")
    if not risks:
        raise ValueError("build_run_report needs at least one model's risks")
    out = Path(output_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    time, event = np.asarray(data.time, float), np.asarray(data.event).astype(bool)
    n = len(time)
    scores: dict[str, np.ndarray] = {}  # repeat 0 (ranked within folds): the metrics table and plots
    full: dict[str, np.ndarray] = {}  # every repeat: Harrell's C and the paired comparison
    fold_ids = None if folds is None else np.atleast_2d(np.asarray(folds))
    for name, r in risks.items():
        r = np.atleast_2d(np.asarray(r, dtype=float))
        if r.shape[1:] != (n,) or not np.isfinite(r).all():
            raise ValueError(f"risks['{name}'] must hold one finite score per patient ({n}), got shape {r.shape} "
                             f"with {int((~np.isfinite(r)).sum()) if r.shape[1:] == (n,) else '?'} non-finite")
        if fold_ids is not None and fold_ids.shape != r.shape:
            raise ValueError(f"folds {fold_ids.shape} and risks['{name}'] {r.shape} differ in shape")
        full[name] = r
        scores[name] = within_fold_ranks(r[0], fold_ids[0]) if fold_ids is not None else r[0]
    repeats = {r.shape[0] for r in full.values()}
    if len(repeats) > 1:
        raise ValueError(f"every model's risks need the same number of repeats, got {sorted(repeats)}")
    n_rep = repeats.pop()
    fused = fused or next(iter(scores))
    if fused not in scores:
        raise ValueError(f"fused model '{fused}' is not in risks (has: {', '.join(scores)})")
    reference = reference if reference in scores else None
    h, notes = usable_horizons(horizons, time, event)
    exclude = [] if slow_metrics else list(slow_metric_patterns())
    if folds is not None:
        exclude.extend(rank_invalid_patterns())
        notes.append("Risks are percentile ranks within their test fold (pooled out-of-fold predictions of "
                     "different fits); the calibration slope needs log hazards and is not reported.")
    if n_rep > 1:
        notes.append(f"{n_rep} CV repeats: Harrell's C, its CI, the difference from the reference and p pool every "
                     "repeat (mean over the repeats of each repeat's pooled out-of-fold C, on the same resampled "
                     "patients); the other metrics, risk groups and plots are of repeat 1.")
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
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(scores), desc="bootstrap", unit="model", disable=not progress)
    for i, (name, risk) in enumerate(scores.items()):
        bar.set_description_str(f"bootstrap {name} ({i + 1}/{len(scores)})")
        groups[name] = RiskGroups(risk_groups).fit(risk)
        surv_kw: dict[str, Any] = {}
        if survival is not None and name in survival and grid is not None and grid.sum() >= 2:
            s = np.asarray(survival[name], dtype=float)
            if s.shape != (n, len(times)):
                raise ValueError(f"survival['{name}'] must have shape {(n, len(times))}, got {s.shape}")
            surv_kw = {"surv": s[:, grid], "times": times[grid]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rest = evaluate_survival(time, event, risk, horizons=h if len(h) else None, train_time=time,
                                     train_event=event, groups=groups[name], n_boot=metric_resamples(n_boot),
                                     seed=seed, alpha=alpha, exclude=[*exclude, PRIMARY], progress=False,
                                     **surv_kw)  # the first 200 of the same resamples (bootstrap.metric_resamples)
        # Harrell's C from the engine of summary.json (every repeat; the same resamples)
        metrics[name] = {PRIMARY: pooled_cindex(time, event, full[name], fold_ids, n_boot=n_boot, seed=seed,
                                                alpha=alpha), **rest}
        paired = None
        if reference is not None and name != reference:
            paired = paired_comparison(time, event, full[name], full[reference], fold_ids, n_boot=n_boot, seed=seed,
                                       alpha=alpha, headline_p=headline_p, cindex=metrics[name][PRIMARY]).row()
        rows.append(_comparison_row(name, metrics[name][PRIMARY], paired))
        bar.update(1)
    bar.close()
    long = metrics_long(metrics)
    comparison = pd.DataFrame(rows)

    paths: dict[str, Path] = {}
    figures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    paths["metrics"] = out / "metrics.csv"
    long.to_csv(paths["metrics"], index=False)
    paths["comparison"] = out / "comparison.csv"
    comparison.to_csv(paths["comparison"], index=False)
    what = "within-fold percentile ranks of out-of-fold risks" if folds is not None else "risk scores"
    model_plots: dict[str, dict[str, Path]] = {name: {} for name in scores}
    shown = {fused, reference}  # the report shows these two; every model's plots go to its own MLflow run
    for name in (scores if mlflow_run else [m for m in dict.fromkeys([fused, reference]) if m is not None]):
        summary = groups[name].summary(time, event, scores[name])
        csv = (out if name in shown else plots / "models") / f"risk_groups_{_slug(name)}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(csv, index=False)
        fig = plot_km_by_group(time, event, groups[name].assign(scores[name]), horizon_days=h if len(h) else None,
                               endpoint=data.endpoint, title=f"{name}: {data.endpoint.upper()} by risk group")
        key = f"km_{_slug(name)}"
        png = save_figure(fig, (plots if name in shown else plots / "models") / f"{key}.png")
        model_plots[name].update({"km_by_risk_group": png, "risk_groups": csv})
        if name in shown:
            paths[f"risk_groups_{_slug(name)}"] = csv
            figures[key] = png
            captions[key] = (f"Kaplan-Meier curves of {name}'s risk groups ({_scheme_text(risk_groups)} of the "
                             f"{what}) with numbers at risk, log-rank p and hazard ratios vs the low-risk group.")
    if len(h):
        fig = _td_auc_figure(metrics, h, fused, reference)
        figures["td_auc"] = save_figure(fig, plots / "td_auc.png")
        captions["td_auc"] = "Cumulative/dynamic AUC at each horizon with 95% bootstrap CIs (IPCW, scikit-survival)."
        for name in (scores if mlflow_run else []):
            model_plots[name]["td_auc"] = figures["td_auc"] if name == fused else save_figure(
                _td_auc_figure(metrics, h, name, reference), plots / "models" / f"td_auc_{_slug(name)}.png")
    if len(scores) > 1:
        fig = plot_model_comparison(comparison, reference=reference, metric=PRIMARY,
                                    title="Pooled out-of-fold C-index" if folds is not None else "C-index")
        figures["model_comparison"] = save_figure(fig, plots / "model_comparison.png")
        p_from = ("the corrected resampled t-test of the per-fold differences" if headline_p == "corrected_t"
                  else "the paired bootstrap of the difference")
        captions["model_comparison"] = (f"Harrell's C with 95% bootstrap CIs; p from {p_from} to {reference} "
                                        "(the p of summary.csv and the model card)."
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
            model_plots[fused]["calibration"] = figures["calibration"]
            captions["calibration"] = ("Observed (Kaplan-Meier, 95% CI) vs mean predicted event probability in "
                                       "quintiles of predicted risk; the dotted diagonal is perfect calibration.")
    paths.update(figures)
    sections = {
        "How to read this report": (
            "Every number is computed on held-out predictions: each patient's risk comes from the model fitted "
            "without that patient (cross-validation), pooled over folds as " + what + ". Risk scores follow one "
            "convention: higher = riskier. Intervals are 95% percentile bootstrap CIs over patients "
            f"({n_boot} resamples, seed {seed}; the same resamples as summary.json, the model card and evaluate.py "
            "mode=compare)" + (f", pooled over the {n_rep} CV repeats for Harrell's C and the comparison"
                               if n_rep > 1 else "") + (
                f"; the other metrics' CIs use the first {metric_resamples(n_boot)} of them (each is a "
                "scikit-survival or lifelines call per resample; Harrell's C, the differences and their p use all)"
                if metric_resamples(n_boot) < n_boot else "") + ". The corrected resampled t-test (Nadeau & "
            "Bengio 2003) of the per-fold C differences, beside the bootstrap p, also covers the variability of "
            "training (other folds, other fits), which the patient bootstrap does not. IPCW metrics (Uno's C, "
            "td-AUC, Brier) weight by the censoring distribution of this cohort."),
        "Notes": "\n\n".join(notes) if notes else "None.",
    }
    run_meta = {"patients": n, "events": int(event.sum()), "endpoint": data.endpoint, "CV repeats pooled": n_rep,
                "bootstrap": f"{n_boot} resamples, seed {seed}",
                "horizons (days)": ", ".join(f"{x:g}" for x in h) or "none", "reference": reference or "none",
                **dict(meta or {})}
    headline = headline_table(comparison, reference)
    table = _with_difference(metrics_wide(long), headline)
    head_note = _headline_note(reference, n_boot, headline_p, n_rep)
    paths["report"] = write_html_report(out / "report.html", title=title or f"Training run: {data.endpoint}",
                                        metrics_table=table, figures=figures, captions=captions, sections=sections,
                                        meta=run_meta, headline=headline, headline_note=head_note)
    paths["comparison_html"] = write_html_report(
        out / "comparison.html", title=f"Model comparison: {data.endpoint}", metrics_table=headline,
        metrics_note=head_note, figures={k: figures[k] for k in ("model_comparison",) if k in figures},
        captions=captions, meta={"patients": n, "events": int(event.sum()), "reference": reference or "none"})
    (out / "metrics.json").write_text(json.dumps({m: estimates_json(e) for m, e in metrics.items()}, indent=1))
    paths["metrics_json"] = out / "metrics.json"
    model_runs: dict[str, str] = {}
    if mlflow_run:
        model_runs = log_run_report(metrics=metrics, comparison=comparison, reference=reference, paths=paths,
                                    model_plots=model_plots, run_id=mlflow_run if isinstance(mlflow_run, str) else None,
                                    artifact_path=artifact_path)
    return RunReport(output_dir=out, metrics=metrics, table=long, comparison=comparison, paths=paths,
                     horizons=[float(x) for x in h], notes=notes, model_plots=model_plots, model_runs=model_runs)


def _headline_note(reference: str | None, n_boot: int, headline_p: str = "bootstrap", n_rep: int = 1) -> str:
    pooled = f" (mean over the {n_rep} CV repeats)" if n_rep > 1 else ""
    if not reference:
        return f"Harrell's C{pooled} with its 95% percentile bootstrap CI ({n_boot} resamples of patients)."
    p_text = ("p from the corrected resampled t-test of the per-fold differences (Nadeau & Bengio 2003), the "
              "paired bootstrap p beside it" if headline_p == "corrected_t" else
              "two-sided bootstrap p (<0.001 when no resample crosses 0), the corrected resampled t-test of the "
              "per-fold differences (Nadeau & Bengio 2003) beside it where there are folds")
    return (f"Harrell's C{pooled} with its 95% percentile bootstrap CI; ΔC = the model's C minus {reference}'s on "
            f"the same {n_boot} bootstrap resamples of patients (paired), with its 95% CI; {p_text}. p-values are "
            "never given with a CI.")


def _with_difference(wide: pd.DataFrame, headline: pd.DataFrame) -> pd.DataFrame:
    """The wide metric table with the difference from the reference (and its p) after Harrell's C."""
    if wide.empty or headline.empty:
        return wide
    cols = [c for c in headline.columns if c not in ("model", "C-index (95% CI)")]
    extra = headline.set_index("model")[cols].rename(columns={"p": f"p ({cols[0].split(' (')[0]})"})
    merged = wide.join(extra, on="model")
    at = list(wide.columns).index(PRIMARY) + 1 if PRIMARY in wide.columns else len(wide.columns)
    order = [*wide.columns[:at], *extra.columns, *wide.columns[at:]]
    return merged[order].fillna("–")


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


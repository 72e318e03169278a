"""Survival and response metrics with bootstrap confidence intervals, computed by scikit-survival, lifelines and
scikit-learn (nothing here re-implements what those libraries compute).

**Sign convention** everywhere in omics-risk: a *risk score* is "higher = riskier" (e.g. a Cox log relative hazard),
and survival curves are probabilities of being event-free. scikit-survival's metrics take risk scores with that
convention and are called as they are. lifelines' ``concordance_index`` takes predicted *times* (higher = longer
survival), so its C is 1 - ours for the same scores (scikit-survival #498); where a lifelines concordance is needed
(tests, very large samples) it is given ``-risk``. lifelines' ``CoxPHFitter`` coefficients are log hazard ratios, so
a positive calibration slope or HR > 1 means "higher score, earlier event", as here. Times are in days.

Which library computes what:

* Harrell's C: ``sksurv.metrics.concordance_index_censored``.
* Uno's C: ``sksurv.metrics.concordance_index_ipcw`` (truncated at ``tau``).
* Time-dependent (cumulative/dynamic) AUC: ``sksurv.metrics.cumulative_dynamic_auc``.
* Brier score and integrated Brier score: ``sksurv.metrics.brier_score`` / ``integrated_brier_score``.
* Calibration at a horizon (observed vs predicted by risk group): ``lifelines.KaplanMeierFitter``.
* Calibration slope: ``lifelines.CoxPHFitter`` of the outcome on the score.
* D-calibration (Haider et al. 2020): no implementation exists in scikit-survival 0.28, lifelines 0.30 or torchsurv
  0.2.0, so the bin counts follow the paper and the goodness-of-fit test is ``scipy.stats.chisquare``.
* Response endpoints: ``sklearn.metrics.roc_auc_score``, ``brier_score_loss``, ``balanced_accuracy_score``.

The IPCW metrics (Uno's C, td-AUC, Brier scores) weight by the censoring distribution estimated on the *training*
data (``train_time``/``train_event``); their bootstrap resamples the evaluated patients only and keeps the training
data fixed. Horizons and time grids are checked against the follow-up first and raise :class:`HorizonError` naming
the horizon and the follow-up, instead of scikit-survival's ``ValueError`` from deep inside the estimator.

Where things live: the metric functions in :mod:`~omics_risk.evaluation.survival_metrics` and
:mod:`~omics_risk.evaluation.response_metrics`, horizon checks in :mod:`~omics_risk.evaluation.horizons`, the
bootstrap in :mod:`~omics_risk.evaluation.bootstrap`, and the one list of metric definitions (names, labels,
directions) in :mod:`~omics_risk.evaluation.metric_defs`. This module runs every metric of that list on one cohort
(:func:`evaluate_survival`, :func:`evaluate_response`) and re-exports the others' public names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from omics_risk.evaluation.bootstrap import Estimate, _with_ci, bootstrap_metric, paired_bootstrap_difference
from omics_risk.evaluation.horizons import (
    HorizonError,
    _arrays,
    _check_within_train,
    check_horizons,
    default_tau,
    time_grid,
)
from omics_risk.evaluation.metric_defs import ResponseInputs, SurvivalInputs, response_jobs, survival_jobs
from omics_risk.evaluation.response_metrics import _labelled, balanced_accuracy, response_auc, response_brier
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.survival_metrics import (
    brier_at,
    calibration_in_the_large,
    calibration_slope,
    calibration_table,
    d_calibration,
    harrell_c,
    integrated_brier,
    time_dependent_auc,
    uno_c,
)
from omics_risk.progress import progress_bar

__all__ = [
    "Estimate",
    "EvaluationError",
    "HorizonError",
    "balanced_accuracy",
    "bootstrap_metric",
    "brier_at",
    "calibration_in_the_large",
    "calibration_slope",
    "calibration_table",
    "check_horizons",
    "d_calibration",
    "default_tau",
    "evaluate_response",
    "evaluate_survival",
    "harrell_c",
    "integrated_brier",
    "paired_bootstrap_difference",
    "response_auc",
    "response_brier",
    "time_dependent_auc",
    "time_grid",
    "uno_c",
]


class EvaluationError(ValueError):
    """The evaluation cannot run as asked (a setting, the cohort or the model); the message says what to change."""


def _groups(groups, risk: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Group codes (0 = lowest risk) and labels of a fitted :class:`RiskGroups` or of one label per patient."""
    if isinstance(groups, RiskGroups):
        return groups.codes(risk), tuple(groups.labels)
    # plain labels: order the groups by their mean score, so the reference is the lowest-risk group
    assigned = np.asarray(groups).astype(str)
    labels = list(pd.Series(risk).groupby(assigned).mean().sort_values().index)
    return pd.Categorical(assigned, categories=labels).codes.astype(int), tuple(labels)


def evaluate_survival(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, surv: np.ndarray | None = None,
                      times: np.ndarray | None = None, horizons: Sequence[float] | None = None,
                      train_time: np.ndarray | None = None, train_event: np.ndarray | None = None,
                      groups=None, n_boot: int = 1000, seed: int = 0, tau: float | None = None,
                      surv_at_own_time: np.ndarray | None = None, alpha: float = 0.05, n_jobs: int = 1,
                      progress: bool = False, exclude: Sequence[str] = (), label: str | None = None
                      ) -> dict[str, Estimate]:
    """Every survival metric of ``metric_defs.METRICS`` the inputs allow, each with a percentile bootstrap CI over
    patients (same resamples for every metric; training data fixed).

    Keys: ``harrell_c`` and ``calibration_slope`` always; with ``train_time``/``train_event``: ``uno_c`` (at ``tau``,
    default :func:`default_tau`), and with ``horizons``: ``auc_<h>d`` per horizon and ``mean_auc``; with ``surv``
    (n, len(times)) survival curves on ``times``: ``ibs`` (needs the training data), ``brier_<h>d`` and
    ``calibration_in_the_large_<h>d`` per horizon (curves interpolated at the horizon unless it is in ``times``);
    with ``surv_at_own_time``: ``d_calibration_p``; with ``groups`` (a fitted :class:`RiskGroups` or one label per
    patient): ``logrank_p`` and ``hr_<group>_vs_<lowest>``. Horizons are checked first (:class:`HorizonError`).

    Cost: the Cox-based entries (calibration slope, HRs) take ~30 ms per resample with lifelines, the others a few ms;
    ``n_jobs`` > 1 runs the metrics in parallel processes (joblib). ``exclude`` leaves out keys matching any of its
    shell-style patterns, e.g. ``("calibration_slope", "hr_*")`` for a quick table (or for scores that are not on
    the log-hazard scale, such as within-fold percentile ranks, where the slope means nothing).
    ``progress`` shows a bar ``bootstrap <label> (3/12)`` (metric 3 of 12; ``label``: the model's name), nothing
    when off.
    """
    time, event = _arrays(time, event)
    risk = np.asarray(risk, float)
    if risk.shape != time.shape or not np.isfinite(risk).all():
        raise ValueError(f"risk must hold one finite score per patient ({len(time)}), got shape {risk.shape}")
    has_train = train_time is not None and train_event is not None
    if has_train:
        train_time, train_event = _arrays(train_time, train_event)
    h = check_horizons(horizons, time, event) if horizons is not None and np.size(horizons) else None
    if h is not None and has_train:
        _check_within_train(h, train_time, train_event, "horizon")
    if surv is not None:
        if times is None:
            raise ValueError("surv needs the times (days) its columns are evaluated at")
        times = np.asarray(times, float)
        surv = np.asarray(surv, float)
        if surv.shape != (len(time), len(times)):
            raise ValueError(f"surv must have shape (n_patients, n_times) = {(len(time), len(times))}, "
                             f"got {surv.shape}")

    codes, labels = _groups(groups, risk) if groups is not None else (None, ())
    tau = (default_tau(time, train_time) if tau is None else float(tau)) if has_train else tau
    inputs = SurvivalInputs(time, event, risk, train_time=train_time if has_train else None,
                            train_event=train_event if has_train else None, horizons=h, tau=tau, surv=surv,
                            times=times, surv_at_own_time=surv_at_own_time, group_codes=codes, group_labels=labels)
    jobs = survival_jobs(inputs)  # name -> (metric function, arrays resampled together), from metric_defs.METRICS
    if exclude:
        jobs = {k: v for k, v in jobs.items() if not any(fnmatch.fnmatchcase(k, pat) for pat in exclude)}
    run = partial(_with_ci, n_boot=n_boot, seed=seed, alpha=alpha)
    what, total = f"bootstrap {label or 'metrics'}", len(jobs)
    out: dict[str, Estimate] = {}
    with progress_bar(total=total, desc=f"{what} (0/{total})", unit="metric", disable=not progress) as bar:
        if n_jobs == 1:
            for i, (name, (fn, arrays)) in enumerate(jobs.items()):
                bar.set_description_str(f"{what} ({i + 1}/{total})")  # the metric being bootstrapped
                out[name] = run(fn, *arrays, name=name)
                bar.update(1)
            return out
        done = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run)(fn, *arrays, name=name)
                                                              for name, (fn, arrays) in jobs.items())
        for i, (name, est) in enumerate(zip(jobs, done, strict=True)):
            out[name] = est
            bar.set_description_str(f"{what} ({i + 1}/{total})")  # metrics finished
            bar.update(1)
    return out


def evaluate_response(label: np.ndarray, prob: np.ndarray, n_boot: int = 1000, seed: int = 0, *,
                      threshold: float = 0.5, alpha: float = 0.05) -> dict[str, Estimate]:
    """AUC, Brier score and balanced accuracy of a response probability with bootstrap CIs over the labelled
    patients (unlabelled ones are dropped first)."""
    label, prob = _labelled(label, prob)
    if len(np.unique(label)) < 2:
        raise ValueError(f"response metrics need both classes among the {len(label)} labelled patients")
    return {name: _with_ci(fn, *arrays, n_boot=n_boot, seed=seed, alpha=alpha, name=name)
            for name, (fn, arrays) in response_jobs(ResponseInputs(label, prob, threshold)).items()}

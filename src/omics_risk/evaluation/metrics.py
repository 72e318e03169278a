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
"""

from __future__ import annotations

import fnmatch
import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from lifelines import CoxPHFitter, KaplanMeierFitter
from scipy.stats import chisquare
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from omics_risk.evaluation.riskgroups import RiskGroups, hazard_ratios, logrank_p
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


class HorizonError(ValueError):
    """A horizon, ``tau`` or time grid that the follow-up of the data cannot support."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap confidence interval."""

    value: float
    low: float
    high: float
    n_boot: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}": self.value, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


# --------------------------------------------------------------------------------------------------------------------
# Input handling and horizon checks


def _arrays(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    if time.shape != event.shape or time.ndim != 1:
        raise ValueError(f"time and event must be 1-D arrays of the same length, got {time.shape} and {event.shape}")
    if not np.isfinite(time).all():
        raise ValueError("time contains NaN or infinite values; drop patients without follow-up first")
    return time, event


def _follow_up(time: np.ndarray, event: np.ndarray, what: str = "evaluation data") -> str:
    ev = time[event]
    events = f"{len(ev)} events at {ev.min():g}-{ev.max():g} days" if len(ev) else "no events"
    return f"the {what} follow up {len(time)} patients for {time.min():g}-{time.max():g} days ({events})"


def _hkey(h: float) -> str:
    return f"{int(h)}" if float(h).is_integer() else f"{h:g}"


def check_horizons(horizons_days: Sequence[float] | np.ndarray | float, time: np.ndarray,
                   event: np.ndarray) -> np.ndarray:
    """Validate evaluation horizons (days) against the follow-up; returns them sorted and unique.

    A horizon must be > 0 and before the last observed time (so patients are still at risk after it), with at least
    one event at or before it; otherwise there are no cases or no controls and the scikit-survival estimators crash
    or return nonsense.
    """
    time, event = _arrays(time, event)
    h = np.atleast_1d(np.asarray(horizons_days, dtype=float))
    if h.size == 0:
        raise HorizonError("no horizons given")
    if not np.isfinite(h).all():
        raise HorizonError(f"horizons must be finite numbers of days, got {h.tolist()}")
    if not event.any():
        raise HorizonError(f"no horizon can be evaluated: {_follow_up(time, event)}")
    first_event, last = time[event].min(), time.max()
    for x in h:
        if x <= 0:
            raise HorizonError(f"horizon {x:g} days must be > 0 days")
        if x >= last:
            raise HorizonError(f"horizon {x:g} days is not inside the follow-up: {_follow_up(time, event)}; "
                               f"use horizons below {last:g} days so that patients remain at risk after them")
        if x < first_event:
            raise HorizonError(f"horizon {x:g} days comes before the first event ({first_event:g} days): "
                               f"{_follow_up(time, event)}; nothing can be discriminated or calibrated there")
    return np.unique(h)


def _check_train(train_time: np.ndarray | None, train_event: np.ndarray | None,
                 metric: str) -> tuple[np.ndarray, np.ndarray]:
    if train_time is None or train_event is None:
        raise ValueError(f"{metric} weights by the censoring distribution of the training data: pass train_time and "
                         "train_event (the training cohort's follow-up; for internal validation, the same arrays)")
    return _arrays(train_time, train_event)


def _check_within_train(t: np.ndarray, train_time: np.ndarray, train_event: np.ndarray, what: str) -> None:
    """The censoring Kaplan-Meier of the training data is only defined (and > 0) before its last observed time."""
    bad = t[t >= train_time.max()]
    if len(bad):
        raise HorizonError(f"{what} {bad[0]:g} days is beyond the training follow-up, where the censoring "
                           f"distribution used for the IPCW weights is not estimable: "
                           f"{_follow_up(train_time, train_event, 'training data')}; use times below "
                           f"{train_time.max():g} days")


def _check_grid(times: np.ndarray, time: np.ndarray, event: np.ndarray, train_time: np.ndarray,
                train_event: np.ndarray) -> np.ndarray:
    """A time grid for survival curves (Brier scores) must lie inside the evaluation and the training follow-up."""
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or not np.isfinite(times).all():
        raise HorizonError(f"times must be a non-empty 1-D array of finite days, got {times!r}")
    if (np.diff(times) <= 0).any():
        raise HorizonError("times must be strictly increasing")
    if times[0] < time.min() or times[-1] >= time.max():
        raise HorizonError(f"times {times[0]:g}-{times[-1]:g} days are not inside the follow-up: "
                           f"{_follow_up(time, event)}; use times in [{time.min():g}, {time.max():g}) days, "
                           "e.g. omics_risk.evaluation.metrics.time_grid(time)")
    _check_within_train(times, train_time, train_event, "time")
    return times


def _censor_after(time: np.ndarray, event: np.ndarray, t_last: float,
                  train_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Censor patients followed beyond the last evaluated time ``t_last`` at min(their time, end of training
    follow-up).

    They are controls at every evaluated time either way, so td-AUC and Brier scores at times <= t_last are
    unchanged (their IPCW weight only multiplies a case indicator that is 0); this only stops scikit-survival from
    asking the training censoring distribution for a weight at a time it cannot estimate (an external cohort with
    longer follow-up than the training cohort).
    """
    late = time > t_last
    if not late.any():
        return time, event
    time, event = time.copy(), event.copy()
    event[late] = False
    time[late] = np.minimum(time[late], train_time.max())
    return time, event


def default_tau(time: np.ndarray, train_time: np.ndarray | None = None, quantile: float = 0.9) -> float:
    """Truncation time for Uno's C: the 90th percentile of the observed times (of both cohorts when the training
    cohort is given), so that enough patients are still followed and the censoring weights stay stable."""
    tau = float(np.quantile(np.asarray(time, float), quantile))
    if train_time is not None:
        tau = min(tau, float(np.quantile(np.asarray(train_time, float), quantile)))
    return tau


def time_grid(time: np.ndarray, *, train_time: np.ndarray | None = None, n: int = 50, low: float = 0.05,
              high: float = 0.9) -> np.ndarray:
    """Time grid (days) for survival curves and the integrated Brier score: ``n`` percentiles of the observed times
    between ``low`` and ``high``, kept below the end of the training follow-up. Starting above the earliest time
    keeps the grid valid in almost every bootstrap resample (scikit-survival rejects grid times before the earliest
    observed time of the resample)."""
    time = np.asarray(time, dtype=float)
    grid = np.unique(np.quantile(time, np.linspace(low, high, n)))
    if train_time is not None:
        grid = grid[grid < np.asarray(train_time, float).max()]
    return grid


def _sorted_columns(horizons: Sequence[float] | np.ndarray, h: np.ndarray, estimate: np.ndarray) -> None:
    """Columns of a 2-D estimate belong to the horizons as given; they are only matched if given sorted."""
    given = np.atleast_1d(np.asarray(horizons, dtype=float))
    if estimate.ndim == 2 and estimate.shape[1] > 1 and not np.array_equal(given, h):
        raise ValueError(f"give the horizons in increasing order without repeats ({given.tolist()}), matching the "
                         "columns of the predictions")


def _surv_at(surv: np.ndarray, times: np.ndarray, h: float) -> np.ndarray:
    """Survival probabilities at ``h`` from curves evaluated on ``times`` (exact column, else linear interpolation)."""
    j = np.searchsorted(times, h)
    if j < len(times) and np.isclose(times[j], h):
        return surv[:, j]
    if j == 0 or j == len(times):
        raise HorizonError(f"horizon {h:g} days is outside the survival-curve times {times[0]:g}-{times[-1]:g} "
                           "days; include the horizons in times")
    w = (h - times[j - 1]) / (times[j] - times[j - 1])
    return (1 - w) * surv[:, j - 1] + w * surv[:, j]


# --------------------------------------------------------------------------------------------------------------------
# Discrimination


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (ties in risk count 1/2); NaN when there is no comparable pair."""
    event = np.asarray(event).astype(bool)
    if event.sum() == 0:
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])
    except (ValueError, ZeroDivisionError):  # no comparable pairs in a tiny resample
        return float("nan")


def uno_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, train_time: np.ndarray,
          train_event: np.ndarray, tau: float | None = None) -> float:
    """Uno's C truncated at ``tau`` (default :func:`default_tau`), less dependent on the censoring than Harrell's.

    Only pairs whose earlier time is before ``tau`` count; ``tau`` must be inside the training follow-up (where the
    censoring distribution is estimable) and have an event before it.
    """
    time, event = _arrays(time, event)
    train_time, train_event = _check_train(train_time, train_event, "Uno's C")
    tau = default_tau(time, train_time) if tau is None else float(tau)
    if not tau > 0:
        raise HorizonError(f"tau {tau:g} days must be > 0 days")
    if tau > train_time.max():
        raise HorizonError(f"tau {tau:g} days is beyond the training follow-up, where the censoring distribution "
                           f"used for the IPCW weights is not estimable: "
                           f"{_follow_up(train_time, train_event, 'training data')}")
    if not (event & (time < tau)).any():
        raise HorizonError(f"no event before tau {tau:g} days: {_follow_up(time, event)}")
    return float(concordance_index_ipcw(Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time),
                                        np.asarray(risk, float), tau=tau)[0])


def time_dependent_auc(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float] | np.ndarray,
                       *, train_time: np.ndarray, train_event: np.ndarray) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at each horizon (cases: event by h, controls: event-free after h) and its mean over
    the horizons weighted by the Kaplan-Meier of the evaluation data (Lambert & Chevret); horizons sorted.

    ``risk`` is one score per patient, or (n, len(horizons)) time-dependent risks (higher = riskier, e.g.
    1 - survival at the horizon).
    """
    time, event = _arrays(time, event)
    train_time, train_event = _check_train(train_time, train_event, "time-dependent AUC")
    h = check_horizons(horizons, time, event)
    _check_within_train(h, train_time, train_event, "horizon")
    _sorted_columns(horizons, h, np.asarray(risk))
    t, e = _censor_after(time, event, h[-1], train_time)
    auc, mean_auc = cumulative_dynamic_auc(Surv.from_arrays(train_event, train_time), Surv.from_arrays(e, t),
                                           np.asarray(risk, float), h)
    return np.asarray(auc, float), float(mean_auc)


# --------------------------------------------------------------------------------------------------------------------
# Overall accuracy (Brier) and calibration


def brier_at(time: np.ndarray, event: np.ndarray, surv: np.ndarray, horizons: Sequence[float] | np.ndarray, *,
             train_time: np.ndarray, train_event: np.ndarray) -> np.ndarray:
    """IPCW Brier score at each horizon (sorted); ``surv`` is (n, len(horizons)) survival probabilities at the
    horizons, or (n,) for a single horizon."""
    time, event = _arrays(time, event)
    train_time, train_event = _check_train(train_time, train_event, "The Brier score")
    h = check_horizons(horizons, time, event)
    _check_within_train(h, train_time, train_event, "horizon")
    surv = np.asarray(surv, float)
    surv = surv.reshape(-1, 1) if surv.ndim == 1 else surv
    _sorted_columns(horizons, h, surv)
    if surv.shape != (len(time), len(h)):
        raise ValueError(f"surv must have shape (n_patients, n_horizons) = {(len(time), len(h))}, got {surv.shape}")
    t, e = _censor_after(time, event, h[-1], train_time)
    return np.asarray(brier_score(Surv.from_arrays(train_event, train_time), Surv.from_arrays(e, t), surv, h)[1])


def integrated_brier(time: np.ndarray, event: np.ndarray, surv: np.ndarray, times: np.ndarray, *,
                     train_time: np.ndarray, train_event: np.ndarray) -> float:
    """Integrated Brier score over ``times`` (trapezoid rule, divided by the time span); ``surv`` is (n, len(times))
    survival probabilities. Lower is better; 0.25 is a constant 50 % prediction."""
    time, event = _arrays(time, event)
    train_time, train_event = _check_train(train_time, train_event, "The integrated Brier score")
    times = _check_grid(times, time, event, train_time, train_event)
    if len(times) < 2:
        raise HorizonError("the integrated Brier score needs at least two times")
    surv = np.asarray(surv, float)
    if surv.shape != (len(time), len(times)):
        raise ValueError(f"surv must have shape (n_patients, n_times) = {(len(time), len(times))}, got {surv.shape}")
    t, e = _censor_after(time, event, times[-1], train_time)
    return float(integrated_brier_score(Surv.from_arrays(train_event, train_time), Surv.from_arrays(e, t), surv,
                                        times))


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """Kaplan-Meier event probability (1 - S) at the horizon with its 95 % CI; NaN when nobody is followed that long
    and the curve has not reached 0."""
    kmf = KaplanMeierFitter().fit(time, event)
    s = float(kmf.survival_function_at_times(horizon).iloc[0])
    if time.max() < horizon and s > 0:
        return float("nan"), float("nan"), float("nan")
    ci = kmf.confidence_interval_survival_function_.loc[:horizon].iloc[-1]
    return 1 - s, 1 - float(ci.iloc[1]), 1 - float(ci.iloc[0])


def calibration_table(time: np.ndarray, event: np.ndarray, surv_at_h: np.ndarray, horizon: float,
                      n_groups: int = 5) -> pd.DataFrame:
    """Observed vs predicted event probability at ``horizon`` in ``n_groups`` quantile groups of predicted risk.

    Columns: group (1 = lowest predicted risk), n, events (by the horizon), predicted (mean 1 - S(h)), observed
    (Kaplan-Meier 1 - S(h) of the group, lifelines), observed_low, observed_high (its 95 % CI). With at most
    ``n_groups`` distinct predictions each gets its own group; otherwise ties can merge quantile groups.
    """
    time, event = _arrays(time, event)
    (horizon,) = check_horizons([horizon], time, event)
    pred = 1 - np.asarray(surv_at_h, float)
    if pred.shape != time.shape:
        raise ValueError(f"surv_at_h must have one survival probability per patient ({len(time)}), got {pred.shape}")
    values = np.unique(pred)
    if len(values) <= n_groups:  # few distinct predictions (e.g. a stage-only model): one group per value
        group = np.searchsorted(values, pred) + 1
    else:
        group = pd.qcut(pred, n_groups, labels=False, duplicates="drop") + 1
    rows = []
    for g in np.unique(group):
        m = group == g
        obs, low, high = _km_at(time[m], event[m], horizon)
        rows.append({"group": int(g), "n": int(m.sum()), "events": int((event[m] & (time[m] <= horizon)).sum()),
                     "predicted": float(pred[m].mean()), "observed": obs, "observed_low": low, "observed_high": high})
    return pd.DataFrame(rows)


def calibration_in_the_large(time: np.ndarray, event: np.ndarray, surv_at_h: np.ndarray, horizon: float) -> float:
    """Mean predicted minus Kaplan-Meier observed event probability at ``horizon`` (0 = calibrated on average,
    > 0 = risk over-estimated)."""
    time, event = _arrays(time, event)
    (horizon,) = check_horizons([horizon], time, event)
    return float(np.mean(1 - np.asarray(surv_at_h, float)) - _km_at(time, event, horizon)[0])


def calibration_slope(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Coefficient of a Cox model (lifelines CoxPHFitter) of the outcome on the score: 1 = perfect, < 1 = predictions
    too extreme (over-fitting), > 1 = too modest. Meaningful for scores on the log relative hazard scale (Cox-type
    models' ``predict_risk``); for other scores it measures discrimination strength, not calibration."""
    time, event = _arrays(time, event)
    risk = np.asarray(risk, float)
    if not event.any():
        return float("nan")
    frame = pd.DataFrame({"time": time, "event": event, "score": risk})
    return float(CoxPHFitter().fit(frame, "time", "event").params_["score"])


def d_calibration(time: np.ndarray, event: np.ndarray, surv_at_own_time: np.ndarray,
                  n_bins: int = 10) -> dict[str, float | np.ndarray]:
    """D-calibration (Haider, Hoehn, Davis & Greiner, JMLR 2020): with well-calibrated survival curves, S_i(T_i) is
    Uniform(0, 1), so the predicted survival probabilities at the patients' own times fill ``n_bins`` equal bins
    evenly.

    Implemented here following the paper because scikit-survival, lifelines and torchsurv 0.2.0 do not provide it:
    a patient with an event adds 1 to the bin holding S_i(t_i); a censored patient (true S_i(T_i) uniform on
    [0, S_i(c_i)]) spreads 1 over [0, S_i(c_i)]: (S_i(c_i) - lower edge) / S_i(c_i) to its own bin and
    1 / (n_bins * S_i(c_i)) to each bin below. Uniformity is tested with Pearson's chi-square
    (``scipy.stats.chisquare``, n_bins - 1 df). Returns statistic, p_value (small = miscalibrated) and the fractional
    ``counts`` per bin, lowest survival first.
    """
    time, event = _arrays(time, event)
    s = np.clip(np.asarray(surv_at_own_time, float), 0.0, 1.0)
    if s.shape != time.shape or not np.isfinite(s).all():
        raise ValueError(f"surv_at_own_time must hold one finite survival probability per patient ({len(time)})")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    lower, upper = edges[:-1], edges[1:]
    own = np.minimum((s * n_bins).astype(int), n_bins - 1)
    contrib = np.zeros((len(s), n_bins))
    contrib[event, own[event]] = 1.0
    cens = ~event
    sc = s[cens][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.clip(np.minimum(upper, sc) - lower, 0.0, None) / sc
    spread[sc[:, 0] == 0] = np.eye(n_bins)[0]  # S(c) = 0: the event time is certainly in the lowest bin
    contrib[cens] = spread
    counts = contrib.sum(axis=0)
    stat, p = chisquare(counts)
    return {"statistic": float(stat), "p_value": float(p), "counts": counts}


# --------------------------------------------------------------------------------------------------------------------
# Response (binary) endpoints


def _labelled(label: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label, prob = np.asarray(label, float), np.asarray(prob, float)
    ok = np.isfinite(label) & np.isfinite(prob)
    return label[ok].astype(int), prob[ok]


def response_auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a response probability (higher = more likely to respond)."""
    label = np.asarray(label)
    if len(np.unique(label[~np.isnan(label)])) < 2:
        return float("nan")
    ok = ~np.isnan(label)
    return float(roc_auc_score(label[ok], np.asarray(score)[ok]))


def response_brier(label: np.ndarray, prob: np.ndarray) -> float:
    """Brier score of a response probability (sklearn ``brier_score_loss``); patients without a label are skipped."""
    label, prob = _labelled(label, prob)
    return float(brier_score_loss(label, prob)) if len(label) else float("nan")


def balanced_accuracy(label: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    """Balanced accuracy of ``prob >= threshold`` (sklearn); NaN unless both classes are present."""
    label, prob = _labelled(label, prob)
    if len(np.unique(label)) < 2:
        return float("nan")
    return float(balanced_accuracy_score(label, (prob >= threshold).astype(int)))


# --------------------------------------------------------------------------------------------------------------------
# Bootstrap


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_metric(metric, *arrays: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> Estimate:
    """Percentile bootstrap CI of ``metric(*arrays)`` over patients."""
    arrays = tuple(np.asarray(a) for a in arrays)
    value = metric(*arrays)
    stats = np.array([metric(*(a[idx] for a in arrays)) for idx in _indices(len(arrays[0]), n_boot, seed)])
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return Estimate(value, float("nan"), float("nan"), 0)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(value), float(low), float(high), len(stats))


def _lenient(metric: Callable[..., float]) -> Callable[..., float]:
    """``metric`` returning NaN on a resample it cannot evaluate (no event before a horizon, no comparable pair, a
    Cox fit that does not converge); bootstrap_metric drops those resamples."""

    def wrapped(*arrays: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return float(metric(*arrays))
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError):  # incl. HorizonError, ConvergenceError
                return float("nan")

    return wrapped


def _with_ci(metric: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int, alpha: float,
             name: str = "metric") -> Estimate:
    """Point estimate computed strictly (errors surface), CI by bootstrap_metric over patients; warns when many
    resamples could not be evaluated, because the CI is then conditional on the ones that could."""
    value = float(metric(*arrays))
    est = bootstrap_metric(_lenient(metric), *arrays, n_boot=n_boot, seed=seed, alpha=alpha)
    if n_boot and est.n_boot < 0.9 * n_boot:
        warnings.warn(f"{name}: only {est.n_boot} of {n_boot} bootstrap resamples could be evaluated (a horizon or "
                      "time grid at the edge of the follow-up, or too few events); its CI is unreliable", stacklevel=3)
    return Estimate(value, est.low, est.high, est.n_boot)


def paired_bootstrap_difference(time: np.ndarray, event: np.ndarray, risk_a: np.ndarray, risk_b: np.ndarray, *,
                                n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[Estimate, float]:
    """C(a) - C(b) on the same resampled patients, and a two-sided bootstrap p-value for no difference."""
    time, event, risk_a, risk_b = (np.asarray(x) for x in (time, event, risk_a, risk_b))
    diff = harrell_c(time, event, risk_a) - harrell_c(time, event, risk_b)
    boots = []
    for idx in _indices(len(time), n_boot, seed):
        boots.append(harrell_c(time[idx], event[idx], risk_a[idx]) - harrell_c(time[idx], event[idx], risk_b[idx]))
    b = np.asarray(boots)
    b = b[np.isfinite(b)]
    if len(b) == 0:
        return Estimate(float(diff), float("nan"), float("nan"), 0), float("nan")
    low, high = np.quantile(b, [alpha / 2, 1 - alpha / 2])
    # Share of resamples on the other side of zero, doubled (percentile bootstrap test).
    p = float(min(1.0, 2 * min((b <= 0).mean(), (b >= 0).mean())))
    return Estimate(float(diff), float(low), float(high), len(b)), p


# --------------------------------------------------------------------------------------------------------------------
# All metrics of a model on one cohort


class _SharedFit:
    """Memoise one fit per resample so that metrics read from the same model (the HRs of all groups) share it: every
    metric sees the same resamples, so the second HR reuses the Cox fit made for the first."""

    def __init__(self, fit: Callable[..., np.ndarray]) -> None:
        self.fit, self.cache = fit, {}

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = self.fit(*arrays)
        return self.cache[key]


def evaluate_survival(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, surv: np.ndarray | None = None,
                      times: np.ndarray | None = None, horizons: Sequence[float] | None = None,
                      train_time: np.ndarray | None = None, train_event: np.ndarray | None = None,
                      groups=None, n_boot: int = 1000, seed: int = 0, tau: float | None = None,
                      surv_at_own_time: np.ndarray | None = None, alpha: float = 0.05, n_jobs: int = 1,
                      progress: bool = False, exclude: Sequence[str] = ()) -> dict[str, Estimate]:
    """Every survival metric the inputs allow, each with a percentile bootstrap CI over patients (same resamples for
    every metric; training data fixed).

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

    # name -> (metric function, arrays resampled together)
    jobs: dict[str, tuple[Callable[..., float], tuple[np.ndarray, ...]]] = {
        "harrell_c": (harrell_c, (time, event, risk)),
    }
    if has_train:
        tr = {"train_time": train_time, "train_event": train_event}
        tau = default_tau(time, train_time) if tau is None else float(tau)
        jobs["uno_c"] = (partial(uno_c, tau=tau, **tr), (time, event, risk))
        if h is not None:
            for x in h:
                jobs[f"auc_{_hkey(x)}d"] = (partial(lambda *a, x: time_dependent_auc(*a, [x], **tr)[0][0], x=x),
                                            (time, event, risk))
            jobs["mean_auc"] = (lambda *a: time_dependent_auc(*a, h, **tr)[1], (time, event, risk))
        if surv is not None and len(times) >= 2:
            _check_grid(times, time, event, train_time, train_event)
            jobs["ibs"] = (partial(integrated_brier, times=times, **tr), (time, event, surv))
    if surv is not None and h is not None:
        for x in h:
            s_h = _surv_at(surv, times, x)
            if has_train:
                jobs[f"brier_{_hkey(x)}d"] = (partial(lambda t, e, s, x: brier_at(t, e, s, [x], **tr)[0], x=x),
                                              (time, event, s_h))
            jobs[f"calibration_in_the_large_{_hkey(x)}d"] = (partial(calibration_in_the_large, horizon=x),
                                                             (time, event, s_h))
    jobs["calibration_slope"] = (calibration_slope, (time, event, risk))
    if surv_at_own_time is not None:
        jobs["d_calibration_p"] = (lambda t, e, s: d_calibration(t, e, s)["p_value"],
                                   (time, event, np.asarray(surv_at_own_time, float)))
    if groups is not None:
        if isinstance(groups, RiskGroups):
            labels = list(groups.labels)
            code = groups.codes(risk)
        else:  # plain labels: order the groups by their mean score, so the reference is the lowest-risk group
            assigned = np.asarray(groups).astype(str)
            labels = list(pd.Series(risk).groupby(assigned).mean().sort_values().index)
            code = pd.Categorical(assigned, categories=labels).codes.astype(int)
        jobs["logrank_p"] = (logrank_p, (time, event, code))
        hrs = _SharedFit(lambda t, e, c: hazard_ratios(t, e, c, range(len(labels)))["hr"].to_numpy())
        for k in range(1, len(labels)):
            jobs[f"hr_{labels[k]}_vs_{labels[0]}"] = (partial(lambda t, e, c, k: hrs(t, e, c)[k], k=k),
                                                      (time, event, code))

    if exclude:
        jobs = {k: v for k, v in jobs.items() if not any(fnmatch.fnmatchcase(k, pat) for pat in exclude)}
    run = partial(_with_ci, n_boot=n_boot, seed=seed, alpha=alpha)
    bar = partial(progress_bar, total=len(jobs), desc="bootstrap metrics", disable=not progress)
    if n_jobs == 1:
        return {name: run(fn, *arrays, name=name) for name, (fn, arrays) in bar(jobs.items())}
    out = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run)(fn, *arrays, name=name)
                                                          for name, (fn, arrays) in jobs.items())
    return dict(zip(jobs, bar(out), strict=True))


def evaluate_response(label: np.ndarray, prob: np.ndarray, n_boot: int = 1000, seed: int = 0, *,
                      threshold: float = 0.5, alpha: float = 0.05) -> dict[str, Estimate]:
    """AUC, Brier score and balanced accuracy of a response probability with bootstrap CIs over the labelled
    patients (unlabelled ones are dropped first)."""
    label, prob = _labelled(label, prob)
    if len(np.unique(label)) < 2:
        raise ValueError(f"response metrics need both classes among the {len(label)} labelled patients")
    bal = partial(balanced_accuracy, threshold=threshold)
    return {name: _with_ci(fn, label, prob, n_boot=n_boot, seed=seed, alpha=alpha, name=name)
            for name, fn in (("auc", response_auc), ("brier", response_brier), ("balanced_accuracy", bal))}

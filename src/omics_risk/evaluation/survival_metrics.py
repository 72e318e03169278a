"""The survival metric functions, each a thin, checked call of scikit-survival or lifelines (D-calibration from its
paper, as no library has it); see :mod:`omics_risk.evaluation.metrics` for the sign convention and which library
computes what. One metric per function, no bootstrap: that is :mod:`omics_risk.evaluation.bootstrap`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from scipy.stats import chisquare
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from omics_risk.evaluation.horizons import (
    HorizonError,
    _arrays,
    _censor_after,
    _check_grid,
    _check_train,
    _check_within_train,
    _follow_up,
    _sorted_columns,
    check_horizons,
    default_tau,
)

__all__ = ["brier_at", "calibration_in_the_large", "calibration_slope", "calibration_table", "d_calibration",
           "harrell_c", "integrated_brier", "time_dependent_auc", "uno_c"]


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


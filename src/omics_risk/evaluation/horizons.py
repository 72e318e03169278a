"""Checks of evaluation horizons, tau and time grids against the follow-up, and the helpers that every survival
metric shares to read its inputs (why a horizon cannot be evaluated is said here once, in :class:`HorizonError`).
Also the day-based time units and horizon labels of plots and metric descriptions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DAYS_PER_MONTH", "DAYS_PER_YEAR", "HorizonError", "check_horizons", "default_tau", "horizon_label",
           "time_grid"]

DAYS_PER_MONTH = 30.4375
DAYS_PER_YEAR = 365.25


class HorizonError(ValueError):
    """A horizon, ``tau`` or time grid that the follow-up of the data cannot support."""


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

def horizon_label(days: float) -> str:
    """A horizon in words: whole years as ``2 years``, otherwise months (``18 months``)."""
    years = days / DAYS_PER_YEAR
    if abs(years - round(years)) < 0.02 and round(years) >= 1:
        n = round(years)
        return f"{n} year" + ("s" if n != 1 else "")
    months = days / DAYS_PER_MONTH
    return f"{months:.0f} months" if abs(months - round(months)) < 0.05 else f"{days:.0f} days"



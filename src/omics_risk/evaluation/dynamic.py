"""Dynamic evaluation: discrimination at each landmark over a horizon window, with bootstrap CIs.

A dynamic model predicts, at each landmark day ``s``, the risk of an event in ``(s, s + window]`` for the patients
still at risk at ``s``. Each landmark is therefore its own evaluation: its own risk set, outcome times counted from the
landmark, events after the window censored at the window. This module runs the existing metric functions on each
landmark's patients (Harrell's C from :func:`~omics_risk.evaluation.survival_metrics.harrell_c`, the cumulative/dynamic
AUC from :func:`~omics_risk.evaluation.survival_metrics.time_dependent_auc`, CIs and paired differences from
:mod:`~omics_risk.evaluation.bootstrap`) and lays the results out one row per landmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate, _with_ci, paired_bootstrap_difference
from omics_risk.evaluation.horizons import HorizonError
from omics_risk.evaluation.survival_metrics import harrell_c, time_dependent_auc

__all__ = ["LandmarkOutcome", "censor_at_window", "landmark_auc_horizon", "landmark_comparison", "landmark_metrics"]

#: One landmark's evaluated patients: (time since the landmark in days, event 0/1, risk score, higher = riskier).
LandmarkOutcome = tuple[np.ndarray, np.ndarray, np.ndarray]


def censor_at_window(time: np.ndarray, event: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Administrative censoring at the end of the horizon window: an event after ``window`` days counts as
    event-free at ``window`` (what a landmark model is asked to predict)."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    late = time > window
    return np.where(late, float(window), time), event & ~late


def landmark_auc_horizon(window: float, time: np.ndarray, train_time: np.ndarray) -> float:
    """The horizon (days since the landmark) at which the time-dependent AUC is read: ``window`` itself when the
    evaluation and training follow-ups both extend past it; when either ends exactly at ``window`` (data already
    censored at the window) the largest day below it, i.e. the same cases and controls for continuous times."""
    top = min(float(np.max(time)), float(np.max(train_time)))
    return float(np.nextafter(window, 0.0)) if top == window else float(window)


def _checked(landmark: float, outcome: LandmarkOutcome, what: str) -> LandmarkOutcome:
    if len(outcome) != 3:
        raise ValueError(f"{what} at landmark {landmark:g}: expected (time since landmark, event, risk), "
                         f"got {len(outcome)} arrays")
    time, event, risk = (np.asarray(a, dtype=float) for a in outcome)
    if not (time.shape == event.shape == risk.shape) or time.ndim != 1:
        raise ValueError(f"{what} at landmark {landmark:g}: time, event and risk must be 1-D arrays of one length, "
                         f"got shapes {time.shape}, {event.shape}, {risk.shape}")
    if not (np.isfinite(time).all() and np.isfinite(risk).all() and np.isfinite(event).all()):
        raise ValueError(f"{what} at landmark {landmark:g}: time, event and risk must be finite; leave out patients "
                         "without follow-up and give absent inputs an uninformative score")
    if (time < 0).any():
        raise ValueError(f"{what} at landmark {landmark:g}: {int((time < 0).sum())} negative time(s); times count "
                         "from the landmark, and patients whose event or censoring came before it are not at risk")
    return time, event, risk


def _lookup(mapping: Mapping[float, object], landmark: float, what: str) -> object:
    for key, value in mapping.items():
        if np.isclose(float(key), landmark):
            return value
    raise KeyError(f"{what} has no entry for landmark {landmark:g} (has: "
                   f"{', '.join(f'{float(k):g}' for k in mapping) or 'none'})")


def _auc_at(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, horizon: float, train_time: np.ndarray,
            train_event: np.ndarray) -> float:
    return float(time_dependent_auc(time, event, risk, [horizon], train_time=train_time, train_event=train_event)[0][0])


def _nan_estimate() -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), 0)


def landmark_metrics(landmarks: Sequence[float], per_landmark: Mapping[float, LandmarkOutcome], horizon_window: float,
                     *, train: Mapping[float, tuple[np.ndarray, np.ndarray]] | None = None, n_boot: int = 200,
                     seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """One row per landmark: patients at risk, events within the window, Harrell's C within the window and the
    cumulative/dynamic AUC at the end of the window, each with a percentile bootstrap CI over patients.

    ``per_landmark[s]`` holds the patients at risk at landmark ``s``: (time since ``s``, event, risk). Harrell's C
    censors events after ``s + horizon_window`` at the window (:func:`censor_at_window`). The AUC weights by the
    censoring distribution of ``train[s]`` = (time since ``s``, event) of the training patients at that landmark,
    default the evaluated patients themselves (internal validation); its horizon is :func:`landmark_auc_horizon`
    (column ``auc_horizon``). A metric the landmark cannot support (no event in the window, follow-up ending before
    it) is NaN, with the reason in ``note``.
    """
    window = float(horizon_window)
    if not window > 0:
        raise ValueError(f"horizon_window must be > 0 days, got {horizon_window!r}")
    rows = []
    for s in (float(x) for x in landmarks):
        time, event, risk = _checked(s, _lookup(per_landmark, s, "per_landmark"), "per_landmark")  # type: ignore
        t_win, e_win = censor_at_window(time, event, window)
        tr_time, tr_event = (time, event) if train is None else (
            np.asarray(a, dtype=float) for a in _lookup(train, s, "train"))  # type: ignore[misc]
        notes = []
        if e_win.sum() == 0:
            notes.append(f"no event within {window:g} days of the landmark")
            c = auc = _nan_estimate()
            horizon = window
        else:
            c = _with_ci(harrell_c, t_win, e_win, risk, n_boot=n_boot, seed=seed, alpha=alpha, name=f"C at {s:g}")
            horizon = landmark_auc_horizon(window, time, tr_time)
            metric = partial(_auc_at, horizon=horizon, train_time=tr_time, train_event=tr_event.astype(bool))
            try:
                auc = _with_ci(metric, time, event, risk, n_boot=n_boot, seed=seed, alpha=alpha, name=f"AUC at {s:g}")
            except HorizonError as err:
                notes.append(f"AUC: {err}")
                auc = _nan_estimate()
        rows.append({"landmark": s, "n_at_risk": len(time), "n_events": int(e_win.sum()),
                     **c.as_dict("harrell_c"), "auc_horizon": horizon, **auc.as_dict("auc"),
                     "n_boot": c.n_boot, "note": "; ".join(notes)})
    return pd.DataFrame(rows)


def landmark_comparison(landmarks: Sequence[float], per_landmark_a: Mapping[float, LandmarkOutcome],
                        per_landmark_b: Mapping[float, LandmarkOutcome], horizon_window: float, *, n_boot: int = 200,
                        seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparison of two models at each landmark: C(a) - C(b) within the window on the same resampled
    patients (:func:`~omics_risk.evaluation.bootstrap.paired_bootstrap_difference`), its CI and a two-sided p.

    Both mappings must hold the same patients in the same order at each landmark (same time and event).
    """
    window = float(horizon_window)
    rows = []
    for s in (float(x) for x in landmarks):
        ta, ea, ra = _checked(s, _lookup(per_landmark_a, s, "per_landmark_a"), "model a")  # type: ignore[arg-type]
        tb, eb, rb = _checked(s, _lookup(per_landmark_b, s, "per_landmark_b"), "model b")  # type: ignore[arg-type]
        if not (np.array_equal(ta, tb) and np.array_equal(ea, eb)):
            raise ValueError(f"landmark {s:g}: the two models were evaluated on different patients or outcomes "
                             f"({len(ta)} vs {len(tb)} rows); pair them on the same landmark risk set")
        t_win, e_win = censor_at_window(ta, ea, window)
        if e_win.sum() == 0:
            diff, p = _nan_estimate(), float("nan")
        else:
            diff, p = paired_bootstrap_difference(t_win, e_win, ra, rb, n_boot=n_boot, seed=seed, alpha=alpha)
        rows.append({"landmark": s, "n_at_risk": len(ta), "n_events": int(e_win.sum()),
                     **diff.as_dict("c_difference"), "p_value": p, "n_boot": diff.n_boot})
    return pd.DataFrame(rows)

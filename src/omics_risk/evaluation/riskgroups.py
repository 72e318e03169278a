"""Risk groups with cut-offs fixed on the training data, and their Kaplan-Meier, log-rank and hazard-ratio summary.

Cut-offs are quantiles of the *training* risk scores only (``fit``); validation or external patients are then
assigned with those fixed cut-offs (``assign``), as a prospective user would be, so the group sizes of an external
cohort show how the score shifts. Scores follow the package convention: higher = riskier. Kaplan-Meier medians and
the log-rank test come from lifelines (``KaplanMeierFitter``, ``multivariate_logrank_test``), hazard ratios from a
lifelines ``CoxPHFitter`` on group indicators with the lowest-risk group as reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

__all__ = ["RiskGroups", "hazard_ratios", "logrank_p"]

_SCHEMES = {"median": (0.5,), "tertiles": (1 / 3, 2 / 3)}


def _labels(n_groups: int) -> tuple[str, ...]:
    if n_groups == 2:
        return ("low", "high")
    if n_groups == 3:
        return ("low", "intermediate", "high")
    return ("low", *(f"intermediate_{k}" for k in range(1, n_groups - 1)), "high")


class RiskGroups:
    """Split patients into risk groups at quantiles of the training risk scores.

    ``scheme`` is ``"median"`` (low / high), ``"tertiles"`` (low / intermediate / high) or an increasing sequence of
    quantiles in (0, 1), e.g. ``(0.25, 0.75)`` (low / intermediate / high) or quartiles (low, intermediate_1,
    intermediate_2, high). A score equal to a cut-off goes to the higher group.
    """

    def __init__(self, scheme: str | Sequence[float] = "median") -> None:
        if isinstance(scheme, str):
            if scheme not in _SCHEMES:
                raise ValueError(f"unknown risk-group scheme {scheme!r}: use one of {sorted(_SCHEMES)} or a sequence "
                                 "of quantiles in (0, 1)")
            q = np.asarray(_SCHEMES[scheme])
        else:
            q = np.asarray(list(scheme), dtype=float)
            if q.ndim != 1 or q.size == 0 or not ((q > 0) & (q < 1)).all() or (np.diff(q) <= 0).any():
                raise ValueError(f"risk-group quantiles must be increasing numbers in (0, 1), got {list(scheme)}")
        self.scheme = scheme
        self.quantiles = q
        self.labels = _labels(len(q) + 1)

    def __repr__(self) -> str:
        cut = f", cutoffs={np.round(self.cutoffs_, 4).tolist()}" if hasattr(self, "cutoffs_") else ""
        return f"RiskGroups(scheme={self.scheme!r}{cut})"

    @staticmethod
    def _risk(risk: np.ndarray, what: str) -> np.ndarray:
        risk = np.asarray(risk, dtype=float)
        if risk.ndim != 1 or not np.isfinite(risk).all():
            raise ValueError(f"{what} must be a 1-D array of finite risk scores (NaN: a patient the model could not "
                             "score; drop it first)")
        return risk

    def fit(self, train_risk: np.ndarray) -> Self:
        """Fix the cut-offs at the quantiles of the training risk scores."""
        risk = self._risk(train_risk, "train_risk")
        if len(risk) < len(self.labels):
            raise ValueError(f"{len(risk)} training scores cannot define {len(self.labels)} risk groups")
        self.cutoffs_ = np.quantile(risk, self.quantiles)
        if (np.diff(self.cutoffs_) <= 0).any():
            warnings.warn(f"tied training scores give equal cut-offs {self.cutoffs_.tolist()}: some risk groups will "
                          "be empty", stacklevel=2)
        return self

    def assign(self, risk: np.ndarray) -> np.ndarray:
        """Group label of each score with the fitted (training) cut-offs."""
        if not hasattr(self, "cutoffs_"):
            raise RuntimeError("RiskGroups.assign before fit: fit the cut-offs on the training risk scores first")
        risk = self._risk(risk, "risk")
        return np.asarray(self.labels, dtype=object)[np.searchsorted(self.cutoffs_, risk, side="right")]

    def codes(self, risk: np.ndarray) -> np.ndarray:
        """Integer group of each score (0 = low)."""
        labels = self.assign(risk)
        return pd.Categorical(labels, categories=list(self.labels)).codes.astype(int)

    def logrank(self, time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
        """Log-rank test p-value across the groups (lifelines ``multivariate_logrank_test``); NaN with < 2 groups."""
        return logrank_p(time, event, self.assign(risk))

    def summary(self, time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> pd.DataFrame:
        """Per group: n, events, Kaplan-Meier median (days; inf = not reached) with 95 % CI, and the hazard ratio vs
        the lowest group with 95 % CI and Wald p (:func:`hazard_ratios`)."""
        time, event = np.asarray(time, float), np.asarray(event).astype(bool)
        labels = self.assign(risk)
        rows = []
        for lab in self.labels:
            m = labels == lab
            row = {"group": lab, "n": int(m.sum()), "events": int(event[m].sum()), "km_median": np.nan,
                   "km_median_low": np.nan, "km_median_high": np.nan}
            if m.any():
                kmf = KaplanMeierFitter().fit(time[m], event[m])
                ci = median_survival_times(kmf.confidence_interval_).iloc[0]
                row.update(km_median=float(kmf.median_survival_time_), km_median_low=float(ci.iloc[0]),
                           km_median_high=float(ci.iloc[1]))
            rows.append(row)
        table = pd.DataFrame(rows)
        hr = hazard_ratios(time, event, labels, self.labels)
        table[hr.columns] = hr.to_numpy()
        return table


def logrank_p(time: np.ndarray, event: np.ndarray, labels: np.ndarray) -> float:
    """Log-rank test p-value across the groups in ``labels`` (lifelines); NaN with fewer than two groups."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(multivariate_logrank_test(np.asarray(time, float), labels, np.asarray(event).astype(bool)).p_value)


def hazard_ratios(time: np.ndarray, event: np.ndarray, labels: np.ndarray, order: Sequence) -> pd.DataFrame:
    """Hazard ratio (with 95 % CI and Wald p) of each group vs ``order[0]`` from one lifelines Cox model on group
    indicators. Rows follow ``order``; the reference row has hr 1. A group without patients or events has no finite
    HR: its row is NaN and its patients are left out of the model (all rows are NaN if the reference has no event).
    """
    time, event, labels = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(labels)
    cols = ["hr", "hr_low", "hr_high", "hr_p"]
    table = pd.DataFrame(np.nan, index=pd.Index(list(order), name="group"), columns=cols)
    table.iloc[0, 0] = 1.0
    ref = order[0]
    estimable = [lab for lab in order[1:] if event[labels == lab].any()]
    if not (event[labels == ref].any() and estimable):
        return table
    keep = np.isin(labels, [ref, *estimable])
    frame = pd.DataFrame({f"g{k}": (labels[keep] == lab).astype(float) for k, lab in enumerate(estimable)})
    frame["time"], frame["event"] = time[keep], event[keep]
    fit = CoxPHFitter().fit(frame, "time", "event").summary
    for k, lab in enumerate(estimable):
        table.loc[lab, cols] = fit.loc[f"g{k}", ["exp(coef)", "exp(coef) lower 95%", "exp(coef) upper 95%",
                                                 "p"]].to_numpy(float)
    return table

"""Discrimination metrics with bootstrap confidence intervals, computed by scikit-survival.

Sign convention everywhere in omics-risk: **higher score = higher risk**. scikit-survival's concordance takes risk
scores with that convention; lifelines' ``concordance_index`` takes predicted *times* (so its C is 1 - ours for the
same scores, scikit-survival #498) and is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

__all__ = ["Estimate", "bootstrap_metric", "harrell_c", "paired_bootstrap_difference", "response_auc"]


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


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (ties in risk count 1/2); NaN when there is no comparable pair."""
    event = np.asarray(event).astype(bool)
    if event.sum() == 0:
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])
    except (ValueError, ZeroDivisionError):  # no comparable pairs in a tiny resample
        return float("nan")


def response_auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a response probability (higher = more likely to respond)."""
    label = np.asarray(label)
    if len(np.unique(label[~np.isnan(label)])) < 2:
        return float("nan")
    ok = ~np.isnan(label)
    return float(roc_auc_score(label[ok], np.asarray(score)[ok]))


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
    low, high = np.quantile(b, [alpha / 2, 1 - alpha / 2])
    # Share of resamples on the other side of zero, doubled (percentile bootstrap test).
    p = float(min(1.0, 2 * min((b <= 0).mean(), (b >= 0).mean())))
    return Estimate(float(diff), float(low), float(high), len(b)), p

"""Percentile bootstrap over patients: a point estimate with its CI (:class:`Estimate`), the lenient wrapper that
drops resamples a metric cannot evaluate, and the paired test of two scores' C-index difference."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from omics_risk.evaluation.survival_metrics import harrell_c

__all__ = ["Estimate", "bootstrap_metric", "paired_bootstrap_difference"]


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


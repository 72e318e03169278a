"""What a cohort's pooled out-of-fold risks need before they are evaluated: the horizons its follow-up supports,
percentile ranks within test folds (as ``train()`` pools them), risk groups with fixed cut-offs, survival at a
horizon, and the td-AUC curve with bootstrap CIs. Shared by the run report, the comparison and external validation."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from omics_risk.evaluation.horizons import HorizonError, check_horizons
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.survival_metrics import time_dependent_auc

__all__ = ["fixed_risk_groups", "surv_at", "td_auc_curve", "usable_horizons", "within_fold_ranks"]


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
    from omics_risk.evaluation.bootstrap import bootstrap_indices  # here: bootstrap imports this module

    boots = np.full((n_boot, len(h)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, idx in enumerate(bootstrap_indices(len(time), n_boot, seed)):  # the resamples of every output
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


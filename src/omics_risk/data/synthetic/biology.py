"""Shared building blocks of the latent tumour biology: correlated latents, event times, censoring, oracles.

Every synthetic cohort starts from a few standard-normal latent variables per patient (burden,
aggressiveness, immune response, ...). Clinical columns, every modality and the outcomes are noisy
functions of subsets of them, so that no single modality sees the whole true risk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit

DAYS_PER_YEAR = 365.25


def correlated_latents(rng: np.random.Generator, n: int, names: Sequence[str],
                       corr: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Standard-normal latents with the given pairwise correlations (others independent)."""
    k = len(names)
    cov = np.eye(k)
    idx = {nm: i for i, nm in enumerate(names)}
    for (a, b), r in corr.items():
        cov[idx[a], idx[b]] = cov[idx[b], idx[a]] = r
    z = rng.multivariate_normal(np.zeros(k), cov, size=n, method="cholesky")
    return pd.DataFrame(z, columns=list(names))


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero-mean unit-variance copy (so that derived latents stay on the latent scale)."""
    x = np.asarray(x, dtype=float)
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def weibull_ph_time(rng: np.random.Generator, eta: np.ndarray, shape: float, median_days: float) -> np.ndarray:
    """Event times from a Weibull proportional-hazards model: S(t | eta) = exp(-(t/scale)^k * exp(eta)).

    ``median_days`` is the median for eta = 0, which fixes the baseline scale.
    """
    scale = median_days / np.log(2) ** (1 / shape)
    u = rng.random(len(eta))
    return scale * (-np.log(u) * np.exp(-eta)) ** (1 / shape)


def gompertz_other_cause(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Days to death from other causes (smokers' background mortality: ~2%/year at 65, doubling per 8 years)."""
    h0 = 0.02 / DAYS_PER_YEAR * 2 ** ((age - 65) / 8)
    b = np.log(2) / (8 * DAYS_PER_YEAR)
    u = rng.random(len(age))
    return np.log1p(-np.log(u) * b / h0) / b


def administrative_censoring(rng: np.random.Generator, n: int, min_years: float, max_years: float,
                             loss_per_year: float) -> np.ndarray:
    """Days of follow-up: staggered accrual until a data cut, plus random loss to follow-up."""
    admin = rng.uniform(min_years, max_years, n) * DAYS_PER_YEAR
    loss = rng.exponential(DAYS_PER_YEAR / loss_per_year, n)
    return np.minimum(admin, loss)


def ordinal_from_score(score: np.ndarray, levels: Sequence[str], probs: Sequence[float]) -> np.ndarray:
    """Cut a continuous score at its quantiles so that the levels have the given frequencies."""
    cuts = np.quantile(score, np.cumsum(probs)[:-1])
    return np.asarray(levels, dtype=object)[np.searchsorted(cuts, score)]


def bernoulli_logit(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(len(logit)) < expit(logit)).astype(int)


def calibrated_logit(score: np.ndarray, rate: float) -> np.ndarray:
    """Shift ``score`` so that mean(expit(score + c)) equals ``rate`` (bisection; why: exact prevalences)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expit(score + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return score + (lo + hi) / 2


def set_missing(rng: np.random.Generator, df: pd.DataFrame, rates: dict[str, float]) -> None:
    """Blank a random fraction of each column in place (clinical data are never complete)."""
    for col, rate in rates.items():
        hit = rng.random(len(df)) < rate
        df[col] = df[col].astype(object)
        df.loc[hit, col] = None


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of a risk score (higher = earlier event), with scikit-survival."""
    # lazy: scikit-survival (and scikit-learn, ~0.7 s) loads for the truth summary only, not with every generator
    from sksurv.metrics import concordance_index_censored

    ok = np.isfinite(time) & np.isfinite(risk) & np.isfinite(event)
    return float(concordance_index_censored(event[ok].astype(bool), time[ok], risk[ok])[0])


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (rank formulation; ties count one half)."""
    ok = np.isfinite(y) & np.isfinite(score)
    y, score = y[ok].astype(int), score[ok]
    ranks = pd.Series(score).rank().to_numpy()
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def assessment_schedule(rng: np.random.Generator, horizon: float, first: float = 42.0, interval: float = 42.0,
                        late_interval: float = 63.0, switch_day: float = 365.0, jitter: float = 4.0) -> np.ndarray:
    """Days of scheduled tumour assessments (every 6 weeks, every 9 weeks after a year) up to ``horizon``."""
    days = []
    d = first
    while d <= horizon:
        days.append(d + rng.uniform(-jitter, jitter))
        d += interval if d < switch_day else late_interval
    return np.round(np.asarray(days, dtype=float))


#: Nominal days of the post-operative surveillance CTs: 3-monthly for two years, then 6-monthly.
SURVEILLANCE_VISITS = np.concatenate([np.arange(91, 731, 91), np.arange(912, 3700, 182)]).astype(float)


def surveillance_detection(rng: np.random.Generator, t_event: np.ndarray, symptomatic: float = 0.3) -> np.ndarray:
    """Day a recurrence is diagnosed: at the next surveillance CT (3-monthly for two years, then 6-monthly),
    or earlier, between visits, for the ``symptomatic`` share of patients."""
    return surveillance_detection_details(rng, t_event, symptomatic)[0]


def surveillance_detection_details(rng: np.random.Generator, t_event: np.ndarray, symptomatic: float = 0.3
                                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`surveillance_detection` and which patients were diagnosed between visits (same random draws), so
    that the visit schedule can be written out consistently with the detection day."""
    visits = SURVEILLANCE_VISITS
    k = np.searchsorted(visits, t_event)
    nxt = np.where(k < len(visits), visits[np.minimum(k, len(visits) - 1)], t_event)
    nxt = nxt + rng.uniform(-10, 10, len(t_event))
    between = t_event + rng.uniform(0, 1, len(t_event)) * np.maximum(nxt - t_event, 0)
    is_symptomatic = rng.random(len(t_event)) < symptomatic
    return np.where(is_symptomatic, between, np.maximum(nxt, t_event)), is_symptomatic


def radiological_pfs(schedule: np.ndarray, t_progression: float, t_death: float,
                     t_censor: float) -> tuple[float, int, int]:
    """PFS as trials record it: progression is found at the first assessment on or after it (interval
    censoring), death counts as an event, and censoring falls back to the last assessment before the cut.

    Returns (pfs_time, pfs_event, number of assessments done).
    """
    seen = schedule[schedule >= t_progression]
    t_found = float(seen[0]) if len(seen) else np.inf
    if t_found <= min(t_death, t_censor):
        return t_found, 1, int(np.sum(schedule <= t_found))
    if t_death <= t_censor:
        return float(np.ceil(t_death)), 1, int(np.sum(schedule <= t_death))
    done = schedule[schedule <= t_censor]
    return (float(done[-1]) if len(done) else float(max(np.floor(t_censor), 1.0))), 0, len(done)

"""Sample size of a non-inferiority trial of ctDNA-guided against standard CT follow-up, in closed form and by
simulation, and its power over the margin.

Endpoint: the share of recurrences found within the curable window (higher is better). With ``p_e`` (ctDNA arm),
``p_s`` (standard arm) and margin ``M``, the trial tests H0: ``p_e - p_s <= -M`` against H1: ``p_e - p_s > -M``
one-sided at ``alpha`` with the Wald statistic ``(p̂_e - p̂_s + M) / sqrt(p̂_e q̂_e / n_e + p̂_s q̂_s / n_s)``.

* :func:`closed_form_recurrences`: the normal-approximation sample size (Blackwelder 1982; Chow, Shao & Wang,
  *Sample Size Calculations in Clinical Research*, section 4.2), recurrences per arm
  ``(z_{1-alpha} + z_{1-beta})^2 (p_e q_e + p_s q_s) / (p_e - p_s + M)^2``, through statsmodels' ``NormalIndPower``.
* :func:`simulated_power` / :func:`simulated_size`: the same test applied to simulated trials. An
  :class:`ArmModel` says how a randomised patient turns into the endpoint: a recurrence within the horizon with
  probability ``p_recur``, found in time with probability ``p_window``. Drawing patients from the cohort's own
  simulated outcomes under each arm's schedule (a bootstrap of patients) is a multinomial draw over the three
  outcomes (no recurrence, found in time, found late), which is what is drawn here. Given the closed form's
  assumptions (``p_recur = 1``: a fixed number of recurrences, Bernoulli outcomes) the simulation reproduces it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower

__all__ = ["ArmModel", "closed_form_recurrences", "margin_table", "simulated_power", "simulated_size"]


@dataclass(frozen=True)
class ArmModel:
    """One arm: a patient recurs within the horizon with ``p_recur``; a recurrence is found in time with
    ``p_window``. ``p_recur = 1`` is the closed form's world (every randomised unit is a recurrence)."""

    p_window: float
    p_recur: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.p_window <= 1 and 0 < self.p_recur <= 1):
            raise ValueError(f"probabilities out of range: p_window={self.p_window}, p_recur={self.p_recur}")


def closed_form_recurrences(p_e: float, p_s: float, margin: float, *, alpha: float = 0.025,
                            power: float = 0.8) -> float:
    """Recurrences per arm (unrounded) for the one-sided non-inferiority test at ``alpha`` with ``power``."""
    gap = p_e - p_s + margin
    if gap <= 0:
        return float("inf")  # the true difference is at or below the margin: no size gives the power
    var = p_e * (1 - p_e) + p_s * (1 - p_s)
    if var == 0:
        return 1.0
    # NormalIndPower: n1 = ((z_a + z_b) / d)^2 (1 + 1/ratio); with d = gap / sqrt(var / 2) and ratio 1 this is
    # (z_a + z_b)^2 var / gap^2
    return float(NormalIndPower().solve_power(effect_size=gap / math.sqrt(var / 2), alpha=alpha, power=power,
                                              ratio=1.0, alternative="larger"))


def simulated_power(exp: ArmModel, std: ArmModel, n: int, margin: float, *, alpha: float = 0.025,
                    n_sim: int = 20000, seed: int = 0) -> float:
    """Share of ``n_sim`` simulated trials with ``n`` randomised per arm that reject H0 (the Wald test above)."""
    rng = np.random.default_rng(seed)
    z = norm.ppf(1 - alpha)

    def arm(m: ArmModel) -> tuple[np.ndarray, np.ndarray]:
        rec = np.full(n_sim, n) if m.p_recur >= 1 else rng.binomial(n, m.p_recur, n_sim)
        return rng.binomial(rec, m.p_window), rec

    xe, ne = arm(exp)
    xs, ns = arm(std)
    with np.errstate(invalid="ignore", divide="ignore"):
        pe, ps = xe / ne, xs / ns
        se = np.sqrt(pe * (1 - pe) / ne + ps * (1 - ps) / ns)
        stat = (pe - ps + margin) / se
    # a trial without recurrences in an arm rejects nothing; se = 0 (all or none found in both): the sign decides
    reject = np.where(se > 0, stat > z, (pe - ps + margin) > 0) & (ne > 0) & (ns > 0)
    return float(reject.mean())


def simulated_size(exp: ArmModel, std: ArmModel, margin: float, *, alpha: float = 0.025, power: float = 0.8,
                   n_sim: int = 20000, seed: int = 0, n_max: int = 1_000_000) -> int:
    """Smallest ``n`` per arm whose simulated power reaches ``power`` (bisection; each ``n`` sees the same seed).
    ``n_max + 1`` when even ``n_max`` does not."""
    def ok(n: int) -> bool:
        return simulated_power(exp, std, n, margin, alpha=alpha, n_sim=n_sim, seed=seed) >= power

    lo, hi = 1, 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > n_max:
            return n_max + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def margin_table(exp: ArmModel, std: ArmModel, margins: Sequence[float], *, alpha: float = 0.025,
                 power: float = 0.8, n_sim: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Per margin: recurrences per arm (closed form), randomised patients per arm (closed form scaled by the
    recurrence probability, and by simulation of patients)."""
    rows = []
    p_rec = min(exp.p_recur, std.p_recur)
    for m in margins:
        rec = closed_form_recurrences(exp.p_window, std.p_window, float(m), alpha=alpha, power=power)
        sim = simulated_size(exp, std, float(m), alpha=alpha, power=power, n_sim=n_sim, seed=seed) \
            if math.isfinite(rec) else float("inf")
        rows.append({"margin": float(m), "recurrences_per_arm_closed_form": math.ceil(rec) if math.isfinite(rec)
                     else float("inf"),
                     "patients_per_arm_closed_form": math.ceil(rec / p_rec) if math.isfinite(rec) else float("inf"),
                     "patients_per_arm_simulated": sim})
    return pd.DataFrame(rows)

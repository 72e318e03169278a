"""Recurrence onsets to simulate on: the generator's truth on synthetic cohorts, an imputation on real ones; the
symptom delay; and each patient's predicted recurrence-free curve (a model's, the truth's, or nobody's).

**Synthetic cohorts** (``truth/patients.csv``) carry the true radiological onset
(``radiological_onset_day_uncensored``), molecular onset (``molecular_relapse_day``) and the day of death from other
causes: surveillance runs until the horizon or that death, whatever the cohort's administrative censoring.

**Real cohorts** only have the day a recurrence was *found* under their own follow-up, so the onset lies somewhere
before it (interval-censored). :class:`SojournModel` imputes it: the onset precedes the detection by a preclinical
sojourn time, exponential with mean ``mean_days``, truncated at ``lookback_days`` (the cohort's own scan interval:
the scan before found nothing) and at the index date. The molecular onset precedes the radiological one by a
log-normal lead (median ``lead_median_days``). These are assumptions, stated in the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["OnsetTable", "SojournModel", "SymptomDelay", "curves_from_truth", "marginal_curves", "onsets_from_truth"]

#: truth/patients.csv columns read on synthetic cohorts.
TRUTH_ONSET = "radiological_onset_day_uncensored"
TRUTH_MOLECULAR = "molecular_relapse_day"
TRUTH_DEATH = "other_cause_death_day"
TRUTH_RISK = "true_risk_rfs"


@dataclass(frozen=True)
class SymptomDelay:
    """Days from radiological onset to symptoms that bring the patient in between scans: ``exponential`` (mean
    ``mean_days``), ``lognormal`` (median ``median_days``, ``sdlog``), ``fixed`` (``mean_days``) or ``none``."""

    distribution: str = "exponential"
    mean_days: float = 270.0
    median_days: float = 180.0
    sdlog: float = 0.8

    def __post_init__(self) -> None:
        if self.distribution not in ("exponential", "lognormal", "fixed", "none"):
            raise ValueError(f"symptoms.distribution must be exponential, lognormal, fixed or none, got "
                             f"{self.distribution!r}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.distribution == "exponential":
            return rng.exponential(self.mean_days, n)
        if self.distribution == "lognormal":
            return np.exp(np.log(self.median_days) + self.sdlog * rng.normal(0, 1, n))
        if self.distribution == "fixed":
            return np.full(n, float(self.mean_days))
        return np.full(n, np.inf)

    def describe(self) -> str:
        return {"exponential": f"exponential with mean {self.mean_days:g} days",
                "lognormal": f"log-normal with median {self.median_days:g} days (sdlog {self.sdlog:g})",
                "fixed": f"{self.mean_days:g} days for everyone",
                "none": "never (no interval recurrences)"}[self.distribution]


@dataclass(frozen=True)
class SojournModel:
    """Onset imputation for observed detections (module docstring)."""

    mean_days: float = 120.0
    lookback_days: float = 182.0
    lead_median_days: float = 150.0
    lead_sdlog: float = 0.5

    def onset(self, rng: np.random.Generator, detection: np.ndarray) -> np.ndarray:
        """Onset = detection - sojourn, the sojourn exponential truncated to [0, min(lookback, detection)]
        (inverse CDF of the truncated exponential); NaN / inf detections stay as they are."""
        det = np.asarray(detection, dtype=float)
        cap = np.clip(np.minimum(self.lookback_days, np.where(np.isfinite(det), det, 0.0)), 0.0, None)
        u = rng.random(len(det))
        sojourn = -self.mean_days * np.log1p(-u * (1 - np.exp(-cap / self.mean_days)))
        return np.where(np.isfinite(det), det - sojourn, det)

    def molecular(self, rng: np.random.Generator, onset: np.ndarray) -> np.ndarray:
        lead = np.exp(np.log(self.lead_median_days) + self.lead_sdlog * rng.normal(0, 1, len(onset)))
        return np.where(np.isfinite(onset), np.maximum(onset - lead, 0.0), onset)

    def describe(self) -> str:
        return (f"onset = observed recurrence day minus a preclinical sojourn, exponential with mean "
                f"{self.mean_days:g} days truncated at {self.lookback_days:g} days (the cohort's scan interval); "
                f"molecular onset {self.lead_median_days:g} days earlier (median, log-normal sdlog "
                f"{self.lead_sdlog:g})")


@dataclass
class OnsetTable:
    """Per patient: radiological and molecular onset (inf = none), the end of follow-up for scans (death or last
    contact) and for symptoms, whether the patient is usable and why not, and where the onsets came from."""

    onset: np.ndarray
    molecular: np.ndarray
    follow_up_end: np.ndarray
    alive_until: np.ndarray
    usable: np.ndarray
    reason: np.ndarray
    source: str
    risk_truth: np.ndarray | None = None


def onsets_from_truth(patient_ids: pd.Series, truth: pd.DataFrame) -> OnsetTable:
    """The generator's onsets (days) for ``patient_ids``; a patient missing from the truth is not usable."""
    t = truth.assign(patient_id=truth["patient_id"].astype(str)).set_index("patient_id")
    t = t.reindex(patient_ids.astype(str))
    found = t[TRUTH_ONSET].notna().to_numpy() | t[TRUTH_DEATH].notna().to_numpy()
    onset = t[TRUTH_ONSET].to_numpy(float)
    mol = t[TRUTH_MOLECULAR].to_numpy(float) if TRUTH_MOLECULAR in t else onset.copy()
    death = t[TRUTH_DEATH].to_numpy(float)
    onset = np.where(np.isfinite(onset), onset, np.inf)
    mol = np.where(np.isfinite(mol), np.minimum(mol, onset), onset)
    death = np.where(np.isfinite(death), death, np.inf)
    reason = np.where(found, "", "not in truth/patients.csv")
    risk = t[TRUTH_RISK].to_numpy(float) if TRUTH_RISK in t else None
    return OnsetTable(onset, mol, death, death, found, reason.astype(object), "truth", risk)


def curves_from_truth(onset: np.ndarray, end: np.ndarray, risk: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Each patient's recurrence-free curve from the generator's own risk score: a Weibull proportional-hazards
    fit (lifelines' Weibull AFT, which is PH for a Weibull) of the onsets on the true risk. The best any model could
    do with that score; on ``times`` (``(n, len(times))``)."""
    # lazy: lifelines' fitters load only for --risk-from truth
    from lifelines import WeibullAFTFitter

    obs = np.minimum(onset, end)
    df = pd.DataFrame({"T": np.maximum(obs, 1.0), "E": (onset <= end).astype(int), "risk": risk})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = WeibullAFTFitter().fit(df, "T", "E")
    return fit.predict_survival_function(df[["risk"]], times=times).to_numpy().T


def marginal_curves(onset: np.ndarray, end: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The cohort's Kaplan-Meier curve for every patient: a model without information about the individual."""
    # lazy: lifelines loads only for --risk-from marginal
    from lifelines import KaplanMeierFitter

    obs = np.minimum(onset, end)
    km = KaplanMeierFitter().fit(np.maximum(obs, 1e-6), (onset <= end).astype(int))
    s = km.survival_function_at_times(times).to_numpy()
    return np.tile(s, (len(onset), 1))

"""nsclc-postop after surgery: relapse kinetics, surveillance CT visits and the serial blood draws.

Radiological onset ``t_onset`` (the day a recurrence becomes visible on CT) is the existing Weibull recurrence
time; it is found at the next surveillance CT (3-monthly for two years, then 6-monthly) or, for ~30% of
patients, between visits when symptoms bring them in (:func:`~.biology.surveillance_detection_details`), which
gives ``rfs_time``. Plasma tumour fraction after surgery is the sum of

* the residual signal measured at ``postop1`` (``mrd_tf``, day 28-75), which clears with an e-folding time of
  :data:`CLEAR_DAYS` days (it is all a cured patient has), and
* the relapsing clone, growing exponentially: it reaches :data:`TF_MOLECULAR` (3x the ctDNA assay's detection
  limit) at the molecular relapse day ``t_onset - lead`` and a patient-specific ``tf_onset`` (higher with
  aggressiveness) at the radiological onset. The lead time is drawn per patient, log-normal with median
  :data:`LEAD_MEDIAN` days (ctDNA precedes CT relapse by ~5 months in TRACERx-like MRD studies); the growth rate
  follows from it. A molecular relapse before surgery (``lead > t_onset``) is recorded as day 0 (never cleared).

Draws (the Danish MRD pilot's plan): ``preop`` (at the pre-operative metabolomics visit), ``postop1`` (kept from
generator 1.1), ``postop2`` (3-6 weeks later), then ``fu<k>`` at each scheduled surveillance visit ``k`` more
than 14 days after postop2, until recurrence detection, death or censoring. Plasma metabolomics adds
``postop1`` and ``postop2``: the tumour-associated part of each linked metabolite (burden, aggressiveness, half
of the metabolic phenotype) scales with the tumour load relative to pre-op, ``min(tf / tf_preop, 1)``, so it
falls after resection and returns with relapse; host effects (immune tone, the other half of metabolism) stay,
and a patient's own biological variation correlates 0.8 between visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omics_risk.data.synthetic.biology import SURVEILLANCE_VISITS
from omics_risk.data.synthetic.metabolomics import LINKED, linked_signals_from_noise

LEAD_MEDIAN = 150.0  # days from molecular relapse to radiological onset (median)
LEAD_SDLOG = 0.5
TF_MOLECULAR = 3e-4  # tumour fraction at the molecular relapse day (3x the ctDNA detection limit)
CLEAR_DAYS = 30.0  # e-folding time of the residual post-operative signal
TF_CAP = 0.5
POSTOP2_GAP = (21, 43)  # days after postop1
FU_MIN_GAP = 14  # a follow-up draw comes at least this many days after postop2
DRAW_MISSING = 0.08  # each serial draw is missed with this probability
METAB_MISSING = 0.10
VISIT_CORRELATION = 0.8  # of a metabolite's own biological variation between a patient's visits


@dataclass
class RelapseKinetics:
    """Per-patient plasma tumour fraction after surgery (see the module docstring)."""

    mrd_tf: np.ndarray
    day_postop1: np.ndarray
    tf_preop: np.ndarray
    t_onset: np.ndarray
    t_molecular: np.ndarray  # unclipped: negative = detectable from surgery on
    growth: np.ndarray
    lead: np.ndarray

    def tf(self, day: float, i: int) -> float:
        """Tumour fraction of patient ``i`` at ``day`` (after postop1; postop1 itself keeps ``mrd_tf``)."""
        residual = self.mrd_tf[i] * np.exp(-max(day - self.day_postop1[i], 0.0) / CLEAR_DAYS)
        relapse = TF_MOLECULAR * np.exp(self.growth[i] * (day - self.t_molecular[i]))
        return float(min(residual + relapse, TF_CAP))

    @property
    def molecular_relapse_day(self) -> np.ndarray:
        return np.maximum(self.t_molecular, 0.0)


def relapse_kinetics(rng: np.random.Generator, t_onset: np.ndarray, burden: np.ndarray, aggressiveness: np.ndarray,
                     mrd_tf: np.ndarray, day_postop1: np.ndarray) -> RelapseKinetics:
    """Draw each patient's lead time, tumour fraction at radiological onset and pre-operative tumour fraction."""
    n = len(t_onset)
    lead = np.exp(np.log(LEAD_MEDIAN) + LEAD_SDLOG * rng.normal(0, 1, n))
    tf_onset = np.clip(10 ** (-2.3 + 0.3 * aggressiveness + 0.3 * rng.normal(0, 1, n)), 2e-3, 0.1)
    tf_preop = np.clip(10 ** (-2.4 + 0.4 * burden + 0.3 * aggressiveness + 0.3 * rng.normal(0, 1, n)), 5e-4, 0.3)
    growth = np.log(tf_onset / TF_MOLECULAR) / lead
    return RelapseKinetics(mrd_tf, day_postop1.astype(float), tf_preop, t_onset, t_onset - lead, growth, lead)


def surveillance_visits(rng: np.random.Generator, pids: list[str], t_onset: np.ndarray, rfs_time: np.ndarray,
                        detected: np.ndarray, symptomatic: np.ndarray) -> pd.DataFrame:
    """Every patient's surveillance CTs up to recurrence detection, death or censoring (``rfs_time``).

    Scheduled visits before the onset show no evidence of disease (a jittered visit never passes the onset); the
    recurrence is found at ``rfs_time``, at the scheduled visit after the onset or at an unscheduled
    (symptomatic) CT. Columns: patient_id, visit (``fu<k>``, k = the schedule's visit number, or
    ``symptomatic``), day, kind (scheduled / symptomatic), finding (ned / recurrence).
    """
    rows = []
    nominal = SURVEILLANCE_VISITS
    for i, pid in enumerate(pids):
        days = np.round(nominal + rng.uniform(-10, 10, len(nominal)))
        k_found = int(np.searchsorted(nominal, t_onset[i]))  # first scheduled visit on or after the onset
        days[:k_found] = np.minimum(days[:k_found], np.ceil(t_onset[i]) - 1)
        end = float(rfs_time[i])
        for k in range(len(nominal)):
            if k >= k_found and t_onset[i] <= end:  # this visit sees the recurrence: detection or beyond follow-up
                if detected[i] and not symptomatic[i]:
                    rows.append((pid, f"fu{k + 1}", end, "scheduled", "recurrence"))
                break
            if days[k] > end:
                break
            rows.append((pid, f"fu{k + 1}", float(days[k]), "scheduled", "ned"))
        if detected[i] and symptomatic[i]:
            rows.append((pid, "symptomatic", end, "symptomatic", "recurrence"))
    out = pd.DataFrame(rows, columns=["patient_id", "visit", "day", "kind", "finding"])
    out["day"] = out["day"].astype(int)
    return out


def draw_schedule(rng: np.random.Generator, pids: list[str], day_preop: np.ndarray, day_postop1: np.ndarray,
                  visits: pd.DataFrame, rfs_time: np.ndarray) -> pd.DataFrame:
    """The serial plasma draws of every patient: patient index, timepoint and day (postop1 is listed for its day,
    not drawn again). Draws stop at recurrence detection, death or censoring (``rfs_time``)."""
    gap = rng.integers(*POSTOP2_GAP, len(pids))
    sched = visits[visits["kind"] == "scheduled"]
    by_patient = {pid: g for pid, g in sched.groupby("patient_id", sort=False)}
    rows = []
    for i, pid in enumerate(pids):
        post2 = int(day_postop1[i] + gap[i])
        rows += [(i, "preop", int(day_preop[i])), (i, "postop1", int(day_postop1[i])), (i, "postop2", post2)]
        g = by_patient.get(pid)
        if g is not None:
            rows += [(i, v, int(d)) for v, d in zip(g["visit"], g["day"], strict=True) if d > post2 + FU_MIN_GAP]
    out = pd.DataFrame(rows, columns=["i", "timepoint", "day"])
    return out[out["day"] <= rfs_time[out["i"].to_numpy()]].reset_index(drop=True)


def postop_metabolite_signals(rng: np.random.Generator, drivers: pd.DataFrame, noise_preop: np.ndarray,
                              idx: np.ndarray, load: np.ndarray) -> pd.DataFrame:
    """Linked metabolite signals of post-operative samples: patient ``idx`` at relative tumour ``load`` (0-1).

    ``drivers`` (metabolic, aggressiveness, immune, burden per patient) and ``noise_preop`` (the pre-op sample's
    biological variation, metabolites x patients) are those of the pre-op sample.
    """
    d = drivers.iloc[idx].reset_index(drop=True)
    d = d.assign(burden=d["burden"] * load, aggressiveness=d["aggressiveness"] * load,
                 metabolic=d["metabolic"] * (0.5 + 0.5 * load))
    own = noise_preop[:, idx]
    noise = VISIT_CORRELATION * own + np.sqrt(1 - VISIT_CORRELATION**2) * rng.normal(0, 1, (len(LINKED), len(idx)))
    return linked_signals_from_noise(d, noise)

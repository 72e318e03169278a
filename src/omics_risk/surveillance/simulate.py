"""Simulate a follow-up schedule on a cohort whose recurrence onsets are known (true or imputed): per patient, the
scans and draws it costs and when it finds the recurrence.

Rules (docs/surveillance.md):

* A CT finds the recurrence at the first scan on or after the **radiological onset** (a perfect CT; the onset is
  the day the recurrence becomes visible). Scans are done up to the end of surveillance, ``end`` = the earliest of
  the horizon, death from other causes and the end of follow-up.
* Between scans the recurrence becomes **symptomatic** ``symptom_delay`` days after the onset (drawn once per
  patient, so every schedule sees the same patient); if that comes first, the recurrence is an *interval
  recurrence* found on that day. Symptoms count until the patient's death (``alive_until``), also after the
  horizon.
* **ctDNA draws** are positive from the **molecular onset** on with probability ``sensitivity``, before it with
  probability ``1 - specificity`` (one uniform per patient and draw, shared by every ctDNA schedule). A positive
  draw brings a CT ``ct_delay_days`` later; after a true positive the CT is repeated every
  ``confirm_every_months`` until it sees the recurrence, and no more draws are taken; a false positive costs one
  negative CT.
* Scans and draws are counted up to the detection (or the end of surveillance); a detection after the patient's
  death is no detection (``detected_by = none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omics_risk.surveillance.schedules import (
    DAYS_PER_MONTH,
    CtdnaTriggeredSchedule,
    PlanInputs,
    Schedule,
)

__all__ = ["OUTCOME_COLUMNS", "SurveillanceCohort", "simulate", "simulate_all"]

#: Per-patient columns of :func:`simulate` (``patients.csv`` adds schedule, status, reason).
OUTCOME_COLUMNS = ("scans", "draws", "recurred", "onset_day", "detection_day", "delay_days", "detected_by",
                   "within_window", "interval_recurrence")


@dataclass
class SurveillanceCohort:
    """Everything a schedule is simulated on, one entry per patient (days from the index date, surgery).

    ``onset``: radiological onset (``inf`` = none); ``molecular_onset``: first day ctDNA can see it (``inf`` =
    none); ``end``: end of surveillance (<= ``horizon``); ``alive_until``: death from other causes or last
    follow-up (symptoms count until then); ``symptom_delay``: days from onset to symptoms (``inf`` = never);
    ``times`` / ``survival``: the predicted recurrence-free curves (None: no risk-adapted schedule);
    ``usable``: False for a patient who cannot be simulated, with ``reason``.
    """

    patient_ids: np.ndarray
    onset: np.ndarray
    molecular_onset: np.ndarray
    end: np.ndarray
    alive_until: np.ndarray
    symptom_delay: np.ndarray
    horizon: float
    stage: np.ndarray | None = None
    times: np.ndarray | None = None
    survival: np.ndarray | None = None
    usable: np.ndarray | None = None
    reason: np.ndarray | None = None
    draw_uniforms_seed: int = 0

    def __post_init__(self) -> None:
        n = len(self.patient_ids)
        for nm in ("onset", "molecular_onset", "end", "alive_until", "symptom_delay"):
            arr = np.asarray(getattr(self, nm), dtype=float)
            if arr.shape != (n,):
                raise ValueError(f"{nm} must have one value per patient ({n}), got shape {arr.shape}")
            setattr(self, nm, arr)
        if self.usable is None:
            self.usable = np.ones(n, dtype=bool)
        if self.reason is None:
            self.reason = np.full(n, "", dtype=object)
        self.end = np.minimum(self.end, self.horizon)

    @property
    def n(self) -> int:
        return len(self.patient_ids)

    def subset(self, mask: np.ndarray) -> SurveillanceCohort:
        pick = np.flatnonzero(mask)
        return SurveillanceCohort(
            self.patient_ids[pick], self.onset[pick], self.molecular_onset[pick], self.end[pick],
            self.alive_until[pick], self.symptom_delay[pick], self.horizon,
            None if self.stage is None else self.stage[pick], self.times,
            None if self.survival is None else self.survival[pick], self.usable[pick], self.reason[pick],
            self.draw_uniforms_seed)

    def plan_inputs(self) -> PlanInputs:
        return PlanInputs(self.patient_ids, self.horizon, self.stage, self.times, self.survival)


def _first_at_or_after(days: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each row's first day >= ``t`` (rows increasing, padded with inf); inf if none."""
    ok = days >= t[:, None]
    return np.where(ok.any(axis=1), days[np.arange(len(t)), ok.argmax(axis=1)], np.inf)


def simulate(schedule: Schedule, cohort: SurveillanceCohort, *, window_days: float = 90.0) -> pd.DataFrame:
    """One row per patient of ``cohort`` (in order): the :data:`OUTCOME_COLUMNS` under ``schedule``.

    ``window_days``: a recurrence found at most this many days after its onset counts as found in time (the
    proxy for "still eligible for curative-intent treatment").
    """
    n = cohort.n
    onset, end = cohort.onset, cohort.end
    recurred = onset <= end
    symptoms = np.where(np.isfinite(cohort.symptom_delay), onset + cohort.symptom_delay, np.inf)
    symptoms = np.where(symptoms <= cohort.alive_until, symptoms, np.inf)
    scans = schedule.plan(cohort.plan_inputs())
    scans = np.where(scans <= end[:, None], scans, np.inf)
    by_scan = np.where(recurred, _first_at_or_after(scans, onset), np.inf)
    by_ctdna = np.full(n, np.inf)
    draws_done = np.zeros(n)
    extra_scans = np.zeros(n)
    if isinstance(schedule, CtdnaTriggeredSchedule):
        by_ctdna, draw_stop, trig_days, fp_days = _ctdna(schedule, cohort)
    by_symptoms = np.where(recurred, symptoms, np.inf)
    detection = np.minimum(np.minimum(by_scan, by_ctdna), by_symptoms)
    detected = np.isfinite(detection) & recurred
    stop = np.where(detected, detection, end)
    n_scans = (scans <= stop[:, None]).sum(axis=1).astype(float)
    if isinstance(schedule, CtdnaTriggeredSchedule):
        draw_days = schedule.draw_days(cohort.horizon)
        limit = np.minimum(stop, draw_stop)
        draws_done = (draw_days[None, :] <= limit[:, None]).sum(axis=1).astype(float)
        extra_scans = _count_triggered(trig_days, fp_days, stop, schedule)
    by = np.where(~detected, "none", np.where(detection == by_scan, "scan",
                                              np.where(detection == by_ctdna, "ctdna", "symptoms")))
    with np.errstate(invalid="ignore"):  # inf - inf where nothing was found: NaN, as meant
        delay = np.where(detected, detection - onset, np.nan)
    out = pd.DataFrame({
        "scans": n_scans + extra_scans,
        "draws": draws_done,
        "recurred": recurred.astype(float),
        "onset_day": np.where(np.isfinite(onset), onset, np.nan),
        "detection_day": np.where(detected, detection, np.nan),
        "delay_days": delay,
        "detected_by": np.where(recurred, by, ""),
        "within_window": np.where(recurred, np.where(detected, delay <= window_days, False), np.nan),
        "interval_recurrence": np.where(recurred, by == "symptoms", np.nan),
    })
    return out


def _ctdna(s: CtdnaTriggeredSchedule, c: SurveillanceCohort
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detection through a positive draw, the day draws stop (the first true positive), the first triggered CT of
    a true positive (and the detection of its work-up), and the CT days of false positives (``(n, draws)``)."""
    days = s.draw_days(c.horizon)
    n, k = c.n, len(days)
    u = np.random.default_rng(c.draw_uniforms_seed).random((n, max(k, 1)))[:, :k]
    alive = days[None, :] <= c.end[:, None]
    after = days[None, :] >= c.molecular_onset[:, None]
    positive = alive & np.where(after, u < s.sensitivity, u < 1 - s.specificity)
    true_pos = positive & after
    first_tp = np.where(true_pos.any(axis=1), days[true_pos.argmax(axis=1)] if k else np.inf, np.inf)
    ct0 = first_tp + s.ct_delay_days
    step = s.confirm_every_months * DAYS_PER_MONTH
    both = np.isfinite(ct0) & np.isfinite(c.onset)
    gap = np.zeros(n)
    gap[both] = c.onset[both] - ct0[both]
    reps = np.where(gap > 0, np.ceil(gap / step), 0.0)
    found = np.where(np.isfinite(ct0) & np.isfinite(c.onset), ct0 + reps * step, np.inf)
    found = np.where(found <= c.alive_until, found, np.inf)
    fp = positive & ~after & (days[None, :] < first_tp[:, None])
    fp_days = np.where(fp, days[None, :] + s.ct_delay_days, np.inf)
    # a false positive's CT that comes after the onset sees the recurrence
    fp_find = np.where(fp_days >= c.onset[:, None], fp_days, np.inf).min(axis=1) if k else np.full(n, np.inf)
    return np.minimum(found, fp_find), first_tp, np.column_stack([ct0, found]), fp_days


def _count_triggered(trig: np.ndarray, fp_days: np.ndarray, stop: np.ndarray, s: CtdnaTriggeredSchedule
                     ) -> np.ndarray:
    """CTs brought by draws up to ``stop``: the work-up CTs of a true positive and one per false positive."""
    ct0, found = trig[:, 0], trig[:, 1]
    step = s.confirm_every_months * DAYS_PER_MONTH
    last = np.minimum(np.where(np.isfinite(found), found, np.inf), stop)
    with np.errstate(invalid="ignore"):  # inf - inf for patients without a positive draw: 0 below
        work = np.where(np.isfinite(ct0) & (ct0 <= last), np.floor((last - ct0) / step + 1e-9) + 1, 0.0)
    return work + (fp_days <= stop[:, None]).sum(axis=1)


def simulate_all(schedules: list[Schedule], cohort: SurveillanceCohort, *, window_days: float = 90.0
                 ) -> pd.DataFrame:
    """Long table: every patient under every schedule (``schedule``, ``patient_id``, ``status``, ``reason`` and
    the :data:`OUTCOME_COLUMNS`); patients that cannot be simulated keep a row with ``status=excluded``."""
    frames = []
    ok = cohort.usable
    sub = cohort.subset(ok)
    for s in schedules:
        part = pd.DataFrame({"schedule": s.name, "patient_id": cohort.patient_ids.astype(str),
                             "status": np.where(ok, "ok", "excluded"), "reason": cohort.reason})
        res = simulate(s, sub, window_days=window_days)
        for col in OUTCOME_COLUMNS:
            full = pd.Series([np.nan] * cohort.n, dtype=object if col == "detected_by" else float)
            full.iloc[np.flatnonzero(ok)] = res[col].to_numpy()
            part[col] = full.to_numpy()
        frames.append(part)
    return pd.concat(frames, ignore_index=True)

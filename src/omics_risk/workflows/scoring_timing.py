"""A scored cohort's inputs at the model's prediction time: the tables a model trained with ``task.prediction_time``
(and ``task.longitudinal``) reads, built by the path training takes (:func:`~omics_risk.workflows.inputs.model_inputs`
over the per-sample store), and each patient's prediction day.

Outcomes are unknown at scoring time, so no patient leaves for being out of the risk set; a patient without a
prediction day (``{at: timepoint}`` and no such sample) is reported, not scored. A model trained without a prediction
time gets ``None`` here and reads the store's wide tables, as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from omics_risk.data.timing import PredictionTime, prediction_days
from omics_risk.scoring.loading import BatchModel
from omics_risk.workflows.inputs import model_inputs
from omics_risk.workflows.scoring_cohort import PreparedCohort

__all__ = ["TimedInputs", "no_day_reason", "timed_inputs"]

log = logging.getLogger(__name__)


@dataclass
class TimedInputs:
    """The model's tabular inputs of every patient at its prediction day (``day``: NaN where it has none)."""

    prediction_time: PredictionTime
    day: pd.Series  # patient_id -> prediction day (days from the index date)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # model input -> patient x columns

    def day_of(self, pid: str) -> float:
        """The patient's prediction day (NaN: none)."""
        return float(self.day.get(pid, math.nan))


def no_day_reason(pt: PredictionTime) -> str:
    """Why a patient without a prediction day gets no score."""
    return (f"no prediction day: the model predicts at {pt.describe()}, and samples.csv has no '{pt.timepoint}' "
            "sample of this patient (not scored)")


def timed_inputs(bm: BatchModel, prep: PreparedCohort, store: Path | None,
                 extracted: Sequence[str]) -> TimedInputs | None:
    """The cohort's inputs at ``bm``'s prediction time (None for a model without one).

    Only the modalities extracted for this cohort are read (a modality the cohort lacks stays absent, as without a
    prediction time); every patient of clinical.csv is kept (``drop_unlabelled=False``). The data pass the
    look-ahead guard of training (:func:`~omics_risk.workflows.inputs.check_no_look_ahead`).
    """
    if bm.prediction_time is None:
        return None
    cohort = prep.cohort
    pt = bm.prediction_time
    if pt.at == "timepoint" and not len(cohort.samples):
        # A clinical-only cohort: the index date, as training (data.multimodal.placeable_prediction_time). Not that
        # function here: its log line would repeat the note check_fit already puts in the result and its report.
        pt = PredictionTime()
    patients = cohort.clinical["patient_id"].astype(str).drop_duplicates()
    if store is None or not extracted or not (store / "manifest.json").is_file():
        day = prediction_days(pt, cohort.samples, patients)
        return TimedInputs(pt, day.set_axis(day.index.astype(str)))
    wanted = [m for m in bm.tabular if bm.derived.get(m, m) in extracted]
    inputs = model_inputs(cohort, store, extract=False, modalities=wanted, only_stored=True, drop_unlabelled=False,
                          prediction_time=pt, longitudinal=bm.longitudinal(extracted), what="scored")
    data = inputs.data
    ids = data.patients.astype(str)
    day = pd.Series(data.prediction_day, index=ids, name="prediction_day", dtype=float)
    tables = {m: t.set_axis(ids, axis=0) for m, t in data.modalities.items() if m in bm.manifest.modalities}
    return TimedInputs(pt, day, tables)

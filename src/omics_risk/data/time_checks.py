"""``validate``'s look-ahead guards: samples dated after a patient's outcome, and timepoint labels whose days
disagree across patients.

Both are warnings, not errors: real cohorts do sample after an event (a biopsy or a draw at progression), and a
monitoring cohort's labels are often irregular. What they mean for a model is what the warnings say: a sample taken
after the event cannot be an input at any prediction time before it, and a label that spans weeks across patients
makes a wide ``<timepoint>__<feature>`` column mix unrelated draws (docs/time.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from omics_risk.data.paths import printable
from omics_risk.data.problems import Problem
from omics_risk.data.spec import MAX_YEARS, SAMPLES_FILE, TIME_UNITS, CohortSpec, SurvivalEndpoint

__all__ = [
    "MAX_LABEL_SPAN_DAYS",
    "MAX_LATE_SAMPLE_ROWS",
    "check_sample_times",
    "label_spans",
    "late_samples",
]

#: Up to this many late samples of one endpoint are reported row by row; beyond, the first SHOWN_LATE_ROWS are,
#: followed by one count per modality/timepoint.
MAX_LATE_SAMPLE_ROWS = 10
SHOWN_LATE_ROWS = 5
#: Modality/timepoint pairs named in a count line; the rest are summed.
MAX_LABELS_NAMED = 12
#: A timepoint label whose days spread wider than this (5th to 95th percentile across patients) is warned about.
MAX_LABEL_SPAN_DAYS = 60.0
LABEL_SPAN_PERCENTILES = (5.0, 95.0)

_MEANING = (
    "such a sample cannot be a model input at any prediction time before the event; set task.prediction_time "
    "(docs/time.md) so that training leaves it out (without one, every sample is used)"
)
_LABELS_HINT = "timepoints are matched by label; use day windows (task.prediction_time.windows)"


def _line(index: int) -> int:
    """CSV line of a 0-based data row (header is line 1)."""
    return int(index) + 2


def _num(x: float) -> str:
    """A day or time as written in a message: at most one decimal."""
    return f"{round(float(x), 1):g}"


def _days(samples: pd.DataFrame, horizon_days: float) -> pd.Series:
    """samples.csv's days, NaN where the cell is an error of its own (not a number, not finite, past the horizon)."""
    day = pd.to_numeric(samples["day"], errors="coerce").astype(float)
    return day.where(day.abs() <= horizon_days)


def late_samples(spec: CohortSpec, clinical: pd.DataFrame, samples: pd.DataFrame, endpoint: SurvivalEndpoint
                 ) -> pd.DataFrame:
    """The samples.csv rows dated after the patient's event or last follow-up of ``endpoint``, in file order.

    Columns: ``line``, ``patient_id``, ``sample_id``, ``modality``, ``timepoint``, ``day``, ``end_day`` (the
    endpoint's time in days), ``end_time`` (in cohort.yaml's time_unit) and ``event``. Patients without the
    endpoint's outcome and samples without a day are skipped (their own problems are reported elsewhere).
    """
    columns = ["line", "patient_id", "sample_id", "modality", "timepoint", "day", "end_day", "end_time", "event"]
    if endpoint.time not in clinical.columns or "patient_id" not in clinical.columns:
        return pd.DataFrame(columns=columns)
    ids = clinical["patient_id"]
    first = (ids.notna() & ~ids.duplicated()).to_numpy()

    def per_patient(column: str) -> pd.Series:
        values = pd.to_numeric(clinical[column], errors="coerce") if column in clinical.columns else np.nan
        return pd.Series(np.broadcast_to(np.asarray(values, dtype=float), len(ids))[first], index=ids[first])

    end_time = per_patient(endpoint.time)
    end_time = end_time.where((end_time >= 0) & (end_time <= spec.horizon))  # else an error of clinical.csv
    event = per_patient(endpoint.event)
    days_per_unit = TIME_UNITS.get(spec.time_unit, 1.0)
    rows = samples.assign(
        line=[_line(i) for i in samples.index],
        day=_days(samples, spec.horizon_days),
        end_time=samples["patient_id"].map(end_time),
        event=samples["patient_id"].map(event),
    )
    rows["end_day"] = rows["end_time"] * days_per_unit
    late = rows["day"].notna() & rows["end_day"].notna() & (rows["day"] > rows["end_day"] + 1e-9)
    return rows.loc[late, columns].reset_index(drop=True)


def _counts(frame: pd.DataFrame) -> str:
    """``ctdna/c5d1 12, ct/w12 3, ...``: rows per modality/timepoint, most first, at most MAX_LABELS_NAMED named."""
    counts = frame.groupby(["modality", "timepoint"], sort=False, dropna=False).size()
    counts = counts.sort_values(ascending=False, kind="stable")
    named = [f"{printable(str(m))}/{printable(str(t))} {n}" for (m, t), n in counts.head(MAX_LABELS_NAMED).items()]
    rest = counts.iloc[MAX_LABELS_NAMED:]
    if len(rest):
        named.append(f"{len(rest)} other label(s) {int(rest.sum())}")
    return ", ".join(named)


def _late_row_message(row: pd.Series, endpoint: SurvivalEndpoint, spec: CohortSpec) -> str:
    when = "event" if row["event"] == 1 else "last follow-up" if row["event"] == 0 else "event or last follow-up"
    return (
        f"sample '{printable(str(row['sample_id']))}' of patient '{printable(str(row['patient_id']))}' "
        f"(modality '{printable(str(row['modality']))}', timepoint '{printable(str(row['timepoint']))}') is dated "
        f"day {_num(row['day'])}, after the patient's '{endpoint.name}' {when} at day {_num(row['end_day'])} "
        f"({endpoint.time} {row['end_time']:g} {spec.time_unit}): {_MEANING}"
    )


def _late_problems(spec: CohortSpec, clinical: pd.DataFrame, samples: pd.DataFrame) -> Iterator[Problem]:
    for endpoint in spec.endpoints.values():
        if not isinstance(endpoint, SurvivalEndpoint):
            continue
        late = late_samples(spec, clinical, samples, endpoint)
        shown = late if len(late) <= MAX_LATE_SAMPLE_ROWS else late.head(SHOWN_LATE_ROWS)
        for _, row in shown.iterrows():
            yield Problem("warning", SAMPLES_FILE, _late_row_message(row, endpoint, spec), int(row["line"]), "day")
        if len(late) > len(shown):
            yield Problem(
                "warning", SAMPLES_FILE,
                f"... and {len(late) - len(shown)} more sample(s) dated after the patient's '{endpoint.name}' event "
                f"or last follow-up ({len(late)} in all, from {late['patient_id'].nunique()} patient(s); by "
                f"modality/timepoint: {_counts(late)}): {_MEANING}",
                None, "day",
            )


def label_spans(samples: pd.DataFrame, horizon_days: float = MAX_YEARS * TIME_UNITS["years"]) -> pd.DataFrame:
    """Per modality/timepoint label: samples, patients and the 5th / 50th / 95th percentile of their days."""
    usable = samples.assign(day=_days(samples, horizon_days))
    usable = usable.dropna(subset=["modality", "timepoint", "day", "patient_id"])
    out = []
    for (modality, timepoint), group in usable.groupby(["modality", "timepoint"], sort=False):
        lo, mid, hi = np.percentile(group["day"].to_numpy(float), [LABEL_SPAN_PERCENTILES[0], 50.0,
                                                                   LABEL_SPAN_PERCENTILES[1]])
        out.append((modality, timepoint, len(group), group["patient_id"].nunique(), lo, mid, hi, hi - lo))
    return pd.DataFrame(out, columns=["modality", "timepoint", "samples", "patients", "p5", "median", "p95", "span"])


def _span_problems(samples: pd.DataFrame, horizon_days: float) -> Iterator[Problem]:
    spans = label_spans(samples, horizon_days)
    for r in spans[(spans["patients"] >= 2) & (spans["span"] > MAX_LABEL_SPAN_DAYS)].itertuples(index=False):
        yield Problem(
            "warning", SAMPLES_FILE,
            f"modality '{printable(str(r.modality))}' timepoint '{printable(str(r.timepoint))}' spans days "
            f"{_num(r.p5)} to {_num(r.p95)} across {r.patients} patients ({LABEL_SPAN_PERCENTILES[0]:g}th to "
            f"{LABEL_SPAN_PERCENTILES[1]:g}th percentile, median day {_num(r.median)}; more than "
            f"{MAX_LABEL_SPAN_DAYS:g} days apart): {_LABELS_HINT}",
            None, "timepoint",
        )


def check_sample_times(spec: CohortSpec | None, clinical: pd.DataFrame, samples: pd.DataFrame) -> list[Problem]:
    """Warnings for samples dated after a survival endpoint's event or last follow-up, and for wide labels.

    ``spec`` None (a cohort.yaml with errors: its endpoints or time_unit cannot be trusted) checks the labels only.
    Cells that are errors of their own (a day past the horizon, a negative time) are left out, never warned twice.
    """
    if spec is None:
        return list(_span_problems(samples, MAX_YEARS * TIME_UNITS["years"]))
    return [*_late_problems(spec, clinical, samples), *_span_problems(samples, spec.horizon_days)]

"""``validate``'s look-ahead guards (data/time_checks.py): samples dated after the patient's event or last
follow-up, and timepoint labels that span weeks across patients. Warnings only; exact lines, counts and messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from broken_cohorts import sample_line, set_cell

from omics_risk.data.spec import CohortSpec, SurvivalEndpoint
from omics_risk.data.time_checks import (
    MAX_LATE_SAMPLE_ROWS,
    SHOWN_LATE_ROWS,
    check_sample_times,
    label_spans,
    late_samples,
)
from omics_risk.data.validate import validate_cohort

MEANING = "cannot be a model input at any prediction time before the event"
LABELS_HINT = "timepoints are matched by label; use day windows (task.prediction_time.windows)"


def _spec(time_unit: str = "days", *endpoints: str) -> CohortSpec:
    eps = {e: SurvivalEndpoint(e, f"{e}_time", f"{e}_event") for e in (endpoints or ("pfs",))}
    return CohortSpec("t", time_unit, dict(eps), {}, {}, {})


def _samples(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """samples.csv as read by the contract: patient, modality, timepoint, day; sample_id derived."""
    df = pd.DataFrame(rows, columns=["patient_id", "modality", "timepoint", "day"])
    df.insert(1, "sample_id", [f"{p}-{m}-{t}" for p, m, t, _ in rows])
    return df


# --------------------------------------------------------------------------------------------------- on a cohort


def test_valid_cohort_has_no_time_warning(valid_cohort: Path) -> None:
    report = validate_cohort(valid_cohort, deep=False)
    assert not [p for p in report.problems if p.column in ("day", "timepoint")], report.to_text()


def test_late_samples_are_warned_with_line_and_endpoint_time(valid_cohort: Path) -> None:
    # time_unit is months: P03 relapsed at 12.25 months = day 372.9; P04 was censored at 40 months = day 1217.5.
    samples = valid_cohort / "samples.csv"
    late_event, late_censored = sample_line(valid_cohort, "P03-cfdna-postop1"), sample_line(valid_cohort,
                                                                                          "P04-methylation-postop1")
    set_cell(samples, late_event, "day", "400")
    set_cell(samples, late_censored, "day", "1300")
    report = validate_cohort(valid_cohort, workers=1)
    assert report.ok, report.to_text()
    late = [p for p in report.warnings if p.column == "day"]
    assert [(p.file, p.line) for p in late] == [("samples.csv", late_event), ("samples.csv", late_censored)]
    assert late[0].message.startswith(
        "sample 'P03-cfdna-postop1' of patient 'P03' (modality 'cfdna', timepoint 'postop1') is dated day 400, after "
        "the patient's 'rfs' event at day 372.9 (rfs_time 12.25 months): such a sample " + MEANING)
    assert "set task.prediction_time (docs/time.md) so that training leaves it out" in late[0].message
    assert "after the patient's 'rfs' last follow-up at day 1217.5 (rfs_time 40 months)" in late[1].message
    # The two, both labels now spanning hundreds of days, and P06 without samples.
    assert [p.column for p in report.warnings].count("timepoint") == 2 and len(report.warnings) == 5
    assert f"samples.csv:{late_event} [day]: sample 'P03-cfdna-postop1'" in report.to_text()


def test_sample_on_the_event_day_is_not_late(valid_cohort: Path) -> None:
    set_cell(valid_cohort / "samples.csv", sample_line(valid_cohort, "P03-cfdna-postop1"), "day", "372")
    assert not [p for p in validate_cohort(valid_cohort, deep=False).problems if p.column == "day"]


def test_wide_label_is_warned_on_a_cohort(valid_cohort: Path) -> None:
    # cfdna postop1 at days 28, 31 and now 150: the 5th-95th percentile spans 28.3 to 138.1 days.
    set_cell(valid_cohort / "samples.csv", sample_line(valid_cohort, "P01-cfdna-postop1"), "day", "150")
    report = validate_cohort(valid_cohort, deep=False)
    wide = [p for p in report.warnings if p.column == "timepoint"]
    assert len(wide) == 1 and wide[0].file == "samples.csv" and wide[0].line is None
    assert wide[0].message == (
        "modality 'cfdna' timepoint 'postop1' spans days 28.3 to 138.1 across 3 patients (5th to 95th percentile, "
        "median day 31; more than 60 days apart): " + LABELS_HINT)
    assert report.ok


# --------------------------------------------------------------------------------------------------- aggregation


def test_many_late_samples_are_counted_per_modality_and_timepoint() -> None:
    clinical = pd.DataFrame({"patient_id": ["A", "B", "C"], "pfs_time": [100.0, 50.0, 400.0],
                             "pfs_event": [1.0, 0.0, 1.0]})
    rows = [("A", "ctdna", f"c{k}", 21.0 * k) for k in range(1, 11)]  # A: c5..c10 late (105..210)
    rows += [("B", "ctdna", f"c{k}", 21.0 * k) for k in range(1, 6)]  # B: c3..c5 late (63..105)
    rows += [("B", "ct", f"w{k}", 42.0 * k) for k in range(1, 4)]  # B: w2, w3 late (84, 126)
    rows += [("C", "ctdna", "c1", 21.0)]  # C: none
    samples = _samples(rows)
    late = late_samples(_spec(), clinical, samples, SurvivalEndpoint("pfs", "pfs_time", "pfs_event"))
    assert len(late) == 11 > MAX_LATE_SAMPLE_ROWS
    assert late["line"].tolist() == [6, 7, 8, 9, 10, 11, 14, 15, 16, 18, 19]  # index + 2: the CSV lines
    problems = check_sample_times(_spec(), clinical, samples)
    assert [(p.line, p.column) for p in problems] == [(6, "day"), (7, "day"), (8, "day"), (9, "day"), (10, "day"),
                                                      (None, "day")]
    assert len(problems) == SHOWN_LATE_ROWS + 1
    assert "dated day 105, after the patient's 'pfs' event at day 100 (pfs_time 100 days)" in problems[0].message
    summary = problems[-1].message
    assert summary.startswith("... and 6 more sample(s) dated after the patient's 'pfs' event or last follow-up "
                              "(11 in all, from 2 patient(s); by modality/timepoint: ")
    assert "ctdna/c5 2, " in summary and "ct/w2 1, ct/w3 1" in summary and MEANING in summary
    assert sum(int(part.rsplit(" ", 1)[1]) for part in summary.split("timepoint: ")[1].split("):")[0].split(", ")) \
        == 11


def test_at_most_ten_late_samples_are_each_reported() -> None:
    clinical = pd.DataFrame({"patient_id": ["A"], "pfs_time": [0.0], "pfs_event": [1.0]})
    samples = _samples([("A", "ctdna", f"c{k}", float(k)) for k in range(1, MAX_LATE_SAMPLE_ROWS + 1)])
    problems = check_sample_times(_spec(), clinical, samples)
    assert [p.line for p in problems] == list(range(2, MAX_LATE_SAMPLE_ROWS + 2))
    assert not any(p.message.startswith("...") for p in problems)


def test_each_survival_endpoint_is_checked_on_its_own() -> None:
    # Sampled after progression (day 90) but before death (day 300): late for pfs only.
    clinical = pd.DataFrame({"patient_id": ["A"], "pfs_time": [3.0], "pfs_event": [1.0], "os_time": [10.0],
                             "os_event": [0.0]})
    samples = _samples([("A", "ctdna", "c1", 0.0), ("A", "ctdna", "prog", 120.0)])
    problems = check_sample_times(_spec("months", "pfs", "os"), clinical, samples)
    assert len(problems) == 1 and problems[0].line == 3
    assert "after the patient's 'pfs' event at day 91.3 (pfs_time 3 months)" in problems[0].message


def test_patients_without_outcome_or_day_are_skipped() -> None:
    clinical = pd.DataFrame({"patient_id": ["A", "B", None], "pfs_time": [None, 10.0, 1.0],
                             "pfs_event": [None, 1.0, 1.0]})
    samples = _samples([("A", "ctdna", "c1", 500.0), ("B", "ctdna", "c1", float("nan")), ("Z", "ct", "c1", 99.0)])
    assert check_sample_times(_spec(), clinical, samples) == []


# --------------------------------------------------------------------------------------------------- label spans


def test_label_spans_match_numpy_percentiles() -> None:
    rows = [(f"P{k}", "ctdna", "t2", 10.0 * k) for k in range(11)]  # days 0..100: p5 = 5, p95 = 95
    rows += [(f"P{k}", "ctdna", "t1", -7.0 + k) for k in range(11)]  # within 10 days: fine
    rows += [("P0", "ct", "followup", 0.0), ("P0", "ct", "late", 500.0)]  # one patient per label: nothing to compare
    spans = label_spans(_samples(rows)).set_index(["modality", "timepoint"])
    assert spans.loc[("ctdna", "t2"), ["samples", "patients", "p5", "median", "p95", "span"]].tolist() == \
        [11, 11, 5.0, 50.0, 95.0, 90.0]
    problems = check_sample_times(_spec(), pd.DataFrame({"patient_id": [], "pfs_time": [], "pfs_event": []}),
                                  _samples(rows))
    assert [(p.file, p.line, p.column) for p in problems] == [("samples.csv", None, "timepoint")]
    assert problems[0].message.startswith("modality 'ctdna' timepoint 't2' spans days 5 to 95 across 11 patients")
    assert problems[0].message.endswith(LABELS_HINT)


def test_a_label_within_sixty_days_is_not_warned() -> None:
    rows = [(f"P{k}", "ctdna", "t2", 6.0 * k) for k in range(11)]  # p5 = 3, p95 = 57: 54 days
    assert check_sample_times(_spec(), pd.DataFrame({"patient_id": [], "pfs_time": [], "pfs_event": []}),
                              _samples(rows)) == []


def test_warnings_do_not_change_the_exit_status(valid_cohort: Path) -> None:
    set_cell(valid_cohort / "samples.csv", sample_line(valid_cohort, "P03-cfdna-postop1"), "day", "999")
    report = validate_cohort(valid_cohort, deep=False)
    assert report.ok and report.to_dict()["n_errors"] == 0
    assert report.to_text().splitlines()[-1] == "0 error(s), 3 warning(s)"  # late, wide label, P06


def test_odd_endpoint_columns_give_no_warning_and_no_crash() -> None:
    clinical = pd.DataFrame({"patient_id": ["A", "A"], "pfs_time": ["1", "2"]})  # repeated id: first row counts
    samples = _samples([("A", "ctdna", "c1", 1.5), ("A", None, None, 5.0)])  # type: ignore[list-item]
    odd = CohortSpec("t", "days", {"pfs": SurvivalEndpoint("pfs", "patient_id", "pfs_event")}, {}, {}, {})
    assert check_sample_times(odd, clinical, samples) == []
    problems = check_sample_times(_spec(), clinical, samples)
    assert [p.line for p in problems] == [2, 3]
    assert "after the patient's 'pfs' event or last follow-up at day 1 (pfs_time 1 days)" in problems[0].message

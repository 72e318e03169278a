"""nsclc-postop after surgery: serial ctDNA follows the relapse, onsets are ordered, visits agree with rfs_time.

The planner runs without writing files (no CT rendering), at a size where every kind of patient occurs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.synthetic import nsclc_postop
from omics_risk.data.synthetic.cohort import DETECTION_LIMIT, CohortPlan, SynthOptions
from omics_risk.data.synthetic.genome import get_genome
from omics_risk.data.synthetic.postop_monitoring import TF_MOLECULAR, surveillance_visits

N = 120


@pytest.fixture(scope="module")
def plan() -> CohortPlan:
    return nsclc_postop.plan(N, np.random.SeedSequence(5), SynthOptions(n_metabolites=40), get_genome())


@pytest.fixture(scope="module")
def patients(plan: CohortPlan) -> pd.DataFrame:
    return plan.clinical.merge(plan.truth_patients, on="patient_id")


def _ctdna(plan: CohortPlan) -> pd.DataFrame:
    s = plan.samples[plan.samples["modality"] == "ctdna"]
    return s.merge(plan.truth_samples[["sample_id", "tumour_fraction"]], on="sample_id")


def test_onsets_are_ordered_for_every_detected_recurrence(patients: pd.DataFrame) -> None:
    detected = patients[patients["detection_day"].notna()]
    assert len(detected) >= 15
    assert (detected["rfs_event"] == 1).all()
    assert (detected["detection_day"] == detected["rfs_time"]).all()
    assert (detected["molecular_onset_day"] < detected["radiological_onset_day"]).all()
    assert (detected["radiological_onset_day"] <= detected["detection_day"]).all()
    # No onset is reported after the patient's follow-up.
    for col in ("molecular_onset_day", "radiological_onset_day", "detection_day"):
        assert (patients[col].dropna() <= patients.loc[patients[col].notna(), "os_time"]).all()


def test_ctdna_rises_after_molecular_relapse_and_stays_low_when_cured(plan: CohortPlan,
                                                                     patients: pd.DataFrame) -> None:
    draws = _ctdna(plan).merge(patients[["patient_id", "molecular_onset_day", "detection_day"]], on="patient_id")
    draws = draws[~draws["timepoint"].isin(["preop", "postop1"])]  # postop1 keeps generator 1.1's level
    rec = draws[draws["detection_day"].notna() & (draws["molecular_onset_day"] > 0)]
    after = rec[rec["day"] >= rec["molecular_onset_day"]]
    before = rec[rec["day"] < rec["molecular_onset_day"] - 60]
    assert len(after) >= 10 and len(before) >= 10
    # By construction the relapsing clone alone is at TF_MOLECULAR at the molecular relapse day and grows after it.
    assert (after["tumour_fraction"] >= TF_MOLECULAR * 0.999).all()
    near = rec[rec["day"] >= rec["detection_day"] - 30]  # draws in the month before the CT finds the recurrence
    assert len(near) >= 5 and near["tumour_fraction"].median() > 10 * DETECTION_LIMIT["ctdna"]
    cured = draws[draws["molecular_onset_day"].isna() & (draws["day"] > 250)]
    assert len(cured) >= 20
    assert cured["tumour_fraction"].quantile(0.9) < 2 * DETECTION_LIMIT["ctdna"]


def test_no_sample_after_death_or_last_follow_up(plan: CohortPlan) -> None:
    s = plan.samples.merge(plan.clinical[["patient_id", "os_time", "rfs_time"]], on="patient_id")
    assert (s["day"] <= s["os_time"]).all()
    serial = s[(s["modality"].isin(["ctdna", "metabolomics"])) & (s["timepoint"] != "postop1")]
    assert (serial["day"] <= serial["rfs_time"]).all()  # serial draws stop at recurrence detection


def test_serial_draw_labels_and_metabolomics_timepoints(plan: CohortPlan) -> None:
    ct = _ctdna(plan)
    labels = set(ct["timepoint"])
    assert {"preop", "postop1", "postop2", "fu2"} <= labels
    assert all(t in ("preop", "postop1", "postop2") or t.startswith("fu") for t in labels)
    days = ct.groupby("timepoint")["day"].median()
    assert days["preop"] < 0 < days["postop1"] < days["postop2"] < days["fu3"]
    met = plan.samples[plan.samples["modality"] == "metabolomics"]
    assert set(met["timepoint"]) == {"preop", "postop1", "postop2"}
    sheet = plan.tables["metabolomics/sample_sheet.csv"]
    assert set(met["sample_id"]) <= set(sheet["sample_id"])
    assert set(met["sample_id"]) <= set(plan.tables["metabolomics/matrix.csv"].columns)
    variants = plan.tables["ctdna/variants.csv"]
    assert set(variants["sample_id"]) == set(ct["sample_id"])


def test_surveillance_visits_agree_with_rfs_time(plan: CohortPlan, patients: pd.DataFrame) -> None:
    visits = plan.truth_tables["surveillance_visits.csv"].merge(patients, on="patient_id")
    assert (visits["day"] <= visits["rfs_time"]).all()
    found = visits[visits["finding"] == "recurrence"]
    assert found["patient_id"].is_unique
    assert set(found["patient_id"]) == set(patients.loc[patients["detection_day"].notna(), "patient_id"])
    assert (found["day"] == found["rfs_time"]).all()
    ned = visits[visits["finding"] == "ned"]
    assert (ned["day"] < ned["radiological_onset_day_uncensored"]).all()  # no visit misses a visible recurrence
    assert ned.groupby("patient_id")["day"].apply(lambda d: d.is_monotonic_increasing).all()


def test_surveillance_visits_by_hand() -> None:
    """One patient found at the third scheduled CT, one symptomatic, one censored before any onset."""
    rng = np.random.default_rng(0)
    v = surveillance_visits(rng, ["A", "B", "C"], np.array([200.0, 100.0, 5000.0]), np.array([275, 130, 300]),
                            np.array([True, True, False]), np.array([False, True, False]))
    a = v[v["patient_id"] == "A"]
    assert a["visit"].tolist() == ["fu1", "fu2", "fu3"] and a["finding"].tolist() == ["ned", "ned", "recurrence"]
    assert a["day"].iloc[-1] == 275 and a["day"].iloc[1] <= 199
    b = v[v["patient_id"] == "B"]
    assert b["visit"].tolist() == ["fu1", "symptomatic"] and b["day"].tolist()[-1] == 130
    c = v[v["patient_id"] == "C"]
    assert c["visit"].tolist() == ["fu1", "fu2", "fu3"] and (c["finding"] == "ned").all()

"""Serial samples of every kind: onset truth columns, no sample after follow-up, sclc serial ctDNA."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.synthetic import KINDS
from omics_risk.data.synthetic.cohort import CohortPlan, SynthOptions
from omics_risk.data.synthetic.genome import get_genome
from omics_risk.data.synthetic.serial import ONSET_COLUMNS, molecular_progression, onset_columns

N = 60


@pytest.fixture(scope="module")
def plans() -> dict[str, CohortPlan]:
    out = {}
    for kind in KINDS:
        mod = importlib.import_module(f"omics_risk.data.synthetic.{kind.replace('-', '_')}")
        out[kind] = mod.plan(N, np.random.SeedSequence(3), SynthOptions(n_metabolites=40), get_genome())
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_onset_columns_and_no_late_sample(plans: dict[str, CohortPlan], kind: str) -> None:
    plan = plans[kind]
    assert set(ONSET_COLUMNS) <= set(plan.truth_patients.columns)
    s = plan.samples.merge(plan.clinical[["patient_id", "os_time"]], on="patient_id")
    assert (s["day"] <= s["os_time"]).all(), s.loc[s["day"] > s["os_time"], "sample_id"].tolist()
    p = plan.clinical.merge(plan.truth_patients, on="patient_id")
    found = p[p["detection_day"].notna()]
    ordered = (found["radiological_onset_day"] <= found["detection_day"]).mean()
    # nsclc-advanced: RECIST measurement noise (and a growing clone) can call progression before the true day.
    assert len(found) > 0 and ordered >= (0.6 if kind == "nsclc-advanced" else 1.0)


def test_sclc_serial_ctdna_only_while_on_follow_up(plans: dict[str, CohortPlan]) -> None:
    plan = plans["sclc"]
    s = plan.samples.merge(plan.clinical[["patient_id", "pfs_time"]], on="patient_id")
    ct = s[s["modality"] == "ctdna"]
    assert len(ct) > 3 * N
    assert (ct["day"] <= ct["pfs_time"]).all()
    assert set(ct.loc[ct["timepoint"].str.startswith("c"), "timepoint"]) == {"c1", "c2", "c3", "c4"}
    assert (ct.loc[ct["timepoint"] == "c3", "day"] == 42).all()
    assert ct.loc[ct["timepoint"].str.startswith("a"), "day"].min() > 63
    # The existing baseline and c3d1 plasma samples are still there; ctDNA is a variant table, no new files.
    assert {"baseline", "c3d1"} <= set(s.loc[s["modality"] == "cfdna", "timepoint"])
    assert set(plan.tables["ctdna/variants.csv"]["sample_id"]) == set(ct["sample_id"])
    assert "molecular_progression_day" in plan.truth_patients


def test_sclc_ctdna_falls_under_treatment_and_rises_before_progression(plans: dict[str, CohortPlan]) -> None:
    plan = plans["sclc"]
    draws = plan.samples.merge(plan.truth_samples[["sample_id", "tumour_fraction"]], on="sample_id")
    draws = draws[draws["modality"] == "ctdna"].pivot_table(index="patient_id", columns="timepoint",
                                                            values="tumour_fraction")
    both = draws[["c1", "c3"]].dropna()
    assert (both["c3"] < both["c1"]).mean() > 0.7
    p = plan.truth_patients.dropna(subset=["molecular_onset_day", "radiological_onset_day"])
    assert (p["molecular_onset_day"] <= p["radiological_onset_day"]).mean() > 0.6


def test_molecular_progression_by_hand() -> None:
    grid = np.arange(6)
    tf = np.array([[0.1, 0.01, 0.005, 0.008, 0.011, 0.02],  # nadir 0.005 at day 2, doubled by day 4
                   [1e-4, 1e-5, 1e-5, 3e-5, 1e-4, 9e-4],  # doubles but never reaches detection (1e-3)
                   [0.1, 0.3, 0.15, 0.1, 0.1, 0.1]])  # doubles at day 1, before the start day 2; then never
    assert molecular_progression(grid, tf, 1e-3, 2).tolist()[0] == 4.0
    assert np.isnan(molecular_progression(grid, tf, 1e-3, 2)[1:]).all()


def test_onset_columns_blank_what_falls_after_follow_up() -> None:
    out = onset_columns(np.array([10.0, np.nan, 50.0]), np.array([20.0, 30.0, 400.0]),
                        np.array([25.0, np.nan, np.nan]), np.array([100.0, 100.0, 100.0]))
    assert pd.DataFrame(out).fillna(-1).to_numpy().tolist() == [[10, 20, 25], [-1, 30, -1], [50, -1, -1]]

"""On synthetic cohorts the rule's share of progressions preceded by an alert and its median lead time agree, within
their bootstrap CIs, with the generator's truth at the draws actually taken (bench/bench_monitor.py: 500 patients,
daily draws)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.synthetic.cohort import SynthOptions
from omics_risk.data.synthetic.genome import get_genome
from omics_risk.monitoring import truth as truth_mod
from omics_risk.monitoring.rules import RiseRule
from omics_risk.monitoring.truth import compare_with_truth, truth_at_draws


def monitor_plan(kind: str, n: int, seed: int, rule: RiseRule, **opts: int) -> dict:
    """Monitor a generator plan's variant table (no files written) and compare with its truth."""
    patients, draws, truth = truth_mod.monitor_plan(kind, n, seed, rule, **opts)
    return compare_with_truth(patients, draws, truth, n_boot=500, seed=0)


def test_nsclc_advanced_every_cycle_agrees_with_truth() -> None:
    cmp = monitor_plan("nsclc-advanced", 60, 3, RiseRule(name="lucagen"))
    assert cmp["n"]["progressions"] >= 30
    assert cmp["preceded_share"]["agrees"], cmp["preceded_share"]
    assert cmp["median_lead_days"]["agrees"], cmp["median_lead_days"]
    # the truth at 21-day draws lags the true onset by the sampling delay
    assert cmp["median_onset_lead_days"]["truth_value"] >= cmp["median_lead_days"]["truth_value"]


def test_nsclc_postop_molecular_relapse_lead_agrees_with_truth() -> None:
    cmp = monitor_plan("nsclc-postop", 60, 3, RiseRule(name="redetection", redetection=True))
    lead = cmp["median_lead_days"]
    assert lead["agrees"], lead
    assert lead["rule_value"] > 30  # molecular relapse comes months before the radiological recurrence


def test_truth_at_draws_by_hand() -> None:
    draws = pd.DataFrame({"patient_id": ["A"] * 4 + ["B"] * 3 + ["C"] * 2,
                          "day": [0, 21, 42, 63, 0, 21, 42, 0, 21]})
    truth = pd.DataFrame({"molecular_onset_day": [30.0, 50.0, np.nan]}, index=["A", "B", "C"])
    patients = pd.DataFrame({"endpoint_event": [1.0, 1.0, 0.0], "progression_day": [80.0, 45.0, np.nan],
                             "n_usable_draws": [4, 3, 2]}, index=["A", "B", "C"])
    t = truth_at_draws(truth, draws, patients)
    assert t.loc["A", "alert_day"] == 42 and t.loc["A", "lead_time_days"] == 38  # first draw on/after day 30
    assert np.isnan(t.loc["B", "alert_day"]) and t.loc["B", "preceded"] == 0  # no draw after the onset
    assert np.isnan(t.loc["C", "preceded"])  # not a progressor
    daily = pd.DataFrame({"patient_id": ["A"] * 81, "day": np.arange(81)})
    t1 = truth_at_draws(truth.loc[["A"]], daily, patients.loc[["A"]])
    assert t1.loc["A", "lead_time_days"] == 80 - 30  # daily draws: the sampling delay vanishes


@pytest.mark.parametrize("every", [7])
def test_draw_every_changes_only_the_schedule(every: int) -> None:
    genome = get_genome(120)
    # lazy: the planner module, as above
    from omics_risk.data.synthetic import nsclc_advanced

    base = nsclc_advanced.plan(20, np.random.SeedSequence(5), SynthOptions(), genome)
    weekly = nsclc_advanced.plan(20, np.random.SeedSequence(5), SynthOptions(draw_every=every), genome)
    pd.testing.assert_frame_equal(base.clinical, weekly.clinical)
    cols = ["molecular_onset_day", "radiological_progression_day_true"]
    pd.testing.assert_frame_equal(base.truth_patients[cols], weekly.truth_patients[cols])
    days = weekly.samples[weekly.samples["modality"] == "ctdna"].groupby("patient_id")["day"].apply(
        lambda d: set(np.diff(np.sort(d.to_numpy()))))
    assert all(gaps <= {every * k for k in range(1, 6)} for gaps in days)  # a missed draw doubles a gap
    assert weekly.summary_extra["ctdna_draw_every_days"] == every and "ctdna_draw_every_days" not in \
        base.summary_extra

"""The LUCAGEN table, the per-draw states and the per-patient table against a hand computation on 5 patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omics_risk.monitoring.lucagen import lucagen_table
from omics_risk.monitoring.rules import FloorRule, RiseRule
from omics_risk.monitoring.states import draw_states, patient_table

NEG = 1e-4  # a negative draw's level (below the 5e-4 LOD)

# patient: (days, pooled VAF, positive); outcomes (time, event); P5 has no draw at all.
DRAWS = {
    "P1": ([0, 21, 42, 63, 84], [0.01, 0.004, 0.002, 0.005, 0.01], [1, 1, 1, 1, 1]),
    "P2": ([0, 21, 42, 63], [0.02, 0.01, 0.012, 0.015], [1, 1, 1, 1]),
    "P3": ([0, 21, 42, 63, 84, 105], [NEG] * 6, [0] * 6),
    "P4": ([0, 21, 42, 63], [0.003, 0.0008, 0.0002, 0.003], [1, 1, 0, 1]),
}
OUTCOMES = {"P1": (100, 1), "P2": (70, 1), "P3": (120, 0), "P4": (200, 0), "P5": (50, 1)}


def _summaries() -> pd.DataFrame:
    rows = [{"sample_id": f"{p}_{d}", "patient_id": p, "day": float(d), "pooled_vaf": v, "positive": float(s)}
            for p, (days, vafs, pos) in DRAWS.items() for d, v, s in zip(days, vafs, pos, strict=True)]
    return pd.DataFrame(rows).set_index("sample_id")


def _status() -> pd.DataFrame:
    n = {p: len(DRAWS.get(p, ([],))[0]) for p in OUTCOMES}
    return pd.DataFrame({"status": ["ok" if n[p] else "no_draws" for p in OUTCOMES],
                         "reason": ["" if n[p] else "no ctdna draw in samples.csv" for p in OUTCOMES],
                         "n_draws": [n[p] for p in OUTCOMES]}, index=pd.Index(list(OUTCOMES), name="patient_id"))


def _outcomes() -> pd.DataFrame:
    return pd.DataFrame({"time": [t for t, _ in OUTCOMES.values()], "event": [e for _, e in OUTCOMES.values()]},
                        index=list(OUTCOMES), dtype=float)


@pytest.fixture(scope="module")
def monitored() -> tuple[pd.DataFrame, pd.DataFrame]:
    draws = draw_states(_summaries(), RiseRule(name="lucagen", level="pooled_vaf", fold=2.0))
    return draws, patient_table(draws, _outcomes(), _status())


def test_states_follow_the_hand_computation(monitored) -> None:
    draws, _ = monitored
    states = draws.groupby("patient_id")["state"].apply(list).to_dict()
    # P1: 0.4 and 0.2 of baseline = response; 0.005 >= 2 x nadir 0.002 at day 63 = alert, which stays on
    assert states["P1"] == ["baseline", "response", "response", "molecular progression", "molecular progression"]
    # P2: 0.5 of baseline is a response; 0.015 is 1.5x the nadir 0.01: no alert
    assert states["P2"] == ["baseline", "response", "stable", "stable"]
    assert states["P3"] == ["baseline"] + ["stable"] * 5  # never detected
    # P4: a negative draw after a positive baseline = cleared; 0.003 >= 2 x the LOD-floored nadir (5e-4) = alert
    assert states["P4"] == ["baseline", "response", "cleared", "molecular progression"]
    fired = draws[draws["rule_fired"] != ""]
    assert fired[["patient_id", "day"]].values.tolist() == [["P1", 63.0], ["P4", 63.0]]
    assert set(fired["rule_fired"]) == {"lucagen"}


def test_patient_table_every_patient_and_hand_values(monitored) -> None:
    _, p = monitored
    assert p.index.tolist() == ["P1", "P2", "P3", "P4", "P5"]
    assert p.loc["P5", "status"] == "no_draws" and p.loc["P5", "n_usable_draws"] == 0
    assert np.isnan(p.loc["P5", "alert_before_progression"])
    assert p.loc["P1", "alert_day"] == 63 and p.loc["P1", "lead_time_days"] == 37
    assert p.loc["P1", "cycles"] == 4 and p.loc["P1", "cycles_after_molecular_progression"] == 2
    assert p.loc["P2", "alert_before_progression"] == 0 and np.isnan(p.loc["P2", "lead_time_days"])
    assert p.loc["P1", "molecular_response_day"] == 21 and p.loc["P4", "clearance_day"] == 42
    assert np.isnan(p.loc["P3", "molecular_response"])  # negative baseline: not evaluable
    assert p.loc["P3", "followup_years"] == pytest.approx(105 / 365.25)  # censored at the last draw
    assert p.loc["P4", "followup_years"] == pytest.approx(63 / 365.25)


def test_lucagen_table_matches_the_hand_computation(monitored) -> None:
    draws, patients = monitored
    t = lucagen_table(patients, draws, window_days=90, n_boot=200, seed=1)
    assert t.n_patients == 4  # P5 has no draw
    assert (t.detectable.k, t.detectable.n) == (3, 4)
    assert (t.preceded.k, t.preceded.n) == (1, 2)
    assert t.median_lead_days.value == 37
    assert (t.cycles_after.k, t.cycles_after.n) == (2, 4)
    # one false alert (P4) over (105 + 63) days of non-progressor follow-up
    assert t.false_alerts == 1
    assert t.false_alerts_per_patient_year.value == pytest.approx(365.25 / 168)
    # per visit, window 90 days: P1 days 21-84 and P2 all four are cases (alerts at P1 63, 84);
    # controls: P1 day 0, P3 days 0 and 21 (follow-up to 120), P4 days 0-63 (alert on at 63)
    assert (t.visit_sensitivity.k, t.visit_sensitivity.n) == (2, 8)
    assert (t.visit_specificity.k, t.visit_specificity.n) == (6, 7)
    s = t.preceded.share
    assert 0 <= s.low <= s.value <= s.high <= 1
    frame = t.frame()
    assert frame.loc[1, "this cohort (95% CI)"].startswith("1/2 (50%")


def test_confirmation_moves_the_alert_to_the_next_draw() -> None:
    draws = draw_states(_summaries(), RiseRule(name="c", fold=2.0, confirm=True))
    p = patient_table(draws, _outcomes(), _status())
    assert p.loc["P1", "alert_day"] == 84 and p.loc["P1", "molecular_progression_day"] == 63
    assert np.isnan(p.loc["P4", "alert_day"])  # no draw after the rise: nothing confirms it


def test_floor_rule_fires_at_the_first_positive_draw_over_the_floor() -> None:
    draws = draw_states(_summaries(), FloorRule(name="floor", floor=0.005))
    p = patient_table(draws, _outcomes(), _status())
    assert p.loc["P1", "alert_day"] == 63  # 0.004 and 0.002 stay under the floor
    assert p.loc["P2", "alert_day"] == 21  # 0.01 at the first on-treatment draw
    assert np.isnan(p.loc["P4", "alert_day"])  # 0.003 never reaches it
    assert np.isnan(p.loc["P3", "alert_day"])


def test_grid_curve_and_out_of_fold_choice() -> None:
    # lazy: the grid module, only this test
    from omics_risk.monitoring.grid import rule_grid

    rule = RiseRule(name="g", fold=2.0, grid={"fold": [2.0, 10.0]})
    res = rule_grid(_summaries(), rule, _outcomes(), _status(), folds=2, max_false_alerts=100.0, n_boot=50)
    curve = res.curve.set_index("fold")
    # fold 2: P1 preceded of P1, P2; P4's false alert over 168 days. fold 10: no alert at all
    assert curve.loc[2.0, "sensitivity"] == 0.5 and curve.loc[2.0, "median_lead_days"] == 37
    assert curve.loc[2.0, "false_alerts_per_patient_year"] == pytest.approx(365.25 / 168)
    assert curve.loc[10.0, "sensitivity"] == 0 and curve.loc[10.0, "false_alerts_per_patient_year"] == 0
    # a budget nothing exceeds: every training fold chooses the most sensitive point
    assert set(res.folds["chosen_fold"]) == {2.0} and res.folds["n_test"].sum() == 4
    assert res.out_of_fold["sensitivity"].value == 0.5

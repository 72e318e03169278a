"""The simulator against hand computations: a fixed interval d finds uniform onsets after d/2 on average; a
constant symptom delay s < d makes a share 1 - s/d of recurrences interval recurrences with mean delay s - s^2/(2d);
a perfectly informative risk model lets the risk-adapted schedule reach the fixed schedule's delay with fewer
scans, and a model without information gives no gain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omics_risk.surveillance.schedules import (
    DAYS_PER_MONTH,
    CtdnaTriggeredSchedule,
    FixedSchedule,
    RiskAdaptedSchedule,
    StageBasedSchedule,
    TableSchedule,
    build_schedules,
    segment_days,
)
from omics_risk.surveillance.simulate import SurveillanceCohort, simulate, simulate_all
from omics_risk.surveillance.summary import matched_to, schedule_stats

D6 = 6 * DAYS_PER_MONTH


def _cohort(onset: np.ndarray, horizon: float, *, symptom: float = np.inf, mol: np.ndarray | None = None,
            times: np.ndarray | None = None, surv: np.ndarray | None = None) -> SurveillanceCohort:
    n = len(onset)
    return SurveillanceCohort(np.array([f"P{i}" for i in range(n)]), onset,
                              onset if mol is None else mol, np.full(n, horizon), np.full(n, np.inf),
                              np.full(n, symptom), horizon, times=times, survival=surv)


def test_segments_give_the_scan_days_of_the_escalating_schedule() -> None:
    days = segment_days([{"every_months": 6, "until_months": 24}, {"every_months": 12}], 60 * DAYS_PER_MONTH)
    assert np.allclose(days / DAYS_PER_MONTH, [6, 12, 18, 24, 36, 48, 60], atol=1e-3)


def test_a_fixed_interval_finds_uniform_onsets_after_half_an_interval() -> None:
    n, span = 4000, 10 * D6
    onset = (np.arange(n) + 0.5) / n * span  # evenly spread over ten intervals
    out = simulate(FixedSchedule(segments=[{"every_months": 6}]), _cohort(onset, span + 1))
    assert out["recurred"].all()
    assert out["delay_days"].mean() == pytest.approx(D6 / 2, abs=0.05)
    assert out["within_window"].mean() == pytest.approx(90 / D6, abs=1e-3)  # delay uniform on (0, d]
    # scans up to detection: a patient with onset in interval k (0-based) has k + 1 scans
    assert out["scans"].to_numpy() == pytest.approx(np.floor(onset / D6) + 1)


def test_symptoms_between_scans_make_interval_recurrences() -> None:
    n, s = 4000, 60.0
    onset = (np.arange(n) + 0.5) / n * 10 * D6
    out = simulate(FixedSchedule(segments=[{"every_months": 6}]), _cohort(onset, 10 * D6 + 1, symptom=s))
    assert out["interval_recurrence"].mean() == pytest.approx(1 - s / D6, abs=3e-3)
    assert out["delay_days"].mean() == pytest.approx(s - s * s / (2 * D6), abs=0.05)
    assert set(out.loc[out["interval_recurrence"] == 1, "detected_by"]) == {"symptoms"}


def _cure_mixture(n: int, rate: float, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Half the patients never recur; the other half recur at the exponential quantiles (rate per day)."""
    q = (np.arange(n // 2) + 0.5) / (n // 2)
    onset = np.concatenate([-np.log(1 - q) / rate, np.full(n - n // 2, np.inf)])
    at_risk = np.isfinite(onset)
    return onset, at_risk


def _family_and_fixed(cohort: SurveillanceCohort) -> tuple[list, object]:
    family = RiskAdaptedSchedule(thresholds=[0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.25, 0.35],
                                 min_interval_months=0.5).expand()
    fixed = FixedSchedule("ct_6m", [{"every_months": 6}])
    long = simulate_all([*family, fixed], cohort, window_days=90)
    stats = schedule_stats(long, {s.name: s.family for s in [*family, fixed]}, n_boot=0, seed=0)
    return [stats[s.name] for s in family], stats["ct_6m"]


def test_a_perfectly_informative_model_needs_fewer_scans_for_the_same_delay() -> None:
    rate, horizon = 1 / 1500, 5 * 365.25
    onset, at_risk = _cure_mixture(400, rate, horizon)
    times = np.arange(30.0, horizon + 31, 30.0)
    surv = np.where(at_risk[:, None], np.exp(-rate * times[None, :]), 1.0)  # the truth, patient by patient
    family, fixed = _family_and_fixed(_cohort(onset, horizon, symptom=365.0, times=times, surv=surv))
    m = matched_to(family, fixed, metric="mean_delay_days")
    # never-recurring patients get no scan, so the family reaches the 6-monthly delay with about half the scans
    assert m.scans_saved_at_equal_delay.value > 0.35 * fixed.point["scans_per_patient"]
    assert m.difference.value < -20  # and at the 6-monthly cost, a clearly shorter delay


def test_a_model_without_information_gives_no_gain() -> None:
    rate, horizon = 1 / 1500, 5 * 365.25
    onset, at_risk = _cure_mixture(400, rate, horizon)
    times = np.arange(30.0, horizon + 31, 30.0)
    perm = np.random.default_rng(0).permutation(len(onset))  # each patient gets another patient's curve
    surv = np.where(at_risk[perm][:, None], np.exp(-rate * times[None, :]), 1.0)
    family, fixed = _family_and_fixed(_cohort(onset, horizon, symptom=365.0, times=times, surv=surv))
    assert matched_to(family, fixed, metric="mean_delay_days").difference.value > 0
    # homogeneous risk, every patient the same (true) constant-hazard curve: the risk-adapted schedule is a fixed
    # interval, on the fixed schedules' own trade-off (delay x scans the same)
    onset_h = -np.log(1 - (np.arange(400) + 0.5) / 400) / rate
    same = np.tile(np.exp(-rate * times), (400, 1))
    c = _cohort(onset_h, 1900.0, times=times, surv=same)  # a horizon off the 6-monthly grid: no edge effect
    ra = simulate(RiskAdaptedSchedule(threshold=1 - np.exp(-rate * D6), min_interval_months=0.5), c)
    fx = simulate(FixedSchedule(segments=[{"every_months": 6}]), c)
    assert ra["scans"].mean() == pytest.approx(fx["scans"].mean(), rel=0.01)
    assert ra["delay_days"].mean() == pytest.approx(fx["delay_days"].mean(), rel=0.02)


def test_ctdna_triggered_scans_follow_the_molecular_onset() -> None:
    # onset day 400, molecular onset 250; draws every 3 months (91.3, 182.6, 273.9, ...): first positive 273.9,
    # CT 14 days later (287.9, negative), repeated every 3 months: 379.2 (negative), 470.6 finds it
    s = CtdnaTriggeredSchedule(draw_every_months=3, sensitivity=1, specificity=1, ct_delay_days=14,
                               confirm_every_months=3, backbone=[])
    out = simulate(s, _cohort(np.array([400.0, np.inf]), 1826, mol=np.array([250.0, np.inf])))
    d3 = 3 * DAYS_PER_MONTH
    assert out.loc[0, "detection_day"] == pytest.approx(3 * d3 + 14 + 2 * d3, abs=0.01)
    assert out.loc[0, "detected_by"] == "ctdna"
    assert out.loc[0, "scans"] == 3 and out.loc[0, "draws"] == 3
    assert out.loc[1, "scans"] == 0 and out.loc[1, "draws"] == len(s.draw_days(1826))


def test_stage_table_and_exclusions_keep_every_patient() -> None:
    c = _cohort(np.array([100.0, 100.0, np.inf]), 730)
    c.stage = np.array(["IB", "IIIA", None], dtype=object)
    c.usable = np.array([True, True, False])
    c.reason = np.array(["", "", "no follow-up"], dtype=object)
    st = StageBasedSchedule(plans={"IB": [{"every_months": 12}], "IIIA": [{"every_months": 3}]})
    tb = TableSchedule(months=[1, 2])
    long = simulate_all([st, tb], c)
    assert len(long) == 6 and list(long["status"]) == ["ok", "ok", "excluded"] * 2
    byp = long[long["schedule"] == "stage_based"].set_index("patient_id")
    assert byp.loc["P0", "detection_day"] == pytest.approx(12 * DAYS_PER_MONTH, abs=0.01)
    assert byp.loc["P1", "detection_day"] == pytest.approx(6 * DAYS_PER_MONTH, abs=0.01)
    assert pd.isna(byp.loc["P2", "scans"]) and byp.loc["P2", "reason"] == "no follow-up"
    tab = long[long["schedule"] == "table"].set_index("patient_id")
    assert tab.loc["P0", "detected_by"] == "none" and tab.loc["P0", "scans"] == 2  # scans stop at month 2


def test_schedules_from_configs_refuse_other_targets() -> None:
    got = build_schedules({"a": {"_target_": "omics_risk.surveillance.schedules.RiskAdaptedSchedule",
                                 "thresholds": [0.05, 0.1]}, "b": None})
    assert [s.name for s in got] == ["a_0.05", "a_0.1"]
    with pytest.raises(ValueError, match="is not a schedule"):
        build_schedules({"x": {"_target_": "os.system"}})

"""Prediction times (``omics_risk.data.timing``): the config forms, each patient's prediction day, the risk set and
the samples a model may use; every expected number below is worked out by hand from the tiny tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.timing import PredictionTime, at_risk, prediction_days, select_samples, slot_table


# ------------------------------------------------------------------------------------------------ the config
@pytest.mark.parametrize(("node", "expected"), [
    (None, PredictionTime()),
    ("index", PredictionTime()),
    ({"at": "index"}, PredictionTime()),
    ({"at": "day", "day": 90}, PredictionTime(at="day", day=90.0)),
    ({"at": "timepoint", "timepoint": "c3d1"}, PredictionTime(at="timepoint", timepoint="c3d1")),
    ({"at": "landmarks", "landmarks": [0, 90, 180]}, PredictionTime(at="landmarks", landmarks=(0.0, 90.0, 180.0))),
    ({"at": "day", "day": 90, "windows": {"last": [-30, 0]}},
     PredictionTime(at="day", day=90.0, windows={"last": (-30.0, 0.0)})),
])
def test_from_config_reads_every_form(node: object, expected: PredictionTime) -> None:
    assert PredictionTime.from_config(node) == expected


@pytest.mark.parametrize(("node", "message"), [
    ({"at": "dya"}, "task.prediction_time.at: unknown kind 'dya'; write one of index, day, timepoint, landmarks"),
    ({"at": "day"}, "at: day needs the day, e.g. {at: day, day: 90}"),
    ({"at": "timepoint"}, "at: timepoint needs the timepoint label"),
    ({"at": "landmarks"}, "at: landmarks needs a list of days"),
    ({"at": "landmarks", "landmarks": [90, 0]}, "landmarks must be increasing without repeats"),
    ({"at": "day", "day": "soon"}, "task.prediction_time.day must be a number of days, got 'soon'"),
    ({"at": "index", "day": 3}, "day given with at: index; write at: day or drop it"),
    ({"when": 3}, "unknown key(s) ['when']"),
    ({"at": "day", "day": 90, "windows": {"last": [0, -30]}}, "windows.last: lo 0 > hi -30"),
    ({"at": "day", "day": 90, "windows": {"last": [-30, 10]}}, "hi 10 > 0 reaches after the prediction time"),
    ({"at": "day", "day": 90, "windows": {"last": [-30]}}, "windows.last must be [lo, hi]"),
    ({"at": "day", "day": 90, "windows": {"a__b": [-30, 0]}}, "slot name 'a__b'"),
    ("tomorrow", "'tomorrow' is not a prediction time"),
])
def test_from_config_names_the_key_and_what_to_write(node: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        PredictionTime.from_config(node)
    assert message in str(err.value)


def test_describe() -> None:
    assert PredictionTime().describe() == "the index date (day 0)"
    assert PredictionTime(at="day", day=90).describe() == "day 90"
    assert PredictionTime(at="timepoint", timepoint="c3d1").describe() == "each patient's latest 'c3d1' sample"
    assert (PredictionTime(at="landmarks", landmarks=(0, 90.5)).describe() == "landmarks at days 0, 90.5")
    assert (PredictionTime(at="day", day=30, windows={"last": (-30, 0)}).describe()
            == "day 30; slots last [-30, 0]")
    assert PredictionTime(at="landmarks", landmarks=(0, 90), windows={"w": (-7, 0)}).at_landmark(90) == \
        PredictionTime(at="day", day=90.0, windows={"w": (-7, 0)})


# ------------------------------------------------------------------------------------------------ prediction days
SAMPLES = pd.DataFrame({
    "patient_id": ["A", "A", "A", "B", "B", "C"],
    "sample_id": ["A1", "A2", "A3", "B1", "B2", "C1"],
    "timepoint": ["pre", "c3d1", "c3d1", "pre", "c3d1", "pre"],  # A has two c3d1 draws (a repeat): the latest counts
    "day": [-5.0, 40.0, 44.0, -3.0, 41.0, -1.0],
})


def test_prediction_days_per_kind() -> None:
    pats = ["A", "B", "C"]
    assert prediction_days(PredictionTime(), SAMPLES, pats).tolist() == [0.0, 0.0, 0.0]
    assert prediction_days(PredictionTime(at="day", day=30), SAMPLES, pats).tolist() == [30.0, 30.0, 30.0]
    got = prediction_days(PredictionTime(at="timepoint", timepoint="c3d1"), SAMPLES, pats)
    assert got.index.tolist() == pats
    np.testing.assert_array_equal(got.to_numpy(), [44.0, 41.0, np.nan])  # C has no c3d1 sample: not at risk
    with pytest.raises(ValueError, match=r"no sample of the cohort carries timepoint 'c9' \(samples.csv has: c3d1, "
                                         r"pre\); write one of these"):
        prediction_days(PredictionTime(at="timepoint", timepoint="c9"), SAMPLES, pats)
    with pytest.raises(ValueError, match="one prediction time per landmark"):
        prediction_days(PredictionTime(at="landmarks", landmarks=(0.0,)), SAMPLES, pats)


def test_at_risk_leaves_out_events_and_censorings_at_or_before_the_day() -> None:
    time = [10.0, 90.0, 91.0, 200.0, np.nan, 150.0, 300.0]
    event = [1, 0, 1, 0, 1, 1, np.nan]
    day = [90.0, 90.0, 90.0, 90.0, 90.0, np.nan, 90.0]
    mask, shifted = at_risk(time, event, day)
    # event before, censored on the day, event the day after, censored later, no time, no day, no event status
    assert mask.tolist() == [False, False, True, True, False, False, False]
    np.testing.assert_array_equal(shifted, [-80.0, 0.0, 1.0, 110.0, np.nan, np.nan, 210.0])
    mask0, shifted0 = at_risk([5.0, 0.0], [1, 1], 0.0)  # a scalar day; time 0 is at (not after) the index date
    assert mask0.tolist() == [True, False] and shifted0.tolist() == [5.0, 0.0]
    with pytest.raises(ValueError, match="differ in length"):
        at_risk([1.0, 2.0], [1], 0.0)


# ------------------------------------------------------------------------------------------------ sample selection
LONG = pd.DataFrame({
    "patient_id": ["A", "A", "A", "A", "B", "B"],
    "timepoint": ["pre", "c2", "c3", "c4", "pre", "c3"],
    "day": [-20.0, 21.0, 42.0, 63.0, -5.0, 45.0],
    "level": [1.0, 2.0, 3.0, 4.0, 10.0, 30.0],
    "other": [0.1, 0.2, np.nan, 0.4, 1.0, 3.0],
}, index=pd.Index(["A0", "A2", "A3", "A4", "B0", "B3"], name="sample_id"))


def test_select_samples_by_label_keeps_only_samples_up_to_each_patients_day() -> None:
    days = pd.Series({"A": 42.0, "B": 30.0})
    got = select_samples(LONG, days, None)
    assert got[["patient_id", "slot", "sample_id"]].values.tolist() == [
        ["A", "c2", "A2"], ["A", "c3", "A3"], ["A", "pre", "A0"], ["B", "pre", "B0"]]  # A4 (63), B3 (45): later
    assert got.columns.tolist() == ["patient_id", "slot", "sample_id", "timepoint", "day", "level", "other"]
    table = slot_table(got, pd.Index(["A", "B", "Z"], name="patient_id"))
    # c3__other is NaN for its only sample: left out; Z has no sample: a NaN row
    assert table.columns.tolist() == ["c2__level", "c2__other", "c3__level", "pre__level", "pre__other"]
    np.testing.assert_array_equal(table.loc["A"].to_numpy(), [2.0, 0.2, 3.0, 1.0, 0.1])
    np.testing.assert_array_equal(table.loc["B"].to_numpy(), [np.nan, np.nan, np.nan, 10.0, 1.0])
    assert table.loc["Z"].isna().all()
    # a patient without a prediction day (NaN) or not in the series gets nothing
    assert select_samples(LONG, pd.Series({"A": np.nan}), None).empty


def test_select_samples_by_window_takes_the_latest_sample_in_each_window() -> None:
    days = pd.Series({"A": 50.0, "B": 50.0})
    windows = {"last": (-30.0, 0.0), "base": (-100.0, -40.0)}
    got = select_samples(LONG, days, windows).set_index(["patient_id", "slot"])["sample_id"].to_dict()
    # A: days 21, 42 are in [20, 50] -> the latest, 42; base [-50, 10]: -20. B: 45 in last; base: -5.
    assert got == {("A", "last"): "A3", ("A", "base"): "A0", ("B", "last"): "B3", ("B", "base"): "B0"}
    # overlapping windows may both take one sample
    both = select_samples(LONG, pd.Series({"B": 50.0}), {"w1": (-10.0, 0.0), "w2": (-20.0, 0.0)})
    assert both["sample_id"].tolist() == ["B3", "B3"] and both["slot"].tolist() == ["w1", "w2"]


def test_presence_at_the_prediction_time_does_not_encode_survival_to_a_later_sample() -> None:
    """SCLC's trap: the on-treatment c3d1 sample (day 42) exists only for patients still event-free then. By label
    (every sample) its presence carries the outcome; at a prediction time before day 42 nothing of it is used, so the
    presence (and every feature) is the same whether those later samples exist or not."""
    rng = np.random.default_rng(0)
    pats = [f"P{i}" for i in range(12)]
    event_day = pd.Series(rng.choice([20.0, 30.0, 200.0, 300.0], size=12), index=pats)
    pre = pd.DataFrame({"patient_id": pats, "timepoint": "pre", "day": -7.0, "level": rng.normal(size=12)},
                       index=[f"{p}-pre" for p in pats])
    pre = pre.drop(["P3-pre", "P8-pre"])  # two patients lack the baseline sample
    alive = [p for p in pats if event_day[p] > 42]
    later = pd.DataFrame({"patient_id": alive, "timepoint": "c3d1", "day": 42.0, "level": rng.normal(size=len(alive))},
                         index=[f"{p}-c3d1" for p in alive])
    everything = pd.concat([pre, later]).rename_axis("sample_id")
    index = pd.Index(pats, name="patient_id")
    # by label over every sample the c3d1 slot is present exactly for the survivors: the outcome leaks
    legacy = slot_table(select_samples(everything, pd.Series(1e9, index=pats), None), index)
    assert legacy["c3d1__level"].notna().tolist() == (event_day > 42).tolist()
    for day in (0.0, 30.0):
        pday = pd.Series(day, index=pats)
        with_later = select_samples(everything, pday, None)
        without = select_samples(pre.rename_axis("sample_id"), pday, None)
        presence = index.isin(with_later["patient_id"])
        np.testing.assert_array_equal(presence, index.isin(without["patient_id"]))
        assert presence.tolist() == [p not in ("P3", "P8") for p in pats]  # only the baseline sample counts
        pd.testing.assert_frame_equal(slot_table(with_later, index), slot_table(without, index))

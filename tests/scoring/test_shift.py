"""Distribution-shift check (``omics_risk.scoring.shift``): training ranges stored as percentiles, values far
outside them counted per feature and per patient, chunk by chunk and across resumed runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from omics_risk.scoring.frames import FeatureManifest
from omics_risk.scoring.shift import ShiftCheck, check_frames, training_ranges

MANIFEST = FeatureManifest(clinical={"age": "double", "sex": "string"},
                           modalities={"cfdna": ("postop1__tf", "postop1__short"), "ct": ("preop__volume",)})


def _train(n: int = 201, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "patient_id": [f"P{i}" for i in range(n)],
        "clinical/age": rng.normal(65, 8, n),
        "clinical/sex": rng.choice(["M", "F"], n),
        "cfdna/postop1__tf": rng.uniform(0, 0.2, n),
        "cfdna/postop1__short": np.linspace(0.1, 0.3, n),
        "ct/preop__volume": np.full(n, 7.0),  # constant in training
    })
    frame.loc[:9, ["cfdna/postop1__tf", "cfdna/postop1__short"]] = np.nan  # ten patients lack cfDNA
    return frame


def test_training_ranges_are_percentiles_of_the_numeric_columns() -> None:
    frame = _train()
    ranges = training_ranges(frame, MANIFEST)
    assert ranges["quantiles"] == [0.01, 0.99]
    # training patients below p01 / above p99 / beyond 3 widths (the tests' null): of the 191 evenly spaced values,
    # p01 sits at sorted position 0.01 x 190 = 1.9, so positions 0 and 1 lie below it (and 189, 190 above p99)
    assert ranges["tails"]["cfdna/postop1__short"] == [2, 2, 0]
    assert ranges["tails"]["ct/preop__volume"] == [0, 0, 0]
    assert set(ranges["columns"]) == {"clinical/age", "cfdna/postop1__tf", "cfdna/postop1__short", "ct/preop__volume"}
    short = frame["cfdna/postop1__short"].dropna()
    lo, hi, med, n = ranges["columns"]["cfdna/postop1__short"]
    assert (lo, hi, med) == pytest.approx((short.quantile(0.01), short.quantile(0.99), short.median()))
    assert n == 191
    assert ranges["columns"]["ct/preop__volume"][:2] == [7.0, 7.0]
    json.dumps(ranges)  # stored in scoring.json
    empty = frame.assign(**{"ct/preop__volume": np.nan})
    assert "ct/preop__volume" not in training_ranges(empty, MANIFEST)["columns"]
    with pytest.raises(ValueError, match="quantiles"):
        training_ranges(frame, MANIFEST, quantiles=(0.9, 0.1))


def test_values_far_outside_the_range_are_counted_per_feature_and_patient() -> None:
    ranges = training_ranges(_train(), MANIFEST)
    lo, hi = ranges["columns"]["cfdna/postop1__short"][:2]
    width = hi - lo
    new = pd.DataFrame({
        "patient_id": ["A", "B", "C", "D", "E"],
        "clinical/age": [60.0, 70.0, 250.0, np.nan, 66.0],  # C: an age in months?
        "clinical/sex": ["M", "F", "M", "F", "M"],
        "cfdna/postop1__tf": [0.1, 0.1, 0.1, np.nan, 0.1],
        # inside; just beyond p99 (a tail, not a shift); beyond p99 + 0.5 x width (shifted, twice); missing
        "cfdna/postop1__short": [0.2, hi + 0.4 * width, hi + 0.6 * width, np.nan, lo - 2 * width],
        "ct/preop__volume": [7.0, 7.0 + 1e-9, 7.5, np.nan, 7.0],  # constant in training: any real change counts
    })
    check = ShiftCheck(ranges)
    per_patient = check.update(new)
    assert per_patient.tolist() == [0, 0, 3, 0, 1]
    report = check.report()
    assert report.counts == {"clinical/age": 1, "cfdna/postop1__tf": 0, "cfdna/postop1__short": 2,
                             "ct/preop__volume": 1}
    assert report.observed["cfdna/postop1__short"] == 4 and report.n_patients == 5
    assert report.shifted == ["cfdna/postop1__short", "clinical/age", "ct/preop__volume"]
    assert report.examples["cfdna/postop1__short"] == pytest.approx(lo - 2 * width)
    assert report.by_modality() == {"cfdna": 1, "clinical": 1, "ct": 1}
    # the verdict: 3 of 4 patients beyond the short-fragment percentiles (4 of 191 training patients were: chance
    # gives 4 x 6 / 192 = 0.125, p < 0.001, Holm-adjusted over 4 features 0.0007); one patient each beyond the
    # range of age (5 widths out) and of the constant volume is what chance gives 4 patients (p = 0.11, 0.04)
    assert report.detected == ["cfdna/postop1__short"]
    lines = report.messages()
    assert lines[0].startswith("distribution shift in 1 feature(s), by modality cfdna (1): ")
    assert lines[1].startswith("  cfdna/postop1__short: 2 of 4 patient(s) far outside the training range (1 below / 2 "
                               "above its 1st-99th percentiles, about 0.1 by chance, p = 0.00018)")
    table = report.to_frame()
    assert table[["modality", "feature", "patients_out_of_range", "shift_detected"]].values.tolist() == [
        ["cfdna", "postop1__short", 2, True], ["clinical", "age", 1, False], ["ct", "preop__volume", 1, False]]
    # a wider margin tolerates the moderate excursion
    assert check_frames([new], ranges, margin=1.0).counts["cfdna/postop1__short"] == 1


def test_chunks_and_resumed_state_add_up_to_one_pass() -> None:
    ranges = training_ranges(_train(), MANIFEST)
    rng = np.random.default_rng(3)
    new = _train(60, seed=4)
    new["clinical/age"] = rng.normal(80, 15, 60)  # an older cohort
    whole = check_frames([new], ranges)
    first = ShiftCheck(ranges)
    first.update(new.iloc[:25])
    second = ShiftCheck(ranges)
    second.merge_state(json.loads(json.dumps(first.state())))  # as read back from a checkpoint
    second.update(new.iloc[25:])
    merged = second.report()
    assert merged.counts == whole.counts and merged.n_patients == 60 and merged.counts["clinical/age"] > 0
    assert (merged.below, merged.above, merged.gross) == (whole.below, whole.above, whole.gross)
    assert merged.patients_far == whole.patients_far and merged.detected == whole.detected == ["clinical/age"]
    assert merged.examples == pytest.approx(whole.examples)
    with pytest.raises(ValueError, match="does not match"):
        ShiftCheck({"columns": {"x/y": [0, 1, 0.5, 3]}}).merge_state(first.state())


def test_missing_ranges_disable_the_check() -> None:
    check = ShiftCheck(None)
    assert not check.enabled
    assert check.update(_train(5)).tolist() == [0] * 5
    assert check.report().messages() == []
    with pytest.raises(ValueError, match="margin"):
        ShiftCheck(None, margin=-1)

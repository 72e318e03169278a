"""Longitudinal features at a prediction time: hand-computed reference patients, no look-ahead, the edge rows, a
per-patient reference implementation on random draws, and agreement with the ctDNA dynamics on a synthetic cohort."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.contract import load_cohort
from omics_risk.data.readers import read_variant_table
from omics_risk.data.synthetic import generate_cohort
from omics_risk.features.ctdna import ctdna_dynamics, sample_summaries
from omics_risk.features.longitudinal import (
    FEATURES,
    LongitudinalSpec,
    long_values,
    longitudinal_features,
    longitudinal_table,
)

SYNTH = {"fragments_per_sample": 200, "n_metabolites": 20, "ct_shape": (8, 8, 8), "workers": 1, "progress": False}
DL = 0.01
SPEC = LongitudinalSpec("q", detection_limit=DL)


def _long(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["patient_id", "day", "value"])


# P1 responds and clears (two draws on day 0 -> their mean; the day-63 draw is after the prediction day);
# P2 falls then doubles over its nadir; P3 clears then is re-detected below 2 x nadir; P4 has no baseline.
REFERENCE = _long(
    [
        ("P1", -10, 1.0),
        ("P1", 0, 0.8),
        ("P1", 0, 1.2),
        ("P1", 21, 0.3),
        ("P1", 42, 0.005),
        ("P1", 63, 0.5),
        ("P2", -5, 0.2),
        ("P2", 21, 0.05),
        ("P2", 42, 0.04),
        ("P2", 49, 0.12),
        ("P3", 0, 0.05),
        ("P3", 21, 0.008),
        ("P3", 35, np.nan),
        ("P3", 42, 0.015),
        ("P4", 30, 0.4),
    ]
)
PDAY = pd.Series({"P1": 50.0, "P2": 50.0, "P3": 42.0, "P4": 50.0})


def _col(out: pd.DataFrame, feature: str) -> pd.Series:
    return out[f"q__{feature}"]


def test_reference_patients_by_hand() -> None:
    out = longitudinal_features(REFERENCE, PDAY, SPEC)
    assert list(out.columns) == [f"q__{f}" for f in FEATURES]
    assert list(out.index) == ["P1", "P2", "P3", "P4"] and out.index.name == "patient_id"

    p1 = out.loc["P1"].rename(lambda c: c.split("__")[1])
    assert p1["n_draws"] == 4  # -10, 0 (mean of two), 21, 42
    assert p1["baseline"] == pytest.approx(1.0)
    assert p1["last"] == pytest.approx(0.005)
    assert p1["ratio"] == pytest.approx(0.005)
    assert p1["log2_ratio"] == pytest.approx(math.log2(0.005))
    assert p1["slope"] == pytest.approx(np.polyfit([-10, 0, 21, 42], [1.0, 1.0, 0.3, 0.005], 1)[0] * 30)
    assert p1["nadir"] == pytest.approx(0.005) and p1["days_since_nadir"] == 8 and p1["days_since_last"] == 8
    assert (p1["molecular_response"], p1["clearance"], p1["redetection"], p1["molecular_progression"]) == (1, 1, 0, 0)

    p2 = out.loc["P2"].rename(lambda c: c.split("__")[1])
    assert p2["baseline"] == pytest.approx(0.2) and p2["ratio"] == pytest.approx(0.6)
    assert p2["slope"] == pytest.approx(np.polyfit([-5, 21, 42, 49], [0.2, 0.05, 0.04, 0.12], 1)[0] * 30)
    assert p2["nadir"] == pytest.approx(0.04) and p2["days_since_nadir"] == 8 and p2["days_since_last"] == 1
    # 0.12 > 0.5 x 0.2: no response; 0.12 >= 2 x 0.04 and detected: progression by a rise, no re-detection.
    assert (p2["molecular_response"], p2["clearance"], p2["redetection"], p2["molecular_progression"]) == (0, 0, 0, 1)

    p3 = out.loc["P3"].rename(lambda c: c.split("__")[1])
    assert p3["n_draws"] == 3  # the NaN draw on day 35 is ignored
    assert p3["ratio"] == pytest.approx(0.3) and p3["nadir"] == pytest.approx(0.008) and p3["days_since_nadir"] == 21
    # 0.015 <= 0.5 x 0.05: response; detected again after 0.008 < DL: re-detection, hence progression
    # (0.015 < 2 x 0.008, so not by a rise), and no clearance at the last draw.
    assert (p3["molecular_response"], p3["clearance"], p3["redetection"], p3["molecular_progression"]) == (1, 0, 1, 1)

    p4 = out.loc["P4"].rename(lambda c: c.split("__")[1])
    assert p4["n_draws"] == 1 and p4["last"] == pytest.approx(0.4) and p4["days_since_last"] == 20
    assert p4["nadir"] == pytest.approx(0.4) and p4["days_since_nadir"] == 20
    for f in ("baseline", "ratio", "log2_ratio", "slope", "molecular_response", "clearance"):
        assert np.isnan(p4[f]), f
    assert p4["molecular_progression"] == 0 and p4["redetection"] == 0


def test_without_a_detection_limit_clearance_and_redetection_are_undefined() -> None:
    out = longitudinal_features(REFERENCE, PDAY, LongitudinalSpec("q"))
    assert out["q__clearance"].isna().all() and out["q__redetection"].isna().all()
    # P3: no re-detection without a limit, and 0.015 < 2 x 0.008 is no rise.
    assert out.loc["P3", "q__molecular_progression"] == 0
    assert out.loc["P2", "q__molecular_progression"] == 1
    assert out.loc["P1", "q__molecular_response"] == 1


def test_undetected_baseline_makes_response_and_clearance_undefined() -> None:
    long = _long([("A", 0, 0.004), ("A", 21, 0.001), ("B", 0, 0.0), ("B", 21, 0.5)])
    out = longitudinal_features(long, 30.0, SPEC)
    assert out[["q__molecular_response", "q__clearance"]].isna().all().all()
    assert np.isnan(out.loc["B", "q__ratio"])  # a baseline of 0 has no ratio
    assert out.loc["B", "q__molecular_progression"] == 1  # detected, over twice a nadir of 0


def test_no_draw_before_the_prediction_day_and_nan_prediction_day() -> None:
    pday = pd.Series({"P1": -20.0, "P2": np.nan, "P9": 10.0})
    out = longitudinal_features(REFERENCE, pday, SPEC)
    assert list(out.index) == ["P1", "P2", "P9"]
    for pid in ("P1", "P9"):  # P1's first draw is on day -10; P9 has none at all
        assert out.loc[pid, "q__n_draws"] == 0
        assert out.loc[pid].drop("q__n_draws").isna().all()
    assert out.loc["P2"].isna().all()


def test_an_empty_table_gives_rows_without_draws() -> None:
    out = longitudinal_features(REFERENCE.iloc[:0], pd.Series({"A": 5.0, "B": np.nan}), SPEC)
    assert out["q__n_draws"].tolist()[0] == 0 and np.isnan(out.loc["B", "q__n_draws"])
    assert out.drop(columns="q__n_draws").isna().all().all()


def test_baseline_only_has_no_response_yet() -> None:
    out = longitudinal_features(REFERENCE, pd.Series({"P1": 0.0}), SPEC)
    assert out.loc["P1", "q__baseline"] == pytest.approx(1.0) and out.loc["P1", "q__ratio"] == pytest.approx(1.0)
    assert np.isnan(out.loc["P1", "q__molecular_response"]) and np.isnan(out.loc["P1", "q__clearance"])
    assert out.loc["P1", "q__slope"] == pytest.approx(0.0)


def test_baseline_window_and_slope_settings() -> None:
    spec = LongitudinalSpec("q", baseline_window=(-30.0, -1.0), min_draws_for_slope=5, slope_per_days=1.0)
    out = longitudinal_features(REFERENCE, PDAY, spec)
    assert out.loc["P1", "q__baseline"] == pytest.approx(1.0)  # the day -10 draw
    assert out.loc["P1", "q__nadir"] == pytest.approx(0.005)
    assert np.isnan(out.loc["P3", "q__baseline"])  # its only early draw is on day 0
    assert out["q__slope"].isna().all()  # nobody has 5 draws
    out = longitudinal_features(REFERENCE, PDAY, LongitudinalSpec("q", slope_per_days=1.0))
    assert out.loc["P2", "q__slope"] == pytest.approx(np.polyfit([-5, 21, 42, 49], [0.2, 0.05, 0.04, 0.12], 1)[0])


def _random_long(seed: int, n: int = 60) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        days = np.sort(rng.choice(np.arange(-40, 300, 7), size=rng.integers(0, 12), replace=False))
        days = np.concatenate([days, days[: rng.integers(0, 2)]])  # some same-day repeats
        vals = np.where(
            rng.random(len(days)) < 0.3, rng.uniform(0, 2 * DL, len(days)), rng.lognormal(-3, 1.5, len(days))
        )
        vals[rng.random(len(days)) < 0.05] = np.nan
        rows += [(f"R{i:03d}", float(d), float(v)) for d, v in zip(days, vals, strict=True)]
    pday = pd.Series(rng.uniform(-20, 250, n), index=[f"R{i:03d}" for i in range(n)])
    pday.iloc[:3] = np.nan
    return _long(rows), pday


def test_nothing_after_the_prediction_day_changes_any_feature() -> None:
    long, pday = _random_long(0)
    before = longitudinal_features(long, pday, SPEC)
    after = long["day"].to_numpy() > pday.reindex(long["patient_id"]).to_numpy()
    assert after.sum() > 20
    changed = long.copy()
    rng = np.random.default_rng(1)
    changed.loc[after, "value"] = rng.lognormal(0, 2, after.sum())  # change every later draw
    changed.loc[after, "day"] += rng.integers(0, 30, after.sum())  # and move it, still later
    extra = pd.DataFrame({"patient_id": pday.index, "day": pday.fillna(0).to_numpy() + 0.5, "value": 9.0})
    changed = pd.concat([changed, extra], ignore_index=True).sample(frac=1.0, random_state=2)  # add later draws
    pd.testing.assert_frame_equal(longitudinal_features(changed, pday, SPEC), before)
    # Dropping them changes nothing either; moving one draw before the prediction day does change something.
    pd.testing.assert_frame_equal(longitudinal_features(long[~after], pday, SPEC), before)
    moved = long.copy()
    moved.loc[np.flatnonzero(after)[0], "day"] = -1000.0
    assert not longitudinal_features(moved, pday, SPEC).equals(before)


def _reference(long: pd.DataFrame, pday: pd.Series, spec: LongitudinalSpec) -> pd.DataFrame:
    """The definitions of docs/time.md, one patient at a time with plain Python (slow, independent)."""
    out = {}
    for pid, p in pday.items():
        row = dict.fromkeys(FEATURES, np.nan)
        if not np.isnan(p):
            d = long[(long["patient_id"] == pid) & (long["day"] <= p) & long["value"].notna()]
            pts = sorted(d.groupby("day")["value"].mean().items())
            row["n_draws"] = float(len(pts))
        if np.isnan(p) or not pts:
            out[pid] = row
            continue
        days = [t for t, _ in pts]
        vals = [v for _, v in pts]
        lo, hi = spec.baseline_window
        bi = max((i for i, t in enumerate(days) if lo <= t <= hi), default=None)
        series = vals[bi or 0 :]
        last = vals[-1]
        nadir = min(series)
        row.update(last=last, nadir=nadir, days_since_last=p - days[-1])
        row["days_since_nadir"] = p - max(t for t, v in zip(days[bi or 0 :], series, strict=True) if v == nadir)
        if len(pts) >= spec.min_draws_for_slope:
            row["slope"] = np.polyfit(days, vals, 1)[0] * spec.slope_per_days
        dl = spec.detection_limit
        detected = [v >= dl for v in series] if dl is not None else None
        if bi is not None:
            base = vals[bi]
            row["baseline"] = base
            if base > 0:
                row["ratio"] = last / base
                if last > 0:
                    row["log2_ratio"] = math.log2(last / base)
            if len(series) > 1 and base > 0 and (dl is None or base >= dl):
                row["molecular_response"] = float(last <= spec.response_fraction * base)
            if dl is not None and len(series) > 1 and base >= dl:
                row["clearance"] = float(last < dl)
        rise = last >= spec.progression_factor * nadir and last > nadir and (dl is None or last >= dl)
        if dl is not None:
            cleared = any(not detected[j] and any(detected[:j]) for j in range(len(series) - 1))
            row["redetection"] = float(detected[-1] and cleared)
        row["molecular_progression"] = float(rise or row["redetection"] == 1)
        out[pid] = row
    ref = pd.DataFrame.from_dict(out, orient="index")[list(FEATURES)].add_prefix(f"{spec.name}__")
    return ref.rename_axis("patient_id").astype(float)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("spec", [SPEC, LongitudinalSpec("q", baseline_window=(-14.0, 7.0), min_draws_for_slope=3)])
def test_vectorised_matches_a_per_patient_reference(seed: int, spec: LongitudinalSpec) -> None:
    long, pday = _random_long(seed)
    got = longitudinal_features(long.sample(frac=1.0, random_state=seed), pday, spec)
    pd.testing.assert_frame_equal(got, _reference(long, pday, spec), rtol=1e-9, atol=1e-12)


def test_long_values_and_the_table_of_several_quantities() -> None:
    samples = pd.DataFrame(
        {
            "patient_id": ["A", "A", "B"],
            "timepoint": ["t0", "t1", "t0"],
            "day": [0, 30, -3],
            "x": [1.0, 0.4, 2.0],
            "y": [5.0, np.nan, 1.0],
        },
        index=pd.Index(["s1", "s2", "s3"], name="sample_id"),
    )
    long = long_values(samples, "x")
    assert list(long.columns) == ["patient_id", "day", "value"] and long["value"].tolist() == [1.0, 0.4, 2.0]
    table = longitudinal_table(samples, 30.0, [LongitudinalSpec("x"), LongitudinalSpec("y")])
    assert list(table.index) == ["A", "B"]
    assert table.loc["A", "x__ratio"] == pytest.approx(0.4) and table.loc["A", "x__molecular_response"] == 1
    assert table.loc["A", "y__n_draws"] == 1 and table.loc["A", "y__last"] == 5.0
    with pytest.raises(ValueError, match="'z' is not in the per-sample feature table"):
        long_values(samples, "z")
    with pytest.raises(ValueError, match="same quantity"):
        longitudinal_table(samples, 30.0, [LongitudinalSpec("x"), LongitudinalSpec("x")])


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="missing value"):
        longitudinal_features(REFERENCE.drop(columns="value"), 0.0, SPEC)
    with pytest.raises(ValueError, match=r"without a day for patient.*P2"):
        longitudinal_features(REFERENCE.assign(day=REFERENCE["day"].where(REFERENCE["patient_id"] != "P2")), 0.0, SPEC)
    with pytest.raises(ValueError, match="no patient of the long table"):
        longitudinal_features(REFERENCE, pd.Series({1: 0.0, 2: 5.0}), SPEC)
    with pytest.raises(ValueError, match="more than once: P1"):
        longitudinal_features(REFERENCE, pd.Series([0.0, 1.0], index=["P1", "P1"]), SPEC)
    for bad in (
        {"response_fraction": 1.5},
        {"progression_factor": 1.0},
        {"baseline_window": (5.0, 0.0)},
        {"min_draws_for_slope": 1},
        {"detection_limit": 0.0},
    ):
        with pytest.raises(ValueError, match="q: "):
            LongitudinalSpec("q", **bad)


def test_agrees_with_the_ctdna_dynamics_on_a_synthetic_cohort(tmp_path: pytest.TempPathFactory) -> None:
    """Where the ctDNA dynamics and the generic features mean the same thing (baseline level, draws, last day), they
    agree on nsclc-advanced; ctdna.py keeps its own event-history definitions (see docs/time.md)."""
    root = generate_cohort("nsclc-advanced", n=30, seed=7, out=tmp_path / "adv", **SYNTH)
    cohort = load_cohort(root)
    table = pd.concat([read_variant_table(cohort.path(str(p))) for p in cohort.samples_of("ctdna")["path"].unique()])
    summ = sample_summaries(table)
    as_of = 100.0
    dyn = ctdna_dynamics(summ, as_of_day=as_of)
    samples = summ.assign(timepoint="x")[["patient_id", "timepoint", "day", "mean_vaf"]]
    feats = longitudinal_features(long_values(samples, "mean_vaf"), as_of, LongitudinalSpec("mean_vaf"))
    assert len(dyn) >= 25 and list(feats.index) == sorted(summ["patient_id"].unique())
    feats = feats.loc[dyn.index]
    np.testing.assert_allclose(feats["mean_vaf__baseline"], dyn["baseline_level"])
    np.testing.assert_array_equal(feats["mean_vaf__n_draws"], dyn["n_samples"])
    np.testing.assert_allclose(as_of - feats["mean_vaf__days_since_last"], dyn["last_day"])

"""Per-landmark evaluation: the numbers are lifelines' and scikit-survival's, computed independently here."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.util import Surv

from omics_risk.evaluation.bootstrap import paired_bootstrap_difference
from omics_risk.evaluation.dynamic import censor_at_window, landmark_comparison, landmark_metrics

WINDOW = 180.0


def _landmark(seed: int, n: int = 80, signal: float = 1.0):
    """Patients at risk at one landmark: time since the landmark, event, a risk score carrying ``signal``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(200 * np.exp(-signal * x))
    c = rng.uniform(50, 500, n)
    return np.round(np.minimum(t, c)) + 1, (t <= c).astype(float), x + rng.normal(0, 0.5, n)


@pytest.fixture(scope="module")
def per_landmark():
    return {0.0: _landmark(1), 90.0: _landmark(2, 60), 180.0: _landmark(3, 45, signal=0.3)}


def test_censor_at_window_by_hand() -> None:
    t, e = censor_at_window(np.array([10.0, 200.0, 180.0, 300.0]), np.array([1, 1, 1, 0]), 180)
    np.testing.assert_array_equal(t, [10, 180, 180, 180])
    np.testing.assert_array_equal(e, [True, False, True, False])


def test_landmark_metrics_match_lifelines_and_sksurv(per_landmark) -> None:
    table = landmark_metrics([0, 90, 180], per_landmark, WINDOW, n_boot=50, seed=0)
    assert list(table["landmark"]) == [0.0, 90.0, 180.0]
    for _, row in table.iterrows():
        time, event, risk = per_landmark[row["landmark"]]
        tw = np.minimum(time, WINDOW)
        ew = event.astype(bool) & (time <= WINDOW)
        assert row["n_at_risk"] == len(time) and row["n_events"] == ew.sum()
        # lifelines takes predicted times (higher = longer survival): give it -risk
        assert row["harrell_c"] == pytest.approx(concordance_index(tw, -risk, ew), abs=1e-12)
        y = Surv.from_arrays(event.astype(bool), time)
        ref, _ = cumulative_dynamic_auc(y, y, risk, [WINDOW])
        assert row["auc_horizon"] == WINDOW
        assert row["auc"] == pytest.approx(ref[0], abs=1e-12)
        for name in ("harrell_c", "auc"):
            assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
        assert row["note"] == ""
    assert table.loc[0, "harrell_c"] > 0.65  # the signal is there at the first landmarks


def test_auc_with_separate_training_follow_up(per_landmark) -> None:
    train = {s: _landmark(10 + i, 100)[:2] for i, s in enumerate(per_landmark)}
    table = landmark_metrics([90], per_landmark, WINDOW, train=train, n_boot=20)
    time, event, risk = per_landmark[90.0]
    ref, _ = cumulative_dynamic_auc(Surv.from_arrays(train[90.0][1].astype(bool), train[90.0][0]),
                                    Surv.from_arrays(event.astype(bool), time), risk, [WINDOW])
    assert table.loc[0, "auc"] == pytest.approx(ref[0], abs=1e-12)


def test_data_already_censored_at_the_window_reads_the_auc_just_below_it(per_landmark) -> None:
    time, event, risk = per_landmark[0.0]
    tw, ew = censor_at_window(time, event, WINDOW)
    table = landmark_metrics([0], {0: (tw, ew, risk)}, WINDOW, n_boot=10)
    h = table.loc[0, "auc_horizon"]
    assert h < WINDOW and h == pytest.approx(WINDOW)
    y = Surv.from_arrays(ew, tw)
    assert table.loc[0, "auc"] == pytest.approx(cumulative_dynamic_auc(y, y, risk, [h])[0][0], abs=1e-12)
    full = landmark_metrics([0], {0: (time, event, risk)}, WINDOW, n_boot=10)
    assert table.loc[0, "harrell_c"] == full.loc[0, "harrell_c"]


def test_landmark_without_events_in_the_window_is_nan_with_a_note() -> None:
    time = np.array([200.0, 250, 300, 400])
    table = landmark_metrics([30], {30: (time, np.ones(4), np.arange(4.0))}, WINDOW, n_boot=10)
    assert np.isnan(table.loc[0, "harrell_c"]) and np.isnan(table.loc[0, "auc"])
    assert "no event within 180 days" in table.loc[0, "note"]


def test_inputs_are_checked(per_landmark) -> None:
    with pytest.raises(KeyError, match="no entry for landmark 365"):
        landmark_metrics([365], per_landmark, WINDOW)
    t, e, r = per_landmark[0.0]
    with pytest.raises(ValueError, match="negative time"):
        landmark_metrics([0], {0: (t - 100, e, r)}, WINDOW)
    with pytest.raises(ValueError, match="one length"):
        landmark_metrics([0], {0: (t, e, r[:-1])}, WINDOW)


def test_paired_comparison_is_the_bootstrap_difference_within_the_window(per_landmark) -> None:
    noise = {s: (t, e, np.random.default_rng(0).normal(size=len(t))) for s, (t, e, _) in per_landmark.items()}
    table = landmark_comparison([0, 90], per_landmark, noise, WINDOW, n_boot=100, seed=3)
    t, e, r = per_landmark[0.0]
    tw, ew = censor_at_window(t, e, WINDOW)
    ref, p = paired_bootstrap_difference(tw, ew, r, noise[0.0][2], n_boot=100, seed=3)
    assert table.loc[0, "c_difference"] == pytest.approx(ref.value)
    assert table.loc[0, "c_difference_ci_low"] == pytest.approx(ref.low)
    assert table.loc[0, "p_value"] == pytest.approx(p)
    assert table.loc[0, "c_difference"] > 0.1 and table.loc[0, "p_value"] < 0.05
    with pytest.raises(ValueError, match="different patients"):
        landmark_comparison([0], per_landmark, {0: (t[::-1], e[::-1], r)}, WINDOW)

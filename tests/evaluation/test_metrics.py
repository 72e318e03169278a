"""Metrics against direct scikit-survival / lifelines / sklearn reference computations on simulated data, horizon
errors, calibration behaviour on known truth, and bootstrap CI coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import concordance_index
from scipy.stats import chisquare
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from omics_risk.evaluation.bootstrap import _indices
from omics_risk.evaluation.metrics import (
    Estimate,
    HorizonError,
    balanced_accuracy,
    bootstrap_metric,
    brier_at,
    calibration_slope,
    calibration_table,
    check_horizons,
    d_calibration,
    default_tau,
    evaluate_response,
    evaluate_survival,
    harrell_c,
    integrated_brier,
    paired_bootstrap_difference,
    response_auc,
    response_brier,
    time_dependent_auc,
    time_grid,
    uno_c,
)
from omics_risk.evaluation.riskgroups import RiskGroups

HORIZONS = [365.0, 730.0, 1095.0]


@pytest.fixture(scope="module")
def data(weibull_ph):
    """Training cohort (censoring distribution for IPCW), an evaluation cohort, and a noisy risk score."""
    train, test = weibull_ph(300, seed=1), weibull_ph(200, seed=2)
    risk = test.lp + np.random.default_rng(3).normal(scale=0.5, size=200)
    return train, test, risk


def _y(d):
    return Surv.from_arrays(d.event, d.time)


# ---------------------------------------------------------------------------------------------------- discrimination


def test_harrell_c_matches_sksurv_and_lifelines_with_flipped_sign(data):
    _, test, risk = data
    ours = harrell_c(test.time, test.event, risk)
    assert ours == pytest.approx(concordance_index_censored(test.event, test.time, risk)[0], abs=1e-12)
    # lifelines takes predicted times (higher = longer survival): the same C needs -risk
    assert ours == pytest.approx(concordance_index(test.time, -risk, test.event), abs=1e-12)
    assert 0.6 < ours < 0.85


def test_uno_c_matches_concordance_index_ipcw(data):
    train, test, risk = data
    tau = 1500.0
    ours = uno_c(test.time, test.event, risk, train_time=train.time, train_event=train.event, tau=tau)
    assert ours == pytest.approx(concordance_index_ipcw(_y(train), _y(test), risk, tau=tau)[0], abs=1e-12)
    default = uno_c(test.time, test.event, risk, train_time=train.time, train_event=train.event)
    tau0 = default_tau(test.time, train.time)
    assert tau0 == pytest.approx(min(np.quantile(test.time, 0.9), np.quantile(train.time, 0.9)))
    assert tau0 < min(test.time.max(), train.time.max())
    assert default == pytest.approx(concordance_index_ipcw(_y(train), _y(test), risk, tau=tau0)[0], abs=1e-12)


def test_time_dependent_auc_matches_cumulative_dynamic_auc(data):
    train, test, risk = data
    auc, mean_auc = time_dependent_auc(test.time, test.event, risk, HORIZONS, train_time=train.time,
                                       train_event=train.event)
    ref_auc, ref_mean = cumulative_dynamic_auc(_y(train), _y(test), risk, HORIZONS)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    assert mean_auc == pytest.approx(ref_mean, abs=1e-12)
    # time-dependent risks (1 - S at each horizon) are passed through too
    surv = test.survival(np.asarray(HORIZONS)[None, :], test.lp[:, None])
    auc2, _ = time_dependent_auc(test.time, test.event, 1 - surv, HORIZONS, train_time=train.time,
                                 train_event=train.event)
    np.testing.assert_allclose(auc2, cumulative_dynamic_auc(_y(train), _y(test), 1 - surv, HORIZONS)[0], atol=1e-12)
    with pytest.raises(ValueError, match="increasing order"):  # columns would no longer match sorted horizons
        time_dependent_auc(test.time, test.event, 1 - surv, HORIZONS[::-1], train_time=train.time,
                           train_event=train.event)


def test_time_dependent_auc_when_evaluation_follow_up_outlasts_training(weibull_ph):
    """An external cohort followed longer than the training cohort: scikit-survival raises on the late events even
    for early horizons; they are controls there, so censoring them gives the same AUC without the crash."""
    train = weibull_ph(200, seed=4, censor_max=1500.0)
    test = weibull_ph(200, seed=5, censor_max=4000.0)
    late = test.time > train.time.max()
    assert (late & test.event).any()
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(_y(train), _y(test), test.lp, [365.0, 730.0])
    auc, _ = time_dependent_auc(test.time, test.event, test.lp, [365.0, 730.0], train_time=train.time,
                                train_event=train.event)
    event = test.event & ~(test.time > 730.0)
    ref = cumulative_dynamic_auc(_y(train), Surv.from_arrays(event, test.time), test.lp, [365.0, 730.0])[0]
    np.testing.assert_allclose(auc, ref, atol=1e-12)


# ------------------------------------------------------------------------------------------------------- Brier score


def test_brier_at_matches_brier_score(data):
    train, test, _ = data
    surv = test.survival(np.asarray(HORIZONS)[None, :], test.lp[:, None])
    ours = brier_at(test.time, test.event, surv, HORIZONS, train_time=train.time, train_event=train.event)
    np.testing.assert_allclose(ours, brier_score(_y(train), _y(test), surv, HORIZONS)[1], atol=1e-12)
    one = brier_at(test.time, test.event, surv[:, 0], [HORIZONS[0]], train_time=train.time, train_event=train.event)
    assert one[0] == pytest.approx(ours[0], abs=1e-12)


def test_integrated_brier_matches_sksurv(data):
    train, test, _ = data
    times = time_grid(test.time, train_time=train.time)
    assert len(times) > 10 and times[0] >= test.time.min() and times[-1] < min(test.time.max(), train.time.max())
    surv = test.survival(times[None, :], test.lp[:, None])
    ours = integrated_brier(test.time, test.event, surv, times, train_time=train.time, train_event=train.event)
    assert ours == pytest.approx(integrated_brier_score(_y(train), _y(test), surv, times), abs=1e-12)
    # the true curves beat a constant (Kaplan-Meier-free) 50 % prediction
    assert ours < integrated_brier(test.time, test.event, np.full_like(surv, 0.5), times, train_time=train.time,
                                   train_event=train.event)


# ---------------------------------------------------------------------------------------------------------- horizons


@pytest.mark.parametrize(("horizons", "message"), [
    ([-30.0], r"horizon -30 days must be > 0"),
    ([365.0, 99999.0], r"horizon 99999 days is not inside the follow-up: the evaluation data follow up 200 patients"),
    ([0.5], r"horizon 0.5 days comes before the first event \(\d"),
    ([np.nan], r"horizons must be finite"),
    ([], r"no horizons given"),
])
def test_check_horizons_messages(data, horizons, message):
    _, test, _ = data
    with pytest.raises(HorizonError, match=message):
        check_horizons(horizons, test.time, test.event)


def test_check_horizons_sorted_unique_and_no_events(data):
    _, test, _ = data
    np.testing.assert_array_equal(check_horizons([730, 365, 730], test.time, test.event), [365.0, 730.0])
    with pytest.raises(HorizonError, match="no events"):
        check_horizons([365], test.time, np.zeros_like(test.event))


def test_ipcw_metrics_reject_times_beyond_training_follow_up(weibull_ph, data):
    _, test, risk = data
    short = weibull_ph(200, seed=6, censor_max=600.0)  # training follow-up ends before 2 years
    kw = {"train_time": short.time, "train_event": short.event}
    msg = r"horizon 730 days is beyond the training follow-up.*training data follow up 200 patients"
    with pytest.raises(HorizonError, match=msg):
        time_dependent_auc(test.time, test.event, risk, [365, 730], **kw)
    with pytest.raises(HorizonError, match=msg):
        brier_at(test.time, test.event, np.full((200, 2), 0.5), [365, 730], **kw)
    with pytest.raises(HorizonError, match=r"tau 1000 days is beyond the training follow-up"):
        uno_c(test.time, test.event, risk, tau=1000.0, **kw)
    with pytest.raises(HorizonError, match=msg):
        evaluate_survival(test.time, test.event, risk, horizons=[365, 730], n_boot=2, **kw)
    with pytest.raises(ValueError, match="pass train_time and train_event"):
        uno_c(test.time, test.event, risk, train_time=None, train_event=None)


def test_integrated_brier_rejects_grid_outside_follow_up(data):
    train, test, _ = data
    times = np.array([0.0, 100.0, 500.0])
    with pytest.raises(HorizonError, match=r"times 0-500 days are not inside the follow-up.*time_grid"):
        integrated_brier(test.time, test.event, np.full((200, 3), 0.5), times, train_time=train.time,
                         train_event=train.event)


# ------------------------------------------------------------------------------------------------------- calibration


def test_calibration_table_observed_is_kaplan_meier_per_group(data):
    _, test, _ = data
    s_h = test.survival(730.0) ** 0.8  # a slightly miscalibrated prediction
    table = calibration_table(test.time, test.event, s_h, 730.0, n_groups=4)
    assert list(table.columns[:7]) == ["group", "n", "events", "predicted", "observed", "observed_low",
                                       "observed_high"]
    group = pd.qcut(1 - s_h, 4, labels=False) + 1
    assert table["n"].sum() == 200 and list(table["group"]) == [1, 2, 3, 4]
    for row in table.itertuples():
        m = group == row.group
        kmf = KaplanMeierFitter().fit(test.time[m], test.event[m])
        assert row.observed == pytest.approx(1 - kmf.survival_function_at_times(730.0).iloc[0], abs=1e-12)
        ci = kmf.confidence_interval_survival_function_
        lo, hi = ci[ci.index <= 730.0].iloc[-1]
        assert (row.observed_low, row.observed_high) == pytest.approx((1 - hi, 1 - lo), abs=1e-12)
        assert row.predicted == pytest.approx(np.mean(1 - s_h[m]), abs=1e-12)
        assert row.n == m.sum()


def test_calibration_table_distinct_predictions_and_short_follow_up():
    """Two distinct predictions make two groups; a group nobody in which is followed to the horizon gets NaN
    (lifelines would carry its last Kaplan-Meier value forward)."""
    time = np.r_[np.linspace(100, 500, 10), np.linspace(50, 1000, 10)]
    event = np.r_[np.zeros(10, bool), np.tile([True, False], 5)]
    surv = np.r_[np.full(10, 0.9), np.full(10, 0.5)]
    table = calibration_table(time, event, surv, 730.0, n_groups=5)
    assert list(table.n) == [10, 10] and table.predicted.tolist() == pytest.approx([0.1, 0.5])
    assert np.isnan(table.loc[0, ["observed", "observed_low", "observed_high"]].to_numpy(float)).all()
    kmf = KaplanMeierFitter().fit(time[10:], event[10:])
    assert table.loc[1, "observed"] == pytest.approx(1 - kmf.survival_function_at_times(730.0).iloc[0])


def test_calibration_table_true_curves_are_calibrated(weibull_ph):
    d = weibull_ph(1500, seed=7)
    table = calibration_table(d.time, d.event, d.survival(730.0), 730.0, n_groups=5)
    inside = (table.observed_low <= table.predicted) & (table.predicted <= table.observed_high)
    assert inside.sum() >= 4
    assert np.abs(table.observed - table.predicted).max() < 0.08
    assert table.predicted.is_monotonic_increasing


def test_calibration_slope_matches_lifelines_cox(data):
    _, test, risk = data
    frame = pd.DataFrame({"t": test.time, "e": test.event, "lp": risk})
    ref = CoxPHFitter().fit(frame, "t", "e").params_["lp"]
    assert calibration_slope(test.time, test.event, risk) == pytest.approx(ref, abs=1e-10)


def test_calibration_slope_one_for_correct_cox_below_one_for_overfit(weibull_ph):
    train = weibull_ph(1000, seed=8, beta=(0.8, -0.5))
    test = weibull_ph(2000, seed=9, beta=(0.8, -0.5))
    frame = pd.DataFrame(train.x, columns=["x1", "x2"]).assign(time=train.time, event=train.event)
    cox = CoxPHFitter().fit(frame, "time", "event")
    lp = cox.predict_log_partial_hazard(pd.DataFrame(test.x, columns=["x1", "x2"])).to_numpy()
    slope = calibration_slope(test.time, test.event, lp)
    assert slope == pytest.approx(1.0, abs=0.12)
    overfit = calibration_slope(test.time, test.event, 2 * lp)
    assert overfit == pytest.approx(slope / 2, rel=1e-6)
    assert overfit < 0.65


def test_d_calibration_worked_example():
    """Four bins [0, .25), [.25, .5), [.5, .75), [.75, 1]; counts worked out by hand from Haider et al. (2020)."""
    event = np.array([1, 1, 1, 0, 0, 0], bool)
    s = np.array([0.6, 0.1, 1.0, 0.6, 0.2, 0.0])
    # events: bins 2, 0, 3. Censored S=0.6: (0.6-0.5)/0.6 = 1/6 to bin 2, 0.25/0.6 = 5/12 to bins 0 and 1.
    # Censored S=0.2: all in bin 0. Censored S=0: bin 0.
    expected = np.array([1 + 5 / 12 + 1 + 1, 5 / 12, 1 + 1 / 6, 1])
    out = d_calibration(np.arange(1.0, 7.0), event, s, n_bins=4)
    np.testing.assert_allclose(out["counts"], expected, atol=1e-12)
    assert out["counts"].sum() == pytest.approx(6)
    assert out["statistic"] == pytest.approx(((expected - 1.5) ** 2 / 1.5).sum())
    assert out["p_value"] == pytest.approx(chisquare(expected).pvalue)


def test_d_calibration_true_curves_pass_miscalibrated_fail(weibull_ph):
    d = weibull_ph(1000, seed=10)
    good = d_calibration(d.time, d.event, d.survival(d.time))
    assert good["p_value"] > 0.05
    np.testing.assert_allclose(good["counts"], 100, rtol=0.3)
    bad = d_calibration(d.time, d.event, d.survival(d.time) ** 3)  # hazards overestimated threefold
    assert bad["p_value"] < 1e-6
    shifted = d_calibration(d.time, d.event, d.survival(d.time, d.lp + 1.0))
    assert shifted["p_value"] < 1e-6


# -------------------------------------------------------------------------------------------------------- response


def test_response_metrics_match_sklearn():
    rng = np.random.default_rng(11)
    label = rng.integers(0, 2, 150).astype(float)
    prob = np.clip(0.5 + 0.3 * (label - 0.5) + rng.normal(scale=0.25, size=150), 0, 1)
    label_nan = label.copy()
    label_nan[:10] = np.nan  # unlabelled patients are skipped
    lab, p = label[10:].astype(int), prob[10:]
    assert response_auc(label_nan, prob) == pytest.approx(roc_auc_score(lab, p))
    assert response_brier(label_nan, prob) == pytest.approx(brier_score_loss(lab, p))
    assert balanced_accuracy(label_nan, prob) == pytest.approx(balanced_accuracy_score(lab, p >= 0.5))
    assert balanced_accuracy(label_nan, prob, 0.7) == pytest.approx(balanced_accuracy_score(lab, p >= 0.7))
    res = evaluate_response(label_nan, prob, n_boot=50, seed=0)
    assert set(res) == {"auc", "brier", "balanced_accuracy"}
    assert res["auc"].value == pytest.approx(roc_auc_score(lab, p))
    assert res["brier"].value == pytest.approx(brier_score_loss(lab, p))
    for est in res.values():
        assert est.low <= est.value <= est.high and est.n_boot == 50
    with pytest.raises(ValueError, match="both classes"):
        evaluate_response(np.ones(10), np.full(10, 0.5), n_boot=5)


# ----------------------------------------------------------------------------------------- evaluate_survival, bootstrap


def test_evaluate_survival_values_equal_single_metrics(data):
    train, test, risk = data
    times = time_grid(test.time, train_time=train.time)
    surv = test.survival(times[None, :], test.lp[:, None])
    tr = {"train_time": train.time, "train_event": train.event}
    groups = RiskGroups("median").fit(train.lp)
    res = evaluate_survival(test.time, test.event, risk, surv=surv, times=times, horizons=[730, 365], groups=groups,
                            surv_at_own_time=test.survival(test.time), n_boot=20, seed=1, **tr)
    expected_keys = {"harrell_c", "uno_c", "auc_365d", "auc_730d", "mean_auc", "ibs", "brier_365d", "brier_730d",
                     "calibration_in_the_large_365d", "calibration_in_the_large_730d", "calibration_slope",
                     "d_calibration_p", "logrank_p", "hr_high_vs_low"}
    assert set(res) == expected_keys
    auc, mean_auc = time_dependent_auc(test.time, test.event, risk, [365, 730], **tr)
    assert res["auc_365d"].value == pytest.approx(auc[0]) and res["auc_730d"].value == pytest.approx(auc[1])
    assert res["mean_auc"].value == pytest.approx(mean_auc)
    assert res["harrell_c"].value == pytest.approx(harrell_c(test.time, test.event, risk))
    assert res["uno_c"].value == pytest.approx(uno_c(test.time, test.event, risk, **tr))
    assert res["ibs"].value == pytest.approx(integrated_brier(test.time, test.event, surv, times, **tr))
    # horizons not on the grid: survival interpolated linearly between the neighbouring grid times
    j = np.searchsorted(times, 365.0)
    w = (365.0 - times[j - 1]) / (times[j] - times[j - 1])
    s365 = (1 - w) * surv[:, j - 1] + w * surv[:, j]
    assert res["brier_365d"].value == pytest.approx(brier_at(test.time, test.event, s365, [365], **tr)[0])
    assert res["calibration_slope"].value == pytest.approx(calibration_slope(test.time, test.event, risk))
    summary = groups.summary(test.time, test.event, risk)
    assert res["hr_high_vs_low"].value == pytest.approx(summary.loc[1, "hr"])
    assert res["logrank_p"].value == pytest.approx(groups.logrank(test.time, test.event, risk))
    for name, est in res.items():
        assert isinstance(est, Estimate) and est.n_boot >= 18, name
        assert est.low <= est.high, name


def test_evaluate_survival_skips_metrics_without_inputs(data):
    _, test, risk = data
    res = evaluate_survival(test.time, test.event, risk, n_boot=10)
    assert set(res) == {"harrell_c", "calibration_slope"}
    labels = np.where(risk > np.median(risk), "b_risky", "a_safe")  # reference = the group with the lower scores
    res = evaluate_survival(test.time, test.event, risk, groups=labels, n_boot=5)
    assert "hr_b_risky_vs_a_safe" in res and res["hr_b_risky_vs_a_safe"].value > 1


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_evaluate_survival_progress_names_the_model_and_counts_metrics(data, n_jobs, capsys, monkeypatch):
    """``bootstrap <model> (i/n)`` over the metrics when progress is on (as the run report's per-model bar), the
    same numbers either way, and nothing at all when it is off."""
    train, test, risk = data
    monkeypatch.setenv("OMICS_RISK_PROGRESS", "1")  # a bar even though stderr is captured
    kw = {"train_time": train.time, "train_event": train.event, "horizons": [365, 730], "n_boot": 5, "n_jobs": n_jobs}
    on = evaluate_survival(test.time, test.event, risk, progress=True, label="fused", **kw)
    err = capsys.readouterr().err
    n = len(on)  # harrell_c, calibration_slope, uno_c, auc_365d, auc_730d, mean_auc
    assert n == 6 and f"bootstrap fused ({n}/{n})" in err and "bootstrap metrics" not in err
    off = evaluate_survival(test.time, test.event, risk, progress=False, label="fused", **kw)
    assert capsys.readouterr().err == ""
    assert {k: (e.value, e.low, e.high) for k, e in on.items()} == {k: (e.value, e.low, e.high) for k, e in off.items()}


def test_evaluate_survival_warns_when_resamples_fail(data):
    """A grid starting at the earliest time is invalid in every resample that misses that patient (~37 %)."""
    train, test, risk = data
    times = np.linspace(test.time.min(), 1000.0, 20)
    surv = test.survival(times[None, :], test.lp[:, None])
    with pytest.warns(UserWarning, match=r"ibs: only \d+ of 40 bootstrap resamples"):
        res = evaluate_survival(test.time, test.event, risk, surv=surv, times=times, train_time=train.time,
                                train_event=train.event, n_boot=40)
    assert 15 < res["ibs"].n_boot < 36 and res["harrell_c"].n_boot == 40


def test_bootstrap_resamples_patients_and_keeps_training_fixed(data):
    """The Uno's C CI is the percentile interval of concordance_index_ipcw over resampled evaluation patients with
    the training censoring distribution unchanged, on the same resamples as bootstrap_metric."""
    train, test, risk = data
    tau = 1500.0
    res = evaluate_survival(test.time, test.event, risk, train_time=train.time, train_event=train.event, tau=tau,
                            n_boot=40, seed=5)
    ref = [concordance_index_ipcw(_y(train), _y(test)[idx], risk[idx], tau=tau)[0] for idx in _indices(200, 40, 5)]
    low, high = np.quantile(ref, [0.025, 0.975])
    assert (res["uno_c"].low, res["uno_c"].high) == pytest.approx((low, high), abs=1e-12)
    harrell = bootstrap_metric(harrell_c, test.time, test.event, risk, n_boot=40, seed=5)
    assert res["harrell_c"] == harrell


def test_evaluate_survival_parallel_equals_serial(data):
    train, test, risk = data
    kw = {"train_time": train.time, "train_event": train.event, "horizons": [365, 730], "n_boot": 10, "seed": 2}
    serial = evaluate_survival(test.time, test.event, risk, **kw)
    assert evaluate_survival(test.time, test.event, risk, n_jobs=2, **kw) == serial


def test_existing_signatures_still_work(data):
    _, test, risk = data
    est, p = paired_bootstrap_difference(test.time, test.event, risk, test.lp, n_boot=30, seed=0)
    assert est.value == pytest.approx(harrell_c(test.time, test.event, risk) - harrell_c(test.time, test.event,
                                                                                          test.lp))
    assert 0 <= p <= 1 and est.low <= est.value <= est.high
    assert Estimate(0.7, 0.6, 0.8, 10).as_dict("c") == {"c": 0.7, "c_ci_low": 0.6, "c_ci_high": 0.8}


@pytest.mark.slow
def test_harrell_c_bootstrap_ci_coverage(weibull_ph):
    """95 % percentile-bootstrap CIs of Harrell's C from 200 samples of n = 100 cover the population C (the limit
    of Harrell's C under the same censoring, from 200,000 patients via lifelines' O(n log n) concordance) in
    88-99 % of replications."""
    big = weibull_ph(200_000, seed=1000, beta=(0.7,))
    population_c = concordance_index(big.time, -big.lp, big.event)
    covered = []
    for rep in range(200):
        d = weibull_ph(100, seed=2000 + rep, beta=(0.7,))
        est = bootstrap_metric(harrell_c, d.time, d.event, d.lp, n_boot=100, seed=rep)
        covered.append(est.low <= population_c <= est.high)
    assert 0.88 <= np.mean(covered) <= 0.99, (np.mean(covered), population_c)

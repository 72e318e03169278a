"""RiskGroups: cut-offs from training scores only, and KM / log-rank / HR summaries equal to direct lifelines fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from omics_risk.evaluation.riskgroups import RiskGroups, hazard_ratios


@pytest.fixture(scope="module")
def cohorts(weibull_ph):
    return weibull_ph(300, seed=21), weibull_ph(240, seed=22)


def test_median_cutoff_from_training_only(cohorts):
    train, test = cohorts
    rg = RiskGroups("median").fit(train.lp)
    assert rg.labels == ("low", "high")
    np.testing.assert_array_equal(rg.cutoffs_, [np.median(train.lp)])
    before = rg.cutoffs_.copy()
    shifted = test.lp + 2.0  # an external cohort whose scores run higher
    labels = rg.assign(shifted)
    np.testing.assert_array_equal(rg.cutoffs_, before)  # assigning never refits
    np.testing.assert_array_equal(labels, np.where(shifted >= before[0], "high", "low"))
    assert (labels == "high").mean() > 0.8  # the shift shows up in the group sizes instead of being hidden
    rg.summary(test.time, test.event, shifted)
    rg.logrank(test.time, test.event, shifted)
    np.testing.assert_array_equal(rg.cutoffs_, before)
    assert rg.assign(np.array([before[0]]))[0] == "high"  # a score on the cut-off goes to the higher group


def test_tertiles_and_custom_quantiles(cohorts):
    train, _ = cohorts
    rg = RiskGroups("tertiles").fit(train.lp)
    assert rg.labels == ("low", "intermediate", "high")
    np.testing.assert_allclose(rg.cutoffs_, np.quantile(train.lp, [1 / 3, 2 / 3]))
    counts = pd.Series(rg.assign(train.lp)).value_counts()
    assert counts.to_dict() == {"low": 100, "intermediate": 100, "high": 100}
    np.testing.assert_array_equal(rg.codes(train.lp), pd.Categorical(rg.assign(train.lp), list(rg.labels)).codes)
    quart = RiskGroups([0.25, 0.5, 0.75]).fit(train.lp)
    assert quart.labels == ("low", "intermediate_1", "intermediate_2", "high")
    assert RiskGroups((0.2, 0.8)).labels == ("low", "intermediate", "high")
    assert "cutoffs=" in repr(quart)


@pytest.mark.parametrize("scheme", ["quartiles", [0.5, 0.3], [0.0, 0.5], [1.2]])
def test_invalid_schemes(scheme):
    with pytest.raises(ValueError, match=r"scheme|quantiles"):
        RiskGroups(scheme)


def test_unfitted_and_non_finite_scores(cohorts):
    train, _ = cohorts
    with pytest.raises(RuntimeError, match="before fit"):
        RiskGroups().assign(train.lp)
    rg = RiskGroups().fit(train.lp)
    with pytest.raises(ValueError, match="finite risk scores"):
        rg.assign(np.array([0.1, np.nan]))
    with pytest.warns(UserWarning, match="equal cut-offs"):
        RiskGroups("tertiles").fit(np.r_[np.zeros(10), 1.0])


def test_logrank_matches_lifelines(cohorts):
    train, test = cohorts
    rg = RiskGroups("tertiles").fit(train.lp)
    labels = rg.assign(test.lp)
    ref = multivariate_logrank_test(test.time, labels, test.event).p_value
    assert rg.logrank(test.time, test.event, test.lp) == pytest.approx(ref, rel=1e-12)
    assert rg.logrank(test.time, test.event, test.lp) < 1e-6  # the true linear predictor separates well


def test_summary_matches_lifelines(cohorts):
    train, test = cohorts
    rg = RiskGroups("tertiles").fit(train.lp)
    table = rg.summary(test.time, test.event, test.lp)
    assert list(table.group) == ["low", "intermediate", "high"]
    labels = rg.assign(test.lp)
    for row in table.itertuples():
        m = labels == row.group
        kmf = KaplanMeierFitter().fit(test.time[m], test.event[m])
        assert (row.n, row.events) == (m.sum(), test.event[m].sum())
        assert row.km_median == pytest.approx(kmf.median_survival_time_)
        lo, hi = median_survival_times(kmf.confidence_interval_).iloc[0]
        assert (row.km_median_low, row.km_median_high) == pytest.approx((lo, hi))
    frame = pd.DataFrame({"mid": (labels == "intermediate").astype(float), "hi": (labels == "high").astype(float),
                          "t": test.time, "e": test.event})
    ref = CoxPHFitter().fit(frame, "t", "e").summary
    assert table.loc[0, "hr"] == 1.0 and np.isnan(table.loc[0, "hr_low"])
    for i, col in ((1, "mid"), (2, "hi")):
        assert table.loc[i, ["hr", "hr_low", "hr_high", "hr_p"]].to_numpy(float) == pytest.approx(
            ref.loc[col, ["exp(coef)", "exp(coef) lower 95%", "exp(coef) upper 95%", "p"]].to_numpy(float))
    assert 1 < table.loc[1, "hr"] < table.loc[2, "hr"]


def test_hazard_ratio_not_estimable_without_events():
    time = np.array([5.0, 8, 12, 20, 30, 40, 50, 60])
    event = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    labels = np.array(["low", "low", "low", "low", "mid", "mid", "high", "high"])
    table = hazard_ratios(time, event, labels, ["low", "mid", "high"])
    assert table.loc["low", "hr"] == 1.0
    assert table.loc[["mid", "high"], "hr"].isna().all()  # no events in those groups: HR would be 0
    assert hazard_ratios(time, ~event & (labels != "low"), labels, ["low", "mid", "high"])["hr"].iloc[1:].isna().all()

"""Fold-internal screening selectors: ranking of known informative features, reference p/q-values, leakage."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from scipy.stats import mannwhitneyu
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv
from statsmodels.stats.multitest import multipletests

from omics_risk.features.screening import (
    PermutationImportanceSelector,
    UnivariateCoxSelector,
    WilcoxonSelector,
    bh_qvalues,
    cox_univariate,
    parse_target,
    survival_groups,
)

INFORMATIVE = [0, 1, 2, 3]
BETA = np.array([1.0, -0.9, 0.8, 0.7])


def simulate(n: int = 200, p: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features (informative ones first), survival y, and a binary label driven by the same linear predictor."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    lp = X[:, INFORMATIVE] @ BETA
    t_event = rng.exponential(np.exp(-lp))
    t_cens = rng.uniform(0.3, 3.0, n)
    time = np.minimum(t_event, t_cens)
    event = t_event <= t_cens
    label = (lp + rng.logistic(0, 0.5, n) > 0).astype(int)
    cols = [f"preop__M{j:03d}" for j in range(p)]
    return pd.DataFrame(X, columns=cols, index=[f"P{i:03d}" for i in range(n)]), event, time, label


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    return simulate()


def top(selector: object, k: int) -> set[int]:
    return set(np.argsort(selector.ranking_)[:k].tolist())  # type: ignore[attr-defined]


def test_wilcoxon_ranks_informative_first_and_matches_scipy(data: tuple) -> None:
    X, event, time, label = data
    y = Surv.from_arrays(event, time)
    sel = WilcoxonSelector(k=4).fit(X, y)
    assert top(sel, 4) == set(INFORMATIVE)
    assert sel.get_support().sum() == 4
    early, late, h = survival_groups(event, time, None)
    assert h == pytest.approx(np.median(time[event]))
    for j in (0, 5, 17):  # p-values are scipy's Mann-Whitney U per feature on the two survival groups
        ref = mannwhitneyu(X.iloc[early, j], X.iloc[late, j], alternative="two-sided")
        assert sel.pvalues_[j] == pytest.approx(ref.pvalue, rel=1e-12)
        assert sel.auc_[j] == pytest.approx(ref.statistic / (early.sum() * late.sum()))
    # BH q-values are statsmodels' fdr_bh
    np.testing.assert_allclose(sel.qvalues_, multipletests(sel.pvalues_, method="fdr_bh")[1], rtol=1e-12)
    # higher feature 0 -> higher hazard -> early events: positive log2 fold change; feature 1 the opposite
    assert sel.log2fc_[0] > 0.3 and sel.log2fc_[1] < -0.3

    table = sel.summary()
    assert table.index[:4].tolist() == X.columns[np.argsort(sel.ranking_)[:4]].tolist()
    assert {"score", "p", "q", "selected", "log2fc", "auc"} <= set(table.columns) and table["selected"].sum() == 4

    binary = WilcoxonSelector(alpha=0.01).fit(X, label)
    assert set(np.flatnonzero(binary.get_support())) == set(INFORMATIVE)
    assert list(binary.get_feature_names_out()) == [X.columns[j] for j in INFORMATIVE]
    out = binary.transform(X)
    assert (
        isinstance(out, pd.DataFrame)
        and out.index.equals(X.index)
        and list(out.columns) == [X.columns[j] for j in INFORMATIVE]
    )


def test_cox_selector_ranks_informative_and_matches_lifelines(data: tuple) -> None:
    X, event, time, _ = data
    sel = UnivariateCoxSelector(alpha=0.05).fit(X, Surv.from_arrays(event, time))
    assert top(sel, 4) == set(INFORMATIVE)
    assert set(np.flatnonzero(sel.support_)) >= set(INFORMATIVE)
    np.testing.assert_allclose(sel.qvalues_, multipletests(sel.pvalues_, method="fdr_bh")[1], rtol=1e-12)
    assert np.sign(sel.coef_[INFORMATIVE]).tolist() == np.sign(BETA).tolist()
    for j in (0, 1, 7, 30):
        df = pd.DataFrame({"x": X.iloc[:, j].to_numpy(), "T": time, "E": event.astype(int)})
        ref = CoxPHFitter().fit(df, "T", "E").summary.loc["x"]
        assert sel.pvalues_[j] == pytest.approx(ref["p"], abs=1e-3, rel=1e-5)
        assert sel.coef_[j] == pytest.approx(ref["coef"], rel=1e-5, abs=1e-8)


def test_cox_univariate_tied_times_nan_and_scale_match_lifelines() -> None:
    rng = np.random.default_rng(4)
    n = 90
    X = np.column_stack([rng.normal(size=n), 40 * rng.normal(size=n) + 300, rng.integers(0, 3, n).astype(float)])
    lp = 0.7 * X[:, 0] + 0.01 * X[:, 1]
    time = np.ceil(rng.exponential(np.exp(-lp)) * 6)  # integer times: many ties (Efron's correction matters)
    event = rng.random(n) < 0.75
    X[[3, 10], 0] = np.nan
    res = cox_univariate(X, time, event)
    for j in range(3):
        df = pd.DataFrame({"x": X[:, j], "T": time, "E": event.astype(int)}).dropna()
        ref = CoxPHFitter().fit(df, "T", "E").summary.loc["x"]
        assert res.at[j, "coef"] == pytest.approx(ref["coef"], rel=1e-6)
        assert res.at[j, "se"] == pytest.approx(ref["se(coef)"], rel=1e-6)
        assert res.at[j, "p"] == pytest.approx(ref["p"], abs=1e-6)
    score = cox_univariate(X, time, event, test="score")
    assert np.all(np.abs(score["p"] - res["p"]) < 0.05)  # score and Wald tests agree for moderate effects
    const = cox_univariate(np.ones((n, 1)), time, event)
    assert const.isna().all(axis=None)


@pytest.mark.slow
def test_permutation_importance_selector_survival_and_binary(data: tuple) -> None:
    X, event, time, label = data
    surv = PermutationImportanceSelector(k=4, n_estimators=60, n_repeats=5, random_state=0).fit(
        X, Surv.from_arrays(event, time)
    )
    assert len(top(surv, 4) & set(INFORMATIVE)) >= 3
    assert surv.scores_[INFORMATIVE].mean() > 5 * max(np.abs(np.delete(surv.scores_, INFORMATIVE)).mean(), 1e-4)
    assert surv.get_support().sum() == 4 and surv.pvalues_.shape == surv.qvalues_.shape == (X.shape[1],)
    binary = PermutationImportanceSelector(k=4, n_estimators=50, n_repeats=5, random_state=0).fit(X, label)
    assert len(top(binary, 4) & set(INFORMATIVE)) >= 3
    again = PermutationImportanceSelector(k=4, n_estimators=50, n_repeats=5, random_state=0).fit(X, label)
    np.testing.assert_array_equal(binary.scores_, again.scores_)


def test_selection_rules_never_empty_and_nan_tolerant() -> None:
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(60, 12)), columns=[f"f{j}" for j in range(12)])
    y = Surv.from_arrays(rng.random(60) < 0.6, rng.exponential(1, 60))
    none = UnivariateCoxSelector(alpha=1e-9, min_features=2).fit(X, y)
    assert none.support_.sum() == 2 and set(np.flatnonzero(none.support_)) == top(none, 2)
    X.iloc[[1, 4, 9], 3] = np.nan
    X.iloc[:5, 7] = np.nan
    for sel in (UnivariateCoxSelector(k=5), WilcoxonSelector(k=5)):
        fitted = sel.fit(X, y)
        assert np.isfinite(fitted.pvalues_).all()
        assert fitted.transform(X).shape == (60, 5)
    ref = CoxPHFitter().fit(pd.DataFrame({"x": X["f3"], "T": y["time"], "E": y["event"]}).dropna(), "T", "E")
    cox = UnivariateCoxSelector().fit(X, y)
    assert cox.pvalues_[3] == pytest.approx(ref.summary.at["x", "p"], abs=1e-6)
    assert pickle.loads(pickle.dumps(cox)).get_support().tolist() == cox.get_support().tolist()
    assert clone(cox).get_params() == cox.get_params()


def test_bh_qvalues_and_target_parsing() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    q = bh_qvalues(p)
    np.testing.assert_allclose(q[[0, 2, 3, 4]], multipletests(p[[0, 2, 3, 4]], method="fdr_bh")[1])
    assert np.isnan(q[1])
    kind, event, time = parse_target(Surv.from_arrays([True, False, True], [1.0, 2.0, 3.0]))
    assert kind == "survival" and event.tolist() == [True, False, True] and time.tolist() == [1, 2, 3]
    assert parse_target(np.array(["no", "yes", "yes"]))[1].tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="exactly two classes"):
        parse_target([0, 1, 2])
    with pytest.raises(ValueError, match="survival y"):
        UnivariateCoxSelector().fit(np.zeros((3, 2)), [0, 1, 1])
    # censored before the horizon: unknown status, left out of both groups
    early, late, h = survival_groups(np.array([1, 1, 0, 1, 0, 0, 1], bool), np.array([1.0, 2, 2.5, 5, 6, 7, 8]), 3.0)
    assert (early.tolist(), late.tolist(), h) == ([1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1], 3.0)


def test_screening_inside_the_pipeline_does_not_leak() -> None:
    """With outcomes permuted (no signal), in-pipeline selection gives a held-out C-index near 0.5, while
    selecting on the whole cohort first and cross-validating only the model is optimistic."""
    X, event, time, _ = simulate(n=160, p=400, seed=7)
    perm = np.random.default_rng(7).permutation(len(event))
    y = Surv.from_arrays(event[perm], time[perm])
    cv = KFold(5, shuffle=True, random_state=0)
    model = CoxPHSurvivalAnalysis(alpha=1.0)
    inside = cross_val_score(make_pipeline(UnivariateCoxSelector(k=10), model), X, y, cv=cv).mean()
    leaked_cols = UnivariateCoxSelector(k=10).fit(X, y).get_support()
    leaked = cross_val_score(model, X.loc[:, leaked_cols], y, cv=cv).mean()
    assert abs(inside - 0.5) <= 0.08
    assert leaked > 0.6
    assert leaked - inside > 0.08

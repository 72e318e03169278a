"""Screens combined from a spec (make_screener / FeatureScreen): which features each rule keeps, seeded forest
importance, consensus-subtype columns, binary targets, and input checks; tiny seeded data with known signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.util import Surv

from omics_risk.features.screening import (
    FeatureScreen,
    PermutationImportanceSelector,
    UnivariateCoxSelector,
    WilcoxonSelector,
    make_screener,
)


def simulate(n: int = 240, p: int = 20, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features: m00 strongly prognostic, m01 weakly, the rest noise; two latent subtypes shift m10..m14."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    subtype = rng.integers(0, 2, n)
    X[:, 10:15] += 4.0 * subtype[:, None]
    lp = 1.5 * X[:, 0] + 0.5 * X[:, 1]
    t_event = rng.exponential(np.exp(-lp))
    t_cens = rng.uniform(0.5, 3.0, n)
    y = Surv.from_arrays(t_event <= t_cens, np.minimum(t_event, t_cens))
    label = (lp + rng.logistic(0, 0.5, n) > 0).astype(int)
    frame = pd.DataFrame(X, columns=[f"m{j:02d}" for j in range(p)], index=[f"P{i:03d}" for i in range(n)])
    return frame, y, label


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return simulate()


FAST_RF = {"n_estimators": 60, "min_samples_leaf": 5, "n_repeats": 5}


def test_each_method_ranks_the_informative_feature_first(data: tuple) -> None:
    X, y, label = data
    for method in ("cox", "wilcoxon", "random_forest"):
        screen = make_screener({"methods": [method], "k": 3, "random_state": 0, "random_forest": FAST_RF}).fit(X, y)
        (name, sel), = screen.selectors_
        assert name == method
        assert int(np.argmin(sel.ranking_)) == 0, method
        assert screen.support_.sum() == 3 and screen.support_[0]
        assert list(screen.transform(X).columns) == list(X.columns[screen.support_])
    binary = make_screener({"methods": ["wilcoxon", "random_forest"], "k": 2, "random_forest": FAST_RF}).fit(X, label)
    assert all(int(np.argmin(s.ranking_)) == 0 for _, s in binary.selectors_)


def test_union_intersection_and_sequential_rules(data: tuple) -> None:
    X, y, _ = data
    spec = {"methods": ["wilcoxon", "random_forest"], "k": 4, "random_state": 1, "random_forest": FAST_RF}
    union = make_screener({**spec, "combine": "union"}).fit(X, y)
    inter = make_screener({**spec, "combine": "intersection"}).fit(X, y)
    masks = [s.get_support() for _, s in union.selectors_]
    np.testing.assert_array_equal(union.support_, masks[0] | masks[1])
    np.testing.assert_array_equal(inter.support_, masks[0] & masks[1])
    assert inter.support_[0] and union.support_.sum() >= 4 >= inter.support_.sum() >= 1
    seq = make_screener({**spec, "combine": "sequential", "wilcoxon": {"k": 8}, "random_forest": {**FAST_RF, "k": 2}})
    seq.fit(X, y)
    first, second = (s for _, s in seq.selectors_)
    assert second.n_features_in_ == 8  # the forest only saw what the Wilcoxon screen kept
    kept = np.flatnonzero(first.get_support())[second.get_support()]
    np.testing.assert_array_equal(np.flatnonzero(seq.support_), kept)
    assert seq.support_.sum() == 2 and seq.support_[0]


def test_intersection_never_empty() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 6))
    y = Surv.from_arrays(rng.random(120) < 0.6, rng.exponential(1.0, 120))
    a = UnivariateCoxSelector(k=1, test="score").fit(X, y)
    b = WilcoxonSelector(k=1).fit(X, y)
    screen = FeatureScreen([("cox", UnivariateCoxSelector(k=1, test="score")), ("wilcoxon", WilcoxonSelector(k=1))],
                           combine="intersection").fit(X, y)
    assert screen.support_.sum() >= 1
    if not (a.get_support() & b.get_support()).any():  # disagreement: best mean rank wins
        best = np.argmin((a.ranking_ + b.ranking_) / 2)
        assert screen.support_[best]


def test_random_forest_importance_is_seeded(data: tuple) -> None:
    X, y, _ = data
    a = PermutationImportanceSelector(k=3, random_state=7, keep_estimator=False, **FAST_RF).fit(X, y)
    b = PermutationImportanceSelector(k=3, random_state=7, keep_estimator=False, **FAST_RF).fit(X, y)
    c = PermutationImportanceSelector(k=3, random_state=8, keep_estimator=False, **FAST_RF).fit(X, y)
    np.testing.assert_array_equal(a.scores_, b.scores_)
    assert not np.array_equal(a.scores_, c.scores_)
    assert not hasattr(a, "estimator_")  # the forest is dropped: only its ranking is needed
    assert a.scores_[0] == a.scores_.max() > 0.05  # m00 carries most of the C-index


def test_cluster_subtypes_are_appended_as_one_hot_columns(data: tuple) -> None:
    X, y, _ = data
    train, test = X.iloc[:180], X.iloc[180:]
    spec = {"methods": ["cox", "consensus_clusters"], "k": 2, "random_state": 0,
            "consensus_clusters": {"ks": [2, 3], "n_resamples": 15}}
    screen = make_screener(spec).fit(train, y[:180])
    assert screen.clusters_.best_k_ == 2  # the two latent subtypes, chosen by PAC
    out = screen.transform(test)
    assert list(out.columns) == ["m00", "m01", "subtype_0", "subtype_1"]
    np.testing.assert_array_equal(out[["subtype_0", "subtype_1"]].sum(axis=1).to_numpy(), np.ones(len(test)))
    truth = (test[["m10", "m11", "m12", "m13", "m14"]].mean(axis=1) > 2).to_numpy()
    hit = out["subtype_0"].to_numpy().astype(bool)
    assert max(np.mean(hit == truth), np.mean(hit != truth)) > 0.95  # the nearest training centroid finds the subtype
    np.testing.assert_array_equal(screen.get_feature_names_out(), out.columns)
    replace = make_screener({**spec, "consensus_clusters": {"ks": [2], "n_resamples": 10, "mode": "replace"}})
    assert list(replace.fit(train, y[:180]).transform(test).columns) == ["subtype_0", "subtype_1"]
    plain = make_screener(spec).fit(train.to_numpy(), y[:180])  # arrays in, arrays out
    arr = plain.transform(test.to_numpy())
    assert isinstance(arr, np.ndarray) and arr.shape == (60, 4)
    np.testing.assert_array_equal(arr, out.to_numpy())


def test_spec_errors_are_one_clear_line(data: tuple) -> None:
    X, _, label = data
    with pytest.raises(ValueError, match="needs a survival endpoint"):
        make_screener({"methods": ["cox"]}, task="binary")
    with pytest.raises(ValueError, match="unknown screening setting"):
        make_screener({"methods": ["cox"], "kk": 3})
    with pytest.raises(ValueError, match="non-empty list"):
        make_screener({"methods": ["lasso"]})
    with pytest.raises(ValueError, match="combine must be"):
        make_screener({"methods": ["wilcoxon"], "combine": "vote"}).fit(X, label)

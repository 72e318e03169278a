"""Consensus k-means: recovers known blobs, is seeded-deterministic, predicts new patients, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from omics_risk.features.clustering import ConsensusKMeans, consensus_cdf, plot_consensus

CENTRES = np.array([[0.0, 0, 0, 0], [7, 0, 0, 0], [0, 7, 0, 0]])


def blobs(n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(c, 1.0, (n_per, CENTRES.shape[1])) for c in CENTRES])
    return X, np.repeat(np.arange(len(CENTRES)), n_per)


@pytest.fixture(scope="module")
def fitted() -> tuple[ConsensusKMeans, np.ndarray, np.ndarray]:
    X, truth = blobs(30, seed=0)
    return ConsensusKMeans(ks=(2, 3, 4, 5), n_resamples=25, random_state=0).fit(X), X, truth


def test_recovers_three_blobs_with_pac_near_zero(fitted: tuple) -> None:
    model, X, truth = fitted
    assert model.best_k_ == 3
    assert model.pac_[3] < 0.01
    assert all(model.pac_[k] > 0.05 for k in (2, 4, 5))
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    assert model.consensus_.shape == (len(X), len(X))
    np.testing.assert_allclose(np.diag(model.consensus_), 1.0)
    np.testing.assert_allclose(model.consensus_, model.consensus_.T)
    same = truth[:, None] == truth[None, :]
    assert model.consensus_[same].min() > 0.9 and model.consensus_[~same].max() < 0.1
    for c, centre in enumerate(model.cluster_centers_):  # centroids in the input space, one near each true centre
        np.testing.assert_allclose(centre, X[model.labels_ == c].mean(axis=0))
        assert np.linalg.norm(CENTRES - centre, axis=1).min() < 1.0
    assert np.bincount(model.labels_).tolist() == [30, 30, 30]
    assert model.delta_area_[3] > model.delta_area_[4]  # the CDF area stops growing after the true k


def test_deterministic_with_a_seed(fitted: tuple) -> None:
    model, X, _ = fitted
    again = clone(model).fit(X)
    np.testing.assert_array_equal(again.consensus_, model.consensus_)
    np.testing.assert_array_equal(again.labels_, model.labels_)
    assert again.pac_ == model.pac_
    other = ConsensusKMeans(ks=(2, 3, 4, 5), n_resamples=25, random_state=1).fit(X)
    assert not np.array_equal(other.consensus_by_k_[5], model.consensus_by_k_[5])


def test_predict_assigns_new_blob_points(fitted: tuple) -> None:
    model, X, truth = fitted
    new, new_truth = blobs(10, seed=99)
    # map training labels to blob ids through the training assignment
    mapping = {lab: np.bincount(truth[model.labels_ == lab]).argmax() for lab in range(model.best_k_)}
    pred = np.array([mapping[p] for p in model.predict(new)])
    np.testing.assert_array_equal(pred, new_truth)
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_fixed_k_cdf_and_input_checks() -> None:
    X, _ = blobs(15, seed=2)
    two = ConsensusKMeans(ks=(2, 3), n_clusters=2, n_resamples=10, feature_fraction=0.75, random_state=0).fit(X)
    assert two.best_k_ == 2 and set(two.labels_) == {0, 1}
    vals, cdf, area, pac = consensus_cdf(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.5, 1.0, 1.0]]))
    assert vals.tolist() == [0.0, 0.5, 1.0] and cdf.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert area == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 3) and pac == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="NaN"):
        ConsensusKMeans(n_resamples=5).fit(np.where(np.eye(10, 4) > 0, np.nan, 1.0))
    with pytest.raises(ValueError, match="largest k"):
        ConsensusKMeans(ks=(2, 9), n_resamples=5).fit(X[:10])


def test_plot_consensus(fitted: tuple, tmp_path: Path) -> None:
    out = plot_consensus(fitted[0], tmp_path / "plots" / "consensus.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_consensus_subtypes_fit_on_training_rows_only() -> None:
    from omics_risk.features.clustering import ConsensusSubtypes

    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
    lab = rng.integers(0, 3, 150)
    X = pd.DataFrame(centers[lab] + rng.normal(size=(150, 3)), columns=["a", "b", "c"])
    X.iloc[3, 1] = np.nan  # imputed with the training median
    train, test = X.iloc[:100], X.iloc[100:]
    model = ConsensusSubtypes(ks=(2, 3, 4), n_resamples=20, random_state=0).fit(train)
    assert model.best_k_ == 3 and model.pac_[list(model.ks_).index(3)] < 0.05
    assert model.cluster_sizes_.sum() == 100
    out = model.transform(test)
    assert list(out.columns) == ["a", "b", "c", "subtype_0", "subtype_1", "subtype_2"]
    hot = out[["subtype_0", "subtype_1", "subtype_2"]].to_numpy()
    np.testing.assert_array_equal(hot.sum(axis=1), np.ones(50))
    pairs = pd.crosstab(lab[100:], hot.argmax(axis=1))
    assert (pairs.to_numpy() > 0).sum() == 3  # each true blob maps to exactly one subtype
    # the test rows play no part in the fit: refitting on the same training rows gives the same centroids
    again = ConsensusSubtypes(ks=(2, 3, 4), n_resamples=20, random_state=0).fit(train)
    np.testing.assert_array_equal(again.centers_, model.centers_)
    assert not hasattr(model, "consensus_")  # no training-patient matrix is kept in a saved model
    with pytest.raises(ValueError, match="mode must be"):
        ConsensusSubtypes(mode="stack").fit(train)

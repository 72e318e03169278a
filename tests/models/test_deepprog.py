"""DeepProg-style subtypes: recovers two true survival subtypes on held-out patients, scores patients with any
subset of the omics, falls back to the top-k nodes, is reproducible, and keeps torch on the requested device."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.statistics import logrank_test
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sksurv.metrics import concordance_index_censored
from test_baselines import make_toy

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.deepprog import DeepProgStyle, observed_expected, resolve_device, train_autoencoder

N_TRAIN = 220


def two_subtypes(
    n: int = 320,
    seed: int = 0,
    p: int = 40,
    missing: float = 0.2,
    shift: float = 1.0,
    log_hr: float = 1.2,
    binary: bool = False,
) -> tuple[MultimodalData, np.ndarray]:
    """Two omics whose first 10 features shift with a hidden subtype z; subtype 1 has hazard ratio e^log_hr
    (binary: response probability 0.7 in subtype 0, 0.3 in subtype 1)."""
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"P{i:04d}" for i in range(n)], name="patient_id")
    z = (rng.random(n) < 0.5).astype(int)
    mods, present = {}, {"clinical": np.ones(n, bool)}
    for name in ("a", "b"):
        X = rng.normal(size=(n, p))
        X[:, :10] += shift * (2 * z[:, None] - 1) * rng.choice([-1.0, 1.0], 10)
        pres = rng.random(n) > missing
        X[~pres] = np.nan
        mods[name] = pd.DataFrame(X, index=pats, columns=[f"t0__f{j}" for j in range(p)])
        present[name] = pres
    t = rng.exponential(365 * np.exp(-log_hr * z))
    c = rng.exponential(365 * 3, n)
    outcome = (
        {"label": (rng.random(n) < np.where(z == 1, 0.3, 0.7)).astype(float)}
        if binary
        else {"time": np.minimum(t, c), "event": (t <= c).astype(float)}
    )
    return MultimodalData(
        patients=pats,
        clinical=pd.DataFrame({"age": rng.normal(60, 5, n)}, index=pats),
        modalities=mods,
        present=pd.DataFrame(present, index=pats),
        endpoint="rfs",
        **outcome,
    ), z


@pytest.fixture(scope="module")
def subtyped() -> tuple[MultimodalData, MultimodalData, np.ndarray, DeepProgStyle]:
    data, z = two_subtypes()
    train, test = data.subset(np.arange(N_TRAIN)), data.subset(np.arange(N_TRAIN, len(data)))
    return train, test, z, DeepProgStyle(["a", "b"]).fit(train)


def test_subtypes_separate_survival_on_held_out_patients(subtyped) -> None:  # type: ignore[no-untyped-def]
    train, test, z, model = subtyped
    assert model.n_clusters_ == 2 and model.train_logrank_p_ < 1e-4
    assert set(model.subtypes_.unique()) <= {-1, 0, 1}
    assert (model.subtypes_ == -1).sum() == (~train.present[["a", "b"]].any(axis=1)).sum()
    # Subtype 1 is the high-risk one, by construction of the ordering.
    assert model.subtype_risk_[1] > model.subtype_risk_[0]
    sub = model.predict_subtype(test)
    ok = sub >= 0
    lo, hi = ok & (sub == 0), ok & (sub == 1)
    p = logrank_test(test.time[lo], test.time[hi], test.event[lo], test.event[hi]).p_value
    assert p < 1e-3
    assert adjusted_rand_score(z[N_TRAIN:][ok], sub[ok]) > 0.8
    risk = model.predict_risk(test)
    assert np.all((risk >= 0) & (risk <= 1))
    assert concordance_index_censored(test.event.astype(bool), test.time, risk)[0] > 0.6
    # k = 2: risk is the probability of the high-risk subtype.
    np.testing.assert_allclose(risk[ok], model.predict_subtype_proba(test)["subtype_1"].to_numpy()[ok])


def test_any_subset_of_omics_is_scored(subtyped) -> None:  # type: ignore[no-untyped-def]
    _, test, _, model = subtyped
    present = test.present[["a", "b"]].to_numpy()
    only_a = present[:, 0] & ~present[:, 1]
    both = present.all(axis=1)
    none = ~present.any(axis=1)
    assert only_a.sum() > 0 and both.sum() > 0 and none.sum() > 0
    proba = model.predict_subtype_proba(test)
    # With one omic, the probability is that omic's classifier alone; with two, the mean of both.
    om_a, om_b = model.omics_["a"], model.omics_["b"]
    fa = om_a.classifier.predict_proba(om_a.features(test.modalities["a"].iloc[np.flatnonzero(present[:, 0])]))
    fb = om_b.classifier.predict_proba(om_b.features(test.modalities["b"].iloc[np.flatnonzero(present[:, 1])]))
    pa = pd.DataFrame(fa, index=test.patients[present[:, 0]])
    pb = pd.DataFrame(fb, index=test.patients[present[:, 1]])
    np.testing.assert_allclose(proba.loc[only_a].to_numpy(), pa.loc[test.patients[only_a]].to_numpy())
    idx = test.patients[both]
    np.testing.assert_allclose(proba.loc[both].to_numpy(), (pa.loc[idx].to_numpy() + pb.loc[idx].to_numpy()) / 2)
    risk = model.predict_risk(test)
    np.testing.assert_array_equal(risk[none], model.risk_median_)
    assert np.all(model.predict_subtype(test)[none] == -1) and proba.loc[none].isna().all().all()
    surv = model.predict_survival(test, np.array([0.0, 180.0, 365.0, 2000.0]))
    assert surv.shape == (len(test), 4) and np.all(np.diff(surv, axis=1) <= 1e-12)
    np.testing.assert_allclose(surv[:, 0], 1.0)
    sub = model.predict_subtype(test)
    overall = surv[none, 2][0]  # the training Kaplan-Meier curve at 365 days
    assert surv[sub == 1, 2].mean() < overall < surv[sub == 0, 2].mean()


def test_fallback_keeps_top_k_nodes_on_noise() -> None:
    data, _ = make_toy(200, seed=8)
    model = DeepProgStyle(["noise"], latent_dim=8, pvalue_threshold=1e-12, fallback_top_k=2, epochs=20).fit(data)
    om = model.omics_["noise"]
    assert len(om.kept) == 2
    np.testing.assert_array_equal(np.sort(om.kept), np.sort(np.argsort(om.pvalues)[:2]))
    assert np.isfinite(model.predict_risk(data)).all()


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    data, _ = two_subtypes(200, seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    r1 = DeepProgStyle(["a", "b"], epochs=20, seed=5).fit(data).predict_risk(data)
    np.testing.assert_array_equal(torch.rand(1).numpy(), before.numpy())  # fit did not consume the global RNG
    r2 = DeepProgStyle(["a", "b"], epochs=20, seed=5).fit(data).predict_risk(data)
    np.testing.assert_array_equal(r1, r2)


def test_autoencoder_float32_on_cpu_and_device_selection() -> None:
    X = np.random.default_rng(0).normal(size=(40, 12))
    ae = train_autoencoder(X, 3, epochs=2, seed=0)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in ae.parameters())
    assert not ae.training
    threads = torch.get_num_threads()
    train_autoencoder(X, 3, epochs=1)
    assert torch.get_num_threads() == threads
    with mock.patch("torch.cuda.is_available", return_value=True):
        assert resolve_device("auto").type == "cuda"
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


def test_auto_number_of_subtypes_and_alternatives(subtyped) -> None:  # type: ignore[no-untyped-def]
    train, test, z, _ = subtyped
    auto = DeepProgStyle(["a", "b"], n_clusters="auto", max_clusters=4, epochs=30).fit(train)
    assert auto.n_clusters_ == 2 and set(auto.silhouettes_) == {2, 3, 4}
    for kw in ({"cluster_method": "gmm"}, {"classifier": "svm"}):
        m = DeepProgStyle(["a", "b"], epochs=30, **kw).fit(train)
        sub = m.predict_subtype(test)
        ok = sub >= 0
        assert adjusted_rand_score(z[N_TRAIN:][ok], sub[ok]) > 0.6
    with pytest.raises(ValueError, match="cluster_method"):
        DeepProgStyle(cluster_method="dbscan").fit(train)


def test_three_subtypes_risk_is_expected_rank() -> None:
    data, _ = two_subtypes(200, seed=4)
    model = DeepProgStyle(["a", "b"], n_clusters=3, epochs=20).fit(data)
    proba = model.predict_subtype_proba(data).to_numpy()
    risk = model.predict_risk(data)
    ok = ~np.isnan(proba).any(axis=1)
    np.testing.assert_allclose(risk[ok], proba[ok] @ np.array([0.0, 0.5, 1.0]))
    assert np.all(np.diff(model.subtype_risk_) >= 0)


def test_binary_endpoint_response_from_subtype_rates() -> None:
    data, _ = two_subtypes(400, seed=9, binary=True)
    train, test = data.subset(np.arange(280)), data.subset(np.arange(280, 400))
    model = DeepProgStyle(["a", "b"], epochs=30).fit(train)
    p = model.predict_response(test)
    np.testing.assert_allclose(model.predict_risk(test), 1 - p)
    has = test.present[["a", "b"]].any(axis=1).to_numpy()
    proba = model.predict_subtype_proba(test).to_numpy()
    np.testing.assert_allclose(p[has], proba[has] @ model.response_rate_)
    assert model.response_rate_[0] > model.response_rate_[-1]  # subtype 0 = lowest risk = most responders
    assert roc_auc_score(test.label[has], p[has]) > 0.6
    with pytest.raises(NotImplementedError):
        model.predict_survival(test, np.array([100.0]))


def test_observed_expected_matches_lifelines_logrank() -> None:
    data, z = two_subtypes(300, seed=5)
    from lifelines.statistics import multivariate_logrank_test

    oe = observed_expected(data.time, data.event, z, 2)
    res = multivariate_logrank_test(data.time, z, data.event)
    assert oe[1] > 1 > oe[0]
    # Sum of expected events equals the number of events (log-rank identity).
    expected = [data.event[z == g].sum() / oe[g] for g in (0, 1)]
    assert sum(expected) == pytest.approx(data.event.sum())
    assert res.p_value < 1e-6

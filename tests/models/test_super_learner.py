"""The fused super learner: never below its clinical backbone when the omics are noise, above every base model when
the signal is split across modalities, weights >= 0 from out-of-fold risks, the network as one base model, a
binary endpoint, and a save / load round trip without pickle."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from lifelines import CoxPHFitter
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored
from test_baselines import TYPES, make_toy

from omics_risk.models.base import capabilities_of
from omics_risk.models.baselines import ClinicalCox, ModalityCoxnet
from omics_risk.models.super_learner import NETWORK, ForestBase, FusedSuperLearner, fit_nonnegative_meta

#: the stack of these tests: 3 inner folds, small forests (the forest base has its own test)
FAST = {"inner_folds": 3, "rsf": {"n_estimators": 25}}
NET = {"epochs": 40, "patience": 8, "n_members": 1, "k": 8, "seed": 0, "clinical_types": TYPES, "device": "cpu"}


def cindex(data, risk) -> float:  # type: ignore[no-untyped-def]
    return float(concordance_index_censored(data.event.astype(bool), data.time, risk)[0])


def quiet_fit(model, data):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data)


@pytest.fixture(scope="module")
def split_signal():  # type: ignore[no-untyped-def]
    data, _ = make_toy(600, seed=11, weights=(0.7, 1.0, 1.0))
    train, test = data.subset(np.arange(420)), data.subset(np.arange(420, 600))
    return train, test, quiet_fit(FusedSuperLearner(stack=FAST, **NET), train)


def test_meta_weights_match_lifelines_and_clip_a_harmful_column() -> None:
    rng = np.random.default_rng(0)
    n = 800
    X = rng.normal(size=(n, 3))
    lp = 0.8 * X[:, 0] + 0.4 * X[:, 1] - 0.5 * X[:, 2]
    time = rng.exponential(np.exp(-lp))
    event = (rng.random(n) < 0.8).astype(float)
    # Unconstrained where the truth is positive: lifelines' Cox fit (Efron ties) on the same two columns.
    w, _ = fit_nonnegative_meta(X[:, :2], np.array([True, True]), time=time, event=event, penalizer=0.0)
    import pandas as pd

    ref = CoxPHFitter().fit(pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "t": time, "e": event}), "t", "e").params_
    np.testing.assert_allclose(w, ref.to_numpy(), atol=1e-3)  # torchsurv validates its input in float32
    # A column that lowers risk gets weight 0 when constrained, its negative weight when free.
    w_nn, _ = fit_nonnegative_meta(X, np.array([True, True, True]), time=time, event=event, penalizer=0.0)
    w_free, _ = fit_nonnegative_meta(X, np.array([True, True, False]), time=time, event=event, penalizer=0.0)
    assert w_nn[2] == 0.0 and w_free[2] < -0.3 and w_nn[0] > 0.5


def test_beats_every_base_model_when_the_signal_is_split(split_signal) -> None:  # type: ignore[no-untyped-def]
    train, test, model = split_signal
    c_fused = cindex(test, model.predict_risk(test))
    for base in (ClinicalCox(clinical_types=TYPES), ModalityCoxnet("a", n_alphas=15), ModalityCoxnet("b", n_alphas=15)):
        assert c_fused > cindex(test, quiet_fit(base, train).predict_risk(test)) + 0.03, base.name
    assert all(model.weights_[n] >= 0 for n in model.names_)
    assert model.weights_["coxnet_a"] > 0.2 and model.weights_["coxnet_b"] > 0.2 and model.weights_["clinical"] > 0.1
    # every base model may speak, shrunk by the penalty the second-level CV chose: a modality without signal stays
    # far below the two that carry it
    assert model.shrinkage_ in model.stack["shrinkage"] and set(model.selection_) >= {"clinical", "coxnet_noise"}
    assert model.weights_["coxnet_noise"] < 0.25 * min(model.weights_["coxnet_a"], model.weights_["coxnet_b"])
    surv = model.predict_survival(test, np.array([30.0, 365.0, 1000.0]))
    assert surv.shape == (len(test), 3) and np.all(np.diff(surv, axis=1) <= 1e-12) and np.all((surv >= 0) & (surv <= 1))
    outs = model.predict_outputs(test, np.array([30.0, 365.0, 1000.0]))
    np.testing.assert_allclose(outs["risk"], model.predict_risk(test))
    np.testing.assert_allclose(outs["survival"], surv)


def test_forward_selection_keeps_the_noise_modality_out(split_signal) -> None:  # type: ignore[no-untyped-def]
    train = split_signal[0]
    stack = {**FAST, "network": False, "forests": False, "select": True}  # the linear bases: one step per modality
    model = quiet_fit(FusedSuperLearner(stack=stack, **NET), train)
    assert model.shrinkage_ is None and model.selection_[0] == "clinical"
    assert {"coxnet_a", "coxnet_b"} <= set(model.selection_) and "coxnet_noise" not in model.selection_
    assert model.weights_["coxnet_noise"] == 0.0
    gains = np.diff([score for _, score in model.selection_path_])
    assert np.all(gains > model.stack["min_gain"])  # each base model that entered passed the bar


def test_never_below_the_clinical_backbone_when_the_omics_are_noise() -> None:
    data, _ = make_toy(600, seed=5, weights=(1.0, 0.0, 0.0))
    train, test = data.subset(np.arange(420)), data.subset(np.arange(420, 600))
    fused = quiet_fit(FusedSuperLearner(stack={**FAST, "network": False}, **NET), train)
    clinical = quiet_fit(ClinicalCox(clinical_types=TYPES), train)
    # No penalty lets the omics beat the backbone alone by the cross-validated likelihood bar: the fused model is its
    # clinical backbone, with the backbone's ranking (the same ClinicalCox refitted on the same patients).
    assert fused.shrinkage_ is None and fused.selection_ == ["clinical"] and fused.weights_["clinical"] > 0.5
    best = max(score for lam, score in fused.shrinkage_path_ if lam is not None)
    assert best <= fused.shrinkage_path_[0][1] + fused.stack["min_gain"]
    assert fused.describe()["shrinkage_chosen"] == "backbone"
    assert all(fused.weights_[c] == 0.0 for c in fused.weights_ if c != "clinical")
    assert cindex(test, fused.predict_risk(test)) == pytest.approx(cindex(test, clinical.predict_risk(test)), abs=1e-12)


def test_save_and_load_give_the_same_scores(split_signal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, test, model = split_signal
    model.save(tmp_path / "m")
    assert not list(tmp_path.rglob("*.pkl"))
    loaded = FusedSuperLearner.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_risk(test), model.predict_risk(test), rtol=1e-6, atol=1e-6)
    times = np.array([100.0, 700.0])
    np.testing.assert_allclose(loaded.predict_survival(test, times), model.predict_survival(test, times), atol=1e-6)
    assert loaded.weights_ == model.weights_ and set(loaded.feature_manifest_) >= {"clinical", "a", "b"}


def test_binary_endpoint_stacks_logistic_models_with_non_negative_weights() -> None:
    data, _ = make_toy(600, seed=2, binary=True, weights=(0.7, 1.2, 1.2))
    train, test = data.subset(np.arange(420)), data.subset(np.arange(420, 600))
    net = {**NET, "heads": ["binary"]}
    model = quiet_fit(FusedSuperLearner(stack=FAST, **net), train)
    assert capabilities_of(model).response and not capabilities_of(model).survival
    p = model.predict_response(test)
    assert np.all((p > 0) & (p < 1))
    auc = roc_auc_score(test.label, p)
    base = quiet_fit(ModalityCoxnet("a", n_alphas=10, task="binary"), train).predict_response(test)
    assert auc > roc_auc_score(test.label, base) + 0.02 and auc > 0.7
    assert all(model.weights_[n] >= 0 for n in model.names_)
    np.testing.assert_allclose(model.predict_outputs(test)["response"], p)


def test_stack_off_is_the_network_alone(split_signal) -> None:  # type: ignore[no-untyped-def]
    train, test, _ = split_signal
    model = quiet_fit(FusedSuperLearner(stack={"enabled": False}, **NET), train)
    assert model.names_ == [NETWORK] and model.bases_ == {}
    raw = model.network_model_.predict_risk(test)
    np.testing.assert_allclose(model.predict_risk(test), raw - model.network_model_.train_median_risk_)


def test_unknown_stack_setting_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown stack setting.*inner_fold"):
        FusedSuperLearner(stack={"inner_fold": 3}, **NET)


def test_a_cohort_without_a_modality_scores_it_as_absent(split_signal) -> None:  # type: ignore[no-untyped-def]
    _, test, model = split_signal
    from omics_risk.data.multimodal import MultimodalData

    without_b = MultimodalData(patients=test.patients, clinical=test.clinical,
                               modalities={k: v for k, v in test.modalities.items() if k != "b"},
                               present=test.present.drop(columns="b"), time=test.time, event=test.event)
    risk = model.predict_risk(without_b)
    absent_b = test.present["b"].to_numpy() == 0
    assert np.isfinite(risk).all()
    # patients who lacked b anyway score the same; the others now score as if b were missing
    np.testing.assert_allclose(risk[absent_b], model.predict_risk(test)[absent_b], atol=1e-9)


def test_the_network_enters_in_sd_units_of_its_own_training_risk(split_signal) -> None:  # type: ignore[no-untyped-def]
    train, test, model = split_signal
    # One weight serves every fit of the network (the inner fits and the refit), so each is put in SD units of its
    # risk on the patients it was trained on: over the refit's training patients that column has SD exactly 1.
    net = model.network_model_
    raw = net.predict_risk(train)
    assert model.network_scale_ == pytest.approx(float(np.std(raw - net.train_median_risk_)), rel=1e-12)
    assert float(model.base_risks(train)[NETWORK].std(ddof=0)) == pytest.approx(1.0, rel=1e-9)
    # out of fold, the inner fits' columns were put on the same scale: their spread over held-out patients stays
    # within a factor 2 of 1 (a raw network's spread moves with where early stopping ended)
    oof = model.oof_risk_[NETWORK].to_numpy()
    assert 0.5 < float(np.std(oof)) < 2.0
    # scores apply that scale: the network's column in the meta design is its base risk
    np.testing.assert_allclose(model.base_risks(test)[NETWORK],
                               (net.predict_risk(test) - net.train_median_risk_) / model.network_scale_)


@pytest.fixture(scope="module")
def u_shaped():  # type: ignore[no-untyped-def]
    """A modality whose effect no linear model can see: risk rises with |u| (both tails), beside the clinical part."""
    n = 700
    rng = np.random.default_rng(3)
    U = rng.normal(size=(n, 8))
    data, truth = make_toy(n, seed=3, weights=(1.0, 0.0, 0.0), extra={"u": U})
    lp = truth["clinical"].to_numpy() + 1.5 * (np.abs(U[:, 0]) > 1.0)
    t, c = rng.exponential(365 * np.exp(-lp)), rng.exponential(365 * 3, n)
    data = dataclasses.replace(data, time=np.minimum(t, c), event=(t <= c).astype(float))
    return data.subset(np.arange(500)), data.subset(np.arange(500, n))


def test_a_forest_base_brings_in_what_no_linear_model_sees(u_shaped, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, test = u_shaped
    stack = {"inner_folds": 3, "network": False, "rsf": {"n_estimators": 60}}
    with_forests = quiet_fit(FusedSuperLearner(stack=stack, **NET), train)
    linear_only = quiet_fit(FusedSuperLearner(stack={**stack, "forests": False}, **NET), train)
    assert "rsf_u" in with_forests.names_ and not any(n.startswith("rsf_") for n in linear_only.names_)
    # the forest on u carries the U-shaped effect; the elastic-net model on u cannot
    assert with_forests.weights_["rsf_u"] > 2 * with_forests.weights_["coxnet_u"]
    assert with_forests.weights_["rsf_u"] > max(with_forests.weights_[f"rsf_{m}"] for m in ("a", "b", "noise"))
    assert cindex(test, with_forests.predict_risk(test)) > cindex(test, linear_only.predict_risk(test)) + 0.03
    # saved without pickle: the trees in skops next to the pipeline, the same scores after loading
    assert isinstance(with_forests.bases_["rsf_u"], ForestBase)
    with_forests.save(tmp_path / "m")
    assert (tmp_path / "m" / "bases" / "rsf_u.forest.skops").is_file() and not list(tmp_path.rglob("*.pkl"))
    loaded = FusedSuperLearner.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_risk(test), with_forests.predict_risk(test), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(loaded.base_risks(test)["rsf_u"], with_forests.base_risks(test)["rsf_u"], atol=1e-9)

"""Late-fusion stacking: beats every base model when the signal is split across modalities, learns from
out-of-fold risks only (an overfitting base model gets no weight), handles absent modalities with centring and
indicators, takes instances, factories and Hydra configs, and supports binary endpoints."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored
from test_baselines import TYPES, make_toy

from omics_risk.models.baselines import ClinicalCox, ModalityCoxnet, ModalityRSF
from omics_risk.models.stacking import LateFusionStacker, build_model, model_present, oof_scales


def cindex(data, risk) -> float:  # type: ignore[no-untyped-def]
    return float(concordance_index_censored(data.event.astype(bool), data.time, risk)[0])


def bases() -> dict:  # type: ignore[type-arg]
    return {
        "clinical": ClinicalCox(clinical_types=TYPES),
        "a": ModalityCoxnet("a", n_alphas=15),
        "b": ModalityCoxnet("b", n_alphas=15),
    }


@pytest.fixture(scope="module")
def split_signal():  # type: ignore[no-untyped-def]
    data, _ = make_toy(700, seed=11, weights=(0.7, 1.0, 1.0))
    train, test = data.subset(np.arange(500)), data.subset(np.arange(500, 700))
    return train, test, LateFusionStacker(bases(), inner_folds=5).fit(train)


def test_stacking_beats_every_base_model_when_signal_is_split(split_signal) -> None:  # type: ignore[no-untyped-def]
    train, test, model = split_signal
    c_stack = cindex(test, model.predict_risk(test))
    for name, spec in bases().items():
        c_base = cindex(test, spec.fit(train).predict_risk(test))
        assert c_stack > c_base + 0.03, (name, c_base, c_stack)
    assert (model.meta_coef_[["risk_clinical", "risk_a", "risk_b"]] > 0.2).all()
    assert model.fit_seconds_ > 0 and np.isfinite(model.predict_risk(test)).all()
    surv = model.predict_survival(test, np.array([30.0, 365.0, 1000.0]))
    assert surv.shape == (len(test), 3) and np.all(np.diff(surv, axis=1) <= 1e-12)


def test_absent_modality_is_centred_with_an_indicator(split_signal) -> None:  # type: ignore[no-untyped-def]
    train, test, model = split_signal
    assert set(model.indicators_) == {"a", "b"}  # clinical is always present
    X = model._base_design(test)
    absent_a = ~test.present["a"].to_numpy()
    np.testing.assert_array_equal(X.loc[absent_a, "risk_a"], 0.0)
    np.testing.assert_array_equal(X["missing_a"], absent_a.astype(float))
    assert "missing_clinical" not in X.columns
    # OOF risks are stored with NaN for absent patients; centring puts their median at 0.
    oof = model.oof_risk_
    assert oof["a"].isna().to_numpy().tolist() == (~train.present["a"].to_numpy()).tolist()
    z = (oof["a"].dropna() - model.centre_[1]) / model.scale_[1]
    assert z.median() == pytest.approx(0.0) and z.std(ddof=0) == pytest.approx(1.0)
    # A patient with no omics at all still gets a finite risk (clinical base model + indicators).
    nothing = test.subset(np.arange(3))
    nothing.present = nothing.present.assign(a=False, b=False, noise=False)
    nothing.modalities = {m: t * np.nan for m, t in nothing.modalities.items()}
    assert np.isfinite(model.predict_risk(nothing)).all()


def test_meta_learner_sees_out_of_fold_risks_only() -> None:
    """A forest memorising a noise modality is perfect in-sample; on out-of-fold risks it earns no weight."""
    data, _ = make_toy(300, seed=12, weights=(0.5, 1.0, 0.0), missing=0.0)
    spec = {"a": ModalityCoxnet("a", n_alphas=10), "noise": ModalityRSF("noise", n_estimators=30, min_samples_leaf=3)}
    model = LateFusionStacker(spec, inner_folds=4).fit(data)
    assert abs(model.meta_coef_["risk_noise"]) < 0.15 < model.meta_coef_["risk_a"]
    # The same meta-model on in-sample risks would trust the memorising forest.
    in_sample = model.base_risks(data)
    assert cindex(data, in_sample["noise"].to_numpy()) > 0.8
    z = (in_sample - in_sample.median()) / in_sample.std(ddof=0)
    naive = CoxPHFitter(penalizer=0.1).fit(z.assign(T=data.time, E=data.event), "T", "E")
    assert naive.params_["noise"] > 2 * abs(model.meta_coef_["risk_noise"]) + 0.3
    assert cindex(data, model.oof_risk_["noise"].to_numpy()) < 0.6


def test_base_model_specs_instance_factory_and_hydra_config() -> None:
    data, _ = make_toy(200, seed=13)
    specs = {
        "a": ModalityCoxnet("a", n_alphas=5, cv_folds=2),
        "b": functools.partial(ModalityCoxnet, "b", n_alphas=5, cv_folds=2),
        "clinical": {"_target_": "omics_risk.models.baselines.ClinicalCox", "clinical_types": TYPES},
    }
    model = LateFusionStacker(specs, inner_folds=3).fit(data)
    assert model.names_ == ["a", "b", "clinical"]
    assert type(model.fitted_base_["clinical"]).__name__ == "ClinicalCox"
    assert not hasattr(specs["a"], "task_")  # the prototype itself is never fitted
    info = model.describe()
    assert info["base.a.model"] == "coxnet_a" and info["base.clinical._target_"].endswith("ClinicalCox")
    with pytest.raises(TypeError, match="not a SurvivalModel"):
        build_model(lambda: object())  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="_target_"):
        build_model({"modality": "a"})
    with pytest.raises(ValueError, match="meta"):
        LateFusionStacker(specs, meta="xgboost").fit(data)


def test_unfittable_base_model_is_dropped_with_a_warning() -> None:
    data, _ = make_toy(200, seed=14)
    data.present["b"] = False
    data.present.iloc[:8, data.present.columns.get_loc("b")] = True
    with pytest.warns(UserWarning, match="base model 'b' dropped"):
        model = LateFusionStacker(bases(), inner_folds=3).fit(data)
    assert model.names_ == ["clinical", "a"] and "b" in model.dropped_
    assert np.isfinite(model.predict_risk(data)).all()


@pytest.mark.slow
def test_binary_endpoint() -> None:
    data, _ = make_toy(600, seed=17, binary=True, weights=(0.7, 1.0, 1.0))
    train, test = data.subset(np.arange(400)), data.subset(np.arange(400, 600))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LateFusionStacker(bases(), inner_folds=3).fit(train)
        base_auc = {n: roc_auc_score(test.label, b.fit(train).predict_response(test)) for n, b in bases().items()}
    p = model.predict_response(test)
    np.testing.assert_allclose(model.predict_risk(test), 1 - p)
    assert roc_auc_score(test.label, p) > max(base_auc.values()) + 0.03, base_auc
    assert (model.meta_coef_[["risk_clinical", "risk_a", "risk_b"]] < 0).all()  # higher risk, less response
    with pytest.raises(NotImplementedError):
        model.predict_survival(test, np.array([10.0]))


def test_model_present_reads_modality_attributes() -> None:
    data, _ = make_toy(50, seed=16)
    np.testing.assert_array_equal(model_present(ModalityRSF("a"), data), data.present["a"].to_numpy())
    assert model_present(ClinicalCox(), data).all()

    class Multi(ClinicalCox):
        modality = None  # type: ignore[assignment]
        modalities = ("a", "b")

    expected = (data.present["a"] | data.present["b"]).to_numpy()
    np.testing.assert_array_equal(model_present(Multi(), data), expected)
    assert isinstance(data.present, pd.DataFrame)


def test_constant_base_model_is_left_out_of_the_meta_model() -> None:
    class Constant(ClinicalCox):
        """A base model without information: the same risk for everyone."""

        def predict_risk(self, data):  # type: ignore[no-untyped-def, override]
            return np.zeros(len(data))

    data, _ = make_toy(200, seed=17, missing=0.0)
    model = LateFusionStacker(
        {"a": ModalityCoxnet("a", n_alphas=5), "flat": Constant(clinical_types=TYPES)}, inner_folds=3
    ).fit(data)
    assert model.design_columns_ == ["risk_a"] and list(model.meta_coef_.index) == ["risk_a"]
    assert np.isfinite(model.predict_risk(data)).all()


def test_two_base_models_of_one_modality_share_one_missingness_indicator() -> None:
    rng = np.random.default_rng(0)
    oof = rng.normal(size=(40, 4)) * np.array([1.0, 2.0, 3.0, 0.5])
    has_a, has_b = rng.random(40) > 0.3, rng.random(40) > 0.2
    present = np.column_stack([np.ones(40, bool), has_a, has_a, has_b])
    scale, indicators = oof_scales(oof, present, ["clinical", "coxnet_a", "rsf_a", "coxnet_b"])
    # the forest on a has the elastic-net model's missingness pattern: one column, named after the first
    assert indicators == ["coxnet_a", "coxnet_b"]
    np.testing.assert_allclose(scale[2], oof[has_a, 2].std())

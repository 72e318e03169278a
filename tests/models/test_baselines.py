"""Baselines: signal recovery on held-out data, the sign convention, agreement with a direct lifelines fit, no
leakage in alpha selection, training-median risk for missing modalities, binary endpoints, the factory.

``make_toy`` (also imported by test_deepprog / test_stacking) builds a seeded MultimodalData with a known
linear predictor: clinical age + stage, modality ``a`` and ``b`` (five informative features each), ``noise``
(none), ~20% of patients lacking each omics modality.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index as lifelines_cindex
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from omics_risk.data.multimodal import MultimodalData
from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.features.screening import UnivariateCoxSelector
from omics_risk.models.base import SurvivalModel
from omics_risk.models.baselines import BASELINE_DEFAULTS, ClinicalCox, ModalityCoxnet, ModalityRSF, make_baselines

TYPES = {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}, "sex": "categorical"}


def make_toy(
    n: int = 500,
    seed: int = 0,
    *,
    p: int = 30,
    missing: float = 0.2,
    binary: bool = False,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    effect: float = 1.0,
    extra: dict[str, np.ndarray] | None = None,
) -> tuple[MultimodalData, pd.DataFrame]:
    """(data, truth): truth columns ``lp`` (the true linear predictor) and its parts ``clinical``, ``a``, ``b``.

    ``weights``: clinical, a, b contributions; ``extra``: more modalities."""
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"P{i:04d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 8, n)
    stage = rng.choice(["I", "II", "III"], n, p=[0.4, 0.35, 0.25])
    sex = rng.choice(["F", "M"], n)
    clin_lp = (age - 65) / 8 * 0.7 + pd.Series(stage).map({"I": -0.7, "II": 0.0, "III": 0.9}).to_numpy()
    s_a, s_b = rng.normal(size=n), rng.normal(size=n)
    lp = weights[0] * clin_lp + weights[1] * s_a + weights[2] * s_b
    mods, present = {}, {"clinical": np.ones(n, bool)}
    for name, sig in [("a", s_a), ("b", s_b), ("noise", None)]:
        X = rng.normal(size=(n, p))
        if sig is not None:
            X[:, :5] += sig[:, None] * np.array([1.0, 0.8, -0.9, 0.7, -0.6]) * effect
        pres = rng.random(n) > missing
        X[~pres] = np.nan
        X[(rng.random((n, p)) < 0.02) & pres[:, None]] = np.nan  # a few failed features
        mods[name] = pd.DataFrame(X, index=pats, columns=[f"t0__f{j}" for j in range(p)])
        present[name] = pres
    for name, X in (extra or {}).items():
        mods[name] = pd.DataFrame(X, index=pats, columns=[f"t0__x{j}" for j in range(X.shape[1])])
        present[name] = ~np.isnan(X).all(axis=1)
    clin = pd.DataFrame({"age": age, "stage": stage, "sex": sex}, index=pats)
    clin.loc[clin.sample(frac=0.05, random_state=seed).index, "age"] = np.nan
    kw: dict[str, np.ndarray] = {}
    if binary:
        kw["label"] = (rng.random(n) < 1 / (1 + np.exp(lp))).astype(float)  # higher lp = less response
    else:
        t = rng.exponential(365 * np.exp(-lp))
        c = rng.exponential(365 * 3, n)
        kw["time"], kw["event"] = np.minimum(t, c), (t <= c).astype(float)
    data = MultimodalData(
        patients=pats,
        clinical=clin,
        modalities=mods,
        present=pd.DataFrame(present, index=pats),
        endpoint="response" if binary else "rfs",
        **kw,
    )
    truth = pd.DataFrame(
        {"lp": lp, "clinical": weights[0] * clin_lp, "a": weights[1] * s_a, "b": weights[2] * s_b}, index=pats
    )
    return data, truth


def split(data: MultimodalData, n_train: int) -> tuple[MultimodalData, MultimodalData]:
    return data.subset(np.arange(n_train)), data.subset(np.arange(n_train, len(data)))


def cindex(data: MultimodalData, risk: np.ndarray) -> float:
    return float(concordance_index_censored(data.event.astype(bool), data.time, risk)[0])


@pytest.fixture(scope="module")
def toy_truth() -> tuple[MultimodalData, pd.DataFrame]:
    return make_toy(800, seed=1)


@pytest.fixture(scope="module")
def toy(toy_truth) -> tuple[MultimodalData, MultimodalData]:  # type: ignore[no-untyped-def]
    return split(toy_truth[0], N_TRAIN)


@pytest.fixture(scope="module")
def toy_binary() -> tuple[MultimodalData, MultimodalData]:
    data, _ = make_toy(600, seed=2, binary=True)
    return split(data, 400)


N_TRAIN = 500
SIGNAL = {  # model, share of the ceiling's C above 0.5 it must reach (forests fit a linear signal less well)
    "clinical_cox": (lambda: ClinicalCox(clinical_types=TYPES), 0.7),
    "coxnet_clinical": (lambda: ModalityCoxnet("clinical", clinical_types=TYPES, n_alphas=20), 0.7),
    "coxnet_a": (lambda: ModalityCoxnet("a", n_alphas=20), 0.7),
    "rsf_a": (lambda: ModalityRSF("a", n_estimators=60), 0.5),
    "rsf_clinical": (lambda: ModalityRSF("clinical", n_estimators=60, clinical_types=TYPES), 0.5),
}


@pytest.mark.parametrize("name", list(SIGNAL))
def test_recovers_signal_on_held_out_patients(toy, toy_truth, name) -> None:  # type: ignore[no-untyped-def]
    """Held-out C close to the C of the modality's own true contribution to the risk (its ceiling)."""
    factory, share = SIGNAL[name]
    train, test = toy
    model = factory().fit(train)
    risk = model.predict_risk(test)
    assert risk.shape == (len(test),) and np.isfinite(risk).all()
    has = np.flatnonzero(test.present[model.modality].to_numpy())
    ceiling = cindex(test.subset(has), toy_truth[1][model.modality].to_numpy()[N_TRAIN:][has])
    achieved = cindex(test.subset(has), risk[has])
    assert ceiling > 0.65 and achieved > 0.5 + share * (ceiling - 0.5), (achieved, ceiling)
    assert model.fit_seconds_ > 0


@pytest.mark.parametrize(
    "factory",
    [lambda: ModalityCoxnet("noise", n_alphas=20), lambda: ModalityRSF("noise", n_estimators=60)],
    ids=["coxnet", "rsf"],
)
def test_noise_modality_scores_chance(toy, factory) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    risk = factory().fit(train).predict_risk(test)
    assert abs(cindex(test, risk) - 0.5) < 0.07


def test_sign_convention_matches_sksurv_on_the_true_risk() -> None:
    """A model whose only feature is the true risk ranks patients exactly like that risk (higher = riskier)."""
    data, truth = make_toy(300, seed=3)
    lp = truth["lp"].to_numpy()
    data.modalities["oracle"] = pd.DataFrame({"t0__lp": lp}, index=data.patients)
    data.present["oracle"] = True
    data.clinical = pd.DataFrame({"risk": lp}, index=data.patients)
    train, test = split(data, 200)
    expected = cindex(test, lp[200:])
    # lifelines' concordance_index takes predicted *times*: the same ranking needs the negated risk.
    assert lifelines_cindex(test.time, -lp[200:], test.event) == pytest.approx(expected)
    for model in (ClinicalCox(clinical_types={"risk": "numeric"}), ModalityCoxnet("oracle", n_alphas=10)):
        assert cindex(test, model.fit(train).predict_risk(test)) == pytest.approx(expected, abs=1e-12)
    assert cindex(test, ModalityRSF("oracle", n_estimators=50).fit(train).predict_risk(test)) > expected - 0.05


def test_clinical_cox_equals_direct_lifelines_fit(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = ClinicalCox(penalizer=0.1, l1_ratio=0.0, clinical_types=TYPES).fit(train)
    X = ClinicalEncoder(types=TYPES).fit(train.clinical).transform(train.clinical)[model.columns_]
    cph = CoxPHFitter(penalizer=0.1).fit(X.assign(T=train.time, E=train.event), "T", "E")
    np.testing.assert_allclose(model.coef_.to_numpy(), cph.params_.to_numpy(), atol=1e-10)
    assert list(model.coef_.index) == list(cph.params_.index)
    Xt = ClinicalEncoder(types=TYPES).fit(train.clinical).transform(test.clinical)[model.columns_]
    times = np.array([30.0, 365.0, 1000.0])
    np.testing.assert_allclose(
        model.predict_survival(test, times), cph.predict_survival_function(Xt, times=times).to_numpy().T, atol=1e-10
    )
    np.testing.assert_allclose(model.predict_risk(test), cph.predict_log_partial_hazard(Xt).to_numpy(), atol=1e-10)


def test_clinical_cox_collinearity_needs_the_penalizer(toy) -> None:  # type: ignore[no-untyped-def]
    train, _ = toy
    train = train.subset(np.arange(len(train)))
    train.clinical = train.clinical.assign(age_twice=train.clinical["age"] * 2, const=1.0)
    types = {**TYPES, "age_twice": "numeric", "const": "numeric"}
    model = ClinicalCox(clinical_types=types).fit(train)  # penalised: finite, duplicated column shares the weight
    assert np.isfinite(model.coef_).all() and "const" not in model.columns_
    assert model.coef_["age"] == pytest.approx(model.coef_["age_twice"])
    with pytest.raises(RuntimeError, match=r"did not converge|failed to converge"):
        ClinicalCox(penalizer=0.0, clinical_types=types).fit(train)


def test_coxnet_alpha_selection_sees_only_the_training_fold() -> None:
    """Shuffled outcomes: inner-CV C (screening refitted in every inner fold) and held-out C both stay near 0.5,
    while screening 10 of 300 noise features on the whole training fold before the inner CV inflates the inner C."""
    data, _ = make_toy(360, seed=4, p=300, missing=0.0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(data))
    data.time, data.event = data.time[perm], data.event[perm]
    train, test = split(data, 240)
    model = ModalityCoxnet("a", n_alphas=20, max_features=10).fit(train)
    assert model.cv_cindex_ < 0.6
    assert abs(cindex(test, model.predict_risk(test)) - 0.5) < 0.08
    leaky = train.subset(np.arange(len(train)))
    screen = UnivariateCoxSelector(k=10, test="score").fit(train.modalities["a"], train.survival_y())
    leaky.modalities = {"a": train.modalities["a"].loc[:, screen.support_]}
    assert ModalityCoxnet("a", n_alphas=20).fit(leaky).cv_cindex_ > model.cv_cindex_ + 0.05
    # The alphas come from the training fold alone: changing the held-out outcomes changes nothing.
    test2 = test.subset(np.arange(len(test)))
    test2.time = test2.time[::-1].copy()
    again = ModalityCoxnet("a", n_alphas=20, max_features=10).fit(train)
    assert again.alpha_ == model.alpha_
    np.testing.assert_array_equal(again.predict_risk(test2), model.predict_risk(test))


@pytest.mark.parametrize(
    "factory",
    [lambda: ModalityCoxnet("a", n_alphas=20), lambda: ModalityRSF("a", n_estimators=40)],
    ids=["coxnet", "rsf"],
)
def test_missing_modality_gets_training_median(toy, factory) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = factory().fit(train)
    has = train.present["a"].to_numpy()
    own = model.predict_risk(train)[has]
    assert model.risk_median_ == pytest.approx(np.median(own))
    risk = model.predict_risk(test)
    absent = ~test.present["a"].to_numpy()
    assert absent.sum() > 10
    np.testing.assert_array_equal(risk[absent], model.risk_median_)
    assert len(np.unique(risk[~absent])) > 10
    # Survival curves: the training Kaplan-Meier curve for patients lacking the modality; valid curves otherwise.
    times = np.array([0.0, 100.0, 365.0, 5000.0, 1e6])
    surv = model.predict_survival(test, times)
    assert surv.shape == (len(test), len(times)) and np.all((surv >= 0) & (surv <= 1))
    assert np.all(np.diff(surv, axis=1) <= 1e-12)
    assert np.allclose(surv[absent], surv[absent][0]) and surv[0, 0] == 1.0


def test_binary_endpoint(toy_binary) -> None:  # type: ignore[no-untyped-def]
    train, test = toy_binary
    for model in (
        ClinicalCox(clinical_types=TYPES),
        ModalityCoxnet("a", n_alphas=10),
        ModalityRSF("a", n_estimators=60),
    ):
        model.fit(train)
        p = model.predict_response(test)
        risk = model.predict_risk(test)
        assert np.all((p >= 0) & (p <= 1))
        np.testing.assert_allclose(risk, 1 - p)
        has = test.present[model.modality].to_numpy()
        assert roc_auc_score(test.label[has], p[has]) > 0.62, model.name
        with pytest.raises(NotImplementedError):
            model.predict_survival(test, np.array([100.0]))
    with pytest.raises(NotImplementedError):
        ClinicalCox(clinical_types=TYPES).fit(make_toy(100, seed=5)[0]).predict_response(test)


def test_task_mismatch_and_unfitted_errors(toy, toy_binary) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="configured for a binary endpoint"):
        ModalityCoxnet("a", task="binary").fit(toy[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        ModalityRSF("a").predict_risk(toy[1])
    with pytest.raises(KeyError, match="modality 'zzz'"):
        ModalityCoxnet("zzz").fit(toy[0])


def test_clinical_types_inferred_when_not_given(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = ClinicalCox().fit(train)  # stage one-hot instead of ordinal
    assert {"stage_I", "stage_III", "age"} <= set(model.columns_)
    assert cindex(test, model.predict_risk(test)) > 0.6


def test_metabolomics_tables_get_the_metabolomics_chain() -> None:
    rng = np.random.default_rng(6)
    data, truth = make_toy(300, seed=6)
    lp = truth["lp"].to_numpy()
    raw = np.exp(rng.normal(8, 1, (300, 40)) + lp[:, None] * np.r_[np.full(5, 0.5), np.zeros(35)][None, :])
    raw[raw < np.quantile(raw, 0.1)] = np.nan  # below detection
    raw[rng.random(300) < 0.2] = np.nan  # no sample
    data.modalities["metabolomics"] = pd.DataFrame(raw, index=data.patients, columns=[f"t0__m{j}" for j in range(40)])
    data.present["metabolomics"] = ~np.isnan(raw).all(axis=1)
    train, test = split(data, 200)
    model = ModalityCoxnet("metabolomics", n_alphas=10).fit(train)
    assert model.preprocessing_ == "metabolomics" and "metabolomics" in model.pipeline_.named_steps
    assert cindex(test, model.predict_risk(test)) > 0.6


def test_same_seed_same_predictions(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    for factory in (lambda: ModalityCoxnet("b", n_alphas=10), lambda: ModalityRSF("b", n_estimators=30)):
        np.testing.assert_array_equal(factory().fit(train).predict_risk(test), factory().fit(train).predict_risk(test))


def test_make_baselines_names_settings_and_filters() -> None:
    models = make_baselines(["a", "b"], "survival", {"rsf": {"n_estimators": 7}})
    assert set(models) == {
        "clinical_cox",
        "coxnet_clinical",
        "coxnet_a",
        "coxnet_b",
        "rsf_clinical",
        "rsf_a",
        "rsf_b",
        "deepprog",
        "late_fusion",
    }
    assert all(isinstance(m, SurvivalModel) and m.name == k for k, m in models.items())
    assert models["rsf_a"].n_estimators == 7 and models["rsf_a"].min_samples_leaf == 10
    assert models["coxnet_a"].n_alphas == BASELINE_DEFAULTS["coxnet"]["n_alphas"]
    assert set(models["late_fusion"].base_models) == {"clinical", "a", "b"}
    assert models["deepprog"].modalities == ["a", "b"]
    picked = make_baselines(["a"], "binary", {"include": ["clinical_cox", "coxnet"], "exclude": ["coxnet_clinical"]})
    assert set(picked) == {"clinical_cox", "coxnet_a"} and picked["coxnet_a"].task == "binary"
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"coxnet": {"cv_folds": 2}, "late_fusion": {"inner_folds": 3, "base": "rsf"}})
    models = make_baselines(["a"], "survival", cfg)
    assert models["coxnet_a"].cv_folds == 2 and models["late_fusion"].inner_folds == 3
    assert type(models["late_fusion"].base_models["a"]).__name__ == "ModalityRSF"
    with pytest.raises(KeyError, match="unknown baseline setting"):
        make_baselines(["a"], "survival", {"rsf_trees": 3})
    with pytest.raises(ValueError, match="task"):
        make_baselines(["a"], "regression")


def test_describe_is_flat_and_serialisable() -> None:
    import json

    for model in make_baselines(["a"], "survival").values():
        info = model.describe()
        assert info and all(isinstance(v, str | int | float | bool) or v is None for v in info.values())
        json.dumps(info)


def test_too_few_patients_with_the_modality_is_a_clear_error(toy) -> None:  # type: ignore[no-untyped-def]
    train, _ = toy
    train = train.subset(np.arange(len(train)))
    train.present["a"] = False
    train.present.iloc[:5, train.present.columns.get_loc("a")] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="only 5 training patients have modality 'a'"):
            ModalityCoxnet("a").fit(train)


@pytest.mark.slow
def test_fitted_models_pickle_round_trip() -> None:
    """The final model of a run is saved and reloaded for scoring: predictions survive a pickle round trip."""
    import pickle

    data, _ = make_toy(160, seed=21)
    train, test = split(data, 120)
    settings = {
        "clinical_types": TYPES,
        "coxnet": {"n_alphas": 5, "cv_folds": 2},
        "rsf": {"n_estimators": 10},
        "deepprog": {"epochs": 5},
        "late_fusion": {"inner_folds": 2},
    }
    for name, model in make_baselines(["a"], "survival", settings).items():
        model.fit(train)
        again = pickle.loads(pickle.dumps(model))
        np.testing.assert_array_equal(again.predict_risk(test), model.predict_risk(test), err_msg=name)


def test_scoring_tables_are_aligned_to_training_columns_by_name(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = ModalityCoxnet("a", n_alphas=10).fit(train)
    shuffled = test.subset(np.arange(len(test)))
    cols = list(test.modalities["a"].columns)
    shuffled.modalities = {**test.modalities, "a": test.modalities["a"][cols[::-1]]}
    np.testing.assert_array_equal(model.predict_risk(shuffled), model.predict_risk(test))
    shuffled.modalities["a"] = test.modalities["a"].drop(columns=cols[-1]).assign(unknown=1.0)
    assert np.isfinite(model.predict_risk(shuffled)).all()


def test_clinical_cox_retries_with_a_stronger_penalty(toy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stalled Newton-Raphson (e.g. a flat likelihood on shuffled outcomes) is retried with 10x the ridge."""
    from lifelines.exceptions import ConvergenceError

    train, _ = toy
    real_fit = CoxPHFitter.fit

    def stalls_below_one(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.penalizer < 1.0:
            raise ConvergenceError("Convergence halted due to matrix inversion problems.")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(CoxPHFitter, "fit", stalls_below_one)
    with pytest.warns(Warning, match="converged only with penalizer=1"):
        model = ClinicalCox(penalizer=0.1, clinical_types=TYPES).fit(train)
    assert model.penalizer_ == pytest.approx(1.0) and np.isfinite(model.coef_).all()
    monkeypatch.setattr(CoxPHFitter, "fit", lambda self, *a, **k: (_ for _ in ()).throw(ConvergenceError("stuck")))
    with pytest.raises(RuntimeError, match="even with penalizer=10"):
        ClinicalCox(penalizer=0.1, clinical_types=TYPES).fit(train)

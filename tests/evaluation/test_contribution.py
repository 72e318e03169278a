"""Modality ablation and permutation importance on a seeded toy cohort whose signal is known: modality ``sig``
carries most of the linear predictor, ``noise`` none, clinical a little; ``unused`` is read by no model.

Fitted models: a late-fusion stacker (clinical Cox + Coxnet on ``sig`` and on ``noise``) on 250 patients,
evaluated on 150 held-out patients. The noise Coxnet has a fixed small alpha so that it keeps nonzero
coefficients: the stacker really reads ``noise``, and its near-zero ablation drop is measured, not trivial.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import BootstrapSettings, bootstrap_indices
from omics_risk.evaluation.contribution import _permuted, hide_modality, modality_ablation, top_features
from omics_risk.evaluation.metrics import harrell_c, paired_bootstrap_difference, response_auc
from omics_risk.models.baselines import ClinicalCox, ModalityCoxnet
from omics_risk.models.stacking import LateFusionStacker

N_TRAIN = 250
WEIGHTS = np.array([1.0, 0.8, -0.9, 0.7, -0.6])  # the 5 informative features of "sig"


def make_data(n: int = 400, seed: int = 0, *, binary: bool = False) -> MultimodalData:
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"P{i:04d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 8, n)
    stage = rng.choice(["I", "II", "III"], n, p=[0.4, 0.35, 0.25])
    s = rng.normal(size=n)
    lp = 0.3 * (age - 65) / 8 + 1.5 * s
    mods, present = {}, {"clinical": np.ones(n, bool)}
    for name in ("sig", "noise", "unused"):
        X = rng.normal(size=(n, 15))
        if name == "sig":
            X[:, :5] += s[:, None] * WEIGHTS
        pres = rng.random(n) > 0.15
        X[~pres] = np.nan
        mods[name] = pd.DataFrame(X, index=pats, columns=[f"t0__f{j}" for j in range(15)])
        present[name] = pres
    kw: dict[str, np.ndarray] = {}
    if binary:
        kw["label"] = (rng.random(n) < 1 / (1 + np.exp(lp))).astype(float)
    else:
        t = rng.exponential(365 * np.exp(-lp))
        c = rng.exponential(365 * 3, n)
        kw["time"], kw["event"] = np.minimum(t, c), (t <= c).astype(float)
    return MultimodalData(patients=pats, clinical=pd.DataFrame({"age": age, "stage": stage}, index=pats),
                          modalities=mods, present=pd.DataFrame(present, index=pats),
                          endpoint="response" if binary else "rfs", **kw)


TYPES = {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}}


def coxnet(m: str) -> ModalityCoxnet:
    return ModalityCoxnet(m, n_alphas=10, cv_folds=2, clinical_types=TYPES)


@pytest.fixture(scope="module")
def fitted() -> tuple[LateFusionStacker, MultimodalData]:
    data = make_data()
    train, test = data.subset(np.arange(N_TRAIN)), data.subset(np.arange(N_TRAIN, len(data)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LateFusionStacker({"clinical": ClinicalCox(clinical_types=TYPES), "sig": coxnet("sig"),
                                   "noise": ModalityCoxnet("noise", alphas=[0.02], cv_folds=2)},
                                  inner_folds=3).fit(train)
    return model, test


def test_hide_modality_blanks_rows_and_presence(fitted):
    _, test = fitted
    hidden = hide_modality(test, "sig")
    assert hidden.modalities["sig"].isna().all().all()
    assert not hidden.present["sig"].any()
    assert list(hidden.modalities["sig"].columns) == list(test.modalities["sig"].columns)
    assert test.modalities["sig"].notna().any().any() and test.present["sig"].any()  # original untouched
    assert hidden.modalities["noise"] is test.modalities["noise"]  # other tables shared, not copied
    clin = hide_modality(test, "clinical")
    assert clin.clinical.isna().all().all() and not clin.present["clinical"].any()
    with pytest.raises(KeyError, match="not in the data"):
        hide_modality(test, "ct")


def test_ablation_large_for_signal_zero_for_noise(fitted):
    model, test = fitted
    res = modality_ablation(model, test, n_boot=100, seed=3).set_index("modality")
    assert list(res.index) == list(res.sort_values("delta_cindex", ascending=False).index)
    assert set(res.index) == {"clinical", "sig", "noise", "unused"}
    sig, noise, unused = res.loc["sig"], res.loc["noise"], res.loc["unused"]
    assert sig["delta_cindex"] > 0.12 and sig["low"] > 0.05 and sig["p_value"] < 0.05
    assert noise["ablated"] != noise["full"]  # the model does use the noise modality...
    assert abs(noise["delta_cindex"]) < 0.02 and noise["low"] <= 0 <= noise["high"]  # ...but it adds nothing
    assert unused["delta_cindex"] == 0 and unused["low"] == unused["high"] == 0  # the model never reads it
    assert sig["n_present"] == int(test.present["sig"].sum())
    assert (res["metric"] == "harrell_c").all() and (res["n_boot"] == 100).all()


def test_ablation_matches_paired_bootstrap_reference(fitted):
    """Point values from predict_risk on the modified data; CIs identical to metrics.paired_bootstrap_difference
    with the same seed (the same resampled patients)."""
    model, test = fitted
    res = modality_ablation(model, test, modalities=["sig"], n_boot=60, seed=7).iloc[0]
    full = model.predict_risk(test)
    without = model.predict_risk(hide_modality(test, "sig"))
    assert res["full"] == pytest.approx(harrell_c(test.time, test.event, full))
    assert res["ablated"] == pytest.approx(harrell_c(test.time, test.event, without))
    ref, p = paired_bootstrap_difference(test.time, test.event, full, without, n_boot=60, seed=7)
    assert res["delta_cindex"] == pytest.approx(ref.value)
    assert (res["low"], res["high"], res["p_value"]) == pytest.approx((ref.low, ref.high, p))


def test_ablation_draws_the_run_bootstrap(fitted):
    """By default the ablation uses the engine's size (evaluation.bootstrap's default) and its resamples:
    bootstrap_indices(n, size, seed), C of each resample by scikit-survival, full minus ablated."""
    model, test = fitted
    boot = BootstrapSettings(seed=5)
    res = modality_ablation(model, test, modalities=["sig", "noise"], seed=boot.seed).set_index("modality")
    assert (res["n_boot"] == boot.n).all()
    full, without = model.predict_risk(test), model.predict_risk(hide_modality(test, "noise"))
    d = np.array([harrell_c(test.time[i], test.event[i], full[i]) - harrell_c(test.time[i], test.event[i], without[i])
                  for i in bootstrap_indices(len(test), boot.n, boot.seed)])
    assert (res.loc["noise", "low"], res.loc["noise", "high"]) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    assert res.loc["noise", "p_value"] == pytest.approx(2 * min((d <= 0).mean(), (d >= 0).mean()))


def test_ablation_of_clinical_on_clinical_cox_is_chance():
    data = make_data(300, seed=1)
    model = ClinicalCox(clinical_types=TYPES).fit(data.subset(np.arange(200)))
    test = data.subset(np.arange(200, 300))
    res = modality_ablation(model, test, modalities=["clinical", "sig"], n_boot=50).set_index("modality")
    assert res.loc["clinical", "ablated"] == pytest.approx(0.5)  # every patient gets the same imputed score
    assert res.loc["sig", "delta_cindex"] == 0


def test_ablation_binary_endpoint_uses_auc():
    data = make_data(300, seed=2, binary=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = coxnet("sig").fit(data.subset(np.arange(200)))
    test = data.subset(np.arange(200, 300))
    res = modality_ablation(model, test, modalities=["sig", "noise"], n_boot=50).set_index("modality")
    assert (res["metric"] == "response_auc").all()
    assert res.loc["sig", "full"] == pytest.approx(response_auc(test.label, model.predict_response(test)))
    assert res.loc["sig", "ablated"] == pytest.approx(0.5) and res.loc["sig", "delta_cindex"] > 0.15
    assert res.loc["noise", "delta_cindex"] == 0


def test_ablation_rejects_bad_predictions(fitted):
    _, test = fitted
    with pytest.raises(ValueError, match="non-finite"):
        modality_ablation(None, test, predict=lambda d: np.full(len(d), np.nan), n_boot=5)
    with pytest.raises(TypeError, match="predict_risk"):
        modality_ablation(object(), test, n_boot=5)


def test_top_features_ranks_the_informative_features(fitted):
    model, test = fitted
    top = top_features(model, test, n=8, per_modality=6, n_repeats=3, seed=0)
    assert list(top.columns) == ["feature", "modality", "importance", "std", "n_repeats"]
    assert top.attrs["method"] == "permutation" and top.attrs["metric"] == "harrell_c"
    assert "unused" not in top.attrs["candidates"]  # the stacker's base models do not read it
    assert top["importance"].is_monotonic_decreasing
    informative = {f"sig/t0__f{j}" for j in range(5)}
    assert set(top["feature"].head(3)) <= informative
    assert top.loc[top["feature"] == "sig/t0__f0", "importance"].item() > 0.01
    noise = top[top["modality"] == "noise"]["importance"]
    assert (noise.abs() < 0.01).all()


def test_top_features_given_list_and_coefficients(fitted):
    _, test = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = coxnet("sig").fit(make_data().subset(np.arange(N_TRAIN)))
    top = top_features(model, test, features=["sig/t0__f0", ("sig", "t0__f10"), "clinical/age"], n_repeats=2)
    assert top.attrs["candidates"] == "given list" and len(top) == 3
    assert top["feature"].iloc[0] == "sig/t0__f0"
    assert top.set_index("feature").loc["clinical/age", "importance"] == 0  # a sig-only model ignores clinical
    auto = top_features(model, test, n_repeats=1)
    assert auto.attrs["candidates"] == "sig: nonzero coefficients"
    coef = top_features(model, test, method="coefficients")
    assert coef.attrs["method"] == "coefficients" and (coef["importance"] != 0).all()
    assert set(coef["feature"].head(3)) <= {f"sig/t0__f{j}" for j in range(5)}
    with pytest.raises(KeyError, match="column"):
        top_features(model, test, features=["sig/nope"])
    with pytest.raises(ValueError, match="modality/column"):
        top_features(model, test, features=["t0__f0"])
    with pytest.raises(ValueError, match="coef_"):
        top_features(object(), test, method="coefficients")


def test_permutation_keeps_missingness(fitted):
    _, test = fitted
    perm = _permuted(test, "sig", "t0__f0", np.random.default_rng(0))
    before, after = test.modalities["sig"]["t0__f0"], perm.modalities["sig"]["t0__f0"]
    assert (before.isna() == after.isna()).all()
    assert np.allclose(np.sort(before.dropna()), np.sort(after.dropna()))
    assert not np.allclose(before.dropna(), after.dropna())
    assert perm.modalities["sig"]["t0__f1"].equals(before.index.to_series().map(test.modalities["sig"]["t0__f1"]))
    clin = _permuted(test, "clinical", "stage", np.random.default_rng(0))
    assert sorted(clin.clinical["stage"]) == sorted(test.clinical["stage"])

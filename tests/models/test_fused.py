"""FusedSurvivalModel end to end on synthetic data with a known risk, plus its fold-fitted preprocessing.

The synthetic cohort: three omics modalities of 20 features each (3 informative, on arbitrary scales and offsets),
each missing for 20-30% of patients, and noise-only clinical columns. The log hazard is the sum of the modality
signals, survival times are Weibull, censoring is uniform. The *oracle* score is the true log hazard restricted
to the modalities a patient has (the best any model can do with the observed data, since the modalities are
independent and centred).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.fused import CTImageStore, FusedSurvivalModel, breslow_baseline
from omics_risk.models.preprocessing import (
    ModalityPreprocessor,
    UntrustedTypeError,
    infer_clinical_types,
    load_preprocessor,
    save_preprocessor,
)

OMICS = ("cfdna", "methylation", "metabolites")
FAST = {"epochs": 15, "patience": None, "refit": False, "device": "cpu", "num_threads": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: reproducible float sums


def make_data(n: int = 1200, *, p: int = 20, missing: tuple[float, ...] = (0.2, 0.25, 0.3), effect: float = 0.75,
              seed: int = 0, shuffle: bool = False) -> tuple[MultimodalData, np.ndarray]:
    """Synthetic MultimodalData and the oracle score (see module docstring)."""
    rng = np.random.default_rng(seed)
    patients = pd.Index([f"P{i:04d}" for i in range(n)], name="patient_id")
    tables, present, oracle, eta = {}, {}, np.zeros(n), np.zeros(n)
    for j, name in enumerate(OMICS):
        x = rng.normal(size=(n, p))
        beta = np.zeros(p)
        beta[:3] = effect * np.array([1.0, -0.8, 0.6])
        signal = x @ beta
        has = rng.random(n) >= missing[j]
        raw = x * rng.uniform(0.5, 20, p) + rng.normal(0, 5, p)
        raw[~has] = np.nan
        tables[name] = pd.DataFrame(raw, index=patients, columns=[f"postop1__f{k:02d}" for k in range(p)])
        present[name] = has
        eta += signal
        oracle += np.where(has, signal, 0.0)
    clinical = pd.DataFrame({"age": rng.normal(65, 9, n).round(), "sex": rng.choice(["M", "F"], n),
                             "smoker": rng.integers(0, 2, n)}, index=patients)
    t_event = 1000.0 * (-np.log(rng.random(n)) / np.exp(eta)) ** (1 / 1.5)
    t_cens = rng.uniform(300, 3000, n)
    time = np.minimum(t_event, t_cens).round() + 1
    event = (t_event <= t_cens).astype(float)
    if shuffle:
        perm = rng.permutation(n)
        time, event = time[perm], event[perm]
    response = np.where(rng.random(n) < 0.1, np.nan, (oracle + rng.normal(0, 1, n) < 0).astype(float))
    data = MultimodalData(patients=patients, clinical=clinical, modalities=tables,
                          present=pd.DataFrame({"clinical": True, **present}, index=patients),
                          time=time, event=event, endpoint="rfs", extra_labels={"response": response})
    return data, oracle


def cindex(risk: np.ndarray, data: MultimodalData) -> float:
    return float(concordance_index_censored(data.event.astype(bool), data.time, risk)[0])


def single_modality_cox(train: MultimodalData, test: MultimodalData, modality: str) -> np.ndarray:
    """Ridge Cox on one modality (standardised on training patients that have it; others get the median)."""
    x, has = train.modalities[modality], train.present[modality].to_numpy()
    mu, sd = x[has].mean(), x[has].std()
    cox = CoxPHSurvivalAnalysis(alpha=1.0).fit(((x[has] - mu) / sd).to_numpy(), train.survival_y()[has])
    median = float(np.median(cox.predict(((x[has] - mu) / sd).to_numpy())))
    risk = cox.predict(((test.modalities[modality].fillna(mu) - mu) / sd).to_numpy())
    return np.where(test.present[modality].to_numpy(), risk, median)


@pytest.fixture(scope="module")
def cohort() -> tuple[MultimodalData, np.ndarray]:
    return make_data(seed=0)


@pytest.fixture(scope="module")
def small(cohort) -> MultimodalData:
    return cohort[0].subset(np.arange(240))


@pytest.fixture(scope="module")
def small_model(small) -> FusedSurvivalModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FusedSurvivalModel(fusion="gated_attention", seed=3, **FAST).fit(small.subset(np.arange(200)))


# ------------------------------------------------------------------------------------------------ quality bar
@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "gated_attention"])
def test_fused_model_approaches_the_oracle_and_beats_every_single_modality(cohort, fusion):
    data, oracle = cohort
    train, test = data.subset(np.arange(600)), data.subset(np.arange(600, 1200))
    model = FusedSurvivalModel(fusion=fusion, device="cpu", seed=0, num_threads=1).fit(train)
    c_fused = cindex(model.predict_risk(test), test)
    c_oracle = cindex(oracle[600:], test)
    c_single = {m: cindex(single_modality_cox(train, test, m), test) for m in OMICS}
    assert c_oracle - c_fused <= 0.03, (c_oracle, c_fused)
    assert all(c_fused - c >= 0.03 for c in c_single.values()), (c_fused, c_single)


@pytest.mark.slow
def test_shuffled_outcomes_give_chance_concordance():
    data, _ = make_data(seed=0, shuffle=True)
    train, test = data.subset(np.arange(600)), data.subset(np.arange(600, 1200))
    model = FusedSurvivalModel(device="cpu", seed=0, num_threads=1).fit(train)
    assert abs(cindex(model.predict_risk(test), test) - 0.5) <= 0.05


def test_same_seed_gives_bit_identical_cpu_runs(small):
    train, test = small.subset(np.arange(160)), small.subset(np.arange(160, 240))
    runs = []
    for _ in range(2):
        model = FusedSurvivalModel(fusion="gated_attention", modality_dropout=0.3, dropout=0.3, hidden=[8],
                                   seed=11, **{**FAST, "refit": True, "epochs": 8})
        model.fit(train)
        history = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in model.history_]
        runs.append((model.predict_risk(test), history, model.network_.state_dict()))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert all(torch.equal(runs[0][2][k], runs[1][2][k]) for k in runs[0][2])


# ------------------------------------------------------------------------------------------------ predictions
def test_predictions_survival_and_attention(small_model, small):
    test = small.subset(np.arange(200, 240))
    risk = small_model.predict_risk(test)
    assert risk.shape == (40,) and np.isfinite(risk).all()
    times = np.array([0.0, 200.0, 500.0, 1000.0, 5000.0])
    surv = small_model.predict_survival(test, times)
    assert surv.shape == (40, 5) and np.all((surv > 0) & (surv <= 1))
    assert np.allclose(surv[:, 0], 1.0) and np.all(np.diff(surv, axis=1) <= 1e-12)
    assert np.all(np.diff(surv[np.argsort(risk), 3]) <= 1e-12)  # higher risk, lower survival
    att = small_model.attention(test)
    assert list(att.index) == small_model.modalities_ == ["clinical", *OMICS]
    assert att.sum() == pytest.approx(1.0)
    per = small_model.attention(test, per_patient=True)
    for m in OMICS:
        assert (per.loc[~test.present[m].to_numpy(), m] == 0).all()
    assert len(small_model.history_) == 15 and {"train/loss", "val/loss", "val/cindex"} <= set(small_model.history_[0])


def test_breslow_baseline_reproduces_kaplan_meier_on_average(small_model, small):
    train = small.subset(np.arange(200))
    times = np.array([300.0, 700.0, 1200.0])
    mean_surv = small_model.predict_survival(train, times).mean(axis=0)
    km_t, km_s = kaplan_meier_estimator(train.event.astype(bool), train.time)
    km = km_s[np.searchsorted(km_t, times, side="right") - 1]
    assert np.allclose(mean_surv, km, atol=0.05)
    # Without covariates Breslow is the Nelson-Aalen estimator.
    t = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    e = np.array([1, 1, 0, 1, 0])
    times_, cumhaz = breslow_baseline(np.zeros(5), t, e)
    assert times_.tolist() == [1.0, 2.0, 3.0]
    assert cumhaz == pytest.approx(np.cumsum([1 / 5, 1 / 4, 1 / 2]))


def test_patients_without_any_input_get_the_training_median(small_model, small):
    test = small.subset(np.arange(200, 210))
    present = test.present.copy()
    present.iloc[:3] = False
    tables = {m: t.copy() for m, t in test.modalities.items()}
    for t in tables.values():
        t.iloc[:3] = np.nan
    blank = MultimodalData(patients=test.patients, clinical=test.clinical, modalities=tables, present=present,
                           time=test.time, event=test.event)
    risk = small_model.predict_risk(blank)
    assert np.all(risk[:3] == small_model.train_median_risk_)
    assert np.array_equal(risk[3:], small_model.predict_risk(test)[3:])
    # A modality table missing altogether at scoring time: warned, treated as absent for everyone.
    partial = MultimodalData(patients=test.patients, clinical=test.clinical,
                             modalities={m: test.modalities[m] for m in OMICS[:2]}, present=test.present)
    with pytest.warns(UserWarning, match="metabolites"):
        assert np.isfinite(small_model.predict_risk(partial)).all()


def test_joint_cox_discrete_and_binary_heads(small):
    train, test = small.subset(np.arange(200)), small.subset(np.arange(200, 240))
    model = FusedSurvivalModel(heads=["cox", "discrete", "binary"], response_label="response", n_intervals=5,
                               seed=0, **{**FAST, "epochs": 40})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
    assert {"train/cox", "train/discrete", "train/binary"} <= set(model.history_[0])
    p = model.predict_response(test)
    assert p.shape == (40,) and np.all((p > 0) & (p < 1))
    lab = test.extra_labels["response"]
    ok = np.isfinite(lab)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(lab[ok], p[ok]) > 0.65
    assert len(model.cuts_) == 6 and model.cuts_[0] == 0
    discrete_only = FusedSurvivalModel(heads=["discrete"], n_intervals=5, seed=0, **{**FAST, "epochs": 40})
    discrete_only.fit(train)
    s = discrete_only.predict_survival(test, np.array([0.0, 500.0, 1500.0]))
    assert np.allclose(s[:, 0], 1.0) and np.all(np.diff(s, axis=1) <= 0)
    assert cindex(discrete_only.predict_risk(test), test) > 0.6


def test_binary_endpoint_model(small):
    data = small.subset(np.arange(200))
    binary = MultimodalData(patients=data.patients, clinical=data.clinical, modalities=data.modalities,
                            present=data.present, label=data.extra_labels["response"], endpoint="response")
    with pytest.raises(ValueError, match="survival endpoint"):
        FusedSurvivalModel(**FAST).fit(binary)
    model = FusedSurvivalModel(heads=["binary"], seed=0, **FAST).fit(binary)
    p = model.predict_response(binary)
    assert np.allclose(model.predict_risk(binary), -np.log(p / (1 - p)), atol=1e-5)
    with pytest.raises(NotImplementedError):
        model.predict_survival(binary, np.array([100.0]))


# ------------------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip(small_model, small, tmp_path):
    test = small.subset(np.arange(200, 240))
    out = small_model.save(tmp_path / "model")
    assert {p.name for p in out.iterdir()} == {"config.json", "fitted.json", "weights.pt", "preprocessing"}
    assert sorted(p.name for p in (out / "preprocessing").iterdir()) == sorted(f"{m}.skops"
                                                                               for m in small_model.modalities_)
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["fusion"] == "gated_attention" and config["modalities"] == small_model.modalities_
    manifest = config["feature_manifest"]["cfdna"]
    assert manifest["columns_in"] == list(small.modalities["cfdna"].columns)
    assert manifest["features_out"] == small_model.preprocessors_["cfdna"].features_out_
    assert config["network"]["modalities"]["cfdna"]["in_features"] == len(manifest["features_out"])
    torch.load(out / "weights.pt", weights_only=True)  # plain tensors only
    loaded = FusedSurvivalModel.load(out)
    times = np.array([100.0, 900.0])
    assert np.array_equal(loaded.predict_risk(test), small_model.predict_risk(test))
    assert np.array_equal(loaded.predict_survival(test, times), small_model.predict_survival(test, times))
    assert loaded.history_ == json.loads(json.dumps(small_model.history_))


class Smuggled:
    """A type outside the trusted modules."""


def test_loading_refuses_untrusted_types(tmp_path):
    pp = ModalityPreprocessor(k=None).fit(pd.DataFrame({"a": [1.0, 2.0, 3.0] * 4, "b": [0.0, 1.0, 5.0] * 4}))
    pp.extra_ = Smuggled()
    save_preprocessor(pp, tmp_path / "p.skops")
    with pytest.raises(UntrustedTypeError, match="Smuggled"):
        load_preprocessor(tmp_path / "p.skops")


def test_settings_accept_hydra_containers():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"heads": ["cox"], "hidden": [16], "preprocessing": {"cfdna": {"k": 8}}})
    model = FusedSurvivalModel(**cfg)
    params = model.get_params()
    assert params["hidden"] == [16] and params["preprocessing"] == {"cfdna": {"k": 8}}
    json.dumps(params)
    assert model.describe()["preprocessing.cfdna.k"] == 8
    with pytest.raises(ValueError, match="heads"):
        FusedSurvivalModel(heads=["weibull"])


# ---------------------------------------------------------------------------------------------- preprocessing
def test_modality_preprocessor_fits_on_present_training_patients():
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=(n, 30))
    frame = pd.DataFrame(x * 10 + 3, columns=[f"t__f{i}" for i in range(30)])
    frame["t__const"] = 7.0
    frame["t__empty"] = np.nan
    frame["t__copy"] = frame["t__f1"] * 2 + 1
    frame.iloc[5, 3] = np.nan  # a hole to impute
    frame.iloc[:20] = np.nan  # 20 patients lack the modality
    t = rng.exponential(1 / np.exp(1.5 * x[:, 0] - 1.5 * x[:, 1]))
    y = Surv.from_arrays(np.ones(n, bool), t)
    pp = ModalityPreprocessor(k=5, max_correlation=0.95).fit(frame, y)
    assert "t__const" not in pp.features_out_ and "t__empty" not in pp.features_out_
    assert "t__copy" not in pp.features_out_  # collinear with t__f1
    assert {"t__f0", "t__f1"} <= set(pp.features_out_) and len(pp.features_out_) == 5
    values, present = pp.transform(frame)
    assert values.dtype == np.float32 and values.shape == (n, 5)
    assert not present[:20].any() and present[20:].all() and not values[:20].any()
    assert values[20:].mean(axis=0) == pytest.approx(np.zeros(5), abs=1e-5)
    assert values[20:].std(axis=0) == pytest.approx(np.ones(5), abs=1e-4)
    with pytest.warns(UserWarning, match="absent"):
        v2, _ = pp.transform(frame.drop(columns=["t__f0"]))
    filled = v2[20:, pp.features_out_.index("t__f0")]
    assert np.all(filled == filled[0]) and abs(filled[0]) < 0.5  # the training median, scaled
    with pytest.raises(ValueError, match="min_patients"):
        ModalityPreprocessor().fit(frame.iloc[:25], y[:25])


def test_clinical_and_metabolomics_kinds():
    rng = np.random.default_rng(1)
    n = 60
    clinical = pd.DataFrame({"age": rng.normal(60, 9, n), "sex": rng.choice(["M", "F"], n),
                             "egfr": rng.integers(0, 2, n), "stage": rng.choice(["I", "II", "III"], n)})
    assert infer_clinical_types(clinical) == {"age": "numeric", "sex": "categorical", "egfr": "binary",
                                              "stage": "categorical"}
    pp = ModalityPreprocessor(kind="clinical", k=None,
                              clinical_types={"age": "numeric", "sex": "categorical", "egfr": "binary",
                                              "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}})
    values, present = pp.fit(clinical).transform(clinical)
    assert present.all() and pp.features_out_ == ["age", "stage", "sex_F", "sex_M", "egfr"]
    assert np.allclose(values[:, 1], (clinical["stage"].map({"I": 0, "II": 1, "III": 2}) - 1).to_numpy()
                       / clinical["stage"].map({"I": 0, "II": 1, "III": 2}).std(ddof=0), atol=0.2)
    intensities = pd.DataFrame(np.exp(rng.normal(10, 1, (n, 25))), columns=[f"plasma__m{i}" for i in range(25)])
    intensities[intensities < np.exp(9)] = np.nan  # below detection
    intensities.iloc[:6] = np.nan  # no sample
    pm = ModalityPreprocessor(kind="metabolomics", k=None, metabolomics={"max_missing": 0.3})
    values, present = pm.fit(intensities).transform(intensities)
    assert present.sum() == n - 6 and np.isfinite(values).all()
    kept = intensities.iloc[6:].isna().mean() <= 0.3
    assert pm.features_out_ == list(kept[kept].index)


def test_preprocessor_round_trips_through_skops(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(40, 6)), columns=list("abcdef"))
    y = Surv.from_arrays(rng.integers(0, 2, 40).astype(bool), rng.exponential(10, 40))
    pp = ModalityPreprocessor(k=3, max_correlation=0.9).fit(frame, y)
    back = load_preprocessor(save_preprocessor(pp, tmp_path / "x.skops"))
    assert np.array_equal(back.transform(frame)[0], pp.transform(frame)[0])


# -------------------------------------------------------------------------------------------------- CT images
def _images(data: MultimodalData, seed: int = 0) -> dict[str, torch.Tensor]:
    """(T=2, C=1, 8, 8, 8) crops whose brightness follows the patient's cfDNA signal; some patients lack CT."""
    rng = np.random.default_rng(seed)
    x = data.modalities["cfdna"].fillna(0).to_numpy()[:, 0]
    out = {}
    for i, pid in enumerate(data.patients):
        if i % 5 == 0:
            continue  # no CT
        vol = torch.from_numpy(rng.random((2, 1, 8, 8, 8)).astype(np.float32)) + float(x[i]) / 20
        if i % 3 == 0:
            vol[1] = float("nan")  # postop scan missing
        out[pid] = vol
    return out


def test_ct_images_through_the_resnet_encoder(small, tmp_path):
    train, test = small.subset(np.arange(64)), small.subset(np.arange(200, 216))
    images = _images(small)
    settings = {**FAST, "epochs": 2, "batch_size": 16, "use_ct_images": True, "modalities": ["cfdna"],
                "ct_widths": [4, 4, 8, 8], "ct_embed_dim": 8, "cox_momentum_steps": 2, "seed": 0}
    model = FusedSurvivalModel(**settings).fit(train, images=images)
    assert model.modalities_ == ["clinical", "cfdna", "ct"] and model.image_shape_ == [1, 8, 8, 8]
    risk = model.predict_risk(test)
    assert np.isfinite(risk).all()
    # A callable provider and per-timepoint mappings give the same scores.
    as_dicts = {pid: {"preop": v[0], "postop1": v[1] if torch.isfinite(v[1]).all() else None}
                for pid, v in images.items()}
    assert np.allclose(model.predict_risk(test, images=lambda pid: as_dicts.get(pid)), risk, atol=1e-6)
    with pytest.warns(UserWarning, match="without CT"):
        no_ct = FusedSurvivalModel.load(model.save(tmp_path / "ct")).predict_risk(test)
    assert np.isfinite(no_ct).all()
    assert np.allclose(FusedSurvivalModel.load(tmp_path / "ct").predict_risk(test, images=images), risk, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        model.predict_risk(test, images={pid: torch.zeros(3, 1, 8, 8, 8) for pid in test.patients})


def test_ct_augmentation_flips_space_only():
    x = torch.arange(2 * 2 * 2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 2, 2, 4, 4, 4)
    out = FusedSurvivalModel._augment(x, torch.Generator().manual_seed(0))
    assert not torch.equal(out, x)
    for b in range(2):  # every (patient, timepoint, channel) keeps its own voxels, possibly mirrored
        for t in range(2):
            for c in range(2):
                assert torch.equal(out[b, t, c].flatten().sort().values, x[b, t, c].flatten().sort().values)


def test_ct_image_store_reads_the_cohort_scans(valid_cohort: Path):
    from omics_risk.data.contract import load_cohort

    store = CTImageStore(load_cohort(valid_cohort), cfg={"roi_size": [8, 8, 8], "pixdim": [2.0, 2.0, 2.0]})
    assert sorted(store) == ["P01", "P02", "P03", "P04"]
    scan = store["P01"]["preop"]
    assert tuple(scan.shape) == (1, 8, 8, 8) and scan.dtype == torch.float32
    assert float(scan.min()) >= 0.0 and float(scan.max()) <= 1.0
    assert store["P01"] is store["P01"]  # kept in memory
    with pytest.raises(KeyError):
        store["P05"]


# ------------------------------------------------------------------------------------------------ ensembles
def test_ensemble_averages_independently_trained_members(small, tmp_path):
    from omics_risk.models.multimodal import EnsembleNet

    train, test = small.subset(np.arange(160)), small.subset(np.arange(160, 240))
    settings = {**FAST, "refit": True, "epochs": 6}
    ensemble = FusedSurvivalModel(seed=5, n_members=3, **settings).fit(train)
    assert isinstance(ensemble.network_, EnsembleNet) and len(ensemble.network_.members) == 3
    assert len(ensemble.member_best_epochs_) == 3
    assert {k.split("/")[0] for h in ensemble.history_ for k in h if k != "epoch"} == {"member0", "member1",
                                                                                       "member2"}
    # Member i is exactly the single model trained with seed 5 + i, and the ensemble risk is their mean.
    singles = [FusedSurvivalModel(seed=5 + i, **settings).fit(train).predict_risk(test) for i in range(3)]
    np.testing.assert_allclose(ensemble.predict_risk(test), np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(singles[0], singles[1])
    loaded = FusedSurvivalModel.load(ensemble.save(tmp_path / "ensemble"))
    assert np.array_equal(loaded.predict_risk(test), ensemble.predict_risk(test))
    torch.load(tmp_path / "ensemble" / "weights.pt", weights_only=True)


def test_ensemble_needs_shared_preprocessing():
    with pytest.raises(ValueError, match="refit=True or validation_fraction=0"):
        FusedSurvivalModel(n_members=2, refit=False, validation_fraction=0.2)
    with pytest.raises(ValueError, match="n_members must be >= 1"):
        FusedSurvivalModel(n_members=0)
    FusedSurvivalModel(n_members=2, refit=False, validation_fraction=0.0)

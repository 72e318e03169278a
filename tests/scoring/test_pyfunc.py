"""Scoring frames, the JSON reference Cox model and the MLflow pyfunc: logged to a temporary SQLite store,
registered with an alias, loaded by ``models:/name@alias`` and checked against the in-memory model; the signature,
statelessness when pickled, pinned requirements and the class allow-list against a tampered model directory."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelCapabilities, capabilities_of
from omics_risk.scoring.frames import FeatureManifest, from_frame, to_frame
from omics_risk.scoring.pyfunc import (
    OmicsRiskPyfunc,
    UntrustedModelClassError,
    input_schema,
    load_saved_model,
    load_scoring_model,
    log_model,
    model_manifest,
    pinned_requirements,
    privacy_safe_example,
    resolve_model_class,
    score,
)
from omics_risk.scoring.reference_model import LinearRiskModel
from omics_risk.tracking.mlflow_utils import setup_experiment

TYPES = {
    "age": "numeric",
    "sex": "categorical",
    "stage": {"type": "ordinal", "levels": ["IA", "IB", "IIA", "IIB", "IIIA"]},
    "egfr_mutant": "binary",
}
COLUMNS = ["clinical/age", "clinical/sex", "clinical/stage", "cfdna/postop1__tf", "ct/preop__volume"]
HORIZONS = [365.0, 730.0]


def make_data(n: int = 120, seed: int = 0) -> MultimodalData:
    """Seeded cohort: risk rises with age, stage and cfDNA tumour fraction; ~30% lack CT, ~20% lack cfDNA."""
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"PT{i:04d}" for i in range(n)], name="patient_id")
    clinical = pd.DataFrame(
        {
            "age": rng.normal(65, 8, n).round(),
            "sex": rng.choice(["M", "F"], n, p=[0.6, 0.4]),
            "stage": rng.choice(["IA", "IB", "IIA", "IIIA"], n),
            "egfr_mutant": rng.integers(0, 2, n).astype(float),
        },
        index=pats,
    )
    clinical.iloc[3, 0] = np.nan
    ct = pd.DataFrame(rng.normal(size=(n, 3)), index=pats, columns=["preop__volume", "preop__glcm", "postop1__volume"])
    cf = pd.DataFrame(rng.normal(size=(n, 2)), index=pats, columns=["postop1__tf", "postop1__short"])
    has_ct, has_cf = rng.random(n) > 0.3, rng.random(n) > 0.2
    ct[~has_ct] = np.nan
    cf[~has_cf] = np.nan
    stage_code = clinical["stage"].map({"IA": 0, "IB": 1, "IIA": 2, "IIIA": 4}).to_numpy()
    lp = 0.04 * (clinical["age"].fillna(65).to_numpy() - 65) + 0.3 * stage_code + 0.9 * np.nan_to_num(cf["postop1__tf"])
    t_event = rng.exponential(900 * np.exp(-lp))
    t_censor = rng.exponential(1500, n)
    present = pd.DataFrame({"clinical": True, "ct": has_ct, "cfdna": has_cf}, index=pats)
    return MultimodalData(
        patients=pats,
        clinical=clinical,
        modalities={"ct": ct, "cfdna": cf},
        present=present,
        time=np.minimum(t_event, t_censor).round(1),
        event=(t_event <= t_censor).astype(float),
        endpoint="rfs",
    )


def without(data: MultimodalData, modality: str) -> MultimodalData:
    """``data`` with every patient lacking ``modality``."""
    mods = {m: (t * np.nan if m == modality else t) for m, t in data.modalities.items()}
    present = data.present.copy()
    present[modality] = False
    return MultimodalData(data.patients, data.clinical, mods, present, data.time, data.event, endpoint=data.endpoint)


@pytest.fixture(scope="module")
def data() -> MultimodalData:
    return make_data()


@pytest.fixture(scope="module")
def model(data: MultimodalData) -> LinearRiskModel:
    return LinearRiskModel(COLUMNS, clinical_types=TYPES, alpha=0.01).fit(data)


# --- frames -------------------------------------------------------------------------------------------------------
def test_frame_round_trip(data: MultimodalData) -> None:
    frame = to_frame(data)
    assert list(frame.columns[:5]) == [
        "patient_id",
        "clinical/age",
        "clinical/sex",
        "clinical/stage",
        "clinical/egfr_mutant",
    ]
    assert "ct/preop__volume" in frame and "cfdna/postop1__tf" in frame and len(frame) == len(data)
    manifest = FeatureManifest.from_data(data, TYPES)
    assert manifest.clinical == {"age": "double", "sex": "string", "stage": "string", "egfr_mutant": "double"}
    assert FeatureManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    back = from_frame(frame, manifest)
    pd.testing.assert_index_equal(back.patients, data.patients)
    pd.testing.assert_frame_equal(back.clinical, data.clinical, check_dtype=False)
    for m in data.modalities:
        pd.testing.assert_frame_equal(back.modalities[m], data.modalities[m])
    pd.testing.assert_frame_equal(back.present, data.present, check_dtype=False)


def test_from_frame_allows_a_modality_missing_in_whole_or_part(data: MultimodalData) -> None:
    manifest = FeatureManifest.from_data(data, TYPES)
    frame = to_frame(data)
    no_ct = from_frame(frame.drop(columns=[c for c in frame if c.startswith("ct/")]), manifest)
    assert not no_ct.present["ct"].any() and no_ct.modalities["ct"].isna().all().all()
    assert list(no_ct.modalities["ct"].columns) == list(data.modalities["ct"].columns)
    with pytest.warns(UserWarning, match=r"'ct': 2 of the model's 3 .*ct/preop__glcm, ct/postop1__volume"):
        part = from_frame(frame.drop(columns=["ct/preop__glcm", "ct/postop1__volume"]), manifest)
    assert part.modalities["ct"][["preop__glcm", "postop1__volume"]].isna().all().all()  # imputed by the model
    pd.testing.assert_series_equal(part.modalities["ct"]["preop__volume"], data.modalities["ct"]["preop__volume"])
    with pytest.raises(ValueError, match="clinical/stage"):
        from_frame(frame.drop(columns=["clinical/stage"]), manifest)
    with pytest.warns(UserWarning, match="ignoring 1 column.*ct/new_feature"):
        from_frame(frame.assign(**{"ct/new_feature": 1.0}), manifest)


def test_from_frame_coerces_types_and_names_bad_columns(data: MultimodalData) -> None:
    manifest = FeatureManifest.from_data(data, TYPES)
    frame = to_frame(data).head(4).astype({"cfdna/postop1__tf": object})
    frame["cfdna/postop1__tf"] = ["0.5", None, 1, "2e-1"]
    frame["clinical/age"] = frame["clinical/age"].astype(object)
    frame["clinical/sex"] = [1, "F", None, "M"]
    out = from_frame(frame, manifest)
    assert out.modalities["cfdna"]["postop1__tf"].tolist()[0] == 0.5
    assert np.isnan(out.modalities["cfdna"]["postop1__tf"].iloc[1])
    assert out.clinical["sex"].tolist()[:2] == ["1", "F"] and pd.isna(out.clinical["sex"].iloc[2])
    frame["ct/preop__glcm"] = ["x", "0.1", "0.2", "0.3"]
    with pytest.raises(ValueError, match=r"column 'ct/preop__glcm' must hold numbers; found 'x'"):
        from_frame(frame, manifest)
    with pytest.raises(ValueError, match="unique"):
        from_frame(pd.concat([to_frame(data).head(2)] * 2), manifest)
    with pytest.raises(ValueError, match="no 'patient_id' column"):
        from_frame(to_frame(data).drop(columns=["patient_id"]), manifest)


def test_manifest_reads_the_fused_model_form() -> None:
    fused = {
        "clinical": {"kind": "clinical", "columns_in": ["age", "stage"], "features_out": ["age", "stage"]},
        "cfdna": {"kind": "tabular", "columns_in": ["postop1__tf"], "features_out": ["postop1__tf"]},
        "ct": {"kind": "ct_images", "timepoints": ["preop"]},
    }
    manifest = FeatureManifest.from_dict(fused, {"age": "numeric", "stage": {"type": "ordinal"}})
    assert manifest == FeatureManifest({"age": "double", "stage": "string"}, {"cfdna": ("postop1__tf",)}, ("ct",))


# --- the reference model ------------------------------------------------------------------------------------------
def test_linear_model_matches_lifelines_and_survives_json(data: MultimodalData, tmp_path: Path) -> None:
    m = LinearRiskModel(["clinical/age", "clinical/sex", "cfdna/postop1__tf"], clinical_types=TYPES, alpha=0.0)
    m.fit(data)
    # the same design built independently: median imputation, standardisation, indicator of the non-reference sex
    age = data.clinical["age"].fillna(data.clinical["age"].median())
    tf = data.modalities["cfdna"]["postop1__tf"]
    tf = tf.fillna(tf.median())
    design = pd.DataFrame(
        {
            "clinical/age": (age - age.mean()) / age.std(ddof=0),
            "clinical/sex=F": (data.clinical["sex"] == "F").astype(float),
            "cfdna/postop1__tf": (tf - tf.mean()) / tf.std(ddof=0),
        }
    )
    cph = CoxPHFitter(penalizer=0.0).fit(design.assign(T=data.time, E=data.event), "T", "E")
    pd.testing.assert_series_equal(m.coefficients(), cph.params_.rename("log_hr"), check_names=False, atol=1e-4)
    assert m.coefficients()["cfdna/postop1__tf"] > 0.3  # the simulated effect is recovered
    # Breslow survival at event times (lifelines interpolates between them, so compare where both are exact)
    at = np.sort(data.time[data.event == 1])[[10, 30, 50]]
    s_ref = cph.predict_survival_function(design, times=at).T.to_numpy()
    np.testing.assert_allclose(m.predict_survival(data, at), s_ref, atol=1e-4)
    m.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["class"] == "omics_risk.scoring.reference_model.LinearRiskModel"
    back = LinearRiskModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict_risk(data), m.predict_risk(data))
    np.testing.assert_array_equal(
        back.predict_survival(data, np.array(HORIZONS)), m.predict_survival(data, np.array(HORIZONS))
    )


def test_linear_model_scores_patients_without_inputs_at_the_training_median(data: MultimodalData) -> None:
    m = LinearRiskModel(["cfdna/postop1__tf"]).fit(data)
    risk = m.predict_risk(data)
    lacking = ~data.present["cfdna"].to_numpy()
    assert lacking.any() and np.isfinite(risk).all()
    assert np.all(risk[lacking] == m.train_median_risk_)
    tf = data.modalities["cfdna"]["postop1__tf"]
    z = tf.fillna(tf.median())
    z = (z - z.mean()) / z.std(ddof=0)
    assert m.train_median_risk_ == pytest.approx(np.median(m.coef_[0] * z))
    np.testing.assert_allclose(risk[~lacking], m.coef_[0] * z[~lacking], rtol=1e-12)


# --- pyfunc -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, model: LinearRiskModel, data: MultimodalData
) -> dict:
    """The reference model logged once, registered as ``omics_risk_test`` with alias ``champion``."""
    root = tmp_path_factory.mktemp("mlflow")
    shutil.copy(mlflow_template_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    setup_experiment("scoring-test", uri)
    with mlflow.start_run() as run:
        info = log_model(
            model,
            horizons=HORIZONS,
            input_example_frame=to_frame(data),
            registered_model_name="omics_risk_test",
            alias="champion",
        )
    return {"uri": uri, "info": info, "run_id": run.info.run_id, "root": root}


@pytest.fixture
def tracking(logged: dict) -> dict:
    mlflow.set_tracking_uri(logged["uri"])
    return logged


@pytest.mark.slow
def test_registered_alias_scores_like_the_in_memory_model(
    tracking: dict, model: LinearRiskModel, data: MultimodalData
) -> None:
    info = tracking["info"]
    assert info.registered_model_version == 1
    mv = MlflowClient().get_model_version_by_alias("omics_risk_test", "champion")
    assert int(mv.version) == 1
    scorer = load_scoring_model("models:/omics_risk_test@champion")
    frame = to_frame(data)
    out = scorer.predict(frame)
    assert list(out.columns) == ["patient_id", "risk_score", "surv_365d", "surv_730d", "modalities_used"]
    assert out["patient_id"].tolist() == data.patients.tolist()
    np.testing.assert_allclose(out["risk_score"], model.predict_risk(data), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        out[["surv_365d", "surv_730d"]], model.predict_survival(data, np.array(HORIZONS)), rtol=0, atol=1e-6
    )
    expected = [
        "clinical" + (",cfdna" if cf else "") + (",ct" if ct else "")
        for cf, ct in zip(data.present["cfdna"], data.present["ct"], strict=True)
    ]
    # manifest order of the model's columns: clinical, then cfdna, then ct
    assert out["modalities_used"].tolist() == expected
    assert (~data.present["ct"]).any() and (~data.present["cfdna"]).any()
    # a cohort without CT at all (columns left out) scores like the model on data lacking CT
    no_ct = scorer.predict(frame.drop(columns=[c for c in frame if c.startswith("ct/")]))
    np.testing.assert_allclose(no_ct["risk_score"], model.predict_risk(without(data, "ct")), rtol=0, atol=1e-6)
    assert not no_ct["modalities_used"].str.contains("ct").any()
    # the run URI and params: other horizons, small chunks
    by_run = load_scoring_model(f"runs:/{tracking['run_id']}/model")
    out2 = by_run.predict(frame, params={"horizons": [100.0, 1095.0], "chunk_size": 7})
    assert list(out2.columns[2:4]) == ["surv_100d", "surv_1095d"]
    np.testing.assert_allclose(out2["risk_score"], out["risk_score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out2["surv_1095d"], model.predict_survival(data, np.array([1095.0]))[:, 0], atol=1e-6)


@pytest.mark.slow
def test_signature_marks_modalities_optional(tracking: dict, model: LinearRiskModel, data: MultimodalData) -> None:
    scorer = load_scoring_model("models:/omics_risk_test@champion")
    schema = scorer.metadata.get_input_schema()
    required = {c.name: c.required for c in schema.inputs}
    assert required == {
        "patient_id": True,
        "clinical/age": True,
        "clinical/sex": True,
        "clinical/stage": True,
        "cfdna/postop1__tf": False,
        "ct/preop__volume": False,
    }
    params = {p.name: p.default for p in scorer.metadata.get_params_schema().params}
    assert params == {"horizons": HORIZONS, "chunk_size": 1024}
    frame = to_frame(data)[["patient_id", "clinical/age", "clinical/sex", "clinical/stage"]]
    only_clinical = scorer.predict(frame)  # every optional column left out
    assert set(only_clinical["modalities_used"]) == {"clinical"}
    with pytest.raises(MlflowException, match="clinical/stage"):
        scorer.predict(frame.drop(columns=["clinical/stage"]))
    # an input example that belongs to no patient
    local = Path(mlflow.artifacts.download_artifacts(tracking["info"].model_uri, dst_path=str(tracking["root"] / "ex")))
    example = json.loads((local / "input_example.json").read_text())
    ids = [row[example["columns"].index("patient_id")] for row in example["data"]]
    assert ids == ["example-1", "example-2", "example-3"]


def test_privacy_safe_example_uses_medians_and_presence(model: LinearRiskModel, data: MultimodalData) -> None:
    ex = privacy_safe_example(to_frame(data), model.feature_manifest, n=4)
    assert ex["patient_id"].tolist() == ["example-1", "example-2", "example-3", "example-4"]
    assert (ex["clinical/age"] == data.clinical["age"].median()).all()
    assert (ex["clinical/sex"] == "M").all()
    tf = ex["cfdna/postop1__tf"].to_numpy()
    has = data.present["cfdna"].to_numpy()[:4]
    np.testing.assert_array_equal(np.isnan(tf), ~has)
    assert np.allclose(tf[has], data.modalities["cfdna"]["postop1__tf"].median())


@pytest.mark.slow
def test_logged_model_is_stateless_pickle_with_pinned_requirements(tracking: dict) -> None:
    local = Path(mlflow.artifacts.download_artifacts(tracking["info"].model_uri, dst_path=str(tracking["root"] / "a")))
    pkl = (local / "python_model.pkl").read_bytes()
    assert len(pkl) < 2000 and b"coef" not in pkl
    assert cloudpickle.loads(pkl).__dict__ == {}
    reqs = (local / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in reqs or any(r.startswith("torch==") and "+" not in r for r in reqs)
    assert f"mlflow=={mlflow.__version__}" in reqs
    assert {r.split("==")[0] for r in reqs} >= {"torch", "scikit-survival", "pandas", "numpy", "mlflow"}
    assert (local / "code" / "omics_risk" / "scoring" / "pyfunc.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    # after load_context the wrapper holds the model, but pickling it still carries nothing
    loaded = mlflow.pyfunc.load_model(str(local)).unwrap_python_model()
    assert hasattr(loaded, "_model")
    assert pickle.loads(pickle.dumps(loaded)).__dict__ == {}


@pytest.mark.slow
def test_tampered_model_class_is_refused(tracking: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    local = Path(mlflow.artifacts.download_artifacts(tracking["info"].model_uri, dst_path=str(tmp_path / "m")))
    cfg_path = local / "artifacts" / "model_dir" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["class"] = "os.system"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UntrustedModelClassError, match="not under omics_risk"):
        mlflow.pyfunc.load_model(str(local))
    with pytest.raises(UntrustedModelClassError):
        load_saved_model(cfg_path.parent)
    assert calls == []


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "builtins.eval",
        "omics_risk_evil.Model",
        "omics_risk.scoring.pyfunc.Path",
        "omics_risk.data.contract.yaml",
        "omics_risk.models.base.SurvivalModel.fit",
        "omics_risk",
        42,
        "omics_risk.scoring.pyfunc:OmicsRiskPyfunc",
        "omics_risk.does_not_exist.Model",
    ],
)
def test_class_allow_list(name: object) -> None:
    with pytest.raises(UntrustedModelClassError):
        resolve_model_class(name)


def test_class_allow_list_accepts_package_models() -> None:
    assert resolve_model_class("omics_risk.scoring.reference_model.LinearRiskModel") is LinearRiskModel


def test_pyfunc_needs_load_context_and_pins_requirements(model: LinearRiskModel, data: MultimodalData) -> None:
    py = OmicsRiskPyfunc()
    with pytest.raises(RuntimeError, match="load_context"):
        py.predict(None, to_frame(data))
    with pytest.warns(UserWarning, match="surely-not-installed-pkg is not installed"):
        reqs = pinned_requirements(["torch", "numpy", "surely-not-installed-pkg"])
    assert reqs == [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    schema = input_schema(model.feature_manifest)
    assert [c.name for c in schema.inputs][:2] == ["patient_id", "clinical/age"]


@pytest.mark.filterwarnings("ignore:ignoring 4 column")
def test_score_without_mlflow_in_chunks(model: LinearRiskModel, data: MultimodalData) -> None:
    frame = to_frame(data)
    whole = score(model, frame, horizons=HORIZONS, chunk_size=10_000)
    chunked = score(model, frame, horizons=HORIZONS, chunk_size=16)
    pd.testing.assert_frame_equal(whole, chunked)
    assert "response_prob" not in whole
    no_surv = score(model, frame, horizons=())
    assert list(no_surv.columns) == ["patient_id", "risk_score", "modalities_used"]
    with pytest.raises(ValueError, match="positive"):
        score(model, frame, horizons=[-1.0])


@pytest.mark.slow
def test_fused_model_scores_through_the_pyfunc_path(
    data: MultimodalData, tmp_path: Path, mlflow_template_db: Path
) -> None:
    fused_mod = pytest.importorskip("omics_risk.models.fused", reason="omics_risk.models.fused is not available")
    rng = np.random.default_rng(1)
    train = MultimodalData(
        data.patients,
        data.clinical,
        data.modalities,
        data.present,
        data.time,
        data.event,
        endpoint="rfs",
        extra_labels={"response": (rng.random(len(data)) > 0.5).astype(float)},
    )
    fused = fused_mod.FusedSurvivalModel(
        epochs=3,
        patience=None,
        validation_fraction=0.0,
        hidden=(8,),
        embed_dim=4,
        fusion_dim=4,
        fusion_hidden=4,
        k=None,
        device="cpu",
        heads=("cox", "binary"),
        response_label="response",
        clinical_types=TYPES,
        seed=0,
    ).fit(train)
    manifest = model_manifest(fused)
    assert manifest.clinical["stage"] == "string" and manifest.clinical["age"] == "double"
    fused.save(tmp_path / "fused")
    loaded = load_saved_model(tmp_path / "fused")
    assert type(loaded) is fused_mod.FusedSurvivalModel
    out = score(loaded, to_frame(data), horizons=HORIZONS, chunk_size=50)
    np.testing.assert_allclose(out["risk_score"], fused.predict_risk(data), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["response_prob"], fused.predict_response(data), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        out[["surv_365d", "surv_730d"]], fused.predict_survival(data, np.array(HORIZONS)), rtol=0, atol=1e-6
    )
    # and through MLflow: weights (weights_only), skops preprocessors and the manifest rebuilt in load_context
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    setup_experiment("fused", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        log_model(fused, name="fused", horizons=HORIZONS, input_example_frame=to_frame(data))
    logged = load_scoring_model(f"runs:/{run.info.run_id}/fused").predict(to_frame(data))
    pd.testing.assert_frame_equal(logged, out, check_exact=False, atol=1e-6, rtol=0)


def test_score_asks_only_for_what_the_model_declares(model: LinearRiskModel, data: MultimodalData) -> None:
    """score() reads capabilities_of(model): the reference model declares survival only, and a model declaring
    no survival gets no survival columns even though it has a predict_survival method (never called)."""
    assert capabilities_of(model) == ModelCapabilities(survival=True)
    frame = to_frame(data)
    full = score(model, frame, horizons=(365.0,))
    assert list(full.columns) == ["patient_id", "risk_score", "surv_365d", "modalities_used"]

    class RiskOnly(LinearRiskModel):
        def capabilities(self) -> ModelCapabilities:
            return ModelCapabilities()

        def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
            raise AssertionError("predict_survival of a model that declares no survival")

    risk_only = RiskOnly.__new__(RiskOnly)
    risk_only.__dict__.update(model.__dict__)
    out = score(risk_only, frame, horizons=(365.0,))
    assert list(out.columns) == ["patient_id", "risk_score", "modalities_used"]
    np.testing.assert_array_equal(out["risk_score"].to_numpy(), full["risk_score"].to_numpy())

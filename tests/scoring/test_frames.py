"""The flat scoring frame of a new cohort: ``to_frame(data, manifest)`` emits exactly the model's columns in its
schema's types (whole numbers from CSV as float64, features the cohort's QC dropped as NaN), ``from_frame`` accepts a
modality given in part (imputed, with a warning) and rejects what is unusable, and a logged MLflow pyfunc scores
``to_frame``'s output of such a cohort with no reindexing or casting by the user."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.scoring.frames import FeatureManifest, from_frame, to_frame
from omics_risk.scoring.reference_model import LinearRiskModel

TYPES = {
    "age": "numeric",
    "sex": "categorical",
    "stage": {"type": "ordinal", "levels": ["I", "II", "III"]},
    "egfr": "binary",
}
METABOLITES = [f"preop__m{i}" for i in range(1, 5)]
COLUMNS = ["clinical/age", "clinical/stage", "cfdna/postop1__tf", "metabolomics/preop__m1", "metabolomics/preop__m2"]


def make_cohort(n: int = 80, seed: int = 0) -> MultimodalData:
    """Clinical columns typed as the data contract reads them (whole-number ``age`` and 0/1 ``egfr`` as int64),
    cfDNA (~80% of patients) and a metabolite panel (~70%); risk rises with age, stage, tf and m1."""
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"N{i:03d}" for i in range(n)], name="patient_id")
    clinical = pd.DataFrame(
        {
            "age": pd.to_numeric(pd.Series(rng.integers(45, 85, n).astype(str), index=pats)),  # int64, as from CSV
            "sex": rng.choice(["M", "F"], n),
            "stage": rng.choice(["I", "II", "III"], n),
            "egfr": rng.integers(0, 2, n),
        },
        index=pats,
    )
    cf = pd.DataFrame(rng.normal(size=(n, 2)), index=pats, columns=["postop1__tf", "postop1__short"])
    met = pd.DataFrame(rng.normal(size=(n, len(METABOLITES))), index=pats, columns=METABOLITES)
    has_cf, has_met = rng.random(n) < 0.8, rng.random(n) < 0.7
    has_cf[:2] = has_met[:2] = True
    cf[~has_cf] = np.nan
    met[~has_met] = np.nan
    code = clinical["stage"].map({"I": 0, "II": 1, "III": 2}).to_numpy()
    lp = 0.04 * (clinical["age"].to_numpy() - 65) + 0.5 * code + 0.8 * np.nan_to_num(cf["postop1__tf"].to_numpy())
    lp = lp + 0.5 * np.nan_to_num(met["preop__m1"].to_numpy())
    t_event, t_cens = rng.exponential(900 * np.exp(-lp)), rng.exponential(1500, n)
    present = pd.DataFrame({"clinical": True, "cfdna": has_cf, "metabolomics": has_met}, index=pats)
    return MultimodalData(pats, clinical, {"cfdna": cf, "metabolomics": met}, present,
                          time=np.minimum(t_event, t_cens).round(1), event=(t_event <= t_cens).astype(float),
                          endpoint="rfs")


def new_cohort(seed: int = 5) -> MultimodalData:
    """A new cohort as it arrives: its QC dropped metabolite m2, it has an RPPA panel and a clinical column the model
    does not use."""
    data = make_cohort(30, seed)
    pats = data.patients
    rppa = pd.DataFrame({"baseline__AKT": np.linspace(-1, 1, len(pats))}, index=pats)
    clinical = data.clinical.assign(smoking=np.where(np.arange(len(pats)) % 2 == 0, "current", "never"))
    metabolomics = data.modalities["metabolomics"].drop(columns="preop__m2")
    mods = {"cfdna": data.modalities["cfdna"], "metabolomics": metabolomics, "rppa": rppa}
    present = data.present.assign(rppa=True)
    return MultimodalData(pats, clinical, mods, present, data.time, data.event, endpoint="rfs")


def with_m2_missing(data: MultimodalData) -> MultimodalData:
    """``data`` with metabolite m2 missing for everybody: what the model sees when a cohort lacks it."""
    met = data.modalities["metabolomics"].reindex(columns=METABOLITES)
    return MultimodalData(data.patients, data.clinical, {**data.modalities, "metabolomics": met}, data.present,
                          data.time, data.event, endpoint=data.endpoint)


@pytest.fixture(scope="module")
def model() -> LinearRiskModel:
    return LinearRiskModel(COLUMNS, clinical_types=TYPES, alpha=0.01).fit(make_cohort())


# --- to_frame -----------------------------------------------------------------------------------------------------
def test_to_frame_without_manifest_keeps_every_column_with_numbers_as_float64() -> None:
    data = make_cohort(12)
    assert data.clinical["age"].dtype == np.int64 and data.clinical["egfr"].dtype == np.int64
    frame = to_frame(data)
    assert list(frame.columns) == ["patient_id", *data.frame().columns]
    assert frame["patient_id"].tolist() == data.patients.tolist()
    assert frame["clinical/age"].dtype == np.float64 and frame["clinical/egfr"].dtype == np.float64
    assert frame["clinical/sex"].dtype == object and frame["clinical/sex"].tolist() == data.clinical["sex"].tolist()
    assert (frame.drop(columns=["patient_id", "clinical/sex", "clinical/stage"]).dtypes == np.float64).all()
    np.testing.assert_array_equal(frame["clinical/age"].to_numpy(), data.clinical["age"].to_numpy(dtype=float))
    np.testing.assert_array_equal(frame["metabolomics/preop__m3"].to_numpy(),
                                  data.modalities["metabolomics"]["preop__m3"].to_numpy())


def test_to_frame_with_manifest_emits_exactly_the_model_columns(model: LinearRiskModel) -> None:
    manifest = model.feature_manifest
    new = new_cohort()
    with pytest.warns(UserWarning, match=r"modality 'metabolomics': 1 of the model's 2 feature column\(s\) are "
                                         r"missing from the data \(metabolomics/preop__m2\)") as caught:
        frame = to_frame(new, manifest)
    assert len(caught) == 1
    assert list(frame.columns) == manifest.columns() == ["patient_id", *COLUMNS]
    assert frame.dtypes.to_dict() == {"patient_id": object, "clinical/age": np.float64, "clinical/stage": object,
                                      "cfdna/postop1__tf": np.float64, "metabolomics/preop__m1": np.float64,
                                      "metabolomics/preop__m2": np.float64}
    assert frame["metabolomics/preop__m2"].isna().all()
    np.testing.assert_array_equal(frame["clinical/age"], new.clinical["age"].to_numpy(dtype=float))
    np.testing.assert_array_equal(frame["metabolomics/preop__m1"], new.modalities["metabolomics"]["preop__m1"])
    assert frame["clinical/stage"].tolist() == new.clinical["stage"].tolist()
    # the same frame comes back through from_frame without a further warning, and scores as the model on the data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = from_frame(frame, manifest)
    np.testing.assert_allclose(model.predict_risk(back), model.predict_risk(with_m2_missing(new)), rtol=0, atol=1e-12)


def test_to_frame_fills_a_modality_the_cohort_lacks_and_rejects_a_missing_clinical_column(
    model: LinearRiskModel,
) -> None:
    data = make_cohort(10)
    no_cfdna = MultimodalData(data.patients, data.clinical, {"metabolomics": data.modalities["metabolomics"]},
                              data.present.drop(columns="cfdna"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole modality absent (a cohort without cfDNA) is no warning
        frame = to_frame(no_cfdna, model.feature_manifest)
    assert frame["cfdna/postop1__tf"].isna().all() and frame["cfdna/postop1__tf"].dtype == np.float64
    no_stage = MultimodalData(data.patients, data.clinical.drop(columns="stage"), data.modalities, data.present)
    with pytest.raises(ValueError, match=r"lacks clinical column\(s\) the model needs: stage; add them"):
        to_frame(no_stage, model.feature_manifest)


def test_to_frame_types_clinical_values_as_the_manifest_says() -> None:
    pats = pd.Index(["a", "b", "c", "d"], name="patient_id")
    clinical = pd.DataFrame({"grade": [1, 2, np.nan, 3.0], "smoker": [True, False, True, False],
                             "age": ["61", "70", None, "55"]}, index=pats)
    data = MultimodalData(pats, clinical, {}, pd.DataFrame({"clinical": True}, index=pats))
    manifest = FeatureManifest({"grade": "string", "smoker": "double", "age": "double"}, {})
    frame = to_frame(data, manifest)
    assert frame["clinical/grade"].dtype == object
    assert frame["clinical/grade"].tolist()[:2] == ["1", "2"] and frame["clinical/grade"].iloc[3] == "3"
    assert pd.isna(frame["clinical/grade"].iloc[2])
    assert frame["clinical/smoker"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert frame["clinical/age"].dtype == np.float64 and frame["clinical/age"].iloc[0] == 61.0
    bad = MultimodalData(pats, clinical.assign(age=["61", "old", None, "55"]), {}, data.present)
    with pytest.raises(ValueError, match=r"column 'clinical/age' must hold numbers; found 'old'"):
        to_frame(bad, manifest)


# --- from_frame ---------------------------------------------------------------------------------------------------
def test_from_frame_completes_a_partial_modality_with_a_warning_naming_the_first_columns() -> None:
    feats = tuple(f"preop__m{i}" for i in range(10))
    manifest = FeatureManifest({"age": "double"}, {"metabolomics": feats})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "clinical/age": [60, 70, 80]})
    for f in feats:
        frame[f"metabolomics/{f}"] = rng.normal(size=3)
    frame.loc[2, [f"metabolomics/{f}" for f in feats[:3]]] = np.nan  # p3 has values only in dropped columns
    kept = [f"metabolomics/{f}" for f in feats[:3]]
    with pytest.warns(UserWarning, match=r"modality 'metabolomics': 7 of the model's 10 feature column\(s\) are "
                                         r"missing from the scoring frame \(metabolomics/preop__m3, "
                                         r"metabolomics/preop__m4, .*metabolomics/preop__m7 and 2 more\)") as caught:
        data = from_frame(frame[["patient_id", "clinical/age", *kept]], manifest)
    assert len(caught) == 1
    block = data.modalities["metabolomics"]
    assert list(block.columns) == list(feats) and block.iloc[:, 3:].isna().all().all()
    np.testing.assert_array_equal(block.iloc[:2, :3].to_numpy(), frame[kept].iloc[:2].to_numpy())
    assert data.present["metabolomics"].tolist() == [True, True, False]
    assert data.clinical["age"].dtype == np.float64


def test_from_frame_ignores_unknown_columns_once_and_rejects_what_is_unusable() -> None:
    manifest = FeatureManifest({"age": "double", "stage": "string"}, {"cfdna": ("postop1__tf",)})
    frame = pd.DataFrame({"patient_id": ["p1", "p2"], "clinical/age": [60.0, 71.0], "clinical/stage": ["I", None],
                          "cfdna/postop1__tf": [0.1, np.nan], "rppa/baseline__AKT": [1.0, 2.0], "notes": ["x", "y"]})
    with pytest.warns(UserWarning, match=r"ignoring 2 column\(s\) the model does not use: rppa/baseline__AKT, notes"
                      ) as caught:
        data = from_frame(frame, manifest)
    assert len(caught) == 1 and data.present["cfdna"].tolist() == [True, False]
    known = frame[manifest.columns()]
    with pytest.raises(ValueError, match="no 'patient_id' column"):
        from_frame(known.drop(columns="patient_id"), manifest)
    with pytest.raises(ValueError, match=r"lacks 1 clinical column\(s\) the model needs: clinical/stage\. .*empty "
                                         "column"):
        from_frame(known.drop(columns="clinical/stage"), manifest)


# --- the manifest of a logged model -------------------------------------------------------------------------------
def test_manifest_reads_back_from_the_input_schema(model: LinearRiskModel) -> None:
    from mlflow.types import ColSpec, Schema

    from omics_risk.scoring.pyfunc import input_schema

    manifest = model.feature_manifest
    schema = input_schema(manifest)
    assert FeatureManifest.from_schema(schema) == manifest
    assert FeatureManifest.of(schema) == manifest and FeatureManifest.of(manifest) is manifest
    assert FeatureManifest.of(model) == manifest and FeatureManifest.of(manifest.to_dict()) == manifest
    wide = FeatureManifest({"age": "double", "sex": "string"}, {"ct": ("preop__a", "preop__b"), "cfdna": ("x",)})
    assert FeatureManifest.from_schema(input_schema(wide)) == wide
    with pytest.raises(ValueError, match="no 'patient_id' column"):
        FeatureManifest.from_schema(Schema([ColSpec("double", "clinical/age")]))
    with pytest.raises(ValueError, match="'height' is not 'clinical/<column>'"):
        FeatureManifest.from_schema(Schema([ColSpec("string", "patient_id"), ColSpec("double", "height")]))
    with pytest.raises(TypeError, match="cannot read a feature manifest from int"):
        FeatureManifest.of(42)


# --- through MLflow -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_logged_pyfunc_scores_to_frame_of_a_new_cohort_as_is(
    model: LinearRiskModel, tmp_path: Path, mlflow_template_db: Path
) -> None:
    from omics_risk.scoring.pyfunc import log_model
    from omics_risk.tracking.mlflow_utils import setup_experiment

    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    setup_experiment("frames", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run():
        info = log_model(model, horizons=[365.0], input_example_frame=to_frame(make_cohort()))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert FeatureManifest.of(loaded) == model.feature_manifest
    new = new_cohort()
    assert new.clinical["age"].dtype == np.int64  # what MLflow refuses for a double column
    expected = model.predict_risk(with_m2_missing(new))
    with pytest.warns(UserWarning, match="preop__m2"):
        frame = to_frame(new, FeatureManifest.of(loaded))
    out = loaded.predict(frame)
    assert out["patient_id"].tolist() == new.patients.tolist()
    np.testing.assert_allclose(out["risk_score"], expected, rtol=0, atol=1e-9)
    assert out["surv_365d"].between(0, 1).all()
    # without the manifest too: MLflow drops the columns the model does not use, from_frame completes metabolomics
    with pytest.warns(UserWarning, match=r"modality 'metabolomics': 1 of the model's 2 .*preop__m2"):
        plain = loaded.predict(to_frame(new))
    pd.testing.assert_frame_equal(plain, out)

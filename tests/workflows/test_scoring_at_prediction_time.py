"""Scoring and external validation at the model's prediction time (issue 16): a model trained with
``task.prediction_time`` records it, ``omics-risk score`` builds a new cohort's inputs at that time (a sample after it
changes nothing, a patient without a prediction day gets a row saying so, ``prediction_day`` per patient), and
``evaluate.py mode=external`` counts the risk set and outcome times from it.

The cohort is the tiny synthetic nsclc-advanced one of the one-path tests (ctDNA before every cycle, RECIST visits).
The logged model of a training run (``task=pfs``: ``{at: index}``) checks the pipeline end to end; transparent Cox
models (``LinearRiskModel``) fitted on ``model_inputs`` at other prediction times check the rest in seconds.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

# the tiny nsclc-advanced cohort of the one-path tests (same folder)
from test_inputs import ROOT, SERIAL, TINY, _extracted_copy

from omics_risk.data.contract import load_cohort
from omics_risk.data.synthetic import generate_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features.clinical import clinical_types
from omics_risk.scoring.frames import to_frame
from omics_risk.scoring.loading import BatchModel, load_batch_model
from omics_risk.scoring.pyfunc import log_model
from omics_risk.scoring.reference_model import LinearRiskModel
from omics_risk.scoring.settings import scoring_settings
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.external import validate_external
from omics_risk.workflows.inputs import model_inputs
from omics_risk.workflows.scoring import score_cohort

DAY90 = PredictionTime(at="day", day=90.0)
AT_C3 = PredictionTime(at="timepoint", timepoint="c3")
COLUMNS = ["clinical/age", "clinical/ecog", "recist/baseline__sld_mm", "ctdna/c1__ctdna_log10_mean_vaf"]


@pytest.fixture(scope="module")
def advanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("score_pt")
    src = generate_cohort("nsclc-advanced", n=30, seed=3, out=base / "src", **TINY)
    return _extracted_copy(src, base / "cohort")


def _linear(root: Path, pt: PredictionTime | None, columns: list[str] = COLUMNS,
            longitudinal: dict | None = None) -> SimpleNamespace:
    """A Cox model fitted on the cohort's inputs at ``pt``, with the settings log_model stores for it."""
    inputs = model_inputs(load_cohort(root), root / "features", extract=False, endpoint="pfs", modalities=SERIAL,
                          prediction_time=pt, longitudinal=longitudinal)
    model = LinearRiskModel(columns, clinical_types=clinical_types(load_cohort(root).spec), alpha=0.1)
    model.fit(inputs.data)
    derived = {f"{m}_dynamics": m for m in longitudinal or {}}
    settings = scoring_settings(model, to_frame(inputs.data), horizons=[180.0], feature_store=root / "features",
                                training_cohort=root, prediction_time=pt, longitudinal=longitudinal,
                                derived_inputs=derived)
    return SimpleNamespace(model=model, inputs=inputs, settings=settings, batch=BatchModel.from_model(model, settings))


def _score(bm: object, root: Path, out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score_cohort(bm, root, out / "scores.csv", workers=1, progress=False)  # type: ignore[arg-type]
    return pd.read_csv(out / "scores.csv", dtype={"patient_id": str}).set_index("patient_id")


def _samples(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "samples.csv", dtype={"patient_id": str})


# ------------------------------------------------------------------------------------------------ the logged model
@pytest.fixture(scope="module")
def trained(advanced: Path, tmp_path_factory: pytest.TempPathFactory,
            mlflow_template_db: Path) -> SimpleNamespace:
    """A tracked training run with ``task=pfs`` (``{at: index}``): its final model, registered and loaded."""
    base = tmp_path_factory.mktemp("score_pt_run")
    shutil.copy(mlflow_template_db, base / "mlflow.db")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={base}", f"paths.output_dir={base / 'run'}", f"tracking.uri={uri}",
            "tracking.log_folds=false", "training.progress=false", "extract.run=false", "debug=fast",
            "baselines=none", "data=cohort", f"data.root={advanced}", f"data.modalities=[{','.join(SERIAL)}]",
            "task=pfs", "model.estimator.epochs=2", "training.final_model=true", "evaluation.report.enabled=false",
            # the network alone reads every input: on 30 patients the fused super learner keeps only its clinical
            # backbone, and a moved ctDNA draw would change nothing to show
            "model=fused_network", "model.name=fused"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.train(cfg)
    mu.clear_protected_identifiers()
    mlflow.set_tracking_uri(uri)
    summary = json.loads((base / "run" / "summary.json").read_text())
    registered = f"models:/{summary['registered_model']}@{summary['alias']}"
    return SimpleNamespace(uri=registered, tracking_uri=uri, summary=summary, base=base,
                           batch=load_batch_model(registered, progress=False))


def test_the_logged_model_records_the_runs_prediction_time(trained: SimpleNamespace) -> None:
    assert trained.summary["prediction_time"]["describe"] == "the index date (day 0)"
    settings = trained.batch.settings
    assert settings["prediction_time"] == {"config": {"at": "index"}, "describe": "the index date (day 0)"}
    assert trained.batch.prediction_time == PredictionTime(at="index")
    assert "longitudinal" not in settings and "derived_inputs" not in settings  # task=pfs has none


def test_a_sample_moved_after_the_prediction_time_scores_as_if_removed(trained: SimpleNamespace, advanced: Path,
                                                                       tmp_path: Path) -> None:
    samples = _samples(advanced)
    c1 = samples[(samples["modality"] == "ctdna") & (samples["day"] == 0)]
    pid, sid = c1["patient_id"].iloc[0], c1["sample_id"].iloc[0]

    def moved(root: Path) -> None:  # the day-0 draw dated day 5, after the prediction time
        s = _samples(root)
        s.loc[s["sample_id"] == sid, "day"] = 5
        s.to_csv(root / "samples.csv", index=False)

    def removed(root: Path) -> None:
        s = _samples(root)
        s[s["sample_id"] != sid].to_csv(root / "samples.csv", index=False)

    got = {}
    for name, edit in (("original", None), ("moved", moved), ("removed", removed)):
        root = Path(shutil.copytree(advanced, tmp_path / name, ignore=shutil.ignore_patterns("features")))
        if edit is not None:
            edit(root)
        got[name] = _score(trained.batch, root, tmp_path / f"out_{name}")
    pd.testing.assert_frame_equal(got["moved"], got["removed"])
    assert got["moved"].loc[pid, "risk_score"] != got["original"].loc[pid, "risk_score"]  # the draw was an input
    others = got["original"].index != pid
    pd.testing.assert_frame_equal(got["moved"][others], got["original"][others])
    assert len(got["original"]) == 30 and (got["original"]["prediction_day"] == 0).all()
    assert "ctdna" not in got["moved"].loc[pid, "modalities_used"].split(",")
    assert "no sample in the model's slots at or before the prediction day (0)" in got["moved"].loc[pid, "reason"]


def test_external_validation_at_the_logged_prediction_time(trained: SimpleNamespace, advanced: Path,
                                                           tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate_external(trained.uri, advanced, output_dir=tmp_path, extract=False, n_boot=20,
                                   contribution=False, top_features=False, slow_metrics=False,
                                   tracking_uri=trained.tracking_uri, log_to_mlflow=False)
    mu.clear_protected_identifiers()
    clinical = pd.read_csv(advanced / "clinical.csv")
    n_at_risk = int((clinical["pfs_time"] > 0).sum())
    want = {"describe": "the index date (day 0)", "n_at_risk": n_at_risk, "n_left_out": 30 - n_at_risk,
            "n_without_timepoint": 0}
    assert json.loads((tmp_path / "summary.json").read_text())["prediction_time"] == want == result.prediction_time
    assert "predicting at the index date (day 0)" in result.to_text()


# ------------------------------------------------------------------------------------------ other prediction times
def test_a_patient_without_the_models_timepoint_gets_a_row_saying_so(advanced: Path, tmp_path: Path) -> None:
    fit = _linear(advanced, AT_C3, ["clinical/age", "ctdna/c3__ctdna_log10_mean_vaf"])
    assert fit.settings["prediction_time"] == {"config": {"at": "timepoint", "timepoint": "c3"},
                                               "describe": "each patient's latest 'c3' sample"}
    scores = _score(fit.batch, advanced, tmp_path)
    samples = _samples(advanced)
    c3 = samples[samples["timepoint"] == "c3"].groupby("patient_id")["day"].max()
    lacking = sorted(set(scores.index) - set(c3.index))
    assert lacking and len(scores) == 30  # every patient has a row
    for pid in lacking:
        row = scores.loc[pid]
        assert row["status"] == "failed" and np.isnan(row["risk_score"]) and np.isnan(row["prediction_day"])
        assert row["reason"].startswith("no prediction day: the model predicts at each patient's latest 'c3' sample")
    have = scores.drop(index=lacking)
    np.testing.assert_array_equal(have["prediction_day"], c3.reindex(have.index).to_numpy(dtype=float))
    assert have["status"].isin(["ok", "partial"]).all() and np.isfinite(have["risk_score"]).all()
    # the scores are the model's on the inputs training builds at c3, every patient kept (none "not at risk")
    data = model_inputs(load_cohort(advanced), advanced / "features", extract=False, endpoint="pfs",
                        modalities=SERIAL, prediction_time=AT_C3, drop_unlabelled=False).data
    risk = pd.Series(fit.model.predict_risk(data), index=data.patients.astype(str))
    np.testing.assert_allclose(have["risk_score"], risk.reindex(have.index), rtol=1e-12)
    report = json.loads((tmp_path / "scores.csv.report.json").read_text())
    assert report["prediction_time"] == "each patient's latest 'c3' sample"
    assert any(f"{len(lacking)} patient(s) have no 'c3' sample" in w for w in report["warnings"])


def test_a_model_with_longitudinal_inputs_scores_their_state_at_the_prediction_time(advanced: Path,
                                                                                    tmp_path: Path) -> None:
    lon = {"ctdna": [{"feature": "ctdna_mean_vaf", "detection_limit": 0.001}]}
    cols = ["clinical/age", "ctdna_dynamics/ctdna_mean_vaf__last", "ctdna_dynamics/ctdna_mean_vaf__n_draws"]
    fit = _linear(advanced, DAY90, cols, lon)
    assert fit.settings["derived_inputs"] == {"ctdna_dynamics": "ctdna"} and fit.settings["longitudinal"] == lon
    assert "ctdna" in fit.settings["extraction"]  # the source modality's extractors, for the new cohort
    scores = _score(fit.batch, advanced, tmp_path)
    assert len(scores) == 30 and (scores["prediction_day"] == 90).all()
    data = model_inputs(load_cohort(advanced), advanced / "features", extract=False, endpoint="pfs",
                        modalities=SERIAL, prediction_time=DAY90, longitudinal=lon, drop_unlabelled=False).data
    risk = pd.Series(fit.model.predict_risk(data), index=data.patients.astype(str))
    np.testing.assert_allclose(scores["risk_score"], risk.reindex(scores.index), rtol=1e-12)


def test_external_validation_counts_the_risk_set_from_the_prediction_day(advanced: Path, tmp_path: Path,
                                                                         mlflow_template_db: Path) -> None:
    fit = _linear(advanced, DAY90)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("score-pt")
    with warnings.catch_warnings(), mlflow.start_run() as run:
        warnings.simplefilter("ignore")
        log_model(fit.model, horizons=[180.0], input_example_frame=to_frame(fit.inputs.data),
                  feature_store=advanced / "features", training_cohort=advanced, prediction_time=DAY90)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate_external(f"runs:/{run.info.run_id}/model", advanced, output_dir=tmp_path / "ext",
                                   extract=False, n_boot=20, contribution=False, top_features=False,
                                   slow_metrics=False, tracking_uri=uri, log_to_mlflow=False, endpoint="pfs")
    mu.clear_protected_identifiers()
    clinical = pd.read_csv(advanced / "clinical.csv", dtype={"patient_id": str}).set_index("patient_id")
    at_risk = clinical[clinical["pfs_time"] > 90]
    assert result.prediction_time == {"describe": "day 90", "n_at_risk": len(at_risk),
                                      "n_left_out": len(clinical) - len(at_risk), "n_without_timepoint": 0}
    assert 0 < len(at_risk) < len(clinical)
    scores = pd.read_csv(tmp_path / "ext" / "scores.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert sorted(scores.index) == sorted(at_risk.index) and (scores["prediction_day"] == 90).all()
    np.testing.assert_array_equal(scores["time"], at_risk.loc[scores.index, "pfs_time"] - 90)
    np.testing.assert_array_equal(scores["event"], at_risk.loc[scores.index, "pfs_event"])
    risk = fit.model.predict_risk(fit.inputs.data)  # the training inputs at day 90: the same patients and inputs
    np.testing.assert_allclose(scores["risk_score"], pd.Series(risk, index=fit.inputs.data.patients.astype(str))
                               .loc[scores.index], rtol=1e-12)


def test_a_model_without_a_prediction_time_stores_none_and_scores_every_sample(advanced: Path,
                                                                              tmp_path: Path) -> None:
    """No prediction time: no timing keys, no prediction_day column, the store's wide tables (every sample)."""
    fit = _linear(advanced, None)
    assert not {"prediction_time", "longitudinal", "derived_inputs"} & set(fit.settings)
    assert fit.batch.prediction_time is None
    scores = _score(fit.batch, advanced, tmp_path)
    assert "prediction_day" not in scores.columns
    data = model_inputs(load_cohort(advanced), advanced / "features", extract=False, endpoint="pfs",
                        modalities=SERIAL, drop_unlabelled=False).data
    risk = pd.Series(fit.model.predict_risk(data), index=data.patients.astype(str))
    np.testing.assert_allclose(scores["risk_score"], risk.reindex(scores.index), rtol=1e-12)


def test_a_sample_that_fails_after_the_prediction_day_does_not_degrade_the_patient(advanced: Path,
                                                                                   tmp_path: Path) -> None:
    fit = _linear(advanced, DAY90)
    samples = _samples(advanced)
    ctdna = samples[samples["modality"] == "ctdna"]
    late = ctdna[ctdna["day"] > 90].iloc[0]
    early = ctdna[(ctdna["day"] <= 90) & (ctdna["patient_id"] != late["patient_id"])
                  & (ctdna["timepoint"] != "c1")].iloc[0]  # c1 is the model's column: keep it
    root = Path(shutil.copytree(advanced, tmp_path / "broken", ignore=shutil.ignore_patterns("features")))
    broken = _samples(root)
    broken.loc[broken["sample_id"].isin([late["sample_id"], early["sample_id"]]), "path"] = "ctdna/missing.tsv"
    broken.to_csv(root / "samples.csv", index=False)
    plain = _score(fit.batch, advanced, tmp_path / "plain")
    scores = _score(fit.batch, root, tmp_path / "out")
    row = scores.loc[late["patient_id"]]
    assert late["sample_id"] not in str(row["reason"])  # not used at day 90: not reported, no partial
    assert row["status"] == plain.loc[late["patient_id"], "status"]
    row = scores.loc[early["patient_id"]]
    assert row["status"] == "partial" and f"sample {early['sample_id']} failed" in row["reason"]


@pytest.mark.parametrize("node", [{"at": "index"}, {"at": "day", "day": 90.0},
                                  {"at": "timepoint", "timepoint": "c3", "windows": {"last": [-30.0, 0.0]}},
                                  {"at": "landmarks", "landmarks": [0.0, 90.0]}])
def test_the_stored_prediction_time_reads_back_to_the_same(node: dict) -> None:
    pt = PredictionTime.from_config(node)
    assert pt.to_config() == node and PredictionTime.from_config(json.loads(json.dumps(pt.to_config()))) == pt

"""``omics-risk monitor --model``: the dynamic train.py run's final landmark super-model (saved, logged, reloaded)
scored at every draw of a tiny nsclc-advanced cohort from what was measured up to the draw."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from omics_risk.cli import main
from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import load_multimodal
from omics_risk.data.synthetic import generate_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features.extract import extract_cohort
from omics_risk.models.landmark import LandmarkSuperModel
from omics_risk.monitoring.inputs import serial_draws
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.dynamic import DEFAULT_SETTINGS, MODEL_ARTIFACT, dynamic_inputs
from omics_risk.workflows.monitor_model import _grid, dynamic_risks, load_landmark_model

ROOT = Path(__file__).resolve().parents[2]
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}
LANDMARKS = (0.0, 90.0, 180.0)
WINDOW = 365.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> dict:
    """A tiny nsclc-advanced cohort (ctDNA features extracted) and a tracked dynamic run with its final model."""
    tmp = tmp_path_factory.mktemp("monitor_model")
    root = generate_cohort("nsclc-advanced", n=40, seed=5, out=tmp / "adv", **TINY)
    extract_cohort(root, root / "features", modalities=["ctdna"], workers=1, progress=False)
    shutil.copy(mlflow_template_db, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp}", f"paths.output_dir={tmp / 'run'}", f"tracking.uri={uri}",
            "tracking.experiment=monitor-model", "tracking.log_folds=false", "training.progress=false",
            "extract.run=false", "data=cohort", f"data.root={root}", "data.modalities=[ctdna]", "task=pfs",
            "task.prediction_time={at: landmarks, landmarks: [0, 90, 180]}", f"task.horizon_window={WINDOW:g}",
            "training.cv.folds=2", "training.cv.repeats=1", "evaluation.bootstrap=10"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.train(cfg)
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    return {"root": root, "tmp": tmp, "uri": uri, "summary": summary, "model_dir": tmp / "run" / MODEL_ARTIFACT}


def _reference(model: LandmarkSuperModel, root: Path, features: Path, patient: str, day: float) -> float:
    """The model's own prediction for one patient at landmark ``day``, from a data set built at that day."""
    data = load_multimodal(load_cohort(root), features, modalities=["ctdna"], endpoint="pfs", drop_unlabelled=False,
                           prediction_time=PredictionTime(at="day", day=day))
    at = data.subset(data.patients.astype(str).get_indexer([patient]))
    return float(1 - model.predict_survival(at, np.array([WINDOW]), landmark=day)[0, 0])


def test_the_final_model_is_saved_logged_and_reloads_to_the_same_predictions(trained: dict) -> None:
    final = trained["summary"]["dynamic"]["final_model"]
    assert final["model_dir"] == str(trained["model_dir"]) and final["n_patients"] == 40
    assert not any(p.suffix in (".pkl", ".pickle") for p in trained["model_dir"].rglob("*"))
    meta = json.loads((trained["model_dir"] / "config.json").read_text())["metadata"]
    assert meta["modalities"] == ["ctdna"] and meta["endpoint"] == "pfs" and meta["horizon_window"] == WINDOW
    assert meta["landmarks"] == list(LANDMARKS) and meta["prediction_time"]["at"] == "landmarks"
    loaded = LandmarkSuperModel.load(trained["model_dir"])
    assert loaded.landmark_range_ == (0.0, 180.0) and loaded.metadata_ == meta
    # reference: the same fit in memory, predicted by lifelines itself
    cohort = load_cohort(trained["root"])
    inp = dynamic_inputs(cohort, trained["root"] / "features", PredictionTime(at="landmarks", landmarks=LANDMARKS),
                         WINDOW, modalities=["ctdna"], endpoint="pfs")
    fitted = LandmarkSuperModel(["ctdna"], seed=0, clinical_types=loaded.clinical_types, **DEFAULT_SETTINGS)
    fitted.fit(inp.stacked)
    X = fitted._design(inp.stacked)[fitted.columns_]
    lifelines_sf = fitted.cph_.predict_survival_function(X, times=[WINDOW]).to_numpy()[0]
    np.testing.assert_allclose(fitted.predict_survival(inp.stacked, np.array([WINDOW]))[:, 0], lifelines_sf,
                               rtol=1e-10)
    np.testing.assert_allclose(loaded.predict_risk(inp.stacked), fitted.cph_.predict_log_partial_hazard(X),
                               rtol=1e-10, atol=1e-12)
    # logged to the job run, and loadable from its URI
    assert final["model_uri"].startswith("runs:/") and final["model_uri"].endswith(f"/{MODEL_ARTIFACT}")
    from_uri = load_landmark_model(final["model_uri"], tracking_uri=trained["uri"])
    np.testing.assert_array_equal(from_uri.beta_, loaded.beta_)


def test_each_draw_is_scored_from_data_up_to_its_day(trained: dict, tmp_path: Path) -> None:
    root, model = trained["root"], load_landmark_model(trained["model_dir"])
    cohort = load_cohort(root)
    listed = serial_draws(cohort).draws
    listed = listed[listed["patient_id"].isin(listed["patient_id"].unique()[:8])]  # 8 patients: fewer days to build
    risk = dynamic_risks(model, cohort, listed, progress=False).table
    assert list(risk.index) == list(listed["sample_id"]) and risk["dynamic_risk"].between(0, 1).all()
    # the value at a draw is the model's own prediction at that landmark (a few draws, inside and beyond the range)
    picks = listed.iloc[[0, 3, len(listed) // 2, len(listed) - 1]]
    for p, sid, day in picks[["patient_id", "sample_id", "day"]].itertuples(index=False):
        assert risk.at[sid, "dynamic_risk"] == pytest.approx(_reference(model, root, root / "features", p, day),
                                                             rel=1e-10)
        outside = "outside the training landmarks" in risk.at[sid, "model_reason"]
        assert outside == (day > 180.0)
    # change one patient's draws from day 60 on: the earlier draws' risks stay, some later ones move
    features = tmp_path / "features"
    shutil.copytree(root / "features", features)
    long = pd.read_parquet(features / "ctdna.samples.parquet")
    p = str(listed["patient_id"].iloc[0])
    late = (long["patient_id"].astype(str) == p) & (long["day"] >= 60)
    numeric = [c for c in long.columns if c not in ("patient_id", "day") and pd.api.types.is_float_dtype(long[c])]
    long.loc[late, numeric] = long.loc[late, numeric] * 5 + 3
    long.to_parquet(features / "ctdna.samples.parquet")
    moved = dynamic_risks(model, cohort, listed, features_dir=features, progress=False).table
    mine = listed[listed["patient_id"].astype(str) == p].set_index("sample_id")["day"]
    before, after = mine.index[mine < 60], mine.index[mine >= 60]
    assert len(before) and len(after)
    np.testing.assert_array_equal(moved.loc[before, "dynamic_risk"], risk.loc[before, "dynamic_risk"])
    assert (moved.loc[after, "dynamic_risk"] != risk.loc[after, "dynamic_risk"]).any()
    others = listed.loc[listed["patient_id"].astype(str) != p, "sample_id"]
    np.testing.assert_array_equal(moved.loc[others, "dynamic_risk"], risk.loc[others, "dynamic_risk"])


def test_grid_and_unscorable_draws(trained: dict) -> None:
    # the grid: days rounded down (never to a later day); chosen when there are too many distinct days
    assert _grid(np.array([0.0, 1, 2, 10, 11]), None, 10)[0] is None
    used, days = _grid(np.array([0.0, 1, 2, 10, 11, np.nan]), None, 3)
    assert used == 6.0 and days[:5].tolist() == [0, 0, 0, 6, 6] and np.isnan(days[5])
    root, model = trained["root"], load_landmark_model(trained["model_dir"])
    cohort = load_cohort(root)
    listed = serial_draws(cohort).draws.head(6)
    p = str(listed["patient_id"].iloc[0])
    extra = pd.DataFrame({"patient_id": ["NOBODY", p], "sample_id": ["x1", "x2"], "day": [10.0, np.nan]})
    out = dynamic_risks(model, cohort, pd.concat([listed, extra]), grid_days=30.0, progress=False)
    t = out.table
    assert t.loc["x1", "model_reason"] == "patient not in clinical.csv" and np.isnan(t.loc["x1", "dynamic_risk"])
    assert t.loc["x2", "model_reason"] == "no draw day in samples.csv" and np.isnan(t.loc["x2", "dynamic_risk"])
    sid, day = listed.iloc[1][["sample_id", "day"]]
    grid_day = np.floor(day / 30.0) * 30.0
    assert t.loc[sid, "model_day"] == grid_day
    assert t.loc[sid, "dynamic_risk"] == pytest.approx(_reference(model, root, root / "features", p, grid_day),
                                                       rel=1e-10)
    assert any("30-day grid" in n for n in out.notes) and any("could not be scored" in n for n in out.notes)


def test_monitor_with_the_model_alerts_on_its_risk(trained: dict, tmp_path: Path) -> None:
    root = trained["root"]
    code = main(["monitor", "--cohort", str(root), "--out", str(tmp_path / "o"), "--quiet", "--no-grid",
                 "--rule", "model_risk", "--set", "rule.threshold=0.6", "--set", "bootstrap=20",
                 "--model", str(trained["model_dir"])])
    assert code == 0
    samples = pd.read_csv(tmp_path / "o" / "samples.csv", dtype={"patient_id": str})
    listed = pd.read_csv(root / "samples.csv")
    assert len(samples) == int((listed["modality"] == "ctdna").sum()) and "risk" not in samples.columns
    assert samples["dynamic_risk"].notna().all()
    assert (samples["model_alert"] == (samples["dynamic_risk"] >= 0.6)).all()
    patients = pd.read_csv(tmp_path / "o" / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    first = samples[(samples["model_alert"] == 1) & (samples["day"] > 0)].groupby("patient_id")["day"].min()
    pd.testing.assert_series_equal(patients["model_alert_day"].dropna(), first.astype(float),
                                   check_names=False, check_index_type=False)
    # the model_risk rule alerts on the same risks: its alert day is the first on-treatment draw at the threshold
    pd.testing.assert_series_equal(patients["alert_day"], patients["model_alert_day"], check_names=False)
    assert patients["alert_day"].notna().sum() >= 5
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"]["threshold"] == 0.6 and summary["model"]["draws_scored"] == len(samples)


def test_model_and_risk_are_mutually_exclusive(trained: dict, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    risk = tmp_path / "risk.csv"
    risk.write_text("sample_id,risk\n")
    code = main(["monitor", "--cohort", str(trained["root"]), "--out", str(tmp_path / "o"), "--quiet",
                 "--risk", str(risk), "--model", str(trained["model_dir"])])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--model and --risk are mutually exclusive" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()

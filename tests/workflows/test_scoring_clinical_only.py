"""Scoring a clinical-only cohort (no samples.csv) with a model that predicts at a sample timepoint: every patient is
scored at the index date, and ``omics-risk score`` says so once (issue 14: the data layer's log line and the
result's note used to say it twice)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from omics_risk.cli import main
from omics_risk.data.contract import load_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features.clinical import clinical_types
from omics_risk.scoring.frames import to_frame
from omics_risk.scoring.pyfunc import log_model
from omics_risk.scoring.reference_model import LinearRiskModel
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.workflows.inputs import model_inputs

AT_POSTOP = PredictionTime(at="timepoint", timepoint="postop1")
#: The fallback, in the words of the note (scoring_cohort.check_fit) and of the data layer's log line.
FALLBACK = "index date"


def _clinical_only(root: Path, n: int = 40, seed: int = 0) -> Path:
    """cohort.yaml and clinical.csv only; the outcome depends on stage and age."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    stage = rng.integers(0, 3, n)
    age = rng.normal(66, 8, n).round(0)
    t_event = rng.exponential(900.0 / np.exp(0.7 * stage + 0.03 * (age - 66)))
    t_censor = rng.uniform(300, 2500, n)
    pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "age": age,
                  "stage": np.array(["I", "II", "III"])[stage], "rfs_time": np.minimum(t_event, t_censor).round(0),
                  "rfs_event": (t_event <= t_censor).astype(int)}).to_csv(root / "clinical.csv", index=False)
    spec = {"contract_version": 1, "name": "clinical-only", "time_unit": "days",
            "endpoints": {"rfs": {"type": "survival", "time": "rfs_time", "event": "rfs_event"}},
            "clinical": {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}}}
    (root / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@pytest.mark.slow
def test_a_clinical_only_cohort_is_said_once_to_be_scored_at_the_index_date(
        tmp_path: Path, mlflow_template_db: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # a sqlite store's default artifact root is ./mlruns: keep it out of the checkout
    root = _clinical_only(tmp_path / "clin")
    cohort = load_cohort(root)
    inputs = model_inputs(cohort, root / "features", extract=True, endpoint="rfs", modalities=[],
                          prediction_time=AT_POSTOP)  # training places it at the index date too (its own log line)
    assert (inputs.data.prediction_day == 0).all()
    model = LinearRiskModel(["clinical/age", "clinical/stage"], clinical_types=clinical_types(cohort.spec))
    model.fit(inputs.data)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("clinical-only")  # not the active experiment an earlier test of this worker left behind
    with mlflow.start_run():
        log_model(model, input_example_frame=to_frame(inputs.data), registered_model_name="clin", alias="champion",
                  horizons=[365.0], training_cohort=root, prediction_time=AT_POSTOP)
    mu.clear_protected_identifiers()
    capsys.readouterr()
    caplog.clear()

    with caplog.at_level(logging.INFO):
        code = main(["score", "--model", "models:/clin@champion", "--tracking-uri", uri, "--cohort", str(root),
                     "--out", str(tmp_path / "scores.csv"), "--quiet", "--workers", "1"])
    printed = capsys.readouterr()
    assert code == 0
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert (scores["status"] == "ok").all() and (scores["prediction_day"] == 0).all() and len(scores) == 40
    said = printed.out + printed.err + caplog.text
    assert said.count(FALLBACK) == 1, said
    assert "warning: this cohort has no samples (clinical-only)" in printed.out

"""The MLflow UI opens omics-risk experiments as model-training experiments with the headline runs-table view, and
fold runs have names a person reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlflow.tracking import MlflowClient

from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.ui_view import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    VIEW_KEY,
    VIEW_TAG,
    experiment_url,
    headline_columns,
)


def test_new_experiment_is_marked_for_model_training_with_the_headline_view(tmp_path: Path,
                                                                            mlflow_template_db: Path) -> None:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = mu.setup_experiment("omics-risk", uri)
    tags = MlflowClient(uri).get_experiment(exp_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    view = json.loads(tags[VIEW_TAG])
    assert view["selectedColumns"] == headline_columns("clinical_cox")
    assert view["selectedColumns"][:3] == ["tags.`C-index`", "tags.`delta C vs reference`", "tags.`p vs reference`"]
    assert "metrics.`p_vs_clinical_cox`" in view["selectedColumns"]
    assert view["orderByKey"] == "metrics.`harrell_c`" and view["orderByAsc"] is False  # the best model first
    assert "'model'" in view["searchFilter"]


def test_experiment_url_opens_the_runs_table_in_model_training_mode() -> None:
    assert experiment_url("7") == (f"http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                                   f"&viewStateShareKey={VIEW_KEY}")
    assert experiment_url("7", "http://h:1/", run_id="abc") == \
        "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning"


def test_fold_run_names_read_well_and_stay_unique() -> None:
    assert mu.fold_run_name("fused", 4, 5, 0, 1) == "fused · fold 5 of 5"
    assert mu.fold_run_name("fused", 0, 5, 1, 3) == "fused · fold 1 of 5, repeat 2 of 3"
    names = {mu.fold_run_name("coxnet", f, 5, r, 3) for f in range(5) for r in range(3)}
    assert len(names) == 15

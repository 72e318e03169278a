"""MLflow tracking helpers against a temporary SQLite store: URIs, flat params, the job/model/fold run tree, run
status on failure, and the patient-identifier guard wired into every helper."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import OmegaConf

from omics_risk.privacy import Pseudonymiser
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.mlflow_utils import (
    LEVEL_TAG,
    IdentifierGuard,
    IdentifierLeakError,
    assert_no_identifiers,
    end_run_on_failure,
    flatten_params,
    log_config,
    protect_identifiers,
    safe_log_metrics,
    safe_log_params,
    safe_set_tags,
    setup_experiment,
    start_fold_run,
    start_model_run,
    start_run_tree,
    tracking_uri,
)

PATIENTS = ["PO0001", "PO0002", "TCGA-05-4244", "1042"]


@pytest.fixture
def uri(tmp_path: Path, mlflow_template_db: Path) -> str:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _clean_state():
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mu.clear_protected_identifiers()


def _runs(uri: str, exp_id: str) -> dict[str, mlflow.entities.Run]:
    """Runs of the experiment keyed by run name."""
    runs = MlflowClient(uri).search_runs([exp_id], max_results=1000)
    return {r.info.run_name: r for r in runs}


# --- tracking_uri / setup_experiment ------------------------------------------------------------------------------
def test_tracking_uri_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri("", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri(None, tmp_path) == "http://mlflow.internal:5000"
    assert tracking_uri("sqlite:////data/x.db", tmp_path) == "sqlite:////data/x.db"  # explicit config wins
    assert tracking_uri(str(tmp_path / "runs.db"), tmp_path) == f"sqlite:///{tmp_path.resolve()}/runs.db"


def test_setup_experiment_keeps_artifacts_next_to_the_database(uri: str, tmp_path: Path) -> None:
    exp_id = setup_experiment("omics risk/cv", uri)
    assert setup_experiment("omics risk/cv", uri) == exp_id  # idempotent
    exp = MlflowClient(uri).get_experiment(exp_id)
    assert exp.name == "omics risk/cv"
    assert exp.artifact_location == (tmp_path / "mlartifacts" / "omics_risk_cv").as_uri()
    with mlflow.start_run(experiment_id=exp_id):
        mlflow.log_text("x", "a.txt")
        art = mlflow.get_artifact_uri("a.txt")
    assert Path(art.removeprefix("file://")).is_file()
    assert str(tmp_path) in art


# --- flatten_params -----------------------------------------------------------------------------------------------
def test_flatten_params_leaves_lists_and_interpolation() -> None:
    cfg = OmegaConf.create(
        {
            "seed": 7,
            "model": {"fusion": {"_target_": "omics_risk.models.fusion.Gated", "dim": 64}, "heads": ["cox", "binary"]},
            "training": {"lr": 1e-3, "epochs": "${seed}", "scheduler": None, "extra": {}},
        }
    )
    flat = flatten_params(cfg)
    assert flat == {
        "seed": "7",
        "model.fusion._target_": "omics_risk.models.fusion.Gated",
        "model.fusion.dim": "64",
        "model.heads": '["cox","binary"]',
        "training.lr": "0.001",
        "training.epochs": "7",
        "training.scheduler": "None",
        "training.extra": "{}",
    }
    assert flatten_params({"a": {"b": 1}}, sep="/") == {"a/b": "1"}


def test_flatten_params_truncates_long_values_with_a_hash() -> None:
    long_a = list(range(3000))
    long_b = [*range(2999), -1]
    flat = flatten_params({"a": long_a, "b": long_b})
    full = json.dumps(long_a, separators=(",", ":"))
    assert len(flat["a"]) == MAX_PARAM_VAL_LENGTH
    assert flat["a"].startswith(full[:1000])
    assert flat["a"].endswith(f"[sha1:{hashlib.sha1(full.encode()).hexdigest()[:12]}]")
    assert flat["a"] != flat["b"]  # same prefix, different hash


# --- the run tree -------------------------------------------------------------------------------------------------
def test_run_tree_nests_model_and_fold_runs_and_logs_config(uri: str, tmp_path: Path) -> None:
    hydra_dir = tmp_path / "job"
    (hydra_dir / ".hydra").mkdir(parents=True)
    (hydra_dir / ".hydra" / "overrides.yaml").write_text("- model.lr=0.01\n")
    cfg = OmegaConf.create(
        {"model": {"lr": 0.01, "layers": [8, 4]}, "data": {"n": "${model.layers}"}, **{f"k{i}": i for i in range(120)}}
    )  # > 100 params: MLflow's batch limit
    with start_run_tree(
        "cv",
        uri=uri,
        run_name="job",
        cfg=cfg,
        hydra_output_dir=hydra_dir,
        parent_run_id=None,
        tags={"cohort": "synthetic"},
    ) as job:
        for model in ("fused", "clinical_cox"):
            with start_model_run(model, params={"alpha": 0.1}):
                for fold in range(2):
                    with start_fold_run(fold):
                        for epoch in range(3):
                            safe_log_metrics(
                                {"train/loss": 1.0 / (epoch + 1), "val/cindex": np.float32(0.6)}, step=epoch
                            )
                safe_log_metrics({"cv/cindex_mean": 0.61})
        safe_log_metrics({"val/cindex": torch.tensor(0.64)})
    assert mlflow.active_run() is None
    client = MlflowClient(uri)
    runs = _runs(uri, job.info.experiment_id)
    assert set(runs) == {
        "job",
        "fused",
        "clinical_cox",
        "fused/fold0",
        "fused/fold1",
        "clinical_cox/fold0",
        "clinical_cox/fold1",
    }
    root = runs["job"]
    assert root.info.run_id == job.info.run_id
    assert "mlflow.parentRunId" not in root.data.tags
    assert root.data.tags[LEVEL_TAG] == "job" and root.data.tags["cohort"] == "synthetic"
    assert root.data.params["model.layers"] == "[8,4]" and root.data.params["data.n"] == "[8,4]"
    assert root.data.params["k119"] == "119" and len(root.data.params) == 123
    assert root.data.metrics["val/cindex"] == pytest.approx(0.64)
    for model in ("fused", "clinical_cox"):
        m = runs[model]
        assert m.data.tags["mlflow.parentRunId"] == root.info.run_id
        assert m.data.tags[LEVEL_TAG] == "model" and m.data.tags["model"] == model
        assert m.data.params == {"alpha": "0.1"}
        for fold in range(2):
            f = runs[f"{model}/fold{fold}"]
            assert f.data.tags["mlflow.parentRunId"] == m.info.run_id
            assert (f.data.tags[LEVEL_TAG], f.data.tags["fold"], f.data.tags["model"]) == ("fold", str(fold), model)
            hist = client.get_metric_history(f.info.run_id, "train/loss")
            assert [(h.step, round(h.value, 6)) for h in hist] == [(0, 1.0), (1, 0.5), (2, round(1 / 3, 6))]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    arts = {a.path for a in client.list_artifacts(root.info.run_id, "config")}
    assert arts == {"config/config_resolved.yaml"}
    resolved = yaml.safe_load(
        Path(
            client.download_artifacts(root.info.run_id, "config/config_resolved.yaml", str(tmp_path / "dl"))
        ).read_text()
    )
    assert resolved["data"]["n"] == [8, 4]  # interpolations resolved
    assert [a.path for a in client.list_artifacts(root.info.run_id, "hydra")] == ["hydra/overrides.yaml"]


def test_runs_end_failed_on_exception_and_none_stays_active(uri: str) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        start_run_tree("cv", uri=uri, run_name="job", parent_run_id=None) as job,
        start_model_run("fused"),
        start_fold_run(0),
    ):
        safe_log_metrics({"train/loss": 0.5}, step=0)
        _ = 1 / 0
    assert mlflow.active_run() is None
    runs = _runs(uri, job.info.experiment_id)
    assert {n: r.info.status for n, r in runs.items()} == {"job": "FAILED", "fused": "FAILED", "fused/fold0": "FAILED"}
    # the next job starts cleanly (a sweep job never inherits an active run)
    with start_run_tree("cv", uri=uri, run_name="next", parent_run_id=None) as nxt:
        assert mlflow.active_run().info.run_id == nxt.info.run_id
    assert MlflowClient(uri).get_run(nxt.info.run_id).info.status == "FINISHED"


def test_end_run_on_failure_only_ends_inner_runs(uri: str) -> None:
    setup_experiment("cv", uri)
    outer = mlflow.start_run(run_name="outer")
    with pytest.raises(KeyboardInterrupt), end_run_on_failure():
        inner = mlflow.start_run(run_name="inner", nested=True)
        raise KeyboardInterrupt
    assert mlflow.active_run().info.run_id == outer.info.run_id
    assert MlflowClient(uri).get_run(inner.info.run_id).info.status == "KILLED"
    with end_run_on_failure():
        left_open = mlflow.start_run(run_name="left-open", nested=True)
    assert MlflowClient(uri).get_run(left_open.info.run_id).info.status == "FINISHED"
    mlflow.end_run()
    assert MlflowClient(uri).get_run(outer.info.run_id).info.status == "FINISHED"


def test_nested_helpers_need_a_job_run_and_safe_logging_needs_a_run() -> None:
    with pytest.raises(RuntimeError, match="start_run_tree"), start_model_run("fused"):
        pass
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        safe_log_metrics({"a": 1.0})
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        safe_log_params({"a": 1})


def test_safe_log_metrics_rejects_non_numbers(uri: str) -> None:
    with start_run_tree("cv", uri=uri, parent_run_id=None), pytest.raises(TypeError, match="'val/cindex'"):
        safe_log_metrics({"val/cindex": "high"})


# --- the identifier guard -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["risk/PO0001", "PO0001", "po0001_fold0", "val/TCGA-05-4244/cindex", "patient=PO0002", "x.1042.y"],
)
def test_guard_finds_ids_as_tokens(name: str) -> None:
    with pytest.raises(IdentifierLeakError) as err:
        assert_no_identifiers([name], PATIENTS)
    assert "<patient-id>" in str(err.value)
    for pid in PATIENTS:
        assert pid.casefold() not in str(err.value).casefold()  # the message does not leak it either


@pytest.mark.parametrize("name", ["PO00012/risk", "XPO0001", "val/cindex", "fold_1", "TCGA-05-42441", "10420"])
def test_guard_ignores_ids_glued_to_other_characters(name: str) -> None:
    assert_no_identifiers([name], PATIENTS)


def test_guard_values_numbers_and_short_numeric_ids() -> None:
    with pytest.raises(IdentifierLeakError, match="value"):
        assert_no_identifiers(["data.exclude"], PATIENTS, values=['["PO0002","PO0009"]'])
    assert_no_identifiers(["seed"], PATIENTS, values=["1042"])  # numeric ids are not looked for in values
    with pytest.warns(UserWarning, match="shorter than 4 digits"):
        guard = IdentifierGuard(["7", "12", "PO0001"])
    assert guard.ids == frozenset({"po0001"})
    guard.check(["fold_7/epoch_12"])  # fold and epoch numbers are not patients


def test_guard_is_wired_into_every_helper(uri: str) -> None:
    with start_run_tree("cv", uri=uri, run_name="job", parent_run_id=None, patient_ids=PATIENTS) as job:
        with pytest.raises(IdentifierLeakError):
            safe_log_metrics({"risk/PO0001": 1.2})
        with pytest.raises(IdentifierLeakError):
            safe_log_params({"worst_patient": "TCGA-05-4244"})
        with pytest.raises(IdentifierLeakError):
            safe_set_tags({"note": "check PO0002 scan"})
        with pytest.raises(IdentifierLeakError):
            log_config({"data": {"exclude": ["PO0001"]}})
        with pytest.raises(IdentifierLeakError), start_model_run("PO0001"):
            pass
        with start_model_run("fused"), pytest.raises(IdentifierLeakError), start_fold_run(0, tags={"p": "PO0001"}):
            pass
        safe_log_metrics({"val/cindex": 0.7})
        safe_set_tags({"note": "fine"})
    client = MlflowClient(uri)
    runs = _runs(uri, job.info.experiment_id)
    root = runs["job"]
    assert set(root.data.metrics) == {"val/cindex"}
    assert "worst_patient" not in root.data.params and "note" in root.data.tags
    assert not client.list_artifacts(root.info.run_id, "config")
    assert set(runs) == {"job", "fused"}  # no run was created under a patient's name
    with pytest.raises(IdentifierLeakError):
        start_run_tree("cv", uri=uri, run_name="PO0002-debug", parent_run_id=None).__enter__()
    assert mlflow.active_run() is None


def test_protect_identifiers_accumulates() -> None:
    protect_identifiers(["PA0001"])
    guard = protect_identifiers(["PB0002"])
    assert guard.ids == frozenset({"pa0001", "pb0002"})
    with pytest.raises(IdentifierLeakError):
        mu.check_identifiers(["x/PA0001"])


def test_log_patient_table_logs_pseudonyms_and_refuses_leftover_ids(uri: str, tmp_path: Path) -> None:
    table = pd.DataFrame({"patient_id": ["PO0001", "PO0002", "PO0001"], "risk": [0.5, -1.0, 0.25]})
    key_file = tmp_path / ".omics-risk" / "pseudonym.key"
    with start_run_tree("cv", uri=uri, run_name="job", parent_run_id=None, patient_ids=PATIENTS) as job:
        logged = mu.log_patient_table(table, "tables/risk.parquet")  # default: the store's key, made on first use
        assert key_file.is_file()
        p = Pseudonymiser.for_store(uri)
        assert logged["patient_id"].tolist() == p(["PO0001", "PO0002", "PO0001"])
        mu.log_patient_table(table, "risk.csv", pseudonyms=Pseudonymiser.raw_ids())  # the opt-in keeps them
        with pytest.raises(IdentifierLeakError, match="<patient-id>_ct_preop"):
            mu.log_patient_table(table.assign(sample=["PO0001_ct_preop", "x", "y"]), "leak.csv", pseudonyms=p)
        with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
            mu.log_patient_table(table, "risk.json", pseudonyms=p)
        protect_identifiers(p(["PO0001"]))  # a comparison registers the pseudonyms it read: they stay loggable
        mu.log_patient_table(table, "again.parquet", pseudonyms=p)
    client = MlflowClient(uri)
    run_id = job.info.run_id
    assert {a.path for a in client.list_artifacts(run_id)} == {"tables", "risk.csv", "again.parquet"}  # no leak.csv
    back = pd.read_parquet(client.download_artifacts(run_id, "tables/risk.parquet", str(tmp_path)))
    assert back["patient_id"].tolist() == logged["patient_id"].tolist() and back["risk"].tolist() == [0.5, -1.0, 0.25]
    raw = pd.read_csv(client.download_artifacts(run_id, "risk.csv", str(tmp_path)))
    assert raw["patient_id"].tolist() == ["PO0001", "PO0002", "PO0001"]
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        mu.log_patient_table(table, "risk.csv", pseudonyms=p)

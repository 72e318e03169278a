"""No patient identifier reaches MLflow: a tracked demo run through ``train.py`` (fused model, baselines, run report,
registered model with its model card), an external validation of the registered model and a comparison of the run's
models are audited, every param, tag, metric name, run name, artifact (opened: Parquet, zip members of the skops and
torch files, PNG text, HTML) and logged-model file, and the raw SQLite store and artifact folder on disk, for every
patient and sample id of the cohort. The opt-in ``tracking.raw_ids=true`` keeps the ids in ``oof_risk.parquet``, and
the same audit finds them there (so the audit can fail)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from omics_risk.data.synthetic import generate_cohort
from omics_risk.evaluation.compare import OOF_ARTIFACT, compare_experiment
from omics_risk.privacy import ID_MODE_TAG, KEY_ID_TAG, Pseudonymiser
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.audit import audit_store, find_in_bytes
from omics_risk.workflows.external import validate_external
from omics_risk.workflows.training import train

ROOT = Path(__file__).resolve().parents[2]
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}
N_BOOT = 50  # evaluation.bootstrap of debug=fast: the compare below reproduces train()'s paired tests with it
SEED = 0  # evaluation.seed: the one seed of every bootstrap (docs/evaluation.md, "One bootstrap, one p")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort("nsclc-postop", n=40, seed=5, out=tmp_path_factory.mktemp("privacy") / "cohort", **TINY)


def _identifiers(cohort: Path) -> list[str]:
    """Every patient and sample id of the cohort (synthetic ids such as PO0001 and PO0001_ct_preop)."""
    patients = pd.read_csv(cohort / "clinical.csv", dtype=str)["patient_id"].tolist()
    samples = pd.read_csv(cohort / "samples.csv", dtype=str)["sample_id"].tolist()
    assert len(patients) == 40 and all(len(p) >= 6 for p in patients)  # distinctive enough for a substring scan
    return [*patients, *samples]


def _store(tmp_path: Path, template: Path) -> str:
    shutil.copy(template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _on_disk(tmp_path: Path, needles: list[str]) -> dict[str, set[str]]:
    """What a byte scan of the SQLite store and of every file under the artifact folder finds."""
    found = {}
    for path in [tmp_path / "mlflow.db", *sorted((tmp_path / "mlartifacts").rglob("*"))]:
        if path.is_file():
            hits = find_in_bytes(path.read_bytes(), needles, name=path.name)
            if hits:
                found[str(path.relative_to(tmp_path))] = hits
    return found


@pytest.mark.slow
def test_tracked_demo_run_holds_no_cohort_identifier(cohort: Path, tmp_path: Path, mlflow_template_db: Path) -> None:
    uri = _store(tmp_path, mlflow_template_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OMICS_RISK_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=demo", f"data.root={cohort}", "debug=fast",
         "training.final_model=true", f"tracking.uri={uri}", f"paths.root_dir={tmp_path}",
         f"hydra.run.dir={tmp_path / 'run'}", "training.progress=false", "extract.workers=1",
         "task.prediction_time=null"],  # every patient in the out-of-fold table, whatever the risk set at postop1
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "report_error" not in summary and "model_card_error" not in summary
    with warnings.catch_warnings():  # in the walkthrough's order: compare the run, then validate its model
        warnings.simplefilter("ignore")
        cmp = compare_experiment("omics-risk", output_dir=tmp_path / "compare", reference="clinical_cox",
                                 n_boot=N_BOOT, seed=SEED, tracking_uri=uri)
        ext = validate_external(f"models:/{summary['registered_model']}@challenger", cohort,
                                output_dir=tmp_path / "external", n_boot=20, contribution_n_boot=10, top_n=5,
                                top_repeats=1, per_modality=2, slow_metrics=False, tracking_uri=uri)
    mu.clear_protected_identifiers()

    # what was logged: the artifacts that carry or could carry patients
    client = MlflowClient(uri)
    job = client.get_run(cmp.table["job_run_id"].iloc[0])
    arts = {a.path for a in client.list_artifacts(job.info.run_id)}
    assert {"summary.json", "summary.csv", "evaluation", "hydra", "config"} <= arts
    model_runs = cmp.table.set_index("model")["run_id"]
    assert set(model_runs.index) == {"fused", "clinical_cox", "coxnet_clinical", "coxnet_cfdna", "coxnet_ct",
                                     "coxnet_ctdna", "coxnet_metabolomics", "coxnet_methylation"}
    for run_id in model_runs:
        assert OOF_ARTIFACT in {a.path for a in client.list_artifacts(run_id)}
    assert "scores.csv" in {a.path for a in client.list_artifacts(ext.run_id)}
    job_files = {p.name for p in Path(client.download_artifacts(job.info.run_id, "", str(tmp_path / "dl"))).rglob("*")}
    assert "report.html" in job_files and "config.yaml" in job_files  # the run report and the Hydra snapshot
    registered = client.get_model_version(summary["registered_model"], str(summary["registered_version"]))
    model_files = {p.name for p in Path(client.download_artifacts(registered.run_id, "", str(tmp_path / "final"))
                                        ).rglob("*")}
    assert "model_card.md" in model_files

    # the audit: nothing of the cohort anywhere in the store, nor in the raw database and artifact files
    ids = _identifiers(cohort)
    findings = audit_store(ids, tracking_uri=uri)
    assert findings == [], findings[:10]
    assert _on_disk(tmp_path, [i.casefold() for i in ids]) == {}

    # the pseudonyms: the project's key beside the store (0600, never logged), stable across runs, so that the
    # comparison paired each model with the reference patient by patient: its paired tests are train()'s numbers
    key_file = tmp_path / ".omics-risk" / "pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_hex = key_file.read_text().strip()
    assert audit_store([key_hex], tracking_uri=uri) == [] and _on_disk(tmp_path, [key_hex]) == {}
    pseudonyms = Pseudonymiser.for_store(uri)
    patients = pd.read_csv(cohort / "clinical.csv", dtype=str)["patient_id"].tolist()
    oof = pd.read_parquet(client.download_artifacts(model_runs["fused"], OOF_ARTIFACT, str(tmp_path / "oof")))
    assert sorted(oof["patient_id"]) == sorted(pseudonyms(patients))
    assert job.data.tags[ID_MODE_TAG] == "pseudonymised" and job.data.tags[KEY_ID_TAG] == pseudonyms.key_id
    assert client.get_run(model_runs["fused"]).data.tags[ID_MODE_TAG] == "pseudonymised"
    assert client.get_run(ext.run_id).data.tags[ID_MODE_TAG] == "pseudonymised"
    ext_scores = pd.read_csv(client.download_artifacts(ext.run_id, "scores.csv", str(tmp_path / "ext_dl")))
    assert set(ext_scores["patient_id"]) == set(pseudonyms(patients))  # the same patient, the same pseudonym
    table = cmp.table.set_index("model")
    metrics = summary["metrics"]
    for model in model_runs.index.drop("clinical_cox"):
        key = f"{model}/delta_vs_clinical_cox"
        got = table.loc[model, ["delta_c", "delta_c_ci_low", "delta_c_ci_high", "p_value"]].to_numpy(float)
        want = [metrics[key], metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"], metrics[f"{key}_p"]]
        assert got == pytest.approx(want), model


@pytest.mark.slow
def test_raw_ids_opt_in_keeps_the_ids_and_the_audit_finds_them(cohort: Path, tmp_path: Path,
                                                                mlflow_template_db: Path) -> None:
    uri = _store(tmp_path, mlflow_template_db)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                                          f"tracking.uri={uri}", "tracking.raw_ids=true", "debug=fast",
                                          "baselines=none", "evaluation.report.enabled=false",
                                          "training.progress=false", "extract.workers=1", "data=cohort",
                                          f"data.root={cohort}", "task.prediction_time=null"])  # every patient
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    mu.clear_protected_identifiers()
    ids = _identifiers(cohort)
    patients = set(pd.read_csv(cohort / "clinical.csv", dtype=str)["patient_id"].str.casefold())
    findings = audit_store(ids, tracking_uri=uri)
    assert {f.identifier for f in findings} == patients  # every patient, found by the same audit
    assert {f.where.split(" artifact ")[-1] for f in findings} == {OOF_ARTIFACT}  # and only in the opt-in table
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("omics-risk").experiment_id])
    assert {r.data.tags.get(ID_MODE_TAG) for r in runs if r.data.tags.get(mu.LEVEL_TAG) in ("job", "model")} == \
        {"raw"}
    assert not (tmp_path / ".omics-risk").exists()  # the opt-in made no key

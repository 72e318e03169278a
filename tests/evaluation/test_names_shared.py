"""One name per number: a tracked tiny training run, then ``evaluate.py mode=compare`` on it with the same bootstrap
settings, gives the same metric names and values for the same comparison (C-index with CI, difference from the
reference with CI, p); the model runs carry the same numbers without the model prefix, and fold runs read well."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from omics_risk.data.synthetic import generate_cohort
from omics_risk.evaluation.compare import compare_experiment
from omics_risk.tracking.mlflow_utils import clear_protected_identifiers
from omics_risk.tracking.ui_view import HEADLINE_TAGS
from omics_risk.workflows.training import train

ROOT = Path(__file__).resolve().parents[2]
N_BOOT = 30
SEED = 11


@pytest.mark.slow
def test_training_and_compare_share_metric_names_and_values(tmp_path: Path, mlflow_template_db: Path) -> None:
    cohort = generate_cohort("nsclc-postop", n=40, seed=5, out=tmp_path / "cohort", fragments_per_sample=300,
                             n_metabolites=20, ct_shape=(24, 24, 16), workers=1, progress=False)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "tracking=mlflow",
            f"tracking.uri={uri}", "tracking.experiment=names", "training.progress=false", "extract.workers=1",
            "data=cohort", f"data.root={cohort}", "debug=fast", "model.estimator.epochs=2",
            "task.prediction_time=null", f"seed={SEED}", f"evaluation.bootstrap={N_BOOT}", f"evaluation.seed={SEED}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
        clear_protected_identifiers()
        res = compare_experiment("names", output_dir=tmp_path / "cmp", reference="clinical_cox", n_boot=N_BOOT,
                                 seed=SEED, tracking_uri=uri)
    clear_protected_identifiers()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("names").experiment_id
    job = client.search_runs([exp], "tags.`omics_risk.level` = 'job'")[0]
    trained = job.data.metrics
    compared = client.get_run(res.run_id).data.metrics
    shared = ("harrell_c", "harrell_c_ci_low", "harrell_c_ci_high", "delta_c_vs_clinical_cox",
              "delta_c_vs_clinical_cox_ci_low", "delta_c_vs_clinical_cox_ci_high", "p_vs_clinical_cox")
    names = [k for k in trained if k.split("/", 1)[-1] in shared]
    models = [k.split("/")[0] for k in trained if k.endswith("/harrell_c")]
    assert {"fused", "clinical_cox"} < set(models)
    assert {"fused/harrell_c", "fused/delta_c_vs_clinical_cox", "fused/p_vs_clinical_cox",
            "clinical_cox/harrell_c"} <= set(names)
    for k in names:
        assert compared[k] == pytest.approx(trained[k], abs=1e-12), k
    assert not [k for k in [*trained, *compared] if k.startswith(("eval/", "compare/"))]
    for model in models:  # the model run: the same numbers, no prefix, one name each
        run = client.search_runs([exp], f"tags.mlflow.parentRunId = '{job.info.run_id}' and tags.model = '{model}'")[0]
        assert run.info.run_name == model
        for k in shared:
            if f"{model}/{k}" in trained:
                assert run.data.metrics[k] == trained[f"{model}/{k}"], (model, k)
        assert "cindex_pooled" not in run.data.metrics and set(HEADLINE_TAGS) <= set(run.data.tags)
        folds = client.search_runs([exp], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert sorted(f.info.run_name for f in folds) == [f"{model} · fold 1 of 2", f"{model} · fold 2 of 2"]

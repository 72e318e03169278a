"""The run report spread over a training job's run tree: each model run carries its own metrics (one name each, no
model prefix), the paired difference from the reference with CI and p, readable headline tags and its own plots;
the job run carries the one-row-per-model comparison (CSV + HTML artifacts, ``<model>/...`` metrics)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import paired_bootstrap_difference
from omics_risk.evaluation.run_report import build_run_report, within_fold_ranks
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.ui_view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, HEADLINE_TAGS, VIEW_TAG
N_BOOT = 25


def _data(n: int, seed: int) -> tuple[MultimodalData, dict[str, np.ndarray], np.ndarray]:
    """Weibull PH patients and the out-of-fold risks of three models (scale differs per fold)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 1000 * (-np.log(rng.uniform(size=n)) / np.exp(x)) ** (1 / 1.5)
    c = rng.uniform(0, 2500, n)
    patients = pd.Index([f"RR{i:04d}" for i in range(n)])
    data = MultimodalData(patients=patients, clinical=pd.DataFrame({"age": rng.normal(60, 5, n)}, index=patients),
                          modalities={}, present=pd.DataFrame({"clinical": True}, index=patients),
                          time=np.minimum(t, c), event=(t <= c).astype(float), endpoint="rfs")
    folds = rng.permutation(np.arange(n) % 5)
    scale = np.array([1.0, 4.0, 0.3, 2.0, 7.0])[folds]
    risks = {"fused": (x + rng.normal(0, 0.4, n)) * scale, "clinical_cox": (x + rng.normal(0, 1.5, n)) * scale,
             "coxnet_ct": rng.normal(size=n)}
    return data, risks, folds


@pytest.mark.slow
def test_each_model_run_gets_its_metrics_difference_tags_and_plots(tmp_path: Path, mlflow_template_db: Path) -> None:
    data, risks, folds = _data(n=120, seed=2)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mu.clear_protected_identifiers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mu.start_run_tree("train", uri=uri, run_name="job", parent_run_id=None,
                               patient_ids=list(data.patients)) as job:
            runs = {}
            for name in risks:
                with mu.start_model_run(name) as r:
                    runs[name] = r.info.run_id
            rep = build_run_report(risks, data, output_dir=tmp_path / "eval", horizons=[365, 730], folds=folds,
                                   n_boot=N_BOOT, seed=1, mlflow_run=True)
    mu.clear_protected_identifiers()
    assert rep.model_runs == runs
    client = MlflowClient(uri)
    t, e = data.time, data.event.astype(bool)
    ranks = {m: within_fold_ranks(r, folds) for m, r in risks.items()}
    diff, p = paired_bootstrap_difference(t, e, ranks["fused"], ranks["clinical_cox"], n_boot=N_BOOT, seed=1)

    fused = client.get_run(runs["fused"]).data
    assert fused.metrics["harrell_c"] == pytest.approx(rep.metrics["fused"]["harrell_c"].value)
    assert fused.metrics["harrell_c_ci_low"] == pytest.approx(rep.metrics["fused"]["harrell_c"].low)
    assert fused.metrics["auc_730d"] == pytest.approx(rep.metrics["fused"]["auc_730d"].value)
    assert (fused.metrics["delta_c_vs_clinical_cox"], fused.metrics["delta_c_vs_clinical_cox_ci_high"],
            fused.metrics["p_vs_clinical_cox"]) == pytest.approx((diff.value, diff.high, p))
    assert "logrank_p" in fused.metrics and not [k for k in fused.metrics if k.startswith("logrank_p_ci")]
    assert not [k for k in fused.metrics if "/" in k]  # a model run's names carry no model prefix
    c = rep.metrics["fused"]["harrell_c"]
    assert fused.tags[HEADLINE_TAGS[0]] == f"{c.value:.3f} ({c.low:.3f}–{c.high:.3f})"
    assert fused.tags[HEADLINE_TAGS[1]].startswith(f"{diff.value:+.3f} (") and "vs clinical_cox" in \
        fused.tags[HEADLINE_TAGS[1]]
    ref = client.get_run(runs["clinical_cox"]).data
    assert ref.tags[HEADLINE_TAGS[1]] == "reference" and "delta_c_vs_clinical_cox" not in ref.metrics
    for name, run_id in runs.items():  # every model's own KM and td-AUC plots
        arts = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert any(a.startswith("plots/km_") for a in arts) and any(a.startswith("plots/td_auc") for a in arts), arts

    logged = client.get_run(job.info.run_id).data
    assert logged.metrics["fused/harrell_c"] == fused.metrics["harrell_c"]
    assert logged.metrics["coxnet_ct/p_vs_clinical_cox"] == client.get_run(runs["coxnet_ct"]).data.metrics[
        "p_vs_clinical_cox"]
    assert "fused/uno_c" not in logged.metrics  # the full metric set lives on the model runs
    assert logged.tags["best model"].startswith("fused: C ")
    arts = {a.path for a in client.list_artifacts(job.info.run_id, "evaluation")}
    assert {"evaluation/comparison.csv", "evaluation/comparison.html", "evaluation/report.html"} <= arts
    html = (tmp_path / "eval" / "comparison.html").read_text(encoding="utf-8")
    assert "ΔC vs clinical_cox (95% CI)" in html and "0.000 (0.000" not in html
    exp = client.get_experiment(client.get_run(job.info.run_id).info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND and "p_vs_clinical_cox" in exp.tags[VIEW_TAG]

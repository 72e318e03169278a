"""The Hydra sweep parent run: real multiruns of a tiny ``@hydra.main`` app in a subprocess (basic launcher grid and
an Optuna study), whose jobs open their run tree with ``start_run_tree`` and must nest under one parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from omics_risk.tracking.hydra_callbacks import (
    PARENT_RUN_ENV,
    SWEEP_RUN_FILE,
    MlflowSweepCallback,
    parent_run_id_for_job,
    sweep_parent_for_job,
)
from omics_risk.tracking.mlflow_utils import LEVEL_TAG

APP = """
import hydra
from omegaconf import DictConfig

from omics_risk.tracking.mlflow_utils import safe_log_metrics, start_fold_run, start_model_run, start_run_tree


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    score = 0.5 + 0.1 * float(cfg.x)
    with start_run_tree(cfg.tracking.experiment, uri=cfg.tracking.uri, cfg=cfg, patient_ids=["PO0001"]):
        with start_model_run("toy", params={"width": 4}):
            with start_fold_run(0):
                for epoch in range(2):
                    safe_log_metrics({"train/loss": 1.0 / (epoch + 1)}, step=epoch)
                if cfg.fail_on is not None and float(cfg.x) == float(cfg.fail_on):
                    raise RuntimeError("job failed on purpose")
        safe_log_metrics({cfg.optimized_metric: score})
    return score


if __name__ == "__main__":
    main()
"""

CONFIG = """
x: 1
fail_on: null
optimized_metric: val/cindex
tracking:
  uri: {uri}
  experiment: sweep-test
hydra:
  run:
    dir: {root}/outputs/run
  sweep:
    dir: {root}/multirun
    subdir: job${{hydra.job.num}}
  job_logging:
    root:
      level: WARNING
  callbacks:
    mlflow_sweep:
      _target_: omics_risk.tracking.hydra_callbacks.MlflowSweepCallback
      experiment_name: ${{tracking.experiment}}
      tracking_uri: ${{tracking.uri}}
      metric: ${{optimized_metric}}
"""


@pytest.fixture
def app(tmp_path: Path, mlflow_template_db: Path) -> tuple[Path, str]:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG.format(uri=uri, root=tmp_path))
    (tmp_path / "app.py").write_text(APP)
    return tmp_path, uri


def _run(root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OMICS_RISK_MLFLOW"))}
    return subprocess.run(
        [sys.executable, str(root / "app.py"), "-m", *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True, encoding="utf-8",
        timeout=300,
    )


def _sweep_runs(uri: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run], list[mlflow.entities.Run]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(LEVEL_TAG) == "sweep"]
    assert len(parents) == 1, [r.data.tags.get(LEVEL_TAG) for r in runs]
    parent = parents[0]
    jobs = sorted((r for r in runs if r.data.tags.get(LEVEL_TAG) == "job"), key=lambda r: r.data.tags["hydra.job.num"])
    others = [r for r in runs if r.data.tags.get(LEVEL_TAG) in ("model", "fold")]
    return parent, jobs, others


def _summary(uri: str, run_id: str, tmp: Path) -> pd.DataFrame:
    path = MlflowClient(uri).download_artifacts(run_id, "sweep/summary.csv", str(tmp))
    return pd.read_csv(path)


@pytest.mark.slow
def test_grid_sweep_nests_every_job_under_one_parent(app: tuple[Path, str]) -> None:
    root, uri = app
    proc = _run(root, "x=1,2", "hydra/launcher=basic")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, jobs, others = _sweep_runs(uri)
    assert len(jobs) == 2
    assert [j.data.tags["mlflow.parentRunId"] for j in jobs] == [parent.info.run_id] * 2
    assert [j.data.tags["hydra.job.override_dirname"] for j in jobs] == ["x=1", "x=2"]
    assert [j.info.run_name for j in jobs] == ["x=1", "x=2"]
    assert [j.data.params["x"] for j in jobs] == ["1", "2"]
    job_ids = {j.info.run_id for j in jobs}
    models = [r for r in others if r.data.tags[LEVEL_TAG] == "model"]
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in models) == sorted(job_ids)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"sweep.x": "1,2"}
    assert parent.data.tags["hydra.sweep.dir"] == str((root / "multirun").resolve())
    assert parent.data.metrics["best/val/cindex"] == pytest.approx(0.7)
    assert (parent.data.metrics["sweep/n_jobs"], parent.data.metrics["sweep/n_failed"]) == (2.0, 0.0)
    assert parent.data.tags["best_run_id"] == jobs[1].info.run_id
    info = yaml.safe_load((root / "multirun" / SWEEP_RUN_FILE).read_text())
    assert info["run_id"] == parent.info.run_id and info["tracking_uri"] == uri
    table = _summary(uri, parent.info.run_id, root / "dl")
    assert table["job"].tolist() == [0, 1]
    assert table["val/cindex"].tolist() == pytest.approx([0.6, 0.7])
    assert table["status"].tolist() == ["FINISHED", "FINISHED"]
    arts = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/multirun.yaml" in arts
    # each job logged its own resolved config and .hydra folder
    job_arts = {a.path for a in MlflowClient(uri).list_artifacts(jobs[0].info.run_id, "hydra")}
    assert {"hydra/config.yaml", "hydra/overrides.yaml"} <= job_arts


@pytest.mark.slow
def test_failed_job_marks_its_run_and_the_parent_failed(app: tuple[Path, str]) -> None:
    root, uri = app
    proc = _run(root, "x=1,2", "fail_on=2")
    assert proc.returncode != 0 and "job failed on purpose" in proc.stderr
    parent, jobs, others = _sweep_runs(uri)
    assert [j.info.status for j in jobs] == ["FINISHED", "FAILED"]
    assert sorted(r.info.status for r in others) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert parent.info.status == "FAILED"  # the sweep crashed: the exit hook ended the parent


@pytest.mark.slow
def test_optuna_sweep_logs_optimization_results(app: tuple[Path, str]) -> None:
    root, uri = app
    proc = _run(
        root,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.sampler.seed=3",
        "x=choice(1,3)",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, jobs, _ = _sweep_runs(uri)
    assert len(jobs) == 2
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"sweep.x": "choice(1,3)"}
    results = yaml.safe_load((root / "multirun" / "optimization_results.yaml").read_text())
    arts = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/optimization_results.yaml" in arts
    values = [j.data.metrics["val/cindex"] for j in jobs]
    assert parent.data.metrics["best/val/cindex"] == pytest.approx(max(values))
    assert results["best_value"] == pytest.approx(max(values))


def test_parent_lookup_outside_a_sweep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    monkeypatch.delenv("OMICS_RISK_MLFLOW_SWEEP_FILE", raising=False)
    assert parent_run_id_for_job() is None
    monkeypatch.setenv(PARENT_RUN_ENV, "a" * 32)
    assert parent_run_id_for_job() == "a" * 32
    info = tmp_path / SWEEP_RUN_FILE
    info.write_text('{"run_id": "b", "tracking_uri": "sqlite:///x.db", "experiment_id": "1", "sweep_dir": "/s"}')
    monkeypatch.setenv("OMICS_RISK_MLFLOW_SWEEP_FILE", str(info))
    parent = sweep_parent_for_job()
    assert (parent.run_id, parent.tracking_uri, parent.experiment_id) == ("b", "sqlite:///x.db", "1")


def test_search_space_params() -> None:
    optuna_cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"model.lr": "tag(log, interval(1e-4, 1e-2))"}}}})
    assert MlflowSweepCallback._search_space(optuna_cfg, []) == {"sweep.model.lr": "tag(log, interval(1e-4, 1e-2))"}
    grid = MlflowSweepCallback._search_space(OmegaConf.create({}), ["x=1,2", "+y=range(3)", "z=5"])
    assert grid == {"sweep.x": "1,2", "sweep.y": "range(3)"}
    with pytest.raises(ValueError, match="mode"):
        MlflowSweepCallback(mode="best")

"""train.py's last lines: where summary.json, report.html and the MLflow runs are, as paths to copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from omics_risk.cli_outputs import run_outputs_text


def test_the_run_outputs_are_named_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # another test's mlflow.set_tracking_uri may have set it
    out = tmp_path / "outputs" / "rfs" / "now"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"report": str(out / "evaluation" / "report.html")}))
    cfg = OmegaConf.create({"paths": {"output_dir": str(out), "root_dir": str(tmp_path)},
                            "tracking": {"enabled": True, "uri": None}})
    text = run_outputs_text(cfg)
    assert f"summary:  {out / 'summary.json'}" in text and f"{out / 'summary.csv'}" in text
    assert f"report:   {out / 'evaluation' / 'report.html'}" in text
    assert f"ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'} --port 5000" in text
    cfg.tracking.uri = "http://mlflow.example:5000"
    assert "MLflow:   open http://mlflow.example:5000 in a browser" in run_outputs_text(cfg)
    cfg.tracking.enabled = False
    assert "MLflow" not in run_outputs_text(cfg)


def test_several_prediction_times_list_each_report(tmp_path: Path) -> None:
    for slug in ("postop1", "preop"):
        (tmp_path / slug / "evaluation").mkdir(parents=True)
        (tmp_path / slug / "evaluation" / "report.html").write_text("<html/>")
    (tmp_path / "summary.json").write_text(json.dumps({"prediction_times": []}))
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path), "root_dir": str(tmp_path)},
                            "tracking": {"enabled": False}})
    reports = [line for line in run_outputs_text(cfg).splitlines() if "report:" in line]
    assert [r.split()[1] for r in reports] == [str(tmp_path / s / "evaluation" / "report.html")
                                               for s in ("postop1", "preop")]


def test_a_local_store_gives_the_experiment_page_with_the_headline_view(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = MlflowClient(tracking_uri=uri).create_experiment("omics-risk")
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run"), "root_dir": str(tmp_path)},
                            "tracking": {"enabled": True, "uri": uri, "experiment": "omics-risk"}})
    text = run_outputs_text(cfg)
    assert f"then open http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning" in text
    assert "viewStateShareKey=" in text

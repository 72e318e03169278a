"""Logging an evaluation's files and metrics to MLflow through the identifier-guarded helpers of
:mod:`omics_risk.tracking.mlflow_utils` (PNGs under ``plots/``; metrics in batches MLflow accepts)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from omics_risk.tracking import mlflow_utils as mu

__all__ = ["log_outputs"]


def log_outputs(paths: Mapping[str, Path], *, run_id: str | None = None, artifact_path: str | None = None,
                metrics: Mapping[str, float] | None = None) -> None:
    """Log files as artifacts (PNGs under ``<artifact_path>/plots``) and metrics, through the identifier-guarded
    helpers, to ``run_id`` or the active run."""
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no active MLflow run to log the evaluation to: pass run_id=")
        run_id = active.info.run_id
    client = MlflowClient()
    for path in paths.values():
        path = Path(path)
        if not path.is_file():
            continue
        sub = "/".join(p for p in (artifact_path, "plots" if path.suffix == ".png" else None) if p) or None
        client.log_artifact(run_id, str(path), sub)
    if metrics:
        finite = {k: v for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for start in range(0, len(finite), 500):  # MLflow batches are capped at 1000 entries
            chunk = dict(list(finite.items())[start:start + 500])
            mu.safe_log_metrics(chunk, run_id=run_id)


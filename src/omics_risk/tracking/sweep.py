"""Where a Hydra sweep's MLflow parent run lives, read by every job of the sweep.

:class:`~omics_risk.tracking.hydra_callbacks.MlflowSweepCallback` writes ``mlflow_sweep_run.json`` into the sweep
directory; :func:`~omics_risk.tracking.mlflow_utils.start_run` finds it here to nest the job's run under it. A module
of its own so that the callback and ``start_run`` both import it, not each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

__all__ = [
    "PARENT_RUN_ENV",
    "SWEEP_FILE_ENV",
    "SWEEP_RUN_FILE",
    "SweepParent",
    "parent_run_id_for_job",
    "read_sweep_parent",
    "sweep_parent_for_job",
]

SWEEP_RUN_FILE = "mlflow_sweep_run.json"
#: Set in the launcher process during a sweep; inherited by local job processes (basic, joblib launchers).
PARENT_RUN_ENV = "OMICS_RISK_MLFLOW_PARENT_RUN_ID"
SWEEP_FILE_ENV = "OMICS_RISK_MLFLOW_SWEEP_FILE"
_MAX_WALK_UP = 6


@dataclass(frozen=True)
class SweepParent:
    """Where a sweep's parent run lives."""

    run_id: str
    tracking_uri: str
    experiment_id: str
    sweep_dir: str


def read_sweep_parent(path: Path) -> SweepParent:
    """The sweep parent recorded in ``mlflow_sweep_run.json`` at ``path``."""
    d = json.loads(path.read_text())
    return SweepParent(**{k: str(d[k]) for k in ("run_id", "tracking_uri", "experiment_id", "sweep_dir")})


def sweep_parent_for_job() -> SweepParent | None:
    """The sweep parent run of the running Hydra job, or None (single run, or a sweep without the callback).

    Looks for ``mlflow_sweep_run.json`` in the job's output directory and its parents (the sweep directory),
    then in the file named by ``$OMICS_RISK_MLFLOW_SWEEP_FILE``, then at ``$OMICS_RISK_MLFLOW_PARENT_RUN_ID``.
    """
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN and OmegaConf.select(hc, "runtime.output_dir", default=None):
            here = Path(hc.runtime.output_dir).resolve()
            for folder in [here, *here.parents][:_MAX_WALK_UP]:
                if (folder / SWEEP_RUN_FILE).is_file():
                    return read_sweep_parent(folder / SWEEP_RUN_FILE)
    path = os.environ.get(SWEEP_FILE_ENV)
    if path and Path(path).is_file():
        return read_sweep_parent(Path(path))
    run_id = os.environ.get(PARENT_RUN_ENV)
    if run_id:
        return SweepParent(run_id, os.environ.get("MLFLOW_TRACKING_URI", ""), "", "")
    return None


def parent_run_id_for_job() -> str | None:
    """Run id to nest this job's run under (``mlflow.start_run(parent_run_id=...)``), or None."""
    parent = sweep_parent_for_job()
    return parent.run_id if parent is not None else None

"""One MLflow parent run per Hydra sweep, with every job's run nested under it.

Register the callback in ``configs/hydra/default.yaml``::

    hydra:
      callbacks:
        mlflow_sweep:
          _target_: omics_risk.tracking.hydra_callbacks.MlflowSweepCallback
          experiment_name: ${tracking.experiment}
          tracking_uri: ${tracking.uri}
          metric: ${optimized_metric}

``on_multirun_start`` creates the parent run with the client API (no fluent run is left active in the launcher
process) and writes ``mlflow_sweep_run.json`` (run id, tracking URI, experiment id) into the sweep directory;
the jobs find it from their own output directory, which works for the basic and joblib launchers and for
submitit on a shared file system. ``on_multirun_end`` attaches ``optimization_results.yaml`` (Optuna sweeper)
and ``multirun.yaml``, a table of the child runs' target metric (``sweep/summary.csv``) and the best value, then
ends the parent. Should the sweeper itself crash, an exit hook marks the parent ``FAILED``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from omics_risk.tracking.mlflow_utils import (
    LEVEL_TAG,
    check_identifiers,
    fit_length,
    flatten_params,
    setup_experiment,
    tracking_uri,
)
from omics_risk.tracking.sweep import (
    PARENT_RUN_ENV,
    SWEEP_FILE_ENV,
    SWEEP_RUN_FILE,
    SweepParent,
    parent_run_id_for_job,
    read_sweep_parent,
    sweep_parent_for_job,
)

__all__ = [
    "PARENT_RUN_ENV",
    "SWEEP_RUN_FILE",
    "MlflowSweepCallback",
    "SweepParent",
    "parent_run_id_for_job",
    "sweep_parent_for_job",
]

log = logging.getLogger(__name__)

def _task_overrides(config: DictConfig) -> list[str]:
    return [str(o) for o in (OmegaConf.select(config, "hydra.overrides.task", default=None) or [])]


class MlflowSweepCallback(Callback):
    """Hydra callback: a parent MLflow run for a multirun / Optuna sweep (see the module docstring).

    Args:
        experiment_name: MLflow experiment of the sweep (the jobs join it).
        tracking_uri: tracking URI; ``None`` follows :func:`~omics_risk.tracking.mlflow_utils.tracking_uri`
            (``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``).
        metric: child-run metric to summarise (the sweep's ``optimized_metric``); defaults to the config's
            ``optimized_metric`` key.
        mode: ``max`` or ``min``, which value of ``metric`` is best; the Optuna sweeper's ``direction`` wins.
        run_name: parent run name; default ``sweep <date>/<time>`` from the sweep directory.
        root: directory of the default SQLite database (default: the current directory).
    """

    def __init__(
        self,
        experiment_name: str = "omics-risk",
        tracking_uri: str | None = None,
        metric: str | None = None,
        mode: str = "max",
        run_name: str | None = None,
        root: str | None = None,
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.metric = metric
        self.mode = mode
        self.run_name = run_name
        self.root = root
        self._parent: SweepParent | None = None

    # -- Hydra hooks --------------------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri(self.tracking_uri, self.root or Path.cwd())
        exp_id = setup_experiment(self.experiment_name, uri)
        client = MlflowClient(uri)
        overrides = _task_overrides(config)
        tags = {
            LEVEL_TAG: "sweep",
            "hydra.sweep.dir": str(sweep_dir),
            "hydra.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_", default="")),
            "hydra.launcher": str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
            "hydra.overrides": fit_length(" ".join(overrides), 8000),
        }
        name = self.run_name or f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
        check_identifiers([name], what="run name")
        check_identifiers(tags, tags.values(), what="tag")
        run = client.create_run(exp_id, run_name=name, tags=tags)
        self._parent = SweepParent(run.info.run_id, uri, exp_id, str(sweep_dir))
        params = self._search_space(config, overrides)
        if params:
            check_identifiers(params, params.values(), what="param")
            items = [Param(k, v) for k, v in params.items()]
            client.log_batch(run.info.run_id, params=items)
        info_file = sweep_dir / SWEEP_RUN_FILE
        info_file.write_text(json.dumps(asdict(self._parent), indent=1))
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        os.environ[SWEEP_FILE_ENV] = str(info_file)
        atexit.register(self._abort)
        log.info("MLflow sweep parent run %s (experiment %s) at %s", run.info.run_id, self.experiment_name, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = self._parent
        if parent is None:
            info = Path(str(config.hydra.sweep.dir)).resolve() / SWEEP_RUN_FILE
            if not info.is_file():
                log.warning("no MLflow sweep parent run to finish (%s missing)", info)
                return
            parent = read_sweep_parent(info)
        client = MlflowClient(parent.tracking_uri)
        sweep_dir = Path(parent.sweep_dir)
        for name in ("optimization_results.yaml", "multirun.yaml"):
            if (sweep_dir / name).is_file():
                client.log_artifact(parent.run_id, str(sweep_dir / name), "sweep")
        metric = self.metric or OmegaConf.select(config, "optimized_metric", default=None)
        table = self.child_summary(client, parent, metric)
        status = "FINISHED"
        if len(table):
            client.log_text(parent.run_id, table.to_csv(index=False), "sweep/summary.csv")
            n_failed = int((table["status"] == "FAILED").sum())
            client.log_metric(parent.run_id, "sweep/n_jobs", float(len(table)))
            client.log_metric(parent.run_id, "sweep/n_failed", float(n_failed))
            status = "FAILED" if n_failed == len(table) else "FINISHED"
            if metric and table[metric].notna().any():
                best = self._best(config, table, metric)
                client.log_metric(parent.run_id, f"best/{metric}", float(best[metric]))
                client.set_tag(parent.run_id, "best_run_id", str(best["run_id"]))
                client.set_tag(parent.run_id, "best_overrides", str(best["overrides"]))
        client.set_terminated(parent.run_id, status=status)
        self._cleanup()

    # -- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _search_space(config: DictConfig, overrides: list[str]) -> dict[str, str]:
        """The swept parameters: the Optuna search space, else the comma-separated overrides of a grid."""
        space = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        if space:
            return {f"sweep.{k}": v for k, v in flatten_params(space).items()}
        grid = {}
        for o in overrides:
            key, _, value = o.partition("=")
            if "," in value or value.startswith(("range(", "choice(", "interval(", "glob(")):
                grid[f"sweep.{key.lstrip('+~')}"] = value
        return grid

    @staticmethod
    def child_summary(client: MlflowClient, parent: SweepParent, metric: str | None) -> pd.DataFrame:
        """One row per job run nested under the parent: run id and name, status, job number, overrides, metric."""
        runs, token = [], None
        while True:
            page = client.search_runs(
                [parent.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'",
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        rows = []
        for r in runs:
            num = r.data.tags.get("hydra.job.num")
            rows.append(
                {
                    "job": int(num) if num is not None and num.isdigit() else None,
                    "run_id": r.info.run_id,
                    "run_name": r.info.run_name,
                    "status": r.info.status,
                    "overrides": r.data.tags.get("hydra.job.override_dirname", ""),
                    **({metric: r.data.metrics.get(metric)} if metric else {}),
                }
            )
        columns = ["job", "run_id", "run_name", "status", "overrides", *([metric] if metric else [])]
        table = pd.DataFrame(rows, columns=columns)
        return table.sort_values(["job", "run_name"], na_position="last", kind="mergesort").reset_index(drop=True)

    def _best(self, config: DictConfig, table: pd.DataFrame, metric: str) -> pd.Series:
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        # grid sweeps, or multi-objective Optuna studies (a list of directions): the configured mode
        maximise = direction.lower().startswith("max") if isinstance(direction, str) else self.mode == "max"
        values = table[metric].astype(float)
        return table.loc[values.idxmax() if maximise else values.idxmin()]

    def _cleanup(self) -> None:
        for var in (PARENT_RUN_ENV, SWEEP_FILE_ENV):
            os.environ.pop(var, None)
        atexit.unregister(self._abort)
        self._parent = None

    def _abort(self) -> None:
        """Exit hook: the sweep ended without ``on_multirun_end`` (the sweeper raised), so the parent failed."""
        if self._parent is None:
            return
        try:
            MlflowClient(self._parent.tracking_uri).set_terminated(self._parent.run_id, status="FAILED")
        except Exception as err:  # best effort at interpreter exit
            log.warning("could not mark sweep parent run %s FAILED: %s", self._parent.run_id, err)
        self._parent = None

"""Where a finished ``train.py`` run put its results: the last lines it prints, so nobody has to look for them.

The Hydra output folder has a timestamp in its name and the MLflow store lives elsewhere; a newcomer after
``make demo`` needs summary.json, report.html and the command that opens the MLflow UI, with paths to copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

__all__ = ["run_outputs_text"]


def _mlflow_command() -> str:
    """``mlflow`` of this environment when it is beside the running Python (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.is_file() else "mlflow"


def run_outputs_text(cfg: DictConfig) -> str:
    """The closing lines of a training run: summary.json (and summary.csv), report.html, the MLflow UI command.

    Empty for the trials of a sweep (``-m``): their folders are listed by the sweeper.
    """
    if HydraConfig.initialized() and HydraConfig.get().mode != RunMode.RUN:
        return ""
    out = Path(str(cfg.paths.output_dir)).resolve()
    lines = ["", "Results of this run:"]
    summary_file = out / "summary.json"
    reports: list[str] = []
    if summary_file.is_file():
        lines.append(f"  summary:  {summary_file}  (every metric; the full table is {out / 'summary.csv'})")
        report = json.loads(summary_file.read_text()).get("report")
        # several prediction times: one report per time, in its own sub-folder
        reports = [str(report)] if report else sorted(str(p) for p in out.glob("*/evaluation/report.html"))
    lines += [f"  report:   {r}  (open it in a browser)" for r in reports]
    if cfg.tracking.enabled:
        from omics_risk.tracking.mlflow_utils import tracking_uri  # lazy: mlflow; train.py imports this module early

        uri = tracking_uri(cfg.tracking.uri, Path(str(cfg.paths.root_dir)))
        if uri.startswith("sqlite:"):
            page = _experiment_page(uri, OmegaConf.select(cfg, "tracking.experiment"), "http://127.0.0.1:5000")
            lines.append(f"  MLflow:   {_mlflow_command()} ui --backend-store-uri {uri} --port 5000")
            lines.append(f"            then open {page}")
        else:  # a server: its address (looking the experiment up could wait on the network)
            lines.append(f"  MLflow:   open {uri} in a browser")
    return "\n".join(lines)


def _experiment_page(uri: str, experiment: str | None, base: str) -> str:
    """The experiment's runs table with the models' headline columns (tracking.ui_view), else the UI's front page.
    Only a local store is read, and only when its file exists (reading would create it)."""
    db = Path(uri.removeprefix("sqlite:///"))
    if experiment is None or not db.is_file():
        return base
    try:
        from mlflow.tracking import MlflowClient  # lazy: mlflow, as above

        from omics_risk.tracking.ui_view import experiment_url  # lazy: imports mlflow

        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # an unreachable server must not fail a finished run's closing lines
        found = None
    return experiment_url(found.experiment_id, base) if found is not None else base

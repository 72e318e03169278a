"""Train the fused multimodal survival model and its baselines on identical folds (see configs/train.yaml).

    python train.py                                  # the demo experiment on data/demo
    python train.py data=cohort data.root=DIR task=rfs
    python train.py -m hparams_search=optuna_cindex  # Optuna sweep, trials nested under one MLflow parent run

A mistyped setting or a missing cohort ends with one line naming the key or path and the fix, and exit status 2
(omics_risk.cli_errors); a run that fails before writing anything leaves no output folder.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from omics_risk.cli_errors import check_data_roots, keeps_output_only_on_success, run_hydra_app
from omics_risk.cli_outputs import run_outputs_text


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@keeps_output_only_on_success
def main(cfg: DictConfig) -> float:
    check_data_roots(cfg, "data.root", "data.validation_root")
    # lazy: torch, MLflow and the models load once the config composed and the cohort exists (a typo costs a second)
    from omics_risk.workflows.training import train

    metrics = train(cfg)
    if text := run_outputs_text(cfg):  # where summary.json, report.html and the MLflow runs are
        print(text)
    return objective(metrics, str(cfg.optimized_metric))


def objective(metrics: dict[str, float], key: str) -> float:
    """The sweep objective ``optimized_metric``; NaN, with a note naming the run's own keys, when the run reports no
    such metric (a dynamic run reports ``dynamic/<model>/<landmark>d/<metric>``), instead of a traceback after a
    finished run."""
    if key in metrics:
        return float(metrics[key])
    close = sorted(k for k in metrics if k.endswith("/cindex"))[:3]
    print(f"note: optimized_metric={key} is not a metric of this run; the sweep objective is NaN (set "
          f"optimized_metric to one of its metrics{', e.g. ' + ', '.join(close) if close else ''})")
    return float("nan")


if __name__ == "__main__":
    run_hydra_app(main, script="train.py", config_dir=Path(__file__).resolve().parent / "configs")

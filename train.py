"""Train the fused multimodal survival model and its baselines on identical folds (see configs/train.yaml).

    python train.py                                  # the demo experiment on data/demo
    python train.py data=cohort data.root=DIR task=rfs
    python train.py -m hparams_search=optuna_cindex  # Optuna sweep, trials nested under one MLflow parent run
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from omics_risk.workflows.training import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return float(metrics[cfg.optimized_metric])


if __name__ == "__main__":
    main()

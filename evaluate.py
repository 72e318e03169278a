"""Evaluate models for statisticians (see configs/evaluate.yaml and docs/evaluation.md).

    python evaluate.py mode=external model_uri=models:/omics-risk-rfs@challenger data.root=DIR   # external validation
    python evaluate.py mode=compare experiment_name=omics-risk reference=clinical_cox            # compare train runs
    python evaluate.py mode=surveillance model_uri=models:/omics-risk-rfs@challenger data.root=DIR  # follow-up

Each prints a table, writes report.html, summary.json, CSVs and PNGs to the Hydra output directory and logs a new
MLflow run. Settings that cannot work (a horizon beyond the follow-up, an unknown model or experiment, a cohort that
does not fit the model, a mistyped key, a missing data.root) end with a one-line error and exit status 2, not a
traceback (omics_risk.cli_errors).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from omics_risk.cli_errors import check_data_roots, keeps_output_only_on_success, run_hydra_app

log = logging.getLogger("evaluate")


def _horizons(cfg: DictConfig) -> list[float] | None:
    h = cfg.horizons
    if h is None:
        return None
    return [float(x) for x in (h if OmegaConf.is_list(h) or isinstance(h, list | tuple) else [h])]


def _pseudonyms(cfg: DictConfig, uri: str) -> Any:
    """What the logged per-patient scores carry (keyed pseudonyms, or raw ids with ``tracking.raw_ids=true``); None
    when nothing is logged (no key file is made then)."""
    from omics_risk.tracking.mlflow_utils import configured_pseudonymiser  # lazy: mlflow, as in evaluate()

    return configured_pseudonymiser(cfg, uri) if cfg.tracking.enabled else None


def evaluate(cfg: DictConfig) -> Any:
    """Run ``cfg.mode`` (``external``, ``compare`` or ``surveillance``); returns its result."""
    # lazy: MLflow, torch and the models load once the config composed (a typo costs a second, not the imports)
    from omics_risk.evaluation.bootstrap import bootstrap_settings  # lazy: as below
    from omics_risk.evaluation.compare import compare_experiment  # lazy: as above
    from omics_risk.evaluation.metrics import EvaluationError  # lazy: as above
    from omics_risk.tracking.mlflow_utils import flatten_params, tracking_uri  # lazy: as above
    from omics_risk.workflows.external import validate_external  # lazy: as above

    out = Path(cfg.paths.output_dir)
    uri = tracking_uri(cfg.tracking.uri, Path(cfg.paths.root_dir))
    ev = cfg.evaluation
    boot = bootstrap_settings(ev)  # evaluation.bootstrap + seed (evaluation.n_boot: the old name)
    settings = {k: v for k, v in flatten_params(cfg).items() if not k.startswith(("paths.", "hydra"))
                and (cfg.mode == "surveillance" or not k.startswith("surveillance."))}
    if cfg.mode == "external":
        if not cfg.data.root:
            raise EvaluationError("mode=external needs the labelled cohort: data.root=DIR")
        if not cfg.model_uri:
            raise EvaluationError("mode=external needs model_uri=models:/NAME@ALIAS (or runs:/RUN_ID/model)")
        result = validate_external(
            str(cfg.model_uri), Path(cfg.data.root), output_dir=out, features_dir=cfg.data.features_dir,
            extract=bool(cfg.data.extract), workers=cfg.data.workers,
            endpoint=OmegaConf.select(cfg, "task.endpoint", default=None),
            response=OmegaConf.select(cfg, "task.response", default=None), horizons=_horizons(cfg),
            train_cohort=cfg.data.train_root, train_features_dir=cfg.data.train_features_dir, n_boot=boot.n,
            seed=boot.seed, alpha=float(ev.alpha), risk_groups=str(ev.risk_groups),
            slow_metrics=bool(ev.slow_metrics), contribution=bool(cfg.contribution.enabled),
            contribution_n_boot=None if cfg.contribution.n_boot is None else int(cfg.contribution.n_boot),
            top_features=bool(cfg.top_features.enabled),
            top_n=int(cfg.top_features.n), top_repeats=int(cfg.top_features.n_repeats),
            per_modality=int(cfg.top_features.per_modality), n_jobs=int(ev.n_jobs), tracking_uri=uri,
            experiment=str(cfg.tracking.experiment), log_to_mlflow=bool(cfg.tracking.enabled), params=settings,
            pseudonyms=_pseudonyms(cfg, uri), progress=bool(cfg.progress))
    elif cfg.mode == "compare":
        runs = cfg.runs if isinstance(cfg.runs, str) else list(cfg.runs)
        result = compare_experiment(
            str(cfg.experiment_name), output_dir=out, reference=str(cfg.reference), runs=runs,
            horizons=_horizons(cfg), n_boot=boot.n, seed=boot.seed, alpha=float(ev.alpha),
            repeat=None if ev.repeat is None else int(ev.repeat), tracking_uri=uri,
            log_to_mlflow=bool(cfg.tracking.enabled), params=settings, n_jobs=int(ev.n_jobs),
            progress=bool(cfg.progress), headline_p=boot.headline_p)
    elif cfg.mode == "surveillance":
        result = _surveillance(cfg, out, uri, settings)
    else:
        raise EvaluationError(f"mode must be 'external', 'compare' or 'surveillance', got {cfg.mode!r}")
    print(result.to_text())
    where = f"\nreport: {result.paths['report']}"
    if result.run_id:
        where += f"\nMLflow run: {result.run_id} ({uri})"
    print(where)
    return result


def _surveillance(cfg: DictConfig, out: Path, uri: str, settings: dict[str, Any]) -> Any:
    """mode=surveillance: simulate the schedules of ``cfg.surveillance`` on ``data.root`` (docs/surveillance.md)."""
    # lazy: as in evaluate()
    from omics_risk.evaluation.metrics import EvaluationError
    from omics_risk.surveillance.settings import SurveillanceSettings  # lazy: as above
    from omics_risk.workflows.surveil import run_surveillance  # lazy: as above

    if not cfg.data.root:
        raise EvaluationError("mode=surveillance needs the cohort: data.root=DIR")
    sv = SurveillanceSettings.from_mapping(OmegaConf.to_container(cfg.surveillance, resolve=True))
    model = str(cfg.model_uri) if sv.risk_from == "model" and cfg.model_uri else None
    return run_surveillance(cfg.data.root, out, settings=sv, model=model, tracking_uri=uri,
                            progress=bool(cfg.progress), log_to_mlflow=bool(cfg.tracking.enabled),
                            experiment=str(cfg.tracking.experiment), params=settings,
                            pseudonyms=_pseudonyms(cfg, uri))


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
@keeps_output_only_on_success
def main(cfg: DictConfig) -> None:
    if cfg.mode == "external":
        check_data_roots(cfg, "data.root", "data.train_root")
    elif cfg.mode == "surveillance":
        check_data_roots(cfg, "data.root")
    evaluate(cfg)


if __name__ == "__main__":
    run_hydra_app(main, script="evaluate.py", config_dir=Path(__file__).resolve().parent / "configs")

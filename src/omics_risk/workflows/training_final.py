"""The end of a training run: the fused model fitted on every patient and logged (a pyfunc in the registry), the
run's evaluation report and model card, and the CT-only network's deep radiomic risk scores.

The logged model records the run's prediction time and longitudinal inputs (:func:`timing_settings`), so that
``omics-risk score`` and external validation build a new cohort's inputs at the same time as training did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.contract import Cohort
from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import BootstrapSettings, Estimate, bootstrap_settings
from omics_risk.evaluation.pooling import within_fold_ranks
from omics_risk.evaluation.run_report import build_run_report, card_metrics, register_model_card
from omics_risk.models.base import capabilities_of
from omics_risk.scoring.frames import to_frame
from omics_risk.workflows.longitudinal_inputs import dynamics_name, longitudinal_inputs
from omics_risk.workflows.prediction_times import prediction_time_of
from omics_risk.workflows.training_models import ModelFactory, _ct_config, _fit

log = logging.getLogger(__name__)


def _run_report(cfg: DictConfig, data: MultimodalData, oof: Mapping[str, np.ndarray], fold_of: np.ndarray,
                names: list[str], output_dir: Path, cohort: Cohort, final_info: Mapping[str, Any],
                metrics: Mapping[str, float], boot: BootstrapSettings | None = None, *,
                active_run: bool) -> dict[str, Any]:
    """The run's evaluation report (metrics with CIs, plots, report.html; logged to the job run) and the model card
    of the registered model, with the run's one bootstrap (``evaluation.bootstrap``) over every CV repeat. A failure
    here is reported in summary.json and the log, never lost, and does not discard the trained models."""
    rep = cfg.evaluation.get("report", None)
    if rep is None or not rep.get("enabled", True):
        return {}
    boot = boot or bootstrap_settings(cfg.evaluation)
    out: dict[str, Any] = {}
    fused = str(cfg.model.name)
    ref = str(cfg.evaluation.reference)
    report_metrics: dict[str, Any] = {}  # the fused model's report metrics, added to its model card
    try:
        risks = {m: oof[m] for m in [fused, *[n for n in names if n != fused]] if np.isfinite(oof[m]).all()}
        report = build_run_report(risks, data, output_dir=output_dir / "evaluation",
                                  horizons=list(cfg.evaluation.horizons), folds=fold_of, fused=fused,
                                  reference=ref, n_boot=boot.n, seed=boot.seed, headline_p=boot.headline_p,
                                  risk_groups=rep.get("risk_groups", "median"),
                                  slow_metrics=bool(rep.get("slow_metrics", False)),
                                  mlflow_run=True if active_run else None,
                                  title=f"{cohort.spec.name}: {cfg.task.endpoint} ({cfg.run_name})",
                                  progress=bool(cfg.training.progress))
        out["report"] = str(report.report)
        report_metrics = {f"{k} (pooled out-of-fold)": v for k, v in report.metrics.get(fused, {}).items()
                          if k not in ("harrell_c", "logrank_p")}  # Harrell's C is in card_metrics already
        if report.notes:
            out["report_notes"] = list(report.notes)
    except Exception as exc:  # the models are trained; a broken report must not lose them
        log.exception("the evaluation report of this run failed")
        out["report_error"] = f"{type(exc).__name__}: {exc}"
    version = final_info.get("registered_version")
    if active_run and version is not None:
        try:
            card = register_model_card(
                registered_model_name=str(final_info["registered_model"]), version=version,
                alias=final_info.get("alias"), data=data,
                metrics={**card_metrics(metrics, fused, n_boot=boot.n), **card_comparison(metrics, fused, ref, boot),
                         **report_metrics},
                cohort=cohort.spec.name, cv=f"{int(cfg.training.cv.folds)}-fold stratified CV x "
                f"{int(cfg.training.cv.repeats)} repeat(s), patient level", endpoint=str(cfg.task.endpoint),
                horizons=list(cfg.evaluation.horizons), output_dir=output_dir)
            out["model_card"] = str(card)
        except Exception as exc:
            log.exception("the model card of the registered model failed")
            out["model_card_error"] = f"{type(exc).__name__}: {exc}"
    return out


def card_comparison(metrics: Mapping[str, float], model: str, reference: str,
                    boot: BootstrapSettings) -> dict[str, Estimate | float]:
    """The model card's rows of ``model``'s comparison with ``reference``, read from ``train()``'s flat metrics (the
    numbers of summary.json, report.html and the forest plot): ΔC with its bootstrap CI, the headline p, and the
    other p of the comparison."""
    key = f"{model}/delta_vs_{reference}"
    if model == reference or key not in metrics:
        return {}
    out: dict[str, Estimate | float] = {
        f"ΔC vs {reference} (pooled out-of-fold, paired bootstrap)": Estimate(
            float(metrics[key]), float(metrics.get(f"{key}_ci_low", np.nan)),
            float(metrics.get(f"{key}_ci_high", np.nan)), int(boot.n))}
    p_boot = float(metrics.get(f"{key}_p", np.nan))
    p_t = float(metrics.get(f"{model}/p_vs_{reference}_corrected_t", np.nan))
    t_first = boot.headline_p == "corrected_t" and np.isfinite(p_t)
    for label, p in ((f"p vs {reference} (corrected resampled t)", p_t), (f"p vs {reference} (paired bootstrap)",
                                                                           p_boot))[:: 1 if t_first else -1]:
        if np.isfinite(p):
            out[label] = p
    return out


def _deep_radiomic_scores(data: MultimodalData, oof: np.ndarray, fold_of: np.ndarray,
                          output_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The CT-only network's out-of-fold log hazard per patient and repeat (the staged design's deep radiomic risk
    score; ``percentile`` is its rank within the fold, comparable across folds), written to the output directory
    with the cohort's ids (a feature for later models of the same patients); the table is returned for logging."""
    frames = [pd.DataFrame({"patient_id": data.patients.astype(str), "repeat": r, "fold": fold_of[r],
                            "deep_radiomic_score": oof[r], "percentile": within_fold_ranks(oof[r], fold_of[r])})
              for r in range(oof.shape[0])]
    path = output_dir / "deep_radiomic_score.csv"
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(path, index=False)
    return path, table


def timing_settings(cfg: DictConfig) -> dict[str, Any]:
    """``log_model``'s ``prediction_time``, ``longitudinal`` and ``derived_inputs`` for this run's task (empty
    without ``task.prediction_time``: the logged model then uses every sample, as before prediction times)."""
    pt = prediction_time_of(cfg)
    if pt is None:
        return {}
    lon = cfg.task.get("longitudinal")
    lon = OmegaConf.to_container(lon, resolve=True) if OmegaConf.is_config(lon) else lon
    return {"prediction_time": pt, "longitudinal": lon or None,
            "derived_inputs": {dynamics_name(q.modality): q.modality for q in longitudinal_inputs(lon)}}


def _final_model(cfg: DictConfig, factories: dict[str, ModelFactory], data: MultimodalData, mu: Any,
                 images: Any = None, *, cohort: Cohort | None = None, store: Path | None = None) -> dict:
    """Fit the fused model on every patient; log it as a pyfunc and register it under the configured alias.

    A CT-image model is fitted with the CT tensors; the pyfunc scores flat frames, which carry no image, so the
    logged model scores every patient as lacking CT (``log_model`` warns, and ``ct_images_in_pyfunc`` is false).
    """
    name = str(cfg.model.name)
    model = factories[name]()
    _fit(model, data, images)
    info: dict[str, Any] = {"final_model": name}
    if capabilities_of(model).images:
        info["ct_images_in_pyfunc"] = False
    out_dir = Path(cfg.paths.output_dir) / "model"
    if hasattr(model, "save"):
        model.save(out_dir)
        info["model_dir"] = str(out_dir)
    if mu is not None:
        from omics_risk.scoring.pyfunc import log_model  # lazy: mlflow, only when the run is tracked

        with mu.start_model_run(f"{name}_final"):
            # The scoring settings travel with the model: the extraction settings of the feature store, the
            # training cohort's profile (time unit, columns), the CT preprocessing, and the training risks for
            # the risk-group cut-offs (scored with the CT tensors for a CT-image model).
            ct = {"ct_config": _ct_config(cfg),
                  "training_risk": model.predict_risk(data, images=images)} if capabilities_of(model).images else {}
            mi = log_model(model, horizons=list(cfg.evaluation.horizons), input_example_frame=to_frame(data),
                           registered_model_name=cfg.tracking.registered_model_name, alias=cfg.tracking.alias,
                           feature_store=store, training_cohort=cohort, **ct, **timing_settings(cfg))
        info.update({"model_uri": mi.model_uri, "registered_model": cfg.tracking.registered_model_name,
                     "alias": cfg.tracking.alias, "registered_version": getattr(mi, "registered_model_version", None)})
    return info

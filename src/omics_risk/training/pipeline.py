"""``train(cfg)``: the fused model and every baseline, cross-validated on identical folds, tracked in MLflow.

This is the composition root behind ``python train.py``: it extracts features (cached), builds the patient-level
data, runs repeated stratified K-fold with every fitted step inside the fold, compares each model against the
reference (clinical Cox) with a paired bootstrap, optionally validates on an external cohort, fits and registers
the final fused model, and writes ``summary.json``. It returns the metrics so sweeps and tests skip the CLI.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import MultimodalData, load_multimodal
from omics_risk.evaluation.metrics import (
    bootstrap_metric,
    harrell_c,
    paired_bootstrap_difference,
    response_auc,
)
from omics_risk.features.clinical import clinical_types
from omics_risk.features.extract import extract_cohort
from omics_risk.models.base import SurvivalModel
from omics_risk.models.baselines import make_baselines
from omics_risk.training.splits import repeated_stratified_folds

log = logging.getLogger(__name__)

__all__ = ["train"]

ModelFactory = Callable[[], SurvivalModel]


def _features(root: Path, features_dir: str | None, cfg: DictConfig) -> Path:
    store = Path(features_dir) if features_dir else root / "features"
    if cfg.extract.run:
        config = OmegaConf.to_container(cfg.extract.config, resolve=True) if cfg.extract.config else None
        summary = extract_cohort(root, store, config=config, workers=cfg.extract.workers,
                                 progress=bool(cfg.training.progress))
        log.info(summary.to_text())
    return store


def _load(root: Path, store: Path, cfg: DictConfig, *, drop_unlabelled: bool = True) -> MultimodalData:
    mods = list(cfg.data.modalities) if cfg.data.modalities else None
    return load_multimodal(root, store, modalities=mods, endpoint=cfg.task.endpoint, response=cfg.task.response,
                           drop_unlabelled=drop_unlabelled)


def _factories(cfg: DictConfig, data: MultimodalData, types: dict[str, Any]) -> dict[str, ModelFactory]:
    """Fresh, unfitted models per fold: the fused model first, then the baselines."""
    mods = data.modality_names

    def fused() -> SurvivalModel:
        extra: dict[str, Any] = {"modalities": mods, "clinical_types": types, "seed": int(cfg.seed),
                                 "device": cfg.training.device}
        if cfg.task.response:
            extra["response_label"] = cfg.task.response
        return instantiate(cfg.model.estimator, **extra)

    factories: dict[str, ModelFactory] = {str(cfg.model.name): fused}
    if cfg.baselines.enabled:
        settings = OmegaConf.to_container(cfg.baselines.settings, resolve=True) or {}
        settings = {**settings, "clinical_types": types, "seed": int(cfg.seed)}
        names = list(make_baselines(mods, "survival", settings))
        for name in names:
            factories[name] = (lambda n=name: make_baselines(mods, "survival", settings)[n])
    return factories


def _fit_predict(model: SurvivalModel, train: MultimodalData, test: MultimodalData,
                 on_epoch: Callable[[int, dict[str, float]], None] | None) -> tuple[np.ndarray, np.ndarray | None]:
    if "on_epoch" in inspect.signature(model.fit).parameters:
        model.fit(train, on_epoch=on_epoch)  # type: ignore[call-arg]
    else:
        model.fit(train)
    risk = np.asarray(model.predict_risk(test), dtype=float)
    response = None
    if test.extra_labels:
        try:
            response = np.asarray(model.predict_response(test), dtype=float)
        except (NotImplementedError, ValueError):
            response = None
    return risk, response


def _tracking(cfg: DictConfig, data: MultimodalData):
    if not cfg.tracking.enabled:
        return None
    from omics_risk.tracking import mlflow_utils as mu

    uri = mu.tracking_uri(cfg.tracking.uri, Path(cfg.paths.root_dir))
    return mu, uri


def _ranked(risk: np.ndarray, folds_of: np.ndarray) -> np.ndarray:
    """Risks made comparable across folds (per-fold percentile ranks) before pooling out-of-fold predictions."""
    out = np.empty_like(risk)
    for f in np.unique(folds_of):
        sel = folds_of == f
        out[sel] = pd.Series(risk[sel]).rank(pct=True).to_numpy()
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Cross-validate the fused model and the baselines on the same folds; return the held-out metrics."""
    from omics_risk.training.device import seed_everything

    seed_everything(int(cfg.seed))
    root = Path(cfg.data.root)
    cohort = load_cohort(root)
    store = _features(root, cfg.data.features_dir, cfg)
    data = _load(root, store, cfg)
    if data.time is None:
        raise ValueError(f"task.endpoint '{cfg.task.endpoint}' must be a survival endpoint; binary endpoints go in "
                         "task.response (trained jointly with the survival head)")
    types = clinical_types(cohort.spec)
    factories = _factories(cfg, data, types)
    folds = repeated_stratified_folds(int(cfg.training.cv.folds), int(cfg.training.cv.repeats), int(cfg.seed),
                                      event=data.event, time=data.time)
    n, n_rep = len(data), int(cfg.training.cv.repeats)
    oof = {name: np.full((n_rep, n), np.nan) for name in factories}
    oof_resp = {name: np.full((n_rep, n), np.nan) for name in factories}
    fold_of = np.full((n_rep, n), -1)
    fold_c: dict[str, list[float]] = {name: [] for name in factories}
    fit_seconds: dict[str, float] = dict.fromkeys(factories, 0.0)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    trk = _tracking(cfg, data)
    mu = trk[0] if trk else None
    job = (mu.start_run_tree(cfg.tracking.experiment, uri=trk[1], run_name=str(cfg.run_name), cfg=cfg,
                             hydra_output_dir=output_dir, patient_ids=list(data.patients),
                             tags={"task": cfg.task.name, "cohort": cohort.spec.name,
                                   "modalities": ",".join(data.modality_names)})
           if mu else nullcontext())
    metrics: dict[str, float] = {}
    with job:
        for name, make in factories.items():
            model_ctx = mu.start_model_run(name, params=make().describe()) if mu else nullcontext()
            with model_ctx:
                for fold in tqdm(folds, desc=f"{name}", disable=not cfg.training.progress, unit="fold"):
                    train_d, test_d = data.subset(fold.train), data.subset(fold.test)
                    fold_ctx = mu.start_fold_run(fold.tag) if (mu and cfg.tracking.log_folds) else nullcontext()
                    with fold_ctx:
                        on_epoch = ((lambda e, m: mu.safe_log_metrics(m, step=e)) if (mu and cfg.tracking.log_folds)
                                    else None)
                        t0 = time.perf_counter()
                        risk, resp = _fit_predict(make(), train_d, test_d, on_epoch)
                        fit_seconds[name] += time.perf_counter() - t0
                        c = harrell_c(test_d.time, test_d.event, risk)
                        fold_c[name].append(c)
                        oof[name][fold.repeat, fold.test] = risk
                        fold_of[fold.repeat, fold.test] = fold.fold
                        if resp is not None:
                            oof_resp[name][fold.repeat, fold.test] = resp
                        if mu and cfg.tracking.log_folds:
                            mu.safe_log_metrics({"test/cindex": c})
                summary_m = _summarise(name, data, oof[name], oof_resp[name], fold_of, fold_c[name], cfg)
                summary_m[f"{name}/fit_seconds"] = fit_seconds[name]
                metrics.update(summary_m)
                if mu:
                    mu.safe_log_metrics({k.split("/", 1)[1]: v for k, v in summary_m.items()})
        ref = str(cfg.evaluation.reference)
        comparisons = _compare(data, oof, fold_of, ref, cfg) if ref in oof else {}
        metrics.update(comparisons)
        external = _external(cfg, factories, data) if cfg.data.validation_root else {}
        metrics.update(external)
        final_info = _final_model(cfg, factories, data, mu) if cfg.training.final_model else {}
        table = _table(metrics, list(factories), ref)
        summary = {"task": cfg.task.name, "endpoint": cfg.task.endpoint, "cohort": cohort.spec.name,
                   "n_patients": n, "n_events": int(data.event.sum()), "modalities": data.modality_names,
                   "cv": {"folds": int(cfg.training.cv.folds), "repeats": n_rep}, "reference": ref,
                   "metrics": metrics, "table": table.to_dict(orient="records"), **final_info}
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        table.to_csv(output_dir / "summary.csv", index=False)
        print(_format_table(table, cfg))
        if mu:
            import mlflow

            mlflow.log_artifact(str(output_dir / "summary.json"))
            mlflow.log_artifact(str(output_dir / "summary.csv"))
            mu.safe_log_metrics({str(cfg.optimized_metric): metrics.get(str(cfg.optimized_metric), float("nan"))})
    return metrics


def _summarise(name: str, data: MultimodalData, oof: np.ndarray, oof_resp: np.ndarray, fold_of: np.ndarray,
               fold_c: list[float], cfg: DictConfig) -> dict[str, float]:
    """Mean per-fold C, and a bootstrap CI of the pooled out-of-fold C (percentile ranks within folds)."""
    pooled = _ranked(oof[0], fold_of[0])
    est = bootstrap_metric(harrell_c, data.time, data.event, pooled, n_boot=int(cfg.evaluation.bootstrap),
                           seed=int(cfg.seed))
    out = {f"{name}/cindex": float(np.nanmean(fold_c)), f"{name}/cindex_sd": float(np.nanstd(fold_c)),
           f"{name}/cindex_pooled": est.value, f"{name}/cindex_ci_low": est.low, f"{name}/cindex_ci_high": est.high}
    if data.extra_labels and np.isfinite(oof_resp[0]).any():
        label = next(iter(data.extra_labels.values()))
        auc = bootstrap_metric(response_auc, label, oof_resp[0], n_boot=int(cfg.evaluation.bootstrap),
                               seed=int(cfg.seed))
        out.update({f"{name}/response_auc": auc.value, f"{name}/response_auc_ci_low": auc.low,
                    f"{name}/response_auc_ci_high": auc.high})
    return out


def _compare(data: MultimodalData, oof: dict[str, np.ndarray], fold_of: np.ndarray, ref: str,
             cfg: DictConfig) -> dict[str, float]:
    """Paired bootstrap of the pooled out-of-fold C-index difference of every model against ``ref``."""
    out: dict[str, float] = {}
    ref_risk = _ranked(oof[ref][0], fold_of[0])
    for name, risk in oof.items():
        if name == ref:
            continue
        diff, p = paired_bootstrap_difference(data.time, data.event, _ranked(risk[0], fold_of[0]), ref_risk,
                                              n_boot=int(cfg.evaluation.bootstrap), seed=int(cfg.seed))
        out.update({f"{name}/delta_vs_{ref}": diff.value, f"{name}/delta_vs_{ref}_ci_low": diff.low,
                    f"{name}/delta_vs_{ref}_ci_high": diff.high, f"{name}/delta_vs_{ref}_p": p})
    return out


def _external(cfg: DictConfig, factories: dict[str, ModelFactory], data: MultimodalData) -> dict[str, float]:
    """Train on the whole training cohort, evaluate on the validation cohort (the trial's 200 + 100 design)."""
    vroot = Path(cfg.data.validation_root)
    vstore = _features(vroot, cfg.data.validation_features_dir, cfg)
    vdata = load_multimodal(vroot, vstore, modalities=data.modality_names, endpoint=cfg.task.endpoint,
                            response=cfg.task.response)
    out: dict[str, float] = {"external/n_patients": float(len(vdata))}
    for name, make in factories.items():
        risk, _ = _fit_predict(make(), data, vdata, None)
        est = bootstrap_metric(harrell_c, vdata.time, vdata.event, risk, n_boot=int(cfg.evaluation.bootstrap),
                               seed=int(cfg.seed))
        out.update({f"external/{name}/cindex": est.value, f"external/{name}/cindex_ci_low": est.low,
                    f"external/{name}/cindex_ci_high": est.high})
    return out


def _final_model(cfg: DictConfig, factories: dict[str, ModelFactory], data: MultimodalData, mu: Any) -> dict:
    """Fit the fused model on every patient; log it as a pyfunc and register it under the configured alias."""
    name = str(cfg.model.name)
    model = factories[name]()
    model.fit(data)
    info: dict[str, Any] = {"final_model": name}
    out_dir = Path(cfg.paths.output_dir) / "model"
    if hasattr(model, "save"):
        model.save(out_dir)
        info["model_dir"] = str(out_dir)
    if mu is not None:
        from omics_risk.scoring.frames import to_frame
        from omics_risk.scoring.pyfunc import log_model

        with mu.start_model_run(f"{name}_final"):
            mi = log_model(model, horizons=list(cfg.evaluation.horizons), input_example_frame=to_frame(data),
                           registered_model_name=cfg.tracking.registered_model_name, alias=cfg.tracking.alias)
        info.update({"model_uri": mi.model_uri, "registered_model": cfg.tracking.registered_model_name,
                     "alias": cfg.tracking.alias, "registered_version": getattr(mi, "registered_model_version", None)})
    return info


def _table(metrics: dict[str, float], names: list[str], ref: str) -> pd.DataFrame:
    rows = []
    for name in names:
        row = {"model": name, "cindex": metrics.get(f"{name}/cindex"), "cindex_sd": metrics.get(f"{name}/cindex_sd"),
               "cindex_pooled": metrics.get(f"{name}/cindex_pooled"),
               "ci_low": metrics.get(f"{name}/cindex_ci_low"), "ci_high": metrics.get(f"{name}/cindex_ci_high"),
               f"delta_vs_{ref}": metrics.get(f"{name}/delta_vs_{ref}"), "p": metrics.get(f"{name}/delta_vs_{ref}_p"),
               "fit_seconds": metrics.get(f"{name}/fit_seconds")}
        if f"{name}/response_auc" in metrics:
            row["response_auc"] = metrics[f"{name}/response_auc"]
        if f"external/{name}/cindex" in metrics:
            row["external_cindex"] = metrics[f"external/{name}/cindex"]
        rows.append(row)
    return pd.DataFrame(rows)


def _format_table(table: pd.DataFrame, cfg: DictConfig) -> str:
    head = (f"\nHeld-out metrics ({cfg.training.cv.folds}-fold CV x {cfg.training.cv.repeats}, endpoint "
            f"{cfg.task.endpoint}; C-index = mean over folds, 95% CI from a bootstrap of pooled out-of-fold risks)")
    return head + "\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}")

"""``train(cfg)``: the fused model and every baseline, cross-validated on identical folds, tracked in MLflow.

This is the composition root behind ``python train.py``: it extracts features (cached), builds the patient-level
data, runs repeated stratified K-fold with every fitted step inside the fold, compares each model against the
reference (clinical Cox) with a paired bootstrap, optionally validates on an external cohort, fits and registers
the final fused model, and writes ``summary.json``. It returns the metrics so sweeps and tests skip the CLI.

CT images (``model=fused_ct``): the fused model encodes the CT scans with a 3D ResNet. ``train`` builds one
:class:`~omics_risk.models.fused.CTImageStore` per cohort (the deterministic :mod:`omics_risk.features.ct`
preprocessing, cached on disk as tensors) and hands it to ``fit`` / ``predict_*`` of every fold, the external
validation and the final model. The tensors are fold-safe: each one depends on its own scan only (fixed HU window,
fixed spacing, crop around its own mask); everything learnt (network weights, batch-norm statistics) is fitted on
the training patients of the fold, and a model only ever fetches the patients of the data it is given.

Response tasks (``task=sclc_response``): the binary response head is trained jointly with the survival head, and
a clinical logistic regression on the same folds (``clinical_logistic``) is the reference for the response AUC.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import (
    BootstrapSettings,
    PairedComparison,
    bootstrap_settings,
    paired_comparison,
    pooled_cindex,
)
from omics_risk.evaluation.compare import log_oof_risks, oof_table
from omics_risk.evaluation.metric_defs import cindex_summary, model_run_metrics
from omics_risk.evaluation.metrics import bootstrap_metric, harrell_c, response_auc
from omics_risk.evaluation.splits import repeated_stratified_folds
from omics_risk.features.clinical import clinical_types
from omics_risk.models.base import InsufficientTrainingData
from omics_risk.privacy import Pseudonymiser
from omics_risk.progress import progress_bar
from omics_risk.workflows.dynamic import run_dynamic
from omics_risk.workflows.inputs import (
    ModelInputs,
    check_ct_cohort,
    ct_images,
    ct_timepoints_of,
    model_inputs,
    prediction_time_summary,
)
from omics_risk.workflows.prediction_times import prediction_time_of, prediction_times_of, run_prediction_times
from omics_risk.workflows.summary_table import format_summary_table
from omics_risk.workflows.training_final import _deep_radiomic_scores, _final_model, _run_report
from omics_risk.workflows.training_models import (
    CT_ONLY,
    RESPONSE_REFERENCE,
    ModelFactory,
    ResponseReference,
    _check_optimized_metric,
    _ct_config,  # noqa: F401 (the benchmarks and tests build a run's pieces from this module)
    _ct_inputs,
    _factories,
    _fit,  # noqa: F401 (as above)
    _fit_predict,
    _uses_ct_images,
)

log = logging.getLogger(__name__)

__all__ = ["CT_ONLY", "RESPONSE_REFERENCE", "ResponseReference", "ct_timepoints_of", "train"]

#: The cohort checks of a CT-image model (kept under their old name here).
_check_ct_cohort = check_ct_cohort


def _inputs(cfg: DictConfig, cohort: Cohort, store: Path, *, modalities: list[str] | None = None,
            what: str = "training", images: bool = True) -> ModelInputs:
    """The cohort's model inputs under the run's config: features extracted into ``store`` (``extract.run``), the
    data of ``data.modalities`` (or ``modalities``) with the task's endpoints, and the CT tensors of a CT-image model
    (checked, preprocessed and loaded into memory, so that epochs read no file; not when ``images`` is false)."""
    config = None
    if cfg.extract.run and cfg.extract.config:
        config = OmegaConf.to_container(cfg.extract.config, resolve=True)
    if modalities is None and cfg.data.modalities:
        modalities = list(cfg.data.modalities)
    ct = _ct_inputs(cfg) if images and _uses_ct_images(cfg) else None
    return model_inputs(cohort, store, extract=bool(cfg.extract.run), extract_config=config, modalities=modalities,
                        endpoint=cfg.task.endpoint, response=cfg.task.response, ct=ct, what=what,
                        workers=cfg.extract.workers, progress=bool(cfg.training.progress),
                        prediction_time=prediction_time_of(cfg), longitudinal=cfg.task.get("longitudinal"))


def _store(root: Path, features_dir: str | None) -> Path:
    return Path(features_dir) if features_dir else root / "features"


def _ct_images(cfg: DictConfig, cohort: Cohort, store: Path, *, what: str = "training") -> Any:
    """The cohort's CT tensors as an ``images=`` provider (None when the model encodes no CT image)."""
    if not _uses_ct_images(cfg):
        return None
    return ct_images(cohort, store, _ct_inputs(cfg), what=what, workers=cfg.extract.workers,
                     progress=bool(cfg.training.progress))


def _tracking(cfg: DictConfig, data: MultimodalData):
    if not cfg.tracking.enabled:
        return None
    from omics_risk.tracking import mlflow_utils as mu  # lazy: mlflow, only when the run is tracked

    uri = mu.tracking_uri(cfg.tracking.uri, Path(cfg.paths.root_dir))
    return mu, uri


def _pseudonymiser(cfg: DictConfig, uri: str) -> Pseudonymiser:
    """What the per-patient artifacts of a tracked run carry (see ``configured_pseudonymiser``); warns on raw ids."""
    from omics_risk.tracking.mlflow_utils import configured_pseudonymiser  # lazy: mlflow, as in _tracking

    ids = configured_pseudonymiser(cfg, uri)
    if ids.raw:
        log.warning("tracking.raw_ids=true: the out-of-fold tables logged to MLflow keep the cohort's patient ids "
                    "(runs tagged omics_risk.patient_ids=raw)")
    return ids


def _leave_out(cfg: DictConfig, name: str, why: str, mu: Any) -> None:
    """A model that cannot be fitted on a fold is left out of the run's comparisons, loudly; the run's main model
    (the one ``optimized_metric`` names) cannot be, and stops the run."""
    main = str(OmegaConf.select(cfg, "optimized_metric", default="") or "").split("/", 1)[0]
    if name == main:
        raise InsufficientTrainingData(f"{name}, the model optimized_metric names, cannot be trained: {why}; use "
                                       "fewer folds (training.cv.folds), a larger cohort or an earlier prediction "
                                       "time")
    log.warning("%s is left out of this run (not in summary.json's table, the report or the comparisons): %s",
                name, why)
    if mu:
        mu.safe_set_tags({"left_out": why[:500]})


def train(cfg: DictConfig) -> dict[str, float]:
    """Cross-validate the fused model and the baselines on the same folds; return the held-out metrics."""
    from omics_risk.models.device import seed_everything  # lazy: torch, loaded once a run starts

    if prediction_times_of(cfg) is not None:  # several prediction times side by side: one complete run each
        return run_prediction_times(cfg, train)
    seed_everything(int(cfg.seed))
    boot = bootstrap_settings(cfg.evaluation)  # a removed key fails here, before any training
    root = Path(cfg.data.root)
    cohort = load_cohort(root)  # parsed once: extraction, data, CT images and the logged model all read it
    store = _store(root, cfg.data.features_dir)
    if (pt := prediction_time_of(cfg)) is not None and pt.at == "landmarks":  # dynamic prediction: its own run
        return run_dynamic(cfg, cohort, store, pt)
    inputs = _inputs(cfg, cohort, store)
    data, images = inputs.data, inputs.images
    if data.time is None:
        raise ValueError(f"task.endpoint '{cfg.task.endpoint}' must be a survival endpoint; binary endpoints go in "
                         "task.response (trained jointly with the survival head)")
    types = clinical_types(cohort.spec)
    ct_tps = inputs.ct_timepoints
    factories = _factories(cfg, data, types, ct_tps)
    _check_optimized_metric(cfg, list(factories))
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
    ids = _pseudonymiser(cfg, trk[1]) if trk else None  # per-patient artifacts carry pseudonyms, never raw ids
    id_tags = ids.tags() if ids else {}
    job = (mu.start_run_tree(cfg.tracking.experiment, uri=trk[1], run_name=str(cfg.run_name), cfg=cfg,
                             hydra_output_dir=output_dir, patient_ids=list(data.patients),
                             tags={"task": cfg.task.name, "cohort": cohort.spec.name,
                                   "modalities": ",".join(data.modality_names), **id_tags,
                                   **({"prediction_time": inputs.prediction_time.describe()}
                                      if inputs.prediction_time is not None else {})})
           if mu else nullcontext())
    metrics: dict[str, float] = {}
    left_out: dict[str, str] = {}  # model -> why it could not be cross-validated (too small a training fold)
    with job:
        for name, make in factories.items():
            model_ctx = mu.start_model_run(name, params=make().describe(), tags=id_tags) if mu else nullcontext()
            with model_ctx:
                for fold in progress_bar(folds, desc=f"{name}", disable=not cfg.training.progress, unit="fold"):
                    train_d, test_d = data.subset(fold.train), data.subset(fold.test)
                    fold_ctx = (mu.start_fold_run(fold.tag, name=mu.fold_run_name(
                        name, fold.fold, int(cfg.training.cv.folds), fold.repeat, n_rep))
                        if (mu and cfg.tracking.log_folds) else nullcontext())
                    with fold_ctx:
                        on_epoch = ((lambda e, m: mu.safe_log_metrics(m, step=e)) if (mu and cfg.tracking.log_folds)
                                    else None)
                        t0 = time.perf_counter()
                        try:
                            risk, resp = _fit_predict(make(), train_d, test_d, on_epoch, images)
                        except InsufficientTrainingData as exc:  # a fold too small for this model: leave it out
                            left_out[name] = f"training fold {fold.tag} ({len(train_d)} patients): {exc}"
                            break
                        fit_seconds[name] += time.perf_counter() - t0
                        c = harrell_c(test_d.time, test_d.event, risk)
                        fold_c[name].append(c)
                        oof[name][fold.repeat, fold.test] = risk
                        fold_of[fold.repeat, fold.test] = fold.fold
                        if resp is not None:
                            oof_resp[name][fold.repeat, fold.test] = resp
                        if mu and cfg.tracking.log_folds:
                            mu.safe_log_metrics({"test/cindex": c})
                if name in left_out:
                    _leave_out(cfg, name, left_out[name], mu)
                    continue
                summary_m = _summarise(name, data, oof[name], oof_resp[name], fold_of, fold_c[name], boot)
                summary_m[f"{name}/fit_seconds"] = fit_seconds[name]
                metrics.update(summary_m)
                if mu:
                    report_on = (rep := cfg.evaluation.get("report")) is not None and bool(rep.get("enabled", True))
                    mu.safe_log_metrics(model_run_metrics(summary_m, report=report_on))  # each metric once
                    # Out-of-fold predictions for `evaluate.py mode=compare` (keyed pseudonyms, artifact only).
                    label = next(iter(data.extra_labels.values())) if data.extra_labels else None
                    log_oof_risks(oof_table(data.patients, data.time, data.event, oof[name], fold_of,
                                            response=oof_resp[name], label=label), pseudonyms=ids)
        factories = {name: make for name, make in factories.items() if name not in left_out}
        oof = {name: risk for name, risk in oof.items() if name not in left_out}
        ref = str(cfg.evaluation.reference)
        paired = _compare(data, oof, fold_of, ref, boot) if ref in oof else {}
        metrics.update(_comparison_metrics(paired, ref))
        scores_file, scores = (_deep_radiomic_scores(data, oof[CT_ONLY], fold_of, output_dir) if CT_ONLY in oof
                               else (None, None))
        external = _external(cfg, factories, data, images, boot) if cfg.data.validation_root else {}
        metrics.update(external)
        final_info = _final_model(cfg, factories, data, mu, images, cohort=cohort, store=store) \
            if cfg.training.final_model else {}
        table = _table(metrics, list(factories), ref, boot)
        summary = {"task": cfg.task.name, "endpoint": cfg.task.endpoint, "cohort": cohort.spec.name,
                   "n_patients": n, "n_events": int(data.event.sum()), "modalities": data.modality_names,
                   "cv": {"folds": int(cfg.training.cv.folds), "repeats": n_rep}, "reference": ref,
                   "statistics": _statistics(boot, n_rep, int(cfg.training.cv.folds)), "metrics": metrics,
                   "table": table.to_dict(orient="records"), **final_info,
                   **({"prediction_time": pts} if (pts := prediction_time_summary(inputs)) else {}),
                   **({"models_left_out": left_out} if left_out else {})}
        if cfg.task.response:
            label = data.extra_labels.get(str(cfg.task.response))
            summary["response"] = {"endpoint": str(cfg.task.response),
                                   "n_labelled": int(np.isfinite(label).sum()) if label is not None else 0,
                                   "n_responders": int(np.nansum(label)) if label is not None else 0}
        if images is not None:
            summary["ct_images"] = {"patients": len(images), "timepoints": ct_tps,
                                    "deep_radiomic_score": str(scores_file) if scores_file else None}
        summary.update(_run_report(cfg, data, oof, fold_of, list(factories), output_dir, cohort, final_info,
                                   metrics, boot, active_run=mu is not None))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        table.to_csv(output_dir / "summary.csv", index=False)
        print(_format_table(table, cfg, boot))
        if mu:
            import mlflow  # lazy: only a tracked run logs

            mlflow.log_artifact(str(output_dir / "summary.json"))
            mlflow.log_artifact(str(output_dir / "summary.csv"))
            if scores_file is not None:  # the local file keeps the cohort's ids; the logged copy has pseudonyms
                mu.log_patient_table(scores, scores_file.name, pseudonyms=ids)
            mu.safe_log_metrics({str(cfg.optimized_metric): metrics.get(str(cfg.optimized_metric), float("nan"))})
    return metrics



def _statistics(boot: BootstrapSettings, repeats: int, folds: int) -> dict[str, Any]:
    """summary.json's account of how its CIs and p-values were computed."""
    return {"bootstrap": int(boot.n), "seed": int(boot.seed), "repeats_pooled": int(repeats),
            "headline_p": boot.headline_p,
            "pooling": (f"C-index, CI, difference and p over all {repeats} CV repeats: per repeat the out-of-fold "
                        "risks are ranked within their test folds and pooled; a bootstrap resample draws the same "
                        "patients in every repeat, and its statistic is the mean over the repeats"
                        if repeats > 1 else "one CV repeat: pooled out-of-fold risks ranked within their test folds"),
            "corrected_t": (f"corrected resampled t-test (Nadeau & Bengio 2003) on the {repeats * folds} per-fold "
                            "C-index differences: covers training variability as well as patient sampling")}


def _summarise(name: str, data: MultimodalData, oof: np.ndarray, oof_resp: np.ndarray, fold_of: np.ndarray,
               fold_c: list[float], boot: BootstrapSettings) -> dict[str, float]:
    """Mean per-fold C, and the pooled out-of-fold C over every repeat (percentile ranks within folds) with its
    bootstrap CI; with a response endpoint, the pooled out-of-fold response AUC (mean over repeats) with its CI."""
    est = pooled_cindex(data.time, data.event, oof, fold_of, n_boot=boot.n, seed=boot.seed)
    out = cindex_summary(name, fold_c, est)
    if data.extra_labels and np.isfinite(oof_resp).any():
        out.update(_response_metrics(name, next(iter(data.extra_labels.values())), oof_resp, boot))
    return out


def _mean_auc(label: np.ndarray, probs: np.ndarray) -> float:
    """Response AUC of each repeat's probabilities (columns), averaged over the repeats."""
    return float(np.mean([response_auc(label, probs[:, j]) for j in range(probs.shape[1])]))


def _response_metrics(name: str, label: np.ndarray, prob: np.ndarray, boot: BootstrapSettings) -> dict[str, float]:
    """Response AUC of ``prob`` (``(n,)`` or ``(n_repeats, n)``, averaged over repeats) with its percentile-bootstrap
    CI over the labelled patients (resampled jointly across repeats)."""
    probs = np.atleast_2d(np.asarray(prob, dtype=float))
    probs = probs[np.isfinite(probs).any(axis=1)]  # repeats that predicted a response
    ok = np.isfinite(label) & np.isfinite(probs).all(axis=0)
    auc = bootstrap_metric(_mean_auc, label[ok], probs[:, ok].T, n_boot=boot.n, seed=boot.seed)
    return {f"{name}/response_auc": auc.value, f"{name}/response_auc_ci_low": auc.low,
            f"{name}/response_auc_ci_high": auc.high, f"{name}/response_n": float(ok.sum())}


def _compare(data: MultimodalData, oof: dict[str, np.ndarray], fold_of: np.ndarray, ref: str,
             boot: BootstrapSettings) -> dict[str, PairedComparison]:
    """Every model against ``ref`` on the pooled out-of-fold risks of all repeats (paired bootstrap, and the
    corrected resampled t-test of the per-fold differences): the one comparison every output reports."""
    return {name: paired_comparison(data.time, data.event, risk, oof[ref], fold_of, n_boot=boot.n, seed=boot.seed,
                                    headline_p=boot.headline_p)
            for name, risk in oof.items() if name != ref}


def _comparison_metrics(paired: Mapping[str, PairedComparison], ref: str) -> dict[str, float]:
    """summary.json's keys of the comparisons: ``<model>/delta_vs_<ref>`` (+ CI, ``_p``: the paired bootstrap p),
    ``<model>/p_vs_<ref>_corrected_t`` and ``<model>/delta_vs_<ref>_corrected_t`` (+ CI): the mean per-fold
    difference with its corrected t interval."""
    out: dict[str, float] = {}
    for name, pc in paired.items():
        d = pc.difference
        out.update({f"{name}/delta_vs_{ref}": d.value, f"{name}/delta_vs_{ref}_ci_low": d.low,
                    f"{name}/delta_vs_{ref}_ci_high": d.high, f"{name}/delta_vs_{ref}_p": pc.p_bootstrap})
        if pc.fold_difference is not None:
            f = pc.fold_difference
            out.update({f"{name}/delta_vs_{ref}_corrected_t": f.value,
                        f"{name}/delta_vs_{ref}_corrected_t_ci_low": f.low,
                        f"{name}/delta_vs_{ref}_corrected_t_ci_high": f.high,
                        f"{name}/p_vs_{ref}_corrected_t": pc.p_corrected_t})
    return out


def _external(cfg: DictConfig, factories: dict[str, ModelFactory], data: MultimodalData,
              images: Any = None, boot: BootstrapSettings | None = None) -> dict[str, float]:
    """Train on the whole training cohort, evaluate on the validation cohort (the trial's 200 + 100 design)."""
    boot = boot or bootstrap_settings(cfg.evaluation)
    vroot = Path(cfg.data.validation_root)
    vinputs = _inputs(cfg, load_cohort(vroot), _store(vroot, cfg.data.validation_features_dir),
                      modalities=data.modality_names, what="validation", images=images is not None)
    vdata, vimages = vinputs.data, vinputs.images
    out: dict[str, float] = {"external/n_patients": float(len(vdata))}
    for name, make in factories.items():
        risk, resp = _fit_predict(make(), data, vdata, None, images, vimages)
        est = bootstrap_metric(harrell_c, vdata.time, vdata.event, risk, n_boot=boot.n, seed=boot.seed)
        out.update({f"external/{name}/cindex": est.value, f"external/{name}/cindex_ci_low": est.low,
                    f"external/{name}/cindex_ci_high": est.high})
        if resp is not None and vdata.extra_labels:
            out.update(_response_metrics(f"external/{name}", next(iter(vdata.extra_labels.values())), resp, boot))
    return out


def _headline_p(metrics: Mapping[str, float], name: str, ref: str, boot: BootstrapSettings) -> float | None:
    """The p that tables headline (``evaluation.headline_p``; the bootstrap p where the t-test could not run)."""
    t = metrics.get(f"{name}/p_vs_{ref}_corrected_t")
    if boot.headline_p == "corrected_t" and t is not None and np.isfinite(t):
        return t
    return metrics.get(f"{name}/delta_vs_{ref}_p")


def _table(metrics: Mapping[str, float], names: list[str], ref: str,
           boot: BootstrapSettings | None = None) -> pd.DataFrame:
    """summary.csv: ``p`` is the headline p (``evaluation.headline_p``), ``p_bootstrap`` and ``p_corrected_t``
    both p-values of the comparison with the reference."""
    boot = boot or BootstrapSettings()
    rows = []
    for name in names:
        row = {"model": name, "cindex": metrics.get(f"{name}/cindex"), "cindex_sd": metrics.get(f"{name}/cindex_sd"),
               "cindex_pooled": metrics.get(f"{name}/cindex_pooled"),
               "ci_low": metrics.get(f"{name}/cindex_ci_low"), "ci_high": metrics.get(f"{name}/cindex_ci_high"),
               f"delta_vs_{ref}": metrics.get(f"{name}/delta_vs_{ref}"), "p": _headline_p(metrics, name, ref, boot),
               "p_bootstrap": metrics.get(f"{name}/delta_vs_{ref}_p"),
               "p_corrected_t": metrics.get(f"{name}/p_vs_{ref}_corrected_t"),
               "fit_seconds": metrics.get(f"{name}/fit_seconds")}
        if any(f"{m}/response_auc" in metrics for m in names):
            row.update({"response_auc": metrics.get(f"{name}/response_auc"),
                        "response_auc_ci_low": metrics.get(f"{name}/response_auc_ci_low"),
                        "response_auc_ci_high": metrics.get(f"{name}/response_auc_ci_high")})
        if f"external/{name}/cindex" in metrics:
            row["external_cindex"] = metrics[f"external/{name}/cindex"]
        if f"external/{name}/response_auc" in metrics:
            row["external_response_auc"] = metrics[f"external/{name}/response_auc"]
        rows.append(row)
    return pd.DataFrame(rows)


def _format_table(table: pd.DataFrame, cfg: DictConfig, boot: BootstrapSettings | None = None) -> str:
    """The printed table, within 120 columns (summary.csv, named at its end, keeps every column)."""
    boot = boot or bootstrap_settings(cfg.evaluation)
    reps = int(cfg.training.cv.repeats)
    pooled = f"mean over the {reps} repeats of " if reps > 1 else ""
    p_what = ("corrected resampled t-test of the per-fold differences" if boot.headline_p == "corrected_t"
              else "paired bootstrap")
    head = (f"Held-out metrics ({cfg.training.cv.folds}-fold CV x {reps}, endpoint "
            f"{cfg.task.endpoint}): pooled C = {pooled}the C-index of the pooled out-of-fold risks with its 95% "
            f"bootstrap CI ({boot.n} resamples, seed {boot.seed}); diff = its paired difference from the reference "
            f"(p: {p_what}); C mean±sd over folds")
    if "response_auc" in table:
        head += f"; response AUC ({cfg.task.response}) of pooled out-of-fold probabilities with its 95% CI"
    return format_summary_table(table, head=head, csv_path=Path(cfg.paths.output_dir) / "summary.csv")

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

import dataclasses
import inspect
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.data.multimodal import MultimodalData, load_multimodal
from omics_risk.evaluation.metric_defs import cindex_summary, model_run_metrics
from omics_risk.evaluation.metrics import (
    bootstrap_metric,
    harrell_c,
    paired_bootstrap_difference,
    response_auc,
)
from omics_risk.evaluation.splits import repeated_stratified_folds
from omics_risk.features.clinical import clinical_types
from omics_risk.features.extract import extract_cohort
from omics_risk.models.base import SurvivalModel
from omics_risk.models.baselines import make_baselines
from omics_risk.privacy import Pseudonymiser
from omics_risk.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = ["ResponseReference", "ct_timepoints_of", "train"]

ModelFactory = Callable[[], SurvivalModel]
#: Model row of the staged design's CT-only network (its out-of-fold risk is the deep radiomic risk score).
CT_ONLY = "ct_deep"
#: Model row of the response reference (clinical logistic regression) for tasks with a response endpoint.
RESPONSE_REFERENCE = "clinical_logistic"


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


# ------------------------------------------------------------------------------------------------ CT images
def _uses_ct_images(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "model.estimator.use_ct_images", default=False))


def _ct_modality(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "model.estimator.ct_modality", default=None) or "ct")


def _ct_config(cfg: DictConfig) -> Any:
    from omics_risk.features.ct import CTConfig

    node = OmegaConf.select(cfg, "model.ct", default=None)
    return CTConfig.from_mapping(node) if node is not None else CTConfig()


def ct_timepoints_of(cohort: Cohort, modality: str = "ct") -> list[str]:
    """The timepoints of a cohort's CT samples, earliest first (by the median sample day of each timepoint)."""
    rows = cohort.samples_of(modality)
    if rows.empty:
        return []
    day = pd.to_numeric(rows["day"], errors="coerce") if "day" in rows else pd.Series(np.nan, index=rows.index)
    order = day.groupby(rows["timepoint"].astype(str)).median().fillna(np.inf)
    return sorted(order.index, key=lambda tp: (order[tp], tp))


def _check_ct_cohort(cohort: Cohort, modality: str, timepoints: list[str] | None, what: str) -> list[str]:
    """The cohort's CT timepoints; an error when the modality is no image modality or lacks a wanted timepoint."""
    spec = cohort.spec.modality(modality)
    fmt = getattr(spec, "format", None) if spec is not None else None
    if fmt != "image":
        raise ValueError(f"model.estimator.use_ct_images needs an image modality '{modality}' in the {what} cohort's "
                         f"cohort.yaml (found: {fmt or 'none'}); set model.estimator.ct_modality or use model=fused")
    found = ct_timepoints_of(cohort, modality)
    if not found:
        raise ValueError(f"the {what} cohort ({cohort.root}) has no '{modality}' sample: nothing to train the CT "
                         "encoder on; use model=fused")
    missing = [tp for tp in (timepoints or []) if tp not in found]
    if missing:
        raise ValueError(f"model.estimator.ct_timepoints {missing} are not CT timepoints of the {what} cohort "
                         f"(has: {', '.join(found)}); set model.estimator.ct_timepoints=null to use the cohort's")
    return found


def _preprocess_scan(ct_cfg: Any, cache_dir: str, image: str, mask: str) -> str | None:
    """Fill the tensor cache for one scan (runs in a worker process); the error message if it cannot be read."""
    from omics_risk.features.ct import CTTensorCache

    try:
        CTTensorCache(ct_cfg, cache_dir)(image, mask)
    except Exception as exc:  # reported per scan; the patient then lacks that CT
        return f"{type(exc).__name__}: {exc}"
    return None


def _ct_images(cfg: DictConfig, cohort: Cohort, store: Path, *, what: str = "training") -> Any:
    """The cohort's CT tensors as an ``images=`` provider (None when the model encodes no CT image).

    Scans not in the tensor cache yet are preprocessed first, in parallel (``extract.workers``); then every patient's
    tensors are loaded into memory, so training epochs read no file.
    """
    if not _uses_ct_images(cfg):
        return None
    from omics_risk.features.ct import CTTensorCache
    from omics_risk.models.fused import CTImageStore

    modality = _ct_modality(cfg)
    wanted = OmegaConf.select(cfg, "model.estimator.ct_timepoints", default=None)
    _check_ct_cohort(cohort, modality, list(wanted) if wanted else None, what)
    ct_cfg = _ct_config(cfg)
    cache_dir = Path(cfg.model.ct_cache_dir) if OmegaConf.select(cfg, "model.ct_cache_dir") else (
        store / "cache" / "ct_tensors")
    rows = cohort.samples_of(modality)
    cache = CTTensorCache(ct_cfg, cache_dir)
    scans = [(str(cohort.path(r.path)), str(cohort.path(r.mask_path))) for r in rows.itertuples()]
    todo = [s for s in scans if not (cache.dir / f"{cache.key(*s)}.pt").is_file()]
    progress = bool(cfg.training.progress)
    if todo:
        from joblib import Parallel, delayed

        workers = cfg.extract.workers or os.cpu_count() or 1
        n_jobs = max(1, min(int(workers), len(todo)))
        log.info("preprocessing %d of %d CT scans of the %s cohort into %s (%d workers)", len(todo), len(scans),
                 what, cache.dir, n_jobs)
        jobs = (delayed(_preprocess_scan)(ct_cfg, str(cache_dir), image, mask) for image, mask in todo)
        errors = Parallel(n_jobs=n_jobs)(progress_bar(jobs, total=len(todo), desc=f"CT tensors ({what})",
                                                      unit="scan", disable=not progress))
        failed = [(s[0], e) for s, e in zip(todo, errors, strict=True) if e is not None]
        if failed:
            shown = "; ".join(f"{Path(f).name}: {e}" for f, e in failed[:3])
            warnings.warn(f"{len(failed)} of {len(scans)} CT scans of the {what} cohort cannot be preprocessed and "
                          f"are left out ({shown}{' ...' if len(failed) > 3 else ''})", stacklevel=2)
    images = CTImageStore(cohort, cfg=ct_cfg, cache_dir=cache_dir, modality=modality)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures were reported above, once
        for pid in progress_bar(list(images), desc=f"loading CT ({what})", unit="patient", disable=not progress):
            images[pid]
    log.info("CT tensors of %d patients (%d scans) of the %s cohort from %s", len(images), len(scans), what,
             cache.dir)
    return images


def _wants_images(model: SurvivalModel) -> bool:
    return bool(getattr(model, "use_ct_images", False))


# ------------------------------------------------------------------------------------------------ models
class ResponseReference(SurvivalModel):
    """A binary baseline fitted on the response endpoint of a survival task (e.g. SCLC response next to PFS).

    The reference for the fused model's response AUC on the same folds: ``predict_response`` is P(response) of the
    wrapped model trained on ``data.extra_labels[response]`` (patients without a label are left out of its fit),
    ``predict_risk`` is 1 - P(response), so its C-index for the survival endpoint is reported too.
    """

    def __init__(self, model: SurvivalModel, response: str, name: str = RESPONSE_REFERENCE):
        self.model = model
        self.response = response
        self.name = name

    def _view(self, data: MultimodalData) -> MultimodalData:
        if self.response not in data.extra_labels:
            raise ValueError(f"response '{self.response}' is not in data.extra_labels "
                             f"(has: {', '.join(data.extra_labels) or 'none'})")
        return dataclasses.replace(data, time=None, event=None, label=data.extra_labels[self.response],
                                   endpoint=self.response)

    def fit(self, data: MultimodalData) -> ResponseReference:
        self.model.fit(self._view(data))
        return self

    def predict_response(self, data: MultimodalData) -> np.ndarray:
        return np.asarray(self.model.predict_response(self._view(data)), dtype=float)

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        return 1.0 - self.predict_response(data)

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "response": self.response}


def _factories(cfg: DictConfig, data: MultimodalData, types: dict[str, Any],
               ct_timepoints: list[str] | None = None) -> dict[str, ModelFactory]:
    """Fresh, unfitted models per fold: the fused model first, then the baselines."""
    mods = data.modality_names
    est = cfg.model.estimator
    extra: dict[str, Any] = {"modalities": mods, "clinical_types": types, "seed": int(cfg.seed),
                             "device": cfg.training.device}
    if cfg.task.response:
        extra["response_label"] = cfg.task.response
        heads = list(OmegaConf.select(cfg, "model.estimator.heads", default=None) or ["cox"])
        if "binary" not in heads:  # a response task trains the response head jointly with the survival head
            extra["heads"] = [*heads, "binary"]
    if _uses_ct_images(cfg):
        if not OmegaConf.select(cfg, "model.estimator.ct_timepoints", default=None):
            extra["ct_timepoints"] = list(ct_timepoints or [])
        if OmegaConf.select(cfg, "model.estimator.ct_in_channels", default=None) is None:
            extra["ct_in_channels"] = 2 if _ct_config(cfg).mask_channel else 1

    def fused() -> SurvivalModel:
        return instantiate(est, **extra)

    factories: dict[str, ModelFactory] = {str(cfg.model.name): fused}
    if _uses_ct_images(cfg) and OmegaConf.select(cfg, "model.deep_radiomic_score", default=False):
        ct_only = {**extra, "modalities": [], "use_clinical": False, "heads": ["cox"], "response_label": None,
                   "name": CT_ONLY}
        factories[CT_ONLY] = lambda: instantiate(est, **ct_only)
    if cfg.baselines.enabled:
        settings = OmegaConf.to_container(cfg.baselines.settings, resolve=True) or {}
        settings = {**settings, "clinical_types": types, "seed": int(cfg.seed)}
        names = list(make_baselines(mods, "survival", settings))
        for name in names:
            factories[name] = (lambda n=name: make_baselines(mods, "survival", settings)[n])
        if cfg.task.response:
            ref = {**settings, "include": ["clinical_cox"], "exclude": None}
            factories[RESPONSE_REFERENCE] = lambda: ResponseReference(
                make_baselines(mods, "binary", ref)["clinical_cox"], str(cfg.task.response))
    return factories


def _check_optimized_metric(cfg: DictConfig, names: list[str]) -> None:
    """Fail before training when ``optimized_metric`` names no model of the run (the sweeper would find nothing)."""
    metric = str(OmegaConf.select(cfg, "optimized_metric", default="") or "")
    if not metric:
        return
    model = metric.removeprefix("external/").split("/", 1)[0]
    if model not in names:
        raise ValueError(f"optimized_metric '{metric}' names no model of this run (models: {', '.join(names)}); "
                         f"set optimized_metric={names[0]}/cindex")


def _fit(model: SurvivalModel, data: MultimodalData, images: Any = None,
         on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> SurvivalModel:
    kwargs: dict[str, Any] = {}
    params = inspect.signature(model.fit).parameters
    if "on_epoch" in params:
        kwargs["on_epoch"] = on_epoch
    if _wants_images(model) and "images" in params:
        kwargs["images"] = images
    return model.fit(data, **kwargs)


def _fit_predict(model: SurvivalModel, train: MultimodalData, test: MultimodalData,
                 on_epoch: Callable[[int, dict[str, float]], None] | None, images: Any = None,
                 test_images: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit on ``train``, score ``test``. ``images`` / ``test_images``: CT providers of the two cohorts (the same
    store for cross-validation folds; ``test_images`` defaults to ``images``) for models that encode CT."""
    _fit(model, train, images, on_epoch)
    kw = {"images": test_images if test_images is not None else images} if _wants_images(model) else {}
    risk = np.asarray(model.predict_risk(test, **kw), dtype=float)
    response = None
    if test.extra_labels:
        try:
            response = np.asarray(model.predict_response(test, **kw), dtype=float)
        except (NotImplementedError, ValueError):
            response = None
    return risk, response


def _tracking(cfg: DictConfig, data: MultimodalData):
    if not cfg.tracking.enabled:
        return None
    from omics_risk.tracking import mlflow_utils as mu

    uri = mu.tracking_uri(cfg.tracking.uri, Path(cfg.paths.root_dir))
    return mu, uri


def _pseudonymiser(cfg: DictConfig, uri: str) -> Pseudonymiser:
    """What the per-patient artifacts of a tracked run carry (see ``configured_pseudonymiser``); warns on raw ids."""
    from omics_risk.tracking.mlflow_utils import configured_pseudonymiser

    ids = configured_pseudonymiser(cfg, uri)
    if ids.raw:
        log.warning("tracking.raw_ids=true: the out-of-fold tables logged to MLflow keep the cohort's patient ids "
                    "(runs tagged omics_risk.patient_ids=raw)")
    return ids


def _ranked(risk: np.ndarray, folds_of: np.ndarray) -> np.ndarray:
    """Risks made comparable across folds (per-fold percentile ranks) before pooling out-of-fold predictions."""
    out = np.empty_like(risk)
    for f in np.unique(folds_of):
        sel = folds_of == f
        out[sel] = pd.Series(risk[sel]).rank(pct=True).to_numpy()
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Cross-validate the fused model and the baselines on the same folds; return the held-out metrics."""
    from omics_risk.models.device import seed_everything

    seed_everything(int(cfg.seed))
    root = Path(cfg.data.root)
    cohort = load_cohort(root)
    store = _features(root, cfg.data.features_dir, cfg)
    data = _load(root, store, cfg)
    if data.time is None:
        raise ValueError(f"task.endpoint '{cfg.task.endpoint}' must be a survival endpoint; binary endpoints go in "
                         "task.response (trained jointly with the survival head)")
    types = clinical_types(cohort.spec)
    ct_tps = (_check_ct_cohort(cohort, _ct_modality(cfg), None, "training") if _uses_ct_images(cfg) else None)
    factories = _factories(cfg, data, types, ct_tps)
    _check_optimized_metric(cfg, list(factories))
    images = _ct_images(cfg, cohort, store)
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
                                   "modalities": ",".join(data.modality_names), **id_tags})
           if mu else nullcontext())
    metrics: dict[str, float] = {}
    with job:
        for name, make in factories.items():
            model_ctx = mu.start_model_run(name, params=make().describe(), tags=id_tags) if mu else nullcontext()
            with model_ctx:
                for fold in progress_bar(folds, desc=f"{name}", disable=not cfg.training.progress, unit="fold"):
                    train_d, test_d = data.subset(fold.train), data.subset(fold.test)
                    fold_ctx = mu.start_fold_run(fold.tag) if (mu and cfg.tracking.log_folds) else nullcontext()
                    with fold_ctx:
                        on_epoch = ((lambda e, m: mu.safe_log_metrics(m, step=e)) if (mu and cfg.tracking.log_folds)
                                    else None)
                        t0 = time.perf_counter()
                        risk, resp = _fit_predict(make(), train_d, test_d, on_epoch, images)
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
                    report_on = (rep := cfg.evaluation.get("report")) is not None and bool(rep.get("enabled", True))
                    mu.safe_log_metrics(model_run_metrics(summary_m, report=report_on))  # each metric once
                    # Out-of-fold predictions for `evaluate.py mode=compare` (keyed pseudonyms, artifact only).
                    from omics_risk.evaluation.compare import log_oof_risks, oof_table

                    label = next(iter(data.extra_labels.values())) if data.extra_labels else None
                    log_oof_risks(oof_table(data.patients, data.time, data.event, oof[name], fold_of,
                                            response=oof_resp[name], label=label), pseudonyms=ids)
        ref = str(cfg.evaluation.reference)
        comparisons = _compare(data, oof, fold_of, ref, cfg) if ref in oof else {}
        metrics.update(comparisons)
        scores_file, scores = (_deep_radiomic_scores(data, oof[CT_ONLY], fold_of, output_dir) if CT_ONLY in oof
                               else (None, None))
        external = _external(cfg, factories, data, images) if cfg.data.validation_root else {}
        metrics.update(external)
        final_info = _final_model(cfg, factories, data, mu, images, cohort=cohort, store=store) \
            if cfg.training.final_model else {}
        table = _table(metrics, list(factories), ref)
        summary = {"task": cfg.task.name, "endpoint": cfg.task.endpoint, "cohort": cohort.spec.name,
                   "n_patients": n, "n_events": int(data.event.sum()), "modalities": data.modality_names,
                   "cv": {"folds": int(cfg.training.cv.folds), "repeats": n_rep}, "reference": ref,
                   "metrics": metrics, "table": table.to_dict(orient="records"), **final_info}
        if cfg.task.response:
            label = data.extra_labels.get(str(cfg.task.response))
            summary["response"] = {"endpoint": str(cfg.task.response),
                                   "n_labelled": int(np.isfinite(label).sum()) if label is not None else 0,
                                   "n_responders": int(np.nansum(label)) if label is not None else 0}
        if images is not None:
            summary["ct_images"] = {"patients": len(images), "timepoints": ct_tps,
                                    "deep_radiomic_score": str(scores_file) if scores_file else None}
        summary.update(_run_report(cfg, data, oof, fold_of, list(factories), output_dir, cohort, final_info,
                                   metrics, active_run=mu is not None))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        table.to_csv(output_dir / "summary.csv", index=False)
        print(_format_table(table, cfg))
        if mu:
            import mlflow

            mlflow.log_artifact(str(output_dir / "summary.json"))
            mlflow.log_artifact(str(output_dir / "summary.csv"))
            if scores_file is not None:  # the local file keeps the cohort's ids; the logged copy has pseudonyms
                mu.log_patient_table(scores, scores_file.name, pseudonyms=ids)
            mu.safe_log_metrics({str(cfg.optimized_metric): metrics.get(str(cfg.optimized_metric), float("nan"))})
    return metrics


def _run_report(cfg: DictConfig, data: MultimodalData, oof: Mapping[str, np.ndarray], fold_of: np.ndarray,
                names: list[str], output_dir: Path, cohort: Cohort, final_info: Mapping[str, Any],
                metrics: Mapping[str, float], *, active_run: bool) -> dict[str, Any]:
    """The run's evaluation report (metrics with CIs, plots, report.html; logged to the job run) and the model card
    of the registered model. A failure here is reported in summary.json and the log, never lost, and does not
    discard the trained models."""
    rep = cfg.evaluation.get("report", None)
    if rep is None or not rep.get("enabled", True):
        return {}
    from omics_risk.evaluation.run_report import build_run_report, card_metrics, register_model_card

    out: dict[str, Any] = {}
    fused = str(cfg.model.name)
    report_metrics: dict[str, Any] = {}  # the fused model's report metrics, added to its model card
    try:
        risks = {m: oof[m][0] for m in [fused, *[n for n in names if n != fused]] if np.isfinite(oof[m][0]).all()}
        report = build_run_report(risks, data, output_dir=output_dir / "evaluation",
                                  horizons=list(cfg.evaluation.horizons), folds=fold_of[0], fused=fused,
                                  reference=str(cfg.evaluation.reference), n_boot=int(rep.get("n_boot", 200)),
                                  seed=int(cfg.seed), risk_groups=rep.get("risk_groups", "median"),
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
                metrics={**card_metrics(metrics, fused, n_boot=int(cfg.evaluation.bootstrap)), **report_metrics},
                cohort=cohort.spec.name, cv=f"{int(cfg.training.cv.folds)}-fold stratified CV x "
                f"{int(cfg.training.cv.repeats)} repeat(s), patient level", endpoint=str(cfg.task.endpoint),
                horizons=list(cfg.evaluation.horizons), output_dir=output_dir)
            out["model_card"] = str(card)
        except Exception as exc:
            log.exception("the model card of the registered model failed")
            out["model_card_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _summarise(name: str, data: MultimodalData, oof: np.ndarray, oof_resp: np.ndarray, fold_of: np.ndarray,
               fold_c: list[float], cfg: DictConfig) -> dict[str, float]:
    """Mean per-fold C, and a bootstrap CI of the pooled out-of-fold C (percentile ranks within folds); with a
    response endpoint, the pooled out-of-fold response AUC with its bootstrap CI."""
    pooled = _ranked(oof[0], fold_of[0])
    est = bootstrap_metric(harrell_c, data.time, data.event, pooled, n_boot=int(cfg.evaluation.bootstrap),
                           seed=int(cfg.seed))
    out = cindex_summary(name, fold_c, est)
    if data.extra_labels and np.isfinite(oof_resp[0]).any():
        out.update(_response_metrics(name, next(iter(data.extra_labels.values())), oof_resp[0], cfg))
    return out


def _response_metrics(name: str, label: np.ndarray, prob: np.ndarray, cfg: DictConfig) -> dict[str, float]:
    """Response AUC of ``prob`` with its percentile-bootstrap CI over the labelled patients."""
    ok = np.isfinite(label) & np.isfinite(prob)
    auc = bootstrap_metric(response_auc, label[ok], prob[ok], n_boot=int(cfg.evaluation.bootstrap),
                           seed=int(cfg.seed))
    return {f"{name}/response_auc": auc.value, f"{name}/response_auc_ci_low": auc.low,
            f"{name}/response_auc_ci_high": auc.high, f"{name}/response_n": float(ok.sum())}


def _deep_radiomic_scores(data: MultimodalData, oof: np.ndarray, fold_of: np.ndarray,
                          output_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The CT-only network's out-of-fold log hazard per patient and repeat (the staged design's deep radiomic risk
    score; ``percentile`` is its rank within the fold, comparable across folds), written to the output directory
    with the cohort's ids (a feature for later models of the same patients); the table is returned for logging."""
    frames = [pd.DataFrame({"patient_id": data.patients.astype(str), "repeat": r, "fold": fold_of[r],
                            "deep_radiomic_score": oof[r], "percentile": _ranked(oof[r], fold_of[r])})
              for r in range(oof.shape[0])]
    path = output_dir / "deep_radiomic_score.csv"
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(path, index=False)
    return path, table


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


def _external(cfg: DictConfig, factories: dict[str, ModelFactory], data: MultimodalData,
              images: Any = None) -> dict[str, float]:
    """Train on the whole training cohort, evaluate on the validation cohort (the trial's 200 + 100 design)."""
    vroot = Path(cfg.data.validation_root)
    vstore = _features(vroot, cfg.data.validation_features_dir, cfg)
    vdata = load_multimodal(vroot, vstore, modalities=data.modality_names, endpoint=cfg.task.endpoint,
                            response=cfg.task.response)
    vimages = _ct_images(cfg, load_cohort(vroot), vstore, what="validation") if images is not None else None
    out: dict[str, float] = {"external/n_patients": float(len(vdata))}
    for name, make in factories.items():
        risk, resp = _fit_predict(make(), data, vdata, None, images, vimages)
        est = bootstrap_metric(harrell_c, vdata.time, vdata.event, risk, n_boot=int(cfg.evaluation.bootstrap),
                               seed=int(cfg.seed))
        out.update({f"external/{name}/cindex": est.value, f"external/{name}/cindex_ci_low": est.low,
                    f"external/{name}/cindex_ci_high": est.high})
        if resp is not None and vdata.extra_labels:
            out.update(_response_metrics(f"external/{name}", next(iter(vdata.extra_labels.values())), resp, cfg))
    return out


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
    if _wants_images(model):
        info["ct_images_in_pyfunc"] = False
    out_dir = Path(cfg.paths.output_dir) / "model"
    if hasattr(model, "save"):
        model.save(out_dir)
        info["model_dir"] = str(out_dir)
    if mu is not None:
        from omics_risk.scoring.frames import to_frame
        from omics_risk.scoring.pyfunc import log_model

        with mu.start_model_run(f"{name}_final"):
            # The scoring settings travel with the model: the extraction settings of the feature store, the
            # training cohort's profile (time unit, columns), the CT preprocessing, and the training risks for
            # the risk-group cut-offs (scored with the CT tensors for a CT-image model).
            ct = {"ct_config": _ct_config(cfg),
                  "training_risk": model.predict_risk(data, images=images)} if _wants_images(model) else {}
            mi = log_model(model, horizons=list(cfg.evaluation.horizons), input_example_frame=to_frame(data),
                           registered_model_name=cfg.tracking.registered_model_name, alias=cfg.tracking.alias,
                           feature_store=store, training_cohort=cohort, **ct)
        info.update({"model_uri": mi.model_uri, "registered_model": cfg.tracking.registered_model_name,
                     "alias": cfg.tracking.alias, "registered_version": getattr(mi, "registered_model_version", None)})
    return info


def _table(metrics: Mapping[str, float], names: list[str], ref: str) -> pd.DataFrame:
    rows = []
    for name in names:
        row = {"model": name, "cindex": metrics.get(f"{name}/cindex"), "cindex_sd": metrics.get(f"{name}/cindex_sd"),
               "cindex_pooled": metrics.get(f"{name}/cindex_pooled"),
               "ci_low": metrics.get(f"{name}/cindex_ci_low"), "ci_high": metrics.get(f"{name}/cindex_ci_high"),
               f"delta_vs_{ref}": metrics.get(f"{name}/delta_vs_{ref}"), "p": metrics.get(f"{name}/delta_vs_{ref}_p"),
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


def _format_table(table: pd.DataFrame, cfg: DictConfig) -> str:
    head = (f"\nHeld-out metrics ({cfg.training.cv.folds}-fold CV x {cfg.training.cv.repeats}, endpoint "
            f"{cfg.task.endpoint}; C-index = mean over folds, 95% CI from a bootstrap of pooled out-of-fold risks")
    if "response_auc" in table:
        head += f"; response AUC ({cfg.task.response}) of pooled out-of-fold probabilities with its 95% CI"
    return head + ")\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")

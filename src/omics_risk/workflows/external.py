"""External validation of a registered model on a labelled cohort, logged as a new MLflow run linked to the model.

``python evaluate.py mode=external model_uri=models:/omics-risk-rfs@challenger data.root=DIR`` runs
:func:`validate_external`:

1. **The model** is loaded from the registry without unpickling anything
   (:func:`omics_risk.scoring.loading.load_batch_model`): the fitted
   :class:`~omics_risk.models.base.SurvivalModel`, its
   feature manifest and its ``scoring.json`` (default horizons, training risk-group cut-offs, extraction settings).
   The registry entry (name, version, alias) and the training run (its job run's config: cohort, endpoint,
   horizons, CV) are read from MLflow.
2. **The cohort's features** are extracted with the model's own extractor settings when it ships them (else the
   package defaults, with a note), cached in ``DIR/features``; the tables are aligned to the model's feature
   manifest (a modality the cohort lacks is absent for every patient, as in scoring).
3. **Every labelled patient is scored** with the model (``predict_risk``; ``predict_survival`` on a time grid,
   at the horizons and at each patient's own time when the model predicts survival; ``predict_response`` for
   models with a response head).
4. **Metrics with bootstrap CIs** (:func:`~omics_risk.evaluation.metrics.evaluate_survival`): Harrell's and Uno's C,
   td-AUC at the horizons (checked against this cohort's follow-up), integrated Brier score, Brier and calibration
   in the large at the horizons, calibration slope, D-calibration, and risk groups with the **training** cut-offs:
   those stored with the model; else re-derived from the training cohort's risks when its feature store is
   reachable; else, said plainly in the report, fitted on this cohort. The IPCW metrics weight by the censoring
   distribution of the training cohort when it is reachable, else of this cohort (noted).
5. **Plots and report**: Kaplan-Meier by risk group with numbers at risk, calibration at the horizons, td-AUC,
   per-modality contribution (ablation with paired bootstrap CIs), top features (permutation), ``report.html``,
   ``summary.json``, ``metrics.csv`` and ``scores.csv`` (one row per patient) in the output directory.
6. **MLflow**: a new run in the validation experiment (default ``omics-risk-validation``) with the metrics, the
   plots, the report and the per-patient scores as artifacts. The logged ``scores.csv`` carries the project's keyed
   pseudonyms in ``patient_id`` (:mod:`omics_risk.privacy`; the raw ids only with ``pseudonyms=
   Pseudonymiser.raw_ids()``); the ``scores.csv`` of the output directory, which stays with the cohort, keeps the
   cohort's ids. No id is ever in names, params or tags: the run is opened with the cohort's ids registered in the
   identifier guard. The run is tagged with ``model_name``, ``model_version``, ``model_uri``, ``source_run_id`` and
   ``omics_risk.patient_ids``; the model version gets tags pointing back to the validation run
   (``validation.<cohort>.run_id``, ``validation.<cohort>.harrell_c``, ``last_validation_run_id``).

The steps live beside this orchestration: the model reference, training run and model view in
:mod:`.external_model`, the result, report and MLflow run in :mod:`.external_report`, the cohort's model inputs in
:mod:`.inputs` (the path training and scoring take too).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import MultimodalData, stored_modalities
from omics_risk.evaluation.contribution import modality_ablation
from omics_risk.evaluation.contribution import top_features as _top
from omics_risk.evaluation.metrics import (
    Estimate,
    EvaluationError,
    calibration_table,
    evaluate_response,
    evaluate_survival,
    time_grid,
)
from omics_risk.evaluation.plots import (
    plot_calibration,
    plot_contribution,
    plot_km_by_group,
    plot_td_auc,
    plot_top_features,
    save_figure,
)
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.run_report import (
    CHEAP_EXCLUDE,
    fixed_risk_groups,
    log_outputs,
    metrics_long,
    td_auc_curve,
    usable_horizons,
)
from omics_risk.models.base import capabilities_of
from omics_risk.privacy import Pseudonymiser
from omics_risk.scoring.loading import extraction_config_or_defaults, load_batch_model
from omics_risk.workflows.external_model import ModelRef, TrainingInfo, model_view, resolve_model, training_info
from omics_risk.workflows.external_report import (
    VALIDATION_LEVEL,
    ExternalResult,
    _cutoff_text,
    _log_run,
    _write_report,
    _write_summary,
)
from omics_risk.workflows.inputs import CTInputs, model_inputs, prediction_time_summary

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "VALIDATION_LEVEL",
    "EvaluationError",
    "ExternalResult",
    "ModelRef",
    "TrainingInfo",
    "model_view",
    "resolve_model",
    "training_info",
    "validate_external",
]

DEFAULT_EXPERIMENT = "omics-risk-validation"


def _surv_own_time(predict_survival: Any, view: MultimodalData, time: np.ndarray, chunk: int = 512) -> np.ndarray:
    """S_i(t_i): each patient's predicted survival at their own observed time (for D-calibration)."""
    out = np.empty(len(time))
    for start in range(0, len(time), chunk):
        idx = np.arange(start, min(start + chunk, len(time)))
        curves = np.asarray(predict_survival(view.subset(idx), time[idx]), dtype=float)
        out[idx] = curves[np.arange(len(idx)), np.arange(len(idx))]
    return out


def validate_external(model_uri: str, cohort: str | Path, *, output_dir: str | Path,
                      features_dir: str | Path | None = None, extract: bool = True, workers: int | None = None,
                      endpoint: str | None = None, response: str | None = None,
                      horizons: Sequence[float] | None = None, train_cohort: str | Path | None = None,
                      train_features_dir: str | Path | None = None, n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05, risk_groups: str = "tertiles", slow_metrics: bool = True,
                      contribution: bool = True, contribution_n_boot: int | None = None, top_features: bool = True,
                      top_n: int = 20, top_repeats: int = 5, per_modality: int = 10, n_jobs: int = 1,
                      tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                      log_to_mlflow: bool = True, run_name: str | None = None, params: Mapping[str, Any] | None = None,
                      pseudonyms: Pseudonymiser | None = None, progress: bool = False) -> ExternalResult:
    """Validate a logged model on a labelled cohort; see the module docstring for every step.

    Args:
        model_uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model`` or a local model dir.
        cohort: the labelled cohort directory (data contract).
        output_dir: where the report, tables and plots are written.
        features_dir: the cohort's feature store (default ``COHORT/features``); ``extract`` fills it (cached).
        endpoint / response: survival endpoint and binary response endpoint of cohort.yaml (default: the training
            run's ``task.endpoint`` / ``task.response``, else the cohort's first endpoint).
        horizons: evaluation horizons in days; an error (:class:`HorizonError`) when this cohort's follow-up cannot
            support one. Default: the model's training horizons, of which unsupported ones are left out (noted).
        train_cohort / train_features_dir: the training cohort, for the IPCW censoring weights and (when the model
            stores none) the risk-group cut-offs; default: the training run's ``data.root`` if it still exists.
        n_boot, seed, alpha: bootstrap resamples, seed and CI level of every metric.
        risk_groups: ``tertiles`` or ``median`` (the schemes whose training cut-offs a model stores).
        slow_metrics: bootstrap the calibration slope and group hazard ratios too (Cox fits, ~30 ms a resample).
        contribution / top_features: modality ablation and permutation importance (model calls on modified data).
        contribution_n_boot: resamples of the ablation's paired CIs; None = ``n_boot`` (the same resamples).
        tracking_uri / experiment / log_to_mlflow: where the validation run goes (None: ``$MLFLOW_TRACKING_URI`` or
            ``./mlflow.db``, as training).
        params: extra settings logged as params of the validation run (e.g. the evaluate.py config).
        pseudonyms: what the logged ``scores.csv`` has in ``patient_id`` (default: the keyed pseudonyms of the
            project whose store ``tracking_uri`` is, :meth:`~omics_risk.privacy.Pseudonymiser.for_store`).
    """
    # lazy: mlflow is loaded once a model is validated (evaluate.py imports this module for its error types)
    import mlflow
    from mlflow.tracking import MlflowClient  # lazy: mlflow, as above

    from omics_risk.tracking.mlflow_utils import tracking_uri as resolve_uri  # lazy: mlflow, as above

    out = Path(output_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(tracking_uri, Path.cwd())
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if risk_groups not in ("tertiles", "median"):
        raise EvaluationError(f"risk_groups must be 'tertiles' or 'median' (the schemes whose training cut-offs a "
                              f"model stores), got {risk_groups!r}")
    root = Path(cohort).expanduser().resolve()
    if not (root / "cohort.yaml").is_file():
        raise EvaluationError(f"{root} is not a cohort directory (no cohort.yaml); set data.root to the labelled "
                              "cohort to validate on")

    # 1. model, registry entry, training run
    ref = resolve_model(model_uri, client)
    log.info("loading %s", ref.label)
    bm = load_batch_model(model_uri, progress=progress)
    if ref.source_run_id is None and bm.info.get("run_id"):
        ref.source_run_id = str(bm.info["run_id"])
    info = training_info(client, ref.source_run_id)
    model = bm.model
    notes: list[str] = []
    endpoint = endpoint or info.endpoint
    response = response or info.response

    # 2. features of the cohort, aligned to the model
    store = Path(features_dir) if features_dir else root / "features"
    parsed = load_cohort(root)  # parsed once: the checks below and the model inputs read it
    spec = parsed.spec
    if endpoint is not None and endpoint not in spec.endpoints:
        raise EvaluationError(f"endpoint '{endpoint}' (the model's training endpoint) is not in {root}/cohort.yaml "
                              f"(has: {', '.join(spec.endpoints)}); set task=... or endpoint=")
    if response is not None and response not in spec.endpoints:
        notes.append(f"the model's response endpoint '{response}' is not in this cohort: no response metrics")
        response = None
    in_cohort = [m for m in bm.stored if spec.modality(m) is not None]  # derived inputs: their source modality
    config = None
    if extract:  # with the model's extractor settings (the package defaults if it ships none, noted)
        config, more = extraction_config_or_defaults(bm)
        notes += more
    elif not (store / "manifest.json").is_file():
        raise EvaluationError(f"no feature store at {store}: run with extraction on or `omics-risk extract {root}`")
    ct = CTInputs(modality=bm.images[0], config=bm.settings.get("ct")) if bm.images else None
    pt, longitudinal = bm.prediction_time, bm.longitudinal(in_cohort)  # as in training (None: every sample)
    inputs = model_inputs(parsed, store, extract=extract and bool(in_cohort), extract_config=config,
                          extract_modalities=in_cohort, modalities=bm.tabular, only_stored=True, endpoint=endpoint,
                          response=response, ct=ct, what="validation", workers=workers, progress=progress,
                          prediction_time=pt, longitudinal=longitudinal)
    data = inputs.data
    notes += inputs.notes
    view, more = model_view(data, bm.manifest)
    notes += more
    images = inputs.images
    caps = capabilities_of(model)
    kw = {"images": images} if images is not None else {}
    survival_task = data.time is not None

    # 3. training cohort (censoring weights, cut-offs)
    train_time = train_event = train_risk = None
    t_root = Path(train_cohort) if train_cohort else (Path(info.data_root) if info.data_root else None)
    if survival_task and t_root is not None and (t_root / "cohort.yaml").is_file():
        t_store = Path(train_features_dir or info.features_dir or t_root / "features")
        if (t_store / "manifest.json").is_file():
            try:
                tdata = model_inputs(load_cohort(t_root), t_store, extract=False, modalities=bm.tabular,
                                     only_stored=True, endpoint=endpoint, prediction_time=pt,
                                     longitudinal=bm.longitudinal(stored_modalities(t_store))).data
                tview, _ = model_view(tdata, bm.manifest, max_missing=1.0)
                train_time, train_event = tdata.time, tdata.event
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    train_risk = np.asarray(model.predict_risk(tview, **kw), dtype=float)
            except (ValueError, FileNotFoundError, KeyError) as exc:
                notes.append(f"the training cohort {t_root} could not be read ({exc}); its outcomes are not used")
    if survival_task and train_time is None:
        train_time, train_event = data.time, data.event
        notes.append("the training cohort is not reachable: the IPCW metrics (Uno's C, td-AUC, Brier) weight by "
                     "this cohort's censoring distribution")

    # 4. horizons and scores
    explicit = horizons is not None and len(horizons) > 0
    asked = [float(h) for h in horizons] if explicit else (info.horizons or bm.horizons)
    metrics: dict[str, Estimate] = {}
    scores = pd.DataFrame({"patient_id": data.patients.astype(str)})
    if pt is not None:  # outcome times below count from it
        scores["prediction_day"] = np.asarray(data.prediction_day, dtype=float)
    h = np.array([], dtype=float)
    groups = None
    cutoff_source = "none"
    tables: dict[float, pd.DataFrame] = {}
    figures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    risk = np.asarray(model.predict_risk(view, **kw), dtype=float)
    scores["risk_score"] = risk
    if survival_task:
        time, event = np.asarray(data.time, float), np.asarray(data.event).astype(bool)
        if not event.any():
            raise EvaluationError(f"no {data.endpoint} event among the {len(time)} patients of {root}: nothing to "
                                  "validate")
        h, dropped = usable_horizons(asked, time, event, train_time=train_time, strict=explicit)
        notes += dropped
        scores["time"], scores["event"] = time, event.astype(int)
        surv_kw: dict[str, Any] = {}
        if caps.survival:
            try:
                grid = time_grid(time, train_time=train_time)
                grid = np.unique(np.concatenate([grid, h]))
                surv = np.asarray(model.predict_survival(view, grid, **kw), dtype=float)
                own = _surv_own_time(lambda d, t: model.predict_survival(d, t, **kw), view, time)
                surv_kw = {"surv": surv, "times": grid, "surv_at_own_time": own}
                for x in h:
                    s_h = surv[:, np.searchsorted(grid, x)]
                    scores[f"surv_{int(x)}d"] = s_h
                    tables[float(x)] = calibration_table(time, event, s_h, x)
            except NotImplementedError:
                surv_kw = {}
        # risk groups with the training cut-offs
        stored = (bm.settings.get("risk_cutoffs") or {}).get(risk_groups)
        if stored:
            groups, cutoff_source = fixed_risk_groups(risk_groups, stored), "model"
        elif train_risk is not None:
            groups, cutoff_source = RiskGroups(risk_groups).fit(train_risk), "training"
        else:
            groups, cutoff_source = RiskGroups(risk_groups).fit(risk), "cohort"
        notes.append(f"risk groups ({risk_groups}): {_cutoff_text(cutoff_source)}; cut-offs "
                     f"{', '.join(f'{c:.4g}' for c in groups.cutoffs_)}")
        scores["risk_group"] = groups.assign(risk)
        log.info("bootstrapping metrics (%d resamples)", n_boot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            metrics = evaluate_survival(time, event, risk, horizons=h if len(h) else None, train_time=train_time,
                                        train_event=train_event, groups=groups, n_boot=n_boot, seed=seed,
                                        alpha=alpha, n_jobs=n_jobs, progress=progress, label=ref.label,
                                        exclude=() if slow_metrics else CHEAP_EXCLUDE, **surv_kw)
    if response and response in data.extra_labels and caps.response:
        try:
            prob = np.asarray(model.predict_response(view, **kw), dtype=float)
            label = data.extra_labels[response]
            scores["response_prob"], scores["response_label"] = prob, label
            resp = evaluate_response(label, prob, n_boot=n_boot, seed=seed, alpha=alpha)
            metrics.update({f"response_{k}": v for k, v in resp.items()})
        except (NotImplementedError, ValueError) as exc:
            notes.append(f"response metrics ({response}) not computed: {exc}")
    elif data.label is not None and caps.response:
        prob = np.asarray(model.predict_response(view, **kw), dtype=float)
        scores["response_prob"], scores["response_label"] = prob, data.label
        metrics.update(evaluate_response(data.label, prob, n_boot=n_boot, seed=seed, alpha=alpha))
    if not metrics:
        raise EvaluationError(f"nothing to evaluate: endpoint '{data.endpoint}' has no survival outcome and the model "
                              "has no response head")
    scores["modalities_used"] = [",".join(c for c in view.present.columns if row[c])
                                 for _, row in view.present.iterrows()]

    # 5. plots
    title_model = ref.label
    if survival_task:
        fig = plot_km_by_group(time, event, groups.assign(risk), horizon_days=h if len(h) else None,
                               endpoint=data.endpoint, title=f"{title_model} on {spec.name}")
        figures["km_risk_groups"] = save_figure(fig, plots / "km_risk_groups.png")
        captions["km_risk_groups"] = (f"Kaplan-Meier {data.endpoint.upper()} by risk group ({risk_groups}; "
                                      f"{_cutoff_text(cutoff_source)}), numbers at risk below, log-rank p and Cox "
                                      "hazard ratios vs the low-risk group.")
        if tables:
            figures["calibration"] = save_figure(plot_calibration(tables, title="Calibration"),
                                                 plots / "calibration.png")
            captions["calibration"] = ("Observed (Kaplan-Meier with 95% CI) vs mean predicted event probability in "
                                       "quintiles of predicted risk at each horizon; the diagonal is perfect "
                                       "calibration.")
        if len(h):
            curve_h = _curve_horizons(time, event, h, train_time)
            curve = td_auc_curve(time, event, risk, curve_h, train_time=train_time, train_event=train_event,
                                 n_boot=min(n_boot, 200), seed=seed, alpha=alpha)  # a plot's band on a dense
            # grid of horizons (one sksurv call per horizon and resample): the first 200 of the table's resamples
            curve.to_csv(out / "td_auc.csv", index=False)
            mean = metrics.get("mean_auc")
            fig = plot_td_auc(curve["horizon_days"], curve["auc"], curve["low"], curve["high"],
                              mean_auc=mean.value if mean else None, title="Time-dependent AUC")
            figures["td_auc"] = save_figure(fig, plots / "td_auc.png")
            captions["td_auc"] = ("Cumulative/dynamic AUC (IPCW, scikit-survival) every 6 months and at the "
                                  "horizons, with 95% bootstrap CIs; the dashed line is the mean AUC over the "
                                  "evaluation horizons.")
    contrib = top = None
    if contribution:
        mods = ["clinical", *[m for m in bm.tabular if view.present[m].any()]]
        contrib = modality_ablation(model, view, modalities=mods, seed=seed,
                                    n_boot=n_boot if contribution_n_boot is None else int(contribution_n_boot),
                                    predict=lambda d: model.predict_risk(d, **kw), progress=progress)
        contrib.to_csv(out / "contribution.csv", index=False)
        figures["contribution"] = save_figure(plot_contribution(contrib, title="Modality contribution"),
                                              plots / "contribution.png")
        captions["contribution"] = ("Drop in C-index when one modality is hidden from the model (scored as if no "
                                    "patient had it), with paired bootstrap 95% CIs.")
    if top_features:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = _top(model, view, n=top_n, n_repeats=top_repeats, per_modality=per_modality, seed=seed,
                       predict=lambda d: model.predict_risk(d, **kw), progress=progress)
        top.to_csv(out / "top_features.csv", index=False)
        figures["top_features"] = save_figure(plot_top_features(top, n=top_n, title="Top features"),
                                              plots / "top_features.png")
        captions["top_features"] = (f"Mean drop in C-index when one feature is permuted among the patients who have "
                                    f"it ({top_repeats} permutations; candidates: {top.attrs.get('candidates')}).")

    # 6. tables, report, summary
    long = metrics_long({"": metrics}).drop(columns="model")
    long.insert(0, "model", ref.label)
    paths: dict[str, Path] = dict(figures)
    paths["metrics"] = out / "metrics.csv"
    long.to_csv(paths["metrics"], index=False)
    paths["scores"] = out / "scores.csv"
    scores.to_csv(paths["scores"], index=False)
    rg_table = None
    if groups is not None:
        rg_table = groups.summary(time, event, risk)
        paths["risk_groups"] = out / "risk_groups.csv"
        rg_table.to_csv(paths["risk_groups"], index=False)
    for x, tab in tables.items():
        paths[f"calibration_{int(x)}d"] = out / f"calibration_{int(x)}d.csv"
        tab.to_csv(paths[f"calibration_{int(x)}d"], index=False)
    for name in ("contribution", "top_features", "td_auc"):
        if (out / f"{name}.csv").is_file():
            paths[f"{name}_table"] = out / f"{name}.csv"
    n_events = int(np.sum(data.event)) if survival_task else int(np.nansum(data.label))
    result = ExternalResult(model=ref, cohort=spec.name, n_patients=len(data), n_events=n_events, metrics=metrics,
                            table=long, scores=scores, risk_groups=rg_table, cutoff_source=cutoff_source,
                            horizons=[float(x) for x in h], output_dir=out, paths=paths, notes=notes,
                            prediction_time=prediction_time_summary(inputs))

    run_id = None
    if log_to_mlflow:
        run_id = _log_run(result, client, uri, experiment, run_name, info, data, params or {}, long,
                          pseudonyms or Pseudonymiser.for_store(uri))
        result.run_id = run_id
    meta = {"model": ref.label, "model URI": ref.uri, "source run": ref.source_run_id or "–",
            "training cohort": info.cohort or "–", "validation cohort": f"{spec.name} ({root})",
            "patients": len(data), "events": n_events, "endpoint": data.endpoint,
            "horizons (days)": ", ".join(f"{x:g}" for x in h) or "none",
            "prediction time": "none (every sample)" if pt is None else
            f"{pt.describe()}; {result.prediction_time['n_at_risk']} at risk, "
            f"{result.prediction_time['n_left_out'] + result.prediction_time['n_without_timepoint']} left out",
            "risk-group cut-offs": _cutoff_text(cutoff_source) if survival_task else "–",
            "validation run": run_id or "not logged"}
    _write_report(result, out, meta, figures, captions, rg_table, n_boot)
    paths["report"] = out / "report.html"
    paths["summary"] = out / "summary.json"
    _write_summary(result, out, meta)
    if run_id is not None:
        log_outputs({"report": paths["report"], "summary": paths["summary"]}, run_id=run_id)
    return result


def _curve_horizons(time: np.ndarray, event: np.ndarray, h: np.ndarray, train_time: np.ndarray) -> np.ndarray:
    """Every 6 months from the first event to the 90th percentile of follow-up, plus the evaluation horizons."""
    first = float(time[event].min())
    last = min(float(np.quantile(time, 0.9)), float(np.max(train_time)) - 1, float(time.max()) - 1)
    step = 365.25 / 2
    grid = np.arange(step, last, step)
    grid = grid[grid > first]
    return np.unique(np.concatenate([grid, h]))

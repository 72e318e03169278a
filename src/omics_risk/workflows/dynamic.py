"""The dynamic-prediction run of ``train.py`` (``task.prediction_time: {at: landmarks, ...}``).

A task that names landmarks asks, at each landmark day ``s``, for the risk of an event in the next
``task.horizon_window`` days given everything measured up to ``s``. This run builds one data set per landmark
(:func:`~omics_risk.data.multimodal.load_landmarks`, checked for look-ahead), stacks them
(:func:`~omics_risk.models.landmark.stack_landmarks`) and cross-validates, on folds that keep each patient's rows
together (:func:`~omics_risk.models.landmark.patient_folds`):

- ``landmark_cox``: the landmark super-model on the stacked rows (inputs updated at each landmark);
- ``baseline_only``: the same model fitted on the landmark-0 data set and applied at every landmark with each
  patient's index-date inputs (the static comparator: what a model that never updates its inputs can do);
- ``time_varying_cox`` (when ``task.longitudinal`` names serial quantities): a Cox model with time-varying covariates
  (:class:`~omics_risk.models.time_varying.TimeVaryingCox`, lifelines ``CoxTimeVaryingFitter`` on start-stop data)
  on those quantities, fitted on the training patients' whole follow-up from day 0 and scored at each landmark from
  the last values at or before it. ``task.longitudinal`` also adds each landmark's longitudinal features
  (``<modality>_dynamics``) to the landmark data sets.

Both are evaluated per landmark (:func:`~omics_risk.evaluation.dynamic.landmark_metrics`) and compared pairwise
(:func:`~omics_risk.evaluation.dynamic.landmark_comparison`), written to ``summary.json`` (``dynamic``), printed,
and logged to MLflow as ``dynamic/<model>/<landmark>d/<metric>`` when tracking is on. ``task.shuffle_outcome=true``
permutes the outcomes across patients before anything is built (a null run: C should be near 0.5).

With ``training.final_model`` (the default) the landmark super-model is then fitted on every patient's stacked rows
and saved (no pickle, :meth:`~omics_risk.models.landmark.LandmarkSuperModel.save`) to ``<output_dir>/landmark_model``
with what applying it needs (:func:`model_metadata`); a tracked run also logs that folder as the artifact
``landmark_model`` of its job run. ``omics-risk monitor --model`` scores serial draws with it (docs/time.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.contract import Cohort
from omics_risk.data.multimodal import MultimodalData, load_landmarks, stored_modalities
from omics_risk.data.timing import PredictionTime
from omics_risk.evaluation.bootstrap import bootstrap_settings
from omics_risk.evaluation.dynamic import landmark_comparison, landmark_metrics
from omics_risk.evaluation.pooling import within_fold_ranks
from omics_risk.features.clinical import clinical_types
from omics_risk.models.landmark import LandmarkSuperModel, StackedLandmarks, patient_folds, stack_landmarks
from omics_risk.models.time_varying import TimeVaryingCox
from omics_risk.progress import progress_bar
from omics_risk.workflows.inputs import check_no_look_ahead, extract_features
from omics_risk.workflows.longitudinal_inputs import (
    LongitudinalInput,
    add_longitudinal,
    dynamics_name,
    longitudinal_inputs,
    serial_measurements,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SETTINGS", "LANDMARK", "MODEL_ARTIFACT", "STATIC", "TIME_VARYING", "DynamicInputs",
           "dynamic_inputs", "model_metadata", "run_dynamic", "shuffled_outcome"]

#: The landmark super-model, its static comparator and the time-varying Cox model, as named in summary.json and MLflow.
LANDMARK, STATIC, TIME_VARYING = "landmark_cox", "baseline_only", "time_varying_cox"
#: LandmarkSuperModel settings of both models (``+dynamic.<name>=...`` on the command line overrides them): a
#: stronger ridge than the model's default, since the stacked design has 3 columns per feature.
DEFAULT_SETTINGS: dict[str, Any] = {"penalizer": 1.0, "max_features": 10}
#: The final landmark super-model's folder in the run's output directory, and its artifact path in MLflow.
MODEL_ARTIFACT = "landmark_model"


@dataclasses.dataclass
class DynamicInputs:
    """What the dynamic run fits on: the stacked landmark rows, the same rows carrying each patient's landmark-0
    inputs (``static``: same order, same outcomes), the landmark-0 data set the static model is fitted on, and each
    landmark's outcomes before censoring at the window (for the time-dependent AUC)."""

    stacked: StackedLandmarks
    static: StackedLandmarks
    index: StackedLandmarks
    outcomes: dict[float, tuple[np.ndarray, np.ndarray]]
    landmarks: list[float]
    #: the landmark-0 data set (outcomes in days from the index date): what the time-varying Cox model is fitted on
    day0: MultimodalData | None = None
    #: serial measurements of ``task.longitudinal``'s quantities (``patient_id``, ``day``, one column each), or None
    serial: pd.DataFrame | None = None


def shuffled_outcome(cohort: Cohort, endpoint: str | None, seed: int) -> Cohort:
    """The cohort with the endpoint's (time, event) pairs permuted across patients (a null run)."""
    name = endpoint or next(iter(cohort.spec.endpoints))
    ep = cohort.spec.endpoints[name]
    cols = [c for c in (getattr(ep, "time", None), getattr(ep, "event", None), getattr(ep, "column", None)) if c]
    clinical = cohort.clinical.copy()
    order = np.random.default_rng(seed).permutation(len(clinical))
    clinical[cols] = clinical[cols].to_numpy()[order]
    return dataclasses.replace(cohort, clinical=clinical)


def _static_at(index: MultimodalData, at_s: MultimodalData, s: float) -> MultimodalData:
    """The patients at risk at landmark ``s`` with their landmark-0 inputs and their outcome counted from ``s``."""
    pos = pd.Index(index.patients).get_indexer(at_s.patients)
    if (pos < 0).any():
        raise ValueError(f"landmark {s:g}: patient {at_s.patients[np.flatnonzero(pos < 0)[0]]} is at risk there but "
                         "not at day 0; landmarks must be >= 0 days")
    return dataclasses.replace(index.subset(pos), time=at_s.time, event=at_s.event, landmark=s,
                               prediction_day=at_s.prediction_day)


def dynamic_inputs(cohort: Cohort, store: Path, pt: PredictionTime, horizon_window: float, *,
                   modalities: Sequence[str] | None, endpoint: str | None,
                   longitudinal: Sequence[LongitudinalInput] = ()) -> DynamicInputs:
    """Load every landmark's data set (and day 0's, for the static comparator), check them for look-ahead, add the
    longitudinal features of ``longitudinal`` at each landmark, stack."""
    landmarks = [float(s) for s in pt.landmarks]
    with_index = pt if 0.0 in landmarks else dataclasses.replace(pt, landmarks=tuple(sorted({0.0, *landmarks})))
    sets = load_landmarks(cohort, store, prediction_time=with_index, modalities=modalities, endpoint=endpoint)
    for s, data in sets.items():
        check_no_look_ahead(data, store, what=f"training (landmark {s:g})")
        add_longitudinal(data, store, longitudinal)
        log.info("landmark %g: %d patients at risk, %d left the risk set", s, len(data),
                 data.risk_set.get("left_out", 0))
    chosen = {s: sets[s] for s in landmarks}
    stacked = stack_landmarks(chosen, horizon_window)
    static = stack_landmarks({s: _static_at(sets[0.0], chosen[s], s) for s in landmarks}, horizon_window)
    outcomes = {s: (np.asarray(d.time, float), np.asarray(d.event, float)) for s, d in chosen.items()}
    serial = serial_measurements(store, longitudinal) if longitudinal else None
    return DynamicInputs(stacked, static, stack_landmarks({0.0: sets[0.0]}, horizon_window), outcomes, landmarks,
                         day0=sets[0.0], serial=serial)


def _modalities(cfg: DictConfig, store: Path) -> list[str]:
    """``data.modalities``, else every stored modality with a per-sample table (the clinical table is always in)."""
    if cfg.data.modalities:
        return list(cfg.data.modalities)
    return [m for m in stored_modalities(store) if (store / f"{m}.samples.parquet").is_file()]


def _cross_validate(cfg: DictConfig, inp: DynamicInputs, make: Any) -> dict[str, np.ndarray]:
    """Out-of-fold risks of both models per stacked row and repeat (percentile ranks within each fold and landmark,
    so that the folds' scores pool)."""
    stacked, n_rep = inp.stacked, int(cfg.training.cv.repeats)
    names = (LANDMARK, STATIC, TIME_VARYING) if inp.serial is not None else (LANDMARK, STATIC)
    oof = {name: np.full((n_rep, len(stacked)), np.nan) for name in names}
    for r in range(n_rep):
        folds = patient_folds(stacked.patient, int(cfg.training.cv.folds), int(cfg.seed) + r, event=stacked.event)
        for k, (train, test) in enumerate(progress_bar(folds, desc=f"landmark folds (repeat {r})", unit="fold",
                                                       disable=not cfg.training.progress)):
            train_patients = np.unique(stacked.patient[train])
            risk = {LANDMARK: make().fit(stacked.subset(train)).predict_risk(stacked.subset(test)),
                    STATIC: make().fit(inp.index.subset(inp.index.rows_for(train_patients)))
                    .predict_risk(inp.static.subset(test))}
            if inp.serial is not None:
                risk[TIME_VARYING] = _time_varying_risk(inp, train_patients, test, int(cfg.seed))
            for name, values in risk.items():
                oof[name][r, test] = within_fold_ranks(values, stacked.landmark[test])
            log.info("landmark CV repeat %d fold %d: %d train / %d test rows", r, k, len(train), len(test))
    return oof


def _time_varying_risk(inp: DynamicInputs, train_patients: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """The time-varying Cox model fitted on the training patients' follow-up from day 0, scored on the test rows at
    their landmarks from the last serial values at or before each (nothing measured after a landmark is read)."""
    assert inp.day0 is not None and inp.serial is not None
    day0 = inp.day0
    pos = pd.Index(day0.patients).get_indexer(train_patients)
    model = TimeVaryingCox(seed=seed).fit(day0.subset(pos[pos >= 0]), long=inp.serial)
    risk = np.empty(len(test))
    landmark, patient = inp.stacked.landmark[test], inp.stacked.patient[test]
    for s in np.unique(landmark):
        rows = np.flatnonzero(landmark == s)
        at_s = day0.subset(pd.Index(day0.patients).get_indexer(patient[rows]))
        risk[rows] = model.predict_risk(at_s, long=inp.serial, day=float(s))
    return risk


def _per_landmark(inp: DynamicInputs, risk: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {s: (*inp.outcomes[s], risk[np.isclose(inp.stacked.landmark, s)]) for s in inp.landmarks}


def _metrics(name: str, table: pd.DataFrame) -> dict[str, float]:
    """MLflow-style flat metrics ``dynamic/<model>/<landmark>d/<metric>`` of one model's per-landmark table."""
    keys = {"cindex": "harrell_c", "cindex_ci_low": "harrell_c_ci_low", "cindex_ci_high": "harrell_c_ci_high",
            "auc": "auc", "auc_ci_low": "auc_ci_low", "auc_ci_high": "auc_ci_high", "n_at_risk": "n_at_risk",
            "n_events": "n_events", "c_difference": "c_difference", "c_difference_ci_low": "c_difference_ci_low",
            "c_difference_ci_high": "c_difference_ci_high", "p": "p_value"}
    return {f"dynamic/{name}/{row['landmark']:g}d/{key}": float(row[col])
            for row in table.to_dict(orient="records") for key, col in keys.items() if col in row}


def _format(tables: Mapping[str, pd.DataFrame], comparison: pd.DataFrame, window: float, shuffled: bool) -> str:
    lm, st = tables[LANDMARK], tables[STATIC]
    out = pd.DataFrame({"landmark": [f"{v:g}" for v in lm["landmark"]], "n_at_risk": lm["n_at_risk"],
                        "n_events": lm["n_events"],
                        f"{LANDMARK}_c": lm["harrell_c"], f"{STATIC}_c": st["harrell_c"],
                        f"{LANDMARK}_auc": lm["auc"], f"{STATIC}_auc": st["auc"],
                        "delta_c": comparison["c_difference"], "delta_ci_low": comparison["c_difference_ci_low"],
                        "delta_ci_high": comparison["c_difference_ci_high"], "p": comparison["p_value"]})
    if TIME_VARYING in tables:
        tv = tables[TIME_VARYING]
        out.insert(5, f"{TIME_VARYING}_c", tv["harrell_c"].to_numpy())
        out.insert(8, f"{TIME_VARYING}_auc", tv["auc"].to_numpy())
    head = (f"\nDynamic prediction per landmark (events within {window:g} days; out-of-fold risks, patients kept in "
            f"one fold; delta_c = {LANDMARK} - {STATIC} with its paired bootstrap 95% CI"
            + ("; OUTCOMES SHUFFLED" if shuffled else "") + ")\n")
    return head + out.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")


def run_dynamic(cfg: DictConfig, cohort: Cohort, store: Path, pt: PredictionTime) -> dict[str, float]:
    """Cross-validate the landmark super-model against the baseline-only model; write, print and log per landmark."""
    window = cfg.task.get("horizon_window")
    if window is None:
        raise ValueError("task.prediction_time names landmarks: set task.horizon_window (days after each landmark "
                         "in which an event counts, e.g. task.horizon_window=365)")
    # the run's one bootstrap (evaluation.bootstrap / evaluation.seed, as every other output); cfg.seed seeds the fits
    window, seed, boot = float(window), int(cfg.seed), bootstrap_settings(cfg.evaluation)
    if cfg.extract.run:
        config = OmegaConf.to_container(cfg.extract.config, resolve=True) if cfg.extract.config else None
        log.info(extract_features(cohort, store, config=config, workers=cfg.extract.workers,  # type: ignore[arg-type]
                                  progress=bool(cfg.training.progress)).to_text())
    shuffled = bool(cfg.task.get("shuffle_outcome") or False)
    if shuffled:
        cohort = shuffled_outcome(cohort, cfg.task.endpoint, seed)
        log.warning("task.shuffle_outcome=true: outcomes permuted across patients (a null run)")
    mods = _modalities(cfg, store)
    quantities = longitudinal_inputs(cfg.task.get("longitudinal"))
    inp = dynamic_inputs(cohort, store, pt, window, modalities=mods, endpoint=cfg.task.endpoint,
                         longitudinal=quantities)
    mods = [*mods, *dict.fromkeys(dynamics_name(q.modality) for q in quantities)]
    types = clinical_types(cohort.spec)

    settings = {**DEFAULT_SETTINGS, **(OmegaConf.to_container(cfg.dynamic, resolve=True) if cfg.get("dynamic") else {})}

    def make() -> LandmarkSuperModel:
        return LandmarkSuperModel(mods, clinical_types=types, seed=seed, **settings)  # type: ignore[arg-type]

    oof = _cross_validate(cfg, inp, make)
    output_dir = Path(cfg.paths.output_dir)
    final = _final_model(cfg, inp, make, output_dir, model_metadata(
        cfg, cohort, pt, window, stored=_modalities(cfg, store), inputs=mods, shuffled=shuffled,
        endpoint=inp.stacked.data.endpoint))
    per = {name: _per_landmark(inp, risk[0]) for name, risk in oof.items()}
    tables = {name: landmark_metrics(inp.landmarks, p, window, n_boot=boot.n, seed=boot.seed)
              for name, p in per.items()}
    comparisons = {a: landmark_comparison(inp.landmarks, per[a], per[STATIC], window, n_boot=boot.n, seed=boot.seed)
                   for a in per if a != STATIC}
    comparison = comparisons[LANDMARK]
    metrics = {k: v for name, t in tables.items() for k, v in _metrics(name, t).items()}
    for a, table in comparisons.items():
        metrics.update(_metrics(f"{a}_vs_{STATIC}", table))
    models = {LANDMARK: make().describe(),
              STATIC: {**make().describe(), "fitted_on": "landmark 0 data; index-date inputs at every landmark"}}
    if inp.serial is not None:
        models[TIME_VARYING] = {**TimeVaryingCox().describe(), "serial": [q.key for q in quantities],
                                "fitted_on": "training patients' follow-up from day 0 (start-stop intervals); "
                                             "scored at each landmark from the last values at or before it"}
    output_dir.mkdir(parents=True, exist_ok=True)
    stacked = inp.stacked
    summary = {"task": cfg.task.name, "endpoint": cfg.task.endpoint, "cohort": cohort.spec.name,
               "n_patients": len(np.unique(stacked.patient)), "modalities": mods,
               "cv": {"folds": int(cfg.training.cv.folds), "repeats": int(cfg.training.cv.repeats)},
               "prediction_time": {"describe": pt.describe()},
               "dynamic": {"landmarks": inp.landmarks, "horizon_window": window, "shuffle_outcome": shuffled,
                           "n_rows": len(stacked), "models": models,
                           "per_landmark": {name: t.to_dict(orient="records") for name, t in tables.items()},
                           "comparison": {"a": LANDMARK, "b": STATIC,
                                          "per_landmark": comparison.to_dict(orient="records")},
                           "comparisons": [{"a": a, "b": STATIC, "per_landmark": t.to_dict(orient="records")}
                                           for a, t in comparisons.items()],
                           "evaluated_repeat": 0, "bootstrap": boot.as_dict(),
                           **({"final_model": final} if final else {})},
               "metrics": metrics}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(_format(tables, comparison, window, shuffled))
    _log_to_mlflow(cfg, output_dir, metrics, stacked, cohort, summary)
    return metrics


def model_metadata(cfg: DictConfig, cohort: Cohort, pt: PredictionTime, window: float, *, stored: Sequence[str],
                   inputs: Sequence[str], shuffled: bool, endpoint: str) -> dict[str, Any]:
    """What applying the final landmark model needs, saved with it: the stored modalities its inputs are read from
    (``modalities``; ``inputs`` adds the longitudinal ones), the prediction time (landmarks and slot windows), the
    longitudinal settings (``task.longitudinal``), the horizon window, the landmarks it was trained on, the
    endpoint and the training cohort."""
    lon = cfg.task.get("longitudinal")
    lon = OmegaConf.to_container(lon, resolve=True) if OmegaConf.is_config(lon) else lon
    return {"model": LANDMARK, "task": str(cfg.task.name), "endpoint": endpoint, "cohort": cohort.spec.name,
            "modalities": list(stored), "inputs": list(inputs), "prediction_time": pt.to_config(),
            "landmarks": [float(s) for s in pt.landmarks], "horizon_window": float(window),
            "longitudinal": lon or None, "shuffle_outcome": shuffled, "run_name": str(cfg.get("run_name", "")),
            "risk": f"P(event within {float(window):g} days of the landmark | inputs measured up to it)"}


def _final_model(cfg: DictConfig, inp: DynamicInputs, make: Any, output_dir: Path,
                 metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The landmark super-model fitted on every patient's stacked rows, saved to ``output_dir/landmark_model``
    (``training.final_model=false``: none)."""
    if not cfg.training.get("final_model", True):
        return {}
    model = make().fit(inp.stacked)
    out = model.save(output_dir / MODEL_ARTIFACT, metadata=metadata)
    log.info("final %s fitted on %d stacked rows (%d patients); saved to %s", LANDMARK, len(inp.stacked),
             len(np.unique(inp.stacked.patient)), out)
    return {"model": LANDMARK, "model_dir": str(out), "n_rows": len(inp.stacked),
            "n_patients": len(np.unique(inp.stacked.patient))}


def _log_to_mlflow(cfg: DictConfig, output_dir: Path, metrics: Mapping[str, float], stacked: StackedLandmarks,
                   cohort: Cohort, summary: dict[str, Any]) -> None:
    """The job run of a tracked dynamic run: its config, the per-landmark metrics, the final landmark model (artifact
    ``landmark_model``; its ``runs:/`` URI is added to summary.json) and summary.json."""
    if not cfg.tracking.enabled:
        return
    import mlflow  # lazy: mlflow, only when the run is tracked

    from omics_risk.tracking import mlflow_utils as mu  # lazy: mlflow, only when the run is tracked

    uri = mu.tracking_uri(cfg.tracking.uri, Path(cfg.paths.root_dir))
    job = mu.start_run_tree(cfg.tracking.experiment, uri=uri, run_name=str(cfg.run_name), cfg=cfg,
                            hydra_output_dir=output_dir, patient_ids=list(np.unique(stacked.patient)),
                            tags={"task": cfg.task.name, "cohort": cohort.spec.name, "dynamic": "landmarks"})
    with job:
        mu.safe_log_metrics(metrics)
        final = summary["dynamic"].get("final_model")
        if final:
            mlflow.log_artifacts(final["model_dir"], artifact_path=MODEL_ARTIFACT)
            final["model_uri"] = f"runs:/{mlflow.active_run().info.run_id}/{MODEL_ARTIFACT}"
            (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        mlflow.log_artifact(str(output_dir / "summary.json"))

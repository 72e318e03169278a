"""``omics-risk monitor --model``: the final landmark super-model of a dynamic ``train.py`` run scored at every draw.

At a draw on day ``d`` the model is asked what it was trained for at landmark ``d``: the risk of an event within its
horizon window given everything measured up to ``d``. The inputs are built by the training code path
(:func:`~omics_risk.data.multimodal.load_landmarks` with the model's prediction-time windows, each draw day a
landmark; :func:`~omics_risk.workflows.longitudinal_inputs.add_longitudinal` for ``task.longitudinal``) and every
day's data pass :func:`~omics_risk.workflows.inputs.check_no_look_ahead`, so nothing measured after a draw reaches its
risk. The inputs are built once per distinct draw day (for the patients drawn that day) and scored in one
vectorised prediction over the stacked rows of up to 16 days (each row at its own landmark); with more than
``max_days`` distinct days the days are rounded **down** to a grid (a risk at day ``d`` then uses what was measured
up to the grid day at or before ``d``: still nothing later), and the run says so. A draw the model cannot score (no
day, patient not in clinical.csv, after ``--as-of``) keeps its row with NaN and the reason; a draw outside the
landmarks the model was trained on is scored and the reason says it is extrapolated.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.multimodal import load_landmarks
from omics_risk.data.timing import PredictionTime
from omics_risk.models.landmark import LandmarkSuperModel, stack_landmarks
from omics_risk.progress import progress_bar
from omics_risk.workflows.inputs import check_no_look_ahead
from omics_risk.workflows.longitudinal_inputs import add_longitudinal, longitudinal_inputs

__all__ = ["DynamicRisk", "dynamic_risks", "load_landmark_model"]

#: Landmark days loaded at once (each is a full data set of the cohort's patients): bounds the memory.
_CHUNK = 16


@dataclass
class DynamicRisk:
    """Per listed draw (index sample_id): ``dynamic_risk`` (NaN where not scored), ``model_day`` (the landmark the
    risk was computed at: the draw day, or the grid day at or before it) and ``model_reason``; run notes."""

    table: pd.DataFrame
    grid_days: float | None
    notes: list[str] = field(default_factory=list)


def load_landmark_model(uri: str | Path, tracking_uri: str | None = None) -> LandmarkSuperModel:
    """The landmark model in a folder (``<train output>/landmark_model``) or at an MLflow URI (``runs:/ID/
    landmark_model``, downloaded with ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``)."""
    folder = Path(str(uri))
    if not folder.is_dir():
        if "://" not in str(uri) and ":/" not in str(uri):
            raise FileNotFoundError(f"--model {uri}: no such folder (give the landmark_model folder of a dynamic "
                                    "train.py run, or its MLflow URI runs:/RUN_ID/landmark_model)")
        import mlflow  # lazy: mlflow, only for a model given by URI

        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), tracking_uri=tracking_uri,
                                                              dst_path=tempfile.mkdtemp(prefix="omics-risk-model-")))
        except Exception as exc:  # MLflow's errors are long; one line naming the URI
            raise FileNotFoundError(f"--model {uri}: cannot download it ({str(exc).splitlines()[0]}); check the URI "
                                    "and --tracking-uri") from exc
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model {uri}: no config.json in {folder}; give the landmark_model folder written "
                                "by a dynamic train.py run (task.prediction_time with landmarks)")
    try:
        return LandmarkSuperModel.load(folder)
    except ValueError as exc:
        raise ValueError(f"--model {uri}: {exc}; --model takes the landmark model of a dynamic train.py run") from exc


def _grid(days: np.ndarray, grid_days: float | None, max_days: int) -> tuple[float | None, np.ndarray]:
    """The landmark of each draw: its day, or rounded down to ``grid_days`` (chosen when the draws have more than
    ``max_days`` distinct days: the span over ``max_days - 1``, rounded up to whole days and grown until the rounded
    days number at most ``max_days``)."""
    finite = days[np.isfinite(days)]
    if grid_days is None and len(np.unique(finite)) > max_days:
        span = float(finite.max() - finite.min())
        grid_days = float(max(1, math.ceil(span / max(max_days - 1, 1))))
        while len(np.unique(np.floor(finite / grid_days))) > max_days:
            grid_days += 1.0
    if grid_days is None:
        return None, days.astype(float)
    if not grid_days > 0:
        raise ValueError(f"model.grid_days must be > 0 days, got {grid_days}")
    return float(grid_days), np.floor(days / grid_days) * grid_days


def dynamic_risks(model: LandmarkSuperModel, cohort: Cohort, draws: pd.DataFrame, *,
                  features_dir: str | Path | None = None, grid_days: float | None = None, max_days: int = 200,
                  progress: bool = True) -> DynamicRisk:
    """The model's risk at every draw of ``draws`` (``patient_id``, ``sample_id``, ``day``; see the module doc)."""
    meta: Mapping[str, Any] = getattr(model, "metadata_", {}) or {}
    if not meta.get("prediction_time"):
        raise ValueError("the model's config.json has no metadata.prediction_time; save it from a dynamic train.py "
                         "run (it records the prediction time, modalities and longitudinal settings)")
    store = Path(features_dir) if features_dir is not None else cohort.root / "features"
    pt = PredictionTime.from_config(meta["prediction_time"])
    quantities = longitudinal_inputs(meta.get("longitudinal"))
    endpoint = meta.get("endpoint") if meta.get("endpoint") in cohort.spec.endpoints else None
    modalities = list(meta.get("modalities") or [])
    clinical = set(cohort.clinical["patient_id"].astype(str))

    d = draws[["patient_id", "sample_id", "day"]].reset_index(drop=True)
    d["patient_id"] = d["patient_id"].astype(str)
    d["day"] = pd.to_numeric(d["day"], errors="coerce").astype(float)
    used, landmark = _grid(d["day"].to_numpy(float), grid_days, max_days)
    d["model_day"] = landmark
    d["dynamic_risk"] = np.nan
    d["model_reason"] = np.select([~np.isfinite(d["day"]), ~d["patient_id"].isin(clinical)],
                                  ["no draw day in samples.csv", "patient not in clinical.csv"], "")
    todo = d[d["model_reason"] == ""]
    days = np.unique(todo["model_day"].to_numpy(float))
    bar = progress_bar(total=len(days), desc="dynamic risk", unit="day", disable=not progress)
    try:
        for start in range(0, len(days), _CHUNK):
            chunk = tuple(float(x) for x in days[start:start + _CHUNK])
            sets = load_landmarks(cohort, store, prediction_time=dataclasses.replace(pt, landmarks=chunk),
                                  modalities=modalities, endpoint=endpoint, drop_unlabelled=False)
            per_day = {}
            for s, data in sets.items():
                patients = pd.unique(todo.loc[todo["model_day"].to_numpy(float) == s, "patient_id"])
                at_s = data.subset(data.patients.astype(str).get_indexer(patients))
                check_no_look_ahead(at_s, store, what=f"monitor (draws scored at day {s:g})")
                add_longitudinal(at_s, store, quantities)
                zero = np.zeros(len(at_s))  # outcomes play no part in a prediction; stacking wants some
                per_day[s] = dataclasses.replace(at_s, time=zero, event=zero)
                bar.update()
            # one prediction over the chunk's stacked rows (each row at its own landmark)
            stacked = stack_landmarks(per_day, model.horizon_window_)
            risk = pd.Series(model.risk_within_window(stacked.data, stacked.landmark),
                             index=pd.MultiIndex.from_arrays([stacked.patient.astype(str), stacked.landmark]))
            rows = todo.index[np.isin(todo["model_day"].to_numpy(float), chunk)]
            key = pd.MultiIndex.from_arrays([todo.loc[rows, "patient_id"], todo.loc[rows, "model_day"].astype(float)])
            d.loc[rows, "dynamic_risk"] = risk.reindex(key).to_numpy()
    finally:
        bar.close()
    lo, hi = model.landmark_range_
    outside = np.isfinite(d["dynamic_risk"]) & ((d["model_day"] < lo) | (d["model_day"] > hi))
    d.loc[outside, "model_reason"] = (f"day outside the training landmarks ({lo:g}-{hi:g} days): the model's "
                                      "landmark terms are extrapolated")
    notes = []
    if used is not None:
        notes.append(f"--model: draw days rounded down to a {used:g}-day grid ({len(days)} distinct landmark days "
                     f"scored; each risk uses what was measured up to its grid day, never later; set "
                     f"model.grid_days / model.max_days)")
    if outside.any():
        notes.append(f"--model: {int(outside.sum())} draw(s) fall outside the landmarks the model was trained on "
                     f"({lo:g}-{hi:g} days); their risks are extrapolated (model_reason in samples.csv)")
    unscored = int(d["dynamic_risk"].isna().sum())
    if unscored:
        notes.append(f"--model: {unscored} draw(s) could not be scored (NaN dynamic_risk; model_reason in "
                     "samples.csv)")
    table = d.set_index("sample_id")[["model_day", "dynamic_risk", "model_reason"]]
    return DynamicRisk(table, used, notes)

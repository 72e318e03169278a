"""Which model an external validation validates and what its training run recorded, and the cohort's data seen
through the model's feature manifest (:func:`model_view`).

A registered model is resolved to its registry entry and source run (:func:`resolve_model`); the training run's job
config gives the cohort, endpoint, horizons and CV (:func:`training_info`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import EvaluationError
from omics_risk.scoring.loading import ModelNotFoundError
from omics_risk.workflows.scoring_cohort import MAX_MISSING_FEATURES

__all__ = ["ModelRef", "TrainingInfo", "model_view", "resolve_model", "training_info"]

_NONE = {"", "none", "null"}


@dataclass
class ModelRef:
    """Where a model comes from: its URI, registry entry (if registered) and the run that logged it."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    source_run_id: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")
        return self.uri


_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUNS = re.compile(r"^runs:/(?P<run>[0-9a-f]{8,64})(?:/(?P<path>.*))?$")


def resolve_model(uri: str, client: Any) -> ModelRef:
    """The registry entry and source run of ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or
    ``runs:/RUN_ID/model`` (a run's model is linked to the registered version logged from that run, if any)."""
    # lazy: mlflow is loaded once a model is validated (evaluate.py imports these modules for their error types)
    from mlflow.exceptions import MlflowException

    uri = str(uri).strip()
    try:
        if m := _MODELS_ALIAS.match(uri):
            mv = client.get_model_version_by_alias(m["name"], m["alias"])
            return ModelRef(uri, mv.name, str(mv.version), m["alias"], mv.run_id)
        if m := _MODELS_VERSION.match(uri):
            mv = client.get_model_version(m["name"], m["version"])
            aliases = list(getattr(mv, "aliases", []) or [])
            return ModelRef(uri, mv.name, str(mv.version), aliases[0] if aliases else None, mv.run_id)
        if m := _RUNS.match(uri):
            client.get_run(m["run"])
            versions = client.search_model_versions(f"run_id = '{m['run']}'")
            if versions:
                mv = max(versions, key=lambda v: int(v.version))
                aliases = list(getattr(mv, "aliases", []) or [])
                return ModelRef(uri, mv.name, str(mv.version), aliases[0] if aliases else None, m["run"])
            return ModelRef(uri, source_run_id=m["run"])
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot resolve model {uri!r}: {getattr(exc, 'message', exc)}") from exc
    if Path(uri).is_dir():
        return ModelRef(uri)
    raise EvaluationError(f"model_uri {uri!r} is not models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model "
                          "or a local model directory")


@dataclass
class TrainingInfo:
    """What the training run recorded about the model: its job run's config and tags."""

    job_run_id: str | None = None
    cohort: str | None = None
    data_root: str | None = None
    features_dir: str | None = None
    endpoint: str | None = None
    response: str | None = None
    horizons: list[float] | None = None
    cv: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def _param(params: Mapping[str, str], key: str) -> str | None:
    v = params.get(key)
    return None if v is None or str(v).strip().lower() in _NONE else str(v)


def training_info(client: Any, run_id: str | None) -> TrainingInfo:
    """Read the training config of the run that logged the model (the job run above ``<model>_final``)."""
    if run_id is None:
        return TrainingInfo()
    run = client.get_run(run_id)
    job = run
    parent = run.data.tags.get("mlflow.parentRunId")
    if run.data.tags.get("omics_risk.level") == "model" and parent:
        job = client.get_run(parent)
    params, tags = dict(job.data.params), dict(job.data.tags)
    horizons = None
    if _param(params, "evaluation.horizons"):
        try:
            horizons = [float(h) for h in json.loads(params["evaluation.horizons"])]
        except (ValueError, TypeError):
            horizons = None
    cv = None
    if _param(params, "training.cv.folds"):
        cv = (f"{params['training.cv.folds']}-fold stratified CV x {params.get('training.cv.repeats', '1')} "
              "repeat(s), patient level")
    return TrainingInfo(job_run_id=job.info.run_id, cohort=tags.get("cohort"), data_root=_param(params, "data.root"),
                        features_dir=_param(params, "data.features_dir"), endpoint=_param(params, "task.endpoint"),
                        response=_param(params, "task.response"), horizons=horizons, cv=cv, params=params)


def model_view(data: MultimodalData, manifest: Any, *, max_missing: float | None = None
               ) -> tuple[MultimodalData, list[str]]:
    """``data`` with exactly the model's columns (its :class:`~omics_risk.scoring.frames.FeatureManifest`).

    A modality the cohort lacks becomes absent for every patient; a modality missing more than ``max_missing`` of
    the model's features (default: the scoring limit ``omics_risk.workflows.scoring.MAX_MISSING_FEATURES``) is an error,
    fewer are imputed by the model (with a note). Clinical columns the model needs must all be there.
    """
    limit = MAX_MISSING_FEATURES if max_missing is None else max_missing
    notes: list[str] = []
    missing_clin = [c for c in manifest.clinical if c not in data.clinical.columns]
    if missing_clin:
        raise EvaluationError(f"the cohort lacks clinical column(s) the model needs: {', '.join(missing_clin)}; "
                              "declare them in cohort.yaml and clinical.csv")
    clinical = data.clinical[list(manifest.clinical)]
    tables: dict[str, pd.DataFrame] = {}
    for m, cols in manifest.modalities.items():
        cols = list(cols)
        if m not in data.modalities:
            tables[m] = pd.DataFrame(np.nan, index=data.patients, columns=cols)
            notes.append(f"modality '{m}' of the model is not in this cohort: every patient is scored without it")
            continue
        table = data.modalities[m]
        lacking = [c for c in cols if c not in table.columns]
        if lacking and len(lacking) > limit * len(cols):
            raise EvaluationError(f"modality '{m}' of the cohort lacks {len(lacking)} of the model's {len(cols)} "
                                  f"features (e.g. {', '.join(lacking[:3])}): it was extracted with other settings "
                                  "than the model's; re-extract it (features_dir of a fresh store)")
        if lacking:
            notes.append(f"modality '{m}': {len(lacking)} of {len(cols)} model features are missing in this cohort "
                         "and are imputed by the model")
        tables[m] = table.reindex(columns=cols).astype(np.float64)
    present = pd.DataFrame({"clinical": True, **{m: t.notna().any(axis=1) for m, t in tables.items()}},
                           index=data.patients)
    return dataclasses.replace(data, clinical=clinical, modalities=tables, present=present), notes

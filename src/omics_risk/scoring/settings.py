"""The logged model's ``scoring.json``: what batch scoring of a new cohort needs besides the model.

Risk-group cut-offs of the training risks, training feature ranges (for shift warnings), the feature store's
extraction settings, the training cohort's profile, the CT preprocessing and the training run's prediction time and
longitudinal inputs (so that scoring builds a new cohort's inputs at the same time); aggregates only, never a
patient's row.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.features.clinical import clinical_types
from omics_risk.models.base import SurvivalModel
from omics_risk.models.saved import plain
from omics_risk.scoring.frames import RISK_GROUPS, FeatureManifest, model_manifest
from omics_risk.scoring.predict import DEFAULT_HORIZONS, score
from omics_risk.scoring.shift import training_ranges

__all__ = ["SCORING_FORMAT", "cohort_profile", "extraction_spec", "risk_cutoffs", "scoring_settings"]

#: Version of the ``scoring.json`` layout (1: horizons and chunk size only; 2 may hold ``prediction_time``,
#: ``longitudinal`` and ``derived_inputs``, absent for a model trained without a prediction time).
SCORING_FORMAT = 2


def risk_cutoffs(risk: np.ndarray) -> dict[str, list[float]]:
    """Training cut-offs of the risk score per scheme: ``{"median": [q50], "tertiles": [q33, q67]}``, fitted by
    :class:`~omics_risk.evaluation.riskgroups.RiskGroups` (which assigns them at scoring time too)."""
    risk = np.asarray(risk, dtype=np.float64)
    risk = risk[np.isfinite(risk)]
    if risk.size == 0:
        raise ValueError("no finite training risk to derive risk-group cut-offs from")
    return {name: [float(v) for v in RiskGroups(name).fit(risk).cutoffs_] for name in RISK_GROUPS}


def extraction_spec(store: str | Path, modalities: Sequence[str]) -> dict[str, Any]:
    """The extractors (class, version, settings, settings hash) that made ``modalities`` of a feature store.

    Read from the store's ``manifest.json`` (written by ``omics-risk extract``) so that scoring extracts a new cohort
    exactly as the training cohort was. Input file hashes are left out: they belong to the training patients.
    """
    path = Path(store) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: feature_store must be the training cohort's feature store")
    manifest = json.loads(path.read_text())
    out: dict[str, Any] = {}
    for m in modalities:
        info = manifest.get("modalities", {}).get(m)
        if info is None:
            raise ValueError(f"modality '{m}' of the model is not in the feature store {path.parent}")
        out[m] = {"format": info.get("format"),
                  "extractors": [{k: e.get(k) for k in ("name", "class", "version", "settings", "settings_hash")}
                                 for e in info.get("extractors", [])]}
    return out


def cohort_profile(cohort: Any, modalities: Sequence[str] = ()) -> dict[str, Any]:
    """What scoring checks a new cohort against: time unit, declared clinical types, median sample day per timepoint.

    ``cohort``: a :class:`~omics_risk.data.contract.Cohort` or its directory. Aggregates only (medians of days).
    """
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    days: dict[str, dict[str, float]] = {}
    for m in modalities or cohort.modalities:
        rows = cohort.samples_of(m)
        if rows.empty:
            continue
        med = pd.to_numeric(rows["day"], errors="coerce").groupby(rows["timepoint"].astype(str)).median()
        days[m] = {str(tp): float(v) for tp, v in med.items() if np.isfinite(v)}
    formats = {m: getattr(cohort.spec.modality(m), "format", None) for m in (modalities or cohort.modalities)}
    return {"name": cohort.spec.name, "time_unit": cohort.spec.time_unit, "clinical": clinical_types(cohort.spec),
            "formats": formats, "sample_days": days}


def scoring_settings(
    model: SurvivalModel,
    frame: pd.DataFrame,
    *,
    manifest: FeatureManifest | None = None,
    horizons: Sequence[float] = DEFAULT_HORIZONS,
    chunk_size: int = 1024,
    training_risk: np.ndarray | None = None,
    feature_store: str | Path | None = None,
    training_cohort: Any = None,
    ct_config: Any = None,
    prediction_time: PredictionTime | None = None,
    longitudinal: Mapping[str, Any] | None = None,
    derived_inputs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The logged model's ``scoring.json``: everything batch scoring of a new cohort needs besides the model.

    ``horizons`` / ``chunk_size`` (the pyfunc's params), ``risk_cutoffs`` of the training risks, ``feature_ranges``
    of the training frame (:func:`omics_risk.scoring.shift.training_ranges`), and when given the ``extraction``
    settings of the training feature store, the training ``cohort`` profile and the ``ct`` preprocessing of a
    CT-image model. ``frame`` is the training patients' flat frame; only aggregates of it are stored.

    ``prediction_time`` (the training run's ``task.prediction_time``) is stored as ``{"config": ..., "describe":
    ...}`` and ``longitudinal`` (``task.longitudinal``) as given; ``derived_inputs`` maps each model input built
    from another modality's samples (``ctdna_dynamics``) to that modality (``ctdna``), whose extraction settings
    are then stored. None of these keys is written without a prediction time: such a model scores as before.
    """

    manifest = manifest or model_manifest(model)
    known = set(manifest.columns())
    frame = frame[[c for c in frame.columns if c in known]]
    out: dict[str, Any] = {"format_version": SCORING_FORMAT, "horizons": [float(h) for h in horizons],
                           "chunk_size": int(chunk_size)}
    if training_risk is None and manifest.images:
        warnings.warn(f"{type(model).__name__} encodes {', '.join(manifest.images)} images, which the training "
                      "frame does not carry: pass training_risk (the in-sample risks computed with the images) to "
                      "store risk-group cut-offs; none are stored", stacklevel=3)
    elif training_risk is None:
        training_risk = score(model, frame, manifest=manifest, horizons=(), chunk_size=chunk_size)["risk_score"]
    if training_risk is not None:
        out["risk_cutoffs"] = risk_cutoffs(np.asarray(training_risk, dtype=float))
    out["feature_ranges"] = training_ranges(frame, manifest)
    derived = dict(derived_inputs or {})
    stored = list(dict.fromkeys(derived.get(m, m) for m in manifest.modalities))  # what the feature store holds
    if feature_store is not None:
        out["extraction"] = extraction_spec(feature_store, stored)
    if training_cohort is not None:
        out["cohort"] = cohort_profile(training_cohort, [*stored, *manifest.images])
    if prediction_time is not None:
        out["prediction_time"] = {"config": prediction_time.to_config(), "describe": prediction_time.describe()}
        if longitudinal:
            out["longitudinal"] = plain(longitudinal)
        if derived:
            out["derived_inputs"] = derived
    if ct_config is not None:
        out["ct"] = plain(ct_config)
    return out


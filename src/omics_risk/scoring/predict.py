"""Scoring a flat frame with a fitted model, in chunks: the logged pyfunc's output, also without MLflow.

One job: the columns of a scored frame (``patient_id``, ``risk_score``, ``surv_<h>d``, ``response_prob``,
``modalities_used``), asking the model only for what its :class:`~omics_risk.models.base.ModelCapabilities` declare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from omics_risk.models.base import SurvivalModel, capabilities_of
from omics_risk.progress import progress_bar
from omics_risk.scoring.frames import CLINICAL, ID_COLUMN, FeatureManifest, from_frame, model_manifest

__all__ = ["DEFAULT_HORIZONS", "horizon_name", "score"]

DEFAULT_HORIZONS: tuple[float, ...] = (365.0, 730.0, 1095.0)


def horizon_name(h: float) -> str:
    return f"surv_{int(h)}d" if float(h).is_integer() else f"surv_{h:g}d"


def score(
    model: SurvivalModel,
    frame: pd.DataFrame,
    *,
    manifest: FeatureManifest | None = None,
    horizons: Sequence[float] | None = DEFAULT_HORIZONS,
    chunk_size: int = 1024,
    progress: bool = False,
    images: Any = None,
) -> pd.DataFrame:
    """Score a flat frame in chunks under ``torch.inference_mode()``: the pyfunc's output, without MLflow.

    Columns: ``patient_id``, ``risk_score`` (higher = riskier), ``surv_<h>d`` per horizon (days) when the model
    predicts survival, ``response_prob`` when it has a response head, ``modalities_used`` (``clinical,cfdna,ct``).
    ``images``: a CT image provider (``patient_id -> {timepoint: tensor}``) for models that encode CT images, which
    a flat frame cannot carry (batch scoring from a cohort directory passes one; the MLflow pyfunc cannot).
    """
    manifest = manifest or model_manifest(model)
    kw: dict[str, Any] = {"images": images} if images is not None else {}
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    data = from_frame(frame, manifest)
    n = len(data)
    hz = np.asarray([float(h) for h in (horizons or ())], dtype=float)
    if hz.size and (not np.isfinite(hz).all() or (hz <= 0).any()):
        raise ValueError(f"horizons must be positive days, got {hz.tolist()}")
    caps = capabilities_of(model)  # declared by the model: no forward pass for an output it cannot give
    survival = caps.survival and hz.size > 0
    response = caps.response
    risk = np.empty(n)
    surv = np.empty((n, hz.size))
    resp = np.empty(n)
    starts = range(0, n, chunk_size)
    # every output of a chunk from one forward pass when the model offers it (the fused network: its 3D CT encoder
    # dominates the cost); other models answer the three predict_* calls
    joint = callable(getattr(model, "predict_outputs", None))
    with torch.inference_mode():
        for start in progress_bar(starts, desc="scoring", unit="chunk", disable=not progress or len(starts) < 2):
            idx = np.arange(start, min(start + chunk_size, n))
            part = data.subset(idx)
            if joint:
                try:
                    outs = model.predict_outputs(part, hz if survival else None, **kw)
                except NotImplementedError:  # no survival head after all: learnt on the first chunk, as below
                    if start or not survival:
                        raise
                    survival = False
                    outs = model.predict_outputs(part, None, **kw)
                if response and "response" not in outs:
                    if start:
                        raise RuntimeError(f"{type(model).__name__}.predict_outputs gave no 'response' for rows "
                                           f"{start}.. after giving it for the first chunk")
                    response = False
                risk[idx] = np.asarray(outs["risk"], dtype=float)
                if survival:
                    surv[idx] = np.asarray(outs["survival"], dtype=float).reshape(len(idx), hz.size)
                if response:
                    resp[idx] = np.asarray(outs["response"], dtype=float)
                continue
            risk[idx] = np.asarray(model.predict_risk(part, **kw), dtype=float)
            try:  # optional outputs: a model may implement the method yet lack the head (NotImplementedError)
                if survival:
                    curves = model.predict_survival(part, hz, **kw)
                    surv[idx] = np.asarray(curves, dtype=float).reshape(len(idx), hz.size)
            except NotImplementedError:
                if start:
                    raise
                survival = False
            try:
                if response:
                    resp[idx] = np.asarray(model.predict_response(part, **kw), dtype=float)
            except NotImplementedError:
                if start:
                    raise
                response = False
    if not np.isfinite(risk).all():
        raise RuntimeError(
            f"{type(model).__name__} returned {int((~np.isfinite(risk)).sum())} non-finite risk score(s); "
            "the SurvivalModel contract requires finite scores (the training median when inputs are missing)"
        )
    out = pd.DataFrame({ID_COLUMN: data.patients.astype(str).to_numpy(), "risk_score": risk})
    for j, h in enumerate(hz if survival else ()):
        out[horizon_name(h)] = surv[:, j]
    if response:
        out["response_prob"] = resp
    used = [CLINICAL, *manifest.modalities]
    present = data.present.reindex(columns=used, fill_value=False).to_numpy(dtype=bool)
    if images is not None and manifest.images:
        used += list(manifest.images)
        has_image = np.array([_has_image(images, p) for p in data.patients], dtype=bool)
        present = np.column_stack([present, *([has_image] * len(manifest.images))])
    names = np.asarray(used, dtype=object)
    out["modalities_used"] = [",".join(names[row]) for row in present]
    return out


def _has_image(images: Any, patient: Any) -> bool:
    """Whether an image provider holds at least one tensor for ``patient``."""
    try:
        item = images[patient] if isinstance(images, Mapping) else images(patient)
    except KeyError:
        return False
    if item is None:
        return False
    if isinstance(item, Mapping):
        return any(v is not None for v in item.values())
    return True

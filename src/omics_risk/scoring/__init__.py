"""Batch scoring: the flat per-patient frame, the MLflow pyfunc model and the registry, a JSON reference model.

``frames`` is light; the pyfunc names (which import torch and MLflow) load on first use. Modules: ``frames`` (the
flat frame and feature manifest), ``predict`` (scoring a frame), ``settings`` (``scoring.json``), ``shift``
(training ranges), ``pyfunc`` (MLflow wrapper, logging, safe class loading), ``reference_model``.
"""

from __future__ import annotations

import importlib
from typing import Any

from omics_risk.scoring.frames import FeatureManifest, from_frame, to_frame

__all__ = [
    "FeatureManifest",
    "LinearRiskModel",
    "OmicsRiskPyfunc",
    "from_frame",
    "load_scoring_model",
    "log_model",
    "score",
    "to_frame",
]

_LAZY = {
    "OmicsRiskPyfunc": "omics_risk.scoring.pyfunc",
    "load_scoring_model": "omics_risk.scoring.pyfunc",
    "log_model": "omics_risk.scoring.pyfunc",
    "score": "omics_risk.scoring.pyfunc",
    "LinearRiskModel": "omics_risk.scoring.reference_model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omics_risk.scoring' has no attribute {name!r}")

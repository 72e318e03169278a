"""The contract every model of omics-risk follows, baselines and fused network alike.

All models take :class:`~omics_risk.data.multimodal.MultimodalData` (every patient, modality tables with a
presence mask, the outcome) so that they can be trained and compared on identical folds. Risk scores follow one
sign convention everywhere: **higher = riskier** (shorter expected survival, lower response probability is not
a risk: response models expose ``predict_response`` separately).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from omics_risk.data.multimodal import MultimodalData

__all__ = ["SurvivalModel"]


class SurvivalModel(ABC):
    """Fit on training patients, then score any patients, including those lacking some or all modalities."""

    #: Short identifier used in metric names and tables, e.g. ``fused``, ``clinical_cox``, ``coxnet_cfdna``.
    name: str = "model"

    @abstractmethod
    def fit(self, data: MultimodalData) -> SurvivalModel:
        """Learn from ``data`` (a training fold). Every fitted preprocessing step lives inside the model."""

    @abstractmethod
    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        """One finite risk score per patient of ``data`` (higher = riskier).

        A patient lacking the inputs the model needs gets an uninformative score (the training median), never
        NaN, so every model is evaluated on exactly the same patients.
        """

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        """Survival probabilities, shape (patients, len(times)), times in days. Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not predict survival curves")

    def predict_response(self, data: MultimodalData) -> np.ndarray:
        """Probability of response (binary endpoint). Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not predict response")

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters worth logging (flat, JSON-serialisable)."""
        return {}

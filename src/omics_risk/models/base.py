"""The contract every model of omics-risk follows, baselines and fused network alike.

All models take :class:`~omics_risk.data.multimodal.MultimodalData` (every patient, modality tables with a
presence mask, the outcome) so that they can be trained and compared on identical folds. Risk scores follow one
sign convention everywhere: **higher = riskier** (shorter expected survival, lower response probability is not
a risk: response models expose ``predict_response`` separately).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from omics_risk.data.multimodal import MultimodalData

__all__ = ["ModelCapabilities", "SurvivalModel", "capabilities_of"]


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model accepts and predicts, declared by the model (:meth:`SurvivalModel.capabilities`), not probed.

    Training, external validation and scoring read this one record to decide which predictions to ask for and
    which arguments to pass; a model that declares ``images`` takes ``images=`` (a CT image provider) in ``fit`` and
    in every ``predict_*`` call, and one that declares ``epoch_callback`` takes ``on_epoch=`` in ``fit``.
    """

    #: ``predict_survival(data, times)`` gives survival curves (the model has a survival head / baseline hazard).
    survival: bool = False
    #: ``predict_response(data)`` gives P(response) for a binary endpoint.
    response: bool = False
    #: ``fit`` and ``predict_*`` take ``images=``, the CT tensors of an image modality.
    images: bool = False
    #: ``fit`` takes ``on_epoch=(epoch, metrics)``, called after each training epoch (progress, MLflow curves).
    epoch_callback: bool = False


def _overrides(model: Any, method: str) -> bool:
    impl = getattr(type(model), method, None)
    return impl is not None and impl is not getattr(SurvivalModel, method, None)


def capabilities_of(model: Any) -> ModelCapabilities:
    """The model's declared :class:`ModelCapabilities`; for an object that is not a SurvivalModel (duck-typed
    third-party code), what its methods show, with ``has_survival_head`` / ``has_response_head`` flags winning."""
    declare = getattr(model, "capabilities", None)
    if callable(declare):
        return declare()
    return _default_capabilities(model)


def _default_capabilities(model: Any) -> ModelCapabilities:
    def flag(name: str, method: str) -> bool:
        declared = getattr(model, name, None)
        if declared is not None:
            return bool(declared)
        return callable(getattr(model, method, None)) and (
            not isinstance(model, SurvivalModel) or _overrides(model, method)
        )

    return ModelCapabilities(survival=flag("has_survival_head", "predict_survival"),
                             response=flag("has_response_head", "predict_response"))


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

    def capabilities(self) -> ModelCapabilities:
        """What this model predicts and takes (:class:`ModelCapabilities`).

        By default: survival / response when the subclass implements ``predict_survival`` / ``predict_response``
        (a ``has_survival_head`` / ``has_response_head`` attribute wins), no images, no epoch callback. A model
        whose answer depends on its settings (the fused model's heads, ``use_ct_images``) overrides this.
        """
        return _default_capabilities(self)

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters worth logging (flat, JSON-serialisable)."""
        return {}

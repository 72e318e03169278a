"""The contract every model of omics-risk follows, baselines and fused network alike.

All models take :class:`~omics_risk.data.multimodal.MultimodalData` (every patient, modality tables with a
presence mask, the outcome) so that they can be trained and compared on identical folds. Risk scores follow one
sign convention everywhere: **higher = riskier** (shorter expected survival, lower response probability is not
a risk: response models expose ``predict_response`` separately).

The contract between the training pipeline and a model (what ``train.py`` does with a ``configs/model/*.yaml``):

* **Construction.** The pipeline instantiates ``model.estimator`` (Hydra ``_target_`` plus the YAML's settings) with
  the keyword arguments of a :class:`ModelContext` on top (:meth:`ModelContext.as_kwargs`): always ``modalities``
  (the data's modality tables), ``clinical_types`` (cohort.yaml ``clinical:`` types), ``seed`` and ``device``;
  ``response_label`` and ``heads`` (the YAML's heads plus ``"binary"``) when the task has a response endpoint;
  ``ct_timepoints`` / ``ct_in_channels`` when the estimator sets ``use_ct_images`` and leaves them unset. A model
  under ``configs/model/`` therefore accepts at least ``modalities``, ``clinical_types``, ``seed`` and ``device``
  (it may ignore them). Baselines are built by :func:`omics_risk.models.baselines.make_baselines` instead.
* **Fitting and predicting.** ``fit(data)``, ``predict_risk(data)``, and ``predict_survival(data, times)`` /
  ``predict_response(data)`` when :meth:`SurvivalModel.capabilities` declares ``survival`` / ``response``. The
  pipeline adds ``images=`` (a CT image provider) to ``fit`` and every ``predict_*`` call only when the capabilities
  declare ``images``, and ``on_epoch=`` to ``fit`` only when they declare ``epoch_callback``
  (:func:`fit_kwargs`, :func:`predict_kwargs`).
* **Logging** the final model as an MLflow pyfunc further needs ``save(directory)`` writing a ``config.json`` that
  names the class, a ``load(directory)`` classmethod and a feature manifest (see
  :class:`omics_risk.scoring.reference_model.LinearRiskModel`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from omics_risk.data.multimodal import MultimodalData

__all__ = ["InsufficientTrainingData", "ModelCapabilities", "ModelContext", "SurvivalModel", "capabilities_of",
           "fit_kwargs", "predict_kwargs"]


class InsufficientTrainingData(ValueError):
    """A training set too small for a model to be fitted at all (e.g. fewer than 2 events, or a single response
    class), as opposed to a mistake in the data or the config. On a small cohort, a small risk set (a late
    prediction time) or a rarely present modality, a cross-validation fold can be such a set: the run then leaves
    that model out, says why, and goes on with the others."""


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


@dataclass(frozen=True)
class ModelContext:
    """What the training pipeline knows about the run and the data, passed to a configured model's constructor.

    ``as_kwargs()`` gives the keyword arguments that ``train.py`` adds to ``configs/model/*.yaml``'s estimator
    settings (see the module docstring); an optional field left ``None`` is not passed, so the YAML (or the model's
    own default) decides.
    """

    #: The data's modality tables (``MultimodalData.modality_names``).
    modalities: Sequence[str]
    #: cohort.yaml ``clinical:`` types (``omics_risk.features.clinical.clinical_types(spec)``).
    clinical_types: Mapping[str, Any] | None
    seed: int
    #: ``"auto"`` | ``"cpu"`` | ``"cuda"`` (``training.device``).
    device: str
    #: ``data.extra_labels`` key of the response endpoint of a survival task (``task.response``).
    response_label: str | None = None
    #: The heads to train, when the task changes them (a response task adds ``"binary"``).
    heads: Sequence[str] | None = None
    #: The cohort's CT timepoints, for a CT-image model whose config leaves them unset.
    ct_timepoints: Sequence[str] | None = None
    #: Channels of the CT crops (2 with a mask channel), for a CT-image model whose config leaves them unset.
    ct_in_channels: int | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments: the four always-passed fields, then every optional field that is set."""
        out: dict[str, Any] = {"modalities": self.modalities, "clinical_types": self.clinical_types,
                               "seed": self.seed, "device": self.device}
        optional = {"response_label": self.response_label, "heads": self.heads, "ct_timepoints": self.ct_timepoints,
                    "ct_in_channels": self.ct_in_channels}
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def fit_kwargs(model: Any, images: Any = None,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``model.fit`` besides the data, as its capabilities declare them."""
    caps = capabilities_of(model)
    out: dict[str, Any] = {}
    if caps.epoch_callback:
        out["on_epoch"] = on_epoch
    if caps.images:
        out["images"] = images
    return out


def predict_kwargs(model: Any, images: Any = None) -> dict[str, Any]:
    """The keyword arguments of ``model.predict_*`` besides the data (``images=`` for an image model)."""
    return {"images": images} if capabilities_of(model).images else {}

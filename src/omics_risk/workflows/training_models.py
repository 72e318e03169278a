"""The models a training run compares, and how they are fitted: fresh unfitted models per fold (the fused model
first, then the baselines and the response reference), fitted with what each declares it takes
(:func:`~omics_risk.models.base.capabilities_of`: CT images, an epoch callback), and the CT settings of the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelContext, SurvivalModel, fit_kwargs, predict_kwargs
from omics_risk.models.baselines import make_baselines
from omics_risk.models.reference import check_reference_column
from omics_risk.workflows.inputs import CTInputs

__all__ = ["CT_ONLY", "RESPONSE_REFERENCE", "ModelFactory", "ResponseReference"]

ModelFactory = Callable[[], SurvivalModel]
#: Model row of the staged design's CT-only network (its out-of-fold risk is the deep radiomic risk score).
CT_ONLY = "ct_deep"
#: Model row of the response reference (clinical logistic regression) for tasks with a response endpoint.
RESPONSE_REFERENCE = "clinical_logistic"


# ------------------------------------------------------------------------------------------------ CT settings
def _uses_ct_images(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "model.estimator.use_ct_images", default=False))


def _ct_modality(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "model.estimator.ct_modality", default=None) or "ct")


def _ct_config(cfg: DictConfig) -> Any:
    from omics_risk.features.ct import CTConfig  # lazy: torch and MONAI, only for a CT-image model

    node = OmegaConf.select(cfg, "model.ct", default=None)
    return CTConfig.from_mapping(node) if node is not None else CTConfig()



def _ct_inputs(cfg: DictConfig) -> CTInputs:
    """How training provides the CT images: checked, every scan preprocessed first, every tensor in memory."""
    wanted = OmegaConf.select(cfg, "model.estimator.ct_timepoints", default=None)
    cache_dir = Path(cfg.model.ct_cache_dir) if OmegaConf.select(cfg, "model.ct_cache_dir") else None
    return CTInputs(modality=_ct_modality(cfg), config=_ct_config(cfg), cache_dir=cache_dir,
                    timepoints=list(wanted) if wanted else None, check=True, prefill=True, preload=True)


# ------------------------------------------------------------------------------------------------ models
class ResponseReference(SurvivalModel):
    """A binary baseline fitted on the response endpoint of a survival task (e.g. SCLC response next to PFS).

    The reference for the fused model's response AUC on the same folds: ``predict_response`` is P(response) of the
    wrapped model trained on ``data.extra_labels[response]`` (patients without a label are left out of its fit),
    ``predict_risk`` is 1 - P(response), so its C-index for the survival endpoint is reported too.
    """

    def __init__(self, model: SurvivalModel, response: str, name: str = RESPONSE_REFERENCE):
        self.model = model
        self.response = response
        self.name = name

    def _view(self, data: MultimodalData) -> MultimodalData:
        if self.response not in data.extra_labels:
            raise ValueError(f"response '{self.response}' is not in data.extra_labels "
                             f"(has: {', '.join(data.extra_labels) or 'none'})")
        return dataclasses.replace(data, time=None, event=None, label=data.extra_labels[self.response],
                                   endpoint=self.response)

    def fit(self, data: MultimodalData) -> ResponseReference:
        self.model.fit(self._view(data))
        return self

    def predict_response(self, data: MultimodalData) -> np.ndarray:
        return np.asarray(self.model.predict_response(self._view(data)), dtype=float)

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        return 1.0 - self.predict_response(data)

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "response": self.response}


def _factories(cfg: DictConfig, data: MultimodalData, types: dict[str, Any],
               ct_timepoints: list[str] | None = None) -> dict[str, ModelFactory]:
    """Fresh, unfitted models per fold: the fused model first, then the baselines."""
    mods = data.modality_names
    est = cfg.model.estimator
    heads = list(OmegaConf.select(cfg, "model.estimator.heads", default=None) or ["cox"])
    ct_images = _uses_ct_images(cfg)
    context = ModelContext(
        modalities=mods, clinical_types=types, seed=int(cfg.seed), device=cfg.training.device,
        response_label=cfg.task.response or None,
        # a response task trains the response head jointly with the survival head
        heads=[*heads, "binary"] if cfg.task.response and "binary" not in heads else None,
        ct_timepoints=(list(ct_timepoints or []) if ct_images
                       and not OmegaConf.select(cfg, "model.estimator.ct_timepoints", default=None) else None),
        ct_in_channels=((2 if _ct_config(cfg).mask_channel else 1) if ct_images
                        and OmegaConf.select(cfg, "model.estimator.ct_in_channels", default=None) is None else None),
    )
    extra = context.as_kwargs()

    def fused() -> SurvivalModel:
        return instantiate(est, **extra)

    factories: dict[str, ModelFactory] = {str(cfg.model.name): fused}
    if _uses_ct_images(cfg) and OmegaConf.select(cfg, "model.deep_radiomic_score", default=False):
        ct_only = {**extra, "modalities": [], "use_clinical": False, "heads": ["cox"], "response_label": None,
                   "name": CT_ONLY, **({"stack": {"enabled": False}} if "stack" in est else {})}
        factories[CT_ONLY] = lambda: instantiate(est, **ct_only)
    if cfg.baselines.enabled:
        settings = OmegaConf.to_container(cfg.baselines.settings, resolve=True) or {}
        reference = OmegaConf.select(cfg, "data.clinical_reference", default=None)  # e.g. stage: reference_stage
        if reference is not None:
            check_reference_column(str(reference), list(data.clinical.columns), str(cfg.data.root))
        settings = {**settings, "clinical_types": types, "seed": int(cfg.seed), "clinical_reference": reference}
        names = list(make_baselines(mods, "survival", settings))
        for name in names:
            factories[name] = (lambda n=name: make_baselines(mods, "survival", settings)[n])
        if cfg.task.response:
            ref = {**settings, "include": ["clinical_cox"], "exclude": None}
            factories[RESPONSE_REFERENCE] = lambda: ResponseReference(
                make_baselines(mods, "binary", ref)["clinical_cox"], str(cfg.task.response))
    return factories


def _check_optimized_metric(cfg: DictConfig, names: list[str]) -> None:
    """Fail before training when ``optimized_metric`` names no model of the run (the sweeper would find nothing)."""
    metric = str(OmegaConf.select(cfg, "optimized_metric", default="") or "")
    if not metric:
        return
    model = metric.removeprefix("external/").split("/", 1)[0]
    if model not in names:
        raise ValueError(f"optimized_metric '{metric}' names no model of this run (models: {', '.join(names)}); "
                         f"set optimized_metric={names[0]}/cindex")


def _fit(model: SurvivalModel, data: MultimodalData, images: Any = None,
         on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> SurvivalModel:
    return model.fit(data, **fit_kwargs(model, images, on_epoch))


def _fit_predict(model: SurvivalModel, train: MultimodalData, test: MultimodalData,
                 on_epoch: Callable[[int, dict[str, float]], None] | None, images: Any = None,
                 test_images: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit on ``train``, score ``test``. ``images`` / ``test_images``: CT providers of the two cohorts (the same
    store for cross-validation folds; ``test_images`` defaults to ``images``) for models that encode CT."""
    _fit(model, train, images, on_epoch)
    kw = predict_kwargs(model, test_images if test_images is not None else images)
    risk = np.asarray(model.predict_risk(test, **kw), dtype=float)
    response = None
    if test.extra_labels:
        try:
            response = np.asarray(model.predict_response(test, **kw), dtype=float)
        except (NotImplementedError, ValueError):
            response = None
    return risk, response

"""Models declare what they accept and predict (ModelCapabilities), and the declarations match their methods:
the pipeline's keyword arguments (ModelContext, fit_kwargs, predict_kwargs) follow them, never a signature probe."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from test_baselines import make_toy

from omics_risk.models.base import (
    ModelCapabilities,
    ModelContext,
    SurvivalModel,
    capabilities_of,
    fit_kwargs,
    predict_kwargs,
)
from omics_risk.models.baselines import ClinicalCox, ModalityCoxnet, ModalityRSF, make_baselines
from omics_risk.models.deepprog import DeepProgStyle
from omics_risk.models.fused import FusedSurvivalModel
from omics_risk.models.stacking import LateFusionStacker


@pytest.mark.parametrize(("heads", "survival", "response"), [
    (["cox"], True, False), (["discrete"], True, False), (["binary"], False, True), (["cox", "binary"], True, True),
])
@pytest.mark.parametrize("images", [False, True])
def test_fused_model_declares_its_heads_and_images(heads: list[str], survival: bool, response: bool,
                                                   images: bool) -> None:
    model = FusedSurvivalModel(heads=heads, use_ct_images=images)
    assert capabilities_of(model) == ModelCapabilities(survival=survival, response=response, images=images,
                                                       epoch_callback=True)


def test_declared_arguments_are_the_ones_fit_and_predict_take() -> None:
    for images in (False, True):
        model = FusedSurvivalModel(use_ct_images=images)
        fit = inspect.signature(model.fit).parameters
        assert "on_epoch" in fit and "images" in fit
        kw = fit_kwargs(model, images="store", on_epoch=print)
        assert kw == ({"on_epoch": print, "images": "store"} if images else {"on_epoch": print})
        assert predict_kwargs(model, images="store") == ({"images": "store"} if images else {})
        for method in ("predict_risk", "predict_survival", "predict_response", "predict_outputs"):
            assert "images" in inspect.signature(getattr(model, method)).parameters


def _baselines(task: str) -> list[SurvivalModel]:
    models = [ClinicalCox(task=task), ModalityCoxnet("a", task=task), ModalityRSF("a", task=task),
              DeepProgStyle(["a"], task=task)]
    return [*models, LateFusionStacker({"clinical": ClinicalCox(task=task)}, task=task)]


@pytest.mark.parametrize(("task", "survival", "response"), [
    ("survival", True, False), ("binary", False, True), ("auto", True, True),
])
def test_baselines_declare_the_endpoint_they_are_built_for(task: str, survival: bool, response: bool) -> None:
    for model in _baselines(task):
        caps = capabilities_of(model)
        assert caps == ModelCapabilities(survival=survival, response=response), type(model).__name__
        assert fit_kwargs(model, images="store", on_epoch=print) == {} and predict_kwargs(model, images="x") == {}


@pytest.mark.parametrize("binary", [False, True])
def test_a_fitted_baseline_declares_the_endpoint_it_was_fitted_on(binary: bool) -> None:
    data, _ = make_toy(150, seed=4, binary=binary)
    for name, model in make_baselines(["a"], "binary" if binary else "survival",
                                      {"include": ["clinical_cox", "coxnet"]}).items():
        model.task = "auto"  # the fitted endpoint decides
        model.fit(data)
        caps = capabilities_of(model)
        assert (caps.survival, caps.response) == (not binary, binary), name
        if caps.survival:
            assert np.isfinite(model.predict_survival(data, np.array([100.0]))).all()
        else:
            with pytest.raises(NotImplementedError):
                model.predict_survival(data, np.array([100.0]))


def test_model_context_gives_the_pipelines_constructor_arguments() -> None:
    ctx = ModelContext(modalities=["a", "b"], clinical_types={"age": "numeric"}, seed=7, device="cpu")
    assert ctx.as_kwargs() == {"modalities": ["a", "b"], "clinical_types": {"age": "numeric"}, "seed": 7,
                               "device": "cpu"}
    full = ModelContext(modalities=["ct"], clinical_types=None, seed=1, device="auto", response_label="response",
                        heads=["cox", "binary"], ct_timepoints=[], ct_in_channels=2)
    assert full.as_kwargs() == {"modalities": ["ct"], "clinical_types": None, "seed": 1, "device": "auto",
                                "response_label": "response", "heads": ["cox", "binary"], "ct_timepoints": [],
                                "ct_in_channels": 2}
    # the fused model takes every one of them
    model = FusedSurvivalModel(**full.as_kwargs(), use_ct_images=True)
    assert model.heads == ["cox", "binary"] and model.ct_in_channels == 2 and model.seed == 1

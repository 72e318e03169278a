"""FusedSurvivalModel.predict_outputs: every output from one forward pass, bit-identical to the predict_* calls, and
scoring.pyfunc.score() using it (one forward pass per chunk instead of three, which matters with the 3D CT encoder).

Tiny models on the synthetic cohort of test_fused.py (its ``make_data`` and 8^3 CT crops ``_images``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_fused import _images, make_data

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.fused import FusedSurvivalModel
from omics_risk.scoring.frames import to_frame
from omics_risk.scoring.pyfunc import score

TIMES = np.array([0.0, 200.0, 365.0, 1095.0, 5000.0])
HORIZONS = [365.0, 730.0, 1095.0]
TINY = {"epochs": 3, "patience": None, "refit": False, "device": "cpu", "num_threads": 1, "seed": 0}
CT = {"use_ct_images": True, "modalities": ["cfdna"], "ct_widths": [4, 4, 8, 8], "ct_embed_dim": 8,
      "batch_size": 16, "epochs": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible float sums (tests/conftest.py)


@pytest.fixture(scope="module")
def cohort() -> MultimodalData:
    return make_data(n=120, seed=1)[0]


@pytest.fixture(scope="module")
def images(cohort: MultimodalData) -> dict[str, torch.Tensor]:
    return _images(cohort)


def _fit(cohort: MultimodalData, images: dict[str, torch.Tensor] | None = None, **settings) -> FusedSurvivalModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FusedSurvivalModel(**{**TINY, **settings}).fit(cohort.subset(np.arange(80)), images=images)


def _count_forward_passes(model: FusedSurvivalModel, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap the model's ``_predict`` (one full forward pass, CT encoder included) with a call counter."""
    calls = {"n": 0}
    inner = model._predict

    def counted(*args, **kwargs):
        calls["n"] += 1
        return inner(*args, **kwargs)

    monkeypatch.setattr(model, "_predict", counted)
    return calls


def _assert_same_as_separate_calls(model: FusedSurvivalModel, data: MultimodalData, **kw) -> None:
    out = model.predict_outputs(data, TIMES, **kw)
    np.testing.assert_array_equal(out["risk"], model.predict_risk(data, **kw))
    if "survival" in out:
        np.testing.assert_array_equal(out["survival"], model.predict_survival(data, TIMES, **kw))
        assert out["survival"].shape == (len(data), TIMES.size)
    if "response" in out:
        np.testing.assert_array_equal(out["response"], model.predict_response(data, **kw))
    else:
        with pytest.raises(NotImplementedError, match="no binary head"):
            model.predict_response(data, **kw)
    assert out["risk"].dtype == np.float64 and np.isfinite(out["risk"]).all()


@pytest.mark.parametrize(("heads", "keys"), [(("cox", "binary"), {"risk", "survival", "response"}),
                                             (("discrete",), {"risk", "survival"})])
def test_tabular_outputs_equal_the_three_calls(cohort: MultimodalData, heads, keys) -> None:
    model = _fit(cohort, heads=list(heads), response_label="response", n_intervals=4)
    test = cohort.subset(np.arange(80, 120))
    assert set(model.predict_outputs(test, TIMES)) == keys
    assert "survival" not in model.predict_outputs(test)  # no times, no curves
    _assert_same_as_separate_calls(model, test)


def test_binary_only_model_has_no_survival(cohort: MultimodalData) -> None:
    model = _fit(cohort, heads=["binary"], response_label="response")
    test = cohort.subset(np.arange(80, 120))
    out = model.predict_outputs(test)
    assert set(out) == {"risk", "response"}
    np.testing.assert_array_equal(out["response"], model.predict_response(test))
    with pytest.raises(NotImplementedError, match="only a binary head"):
        model.predict_outputs(test, TIMES)


def test_ct_image_outputs_equal_the_three_calls_in_one_forward_pass(cohort, images, monkeypatch) -> None:
    model = _fit(cohort, images, heads=["cox", "binary"], response_label="response", **CT)
    assert model.modalities_[-1] == "ct"
    test = cohort.subset(np.arange(80, 100))
    calls = _count_forward_passes(model, monkeypatch)
    out = model.predict_outputs(test, TIMES, images=images)
    assert calls["n"] == 1 and set(out) == {"risk", "survival", "response"}
    _assert_same_as_separate_calls(model, test, images=images)
    # the images matter (else this would not exercise the CT encoder): without any CT the scores change
    assert not np.array_equal(model.predict_outputs(test, images={})["risk"], out["risk"])


def test_score_makes_one_forward_pass_per_chunk(cohort, images, monkeypatch) -> None:
    model = _fit(cohort, images, heads=["cox", "binary"], response_label="response", **CT)
    frame = to_frame(cohort.subset(np.arange(80, 100)))
    calls = _count_forward_passes(model, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # from_frame notes on the synthetic clinical columns
        joint = score(model, frame, horizons=HORIZONS, chunk_size=6, images=images)  # chunks of 6, 6, 6, 2
        assert calls["n"] == 4
        calls["n"] = 0
        monkeypatch.setattr(model, "predict_outputs", None)  # hidden: score() falls back to the three calls
        separate = score(model, frame, horizons=HORIZONS, chunk_size=6, images=images)
        assert calls["n"] == 12
    assert list(joint.columns) == ["patient_id", "risk_score", "surv_365d", "surv_730d", "surv_1095d",
                                   "response_prob", "modalities_used"]
    for col in joint.columns:
        np.testing.assert_array_equal(joint[col].to_numpy(), separate[col].to_numpy(), err_msg=col)


def test_score_learns_a_missing_survival_head_on_the_first_chunk(cohort, monkeypatch) -> None:
    """A model that declares a survival head it lacks (predict_outputs raises NotImplementedError for times) is
    scored without survival columns, as with the three separate calls."""
    model = _fit(cohort, heads=["binary"], response_label="response")
    monkeypatch.setattr(model, "heads", ["cox", "binary"])
    frame = to_frame(cohort.subset(np.arange(80, 120)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = score(model, frame, horizons=HORIZONS, chunk_size=15)
        monkeypatch.setattr(model, "predict_outputs", None)
        separate = score(model, frame, horizons=HORIZONS, chunk_size=15)
    assert list(joint.columns) == ["patient_id", "risk_score", "response_prob", "modalities_used"]
    for col in joint.columns:
        np.testing.assert_array_equal(joint[col].to_numpy(), separate[col].to_numpy(), err_msg=col)

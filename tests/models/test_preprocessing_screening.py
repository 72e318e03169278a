"""The screening spec (config group model/screening) inside the fused model's ModalityPreprocessor and the baselines'
tabular pipelines: the default stays numerically identical, the spec's screen is fitted on the training rows, is
saved with skops, and reaches ModalityCoxnet / ModalityRSF / FusedSurvivalModel through their settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.util import Surv
from test_baselines import make_toy

from omics_risk.features.screening import FeatureScreen
from omics_risk.models.baselines import make_baselines
from omics_risk.models.fused import FusedSurvivalModel
from omics_risk.models.preprocessing import ModalityPreprocessor, load_preprocessor, save_preprocessor
from omics_risk.models.tabular import make_tabular_pipeline, preprocessing_kind, screening_spec

TRIAL = {
    "methods": ["consensus_clusters", "wilcoxon", "random_forest"],
    "combine": "sequential",
    "k": 3,
    "random_state": 0,
    "wilcoxon": {"k": 8},
    "random_forest": {"k": 3, "n_estimators": 40, "n_repeats": 3},
    "consensus_clusters": {"ks": [2, 3], "n_resamples": 10},
}


def table(n: int = 160, p: int = 24, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    lp = 1.4 * X[:, 2] - 0.8 * X[:, 5]
    t_event = rng.exponential(np.exp(-lp))
    t_cens = rng.uniform(0.5, 3.0, n)
    frame = pd.DataFrame(X, columns=[f"preop__m{j:02d}" for j in range(p)], index=[f"P{i:03d}" for i in range(n)])
    frame.iloc[rng.random(n) < 0.1] = np.nan  # patients without the modality
    y = Surv.from_arrays(t_event <= t_cens, np.minimum(t_event, t_cens))
    label = (lp > 0).astype(float)
    label[:7] = np.nan  # not assessed
    return frame, y, label


def test_cox_spec_equals_the_default_k_screen() -> None:
    frame, y, _ = table()
    default = ModalityPreprocessor(k=6).fit(frame, y)
    spec = ModalityPreprocessor(k=6, screening={"methods": ["cox"], "k": 6, "cox": {"test": "score"}}).fit(frame, y)
    assert default.features_out_ == spec.features_out_
    assert {"preop__m02", "preop__m05"} <= set(spec.features_out_)
    np.testing.assert_array_equal(default.transform(frame)[0], spec.transform(frame)[0])


def test_trial_spec_in_the_preprocessor_fits_on_present_training_rows(tmp_path) -> None:
    frame, y, label = table()
    train = np.arange(len(frame)) < 120
    pp = ModalityPreprocessor(screening=TRIAL).fit(frame.iloc[:120], y[:120])
    subtypes = [c for c in pp.features_out_ if c.startswith("subtype_")]
    assert len(subtypes) >= 2 and len(pp.features_out_) == 3 + len(subtypes)
    assert "preop__m02" in pp.features_out_
    values, present = pp.transform(frame)
    np.testing.assert_array_equal(values[present][:, -len(subtypes):].sum(axis=1), np.ones(present.sum()))
    assert (values[~present] == 0).all()
    # the same fit when the test rows are passed but marked absent: nothing is learned from them
    masked = ModalityPreprocessor(screening=TRIAL).fit(frame, y, present=train & frame.notna().any(axis=1).to_numpy())
    assert masked.features_out_ == pp.features_out_
    np.testing.assert_array_equal(masked.transform(frame)[0], values)
    loaded = load_preprocessor(save_preprocessor(pp, tmp_path / "metabolomics.skops"))
    np.testing.assert_array_equal(loaded.transform(frame)[0], values)
    binary = ModalityPreprocessor(screening={**TRIAL, "methods": ["wilcoxon", "random_forest"]}).fit(frame, label)
    assert "preop__m02" in binary.features_out_ and len(binary.features_out_) == 3


def test_tabular_pipeline_and_baselines_take_the_spec() -> None:
    frame, y, _ = table()
    rows = frame.notna().any(axis=1).to_numpy()
    pipe = make_tabular_pipeline("standard", screening=TRIAL).fit(frame.loc[rows], y[rows])
    assert isinstance(pipe.named_steps["screen"], FeatureScreen)
    names = list(pipe.get_feature_names_out())
    assert "preop__m02" in names and names[-1].startswith("subtype_")
    assert pipe.transform(frame.loc[rows]).shape == (rows.sum(), len(names))
    setting = {"kind": "auto", "screening": TRIAL}
    assert screening_spec(setting) == TRIAL and screening_spec("metabolomics") is None
    models = make_baselines(["metabolomics"], "survival", {"preprocessing": {"metabolomics": setting}})
    assert models["coxnet_metabolomics"].preprocessing == setting
    assert models["late_fusion"].base_models["metabolomics"].preprocessing == setting
    with pytest.raises(ValueError, match="needs a survival endpoint"):
        make_tabular_pipeline("standard", task="binary", screening={"methods": ["cox"]})


def test_screened_baselines_and_fused_model_fit_on_toy_data() -> None:
    data, _ = make_toy(n=160, seed=1, p=20)
    setting = {"kind": "auto", "screening": TRIAL}
    assert preprocessing_kind(data, "a", setting) == "standard"
    models = make_baselines(["a"], "survival", {"preprocessing": {"a": setting}, "include": ["coxnet_a", "rsf_a"],
                                                "rsf": {"n_estimators": 30}})
    for name in ("coxnet_a", "rsf_a"):
        model = models[name].fit(data)
        screen = model.pipeline_.named_steps["screen"]
        assert isinstance(screen, FeatureScreen) and screen.support_[:5].sum() >= 2, name  # informative f0..f4
        assert np.isfinite(model.predict_risk(data)).all()
    fused = FusedSurvivalModel(modalities=["a"], epochs=3, patience=None, validation_fraction=0.0, n_members=1,
                               device="cpu", preprocessing={"a": {"screening": TRIAL}}).fit(data)
    out = fused.preprocessors_["a"].features_out_
    assert any(c.startswith("subtype_") for c in out) and len(out) > 3

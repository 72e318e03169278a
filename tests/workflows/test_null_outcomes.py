"""Null outcomes: with outcomes drawn independently of every input, the cross-validated C-index of each baseline
averages to 0.5 (nothing leaks from the held-out folds, no systematic anti-learning).

The data have real structure (informative-looking features, missing modalities, censoring) but the outcomes are
permuted between patients, as in ``bench/bench_training.py shuffled``. Each replicate draws a fresh permutation
and fresh folds; a replicate's value is the mean per-fold Harrell C of one cross-validation, as ``train(cfg)``
reports it. Three folds rather than the runs' five: every patient is still held out once, the folds hold more
comparable pairs (a less noisy replicate) and there are fewer fits. Tolerance: on 240 patients a replicate's null
C scatters with SD ~0.03 (measured 0.028-0.034), so the mean over 10-16 replicates has a standard error of
0.008-0.009. The test asserts |mean - 0.5| < 3.5 SE (a false alarm once in ~2,000 per model) and SE < 0.012, i.e.
a tolerance of at most 0.042: a bias of the size one benchmark shuffle suggested (RSF 0.42-0.45, late fusion 0.44)
fails it. The SE bound keeps the test honest: a noisier model cannot pass by widening its own tolerance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import harrell_c
from omics_risk.evaluation.splits import repeated_stratified_folds
from omics_risk.models.baselines import make_baselines

TYPES = {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}, "sex": "categorical"}
N, FOLDS = 240, 3
MAX_SE, Z_TOL = 0.012, 3.5  # tolerance 3.5 x SE <= 0.042


def make_structured(n: int = N, seed: int = 0) -> MultimodalData:
    """Clinical + two omics tables whose first features drive the (pre-permutation) outcome; ~20 % lack each omic."""
    rng = np.random.default_rng(seed)
    pats = pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 8, n)
    stage = rng.choice(["I", "II", "III"], n, p=[0.4, 0.35, 0.25])
    lp = (age - 65) / 8 * 0.5 + pd.Series(stage).map({"I": -0.6, "II": 0.0, "III": 0.8}).to_numpy()
    mods, present = {}, {"clinical": np.ones(n, bool)}
    for name, p in (("a", 12), ("b", 8)):
        s = rng.normal(size=n)
        lp = lp + s
        X = rng.normal(size=(n, p))
        X[:, :3] += s[:, None] * np.array([1.0, -0.8, 0.6])
        pres = rng.random(n) > 0.2
        X[~pres] = np.nan
        mods[name] = pd.DataFrame(X, index=pats, columns=[f"t0__f{j}" for j in range(p)])
        present[name] = pres
    t = rng.exponential(365 * np.exp(-lp))
    c = rng.exponential(365 * 2, n)
    clinical = pd.DataFrame({"age": age, "stage": stage, "sex": rng.choice(["F", "M"], n)}, index=pats)
    return MultimodalData(patients=pats, clinical=clinical, modalities=mods, present=pd.DataFrame(present, index=pats),
                          time=np.round(np.minimum(t, c)), event=(t <= c).astype(float), endpoint="rfs")


def null_cv(data: MultimodalData, names: list[str], replicates: int, settings: dict, *,
            permute: bool = True) -> dict[str, np.ndarray]:
    """Per model, ``replicates`` values of the mean per-fold C of a ``FOLDS``-fold CV on freshly permuted outcomes
    (``permute=False``: the real outcomes, new folds only)."""
    out = {name: np.empty(replicates) for name in names}
    for r in range(replicates):
        perm = np.random.default_rng(100 + r).permutation(len(data)) if permute else np.arange(len(data))
        null = MultimodalData(patients=data.patients, clinical=data.clinical, modalities=data.modalities,
                              present=data.present, time=data.time[perm], event=data.event[perm], endpoint="rfs")
        folds = repeated_stratified_folds(FOLDS, 1, r, event=null.event, time=null.time)
        per_fold = {name: [] for name in names}
        for fold in folds:
            train, test = null.subset(fold.train), null.subset(fold.test)
            models = make_baselines(data.modality_names, "survival",
                                    {**settings, "include": names, "clinical_types": TYPES, "seed": r})
            for name in names:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # convergence chatter of null fits
                    risk = models[name].fit(train).predict_risk(test)
                per_fold[name].append(harrell_c(test.time, test.event, risk))
        for name in names:
            out[name][r] = np.mean(per_fold[name])
    return out


def _check(name: str, c: np.ndarray) -> None:
    mean, se = float(c.mean()), float(c.std(ddof=1) / np.sqrt(len(c)))
    assert se < MAX_SE, f"{name}: SE {se:.3f} over {len(c)} null replicates is too wide to test anything"
    assert abs(mean - 0.5) < Z_TOL * se, f"{name}: null C {mean:.3f} +/- {se:.3f} (SE) is not 0.5: {np.round(c, 3)}"


@pytest.fixture(scope="module")
def structured() -> MultimodalData:
    return make_structured()


def test_structured_data_has_signal_before_permutation(structured: MultimodalData) -> None:
    """The permutation is what makes the outcome null: on the real outcomes the same harness finds the signal."""
    names = ["clinical_cox", "coxnet_a", "rsf_a"]
    for name, c in null_cv(structured, names, 2, {"rsf": {"n_estimators": 50}}, permute=False).items():
        assert c.min() > 0.55, f"{name}: CV C {np.round(c, 3)} on the unpermuted outcomes"


@pytest.mark.slow
def test_single_modality_baselines_average_to_half_on_null_outcomes(structured: MultimodalData) -> None:
    settings = {"coxnet": {"n_alphas": 10, "cv_folds": 3}, "rsf": {"n_estimators": 50, "min_samples_leaf": 10}}
    for name, c in null_cv(structured, ["clinical_cox", "coxnet_a", "rsf_a"], 16, settings).items():
        _check(name, c)


@pytest.mark.slow
def test_deepprog_averages_to_half_on_null_outcomes(structured: MultimodalData) -> None:
    """Subtypes are ordered by training risk; a test patient's risk comes from classifiers fitted on training rows."""
    settings = {"deepprog": {"latent_dim": 4, "epochs": 10}}
    _check("deepprog", null_cv(structured, ["deepprog"], 10, settings)["deepprog"])


@pytest.mark.slow
def test_late_fusion_averages_to_half_on_null_outcomes(structured: MultimodalData) -> None:
    """Stacking learns its weights from inner out-of-fold risks: the path where held-out rows could leak in."""
    settings = {"coxnet": {"n_alphas": 10, "cv_folds": 3},
                "late_fusion": {"inner_folds": 3, "base_settings": {"n_alphas": 8}}}
    _check("late_fusion", null_cv(structured, ["late_fusion"], 10, settings)["late_fusion"])

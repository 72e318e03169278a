"""The clinical reference (``reference_<column>``): one column, one Cox covariate, against a direct lifelines fit;
ranks exactly as the column's ordered levels; missing values at the training median; binary endpoints; the factory
and the run's wiring (``data.clinical_reference``), with one clear error for a column the cohort lacks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from lifelines import CoxPHFitter
from sklearn.metrics import roc_auc_score
from test_baselines import TYPES, cindex, make_toy, split

from omics_risk.models.base import InsufficientTrainingData
from omics_risk.models.baselines import make_baselines
from omics_risk.models.reference import ClinicalReference, check_reference_column
from omics_risk.workflows.training_models import _factories

CODES = {"I": 0.0, "II": 1.0, "III": 2.0}


@pytest.fixture(scope="module")
def toy() -> tuple:
    return split(make_toy(500, seed=11)[0], 350)


def _codes(data) -> np.ndarray:  # type: ignore[no-untyped-def]
    return data.clinical["stage"].map(CODES).to_numpy(dtype=float)


def test_reference_equals_a_direct_lifelines_fit_on_the_standardised_codes(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = ClinicalReference("stage", penalizer=0.0, clinical_types=TYPES).fit(train)
    codes = _codes(train)
    z = (codes - codes.mean()) / codes.std()
    cph = CoxPHFitter().fit(pd.DataFrame({"stage": z, "T": train.time, "E": train.event}), "T", "E")
    assert list(model.coef_.index) == ["stage"] and model.name == "reference_stage"
    assert model.coef_["stage"] == pytest.approx(cph.params_["stage"], abs=1e-6)
    assert model.coef_["stage"] > 0.3  # stage III is the riskiest level of the toy cohort
    zt = (_codes(test) - codes.mean()) / codes.std()
    times = np.sort(train.time[train.event == 1])[[5, 50, 100]]  # at jumps (lifelines interpolates between them)
    expected = cph.predict_survival_function(pd.DataFrame({"stage": zt}), times=times).to_numpy().T
    np.testing.assert_allclose(model.predict_survival(test, times), expected, atol=1e-6)
    # The linear parts a fused model may reuse: risk = pipeline_(clinical) @ coef_.
    linear = model.pipeline_.transform(test.clinical) @ model.coef_.to_numpy()
    np.testing.assert_allclose(model.predict_risk(test), linear)


def test_reference_ranks_patients_as_the_ordered_levels(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    risk = ClinicalReference("stage", clinical_types=TYPES).fit(train).predict_risk(test)
    assert len(np.unique(risk)) == 3
    assert cindex(test, risk) == pytest.approx(cindex(test, _codes(test)), abs=1e-12)
    assert cindex(test, risk) > 0.6


def test_a_missing_value_scores_as_the_training_median_level(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    model = ClinicalReference("stage", clinical_types=TYPES).fit(train)
    median_level = {v: k for k, v in CODES.items()}[float(np.median(_codes(train)))]
    gaps = test.subset(np.arange(len(test)))
    gaps.clinical = test.clinical.assign(stage=[None, median_level, "IV", *test.clinical["stage"].iloc[3:]])
    risk = model.predict_risk(gaps)
    assert np.isfinite(risk).all()
    assert risk[0] == risk[1] == risk[2]  # missing, the median level, and a level unseen in the spec


def test_binary_endpoint_is_a_one_covariate_logistic_regression() -> None:
    train, test = split(make_toy(600, seed=12, binary=True)[0], 400)
    model = ClinicalReference("stage", clinical_types=TYPES).fit(train)
    p = model.predict_response(test)
    np.testing.assert_allclose(model.predict_risk(test), 1 - p)
    assert model.coef_["stage"] < 0  # a later stage responds less
    assert roc_auc_score(test.label, p) > 0.55
    with pytest.raises(NotImplementedError):
        model.predict_survival(test, np.array([100.0]))


def test_a_constant_column_leaves_the_reference_out_of_that_fold(toy) -> None:  # type: ignore[no-untyped-def]
    train, _ = toy
    flat = train.subset(np.arange(len(train)))
    flat.clinical = train.clinical.assign(stage="II")
    with pytest.raises(InsufficientTrainingData, match="column 'stage' takes a single value"):
        ClinicalReference("stage", clinical_types=TYPES).fit(flat)


def test_a_column_the_cohort_lacks_is_one_line_naming_column_cohort_and_fix(toy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"column 'grade' is not in the clinical table of cohort /x/lung \(its "
                                         r"clinical columns: age, stage, sex\); set data.clinical_reference") as err:
        check_reference_column("grade", ["age", "stage", "sex"], "/x/lung")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="column 'grade'"):
        ClinicalReference("grade", clinical_types=TYPES).fit(toy[0])


def test_make_baselines_adds_the_reference_only_when_a_column_is_given() -> None:
    assert not any(n.startswith("reference_") for n in make_baselines(["a"], "survival"))
    models = make_baselines(["a"], "survival", {"clinical_reference": "stage", "clinical_types": TYPES})
    assert list(models)[:2] == ["clinical_cox", "reference_stage"]
    assert isinstance(models["reference_stage"], ClinicalReference) and models["reference_stage"].task == "survival"
    json.dumps(models["reference_stage"].describe())
    kept = make_baselines(["a"], "binary", {"clinical_reference": "stage", "include": ["reference", "coxnet_a"]})
    assert set(kept) == {"reference_stage", "coxnet_a"} and kept["reference_stage"].task == "binary"
    assert "reference_stage" not in make_baselines(["a"], "survival", {"clinical_reference": "stage",
                                                                         "exclude": ["reference"]})


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={root}", "data.root=/x/lung", "tracking=none",
                                           *overrides])


def test_the_run_takes_the_reference_column_from_the_data_config(toy) -> None:  # type: ignore[no-untyped-def]
    train, _ = toy
    names = list(_factories(_cfg(), train, TYPES))
    assert "reference_stage" in names and names.index("reference_stage") == names.index("clinical_cox") + 1
    assert not any(n.startswith("reference_") for n in _factories(_cfg("data.clinical_reference=null"), train, TYPES))
    assert "reference_stage" in _factories(_cfg("baselines=fast"), train, TYPES)
    with pytest.raises(ValueError, match="column 'grade' is not in the clinical table of cohort /x/lung"):
        _factories(_cfg("data.clinical_reference=grade"), train, TYPES)

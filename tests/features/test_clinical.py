"""Clinical encoding: typed per cohort.yaml, fitted on training rows only, robust to unseen categories and empty
columns at transform time, with stable names; and no endpoint column ever among the features."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from omics_risk.data.contract import load_cohort, parse_spec
from omics_risk.data.synthetic import generate_cohort
from omics_risk.features.clinical import (
    ClinicalEncoder,
    build_clinical_transformer,
    clinical_frame,
    clinical_types,
)


@pytest.fixture(name="tiny")
def _tiny(make_valid_cohort, tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_cohort(make_valid_cohort(tmp_path / "c", with_bam=False))


def _frame() -> pd.DataFrame:
    """Eight patients typed as in the tiny cohort (age numeric, sex categorical, stage ordinal, egfr binary)."""
    return pd.DataFrame(
        {
            "age": [60.0, 70.0, np.nan, 50.0, 64.0, 58.0, 71.0, 66.0],
            "sex": ["M", "F", "M", "F", np.nan, "M", "F", "M"],
            "stage": ["IA", "IIIA", "IB", np.nan, "IIA", "IB", "IIB", "IA"],
            "egfr_mutant": [0.0, 1.0, np.nan, 0.0, 0.0, 1.0, 0.0, 0.0],
        },
        index=pd.Index([f"P{i}" for i in range(8)], name="patient_id"),
    )


def test_frame_has_declared_columns_only(tiny) -> None:  # type: ignore[no-untyped-def]
    X = clinical_frame(tiny)
    assert list(X.columns) == ["age", "sex", "stage", "egfr_mutant"]
    assert X.index.name == "patient_id" and len(X) == 6
    assert list(clinical_frame(tiny, ["stage"]).columns) == ["stage"]
    with pytest.raises(KeyError, match="not declared"):
        clinical_frame(tiny, ["rfs_time"])


def test_encoding_by_type_with_stable_names(tiny) -> None:  # type: ignore[no-untyped-def]
    X = _frame()
    train = X.iloc[:6]
    ct = build_clinical_transformer(tiny.spec, min_frequency=None)
    Z = ct.fit_transform(train)
    assert isinstance(Z, pd.DataFrame) and list(Z.index) == list(train.index)
    # Numeric and ordinal come first, then indicators, one-hot and binary; sex has a 'missing' level in training.
    assert list(ct.get_feature_names_out()) == [
        "age",
        "stage",
        "missingindicator_age",
        "missingindicator_stage",
        "sex_F",
        "sex_M",
        "sex_missing",
        "egfr_mutant",
    ]
    # Numeric: median-imputed then standardised with the training statistics.
    ages = train["age"].fillna(train["age"].median())
    np.testing.assert_allclose(Z["age"], (ages - ages.mean()) / ages.std(ddof=0))
    assert Z.loc["P2", "missingindicator_age"] == 1 and Z["missingindicator_age"].sum() == 1
    # Ordinal: codes in the declared order (IA < IB < IIA < IIB < IIIA), so the encoding is monotone in stage.
    order = ["IA", "IB", "IIA", "IIB", "IIIA"]
    known = train["stage"].notna()
    codes = train.loc[known, "stage"].map(order.index)
    assert (
        np.argsort(codes.to_numpy(), kind="stable") == np.argsort(Z.loc[known, "stage"].to_numpy(), kind="stable")
    ).all()
    # Categorical: one-hot, missing as its own category. Binary: 0/1, most frequent value for missing.
    assert Z.loc["P4", ["sex_F", "sex_M", "sex_missing"]].tolist() == [0, 0, 1]
    assert Z.loc["P2", "egfr_mutant"] == 0 and Z.loc["P1", "egfr_mutant"] == 1


def test_new_data_with_unseen_categories_and_empty_columns(tiny) -> None:  # type: ignore[no-untyped-def]
    enc = ClinicalEncoder.from_spec(tiny.spec).fit(_frame())
    new = pd.DataFrame(
        {"age": [np.nan, np.nan], "sex": ["other", "F"], "stage": ["IV", np.nan], "egfr_mutant": [np.nan, np.nan]},
        index=["N1", "N2"],
    )
    Z = enc.transform(new)
    assert list(Z.index) == ["N1", "N2"] and list(Z.columns) == list(enc.get_feature_names_out())
    assert np.isfinite(Z.to_numpy()).all()
    assert Z.loc["N1", ["sex_F", "sex_M"]].tolist() == [0, 0]  # unseen category: all zeros
    assert Z.loc["N2", "sex_F"] == 1
    assert (Z["missingindicator_age"] == 1).all()
    assert Z["egfr_mutant"].tolist() == [0, 0]  # most frequent training value
    # An unseen ordinal level is missing (median), as an empty cell is.
    assert Z.loc["N1", "stage"] == Z.loc["N2", "stage"]
    # A column absent from the new frame is treated as all missing, with a warning.
    with pytest.warns(UserWarning, match="egfr_mutant"):
        Z2 = enc.transform(new.drop(columns="egfr_mutant"))
    pd.testing.assert_frame_equal(Z, Z2)
    # An all-missing column at fit time is kept (imputed to 0) so names stay stable.
    empty = _frame().assign(age=np.nan)
    assert "age" in ClinicalEncoder.from_spec(tiny.spec).fit(empty).get_feature_names_out()


def test_fit_sees_only_the_training_rows(tiny) -> None:  # type: ignore[no-untyped-def]
    X = _frame()
    X.loc[["P5", "P6", "P7"], "age"] = [90.0, 95.0, 99.0]
    X.loc["P7", "sex"] = "X"
    train = X.iloc[:5]
    enc = ClinicalEncoder.from_spec(tiny.spec).fit(train)
    num = enc.transformer_.named_transformers_["numeric"]
    assert num["impute"].statistics_[0] == train["age"].median() != X["age"].median()
    assert num["scale"].mean_[0] == pytest.approx(train["age"].fillna(train["age"].median()).mean())
    assert "sex_X" not in enc.get_feature_names_out()  # a category only held-out patients have
    # Transform is row-wise: a training row is encoded the same whatever else is in the frame.
    pd.testing.assert_frame_equal(enc.transform(X).iloc[:5], enc.transform(train))
    assert enc.transform(X).loc["P7", ["sex_F", "sex_M"]].tolist() == [0, 0]
    # Infrequent categories are grouped (min_frequency as a count).
    rare = ClinicalEncoder.from_spec(tiny.spec, min_frequency=4).fit(_frame().assign(sex=list("MMMMMFFX")))
    assert [c for c in rare.get_feature_names_out() if c.startswith("sex_")] == ["sex_M", "sex_infrequent_sklearn"]


def test_one_unusable_patient_changes_only_its_own_row(tiny) -> None:  # type: ignore[no-untyped-def]
    """Clinical columns are not extracted per sample (the contract refuses unparsable cells with file and line, and
    scoring sets them aside per row); the fitted encoder is row-wise, so a patient whose every value is unusable is
    encoded as missing without touching anybody else's row."""
    enc = ClinicalEncoder.from_spec(tiny.spec).fit(_frame())
    bad = pd.DataFrame({"age": ["sixty"], "sex": [3.5], "stage": ["stage 5"], "egfr_mutant": ["yes"]}, index=["PX"])
    X = pd.concat([_frame().astype(object), bad])
    Z = enc.transform(X)
    pd.testing.assert_frame_equal(Z.loc[_frame().index], enc.transform(_frame()), check_exact=True)
    row = Z.loc["PX"]
    assert row["missingindicator_age"] == 1 and row["age"] == Z.loc["P2", "age"]  # P2's age is missing too
    assert row[["sex_F", "sex_M", "sex_missing"]].tolist() == [0, 0, 0] and np.isfinite(row.to_numpy()).all()


def test_sklearn_compatibility(tiny) -> None:  # type: ignore[no-untyped-def]
    enc = ClinicalEncoder.from_spec(tiny.spec)
    X = _frame()
    fitted = clone(enc).fit(X)
    again = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_frame_equal(fitted.transform(X), again.transform(X))
    model = make_pipeline(ClinicalEncoder.from_spec(tiny.spec), LogisticRegression()).fit(X, [0, 1, 0, 1, 0, 1, 1, 0])
    assert model.predict_proba(X).shape == (8, 2)
    assert fitted.set_output(transform="pandas") is fitted
    assert ClinicalEncoder(types={"age": "numeric"}).fit(X).get_feature_names_out().tolist() == [
        "age",
        "missingindicator_age",
    ]


@pytest.mark.slow
def test_endpoint_columns_never_leak(tmp_path: Path) -> None:
    root = generate_cohort(
        "sclc",
        n=12,
        seed=3,
        out=tmp_path / "sclc",
        fragments_per_sample=200,
        n_metabolites=20,
        ct_shape=(8, 8, 8),
        workers=1,
        progress=False,
    )
    cohort = load_cohort(root)
    assert "best_response" in cohort.clinical.columns  # in clinical.csv, but not a declared feature
    X = clinical_frame(cohort)
    endpoint_cols = {c for ep in cohort.spec.endpoints.values() for c in ep.columns}
    assert not set(X.columns) & (endpoint_cols | {"best_response", "patient_id"})
    assert list(X.columns) == list(cohort.spec.clinical)
    names = ClinicalEncoder.from_spec(cohort.spec).fit(X).get_feature_names_out()
    assert not any(n.startswith(("best_response", "response", "pfs_", "os_")) for n in names)
    # Declaring an endpoint column as a clinical feature does not make it one.
    yaml_path = root / "cohort.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("clinical:\n", "clinical:\n  pfs_time: numeric\n", 1))
    spec, _ = parse_spec(yaml_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "pfs_time" not in clinical_types(spec)
    assert any("endpoint column" in str(w.message) for w in caught)

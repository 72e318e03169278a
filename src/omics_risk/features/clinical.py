"""Clinical covariates: the declared columns of clinical.csv, encoded by a transformer fitted on training folds.

``cohort.yaml``'s ``clinical:`` block types each feature column, and the type decides the encoding:

- ``numeric``: median imputation, then standard scaling, plus a 0/1 ``missingindicator_<column>`` for every
  column with missing values in training;
- ``ordinal``: integer codes in the declared ``levels`` order (lowest risk first; unknown levels are missing),
  median imputation and standard scaling, plus a missing indicator as for numeric columns;
- ``categorical``: one-hot, with missing values as their own ``missing`` category, categories rarer than
  ``min_frequency`` grouped as ``infrequent``, and categories unseen in training encoded as all zeros;
- ``binary``: 0/1, most-frequent imputation.

Everything that depends on data (medians, means, scales, category lists) is learnt in ``fit``, so the encoder
is fitted on the training patients of a fold only and shipped with the model. :func:`clinical_frame` returns
exactly the declared columns and never an endpoint column, so outcomes cannot leak in as covariates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from omics_risk.data.contract import ClinicalColumn, Cohort, CohortSpec

__all__ = [
    "MISSING_CATEGORY",
    "ClinicalEncoder",
    "build_clinical_transformer",
    "clinical_frame",
    "clinical_types",
]

MISSING_CATEGORY = "missing"
TYPES = ("numeric", "ordinal", "categorical", "binary")


def _to_float(x: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, anything unparsable as missing (an all-empty column may arrive as object dtype)."""
    return x.apply(pd.to_numeric, errors="coerce").astype(float)


def _to_text(x: pd.DataFrame) -> pd.DataFrame:
    """Categories as strings (``1`` and ``1.0`` read alike) with missing cells as the ``missing`` category."""

    def one(s: pd.Series) -> pd.Series:
        num = pd.to_numeric(s, errors="coerce")
        text = s.astype(object).where(s.isna(), s.astype(str).str.strip())
        whole = num.notna() & (num == np.round(num))
        text = text.where(~whole, num.where(whole, 0).astype("int64").astype(str))
        return text.where(text.notna() & (text != ""), MISSING_CATEGORY).astype(object)

    return x.apply(one)


def _to_levels(x: pd.DataFrame) -> pd.DataFrame:
    """Ordinal cells as strings with missing kept missing (np.nan), for OrdinalEncoder."""
    out = _to_text(x)
    return out.where(out != MISSING_CATEGORY, np.nan)


def clinical_types(spec: CohortSpec, columns: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{column: {"type": ..., "levels": [...]}}`` of the declared clinical features, never an endpoint column."""
    endpoint_cols = {c for ep in spec.endpoints.values() for c in ep.columns}
    chosen: list[ClinicalColumn] = []
    names = list(columns) if columns is not None else list(spec.clinical)
    for name in names:
        if name not in spec.clinical:
            raise KeyError(
                f"clinical column '{name}' is not declared under clinical: in cohort.yaml "
                f"(declared: {', '.join(spec.clinical) or 'none'})"
            )
        if name in endpoint_cols:
            warnings.warn(
                f"clinical column '{name}' is also an endpoint column; it is left out of the features "
                "(an outcome must not be a covariate)",
                stacklevel=2,
            )
            continue
        chosen.append(spec.clinical[name])
    return {c.name: {"type": c.type, "levels": list(c.levels)} for c in chosen}


def _clone_steps(steps: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(name, clone(est)) for name, est in steps]


def _transformer(
    types: Mapping[str, Mapping[str, Any]], min_frequency: float | int | None, missing_indicator: bool
) -> ColumnTransformer:
    by_type: dict[str, list[str]] = {t: [] for t in TYPES}
    for col, info in types.items():
        t = info["type"]
        if t not in TYPES:
            raise ValueError(f"clinical column '{col}' has type {t!r}; use one of {', '.join(TYPES)}")
        by_type[t].append(col)
    parts: list[tuple[str, Any, list[str]]] = []

    def indicator(prep: list[tuple[str, Any]]) -> Pipeline:
        """0/1 flags for the columns that had missing values in training (none for complete columns)."""
        return Pipeline(
            [
                *prep,
                ("flag", MissingIndicator(features="missing-only", error_on_new=False)),
                ("float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
            ]
        )

    def coerce() -> list[tuple[str, Any]]:
        return [("coerce", FunctionTransformer(_to_float, feature_names_out="one-to-one"))]

    def codes(cols: list[str]) -> list[tuple[str, Any]]:
        return [
            ("text", FunctionTransformer(_to_levels, feature_names_out="one-to-one")),
            (
                "codes",
                OrdinalEncoder(
                    categories=[list(types[c]["levels"]) for c in cols],
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
            ),
        ]

    scale = [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    if by_type["numeric"]:
        cols = by_type["numeric"]
        parts.append(("numeric", Pipeline([*coerce(), *scale]), cols))
    if by_type["ordinal"]:
        cols = by_type["ordinal"]
        parts.append(("ordinal", Pipeline([*codes(cols), *_clone_steps(scale)]), cols))
    if missing_indicator and by_type["numeric"]:
        parts.append(("numeric_missing", indicator(coerce()), by_type["numeric"]))
    if missing_indicator and by_type["ordinal"]:
        parts.append(("ordinal_missing", indicator(codes(by_type["ordinal"])), by_type["ordinal"]))
    if by_type["categorical"]:
        parts.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("text", FunctionTransformer(_to_text, feature_names_out="one-to-one")),
                        (
                            "onehot",
                            OneHotEncoder(
                                handle_unknown="ignore",
                                min_frequency=min_frequency,
                                sparse_output=False,
                                dtype=np.float64,
                            ),
                        ),
                    ]
                ),
                by_type["categorical"],
            )
        )
    if by_type["binary"]:
        parts.append(
            (
                "binary",
                Pipeline(
                    [
                        ("coerce", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
                        ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                    ]
                ),
                by_type["binary"],
            )
        )
    if not parts:
        raise ValueError("no clinical feature columns to encode: declare them under clinical: in cohort.yaml")
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def build_clinical_transformer(
    spec: CohortSpec,
    columns: Sequence[str] | None = None,
    *,
    min_frequency: float | int | None = 0.05,
    missing_indicator: bool = True,
) -> ColumnTransformer:
    """An unfitted ColumnTransformer encoding the declared clinical columns (pandas output; see module docstring).

    ``columns`` restricts it to some declared columns. Feature names: ``age``, ``missingindicator_age``,
    ``stage``, ``sex_female``, ``sex_missing``, ``sex_infrequent_sklearn``, ``liver_mets``.
    """
    ct = _transformer(clinical_types(spec, columns), min_frequency, missing_indicator)
    return ct.set_output(transform="pandas")


class ClinicalEncoder(TransformerMixin, BaseEstimator):
    """sklearn-compatible encoder of clinical columns (clonable, picklable; wraps the ColumnTransformer).

    Args:
        types: ``{column: type}`` or ``{column: {"type": ..., "levels": [...]}}`` as in cohort.yaml's
            ``clinical:``; build it from a cohort with :meth:`from_spec`.
        min_frequency: categories rarer than this (a fraction of the training rows, or a count) are grouped.
        missing_indicator: add a 0/1 indicator per numeric / ordinal column that had missing training values.

    ``transform`` accepts frames lacking a declared column (it is treated as all missing, with a warning) and
    returns a DataFrame with the index of its input.
    """

    def __init__(
        self,
        types: Mapping[str, Any] | None = None,
        min_frequency: float | int | None = 0.05,
        missing_indicator: bool = True,
    ):
        self.types = types
        self.min_frequency = min_frequency
        self.missing_indicator = missing_indicator

    @classmethod
    def from_spec(cls, spec: CohortSpec, columns: Sequence[str] | None = None, **kwargs: Any) -> ClinicalEncoder:
        return cls(types=clinical_types(spec, columns), **kwargs)

    def _types(self) -> dict[str, dict[str, Any]]:
        if not self.types:
            raise ValueError("ClinicalEncoder needs types={column: type}; use ClinicalEncoder.from_spec(spec)")
        out = {}
        for col, info in self.types.items():
            if isinstance(info, str):
                out[str(col)] = {"type": info, "levels": []}
            else:
                out[str(col)] = {"type": info["type"], "levels": list(info.get("levels") or [])}
            if out[str(col)]["type"] == "ordinal" and len(out[str(col)]["levels"]) < 2:
                raise ValueError(f"ordinal column '{col}' needs its levels (lowest risk first)")
        return out

    def fit(self, X: pd.DataFrame, y: Any = None) -> ClinicalEncoder:
        types = self._types()
        missing = [c for c in types if c not in X.columns]
        if missing:
            raise KeyError(f"clinical column(s) {', '.join(missing)} are not in the training frame")
        self.columns_ = list(types)
        self.transformer_ = _transformer(types, self.min_frequency, self.missing_indicator)
        self.transformer_.set_output(transform="pandas")
        self.transformer_.fit(X[self.columns_])
        self.feature_names_out_ = np.asarray(self.transformer_.get_feature_names_out(), dtype=object)
        self.n_features_in_ = len(self.columns_)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "transformer_")
        absent = [c for c in self.columns_ if c not in X.columns]
        if absent:
            warnings.warn(f"clinical column(s) {', '.join(absent)} are absent; encoded as missing", stacklevel=2)
            X = X.assign(**{c: np.nan for c in absent})
        out = self.transformer_.transform(X[self.columns_])
        out = pd.DataFrame(out, index=X.index, columns=self.feature_names_out_)
        return out.astype(float)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "transformer_")
        return self.feature_names_out_.copy()

    def set_output(self, *, transform: str | None = None) -> ClinicalEncoder:
        """Output is always a pandas DataFrame (accepted for API compatibility)."""
        if transform not in (None, "pandas", "default"):
            raise ValueError("ClinicalEncoder always returns pandas DataFrames")
        return self


def clinical_frame(cohort: Cohort, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The declared clinical feature columns (never endpoint columns), indexed by patient_id, in declared order."""
    types = clinical_types(cohort.spec, columns)
    return cohort.clinical.set_index("patient_id")[list(types)].copy()

"""One declared clinical column as a model (``reference_<column>``): the bar any multimodal model must clear.

Stage alone is what a clinician already has; a run that reports only a multivariable clinical Cox model hides how
much of it is stage. :class:`ClinicalReference` fits one column (named per cohort by ``data.clinical_reference``)
with a one-covariate Cox model (a logistic regression for a binary endpoint), beside ``clinical_cox`` on the same
folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_selection import VarianceThreshold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sksurv.linear_model import CoxPHSurvivalAnalysis

from omics_risk.data.multimodal import MultimodalData
from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.models.base import InsufficientTrainingData
from omics_risk.models.per_modality import penalised_logistic, step_functions_at
from omics_risk.models.tabular import (
    CLINICAL,
    BaselineModel,
    outcome_of,
    resolve_clinical_types,
    risk_from_response,
)

__all__ = ["REFERENCE_PREFIX", "ClinicalReference", "check_reference_column", "reference_name"]

#: Model name of the reference on column ``c``: ``reference_<c>`` (e.g. ``reference_stage``).
REFERENCE_PREFIX = "reference_"


def reference_name(column: str) -> str:
    """The model name of the reference on ``column`` (``reference_stage``)."""
    return f"{REFERENCE_PREFIX}{column}"


def check_reference_column(column: str, clinical_columns: Sequence[str], cohort: str = "this cohort") -> None:
    """Fail with one line naming the column, the cohort and the fix when ``column`` is not a clinical column."""
    if column not in list(clinical_columns):
        raise ValueError(
            f"data.clinical_reference: column '{column}' is not in the clinical table of cohort {cohort} (its "
            f"clinical columns: {', '.join(map(str, clinical_columns)) or 'none'}); set data.clinical_reference to "
            "one of them (declared under clinical: in cohort.yaml), or to null for no clinical reference"
        )


def _as_array(X: Any) -> np.ndarray:
    return np.asarray(X, dtype=np.float64)


class ClinicalReference(BaselineModel):
    """One clinical column as a risk model: a one-covariate Cox model (survival) or logistic regression (binary).

    The column is encoded by its cohort.yaml type with :class:`~omics_risk.features.clinical.ClinicalEncoder`
    fitted on the training fold, without missing indicators: ``ordinal`` = integer codes in the declared level
    order, ``numeric`` = the value, both standardised, a missing value = the training median; ``binary`` = 0/1, a
    missing value = the most frequent; ``categorical`` = one-hot (one covariate per category, missing as its own
    category). Survival: scikit-survival ``CoxPHSurvivalAnalysis`` (Efron ties, ridge ``penalizer`` only to keep
    the fit finite when a level has no event); ``predict_survival`` gives its Breslow curves. Binary: logistic
    regression with the same penalty on the scale of :class:`~omics_risk.models.clinical_cox.ClinicalCox`
    (``C = 1 / (penalizer * n)``); risk = 1 - P(response).

    Stable fitted attributes (a fused model may use this one as a base learner): ``pipeline_`` (the fitted
    encoder: raw clinical frame -> float array), ``coef_`` (pd.Series, one coefficient per encoded column: the risk
    is ``pipeline_.transform(X) @ coef_``), ``model_`` (the fitted scikit-survival / scikit-learn estimator),
    ``column``, ``task_``, ``risk_median_``, ``n_train_``, ``fit_seconds_``.

    Args:
        column: the clinical column (e.g. ``stage``).
        penalizer: ridge penalty (>= 0).
        clinical_types: ``{column: type}`` as in cohort.yaml (default: see ``resolve_clinical_types``).
        task: ``auto`` | ``survival`` | ``binary`` (a mismatch with the data's endpoint is an error).
    """

    modality = CLINICAL

    def __init__(
        self,
        column: str,
        penalizer: float = 0.01,
        *,
        clinical_types: Mapping[str, Any] | None = None,
        task: str = "auto",
        random_state: int = 0,
    ):
        self.column = column
        self.penalizer = penalizer
        self.clinical_types = clinical_types
        self.task = task
        self.random_state = random_state
        self.name = reference_name(column)

    def fit(self, data: MultimodalData) -> ClinicalReference:
        if self.penalizer < 0:
            raise ValueError(f"{self.name}: penalizer must be >= 0, got {self.penalizer}")
        with self._timed():
            check_reference_column(self.column, list(data.clinical.columns))
            out = outcome_of(data, self.task)
            rows = np.flatnonzero(out.usable)
            types = resolve_clinical_types(data, self.clinical_types)
            check_reference_column(self.column, list(types))
            encoder = ClinicalEncoder(types={self.column: types[self.column]}, missing_indicator=False)
            self.pipeline_ = Pipeline([("encode", encoder),
                                       ("array", FunctionTransformer(_as_array, feature_names_out="one-to-one")),
                                       ("constant", VarianceThreshold(threshold=0.0))])
            X = data.clinical.iloc[rows]
            if not (self.pipeline_[:2].fit_transform(X).std(axis=0) > 0).any():
                raise InsufficientTrainingData(f"{self.name}: column '{self.column}' takes a single value in this "
                                               f"training fold ({len(rows)} patients)")
            Xt = self.pipeline_.fit_transform(X)
            names = self.pipeline_.get_feature_names_out()
            if out.task == "survival":
                self.model_ = CoxPHSurvivalAnalysis(alpha=self.penalizer, ties="efron")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow on the way to a separated fit
                    self.model_.fit(Xt, out.y(rows))
            else:
                C = np.inf if self.penalizer == 0 else 1.0 / (self.penalizer * len(rows))
                self.model_ = penalised_logistic(C, 0.0, self.random_state).fit(Xt, out.label[rows].astype(int))
            self.coef_ = pd.Series(np.asarray(self.model_.coef_, dtype=np.float64).ravel(), index=names,
                                   name=self.name)
            self.task_ = out.task
            self.n_train_ = len(rows)
            self.risk_median_ = float(np.median(self._score(Xt)))
        return self

    def _score(self, Xt: np.ndarray) -> np.ndarray:
        if self.task_ == "survival":
            return np.asarray(self.model_.predict(Xt), dtype=np.float64)
        return risk_from_response(self.model_.predict_proba(Xt)[:, 1])

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        self._check_fitted()
        risk = self._score(self.pipeline_.transform(data.clinical))
        return np.where(np.isfinite(risk), risk, self.risk_median_)

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        """Breslow survival curves of the one-covariate Cox model at ``times`` (days)."""
        self._need_task("survival", "predict_survival")
        times = np.asarray(times, dtype=np.float64)
        return step_functions_at(self.model_.predict_survival_function(self.pipeline_.transform(data.clinical)),
                                 times)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "column": self.column, "penalizer": self.penalizer, "task": self.task,
                "random_state": self.random_state}

"""The reference every run reports: a penalised Cox model on the encoded clinical covariates (``clinical_cox``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning

from omics_risk.data.multimodal import MultimodalData
from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.models.per_modality import penalised_logistic
from omics_risk.models.tabular import (
    CLINICAL,
    BaselineModel,
    describe_sequence,
    outcome_of,
    resolve_clinical_types,
    risk_from_response,
)

__all__ = ["ClinicalCox"]


class ClinicalCox(BaselineModel):
    """Penalised Cox model on the encoded clinical covariates (lifelines ``CoxPHFitter``, Efron ties).

    The clinical encoder (:class:`~omics_risk.features.clinical.ClinicalEncoder`: imputation, scaling, one-hot,
    missing indicators) is fitted on the training fold; columns constant in that fold are dropped. The ridge
    ``penalizer`` (lifelines scales it to the mean log-likelihood) keeps the fit finite under collinearity (a
    full one-hot set sums to 1) and separation (a category with no events); if Newton-Raphson still fails, fit
    raises a ``RuntimeError`` saying so instead of returning a half-converged model.

    Binary endpoint: logistic regression with the same penalty on the same scale (``C = 1 / (penalizer * n)``).

    Args:
        penalizer: lifelines ``penalizer`` (>= 0).
        l1_ratio: lifelines ``l1_ratio`` (0 = ridge).
        columns: clinical columns to use (default: all in ``clinical_types``).
        clinical_types: ``{column: type}`` as in cohort.yaml (default: see ``resolve_clinical_types``).
        task: ``auto`` | ``survival`` | ``binary`` (a mismatch with the data's endpoint is an error).
    """

    name = "clinical_cox"
    modality = CLINICAL

    def __init__(
        self,
        penalizer: float = 0.1,
        l1_ratio: float = 0.0,
        *,
        columns: Sequence[str] | None = None,
        clinical_types: Mapping[str, Any] | None = None,
        task: str = "auto",
        random_state: int = 0,
    ):
        self.penalizer = penalizer
        self.l1_ratio = l1_ratio
        self.columns = columns
        self.clinical_types = clinical_types
        self.task = task
        self.random_state = random_state

    def _encode(self, data: MultimodalData) -> pd.DataFrame:
        return self.encoder_.transform(data.clinical)[self.columns_]

    def encoded_frame(self, data: MultimodalData) -> pd.DataFrame:
        """The design matrix the model sees for ``data`` (fitted encoder, kept columns)."""
        self._check_fitted()
        return self._encode(data)

    def fit(self, data: MultimodalData) -> ClinicalCox:
        if self.penalizer < 0 or not 0 <= self.l1_ratio <= 1:
            raise ValueError(f"penalizer must be >= 0 and l1_ratio in [0, 1], got {self.penalizer}, {self.l1_ratio}")
        with self._timed():
            out = outcome_of(data, self.task)
            rows = out.usable
            types = resolve_clinical_types(data, self.clinical_types)
            if self.columns is not None:
                types = {c: types[c] for c in self.columns}
            self.encoder_ = ClinicalEncoder(types=types).fit(data.clinical.iloc[rows])
            X = self.encoder_.transform(data.clinical.iloc[rows])
            self.columns_ = [c for c in X.columns if X[c].std(ddof=0) > 0]
            if not self.columns_:
                raise ValueError("ClinicalCox: every encoded clinical column is constant in this training fold")
            X = X[self.columns_]
            if out.task == "survival":
                df = X.assign(__time=out.time[rows], __event=out.event[rows])
                # Flat likelihoods (no signal) or near-separation can stall Newton-Raphson: retry with a 10x and
                # 100x stronger ridge penalty before giving up, and record the penalty actually used.
                for penalizer in (self.penalizer, self.penalizer * 10, self.penalizer * 100):
                    self.penalizer_ = penalizer
                    self.cph_ = CoxPHFitter(penalizer=penalizer, l1_ratio=self.l1_ratio)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", ConvergenceWarning)
                        try:
                            self.cph_.fit(df, duration_col="__time", event_col="__event")
                            error = None
                        except ConvergenceError as e:
                            error = str(e).splitlines()[0]
                    if error is None and not any("failed to converge" in str(w.message) for w in caught):
                        break
                else:
                    raise RuntimeError(
                        f"ClinicalCox did not converge on {len(df)} patients x {len(self.columns_)} encoded columns "
                        f"even with penalizer={self.penalizer_} ({error or 'Newton-Raphson failed to converge'}); "
                        "drop collinear or separating clinical columns (clinical_cox.columns)."
                    )
                if self.penalizer_ != self.penalizer:
                    warnings.warn(f"ClinicalCox: converged only with penalizer={self.penalizer_} "
                                  f"(asked {self.penalizer})", ConvergenceWarning, stacklevel=2)
                for w in caught:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                self.coef_ = self.cph_.params_.copy()
            else:
                C = np.inf if self.penalizer == 0 else 1.0 / (self.penalizer * rows.sum())
                self.clf_ = penalised_logistic(C, self.l1_ratio, self.random_state).fit(X, out.label[rows].astype(int))
                self.coef_ = pd.Series(self.clf_.coef_.ravel(), index=self.columns_)
            self.task_ = out.task
            self.risk_median_ = float(np.median(self._raw_risk(data.subset(np.flatnonzero(rows)))))
        return self

    def _raw_risk(self, data: MultimodalData) -> np.ndarray:
        X = self._encode(data)
        if self.task_ == "survival":
            return np.asarray(self.cph_.predict_log_partial_hazard(X), dtype=np.float64).ravel()
        return risk_from_response(self.clf_.predict_proba(X)[:, 1])

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        self._check_fitted()
        risk = self._raw_risk(data)
        return np.where(np.isfinite(risk), risk, self.risk_median_)

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        self._need_task("survival", "predict_survival")
        times = np.asarray(times, dtype=np.float64)
        sf = self.cph_.predict_survival_function(self._encode(data), times=times)
        return np.asarray(sf, dtype=np.float64).T

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "penalizer": self.penalizer,
            "l1_ratio": self.l1_ratio,
            "columns": describe_sequence(self.columns),
            "task": self.task,
        }

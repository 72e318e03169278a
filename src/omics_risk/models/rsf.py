"""Random survival forest on one modality (``rsf_<modality>``); a random forest classifier for binary endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sksurv.ensemble import RandomSurvivalForest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.per_modality import ModalityModel
from omics_risk.models.tabular import evaluate_step_functions, modality_frame, risk_from_response

__all__ = ["ModalityRSF"]


class ModalityRSF(ModalityModel):
    """Random survival forest (scikit-survival) on one modality; random forest classifier for binary endpoints.

    Preprocessing: as for Coxnet without scaling (trees do not need it), optional univariate pre-screening
    to ``screen_features`` inside ``fit``. Risk = the forest's summed cumulative hazard (scikit-survival's
    ``predict``), or 1 - P(response). ``n_jobs`` defaults to 1 so that folds run in parallel do not
    oversubscribe the cores; raise it when folds run one after another. ``low_memory`` (survival): the trees keep
    only each leaf's summed cumulative hazard, enough for ``predict_risk`` but not for survival curves; the fused
    super learner's forest base models use it, so that a saved model stays a few MB.
    """

    def __init__(
        self,
        modality: str,
        n_estimators: int = 200,
        min_samples_leaf: int = 10,
        max_features: str | int | float | None = "sqrt",
        n_jobs: int | None = 1,
        *,
        max_depth: int | None = None,
        max_samples: int | float | None = None,
        screen_features: int | None = None,
        preprocessing: str = "auto",
        max_missing: float = 0.5,
        clinical_types: Mapping[str, Any] | None = None,
        task: str = "auto",
        random_state: int = 0,
        low_memory: bool = False,
    ):
        self.modality = modality
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.n_jobs = n_jobs
        self.max_depth = max_depth
        self.max_samples = max_samples
        self.screen_features = screen_features
        self.preprocessing = preprocessing
        self.max_missing = max_missing
        self.clinical_types = clinical_types
        self.task = task
        self.random_state = random_state
        self.low_memory = low_memory
        self.name = f"rsf_{modality}"

    def fit(self, data: MultimodalData) -> ModalityRSF:
        with self._timed():
            out, rows = self._training_rows(data)
            X = modality_frame(data, self.modality).iloc[np.flatnonzero(rows)]
            y = out.y(rows)
            self.pipeline_ = self._pipeline_factory(data, out.task, self.screen_features, scale=False)().fit(X, y)
            Xt = self.pipeline_.transform(X)
            kw = dict(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                max_depth=self.max_depth,
                max_samples=self.max_samples,
                n_jobs=self.n_jobs,
                random_state=self.random_state,
            )
            if out.task == "survival":
                self.model_ = RandomSurvivalForest(**kw, low_memory=self.low_memory).fit(Xt, y)
            else:
                self.model_ = RandomForestClassifier(**kw).fit(Xt, y)
            self._finish(data, out, rows)
        return self

    def _score(self, Xt: np.ndarray) -> np.ndarray:
        if self.task_ == "survival":
            return np.asarray(self.model_.predict(Xt), dtype=np.float64)
        return risk_from_response(self.model_.predict_proba(Xt)[:, 1])

    def _survival_of_present(self, Xt: np.ndarray, times: np.ndarray) -> np.ndarray:
        surv = self.model_.predict_survival_function(Xt, return_array=True)
        return evaluate_step_functions(self.model_.unique_times_, surv, times)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "modality": self.modality,
            "n_estimators": self.n_estimators,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "max_depth": self.max_depth,
            "max_samples": self.max_samples,
            "screen_features": self.screen_features,
            "preprocessing": self.preprocessing,
            "task": self.task,
            "random_state": self.random_state,
            "low_memory": self.low_memory,
        }

"""What every one-modality baseline shares: the training rows, the fold-fitted pipeline, median fallbacks.

:class:`ModalityModel` is the base of :class:`~omics_risk.models.coxnet.ModalityCoxnet` and
:class:`~omics_risk.models.rsf.ModalityRSF`: a modality's table -> fold-fitted pipeline
(:func:`~omics_risk.models.tabular.make_tabular_pipeline`) -> estimator; a patient lacking the modality gets the
training median risk and the training Kaplan-Meier curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.tabular import (
    BaselineModel,
    evaluate_step_functions,
    fill_absent,
    kaplan_meier_curve,
    make_tabular_pipeline,
    modality_frame,
    modality_present,
    outcome_of,
    preprocessing_kind,
    resolve_clinical_types,
    screening_spec,
)

__all__ = ["MIN_TRAIN", "ModalityModel", "penalised_logistic", "step_functions_at"]

MIN_TRAIN = 10  # patients with the modality and a known outcome below which a per-modality model is not fitted


def step_functions_at(fns: Sequence[Any], times: np.ndarray) -> np.ndarray:
    """scikit-survival StepFunction survival curves (shared jump times) evaluated at ``times``."""
    if len(fns) == 0:
        return np.empty((0, len(times)))
    x = np.asarray(fns[0].x, dtype=np.float64)
    y = np.vstack([np.asarray(f.a * f.y + f.b, dtype=np.float64) for f in fns])
    return evaluate_step_functions(x, y, times)


def penalised_logistic(C: float, l1_ratio: float, seed: int) -> LogisticRegression:
    """Penalised logistic regression; saga for any L1 part (lbfgs handles pure L2 faster)."""
    solver = "saga" if l1_ratio > 0 else "lbfgs"
    return LogisticRegression(C=C, l1_ratio=l1_ratio, solver=solver, max_iter=5000, random_state=seed)


class ModalityModel(BaselineModel):
    """One modality's table -> fold-fitted pipeline -> estimator; absent patients get the training median."""

    modality: str
    preprocessing: str
    max_missing: float
    clinical_types: Mapping[str, Any] | None
    random_state: int

    def _training_rows(self, data: MultimodalData) -> tuple[Any, np.ndarray]:
        out = outcome_of(data, self.task)
        rows = modality_present(data, self.modality) & out.usable
        if rows.sum() < MIN_TRAIN:
            raise ValueError(
                f"{self.name}: only {int(rows.sum())} training patients have modality '{self.modality}' and a "
                f"known outcome (need >= {MIN_TRAIN}); leave this baseline out for this cohort"
            )
        return out, rows

    def _pipeline_factory(self, data: MultimodalData, task: str, max_features: int | None, scale: bool):
        kind = preprocessing_kind(data, self.modality, self.preprocessing)
        types = resolve_clinical_types(data, self.clinical_types) if kind == "clinical" else None

        def make():
            return make_tabular_pipeline(
                kind,
                task=task,
                clinical_types=types,
                max_features=max_features,
                max_missing=self.max_missing,
                scale=scale,
                screening=screening_spec(self.preprocessing),
            )

        self.preprocessing_ = kind
        return make

    def _present_X(self, data: MultimodalData) -> tuple[pd.DataFrame, np.ndarray]:  # raw rows, presence mask
        present = modality_present(data, self.modality)
        return modality_frame(data, self.modality).iloc[np.flatnonzero(present)], present

    def _score(self, Xt: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        self._check_fitted()
        X, present = self._present_X(data)
        scores = self._score(self.pipeline_.transform(X)) if len(X) else np.empty(0)
        return fill_absent(scores, present, self.risk_median_)

    def _finish(self, data: MultimodalData, out: Any, rows: np.ndarray) -> None:
        self.task_ = out.task
        self.n_train_ = int(rows.sum())
        if out.task == "survival":
            self.km_ = kaplan_meier_curve(out.time[rows], out.event[rows])
        X = modality_frame(data, self.modality).iloc[np.flatnonzero(rows)]
        self.risk_median_ = float(np.median(self._score(self.pipeline_.transform(X))))

    def _survival_of_present(self, Xt: np.ndarray, times: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        """Model curves for patients with the modality; the training Kaplan-Meier curve for the others."""
        self._need_task("survival", "predict_survival")
        times = np.asarray(times, dtype=np.float64)
        X, present = self._present_X(data)
        out = np.repeat(evaluate_step_functions(*self.km_, times), len(present), axis=0)
        if len(X):
            out[present] = self._survival_of_present(self.pipeline_.transform(X), times)
        return out

"""Fold-fitted tabular preprocessing and outcome plumbing shared by the baseline models.

Every baseline sees one modality (or the clinical table) as a patient x feature frame. What it learns from the
data (medians, scales, category lists, which features survive screening) is fitted inside the model's ``fit``
on the training fold only, through the scikit-learn pipelines built here:

- ``clinical``: :class:`~omics_risk.features.clinical.ClinicalEncoder` (typed encoding with imputation);
- ``standard`` (any omics table): drop features missing in more than ``max_missing`` of the training rows that
  have the sample (per timepoint block, :class:`~omics_risk.features.metabolomics.MissingnessFilter`) -> median
  imputation -> drop constant features -> standard scaling;
- ``metabolomics``: the fold-fitted metabolomics chain of
  :func:`~omics_risk.features.metabolomics.make_metabolomics_pipeline` (missingness filter, detection-limit
  imputation, PQN, log2) before the same median imputation (timepoint blocks a patient lacks) and scaling;

optionally followed by univariate screening to ``max_features`` (one-pass Cox score test for survival, Wilcoxon
rank-sum for a binary endpoint; :mod:`omics_risk.features.screening`), which learns from ``y`` and therefore must
stay inside the pipeline so that inner cross-validation refits it on each inner training split. Scoring tables
are aligned to the training columns by name (absent columns are imputed), so a new cohort's store may order or
lack columns differently.

The clinical column types come from ``cohort.yaml`` (``clinical:``). :class:`MultimodalData` does not carry
them, so :func:`resolve_clinical_types` takes them from the model's ``clinical_types`` argument, then from a
``clinical_types`` attribute of the data if present, and only then infers them from the values with
:func:`omics_risk.models.preprocessing.infer_clinical_types` (numbers -> ``numeric``, 0/1 -> ``binary``, text ->
``categorical``; ordinal levels cannot be inferred, so pass the spec's types to keep stage ordered).

Endpoint convention: a survival endpoint (``data.time``/``data.event``) or a binary one (``data.label``, 1 =
response, the favourable outcome). For binary endpoints risk = 1 - P(response), so "higher = worse" holds for
every model and every endpoint.
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from omics_risk.data.multimodal import MultimodalData
from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.features.metabolomics import MissingnessFilter, make_metabolomics_pipeline
from omics_risk.features.screening import UnivariateCoxSelector, WilcoxonSelector, make_screener
from omics_risk.models.base import InsufficientTrainingData, ModelCapabilities, SurvivalModel
from omics_risk.models.preprocessing import infer_clinical_types

__all__ = [
    "CLINICAL",
    "TASKS",
    "AlignColumns",
    "BaselineModel",
    "MissingnessColumns",
    "Outcome",
    "describe_sequence",
    "evaluate_step_functions",
    "fill_absent",
    "inner_splits",
    "kaplan_meier_curve",
    "make_tabular_pipeline",
    "modality_frame",
    "modality_present",
    "outcome_of",
    "preprocessing_kind",
    "resolve_clinical_types",
    "risk_from_response",
    "screening_spec",
]

CLINICAL = "clinical"
TASKS = ("auto", "survival", "binary")


# ---------------------------------------------------------------------------------------------- clinical types
def resolve_clinical_types(data: MultimodalData, clinical_types: Mapping[str, Any] | None) -> dict[str, Any]:
    """The types of ``data.clinical``'s columns: given, else ``data.clinical_types``, else inferred from values."""
    given = clinical_types if clinical_types is not None else getattr(data, "clinical_types", None)
    if given is None:
        return dict(infer_clinical_types(data.clinical))
    types = {str(k): (dict(v) if isinstance(v, Mapping) else v) for k, v in dict(given).items()}
    missing = [c for c in types if c not in data.clinical.columns]
    if missing:
        raise KeyError(
            f"clinical_types names column(s) {', '.join(missing)} that are not in the clinical table "
            f"(has: {', '.join(map(str, data.clinical.columns)) or 'none'})"
        )
    return types


# ------------------------------------------------------------------------------------------------- outcomes
class Outcome:
    """The endpoint of a :class:`MultimodalData`: ``task`` is ``survival`` or ``binary``; ``usable`` marks the
    patients whose outcome is known (a binary label may be NaN = not assessed)."""

    def __init__(self, data: MultimodalData):
        if data.time is not None and data.event is not None:
            self.task = "survival"
            self.time = np.asarray(data.time, dtype=np.float64)
            self.event = np.asarray(data.event, dtype=np.float64)
            self.usable = np.isfinite(self.time) & np.isfinite(self.event)
            self.label = None
        elif data.label is not None:
            self.task = "binary"
            self.label = np.asarray(data.label, dtype=np.float64)
            self.usable = np.isfinite(self.label)
            bad = set(np.unique(self.label[self.usable])) - {0.0, 1.0}
            if bad:
                raise ValueError(
                    f"binary endpoint '{data.endpoint}' must be 0/1 (1 = response), found values {sorted(bad)[:5]}"
                )
            self.time = self.event = None
        else:
            raise ValueError(
                f"endpoint '{data.endpoint}' has neither time/event (survival) nor label (binary): cannot train"
            )

    def y(self, rows: np.ndarray) -> np.ndarray:
        """The target of ``rows`` (boolean mask or positions) in scikit-learn / scikit-survival form."""
        if self.task == "survival":
            return Surv.from_arrays(self.event[rows].astype(bool), self.time[rows])
        return self.label[rows].astype(np.int64)

    def strata(self, rows: np.ndarray) -> np.ndarray:
        """What inner folds are stratified on: the event indicator or the label."""
        return (self.event[rows] if self.task == "survival" else self.label[rows]).astype(np.int64)


def outcome_of(data: MultimodalData, task: str = "auto") -> Outcome:
    """The endpoint of ``data``, checked against the task a model was configured for."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out = Outcome(data)
    if task != "auto" and task != out.task:
        raise ValueError(
            f"the model was configured for a {task} endpoint but endpoint '{data.endpoint}' is {out.task}; "
            "build the baselines with the run's task"
        )
    if out.usable.sum() < 4:
        raise ValueError(f"only {int(out.usable.sum())} patients have a known outcome: too few to train a model")
    return out


def risk_from_response(p_response: np.ndarray) -> np.ndarray:
    """Binary endpoints: risk = 1 - P(response), so that higher = worse as for survival."""
    return 1.0 - np.asarray(p_response, dtype=np.float64)


def inner_splits(strata: np.ndarray, n_splits: int, seed: int, *,
                 survival: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K folds (positions); ``n_splits`` shrinks to what the rarer class allows (>= 2).

    ``survival=True`` (``strata`` = the event indicator): an inner C-index needs events, not censored patients, so a
    training set with fewer than 2 censored patients (a small risk set late in follow-up) gets unstratified folds
    of at least 2 patients and 1 event each instead of an error. Raises :class:`InsufficientTrainingData` when no
    inner cross-validation is possible (fewer than 2 events, or fewer than 2 of a response class)."""
    counts = np.bincount(strata.astype(np.int64), minlength=2)
    k = int(min(n_splits, counts[counts > 0].min() if (counts > 0).sum() > 1 else 0))
    if k < 2:
        n_events = int(counts[1]) if len(counts) > 1 else 0
        k_events = min(n_splits, n_events, len(strata) // 2)
        if survival and k_events >= 2:
            return list(KFold(n_splits=k_events, shuffle=True, random_state=seed).split(np.zeros(len(strata))))
        raise InsufficientTrainingData(
            f"inner cross-validation needs at least 2 patients of each outcome class (events/censored or "
            f"responders/non-responders); this training fold has {counts.tolist()}"
        )
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(strata)), strata))


# ----------------------------------------------------------------------------------------- modality tables
def modality_frame(data: MultimodalData, modality: str) -> pd.DataFrame:
    """The patient x feature table of ``modality`` (``clinical`` = the raw clinical table)."""
    if modality == CLINICAL:
        return data.clinical
    if modality not in data.modalities:
        raise KeyError(f"modality '{modality}' is not in the data (has: {', '.join([CLINICAL, *data.modality_names])})")
    return data.modalities[modality]


def modality_present(data: MultimodalData, modality: str) -> np.ndarray:
    """Which patients have ``modality`` (the presence mask; clinical is always present)."""
    if modality == CLINICAL:
        return np.ones(len(data), dtype=bool)
    if modality in data.present.columns:
        return data.present[modality].to_numpy(dtype=bool)
    return modality_frame(data, modality).notna().any(axis=1).to_numpy()


def fill_absent(scores: np.ndarray, present: np.ndarray, fallback: float) -> np.ndarray:
    """Scores for every patient: ``scores`` where present (in order), ``fallback`` elsewhere."""
    out = np.full(len(present), float(fallback))
    out[present] = scores
    return out


def screening_spec(preprocessing: Any) -> dict[str, Any] | None:
    """The screening spec of a per-modality ``preprocessing`` setting given as ``{"kind": ..., "screening": spec}``
    (the ``model/screening`` config group writes it; a plain kind string has none)."""
    if isinstance(preprocessing, Mapping) and preprocessing.get("screening"):
        return dict(preprocessing["screening"])
    return None


def preprocessing_kind(data: MultimodalData, modality: str, kind: Any = "auto") -> str:
    """``auto``: the modality's fold-fitted kind from the modality registry (its format's, see
    :meth:`MultimodalData.preprocessing_kind`), with the registry's ``tabular`` called ``standard`` here.
    ``kind`` may be a mapping ``{"kind": ..., "screening": ...}`` (its ``kind``, default ``auto``)."""
    if isinstance(kind, Mapping):
        kind = kind.get("kind", "auto")
    if kind != "auto":
        if kind not in ("clinical", "standard", "metabolomics"):
            raise ValueError(f"preprocessing must be auto, clinical, standard or metabolomics, got {kind!r}")
        return kind
    found = data.preprocessing_kind(modality)
    return "standard" if found == "tabular" else found


def _as_float_array(X: Any) -> np.ndarray:
    return np.asarray(X, dtype=np.float64)


class AlignColumns(TransformerMixin, BaseEstimator):
    """Reorder a scoring table's columns by name to the training columns (absent ones become NaN, extra ones are
    dropped), so that a new cohort's feature table need not match the training column order."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> AlignColumns:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("AlignColumns needs a DataFrame (feature names identify the columns)")
        self.columns_ = list(X.columns)  # a list, not an Index: the fitted pipeline is saved with skops
        self.n_features_in_ = len(self.columns_)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "columns_")
        return X.reindex(columns=self.columns_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)


class MissingnessColumns(AlignColumns):
    """:class:`~omics_risk.features.metabolomics.MissingnessFilter` (per timepoint block, fitted on the named
    training frame), then at transform time a plain column slice of the aligned table into a float array: the
    DataFrame validation of the filter's own ``transform`` dominates the cost of fitting models on wide tables."""

    def __init__(self, max_missing: float = 0.5):
        self.max_missing = max_missing

    def fit(self, X: pd.DataFrame, y: Any = None) -> MissingnessColumns:
        super().fit(X)
        self.filter_ = MissingnessFilter(max_missing=self.max_missing).fit(X)
        self.support_ = np.asarray(self.filter_.support_, dtype=bool)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:  # type: ignore[override]
        return super().transform(X).to_numpy(dtype=np.float64)[:, self.support_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return super().get_feature_names_out()[self.support_]


def make_tabular_pipeline(
    kind: str,
    *,
    task: str = "survival",
    clinical_types: Mapping[str, Any] | None = None,
    max_features: int | None = None,
    max_missing: float = 0.5,
    scale: bool = True,
    screening: Mapping[str, Any] | None = None,
) -> Pipeline:
    """An unfitted pipeline for one table (see the module docstring for the steps): DataFrame in, float array out.

    The first step sees the DataFrame, aligned by column name to the training table (names carry the timepoint
    blocks and clinical types); everything after it runs on a NumPy array, because scikit-learn's per-column
    DataFrame validation otherwise costs more than the models on wide omics tables. Output column names:
    ``pipeline.get_feature_names_out()``.
    ``max_features`` adds univariate screening (learns from ``y``: pass ``y`` to ``fit``); ``screening`` (a
    :func:`~omics_risk.features.screening.make_screener` spec) adds that screen instead.
    """
    steps: list[tuple[str, Any]] = []
    if kind == "clinical":
        if not clinical_types:
            raise ValueError("the clinical pipeline needs clinical_types (see resolve_clinical_types)")
        steps.append(("encode", ClinicalEncoder(types=dict(clinical_types))))
    elif kind == "metabolomics":
        steps.append(("align", AlignColumns()))
        steps.append(("metabolomics", make_metabolomics_pipeline(max_missing=max_missing, scaling=None)))
    elif kind == "standard":
        steps.append(("missingness", MissingnessColumns(max_missing=max_missing)))
    else:
        raise ValueError(f"unknown preprocessing kind {kind!r}")
    steps.append(("array", FunctionTransformer(_as_float_array, feature_names_out="one-to-one")))
    if kind != "clinical":
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=False)))
    steps.append(("constant", VarianceThreshold(threshold=0.0)))
    if scale:
        steps.append(("scale", StandardScaler()))
    if screening:
        steps.append(("screen", make_screener(screening, task=task)))
    elif max_features is not None:
        if int(max_features) < 1:
            raise ValueError(f"max_features must be a positive integer or None, got {max_features!r}")
        screen: Any = (
            UnivariateCoxSelector(k=int(max_features), test="score")
            if task == "survival"
            else WilcoxonSelector(k=int(max_features))
        )
        steps.append(("screen", screen))
    return Pipeline(steps)


# ------------------------------------------------------------------------------------------ survival curves
def evaluate_step_functions(x: np.ndarray, y: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Right-continuous step survival functions at ``times``: 1 before the first jump, last value after the last.

    ``x``: jump times (ascending, shared); ``y``: (n, len(x)) survival values.
    """
    times = np.asarray(times, dtype=np.float64)
    idx = np.searchsorted(np.asarray(x, dtype=np.float64), times, side="right") - 1
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    padded = np.concatenate([np.ones((y.shape[0], 1)), y], axis=1)
    return padded[:, idx + 1]


def kaplan_meier_curve(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training Kaplan-Meier curve: the uninformative survival prediction for a patient lacking inputs."""
    t, s = kaplan_meier_estimator(np.asarray(event, dtype=bool), np.asarray(time, dtype=np.float64))
    return np.asarray(t), np.asarray(s)


# --------------------------------------------------------------------------------------------- base class
class BaselineModel(SurvivalModel):
    """Shared plumbing: the endpoint check, the training-median fallback and fit timing (``fit_seconds_``)."""

    task: str = "auto"

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = _time.perf_counter()
        yield
        self.fit_seconds_ = _time.perf_counter() - start

    def _check_fitted(self) -> None:
        if not hasattr(self, "task_"):
            raise RuntimeError(f"{type(self).__name__} ({self.name}) is not fitted: call fit(data) first")

    def _need_task(self, task: str, what: str) -> None:
        self._check_fitted()
        if self.task_ != task:
            raise NotImplementedError(
                f"{self.name}: {what} needs a {task} endpoint; this model was fitted on a {self.task_} endpoint"
            )

    def capabilities(self) -> ModelCapabilities:
        """Survival curves for a survival endpoint, P(response) for a binary one: the fitted endpoint once fitted,
        else the ``task`` setting (``auto``: either). No images, no epoch callback."""
        task = getattr(self, "task_", None) or self.task
        return ModelCapabilities(survival=task != "binary", response=task != "survival")

    def predict_response(self, data: MultimodalData) -> np.ndarray:
        """P(response) for a binary endpoint."""
        self._need_task("binary", "predict_response")
        return 1.0 - self.predict_risk(data)


def describe_sequence(values: Sequence[Any] | None) -> str | None:
    """Lists as comma-joined strings for flat, JSON-friendly ``describe()`` output."""
    return None if values is None else ",".join(map(str, values))

"""Van Houwelingen's landmark super-model: one Cox model over stacked landmark data sets.

At each landmark day ``s`` the patients still at risk form a data set whose inputs use only what was measured up to
``s`` and whose outcome counts from ``s``, administratively censored at ``s + window``. Stacking these data sets (one
row per patient and landmark) and fitting one Cox model with landmark-time interactions (each feature x ``s`` and
``s^2``, ``s`` scaled to [0, 1] over the training landmarks) gives a model that predicts, at any landmark, the risk in
the next ``window`` days (van Houwelingen 2007, Scand J Stat 34:70-85). A patient appears at several landmarks, so
rows are not independent: the variance is the cluster-robust sandwich by patient, and cross-validation splits by
patient (:func:`patient_folds`, :meth:`StackedLandmarks.rows_for`).

A fitted model is saved without pickle (:meth:`LandmarkSuperModel.save`): ``config.json`` (settings, Cox
coefficients, centring, Breslow baseline, landmark range, the run's metadata) and ``pipelines/<i>.skops`` (the
fitted per-modality pipelines, loaded with the trusted-types allow-list of
:func:`~omics_risk.models.preprocessing.load_trusted`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sksurv.util import Surv

from omics_risk import __version__
from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelCapabilities
from omics_risk.models.preprocessing import load_trusted, save_trusted
from omics_risk.models.saved import plain, read_config
from omics_risk.models.tabular import (
    CLINICAL,
    BaselineModel,
    describe_sequence,
    make_tabular_pipeline,
    modality_frame,
    modality_present,
    preprocessing_kind,
    resolve_clinical_types,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "LandmarkSuperModel", "StackedLandmarks", "patient_folds", "ridge_cox_fit",
           "stack_landmarks"]

#: ``config.json``'s ``format`` of a saved landmark super-model, and the newest version this code reads.
FORMAT, FORMAT_VERSION = "omics-risk-landmark", 1


@dataclass
class StackedLandmarks:
    """Stacked landmark data sets: ``data`` has one row per (patient, landmark at which the patient is at risk), its
    ``time``/``event`` counted from the landmark and censored at the window; ``landmark`` and ``patient`` say whose
    row it is and when."""

    data: MultimodalData
    landmark: np.ndarray
    patient: np.ndarray
    horizon_window: float

    def __len__(self) -> int:
        return len(self.landmark)

    @property
    def time(self) -> np.ndarray:
        return np.asarray(self.data.time, dtype=float)

    @property
    def event(self) -> np.ndarray:
        return np.asarray(self.data.event, dtype=float)

    def subset(self, idx: np.ndarray | Sequence[int]) -> StackedLandmarks:
        """Rows ``idx`` (positions), e.g. a patient-level fold from :meth:`rows_for`."""
        idx = np.asarray(idx)
        return StackedLandmarks(self.data.subset(idx), self.landmark[idx], self.patient[idx], self.horizon_window)

    def rows_for(self, patients: Sequence[Any]) -> np.ndarray:
        """Positions of every row of ``patients`` (all their landmarks): maps a patient-level fold to rows."""
        return np.flatnonzero(np.isin(self.patient, np.asarray(list(patients), dtype=object)))

    def at(self, landmark: float) -> StackedLandmarks:
        """The rows of one landmark (for per-landmark evaluation)."""
        return self.subset(np.flatnonzero(np.isclose(self.landmark, float(landmark))))


def stack_landmarks(per_landmark: Mapping[float, MultimodalData], horizon_window: float) -> StackedLandmarks:
    """Stack the landmark data sets ``{s: data at s}`` (each as ``load_multimodal`` gives it for that landmark:
    patients at risk at ``s``, inputs measured up to ``s``, outcome counted from ``s``) into one row per patient
    and landmark, censoring events after ``horizon_window`` days at the window."""
    window = float(horizon_window)
    if not window > 0:
        raise ValueError(f"horizon_window must be > 0 days, got {horizon_window!r}")
    if not per_landmark:
        raise ValueError("stack_landmarks needs at least one landmark data set")
    parts, landmarks, patients = [], [], []
    for s, data in sorted(per_landmark.items()):
        s = float(s)
        own = getattr(data, "landmark", None)
        if own is not None and not np.isclose(float(own), s):
            raise ValueError(f"the data set given for landmark {s:g} was built for landmark {float(own):g}")
        if data.time is None or data.event is None:
            raise ValueError(f"landmark {s:g}: endpoint '{data.endpoint}' is not a survival endpoint; the landmark "
                             "super-model needs time and event")
        time = np.asarray(data.time, dtype=float)
        if (time < 0).any():
            first = data.patients[np.flatnonzero(time < 0)[0]]
            raise ValueError(f"landmark {s:g}: patient {first} has a negative time; times must count from the "
                             "landmark and patients with an event or censoring before it must be left out")
        parts.append(data)
        landmarks.append(np.full(len(data), s))
        patients.append(np.asarray(data.patients))
    names = list(dict.fromkeys(m for d in parts for m in d.modality_names))
    row_ids = [pd.Index([f"{p}@{s:g}" for p in d.patients], name="row") for s, d in zip(
        sorted(float(k) for k in per_landmark), parts, strict=True)]

    def stacked(get) -> pd.DataFrame:
        return pd.concat([get(d).set_axis(ix, axis=0) for d, ix in zip(parts, row_ids, strict=True)])

    modalities = {m: stacked(lambda d, m=m: d.modalities.get(m, pd.DataFrame(index=d.patients))) for m in names}
    present = stacked(lambda d: d.present.reindex(columns=[CLINICAL, *names])).fillna(False).astype(bool)
    time = np.concatenate([np.asarray(d.time, dtype=float) for d in parts])
    event = np.concatenate([np.asarray(d.event, dtype=float) for d in parts])
    late = time > window
    formats = {k: v for d in parts for k, v in d.formats.items()}
    data = MultimodalData(patients=pd.Index(np.concatenate([ix.to_numpy() for ix in row_ids]), name="row"),
                          clinical=stacked(lambda d: d.clinical), modalities=modalities, present=present,
                          time=np.where(late, window, time), event=np.where(late, 0.0, event),
                          endpoint=parts[0].endpoint, formats=formats)
    return StackedLandmarks(data, np.concatenate(landmarks), np.concatenate(patients), window)


def patient_folds(patient_ids: Sequence[Any], folds: int, seed: int, *,
                  event: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds over rows that keep every row of a patient (all its landmarks) in one fold: (train, test) positions.

    Patients are split by a seeded :class:`~sklearn.model_selection.StratifiedKFold` on whether they have any event
    (``event``, one per row), so each held-out fold has events; without ``event``, plainly shuffled.
    """
    ids = np.asarray(list(patient_ids))
    unique, inverse = np.unique(ids, return_inverse=True)
    if len(unique) < folds:
        raise ValueError(f"{len(unique)} patients cannot fill {folds} folds; lower the number of folds")
    strata = np.zeros(len(unique), dtype=int)
    if event is not None:
        np.maximum.at(strata, inverse, (np.asarray(event) > 0).astype(int))
        if np.bincount(strata, minlength=2).min() < folds:
            strata[:] = 0
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for _, te in cv.split(np.zeros(len(unique)), strata):
        test = np.isin(inverse, te)
        out.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return out


def ridge_cox_fit(fitter: type, df: pd.DataFrame, penalizer: float, what: str, **fit_kwargs: Any) -> tuple[Any, float]:
    """A lifelines Cox fitter (``CoxPHFitter``, ``CoxTimeVaryingFitter``) fitted with a ridge ``penalizer``; a stalled
    Newton-Raphson (flat likelihood on uninformative data, near separation) is retried with a 10x stronger penalty.
    Returns the fitted model and the penalty used."""
    problem = ""
    for used in (penalizer, 10 * penalizer):
        model = fitter(penalizer=used)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            # lifelines' pre-fit diagnostics (a low-variance or separating column): the ridge penalty handles them
            warnings.filterwarnings("ignore", message=r"(?s).*very low variance", category=ConvergenceWarning)
            try:
                return model.fit(df, **fit_kwargs), used
            except (ConvergenceError, ConvergenceWarning) as err:
                problem = str(err).splitlines()[0]
    raise RuntimeError(f"the Cox fit of {what} did not converge even with penalizer={10 * penalizer:g} ({problem}); "
                       "use fewer features (max_features) or a larger penalizer")


class LandmarkSuperModel(BaselineModel):
    """A Cox model (lifelines ``CoxPHFitter``, ridge ``penalizer``) on stacked landmark rows, with each kept feature
    interacting with the landmark (``s``, ``s^2``) and ``s``, ``s^2`` as main effects, and the cluster-robust variance
    by patient (``summary_``).

    Features: per modality of ``modalities`` (default: every modality of the data) and the clinical table
    (``include_clinical``), the fold-fitted pipeline of the baselines
    (:func:`~omics_risk.models.tabular.make_tabular_pipeline`, kind from the modality registry) fitted on the training
    rows that have the modality, screened to ``max_features`` by a univariate Cox test; a row lacking a modality gets
    0 for its features (the training mean after scaling). Predicts the risk of an event within ``horizon_window`` days
    of a row's landmark, and survival within that window (Breslow baseline of the stacked rows).
    """

    name = "landmark_cox"

    def __init__(self, modalities: Sequence[str] | None = None, *, include_clinical: bool = True,
                 penalizer: float = 0.1, max_features: int | None = 10, max_missing: float = 0.5,
                 preprocessing: Mapping[str, str] | None = None, clinical_types: Mapping[str, Any] | None = None,
                 seed: int = 0, device: str = "cpu"):
        self.modalities = modalities
        self.include_clinical = include_clinical
        self.penalizer = penalizer
        self.max_features = max_features
        self.max_missing = max_missing
        self.preprocessing = preprocessing
        self.clinical_types = clinical_types
        self.seed = seed
        self.device = device  # accepted for the model contract (ModelContext); the Cox fit runs on the CPU
        self.task = "survival"

    # -- design matrix
    def _inputs(self, data: MultimodalData) -> list[str]:
        chosen = list(data.modality_names if self.modalities is None else self.modalities)
        return ([CLINICAL] if self.include_clinical else []) + [m for m in chosen if m != CLINICAL]

    def _scaled_landmark(self, landmark: np.ndarray) -> np.ndarray:
        lo, hi = self.landmark_range_
        return np.zeros(len(landmark)) if hi == lo else (np.asarray(landmark, float) - lo) / (hi - lo)

    def _design(self, stacked: StackedLandmarks) -> pd.DataFrame:
        blocks = []
        for m, pipe in self.pipelines_.items():
            present = modality_present(stacked.data, m)
            Z = np.zeros((len(stacked), len(pipe.get_feature_names_out())))
            if present.any():
                Z[present] = pipe.transform(modality_frame(stacked.data, m).iloc[np.flatnonzero(present)])
            blocks.append(pd.DataFrame(Z, columns=[f"{m}/{c}" for c in pipe.get_feature_names_out()]))
        X = pd.concat(blocks, axis=1) if blocks else pd.DataFrame(index=range(len(stacked)))
        s = self._scaled_landmark(stacked.landmark)
        inter = {} if self.landmark_range_[0] == self.landmark_range_[1] else {
            **{f"{c}:s": X[c].to_numpy() * s for c in X.columns}, **{f"{c}:s2": X[c].to_numpy() * s**2 for c in X},
            "s": s, "s2": s**2}
        return pd.concat([X, pd.DataFrame(inter, index=X.index)], axis=1)

    # -- fitting
    def _fit_pipelines(self, stacked: StackedLandmarks) -> None:
        data, y = stacked.data, Surv.from_arrays(stacked.event.astype(bool), stacked.time)
        self.pipelines_ = {}
        for m in self._inputs(data):
            kind = preprocessing_kind(data, m, (self.preprocessing or {}).get(m, "auto"))
            types = resolve_clinical_types(data, self.clinical_types) if kind == "clinical" else None
            rows = np.flatnonzero(modality_present(data, m))
            if len(rows) < 2:
                continue
            X = modality_frame(data, m)
            n_cols = X.shape[1]
            k = None if self.max_features is None or self.max_features >= n_cols else self.max_features
            pipe = make_tabular_pipeline(kind, task="survival", clinical_types=types, max_features=k,
                                         max_missing=self.max_missing)
            self.pipelines_[m] = pipe.fit(X.iloc[rows], y[rows])

    def fit(self, data: StackedLandmarks) -> LandmarkSuperModel:  # type: ignore[override]
        if not isinstance(data, StackedLandmarks):
            raise TypeError(f"{self.name} fits on stacked landmark rows: build them with "
                            f"omics_risk.models.landmark.stack_landmarks, got {type(data).__name__}")
        if data.event.sum() < 2:
            raise ValueError(f"{self.name}: {int(data.event.sum())} events within the window over "
                             f"{len(data)} stacked rows: too few to fit")
        with self._timed():
            self.landmark_range_ = (float(data.landmark.min()), float(data.landmark.max()))
            self.horizon_window_ = data.horizon_window
            self._fit_pipelines(data)
            X = self._design(data)
            X = X.loc[:, X.std(ddof=0).to_numpy() > 0]
            self.columns_ = list(X.columns)
            df = X.assign(__time=data.time, __event=data.event, __patient=pd.factorize(data.patient)[0])
            self.cph_, self.penalizer_ = ridge_cox_fit(
                CoxPHFitter, df, self.penalizer, f"{self.name} on {len(df)} stacked rows x {df.shape[1] - 3} columns",
                duration_col="__time", event_col="__event", cluster_col="__patient", robust=True)
            self.coef_ = self.cph_.params_.copy()
            self.summary_ = self.cph_.summary
            # what prediction needs, as plain arrays (lifelines' own formulas; a saved model holds only these)
            self.beta_ = self.coef_.reindex(self.columns_).to_numpy(dtype=np.float64)
            self.norm_mean_ = self.cph_._norm_mean.reindex(self.columns_).to_numpy(dtype=np.float64)
            base = self.cph_.baseline_cumulative_hazard_.iloc[:, 0]
            self.baseline_times_ = base.index.to_numpy(dtype=np.float64)
            self.baseline_cumhaz_ = base.to_numpy(dtype=np.float64)
            self.task_ = "survival"
            self.n_train_ = len(data)
        return self

    # -- prediction
    def _stacked(self, data: StackedLandmarks | MultimodalData,
                 landmark: float | np.ndarray | None) -> StackedLandmarks:
        if isinstance(data, StackedLandmarks):
            if landmark is not None:
                raise ValueError("stacked rows carry their own landmarks; do not pass landmark= as well")
            return data
        landmark = getattr(data, "landmark", None) if landmark is None else landmark
        if landmark is None:
            raise ValueError(f"{self.name} predicts at a landmark: pass stacked rows, landmark=, or data built for a "
                             "landmark (MultimodalData.landmark)")
        marks = np.broadcast_to(np.asarray(landmark, dtype=float), (len(data),)).copy()
        return StackedLandmarks(data, marks, np.asarray(data.patients), self.horizon_window_)

    def predict_risk(self, data: StackedLandmarks | MultimodalData,  # type: ignore[override]
                     landmark: float | np.ndarray | None = None) -> np.ndarray:
        """Log relative hazard of each row within the window after its landmark (higher = riskier)."""
        self._check_fitted()
        return self._log_hazard(self._stacked(data, landmark))

    def _log_hazard(self, stacked: StackedLandmarks) -> np.ndarray:
        """lifelines' ``predict_log_partial_hazard``: the centred design times the coefficients."""
        X = self._design(stacked)[self.columns_].to_numpy(dtype=np.float64)
        return (X - self.norm_mean_) @ self.beta_

    def predict_survival(self, data: StackedLandmarks | MultimodalData, times: np.ndarray,  # type: ignore[override]
                         landmark: float | np.ndarray | None = None) -> np.ndarray:
        """P(no event by ``times`` days after the row's landmark), for times within the horizon window only."""
        self._check_fitted()
        times = np.asarray(times, dtype=np.float64)
        if (times > self.horizon_window_).any() or (times < 0).any():
            raise ValueError(f"{self.name} models the {self.horizon_window_:g} days after a landmark; ask for times "
                             f"in [0, {self.horizon_window_:g}], got {times.min():g}-{times.max():g}")
        # lifelines' predict_survival_function: exp(-H0(t) exp(lp)), H0 linearly interpolated (Breslow)
        h0 = np.interp(times, self.baseline_times_, self.baseline_cumhaz_)
        lp = self._log_hazard(self._stacked(data, landmark))
        return np.exp(-np.outer(np.exp(lp), h0))

    def capabilities(self) -> ModelCapabilities:
        return ModelCapabilities(survival=True)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "modalities": describe_sequence(self.modalities),
                "include_clinical": self.include_clinical, "penalizer": self.penalizer,
                "max_features": self.max_features, "max_missing": self.max_missing}

    def risk_within_window(self, data: MultimodalData, landmark: float | np.ndarray) -> np.ndarray:
        """P(event within ``horizon_window`` days of the landmark): 1 - survival at the window's end."""
        return 1.0 - self.predict_survival(data, np.array([self.horizon_window_]), landmark=landmark)[:, 0]

    # -- persistence (no pickle)
    _SETTINGS = ("modalities", "include_clinical", "penalizer", "max_features", "max_missing", "preprocessing",
                 "clinical_types", "seed")

    def save(self, directory: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the fitted model into ``directory`` (layout in the module docstring); ``metadata`` (what the model
        needs to be applied: modalities, prediction time, longitudinal settings, endpoint, ...) goes into
        ``config.json`` as given, and comes back as ``metadata_``."""
        self._check_fitted()
        root = Path(directory)
        (root / "pipelines").mkdir(parents=True, exist_ok=True)
        names = list(self.pipelines_)
        for i, m in enumerate(names):
            save_trusted(self.pipelines_[m], root / "pipelines" / f"{i}.skops")
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "settings": {k: getattr(self, k) for k in self._SETTINGS},
            "pipelines": names, "columns": self.columns_, "beta": self.beta_.tolist(),
            "norm_mean": self.norm_mean_.tolist(), "baseline_times": self.baseline_times_.tolist(),
            "baseline_cumhaz": self.baseline_cumhaz_.tolist(), "landmark_range": list(self.landmark_range_),
            "horizon_window": float(self.horizon_window_), "penalizer_used": float(self.penalizer_),
            "n_train": int(self.n_train_), "metadata": dict(metadata or getattr(self, "metadata_", {}) or {}),
            "versions": {"omics_risk": __version__},
        }
        (root / "config.json").write_text(json.dumps(plain(config), indent=1))
        return root

    @classmethod
    def load(cls, directory: str | Path) -> LandmarkSuperModel:
        """Rebuild a model written by :meth:`save` (JSON and trusted skops only)."""
        root = Path(directory)
        cfg = read_config(root, FORMAT, FORMAT_VERSION, "landmark super-model")
        model = cls(**cfg["settings"])
        model.pipelines_ = {m: load_trusted(root / "pipelines" / f"{i}.skops") for i, m in enumerate(cfg["pipelines"])}
        model.columns_ = list(cfg["columns"])
        model.beta_ = np.asarray(cfg["beta"], dtype=np.float64)
        model.norm_mean_ = np.asarray(cfg["norm_mean"], dtype=np.float64)
        model.baseline_times_ = np.asarray(cfg["baseline_times"], dtype=np.float64)
        model.baseline_cumhaz_ = np.asarray(cfg["baseline_cumhaz"], dtype=np.float64)
        model.landmark_range_ = (float(cfg["landmark_range"][0]), float(cfg["landmark_range"][1]))
        model.horizon_window_ = float(cfg["horizon_window"])
        model.penalizer_, model.n_train_ = float(cfg["penalizer_used"]), int(cfg["n_train"])
        model.coef_ = pd.Series(model.beta_, index=model.columns_)
        model.metadata_ = dict(cfg.get("metadata") or {})
        model.task_ = "survival"
        return model

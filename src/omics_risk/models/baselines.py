"""The baselines every training run reports next to the fused model, on the same folds.

Peers find a clinical-only Cox model hard to beat (MultiSurv: clinical Cox C = 0.796 against 0.787 for all six
modalities; SurvBoard: elastic-net Cox and forests match deep models), so each run fits:

- :class:`ClinicalCox` (``clinical_cox``): penalised lifelines ``CoxPHFitter`` on the encoded clinical table;
- :class:`ModalityCoxnet` (``coxnet_<modality>``): scikit-survival elastic-net Cox on one modality, alpha chosen
  by inner cross-validated C-index on the training fold;
- :class:`ModalityRSF` (``rsf_<modality>``): scikit-survival random survival forest on one modality;
- ``deepprog`` (:mod:`omics_risk.models.deepprog`) and ``late_fusion`` (:mod:`omics_risk.models.stacking`);

built together by :func:`make_baselines`. All follow :class:`~omics_risk.models.base.SurvivalModel`: every
preprocessing step (see :mod:`omics_risk.models.tabular`) is fitted inside ``fit`` on the training patients
that have the modality, and a patient lacking it scores the training median risk.

Binary endpoints (``data.label``, 1 = response): the same classes switch to penalised logistic regression /
random forest classification, expose ``predict_response`` = P(response), and ``predict_risk`` = 1 - P(response)
so that higher = worse everywhere. Fit times are kept in ``fit_seconds_``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import SurvivalModel
from omics_risk.models.tabular import (
    CLINICAL,
    BaselineModel,
    describe_sequence,
    evaluate_step_functions,
    fill_absent,
    inner_splits,
    kaplan_meier_curve,
    make_tabular_pipeline,
    modality_frame,
    modality_present,
    outcome_of,
    preprocessing_kind,
    resolve_clinical_types,
    risk_from_response,
)

__all__ = [
    "BASELINE_DEFAULTS",
    "LATE_FUSION_BASE_DEFAULTS",
    "ClinicalCox",
    "ModalityCoxnet",
    "ModalityRSF",
    "make_baselines",
]

MIN_TRAIN = 10  # patients with the modality and a known outcome below which a per-modality model is not fitted


def _step_functions_at(fns: Sequence[Any], times: np.ndarray) -> np.ndarray:
    """scikit-survival StepFunction survival curves (shared jump times) evaluated at ``times``."""
    if len(fns) == 0:
        return np.empty((0, len(times)))
    x = np.asarray(fns[0].x, dtype=np.float64)
    y = np.vstack([np.asarray(f.a * f.y + f.b, dtype=np.float64) for f in fns])
    return evaluate_step_functions(x, y, times)


def _logistic(C: float, l1_ratio: float, seed: int) -> LogisticRegression:
    """Penalised logistic regression; saga for any L1 part (lbfgs handles pure L2 faster)."""
    solver = "saga" if l1_ratio > 0 else "lbfgs"
    return LogisticRegression(C=C, l1_ratio=l1_ratio, solver=solver, max_iter=5000, random_state=seed)


# ---------------------------------------------------------------------------------------------- clinical
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
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceError, ConvergenceWarning

        from omics_risk.features.clinical import ClinicalEncoder

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
                self.clf_ = _logistic(C, self.l1_ratio, self.random_state).fit(X, out.label[rows].astype(int))
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


# ------------------------------------------------------------------------------------- per-modality base
class _ModalityModel(BaselineModel):
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
        kind = preprocessing_kind(self.modality, self.preprocessing)
        types = resolve_clinical_types(data, self.clinical_types) if kind == "clinical" else None

        def make():
            return make_tabular_pipeline(
                kind,
                task=task,
                clinical_types=types,
                max_features=max_features,
                max_missing=self.max_missing,
                scale=scale,
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


# ------------------------------------------------------------------------------------------------ coxnet
class ModalityCoxnet(_ModalityModel):
    """Elastic-net Cox (scikit-survival ``CoxnetSurvivalAnalysis``) on one modality or the clinical table.

    Alpha selection uses the training fold only: the alpha path is computed once on the training fold, then
    ``cv_folds`` inner folds (stratified on the event) each refit the *whole* pipeline -- imputation, scaling
    and the optional univariate pre-screening to ``max_features`` -- on the inner training split and score
    every alpha by Harrell's C on the inner validation split. The alpha with the best mean inner C (the largest
    alpha among ties) is kept (``alpha_``, ``cv_cindex_``); the model on the whole training fold is fitted with
    ``fit_baseline_model=True`` so that it also gives Breslow survival curves.

    Binary endpoint: elastic-net logistic regression; the inverse penalty ``C`` is chosen on the same inner
    folds by ROC AUC among ``n_alphas`` values log-spaced in [1e-3, 10] (``alphas`` here = the C grid; the
    smallest C among ties). Fitted: ``alpha_``, ``cv_cindex_`` (inner C, or inner AUC for a binary endpoint),
    ``cv_cindex_path_`` (per alpha), ``coef_`` (per kept feature name), ``n_selected_``, ``pipeline_``.

    Args:
        modality: a modality of the data, or ``clinical``.
        l1_ratio: elastic-net mixing (1 = lasso).
        alphas: fixed alpha grid (default: scikit-survival's path of ``n_alphas`` values).
        n_alphas: length of the path.
        cv_folds: inner folds for alpha selection.
        max_features: keep the best ``max_features`` features by univariate test (inside the inner folds).
        alpha_min_ratio: smallest alpha / largest (0.01 keeps the path stable when features >> patients).
        preprocessing: ``auto`` | ``clinical`` | ``standard`` | ``metabolomics`` (see ``omics_risk.models.tabular``).
    """

    def __init__(
        self,
        modality: str,
        l1_ratio: float = 0.5,
        alphas: Sequence[float] | None = None,
        n_alphas: int = 50,
        cv_folds: int = 3,
        max_features: int | None = None,
        *,
        alpha_min_ratio: float = 0.01,
        preprocessing: str = "auto",
        max_missing: float = 0.5,
        clinical_types: Mapping[str, Any] | None = None,
        task: str = "auto",
        random_state: int = 0,
    ):
        self.modality = modality
        self.l1_ratio = l1_ratio
        self.alphas = alphas
        self.n_alphas = n_alphas
        self.cv_folds = cv_folds
        self.max_features = max_features
        self.alpha_min_ratio = alpha_min_ratio
        self.preprocessing = preprocessing
        self.max_missing = max_missing
        self.clinical_types = clinical_types
        self.task = task
        self.random_state = random_state
        self.name = f"coxnet_{modality}"

    # -- survival
    def _coxnet(self, X: np.ndarray, y: np.ndarray, alphas: np.ndarray | None, baseline: bool):
        """Fit a Coxnet path; on a numerical blow-up at the small-alpha end, shorten the path and retry."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        ratio = self.alpha_min_ratio
        for _ in range(4):
            net = CoxnetSurvivalAnalysis(
                l1_ratio=self.l1_ratio,
                alphas=alphas,
                n_alphas=self.n_alphas,
                alpha_min_ratio=ratio,
                fit_baseline_model=baseline,
                max_iter=100_000,
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "all coefficients are zero" at alpha_max
                    return net.fit(X, y)
            except ArithmeticError:
                if alphas is not None:
                    alphas = alphas[: max(2, int(len(alphas) * 0.75))]
                else:
                    ratio = min(ratio * 10, 0.5)
        raise RuntimeError(
            f"{self.name}: the elastic-net path failed numerically on {X.shape[0]} x {X.shape[1]}; raise "
            "alpha_min_ratio or l1_ratio, or set max_features"
        )

    def _fit_survival(self, X: pd.DataFrame, y: np.ndarray, strata: np.ndarray, make) -> None:
        from sksurv.metrics import concordance_index_censored

        self.pipeline_ = make().fit(X, y)
        Xt = self.pipeline_.transform(X)
        grid = None if self.alphas is None else np.sort(np.asarray(self.alphas, dtype=np.float64))[::-1]
        self.model_ = self._coxnet(Xt, y, grid, baseline=True)
        alphas = np.asarray(self.model_.alphas_, dtype=np.float64)
        scores = np.full((0, len(alphas)), np.nan)
        for tr, va in inner_splits(strata, self.cv_folds, self.random_state):
            pipe = make().fit(X.iloc[tr], y[tr])
            net = self._coxnet(pipe.transform(X.iloc[tr]), y[tr], alphas, baseline=False)
            Xv = pipe.transform(X.iloc[va])
            ev, tv = y[va][y.dtype.names[0]], y[va][y.dtype.names[1]]
            row = [concordance_index_censored(ev, tv, net.predict(Xv, alpha=a))[0] for a in alphas]
            scores = np.vstack([scores, row])
        self.cv_cindex_path_ = pd.Series(scores.mean(axis=0), index=alphas, name="inner_cindex")
        best = int(np.argmax(scores.mean(axis=0)))  # alphas descend: argmax keeps the largest among ties
        self.alpha_ = float(alphas[best])
        self.cv_cindex_ = float(scores.mean(axis=0)[best])
        self.coef_ = pd.Series(np.asarray(self.model_.coef_)[:, best], index=self.pipeline_.get_feature_names_out())

    # -- binary
    def _fit_binary(self, X: pd.DataFrame, y: np.ndarray, strata: np.ndarray, make) -> None:
        grid = np.sort(
            np.logspace(-3, 1, self.n_alphas) if self.alphas is None else np.asarray(self.alphas, dtype=np.float64)
        )
        scores = np.full((0, len(grid)), np.nan)
        for tr, va in inner_splits(strata, self.cv_folds, self.random_state):
            pipe = make().fit(X.iloc[tr], y[tr])
            Xtr, Xv = pipe.transform(X.iloc[tr]), pipe.transform(X.iloc[va])
            row = []
            for C in grid:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # saga ConvergenceWarning at weak penalties
                    p = _logistic(float(C), self.l1_ratio, self.random_state).fit(Xtr, y[tr]).predict_proba(Xv)[:, 1]
                row.append(roc_auc_score(y[va], p))
            scores = np.vstack([scores, row])
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))  # C ascends: argmax keeps the smallest C (strongest penalty) among ties
        self.alpha_ = float(grid[best])
        self.cv_cindex_ = float(mean[best])
        self.cv_cindex_path_ = pd.Series(mean, index=grid, name="inner_auc")
        self.pipeline_ = make().fit(X, y)
        Xt = self.pipeline_.transform(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_ = _logistic(self.alpha_, self.l1_ratio, self.random_state).fit(Xt, y)
        self.coef_ = pd.Series(self.model_.coef_.ravel(), index=self.pipeline_.get_feature_names_out())

    def fit(self, data: MultimodalData) -> ModalityCoxnet:
        with self._timed():
            out, rows = self._training_rows(data)
            X = modality_frame(data, self.modality).iloc[np.flatnonzero(rows)]
            y, strata = out.y(rows), out.strata(rows)
            make = self._pipeline_factory(data, out.task, self.max_features, scale=True)
            if out.task == "survival":
                self._fit_survival(X, y, strata, make)
            else:
                self._fit_binary(X, y, strata, make)
            self.n_selected_ = int(np.sum(self.coef_.to_numpy() != 0))
            self._finish(data, out, rows)
        return self

    def _score(self, Xt: np.ndarray) -> np.ndarray:
        if self.task_ == "survival":
            return np.asarray(self.model_.predict(Xt, alpha=self.alpha_), dtype=np.float64)
        return risk_from_response(self.model_.predict_proba(Xt)[:, 1])

    def _survival_of_present(self, Xt: np.ndarray, times: np.ndarray) -> np.ndarray:
        return _step_functions_at(self.model_.predict_survival_function(Xt, alpha=self.alpha_), times)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "modality": self.modality,
            "l1_ratio": self.l1_ratio,
            "n_alphas": self.n_alphas,
            "alphas": describe_sequence(self.alphas),
            "cv_folds": self.cv_folds,
            "max_features": self.max_features,
            "alpha_min_ratio": self.alpha_min_ratio,
            "preprocessing": self.preprocessing,
            "max_missing": self.max_missing,
            "task": self.task,
            "random_state": self.random_state,
        }


# --------------------------------------------------------------------------------------------------- RSF
class ModalityRSF(_ModalityModel):
    """Random survival forest (scikit-survival) on one modality; random forest classifier for binary endpoints.

    Preprocessing: as for Coxnet without scaling (trees do not need it), optional univariate pre-screening
    to ``screen_features`` inside ``fit``. Risk = the forest's summed cumulative hazard (scikit-survival's
    ``predict``), or 1 - P(response). ``n_jobs`` defaults to 1 so that folds run in parallel do not
    oversubscribe the cores; raise it when folds run one after another.
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
        self.name = f"rsf_{modality}"

    def fit(self, data: MultimodalData) -> ModalityRSF:
        from sksurv.ensemble import RandomSurvivalForest

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
            forest = RandomSurvivalForest if out.task == "survival" else RandomForestClassifier
            self.model_ = forest(**kw).fit(Xt, y)
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
        }


# ----------------------------------------------------------------------------------------------- factory
#: Defaults of :func:`make_baselines`, sized for 5-fold CV of ~300 patients on 2 CPU cores (override any key).
BASELINE_DEFAULTS: dict[str, Any] = {
    "include": None,  # names or families to keep, e.g. [clinical_cox, coxnet, late_fusion]; None = all
    "exclude": [],
    "seed": 0,
    "n_jobs": 1,
    "clinical_types": None,
    "preprocessing": {},  # modality -> auto | standard | metabolomics | clinical
    "clinical_cox": {"penalizer": 0.1, "l1_ratio": 0.0},
    "coxnet": {"l1_ratio": 0.5, "n_alphas": 30, "cv_folds": 3, "max_features": None},
    "rsf": {"n_estimators": 100, "min_samples_leaf": 10, "max_features": "sqrt", "screen_features": None},
    "deepprog": {"latent_dim": 8, "epochs": 30, "batch_size": 64},
    "late_fusion": {"inner_folds": 5, "base": "coxnet", "base_settings": {}, "meta_penalizer": 0.1},
}

#: Leaner settings of the stacker's per-modality base models (fitted ``inner_folds + 1`` times per fold), merged
#: over the family's settings above and under ``late_fusion.base_settings``.
LATE_FUSION_BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "coxnet": {"n_alphas": 20, "max_features": 50},
    "rsf": {"n_estimators": 50},
}


def _plain(obj: Any) -> Any:
    """Hydra DictConfig / ListConfig -> plain dicts and lists (everything else unchanged)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    return obj


def _merge(defaults: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise KeyError(f"unknown baseline setting '{key}' (known: {', '.join(defaults)})")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = {**out[key], **dict(value)}
        else:
            out[key] = value
    return out


def _wanted(name: str, include: Sequence[str] | None, exclude: Sequence[str]) -> bool:
    family = name.split("_", 1)[0] if name.startswith(("coxnet_", "rsf_")) else name
    if name in exclude or family in exclude:
        return False
    return include is None or name in include or family in include


def make_baselines(
    modalities: Sequence[str], task: str = "survival", settings: Mapping[str, Any] | None = None
) -> dict[str, SurvivalModel]:
    """The standard baselines of a run, unfitted, keyed by name.

    ``clinical_cox``; ``coxnet_<m>`` and ``rsf_<m>`` for ``clinical`` and every modality in ``modalities``;
    ``deepprog`` over the omics modalities; ``late_fusion`` stacking one base model per modality (incl.
    clinical, through ClinicalCox). ``settings`` overrides :data:`BASELINE_DEFAULTS` key by key (a nested dict
    per family is merged), e.g. ``{"rsf": {"n_estimators": 50}, "include": ["clinical_cox", "coxnet"]}``.
    ``task`` is ``survival`` or ``binary``: every model checks the endpoint it is fitted on against it.
    """
    from omics_risk.models.deepprog import DeepProgStyle
    from omics_risk.models.stacking import LateFusionStacker

    if task not in ("survival", "binary"):
        raise ValueError(f"task must be 'survival' or 'binary', got {task!r}")
    s = _merge(BASELINE_DEFAULTS, _plain(settings) or {})
    include, exclude = s["include"], list(s["exclude"] or [])
    seed, n_jobs, types = int(s["seed"]), s["n_jobs"], s["clinical_types"]
    omics = [m for m in dict.fromkeys(modalities) if m != CLINICAL]
    tables = [CLINICAL, *omics]
    prep = dict(s["preprocessing"] or {})
    common = {"task": task, "random_state": seed}

    models: dict[str, SurvivalModel] = {}
    models["clinical_cox"] = ClinicalCox(**s["clinical_cox"], clinical_types=types, **common)
    for m in tables:
        models[f"coxnet_{m}"] = ModalityCoxnet(
            m, **s["coxnet"], preprocessing=prep.get(m, "auto"), clinical_types=types, **common
        )
    for m in tables:
        models[f"rsf_{m}"] = ModalityRSF(
            m, **{"n_jobs": n_jobs, **s["rsf"]}, preprocessing=prep.get(m, "auto"), clinical_types=types, **common
        )
    if omics:
        models["deepprog"] = DeepProgStyle(omics, **s["deepprog"], preprocessing=prep, task=task, seed=seed)
    lf = dict(s["late_fusion"])
    family, base_settings = lf.pop("base", "coxnet"), dict(lf.pop("base_settings", {}) or {})
    if family not in ("coxnet", "rsf"):
        raise ValueError(f"late_fusion.base must be 'coxnet' or 'rsf', got {family!r}")
    base: dict[str, SurvivalModel] = {CLINICAL: ClinicalCox(**s["clinical_cox"], clinical_types=types, **common)}
    for m in omics:
        kw = {**s[family], **LATE_FUSION_BASE_DEFAULTS[family], **base_settings}
        if family == "coxnet":
            base[m] = ModalityCoxnet(m, **kw, preprocessing=prep.get(m, "auto"), clinical_types=types, **common)
        else:
            base[m] = ModalityRSF(
                m, **{"n_jobs": n_jobs, **kw}, preprocessing=prep.get(m, "auto"), clinical_types=types, **common
            )
    models["late_fusion"] = LateFusionStacker(base, **lf, task=task, seed=seed)
    return {name: model for name, model in models.items() if _wanted(name, include, exclude)}

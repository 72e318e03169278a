"""Elastic-net Cox on one modality (``coxnet_<modality>``), alpha chosen by inner cross-validation on the fold."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import InsufficientTrainingData
from omics_risk.models.per_modality import ModalityModel, penalised_logistic, step_functions_at
from omics_risk.models.tabular import describe_sequence, inner_splits, modality_frame, risk_from_response

__all__ = ["ModalityCoxnet"]


class ModalityCoxnet(ModalityModel):
    """Elastic-net Cox (scikit-survival ``CoxnetSurvivalAnalysis``) on one modality or the clinical table.

    Alpha selection uses the training fold only: the alpha path is computed once on the training fold, then
    ``cv_folds`` inner folds (stratified on the event) each refit the *whole* pipeline -- imputation, scaling
    and the optional univariate pre-screening to ``max_features`` -- on the inner training split and score
    every alpha by Harrell's C on the inner validation split. The alpha with the best mean inner C (the largest
    alpha among ties) is kept (``alpha_``, ``cv_cindex_``), or with ``one_se`` the largest alpha whose mean inner C
    is within one standard error (over the inner folds) of the best; the model on the whole training fold is fitted with
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
        cv_folds: inner folds for alpha selection (5, as scikit-survival's user guide: with 3 the alpha was tuned
            on 2/3 of the training fold, and the run's models lost to scikit-survival used directly).
        max_features: keep the best ``max_features`` features by univariate test (inside the inner folds).
        alpha_min_ratio: smallest alpha / largest (0.01 keeps the path stable when features >> patients).
        preprocessing: ``auto`` | ``clinical`` | ``standard`` | ``metabolomics`` (see ``omics_risk.models.tabular``).
        one_se: the one-standard-error rule (sparser models where the inner C is flat).
        fixed_alpha: no inner search: the penalty (the C of a binary endpoint) is this one. The fused super learner
            fits its inner-fold copies with the alpha its whole-fold model chose, so the out-of-fold risks its weights
            are fitted on come from the model it will use (an alpha re-chosen on each inner fold gave risks of other
            scales: out-of-fold SD 0.5, refitted model 0.08 or 1.0 on a TCGA fold).

    Stable fitted attributes (a fused model may use this one as a base learner): ``pipeline_`` (raw table ->
    float array), ``coef_`` (the linear part: risk = ``pipeline_.transform(X) @ coef_`` up to a constant),
    ``alpha_``, ``model_``, ``risk_median_``.
    """

    def __init__(
        self,
        modality: str,
        l1_ratio: float = 0.5,
        alphas: Sequence[float] | None = None,
        n_alphas: int = 50,
        cv_folds: int = 5,
        max_features: int | None = None,
        *,
        alpha_min_ratio: float = 0.01,
        preprocessing: str = "auto",
        max_missing: float = 0.5,
        clinical_types: Mapping[str, Any] | None = None,
        task: str = "auto",
        random_state: int = 0,
        one_se: bool = False,
        fixed_alpha: float | None = None,
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
        self.one_se = one_se
        self.fixed_alpha = fixed_alpha
        self.name = f"coxnet_{modality}"

    # -- survival
    def _coxnet(self, X: np.ndarray, y: np.ndarray, alphas: np.ndarray | None, baseline: bool):
        """Fit a Coxnet path; on a numerical blow-up at the small-alpha end, shorten the path and retry."""
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

    def _fit_fixed_survival(self, Xt: np.ndarray, y: np.ndarray) -> None:
        """The path from the data's own alpha_max down to ``fixed_alpha`` (no inner search); its last point."""
        fixed = float(self.fixed_alpha)
        auto = np.asarray(self._coxnet(Xt, y, None, baseline=False).alphas_, dtype=np.float64)
        self.model_ = self._coxnet(Xt, y, np.r_[auto[auto > fixed], fixed], baseline=True)
        alphas = np.asarray(self.model_.alphas_, dtype=np.float64)  # shortened only after a numerical blow-up
        self.alpha_ = float(alphas[-1])
        self.cv_cindex_, self.cv_cindex_path_ = float("nan"), pd.Series(dtype=np.float64, name="inner_cindex")
        self.coef_ = pd.Series(np.asarray(self.model_.coef_)[:, -1], index=self.pipeline_.get_feature_names_out())

    def _fit_survival(self, X: pd.DataFrame, y: np.ndarray, strata: np.ndarray, make) -> None:
        self.pipeline_ = make().fit(X, y)
        Xt = self.pipeline_.transform(X)
        if self.fixed_alpha is not None:
            self._fit_fixed_survival(Xt, y)
            return
        grid = None if self.alphas is None else np.sort(np.asarray(self.alphas, dtype=np.float64))[::-1]
        self.model_ = self._coxnet(Xt, y, grid, baseline=True)
        alphas = np.asarray(self.model_.alphas_, dtype=np.float64)
        rows = []
        for tr, va in inner_splits(strata, self.cv_folds, self.random_state, survival=True):
            pipe = make().fit(X.iloc[tr], y[tr])
            net = self._coxnet(pipe.transform(X.iloc[tr]), y[tr], alphas, baseline=False)
            Xv = pipe.transform(X.iloc[va])
            ev, tv = y[va][y.dtype.names[0]], y[va][y.dtype.names[1]]
            try:
                rows.append([concordance_index_censored(ev, tv, net.predict(Xv, alpha=a))[0] for a in alphas])
            except NoComparablePairException:  # a small inner fold whose patients cannot be ordered: no vote
                continue
        if not rows:
            raise InsufficientTrainingData(f"{self.name}: no inner fold has a comparable pair of patients to choose "
                                           "alpha on")
        scores = np.asarray(rows, dtype=np.float64)
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))  # alphas descend: argmax keeps the largest among ties
        if self.one_se:  # the largest alpha within one standard error of the best mean inner C
            se = scores[:, best].std(ddof=1) / np.sqrt(len(scores))
            best = int(np.flatnonzero(mean >= mean[best] - se)[0])
        self.cv_cindex_path_ = pd.Series(mean, index=alphas, name="inner_cindex")
        self.alpha_ = float(alphas[best])
        self.cv_cindex_ = float(mean[best])
        self.coef_ = pd.Series(np.asarray(self.model_.coef_)[:, best], index=self.pipeline_.get_feature_names_out())

    # -- binary
    def _fit_binary(self, X: pd.DataFrame, y: np.ndarray, strata: np.ndarray, make) -> None:
        if self.fixed_alpha is not None:
            self.alpha_, self.cv_cindex_ = float(self.fixed_alpha), float("nan")
            self.cv_cindex_path_ = pd.Series(dtype=np.float64, name="inner_auc")
            self.pipeline_ = make().fit(X, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # saga ConvergenceWarning at weak penalties
                self.model_ = penalised_logistic(self.alpha_, self.l1_ratio, self.random_state).fit(
                    self.pipeline_.transform(X), y)
            self.coef_ = pd.Series(self.model_.coef_.ravel(), index=self.pipeline_.get_feature_names_out())
            return
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
                    clf = penalised_logistic(float(C), self.l1_ratio, self.random_state).fit(Xtr, y[tr])
                    p = clf.predict_proba(Xv)[:, 1]
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
            self.model_ = penalised_logistic(self.alpha_, self.l1_ratio, self.random_state).fit(Xt, y)
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
        return step_functions_at(self.model_.predict_survival_function(Xt, alpha=self.alpha_), times)

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
            "one_se": self.one_se,
            "fixed_alpha": self.fixed_alpha,
        }

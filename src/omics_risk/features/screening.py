"""Fold-internal feature screening: univariate tests and forest importance as scikit-learn selectors.

The seed study (NCT07291921) screens plasma metabolites with Wilcoxon tests and random-forest importance before
modelling. Done on the whole cohort, that screening leaks the outcome into every later cross-validation fold and
inflates the C-index (``tests/features/test_screening.py`` shows how much). Here each screen is a selector that
learns from ``y`` inside ``fit`` only, so it sits in a :class:`sklearn.pipeline.Pipeline` and is refitted on
each training fold, then shipped with the model.

Targets: a survival ``y`` is a scikit-survival structured array (``sksurv.util.Surv.from_arrays(event, time)``);
a binary ``y`` is a 0/1 (or any two-valued) vector, the larger value being the positive class.

Every selector exposes ``scores_`` (higher = stronger), ``pvalues_``, ``qvalues_`` (Benjamini-Hochberg, via
statsmodels), ``support_`` / ``get_support()`` and ``get_feature_names_out()``, and keeps pandas DataFrames
(columns and index) on ``transform``. Selection rule: the ``k`` best features when ``k`` is set, otherwise every
feature with ``q < alpha``; in both cases at least ``min_features`` (the best ones) are kept so that a fold never
ends up with zero features.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectorMixin
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data
from sksurv.ensemble import RandomSurvivalForest
from statsmodels.stats.multitest import multipletests

from omics_risk.features.clustering import ConsensusSubtypes

__all__ = [
    "SCREENING_METHODS",
    "FeatureScreen",
    "FrameSelector",
    "PermutationImportanceSelector",
    "UnivariateCoxSelector",
    "WilcoxonSelector",
    "bh_qvalues",
    "cox_univariate",
    "make_screener",
    "parse_target",
    "survival_groups",
]


# --------------------------------------------------------------------------------------------------- helpers
def parse_target(y: Any) -> tuple[str, np.ndarray, np.ndarray | None]:
    """``("survival", event, time)`` for a structured survival array, ``("binary", labels01, None)`` otherwise."""
    if y is None:
        raise ValueError("this selector requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.dtype.names is not None:
        if len(arr.dtype.names) != 2:
            raise ValueError(
                f"a survival y must have two fields (event, time), got {arr.dtype.names}; build it with "
                "sksurv.util.Surv.from_arrays(event, time)"
            )
        ev_name, t_name = arr.dtype.names
        event = arr[ev_name].astype(bool)
        time = arr[t_name].astype(np.float64)
        if np.isnan(time).any():
            raise ValueError("survival y has missing times; drop those patients before fitting")
        return "survival", event, time
    arr = arr.ravel()
    if pd.isna(arr).any():
        raise ValueError("binary y has missing labels; drop those patients before fitting")
    levels = np.unique(arr)
    if len(levels) != 2:
        raise ValueError(
            f"y must be a survival structured array or have exactly two classes, got {len(levels)} "
            f"distinct values ({levels[:5].tolist()}...)"
        )
    return "binary", (arr == levels[1]).astype(np.int64), None


def survival_groups(event: np.ndarray, time: np.ndarray, horizon: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Two groups for a two-sample test on a survival outcome: event at or before ``horizon`` (early event) against
    event-free beyond it; patients censored before the horizon have unknown status and are left out.

    ``horizon=None`` uses the median event time of the training patients (half of the events count as early).
    """
    if horizon is None:
        if not event.any():
            raise ValueError("no event in the training fold: a survival screen needs at least two events")
        horizon = float(np.median(time[event]))
    early = event & (time <= horizon)
    late = time > horizon
    if early.sum() < 2 or late.sum() < 2:
        raise ValueError(
            f"horizon {horizon:g} leaves {int(early.sum())} early-event and {int(late.sum())} "
            "event-free patients; need at least 2 in each: choose another horizon"
        )
    return early, late, float(horizon)


def bh_qvalues(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (statsmodels ``fdr_bh``); NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def _nan_patterns(X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Columns grouped by which rows they observe: ``[(row_mask, column_indices), ...]``, so tests that cannot
    take NaN run vectorised on each group (usually one or two groups: all rows, rows with the sample)."""
    obs = ~np.isnan(X)
    if obs.all():
        return [(np.ones(X.shape[0], bool), np.arange(X.shape[1]))]
    patterns, inverse = np.unique(obs.T, axis=0, return_inverse=True)
    return [(patterns[g], np.flatnonzero(inverse.ravel() == g)) for g in range(len(patterns))]


# ------------------------------------------------------------------------------------------ univariate Cox
def cox_univariate(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    ties: str = "efron",
    test: str = "wald",
    max_iter: int = 50,
    tol: float = 1e-9,
) -> pd.DataFrame:
    """One Cox proportional-hazards model per column of ``X``, all fitted at once (vectorised Newton-Raphson).

    Returns a frame with one row per column: ``coef`` (log hazard ratio per unit), ``se``, ``z`` and ``p``.
    ``test="wald"`` fits each model (Efron or Breslow ties, as lifelines' ``CoxPHFitter``); ``test="score"``
    is the one-pass score (log-rank) test at beta = 0. Rows with NaN are left out per column; a column with
    fewer than two events or no spread gets NaN.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    if test not in ("wald", "score"):
        raise ValueError(f"test must be 'wald' or 'score', got {test!r}")
    X = np.asarray(X, dtype=np.float64)
    out = np.full((X.shape[1], 4), np.nan)
    for rows, cols in _nan_patterns(X):
        if rows.sum() >= 3:
            out[cols] = _cox_block(
                X[np.ix_(rows, cols)], time[rows], event[rows].astype(bool), ties, test, max_iter, tol
            )
    return pd.DataFrame(out, columns=["coef", "se", "z", "p"])


def _cox_block(
    X: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str, test: str, max_iter: int, tol: float
) -> np.ndarray:
    p = X.shape[1]
    res = np.full((p, 4), np.nan)
    sd = X.std(axis=0)
    usable = sd > 1e-12 * (np.abs(X).max(axis=0) + 1e-300)
    if event.sum() < 2 or not usable.any():
        return res
    cols = np.flatnonzero(usable)
    xs = (X[:, cols] - X[:, cols].mean(axis=0)) / sd[cols]  # standardised: z and p do not change, Newton is stable
    order = np.argsort(time, kind="stable")
    xs, t, ev = xs[order], time[order], event[order]
    ev_rows = np.flatnonzero(ev)
    ev_t = t[ev_rows]
    starts = np.flatnonzero(np.r_[True, ev_t[1:] != ev_t[:-1]])  # first event row of each distinct event time
    d = np.diff(np.r_[starts, len(ev_rows)])  # events per distinct time
    group = np.repeat(np.arange(len(starts)), d)
    rank_in_tie = np.arange(len(ev_rows)) - starts[group]
    frac = (rank_in_tie / d[group])[:, None] if ties == "efron" else np.zeros((len(ev_rows), 1))
    risk_start = np.searchsorted(t, ev_t[starts], side="left")  # risk set: time >= event time
    x_ev = xs[ev_rows]

    def derivatives(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = xs * beta
        w = np.exp(eta - eta.max(axis=0))  # common shift per column cancels in every ratio
        sums = []
        for a in (w, w * xs, w * xs * xs):
            risk = np.cumsum(a[::-1], axis=0)[::-1][risk_start][group]  # over the risk set, per event
            tied = np.add.reduceat(a[ev_rows], starts, axis=0)[group]  # over the tied events, per event
            sums.append(risk - frac * tied)
        m1 = sums[1] / sums[0]
        grad = (x_ev - m1).sum(axis=0)
        info = (sums[2] / sums[0] - m1 * m1).sum(axis=0)
        return grad, info

    beta = np.zeros(len(cols))
    grad, info = derivatives(beta)
    if test == "score":
        z = grad / np.sqrt(info)
        res[cols, 2] = z
        res[cols, 0] = 0.0
    else:
        for _ in range(max_iter):
            step = np.clip(grad / np.maximum(info, 1e-12), -2.0, 2.0)  # capped Newton step on a concave likelihood
            beta = np.clip(beta + step, -30.0, 30.0)
            grad, info = derivatives(beta)
            if np.max(np.abs(step)) < tol:
                break
        se = 1.0 / np.sqrt(np.maximum(info, 1e-300))
        z = beta / se
        res[cols, 0] = beta / sd[cols]
        res[cols, 1] = se / sd[cols]
        res[cols, 2] = z
    res[cols, 3] = 2.0 * stats.norm.sf(np.abs(res[cols, 2]))
    return res


# --------------------------------------------------------------------------------------------- base classes
class FrameSelector(SelectorMixin, BaseEstimator):
    """A feature selector that tolerates NaN and returns a DataFrame (same index, kept columns) for DataFrame input.

    Subclasses set ``support_`` in ``fit``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "support_")
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=None)
            return X.loc[:, self.support_]
        return super().transform(X)


class _ScreeningSelector(FrameSelector):
    """Shared selection rule: top-``k`` or ``q < alpha``, never fewer than ``min_features``."""

    _rank_by_pvalue = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _validate_rule(self) -> None:
        if self.k is not None and (not isinstance(self.k, int | np.integer) or self.k < 1):
            raise ValueError(f"k must be a positive integer or None, got {self.k!r}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")
        if self.min_features < 0:
            raise ValueError(f"min_features must be >= 0, got {self.min_features!r}")

    def summary(self) -> pd.DataFrame:
        """One row per input feature, best first: score, p, q, selected, and the test's effect columns
        (``log2fc``/``auc``, ``coef``/``z`` or ``importance_std``), e.g. for a volcano plot or a report table."""
        check_is_fitted(self, "support_")
        cols: dict[str, Any] = {
            "rank": self.ranking_,
            "score": self.scores_,
            "p": self.pvalues_,
            "q": self.qvalues_,
            "selected": self.support_,
        }
        for attr in ("log2fc_", "auc_", "coef_", "z_", "importances_std_"):
            if hasattr(self, attr):
                cols[attr.rstrip("_")] = getattr(self, attr)
        names = getattr(self, "feature_names_in_", None)
        index = pd.Index(names if names is not None else [f"x{i}" for i in range(len(self.support_))], name="feature")
        return pd.DataFrame(cols, index=index).sort_values("rank")

    def _select(self) -> None:
        """Set ``qvalues_``, ``ranking_`` (0 = best) and ``support_`` from ``pvalues_`` and ``scores_``."""
        self.qvalues_ = bh_qvalues(self.pvalues_)
        p = np.where(np.isfinite(self.pvalues_), self.pvalues_, np.inf)
        s = np.where(np.isfinite(self.scores_), self.scores_, -np.inf)
        order = np.lexsort((-s, p)) if self._rank_by_pvalue else np.lexsort((p, -s))
        self.ranking_ = np.empty(len(order), dtype=np.int64)
        self.ranking_[order] = np.arange(len(order))
        if self.k is not None:
            n_keep = min(int(self.k), len(order))
        else:
            n_keep = int(np.sum(np.nan_to_num(self.qvalues_, nan=1.0) < self.alpha))
        n_keep = max(n_keep, min(int(self.min_features), len(order)))
        self.support_ = np.zeros(len(order), dtype=bool)
        self.support_[order[:n_keep]] = True


# ------------------------------------------------------------------------------------------------ selectors
class WilcoxonSelector(_ScreeningSelector):
    """Wilcoxon rank-sum (Mann-Whitney U) test per feature between two outcome groups, with BH-FDR.

    Binary ``y``: positive against negative class. Survival ``y``: event at or before ``horizon`` against
    event-free beyond it (patients censored earlier are left out; ``horizon=None`` = median training event time,
    stored in ``horizon_``).

    Fitted: ``scores_`` (-log10 p), ``pvalues_``, ``qvalues_``, ``auc_`` (U / (n1 n0): the probability that a
    positive/early patient has the higher value), ``log2fc_`` (positive minus negative group mean when
    ``log_input`` -- the data are already log2, so this is the log2 fold change -- else log2 of the ratio of
    means), ``support_``.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        k: int | None = None,
        min_features: int = 1,
        horizon: float | None = None,
        log_input: bool = True,
    ):
        self.alpha = alpha
        self.k = k
        self.min_features = min_features
        self.horizon = horizon
        self.log_input = log_input

    def fit(self, X: Any, y: Any) -> WilcoxonSelector:
        self._validate_rule()
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        kind, a, b = parse_target(y)
        if len(a) != Xv.shape[0]:
            raise ValueError(f"X has {Xv.shape[0]} rows but y has {len(a)}")
        if kind == "survival":
            pos, neg, self.horizon_ = survival_groups(a, b, self.horizon)
        else:
            pos, neg, self.horizon_ = a == 1, a == 0, None
        x1, x0 = Xv[pos], Xv[neg]
        with np.errstate(all="ignore"), _quiet():
            res = stats.mannwhitneyu(x1, x0, axis=0, nan_policy="omit", alternative="two-sided")
        n1 = (~np.isnan(x1)).sum(axis=0)
        n0 = (~np.isnan(x0)).sum(axis=0)
        with np.errstate(all="ignore"):
            self.auc_ = np.asarray(res.statistic, dtype=np.float64) / (n1 * n0)
            self.pvalues_ = np.where((n1 > 0) & (n0 > 0), np.asarray(res.pvalue, dtype=np.float64), np.nan)
            m1, m0 = np.nanmean(x1, axis=0), np.nanmean(x0, axis=0)
            self.log2fc_ = m1 - m0 if self.log_input else np.log2(m1 / m0)
            self.scores_ = -np.log10(np.maximum(self.pvalues_, np.finfo(float).tiny))
        self.n_groups_ = (int(pos.sum()), int(neg.sum()))
        self._select()
        return self


class UnivariateCoxSelector(_ScreeningSelector):
    """One Cox model per feature (vectorised; :func:`cox_univariate`), BH-FDR on its p-values.

    Fitted: ``scores_`` (|z|), ``pvalues_``, ``qvalues_``, ``coef_`` (log hazard ratio per unit), ``z_``,
    ``support_``. ``test="wald"`` matches lifelines' ``CoxPHFitter`` p-values; ``"score"`` is faster (one pass).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        k: int | None = None,
        min_features: int = 1,
        test: str = "wald",
        ties: str = "efron",
    ):
        self.alpha = alpha
        self.k = k
        self.min_features = min_features
        self.test = test
        self.ties = ties

    def fit(self, X: Any, y: Any) -> UnivariateCoxSelector:
        self._validate_rule()
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        kind, event, time = parse_target(y)
        if kind != "survival" or time is None:
            raise ValueError("UnivariateCoxSelector needs a survival y: sksurv.util.Surv.from_arrays(event, time)")
        if len(event) != Xv.shape[0]:
            raise ValueError(f"X has {Xv.shape[0]} rows but y has {len(event)}")
        res = cox_univariate(Xv, time, event, ties=self.ties, test=self.test)
        self.coef_ = res["coef"].to_numpy()
        self.z_ = res["z"].to_numpy()
        self.pvalues_ = res["p"].to_numpy()
        self.scores_ = np.abs(self.z_)
        self._select()
        return self


class PermutationImportanceSelector(_ScreeningSelector):
    """Random-forest permutation importance on a held-out part of the training data; keeps the top ``k``.

    A :class:`sksurv.ensemble.RandomSurvivalForest` (survival ``y``, importance = drop in Harrell's C) or a
    :class:`~sklearn.ensemble.RandomForestClassifier` (binary ``y``, drop in ``scoring``, default ROC AUC) is
    fitted on ``1 - holdout`` of the training rows; :func:`sklearn.inspection.permutation_importance` is computed
    on the rest (stratified by event/class). NaN is filled with training medians for the forest only.

    Fitted: ``scores_`` (mean importance), ``importances_std_``, ``pvalues_`` (one-sided t-test of the
    ``n_repeats`` importances against 0: a heuristic that orders features, not a calibrated test), ``qvalues_``,
    ``estimator_`` (unless ``keep_estimator=False``), ``support_``. With ``k=None`` features with ``q < alpha``
    are kept.
    """

    _rank_by_pvalue = False

    def __init__(
        self,
        *,
        k: int | None = 20,
        alpha: float = 0.05,
        min_features: int = 1,
        n_estimators: int = 200,
        min_samples_leaf: int = 5,
        max_features: str | float | int | None = "sqrt",
        holdout: float = 0.3,
        n_repeats: int = 10,
        scoring: str | None = None,
        random_state: int | None = None,
        n_jobs: int = 1,
        keep_estimator: bool = True,
    ):
        self.k = k
        self.alpha = alpha
        self.min_features = min_features
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.holdout = holdout
        self.n_repeats = n_repeats
        self.scoring = scoring
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.keep_estimator = keep_estimator

    def fit(self, X: Any, y: Any) -> PermutationImportanceSelector:
        self._validate_rule()
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout!r}")
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        kind, a, _ = parse_target(y)
        if len(a) != Xv.shape[0]:
            raise ValueError(f"X has {Xv.shape[0]} rows but y has {len(a)}")
        with np.errstate(all="ignore"), _quiet():
            med = np.nanmedian(Xv, axis=0)
        Xf = np.where(np.isnan(Xv), np.nan_to_num(med)[None, :], Xv)
        seed = np.random.RandomState(self.random_state)
        split_seed, forest_seed, perm_seed = (int(s) for s in seed.randint(0, 2**31 - 1, 3))
        idx_fit, idx_hold = train_test_split(
            np.arange(len(a)), test_size=self.holdout, stratify=a, random_state=split_seed
        )
        if kind == "survival":
            target = np.asarray(y)
            forest = RandomSurvivalForest(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                low_memory=True,
                random_state=forest_seed,
                n_jobs=self.n_jobs,
            )
            scoring = self.scoring
        else:
            target = a
            forest = RandomForestClassifier(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                random_state=forest_seed,
                n_jobs=self.n_jobs,
            )
            scoring = self.scoring or "roc_auc"
        forest.fit(Xf[idx_fit], target[idx_fit])
        r = permutation_importance(
            forest,
            Xf[idx_hold],
            target[idx_hold],
            scoring=scoring,
            n_repeats=self.n_repeats,
            random_state=perm_seed,
            n_jobs=self.n_jobs,
        )
        imp = r.importances  # features x repeats
        if self.keep_estimator:  # off inside saved models: the forest is large and only ranked the features
            self.estimator_ = forest
        self.scores_ = r.importances_mean
        self.importances_std_ = r.importances_std
        sd = imp.std(axis=1, ddof=1) if self.n_repeats > 1 else np.zeros(len(imp))
        with np.errstate(all="ignore"):
            t = self.scores_ / (sd / np.sqrt(self.n_repeats))
        t = np.where(sd > 0, t, np.where(self.scores_ > 0, np.inf, 0.0))
        self.pvalues_ = stats.t.sf(t, df=max(self.n_repeats - 1, 1))
        self._select()
        return self


# ------------------------------------------------------------------------------------------- combinations
#: Names a screening spec may list under ``methods`` (see :func:`make_screener`).
SCREENING_METHODS = ("cox", "wilcoxon", "random_forest", "consensus_clusters")
COMBINE_RULES = ("union", "intersection", "sequential")


class FeatureScreen(TransformerMixin, BaseEstimator):
    """Several screens as one fold-fitted step, optionally plus consensus-cluster subtype columns.

    ``selectors``: ``[(name, selector), ...]`` (the selectors above). ``combine``: ``"union"`` (a feature kept by
    any selector; each sees every feature), ``"intersection"`` (kept by all; when none is, the ``min_features``
    with the best mean rank are kept) or ``"sequential"`` (each selector screens what the previous one kept).
    ``clusters``: a :class:`~omics_risk.features.clustering.ConsensusSubtypes` fitted on ``cluster_input``
    (``"all"`` input features or the ``"selected"`` ones); its one-hot subtype columns are appended to the kept
    features (its ``mode="append"``) or replace them (``"replace"``). No selector: every feature is kept.

    DataFrame in, DataFrame out (index kept); arrays in, arrays out. Fitted: ``support_`` (kept input columns),
    ``selectors_`` (fitted clones), ``clusters_``, ``feature_names_out_``.
    """

    def __init__(
        self,
        selectors: Sequence[tuple[str, Any]] = (),
        *,
        combine: str = "union",
        clusters: ConsensusSubtypes | None = None,
        cluster_input: str = "all",
        min_features: int = 1,
    ):
        self.selectors = selectors
        self.combine = combine
        self.clusters = clusters
        self.cluster_input = cluster_input
        self.min_features = min_features

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = bool(self.selectors)
        return tags

    def fit(self, X: Any, y: Any = None) -> FeatureScreen:
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_RULES)}, got {self.combine!r}")
        if self.cluster_input not in ("all", "selected"):
            raise ValueError(f"cluster_input must be 'all' or 'selected', got {self.cluster_input!r}")
        if not self.selectors and self.clusters is None:
            raise ValueError("a FeatureScreen needs at least one selector or clusters")
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        p = Xv.shape[1]
        self.selectors_ = [(name, clone(sel)) for name, sel in self.selectors]
        if not self.selectors_:
            support = np.ones(p, dtype=bool)
        elif self.combine == "sequential":
            cols = np.arange(p)
            for _, sel in self.selectors_:
                sel.fit(Xv[:, cols], y)
                cols = cols[sel.get_support()]
            support = np.zeros(p, dtype=bool)
            support[cols] = True
        else:
            masks = np.vstack([sel.fit(Xv, y).get_support() for _, sel in self.selectors_])
            support = masks.any(axis=0) if self.combine == "union" else masks.all(axis=0)
            if support.sum() < min(self.min_features, p):
                mean_rank = np.mean([sel.ranking_ for _, sel in self.selectors_], axis=0)
                support[np.argsort(mean_rank, kind="stable")[: self.min_features]] = True
        self.support_ = support
        self.clusters_ = None
        if self.clusters is not None:
            cin = Xv if self.cluster_input == "all" else Xv[:, support]
            self.clusters_ = clone(self.clusters).fit(cin)
        names = np.asarray(self.feature_names_in_ if hasattr(self, "feature_names_in_")
                           else [f"x{i}" for i in range(p)], dtype=object)
        kept = [] if self.clusters_ is not None and self.clusters_.mode == "replace" else list(names[support])
        subtypes = self.clusters_.subtype_names() if self.clusters_ is not None else []
        self.feature_names_out_ = np.asarray([*kept, *subtypes], dtype=object)
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "support_")
        Xv = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        parts = [] if self.clusters_ is not None and self.clusters_.mode == "replace" else [Xv[:, self.support_]]
        if self.clusters_ is not None:
            cin = Xv if self.cluster_input == "all" else Xv[:, self.support_]
            parts.append(self.clusters_.membership(cin))
        out = np.hstack(parts)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=list(self.feature_names_out_))
        return out

    def get_support(self) -> np.ndarray:
        """Which input columns are kept (subtype columns come on top)."""
        check_is_fitted(self, "support_")
        return self.support_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "support_")
        names = _check_feature_names_in(self, input_features)
        kept = [] if self.clusters_ is not None and self.clusters_.mode == "replace" else list(names[self.support_])
        subtypes = self.clusters_.subtype_names() if self.clusters_ is not None else []
        return np.asarray([*kept, *subtypes], dtype=object)


_SPEC_KEYS = {"methods", "combine", "k", "random_state", "cluster_input", "min_features", *SCREENING_METHODS}


def make_screener(spec: Mapping[str, Any], task: str = "survival") -> FeatureScreen:
    """An unfitted :class:`FeatureScreen` from a plain spec (a config group's ``spec``; see docs/configuration.md).

    Keys: ``methods`` (a list from :data:`SCREENING_METHODS`), ``combine`` (union | intersection | sequential),
    ``k`` (default top-k of every selector; null = keep ``q < alpha``), ``random_state`` (seeds the forest and
    the clustering), ``cluster_input``, ``min_features``, and one mapping per method with its own settings
    (``cox`` -> :class:`UnivariateCoxSelector`, ``wilcoxon`` -> :class:`WilcoxonSelector`, ``random_forest`` ->
    :class:`PermutationImportanceSelector`, ``consensus_clusters`` -> :class:`ConsensusSubtypes`), e.g.
    ``{"methods": ["wilcoxon", "random_forest"], "combine": "union", "k": 20, "random_forest": {"n_estimators": 100}}``.
    ``task`` (``survival`` or ``binary``) rejects a Cox screen on a binary endpoint.
    """
    spec = dict(spec)
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown screening setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_SPEC_KEYS))})")
    methods = spec.get("methods") or []
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in SCREENING_METHODS]
    if bad or not methods:
        raise ValueError(f"screening methods must be a non-empty list from {', '.join(SCREENING_METHODS)}, "
                         f"got {methods!r}")
    if "cox" in methods and task != "survival":
        raise ValueError(f"the cox screen needs a survival endpoint, this one is {task}: use wilcoxon or random_forest")
    k, seed = spec.get("k"), spec.get("random_state", 0)
    k = None if k is None else int(k)

    def opts(name: str) -> dict[str, Any]:
        return dict(spec.get(name) or {})

    selectors: list[tuple[str, Any]] = []
    for m in methods:
        if m == "cox":
            selectors.append((m, UnivariateCoxSelector(**{"k": k, **opts(m)})))
        elif m == "wilcoxon":
            selectors.append((m, WilcoxonSelector(**{"k": k, **opts(m)})))
        elif m == "random_forest":
            rf = {"k": k, "random_state": seed, "keep_estimator": False, **opts(m)}
            selectors.append((m, PermutationImportanceSelector(**rf)))
    clusters = (ConsensusSubtypes(**{"random_state": seed, **opts("consensus_clusters")})
                if "consensus_clusters" in methods else None)
    return FeatureScreen(selectors, combine=str(spec.get("combine", "union")), clusters=clusters,
                         cluster_input=str(spec.get("cluster_input", "all")),
                         min_features=int(spec.get("min_features", 1)))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy/scipy warnings about empty slices and small samples inside a block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield

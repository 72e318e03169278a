"""Consensus k-means (Monti et al. 2003) for unsupervised patient subgroups, e.g. metabolic phenotypes.

k-means alone always returns k groups, stable or not. Consensus clustering measures stability: run k-means on
many subsamples of the patients (and optionally of the features), count how often two patients that were
sampled together land in the same cluster (the consensus matrix), and prefer the k whose consensus values are
close to 0 or 1. Two summaries per k:

- the CDF of the consensus values and the area under it, with its relative increase delta(k) (Monti's elbow);
- PAC, the proportion of ambiguous clustering = CDF(0.9) - CDF(0.1) (Senbabaoglu et al. 2014), which chooses k
  more reliably: ``best_k_`` is the k with the lowest PAC (the smallest such k on ties).

Final labels come from average-linkage hierarchical clustering of 1 - consensus (scipy), and ``predict``
assigns new patients to the nearest cluster centroid in the training feature space, so a fitted model
scores new patients without refitting. Fit it on training folds (it is an estimator like any other).

:class:`ConsensusSubtypes` turns the subgroups into model inputs (the seed trial NCT07291921 clusters plasma
metabolomes before its random-forest and Wilcoxon screens): fitted on the training rows, it adds one-hot subtype
membership columns (nearest training centroid) to, or in place of, the features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from omics_risk.progress import progress_bar

__all__ = ["ConsensusKMeans", "ConsensusSubtypes", "consensus_cdf", "plot_consensus"]


def consensus_cdf(
    consensus: np.ndarray, pac_bounds: tuple[float, float] = (0.1, 0.9)
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(sorted upper-triangle consensus values, their empirical CDF, area under the CDF, PAC)."""
    vals = np.sort(consensus[np.triu_indices_from(consensus, k=1)])
    cdf = np.arange(1, len(vals) + 1) / len(vals)
    area = float(np.sum(np.diff(vals) * cdf[:-1])) if len(vals) > 1 else 0.0
    lo, hi = pac_bounds
    pac = float(np.searchsorted(vals, hi, side="right") - np.searchsorted(vals, lo, side="right")) / max(len(vals), 1)
    return vals, cdf, area, pac


class ConsensusKMeans(ClusterMixin, BaseEstimator):
    """Consensus k-means over ``ks`` with ``n_resamples`` subsamples of ``item_fraction`` of the rows (and
    ``feature_fraction`` of the columns).

    Fitted: ``best_k_``, ``labels_`` (0..best_k-1, ordered by cluster size, largest first), ``consensus_`` (the
    best k's matrix), ``consensus_by_k_``, ``labels_by_k_``, ``pac_`` / ``area_`` / ``delta_area_`` (dicts k ->
    value), ``cluster_centers_`` (per final cluster, in the input feature space). ``n_clusters`` fixes k instead
    of choosing it by PAC (the diagnostics are still computed for every k in ``ks``).
    """

    def __init__(
        self,
        ks: Sequence[int] = (2, 3, 4, 5, 6),
        *,
        n_clusters: int | None = None,
        n_resamples: int = 50,
        item_fraction: float = 0.8,
        feature_fraction: float = 1.0,
        pac_bounds: tuple[float, float] = (0.1, 0.9),
        linkage_method: str = "average",
        n_init: int = 3,
        random_state: int | None = None,
        progress: bool = False,
    ):
        self.ks = ks
        self.n_clusters = n_clusters
        self.n_resamples = n_resamples
        self.item_fraction = item_fraction
        self.feature_fraction = feature_fraction
        self.pac_bounds = pac_bounds
        self.linkage_method = linkage_method
        self.n_init = n_init
        self.random_state = random_state
        self.progress = progress

    def _validate(self, n: int, p: int) -> list[int]:
        if self.n_clusters is not None and int(self.n_clusters) < 2:
            raise ValueError(f"n_clusters must be >= 2 (or None to choose k by PAC), got {self.n_clusters!r}")
        ks = sorted({int(k) for k in self.ks} | ({int(self.n_clusters)} if self.n_clusters else set()))
        if not ks or ks[0] < 2:
            raise ValueError(f"ks must hold integers >= 2, got {self.ks!r}")
        n_sub = round(self.item_fraction * n)
        if not 0 < self.item_fraction <= 1 or n_sub <= ks[-1]:
            raise ValueError(
                f"item_fraction {self.item_fraction} of {n} rows gives {n_sub} rows per resample; "
                f"need more than the largest k ({ks[-1]})"
            )
        if not 0 < self.feature_fraction <= 1:
            raise ValueError(f"feature_fraction must be in (0, 1], got {self.feature_fraction!r}")
        if self.n_resamples < 2:
            raise ValueError(f"n_resamples must be >= 2, got {self.n_resamples!r}")
        return ks

    def fit(self, X: Any, y: Any = None) -> ConsensusKMeans:
        Xv = validate_data(self, X, dtype=np.float64)  # k-means needs complete data: impute first
        n, p = Xv.shape
        ks = self._validate(n, p)
        rng = np.random.default_rng(self.random_state)
        together = {k: np.zeros((n, n)) for k in ks}
        sampled = np.zeros((n, n))
        with threadpool_limits(1):  # many tiny k-means fits: OpenMP threads cost far more than they save
            self._resample(Xv, ks, rng, together, sampled)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.consensus_by_k_ = {k: np.where(sampled > 0, together[k] / sampled, 0.0) for k in ks}
        for m in self.consensus_by_k_.values():
            np.fill_diagonal(m, 1.0)
        self.cdf_, self.area_, self.pac_, self.delta_area_ = {}, {}, {}, {}
        for i, k in enumerate(ks):
            vals, cdf, area, pac = consensus_cdf(self.consensus_by_k_[k], self.pac_bounds)
            self.cdf_[k], self.area_[k], self.pac_[k] = (vals, cdf), area, pac
            prev = max(self.area_[j] for j in ks[:i]) if i else None  # relative gain over the best smaller k
            self.delta_area_[k] = area if prev is None else (area - prev) / prev if prev > 0 else 0.0
        self.labels_by_k_ = {k: self._cut(self.consensus_by_k_[k], k) for k in ks}
        self.best_k_ = int(self.n_clusters) if self.n_clusters else min(ks, key=lambda k: (round(self.pac_[k], 12), k))
        self.consensus_ = self.consensus_by_k_[self.best_k_]
        self.labels_ = self.labels_by_k_[self.best_k_]
        self.cluster_centers_ = np.vstack([Xv[self.labels_ == c].mean(axis=0) for c in range(self.best_k_)])
        self.order_ = self._order(self.consensus_, self.labels_)
        return self

    def _resample(
        self,
        Xv: np.ndarray,
        ks: list[int],
        rng: np.random.Generator,
        together: dict[int, np.ndarray],
        sampled: np.ndarray,
    ) -> None:
        """Accumulate co-clustering counts per k and co-sampling counts over ``n_resamples`` subsamples."""
        n, p = Xv.shape
        n_items = round(self.item_fraction * n)
        n_feats = max(1, round(self.feature_fraction * p))
        for _ in progress_bar(range(self.n_resamples), desc="consensus k-means", disable=not self.progress):
            rows = np.sort(rng.choice(n, n_items, replace=False))
            cols = np.sort(rng.choice(p, n_feats, replace=False)) if n_feats < p else np.arange(p)
            sub = Xv[np.ix_(rows, cols)]
            ind = np.zeros(n)
            ind[rows] = 1.0
            sampled += np.outer(ind, ind)
            for k in ks:
                km = KMeans(n_clusters=k, n_init=self.n_init, random_state=int(rng.integers(2**31 - 1)))
                lab = km.fit_predict(sub)
                onehot = np.zeros((n, k))
                onehot[rows, lab] = 1.0
                together[k] += onehot @ onehot.T

    def _cut(self, consensus: np.ndarray, k: int) -> np.ndarray:
        """Hierarchical clustering of 1 - consensus into k clusters, relabelled by size (largest = 0)."""
        dist = squareform(1.0 - consensus, checks=False)
        raw = fcluster(linkage(dist, method=self.linkage_method), t=k, criterion="maxclust") - 1
        ids, first, counts = np.unique(raw, return_index=True, return_counts=True)
        rank = np.lexsort((first, -counts))  # by size, then by first appearance: deterministic
        relabel = np.empty(raw.max() + 1, dtype=np.int64)
        relabel[ids[rank]] = np.arange(len(ids))
        return relabel[raw]

    def _order(self, consensus: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Row order for a heatmap: by cluster, and by the dendrogram within each cluster."""
        leaves = leaves_list(linkage(squareform(1.0 - consensus, checks=False), method=self.linkage_method))
        pos = np.empty(len(leaves), dtype=np.int64)
        pos[leaves] = np.arange(len(leaves))
        return np.lexsort((pos, labels))

    def predict(self, X: Any) -> np.ndarray:
        """Nearest training-cluster centroid (Euclidean, in the input feature space)."""
        check_is_fitted(self, "cluster_centers_")
        Xv = validate_data(self, X, reset=False, dtype=np.float64)
        d = ((Xv[:, None, :] - self.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(X).labels_


class ConsensusSubtypes(TransformerMixin, BaseEstimator):
    """Consensus k-means subtypes of the training rows as one-hot features (Monti consensus, PAC-chosen k).

    ``fit`` fills NaN with training medians, standardises with training means and SDs (``standardize``) and fits
    :class:`ConsensusKMeans`; only the centroids, k and PAC per k are kept (not the training consensus matrix or
    labels, so a saved model holds no per-patient relations). ``transform`` assigns each row to its nearest
    centroid and returns ``X`` with ``k`` one-hot columns ``<prefix>_0 .. <prefix>_{k-1}`` appended
    (``mode="append"``) or the one-hot columns alone (``mode="replace"``). DataFrame in, DataFrame out.

    Fitted: ``best_k_``, ``ks_`` / ``pac_`` (arrays: PAC per candidate k), ``centers_`` (standardised space),
    ``center_``/``scale_`` (standardisation), ``medians_``, ``cluster_sizes_`` (training rows per subtype).
    """

    def __init__(
        self,
        ks: Sequence[int] = (2, 3, 4),
        *,
        n_clusters: int | None = None,
        n_resamples: int = 50,
        item_fraction: float = 0.8,
        feature_fraction: float = 1.0,
        n_init: int = 3,
        standardize: bool = True,
        mode: str = "append",
        prefix: str = "subtype",
        random_state: int | None = 0,
    ):
        self.ks = ks
        self.n_clusters = n_clusters
        self.n_resamples = n_resamples
        self.item_fraction = item_fraction
        self.feature_fraction = feature_fraction
        self.n_init = n_init
        self.standardize = standardize
        self.mode = mode
        self.prefix = prefix
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _prepared(self, Xv: np.ndarray) -> np.ndarray:
        Xf = np.where(np.isnan(Xv), self.medians_[None, :], Xv)
        return (Xf - self.center_) / self.scale_

    def fit(self, X: Any, y: Any = None) -> ConsensusSubtypes:
        if self.mode not in ("append", "replace"):
            raise ValueError(f"mode must be 'append' or 'replace', got {self.mode!r}")
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.medians_ = np.nan_to_num(np.nanmedian(Xv, axis=0))
        Xf = np.where(np.isnan(Xv), self.medians_[None, :], Xv)
        sd = Xf.std(axis=0)
        self.center_ = Xf.mean(axis=0) if self.standardize else np.zeros(Xv.shape[1])
        self.scale_ = np.where(sd > 0, sd, 1.0) if self.standardize else np.ones(Xv.shape[1])
        model = ConsensusKMeans(
            self.ks, n_clusters=self.n_clusters, n_resamples=self.n_resamples, item_fraction=self.item_fraction,
            feature_fraction=self.feature_fraction, n_init=self.n_init, random_state=self.random_state,
        ).fit(self._prepared(Xv))
        self.best_k_ = int(model.best_k_)
        self.ks_ = np.asarray(sorted(model.pac_), dtype=np.int64)
        self.pac_ = np.asarray([model.pac_[k] for k in self.ks_], dtype=np.float64)
        self.centers_ = np.asarray(model.cluster_centers_, dtype=np.float64)
        self.cluster_sizes_ = np.bincount(model.labels_, minlength=self.best_k_)
        return self

    def membership(self, X: Any) -> np.ndarray:
        """One-hot (n, k) nearest-centroid subtype membership; each row sums to 1."""
        check_is_fitted(self, "centers_")
        Xv = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        Z = self._prepared(Xv)
        d = ((Z[:, None, :] - self.centers_[None, :, :]) ** 2).sum(axis=2)
        return np.eye(self.best_k_)[d.argmin(axis=1)]

    def subtype_names(self) -> list[str]:
        check_is_fitted(self, "centers_")
        return [f"{self.prefix}_{c}" for c in range(self.best_k_)]

    def transform(self, X: Any) -> Any:
        onehot = self.membership(X)
        if isinstance(X, pd.DataFrame):
            hot = pd.DataFrame(onehot, index=X.index, columns=self.subtype_names())
            return hot if self.mode == "replace" else pd.concat([X, hot], axis=1)
        return onehot if self.mode == "replace" else np.hstack([np.asarray(X, dtype=np.float64), onehot])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "centers_")
        names = list(_check_feature_names_in(self, input_features)) if self.mode == "append" else []
        return np.asarray([*names, *self.subtype_names()], dtype=object)


def plot_consensus(model: ConsensusKMeans, path: str | Path) -> Path:
    """Save a figure: the consensus matrix of the chosen k ordered by cluster, the CDF per k and PAC per k."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state (Agg canvas)

    check_is_fitted(model, "consensus_")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(15, 4.6), layout="tight")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.15, 1, 1]})
    order = model.order_
    im = axes[0].imshow(model.consensus_[np.ix_(order, order)], cmap="Blues", vmin=0, vmax=1, interpolation="none")
    bounds = np.flatnonzero(np.diff(model.labels_[order])) + 0.5
    for b in bounds:
        axes[0].axhline(b, color="darkred", lw=0.8)
        axes[0].axvline(b, color="darkred", lw=0.8)
    axes[0].set_title(f"consensus matrix, k = {model.best_k_}")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    ks = sorted(model.pac_)
    for k in ks:
        vals, cdf = model.cdf_[k]
        axes[1].step(vals, cdf, where="post", label=f"k = {k}")
    lo, hi = model.pac_bounds
    axes[1].axvspan(lo, hi, color="grey", alpha=0.15, lw=0)
    axes[1].set_xlabel("consensus value")
    axes[1].set_ylabel("CDF")
    axes[1].set_title("consensus CDF (shaded: PAC window)")
    axes[1].legend(fontsize=8)
    axes[2].plot(ks, [model.pac_[k] for k in ks], "o-", color="black")
    axes[2].plot([model.best_k_], [model.pac_[model.best_k_]], "o", color="darkred", ms=10, mfc="none")
    axes[2].set_xticks(ks)
    axes[2].set_xlabel("k")
    axes[2].set_ylabel(f"PAC ({lo:g}-{hi:g})")
    axes[2].set_title("proportion of ambiguous clustering")
    fig.savefig(path, dpi=120)
    return path

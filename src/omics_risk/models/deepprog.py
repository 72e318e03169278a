"""DeepProg-style survival subtypes: per-omic autoencoders, Cox-selected latent nodes, clustering, classifiers.

Our own implementation of the published idea (Poirion et al., Genome Med 2021; no DeepProg code is used, it is
PolyForm licensed), fitted on the training fold only:

1. each omic (modality) is preprocessed (:mod:`omics_risk.models.tabular`: median imputation, scaling) and
   compressed by a small seeded autoencoder (torch; one ``tanh`` bottleneck layer by default);
2. a latent node is kept when its univariate Cox p-value (Wald, :func:`omics_risk.features.screening.cox_univariate`)
   is below ``pvalue_threshold``; if none is, the ``fallback_top_k`` nodes with the smallest p are kept;
3. the kept nodes of all omics (standardised; a patient lacking an omic contributes zeros = the training mean,
   since DeepProg itself assumes complete training data) are clustered into ``n_clusters`` subtypes by
   k-means (or a Gaussian mixture), ``n_clusters="auto"`` choosing k in 2..``max_clusters`` by silhouette;
4. subtypes are ordered by risk on the training fold (log-rank observed/expected events; binary endpoint:
   non-response rate), 0 = lowest risk; ``subtypes_`` holds the training labels and ``train_logrank_p_`` the
   multivariate log-rank p of the training split;
5. one classifier per omic (logistic regression, or an SVM with probabilities) learns the subtype from that
   omic's kept nodes, so a new patient with any subset of the omics is scored by averaging the subtype
   probabilities of the omics it has.

Risk score: ``sum_j P(subtype j) * j / (k - 1)``, the expected risk rank scaled to [0, 1], which is the
probability of the high-risk subtype for k = 2 (the default) and keeps the ordering information when k > 2.
Binary endpoints: P(response) = ``sum_j P(subtype j) * response rate of j`` and risk = 1 - P(response).
``predict_survival`` mixes the subtypes' training Kaplan-Meier curves with these probabilities (DeepProg yields
groups, not individual curves). Patients with none of the omics get the training-median risk, subtype -1 and
the overall Kaplan-Meier curve.

Device: the autoencoders are tiny, so ``device="cpu"`` is the default; ``auto`` picks CUDA when available
(float32 there too: mixed precision buys nothing at this size).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from lifelines.statistics import multivariate_logrank_test
from scipy import stats
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from omics_risk.data.multimodal import MultimodalData
from omics_risk.features.screening import cox_univariate
from omics_risk.models.autoencoder import AutoEncoder, encode, resolve_device, train_autoencoder
from omics_risk.models.tabular import (
    BaselineModel,
    describe_sequence,
    evaluate_step_functions,
    kaplan_meier_curve,
    make_tabular_pipeline,
    modality_frame,
    modality_present,
    outcome_of,
    preprocessing_kind,
    resolve_clinical_types,
)

# resolve_device and train_autoencoder live in omics_risk.models.autoencoder; re-exported for their users
__all__ = ["DeepProgStyle", "observed_expected", "resolve_device", "train_autoencoder"]

MIN_TRAIN = 10


def observed_expected(time: np.ndarray, event: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Log-rank observed / expected event ratio per group 0..k-1 (higher = riskier)."""
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    ev_times, d = np.unique(time[event], return_counts=True)
    n_risk = len(time) - np.searchsorted(np.sort(time), ev_times, side="left")
    ratio = np.full(k, np.nan)
    for g in range(k):
        tg = np.sort(time[labels == g])
        n_g = len(tg) - np.searchsorted(tg, ev_times, side="left")
        expected = float(np.sum(d * n_g / np.maximum(n_risk, 1)))
        observed = float(event[labels == g].sum())
        ratio[g] = observed / expected if expected > 0 else np.nan
    return ratio


@dataclass
class _Omic:
    """The fitted parts of one omic: preprocessing, autoencoder, kept nodes and their scaling, classifier."""

    pipeline: Pipeline
    autoencoder: AutoEncoder
    kept: np.ndarray
    pvalues: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    classifier: Any = None
    classes: np.ndarray | None = None

    def features(self, X: pd.DataFrame) -> np.ndarray:
        Z = encode(self.autoencoder, self.pipeline.transform(X))[:, self.kept]
        return (Z - self.mean) / self.scale


class DeepProgStyle(BaselineModel):
    """DeepProg-style subtype model (see the module docstring). Name ``deepprog``.

    Args:
        modalities: the omics to use (default: every modality of the training data); ``clinical`` is allowed.
        latent_dim: autoencoder bottleneck size per omic.
        hidden_dim: optional hidden layer around the bottleneck.
        epochs, batch_size, lr, weight_decay, dropout: autoencoder training (input dropout = denoising).
        pvalue_threshold: univariate Cox p below which a latent node is kept.
        fallback_top_k: nodes kept (smallest p) when none passes the threshold.
        n_clusters: number of subtypes, or ``"auto"`` (silhouette over 2..max_clusters).
        cluster_method: ``kmeans`` or ``gmm`` (diagonal Gaussian mixture). k-means is the default: on two-subtype
            test data it recovered the subtypes at least as well as the mixture in every seed tried.
        classifier: ``logistic`` or ``svm`` (SVC with Platt-scaled probabilities, fitted on inner folds).
        classifier_C: inverse regularisation of the classifier.
        preprocessing: ``{modality: kind}`` overrides (kinds of :func:`omics_risk.models.tabular.preprocessing_kind`).
        device: ``cpu`` | ``auto`` | ``cuda``.
        seed: seeds the autoencoders, clustering and classifiers.

    Capabilities (:meth:`BaselineModel.capabilities`): survival curves (subtype Kaplan-Meier mixtures) for a
    survival endpoint, P(response) for a binary one.
    """

    name = "deepprog"

    def __init__(
        self,
        modalities: Sequence[str] | None = None,
        latent_dim: int = 8,
        *,
        hidden_dim: int | None = None,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 5e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.1,
        pvalue_threshold: float = 0.01,
        fallback_top_k: int = 3,
        n_clusters: int | str = 2,
        max_clusters: int = 4,
        cluster_method: str = "kmeans",
        classifier: str = "logistic",
        classifier_C: float = 1.0,
        preprocessing: Mapping[str, str] | None = None,
        max_missing: float = 0.5,
        clinical_types: Mapping[str, Any] | None = None,
        device: str = "cpu",
        task: str = "auto",
        seed: int = 0,
    ):
        self.modalities = modalities
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.pvalue_threshold = pvalue_threshold
        self.fallback_top_k = fallback_top_k
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.cluster_method = cluster_method
        self.classifier = classifier
        self.classifier_C = classifier_C
        self.preprocessing = preprocessing
        self.max_missing = max_missing
        self.clinical_types = clinical_types
        self.device = device
        self.task = task
        self.seed = seed

    # ------------------------------------------------------------------------------------------- checks
    def _validate(self) -> None:
        if self.cluster_method not in ("gmm", "kmeans"):
            raise ValueError(f"cluster_method must be 'gmm' or 'kmeans', got {self.cluster_method!r}")
        if self.classifier not in ("logistic", "svm"):
            raise ValueError(f"classifier must be 'logistic' or 'svm', got {self.classifier!r}")
        if not (self.n_clusters == "auto" or (isinstance(self.n_clusters, int) and self.n_clusters >= 2)):
            raise ValueError(f"n_clusters must be an integer >= 2 or 'auto', got {self.n_clusters!r}")
        if not 0 < self.pvalue_threshold <= 1 or self.fallback_top_k < 1:
            raise ValueError("pvalue_threshold must be in (0, 1] and fallback_top_k >= 1")

    # ---------------------------------------------------------------------------------------- clustering
    def _cluster_once(self, F: np.ndarray, k: int) -> np.ndarray:
        if self.cluster_method == "gmm":
            gmm = GaussianMixture(k, covariance_type="diag", n_init=3, reg_covar=1e-4, random_state=self.seed)
            labels = gmm.fit_predict(F)
            if np.bincount(labels, minlength=k).min() >= 2:
                return labels
        return KMeans(k, n_init=10, random_state=self.seed).fit_predict(F)

    def _cluster(self, F: np.ndarray) -> np.ndarray:
        if self.n_clusters != "auto":
            self.n_clusters_ = int(self.n_clusters)
            return self._cluster_once(F, self.n_clusters_)
        best, best_labels, self.silhouettes_ = -np.inf, None, {}
        for k in range(2, max(2, int(self.max_clusters)) + 1):
            labels = self._cluster_once(F, k)
            if len(np.unique(labels)) < 2:
                continue
            sil = float(silhouette_score(F, labels, random_state=self.seed))
            self.silhouettes_[k] = sil
            if sil > best:
                best, best_labels, self.n_clusters_ = sil, labels, k
        if best_labels is None:
            raise RuntimeError(
                "deepprog: clustering found a single group for every k; the kept latent nodes "
                "carry no structure in this training fold"
            )
        return best_labels

    # ------------------------------------------------------------------------------------------------ fit
    def _node_pvalues(self, Z: np.ndarray, out: Any, rows: np.ndarray) -> np.ndarray:
        if out.task == "survival":
            p = cox_univariate(Z, out.time[rows], out.event[rows]).loc[:, "p"].to_numpy()
        else:
            lab = out.label[rows]
            with np.errstate(all="ignore"):
                p = np.asarray(stats.mannwhitneyu(Z[lab == 1], Z[lab == 0], axis=0).pvalue, dtype=np.float64)
        return np.where(np.isfinite(p), p, 1.0)

    def _fit_omic(self, data: MultimodalData, m: str, out: Any, rows: np.ndarray, dev: torch.device) -> _Omic:
        kind = preprocessing_kind(data, m, dict(self.preprocessing or {}).get(m, "auto"))
        types = resolve_clinical_types(data, self.clinical_types) if kind == "clinical" else None
        X = modality_frame(data, m).iloc[np.flatnonzero(rows)]
        pipe = make_tabular_pipeline(kind, task=out.task, clinical_types=types, max_missing=self.max_missing).fit(X)
        Xt = pipe.transform(X)
        ae = train_autoencoder(
            Xt,
            min(self.latent_dim, max(1, Xt.shape[1])),
            hidden_dim=self.hidden_dim,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            dropout=self.dropout,
            seed=self.seed,
            device=dev,
        )
        Z = encode(ae, Xt)
        p = self._node_pvalues(Z, out, rows)
        kept = np.flatnonzero(p < self.pvalue_threshold)
        if len(kept) == 0:
            kept = np.sort(np.argsort(p, kind="stable")[: self.fallback_top_k])
        mean, scale = Z[:, kept].mean(axis=0), Z[:, kept].std(axis=0)
        return _Omic(pipe, ae, kept, p, mean, np.where(scale > 1e-12, scale, 1.0))

    def _make_classifier(self, y: np.ndarray) -> Any:
        if self.classifier == "svm":  # Platt-calibrated SVC (SVC(probability=True) is deprecated in sklearn 1.9)
            folds = int(min(5, np.unique(y, return_counts=True)[1].min()))
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
                return CalibratedClassifierCV(SVC(C=self.classifier_C), method="sigmoid", cv=cv, ensemble=False)
        return LogisticRegression(C=self.classifier_C, max_iter=2000)

    def fit(self, data: MultimodalData) -> DeepProgStyle:
        self._validate()
        with self._timed():
            out = outcome_of(data, self.task)
            dev = resolve_device(self.device)
            mods = list(self.modalities) if self.modalities is not None else data.modality_names
            self.omics_: dict[str, _Omic] = {}
            self.skipped_: dict[str, str] = {}
            presence = {m: modality_present(data, m) & out.usable for m in mods}
            for m in mods:
                if presence[m].sum() < MIN_TRAIN:
                    self.skipped_[m] = f"only {int(presence[m].sum())} training patients have it"
                    warnings.warn(f"deepprog: omic '{m}' left out ({self.skipped_[m]})", stacklevel=2)
                    continue
                self.omics_[m] = self._fit_omic(data, m, out, presence[m], dev)
            if not self.omics_:
                raise ValueError(f"deepprog: no omic among {mods} has >= {MIN_TRAIN} training patients")

            # Stacked, standardised kept nodes; an absent omic is the training mean (0).
            train = out.usable & np.any([presence[m] for m in self.omics_], axis=0)
            blocks = []
            for m, om in self.omics_.items():
                block = np.zeros((len(data), len(om.kept)))
                block[presence[m]] = om.features(modality_frame(data, m).iloc[np.flatnonzero(presence[m])])
                blocks.append(block[train])
            F = np.hstack(blocks)
            raw = self._cluster(F)
            k = self.n_clusters_

            # Order subtypes by training risk: 0 = lowest.
            if out.task == "survival":
                risk_g = observed_expected(out.time[train], out.event[train], raw, k)
            else:
                risk_g = np.array([1 - out.label[train][raw == g].mean() for g in range(k)])
            order = np.argsort(np.nan_to_num(risk_g, nan=np.nanmedian(risk_g)), kind="stable")
            rank = np.empty(k, dtype=np.int64)
            rank[order] = np.arange(k)
            labels = rank[raw]
            self.subtype_risk_ = risk_g[order]
            self.subtypes_ = pd.Series(-1, index=data.patients, name="subtype", dtype=np.int64)
            self.subtypes_.iloc[np.flatnonzero(train)] = labels
            full = self.subtypes_.to_numpy()
            if out.task == "survival":
                self.train_logrank_p_ = float(
                    multivariate_logrank_test(out.time[train], labels, out.event[train]).p_value
                )
                self.subtype_km_ = [
                    kaplan_meier_curve(out.time[train][labels == g], out.event[train][labels == g]) for g in range(k)
                ]
                self.km_ = kaplan_meier_curve(out.time[out.usable], out.event[out.usable])
            else:
                self.response_rate_ = np.array([out.label[train][labels == g].mean() for g in range(k)])

            for m, om in self.omics_.items():
                rows = presence[m] & train
                y = full[rows]
                om.classes = np.unique(y)
                if len(om.classes) > 1:
                    Fm = om.features(modality_frame(data, m).iloc[np.flatnonzero(rows)])
                    om.classifier = self._make_classifier(y).fit(Fm, y)
            self.task_ = out.task
            tr = data.subset(np.flatnonzero(train))
            self.risk_median_ = float(np.median(self._risk_from_proba(*self._proba(tr))))
        return self

    # ------------------------------------------------------------------------------------------- predict
    def _proba(self, data: MultimodalData) -> tuple[np.ndarray, np.ndarray]:
        """(subtype probabilities averaged over the omics each patient has, whether any omic is present)."""
        k = self.n_clusters_
        P = np.zeros((len(data), k))
        count = np.zeros(len(data))
        for m, om in self.omics_.items():
            if m not in data.modalities and m != "clinical":
                continue
            present = modality_present(data, m)
            if not present.any():
                continue
            pm = np.zeros((int(present.sum()), k))
            if om.classifier is None:
                pm[:, om.classes] = 1.0 / len(om.classes)
            else:
                Fm = om.features(modality_frame(data, m).iloc[np.flatnonzero(present)])
                pm[:, om.classifier.classes_] = om.classifier.predict_proba(Fm)
            P[present] += pm
            count[present] += 1
        has = count > 0
        P[has] /= count[has, None]
        return P, has

    def _risk_from_proba(self, P: np.ndarray, has: np.ndarray) -> np.ndarray:
        if self.task_ == "binary":
            return 1.0 - P[has] @ self.response_rate_
        k = P.shape[1]
        return P[has] @ (np.arange(k) / (k - 1))

    def predict_subtype_proba(self, data: MultimodalData) -> pd.DataFrame:
        """Patient x subtype probabilities (rows of patients with no omic are NaN)."""
        self._check_fitted()
        P, has = self._proba(data)
        P[~has] = np.nan
        return pd.DataFrame(P, index=data.patients, columns=[f"subtype_{g}" for g in range(P.shape[1])])

    def predict_subtype(self, data: MultimodalData) -> np.ndarray:
        """Most probable subtype (0 = lowest risk), -1 for patients with none of the omics."""
        self._check_fitted()
        P, has = self._proba(data)
        return np.where(has, P.argmax(axis=1), -1)

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        self._check_fitted()
        P, has = self._proba(data)
        risk = np.full(len(data), self.risk_median_)
        risk[has] = self._risk_from_proba(P, has)
        return risk

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        """Subtype Kaplan-Meier curves mixed by the subtype probabilities (overall KM without any omic)."""
        self._need_task("survival", "predict_survival")
        times = np.asarray(times, dtype=np.float64)
        P, has = self._proba(data)
        curves = np.vstack([evaluate_step_functions(t, s, times) for t, s in self.subtype_km_])
        out = np.repeat(evaluate_step_functions(*self.km_, times), len(data), axis=0)
        out[has] = P[has] @ curves
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "modalities": describe_sequence(self.modalities),
            "latent_dim": self.latent_dim,
            "hidden_dim": self.hidden_dim,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "dropout": self.dropout,
            "pvalue_threshold": self.pvalue_threshold,
            "fallback_top_k": self.fallback_top_k,
            "n_clusters": self.n_clusters,
            "max_clusters": self.max_clusters,
            "cluster_method": self.cluster_method,
            "classifier": self.classifier,
            "classifier_C": self.classifier_C,
            "device": self.device,
            "task": self.task,
            "seed": self.seed,
        }

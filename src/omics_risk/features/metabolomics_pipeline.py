"""Fold-fitted metabolomics preprocessing (layer 2 of :mod:`omics_risk.features.metabolomics`): scikit-learn
transformers that learn from the training fold only, chained by :func:`make_metabolomics_pipeline`.

Columns are ``<timepoint>__<feature_id>``; each timepoint block is one injection per patient, and a row whose
whole block is NaN is a missing sample that every step leaves NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from omics_risk.features.screening import FrameSelector, _quiet

__all__ = [
    "DetectionLimitImputer",
    "Log2Transformer",
    "MissingnessFilter",
    "PQNormalizer",
    "ParetoScaler",
    "QCRSDFilter",
    "make_metabolomics_pipeline",
]


def _blocks(columns: np.ndarray | None, n: int) -> np.ndarray:
    """Block label of each column: the timepoint prefix before ``__``, or '' (one block)."""
    if columns is None:
        return np.full(n, "", dtype=object)
    return np.array([c.split("__", 1)[0] if "__" in c else "" for c in map(str, columns)], dtype=object)


def _present(X: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """n x p mask: True where the row has the sample of that column's block (some value observed in the block)."""
    obs = ~np.isnan(X)
    pres = np.zeros_like(obs)
    for b in pd.unique(blocks):
        cols = blocks == b
        pres[:, cols] = obs[:, cols].any(axis=1, keepdims=True)
    return pres


def _feature_id(column: str) -> str:
    return column.split("__", 1)[1] if "__" in column else column


class _FrameTransformer(TransformerMixin, BaseEstimator):
    """NaN-aware transformer that returns a DataFrame (same index and columns) for DataFrame input."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _check(self, X: Any, reset: bool) -> np.ndarray:
        return validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64)

    def _blocks(self) -> np.ndarray:
        return _blocks(getattr(self, "feature_names_in_", None), self.n_features_in_)

    def _wrap(self, X: Any, values: np.ndarray) -> Any:
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(values, index=X.index, columns=self.get_feature_names_out())
        return values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(names, dtype=object)


class QCRSDFilter(FrameSelector):
    """Drop features whose QC RSD exceeds ``max_rsd`` or that are detected in fewer than ``min_detect`` of the QCs.

    ``qc_report``: :meth:`MetabolomicsExtractor.qc_report` output (a DataFrame or a CSV path), indexed or keyed by
    ``feature_id``; columns ``rsd_column`` (default the drift-corrected ``qc_rsd_after``) and ``qc_detect_rate``.
    Input columns are matched by name or by the part after ``<timepoint>__``. ``unknown`` decides what happens to
    a column missing from the report: ``"error"`` (default: a report from another run is a mistake), ``"keep"``
    or ``"drop"``. Fitted: ``rsd_``, ``detect_rate_``, ``support_``.
    """

    def __init__(
        self,
        qc_report: pd.DataFrame | str | Path | None = None,
        *,
        max_rsd: float = 0.30,
        min_detect: float = 0.5,
        rsd_column: str = "qc_rsd_after",
        unknown: str = "error",
    ):
        self.qc_report = qc_report
        self.max_rsd = max_rsd
        self.min_detect = min_detect
        self.rsd_column = rsd_column
        self.unknown = unknown

    def _report(self) -> pd.DataFrame:
        rep = self.qc_report
        if rep is None:
            raise ValueError("QCRSDFilter needs qc_report= (MetabolomicsExtractor.qc_report(cohort) or its CSV)")
        if not isinstance(rep, pd.DataFrame):
            rep = pd.read_csv(rep)
        if "feature_id" in rep.columns:
            rep = rep.set_index("feature_id")
        missing = {self.rsd_column, "qc_detect_rate"} - set(rep.columns)
        if missing:
            raise ValueError(
                f"qc_report lacks column(s) {sorted(missing)}; expected MetabolomicsExtractor.qc_report output"
            )
        rep = rep.copy()
        rep.index = rep.index.astype(str)
        return rep

    def fit(self, X: Any, y: Any = None) -> QCRSDFilter:
        if self.unknown not in ("error", "keep", "drop"):
            raise ValueError(f"unknown must be 'error', 'keep' or 'drop', got {self.unknown!r}")
        validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            raise ValueError("QCRSDFilter needs a DataFrame whose columns name the features (feature_id)")
        rep = self._report()
        ids = [c if c in rep.index else _feature_id(c) for c in map(str, names)]
        known = np.array([i in rep.index for i in ids])
        if not known.all() and self.unknown == "error":
            bad = [str(c) for c, k in zip(names, known, strict=True) if not k]
            raise ValueError(
                f"{len(bad)} column(s) are not in the QC report (e.g. {bad[:3]}): pass the report of "
                "this run, or unknown='keep'/'drop'"
            )
        sub = rep.reindex(ids)
        self.rsd_ = sub[self.rsd_column].to_numpy(dtype=np.float64)
        self.detect_rate_ = sub["qc_detect_rate"].to_numpy(dtype=np.float64)
        good = (self.rsd_ <= self.max_rsd) & (self.detect_rate_ >= self.min_detect)
        self.support_ = np.where(known, good, self.unknown == "keep")
        return self


class MissingnessFilter(FrameSelector):
    """Drop features below detection in more than ``max_missing`` of the training samples that have the sample.

    Fitted: ``missing_fraction_``, ``support_``.
    """

    def __init__(self, max_missing: float = 0.5):
        self.max_missing = max_missing

    def fit(self, X: Any, y: Any = None) -> MissingnessFilter:
        if not 0 <= self.max_missing <= 1:
            raise ValueError(f"max_missing must be in [0, 1], got {self.max_missing!r}")
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        blocks = _blocks(getattr(self, "feature_names_in_", None), Xv.shape[1])
        pres = _present(Xv, blocks)
        n = pres.sum(axis=0)
        with np.errstate(all="ignore"):
            frac = (np.isnan(Xv) & pres).sum(axis=0) / n
        self.missing_fraction_ = np.where(n > 0, frac, 1.0)
        self.support_ = self.missing_fraction_ <= self.max_missing
        return self


class DetectionLimitImputer(_FrameTransformer):
    """Fill values below detection with ``factor`` x the per-feature detection limit learned on training data.

    The limit is the feature's smallest detected training value (``lod=None``), or a given limit
    (``lod``: feature_id -> intensity, e.g. instrument LODs; matched like :class:`QCRSDFilter`). Only values of
    samples that exist are filled (a missing sample stays NaN). A feature never detected in training gets the
    smallest limit of all features. Fitted: ``limits_``, ``fill_values_``.
    """

    def __init__(self, factor: float = 0.5, lod: pd.Series | dict[str, float] | None = None):
        self.factor = factor
        self.lod = lod

    def fit(self, X: Any, y: Any = None) -> DetectionLimitImputer:
        if not self.factor > 0:
            raise ValueError(f"factor must be > 0, got {self.factor!r}")
        Xv = self._check(X, reset=True)
        with _quiet():
            limits = np.nanmin(Xv, axis=0) if len(Xv) else np.full(Xv.shape[1], np.nan)
        if self.lod is not None:
            lod = pd.Series(self.lod, dtype=np.float64)
            lod.index = lod.index.astype(str)
            names = self.get_feature_names_out()
            given = np.array([lod.get(c, lod.get(_feature_id(c), np.nan)) for c in map(str, names)])
            limits = np.where(np.isnan(given), limits, given)
        if np.isnan(limits).all():
            raise ValueError("DetectionLimitImputer: no feature has a detected training value")
        self.limits_ = np.where(np.isnan(limits), np.nanmin(limits), limits)
        self.fill_values_ = self.factor * self.limits_
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "fill_values_")
        Xv = self._check(X, reset=False)
        fill = np.isnan(Xv) & _present(Xv, self._blocks())
        out = np.where(fill, self.fill_values_[None, :], Xv)
        return self._wrap(X, out)


class PQNormalizer(_FrameTransformer):
    """Probabilistic quotient normalisation (Dieterle et al. 2006) against a training reference.

    Optional total-area normalisation first (each sample divided by its block's total, rescaled by the median
    training total). The reference is the feature-wise median of the training samples; each sample (block) is
    divided by the median of its quotients to the reference, its dilution factor. Fitted: ``reference_``,
    ``area_scale_`` (per block, with ``total_area``).
    """

    def __init__(self, total_area: bool = False):
        self.total_area = total_area

    def _area(self, Xv: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """Per row x column: the total-area factor (1 without total-area normalisation)."""
        fac = np.ones_like(Xv)
        if not self.total_area:
            return fac
        for k, b in enumerate(pd.unique(blocks)):
            cols = blocks == b
            with _quiet():
                tot = np.nansum(Xv[:, cols], axis=1) / self.area_scale_[k]
            fac[:, cols] = np.where(tot > 0, tot, np.nan)[:, None]
        return fac

    def fit(self, X: Any, y: Any = None) -> PQNormalizer:
        Xv = self._check(X, reset=True)
        blocks = self._blocks()
        if self.total_area:
            scales = []
            for b in pd.unique(blocks):
                tot = np.nansum(Xv[:, blocks == b], axis=1)
                scales.append(float(np.median(tot[tot > 0])) if (tot > 0).any() else 1.0)
            self.area_scale_ = np.asarray(scales)
        with _quiet():
            self.reference_ = np.nanmedian(Xv / self._area(Xv, blocks), axis=0)
        return self

    def dilution_factors(self, X: Any) -> pd.DataFrame:
        """Per sample and block: the factor the sample is divided by (total area x probabilistic quotient)."""
        check_is_fitted(self, "reference_")
        Xv = self._check(X, reset=False)
        fac = self._factors(Xv)
        blocks = self._blocks()
        uniq = pd.unique(blocks)
        first = [int(np.flatnonzero(blocks == b)[0]) for b in uniq]
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(fac[:, first], index=index, columns=[b or "all" for b in uniq])

    def _factors(self, Xv: np.ndarray) -> np.ndarray:
        blocks = self._blocks()
        area = self._area(Xv, blocks)
        scaled = Xv / area
        ref = np.where(self.reference_ > 0, self.reference_, np.nan)
        with np.errstate(all="ignore"):
            quot = scaled / ref[None, :]
        fac = np.empty_like(Xv)
        for b in pd.unique(blocks):
            cols = blocks == b
            with _quiet():
                fac[:, cols] = np.nanmedian(quot[:, cols], axis=1, keepdims=True)
        return area * fac

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "reference_")
        Xv = self._check(X, reset=False)
        return self._wrap(X, Xv / self._factors(Xv))


class Log2Transformer(_FrameTransformer):
    """``log2(x + pseudo_count)``; stateless (fitted only for the scikit-learn API)."""

    def __init__(self, pseudo_count: float = 1.0):
        self.pseudo_count = pseudo_count

    def fit(self, X: Any, y: Any = None) -> Log2Transformer:
        if self.pseudo_count < 0:
            raise ValueError(f"pseudo_count must be >= 0, got {self.pseudo_count!r}")
        self._check(X, reset=True)
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "n_features_in_")
        Xv = self._check(X, reset=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._wrap(X, np.log2(Xv + self.pseudo_count))


class ParetoScaler(_FrameTransformer):
    """Pareto scaling: centre on the training mean, divide by the square root of the training SD (NaN ignored).

    Keeps more of the original magnitude than autoscaling, so large, stable metabolites are not inflated to the
    weight of noisy trace features. Fitted: ``mean_``, ``scale_``.
    """

    def fit(self, X: Any, y: Any = None) -> ParetoScaler:
        Xv = self._check(X, reset=True)
        with _quiet():
            self.mean_ = np.nan_to_num(np.nanmean(Xv, axis=0))
            sd = np.nan_to_num(np.nanstd(Xv, axis=0))
        self.scale_ = np.where(sd > 0, np.sqrt(sd), 1.0)
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "scale_")
        Xv = self._check(X, reset=False)
        return self._wrap(X, (Xv - self.mean_) / self.scale_)


def make_metabolomics_pipeline(
    *,
    qc_report: pd.DataFrame | str | Path | None = None,
    max_qc_rsd: float = 0.30,
    min_qc_detect: float = 0.5,
    max_missing: float = 0.5,
    impute_factor: float = 0.5,
    lod: pd.Series | dict[str, float] | None = None,
    pqn: bool = True,
    total_area: bool = False,
    log2: bool = True,
    pseudo_count: float = 1.0,
    scaling: str | None = "auto",
) -> Pipeline:
    """The fold-fitted metabolomics preprocessing, in the domain-brief order (section 4).

    QC filter (only when ``qc_report`` is given) -> missingness filter -> detection-limit imputation -> PQN ->
    log2 -> scaling (``"auto"``: StandardScaler, ``"pareto"``: :class:`ParetoScaler`, ``None``: none).
    Pandas in, pandas out.
    """
    steps: list[tuple[str, Any]] = []
    if qc_report is not None:
        steps.append(("qc_filter", QCRSDFilter(qc_report, max_rsd=max_qc_rsd, min_detect=min_qc_detect)))
    steps += [("missingness", MissingnessFilter(max_missing)), ("impute", DetectionLimitImputer(impute_factor, lod))]
    if pqn:
        steps.append(("pqn", PQNormalizer(total_area=total_area)))
    if log2:
        steps.append(("log2", Log2Transformer(pseudo_count)))
    if scaling == "auto":
        steps.append(("scale", StandardScaler()))
    elif scaling == "pareto":
        steps.append(("scale", ParetoScaler()))
    elif scaling is not None:
        raise ValueError(f"scaling must be 'auto', 'pareto' or None, got {scaling!r}")
    return Pipeline(steps).set_output(transform="pandas")

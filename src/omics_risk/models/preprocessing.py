"""Per-modality preprocessing fitted on a training fold, shipped with the model, saved without pickle (skops).

:class:`ModalityPreprocessor` turns one modality's ``patient x timepoint__feature`` table into a float32 matrix
plus a presence vector. It is fitted **only on the training patients that have the modality** (a missing
modality is not a row of zeros to learn scalers from). Steps (a scikit-learn ``Pipeline``, pandas in and out):

* ``kind="tabular"`` (radiomics, fragmentomics, methylation, ctDNA, ...): drop all-NaN and constant columns
  (``VarianceThreshold``; ``variance_threshold`` is on the raw scale) -> median imputation -> standard scaling;
* ``kind="metabolomics"``: :func:`omics_risk.features.metabolomics.make_metabolomics_pipeline` (``metabolomics``
  = its keyword arguments, e.g. ``{"max_missing": 0.5, "scaling": "auto"}``) -> drop constant columns -> median
  imputation of anything left;
* ``kind="clinical"``: :class:`omics_risk.features.clinical.ClinicalEncoder` (``clinical_types`` as in
  cohort.yaml's ``clinical:``, or inferred from dtypes: numbers -> numeric (0/1 -> binary), text -> categorical;
  ordinal columns must be declared to keep their order) -> drop constant columns;

then, for every kind, an optional correlation filter (``max_correlation``: drop a column correlated above this
with an earlier kept one) and optional supervised screening to at most ``k`` columns
(:class:`~omics_risk.features.screening.UnivariateCoxSelector` for a survival target,
:class:`~omics_risk.features.screening.WilcoxonSelector` for a binary one), or, when ``screening`` is given, the
screen that spec describes (:func:`~omics_risk.features.screening.make_screener`: Cox, Wilcoxon, random-forest
importance, consensus-cluster subtype columns, combined; the ``model/screening`` config group fills it in per
modality). Either screen learns from ``y`` and is fitted here, on the training fold. Output values are clipped to
``+-clip`` (an outlier in a new cohort cannot saturate the network) and absent patients get zeros and
``present=False``.

Serialisation: :func:`save_preprocessor` / :func:`load_preprocessor` use ``skops.io``. Loading trusts exactly
the types :func:`skops.io.get_untrusted_types` reports **if** each one is from a module in
:data:`TRUSTED_MODULE_PREFIXES` (scikit-learn, scikit-survival, and omics-risk's own feature and preprocessing
code, incl. the plain functions of its ``FunctionTransformer`` steps such as
``omics_risk.features.clinical._to_float``) or is a NumPy dtype or scalar type (``numpy.dtype``,
``numpy.float64``, ...); any other type stops the load with an error naming it, so a tampered file cannot make
the loader construct arbitrary objects. (Give the metabolomics ``qc_report`` as a CSV path, not a DataFrame:
pandas objects are not in the allow-list.)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from omics_risk.data.formats import PREPROCESSING_KINDS
from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.features.metabolomics import make_metabolomics_pipeline
from omics_risk.features.screening import FrameSelector, UnivariateCoxSelector, WilcoxonSelector, make_screener

__all__ = [
    "TRUSTED_MODULE_PREFIXES",
    "CorrelationFilter",
    "ModalityPreprocessor",
    "UntrustedTypeError",
    "infer_clinical_types",
    "load_preprocessor",
    "save_preprocessor",
]

#: The kinds a format declares in the modality registry (:mod:`omics_risk.data.formats`).
KINDS = PREPROCESSING_KINDS

#: Modules whose types a saved preprocessor may contain (see module docstring).
TRUSTED_MODULE_PREFIXES = (
    "sklearn.",
    "sksurv.",
    "omics_risk.features.",
    "omics_risk.models.preprocessing.",
    "omics_risk.models.tabular.",
    "omics_risk.models.reference.",
)


def _trusted(type_name: str) -> bool:
    """In the allow-list: a trusted module's type or function, or a NumPy dtype / scalar type."""
    if type_name.startswith(TRUSTED_MODULE_PREFIXES):
        return True
    module, _, name = type_name.rpartition(".")
    if module != "numpy":
        return False
    obj = getattr(np, name, None)
    return obj is np.dtype or (isinstance(obj, type) and issubclass(obj, np.generic))


class UntrustedTypeError(RuntimeError):
    """A saved preprocessor contains a type outside :data:`TRUSTED_MODULE_PREFIXES`."""


class CorrelationFilter(FrameSelector):
    """Keep a column unless its |Pearson r| with an earlier kept column exceeds ``max_correlation``.

    Columns are visited in input order (deterministic); NaN is ignored pairwise by filling column means first.
    Fitted: ``support_``.
    """

    def __init__(self, max_correlation: float = 0.95):
        self.max_correlation = max_correlation

    def fit(self, X: Any, y: Any = None) -> CorrelationFilter:
        if not 0 < self.max_correlation <= 1:
            raise ValueError(f"max_correlation must be in (0, 1], got {self.max_correlation!r}")
        Xv = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(Xv, axis=0)
            Xf = np.where(np.isnan(Xv), np.nan_to_num(means)[None, :], Xv)
            r = np.abs(np.corrcoef(Xf, rowvar=False)) if Xf.shape[1] > 1 else np.ones((1, 1))
        r = np.nan_to_num(np.atleast_2d(r), nan=0.0)
        keep = np.zeros(Xv.shape[1], dtype=bool)
        for j in range(Xv.shape[1]):
            keep[j] = not (r[j, keep] > self.max_correlation).any()
        self.support_ = keep
        return self


def infer_clinical_types(frame: pd.DataFrame) -> dict[str, str]:
    """Clinical column types from dtypes: 0/1 numbers -> binary, other numbers -> numeric, anything else ->
    categorical. Ordinal columns cannot be recognised; pass ``clinical_types`` to keep their order."""
    types: dict[str, str] = {}
    for col in frame.columns:
        s = frame[col]
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum() and s.notna().any():
            types[str(col)] = "binary" if set(np.unique(num.dropna())) <= {0.0, 1.0} else "numeric"
        else:
            types[str(col)] = "categorical"
    return types


def _plain_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A screening spec as plain dicts and lists (Hydra passes DictConfig / ListConfig)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Sequence) and not isinstance(v, str):
            return [plain(x) for x in v]
        return v
    return plain(spec)


def _target(y: Any, rows: np.ndarray) -> tuple[str, Any] | None:
    """The screening target restricted to ``rows``: ("survival", structured array) / ("binary", 0/1) / None."""
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.dtype.names is not None and len(arr.dtype.names) == 2:
        return "survival", arr[rows]
    lab = np.asarray(y, dtype=np.float64)[rows]
    return "binary", lab


class ModalityPreprocessor(BaseEstimator):
    """Fold-fitted preprocessing of one modality (see module docstring).

    Args:
        kind: ``"tabular"``, ``"metabolomics"`` or ``"clinical"``.
        k: keep at most this many columns by supervised screening (None: no screening).
        variance_threshold: ``VarianceThreshold`` on the raw values (0 drops constant and all-NaN columns).
        max_correlation: correlation filter threshold (None: off).
        screening_test: ``"score"`` (fast, one Newton step) or ``"wald"`` for the univariate Cox screen.
        screening: a :func:`~omics_risk.features.screening.make_screener` spec, e.g.
            ``{"methods": ["wilcoxon", "random_forest"], "combine": "sequential", "k": 16}``; replaces the ``k``
            screen (None: the ``k`` screen).
        clip: clip standardised outputs to ``[-clip, clip]`` (None: no clipping).
        metabolomics: keyword arguments of ``make_metabolomics_pipeline`` (``kind="metabolomics"``).
        clinical_types: ``{column: type or {"type", "levels"}}`` (``kind="clinical"``; None: inferred).
        clinical_min_frequency: rare-category grouping of the clinical encoder.
        min_patients: fewer training patients with the modality than this is an error (the caller drops it).

    Fitted: ``columns_in_`` (expected input columns, in order), ``features_out_`` (output columns, in order),
    ``pipeline_``.
    """

    def __init__(self, kind: str = "tabular", k: int | None = 32, variance_threshold: float = 0.0,
                 max_correlation: float | None = None, screening_test: str = "score", clip: float | None = 10.0,
                 metabolomics: Mapping[str, Any] | None = None, clinical_types: Mapping[str, Any] | None = None,
                 clinical_min_frequency: float | int | None = 0.05, min_patients: int = 10,
                 screening: Mapping[str, Any] | None = None):
        self.kind = kind
        self.k = k
        self.variance_threshold = variance_threshold
        self.max_correlation = max_correlation
        self.screening_test = screening_test
        self.clip = clip
        self.metabolomics = metabolomics
        self.clinical_types = clinical_types
        self.clinical_min_frequency = clinical_min_frequency
        self.min_patients = min_patients
        self.screening = screening

    # ------------------------------------------------------------------------------------------------ fit
    def _base_steps(self, frame: pd.DataFrame) -> list[tuple[str, Any]]:
        if self.kind == "tabular":
            return [
                ("constant", VarianceThreshold(self.variance_threshold)),
                ("impute", SimpleImputer(strategy="median")),
                ("scale", StandardScaler()),
            ]
        if self.kind == "metabolomics":
            return [
                ("metabolomics", make_metabolomics_pipeline(**dict(self.metabolomics or {}))),
                ("constant", VarianceThreshold(self.variance_threshold)),
                ("impute", SimpleImputer(strategy="median")),
            ]
        if self.kind == "clinical":
            types = dict(self.clinical_types) if self.clinical_types else infer_clinical_types(frame)
            return [
                ("encode", ClinicalEncoder(types=types, min_frequency=self.clinical_min_frequency)),
                ("constant", VarianceThreshold(0.0)),
            ]
        raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def fit(self, frame: pd.DataFrame, y: Any = None, present: np.ndarray | pd.Series | None = None
            ) -> ModalityPreprocessor:
        """Fit on the rows of ``frame`` with ``present`` True (default: rows with any non-NaN value).

        ``y`` (aligned with ``frame``'s rows): a scikit-survival structured array or a binary vector (NaN =
        unknown) for the screening step; None disables screening.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError("ModalityPreprocessor.fit expects a pandas DataFrame (patients x features)")
        rows = self._present(frame, present)
        if rows.sum() < self.min_patients:
            raise ValueError(f"only {int(rows.sum())} training patient(s) have this modality (< min_patients="
                             f"{self.min_patients})")
        self.columns_in_ = [str(c) for c in frame.columns]
        X = frame.loc[rows].copy()
        X.columns = self.columns_in_
        if self.kind != "clinical":
            X = X.apply(pd.to_numeric, errors="coerce").astype(np.float64)
        steps = self._base_steps(X)
        base = Pipeline([(n, clone(s)) for n, s in steps]).set_output(transform="pandas")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]kipping features without any observed values.*")
            warnings.filterwarnings("ignore", category=RuntimeWarning)  # nanvar of all-NaN columns (dropped)
            try:
                Z = base.fit_transform(X)
            except ValueError as exc:
                if "variance threshold" in str(exc):
                    raise ValueError("every column is constant or empty in the training patients") from exc
                raise
        fitted = list(base.steps)
        if self.max_correlation is not None and Z.shape[1] > 1:
            corr = CorrelationFilter(self.max_correlation).fit(Z)
            Z = corr.transform(Z)
            fitted.append(("correlation", corr))
        target = _target(y, rows)
        if self.screening and target is not None:
            kind, t = target
            ok = np.ones(len(Z), dtype=bool) if kind == "survival" else np.isfinite(t)
            screen = make_screener(_plain_spec(self.screening), task=kind)
            screen.fit(Z.loc[ok], t[ok])
            Z = screen.transform(Z)
            fitted.append(("screen", screen))
        elif self.k is not None and target is not None and Z.shape[1] > self.k:
            kind, t = target
            if kind == "survival":
                screen: Any = UnivariateCoxSelector(k=int(self.k), test=self.screening_test)
                screen.fit(Z, t)
            else:
                ok = np.isfinite(t)
                screen = WilcoxonSelector(k=int(self.k))
                screen.fit(Z.loc[ok], t[ok])
            Z = screen.transform(Z)
            fitted.append(("screen", screen))
        self.pipeline_ = Pipeline(fitted).set_output(transform="pandas")
        self.features_out_ = [str(c) for c in Z.columns]
        if not self.features_out_:
            raise ValueError("no feature is left after preprocessing")
        self.n_patients_fit_ = int(rows.sum())
        return self

    @staticmethod
    def _present(frame: pd.DataFrame, present: Any) -> np.ndarray:
        if present is None:
            return frame.notna().any(axis=1).to_numpy()
        p = np.asarray(present, dtype=bool).reshape(-1)
        if len(p) != len(frame):
            raise ValueError(f"present has {len(p)} entries but the frame has {len(frame)} rows")
        return p

    # ------------------------------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame, present: np.ndarray | pd.Series | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``(values float32 (n, n_features_out), present bool (n,))``; absent rows are zeros.

        Columns are matched by name against the training columns: missing ones are treated as NaN (warned),
        extra ones ignored.
        """
        check_is_fitted(self, "pipeline_")
        rows = self._present(frame, present)
        X = frame.copy()
        X.columns = [str(c) for c in X.columns]
        missing = [c for c in self.columns_in_ if c not in X.columns]
        if missing and self.kind != "clinical" and rows.any():
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            warnings.warn(f"{len(missing)} training column(s) are absent and treated as missing: {shown}",
                          stacklevel=2)
        if self.kind != "clinical":
            X = X.reindex(columns=self.columns_in_).apply(pd.to_numeric, errors="coerce").astype(np.float64)
        out = np.zeros((len(frame), len(self.features_out_)), dtype=np.float32)
        if rows.any():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]kipping features without any observed values.*")
                Z = self.pipeline_.transform(X.loc[rows])
            vals = np.asarray(Z, dtype=np.float64)
            vals = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
            if self.clip is not None:
                vals = np.clip(vals, -self.clip, self.clip)
            out[rows] = vals.astype(np.float32)
        return out, rows.copy()

    @property
    def n_features_out(self) -> int:
        check_is_fitted(self, "features_out_")
        return len(self.features_out_)


# ---------------------------------------------------------------------------------------------- persistence
def save_trusted(obj: Any, path: str | Path) -> Path:
    """Write a fitted transformer made of trusted types (:data:`TRUSTED_MODULE_PREFIXES`) with ``skops.io.dump``."""
    import skops.io as sio  # lazy: skops is needed only to save or load, not to fit

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(obj, path)
    return path


def load_trusted(path: str | Path) -> Any:
    """Load what :func:`save_trusted` wrote, trusting only :data:`TRUSTED_MODULE_PREFIXES` and NumPy dtypes (no
    pickle: an untrusted type is refused with :class:`UntrustedTypeError`)."""
    import skops.io as sio  # lazy: skops is needed only to save or load, not to fit

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved transformer at {path}")
    untrusted = sio.get_untrusted_types(file=path)
    bad = [t for t in untrusted if not _trusted(t)]
    if bad:
        raise UntrustedTypeError(f"{path} contains type(s) outside the trusted modules "
                                 f"{', '.join(TRUSTED_MODULE_PREFIXES)} and NumPy dtypes: {', '.join(bad)}; "
                                 "refusing to load it")
    return sio.load(path, trusted=untrusted)


def save_preprocessor(obj: ModalityPreprocessor, path: str | Path) -> Path:
    """Write a fitted preprocessor with ``skops.io.dump`` (no pickle)."""
    return save_trusted(obj, path)


def load_preprocessor(path: str | Path) -> ModalityPreprocessor:
    """Load a preprocessor saved by :func:`save_preprocessor`, trusting only :data:`TRUSTED_MODULE_PREFIXES`."""
    obj = load_trusted(path)
    if not isinstance(obj, ModalityPreprocessor):
        raise UntrustedTypeError(f"{path} holds a {type(obj).__name__}, not a ModalityPreprocessor")
    return obj

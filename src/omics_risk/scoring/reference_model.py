"""A transparent Cox model over named columns of the flat scoring frame, saved as plain JSON.

It is the clinical / reference model that ships next to the fused network: every number it uses (imputation
medians, scaling, category codes, coefficients, the Breslow baseline hazard) is in one readable ``config.json``,
so a reviewer can recompute a patient's score by hand, and it runs the same pyfunc scoring path as any other
model of the package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sksurv.linear_model import CoxPHSurvivalAnalysis

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelCapabilities, SurvivalModel
from omics_risk.scoring.frames import CLINICAL, FeatureManifest, to_frame

__all__ = ["LinearRiskModel"]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"


def _as_text(s: pd.Series) -> pd.Series:
    """Category labels as stripped strings (``1`` and ``1.0`` read alike), missing as NaN."""

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, int | float | np.integer | np.floating) and float(v).is_integer():
            return str(int(v))
        text = str(v).strip()
        return text if text else np.nan

    return s.astype(object).map(one)


class LinearRiskModel(SurvivalModel):
    """Ridge-penalised Cox proportional hazards over chosen columns; risk = the linear predictor.

    Args:
        columns: flat-frame columns to use (``clinical/age``, ``ctdna/postop1__max_vaf``); ``None`` uses every
            clinical column (a clinical Cox model).
        clinical_types: cohort.yaml ``clinical:`` types (``{column: "ordinal"}`` or ``{column: {"type": ...,
            "levels": [...]}}``); ordinal columns become level codes, categorical ones indicators. Without it,
            numeric columns are numbers and anything else categorical.
        alpha: ridge penalty of scikit-survival's ``CoxPHSurvivalAnalysis`` (keeps small or collinear cohorts stable).
        ties: ``"efron"`` or ``"breslow"``.

    Encoding, all learnt on the training patients: numbers (and ordinal codes) are median-imputed and
    standardised; categorical columns get one 0/1 indicator per training category except the most frequent
    (the reference), with missing as its own category when it occurs in training and unseen categories scored
    as the reference. A patient lacking a modality gets that modality's training medians, i.e. no information.
    """

    name = "linear_cox"

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        *,
        clinical_types: Mapping[str, Any] | None = None,
        alpha: float = 0.1,
        ties: str = "efron",
    ):
        self.columns = list(columns) if columns is not None else None
        self.clinical_types = dict(clinical_types) if clinical_types is not None else None
        self.alpha = alpha
        self.ties = ties

    # -- encoding ---------------------------------------------------------------------------------------------
    def _declared(self, column: str) -> dict[str, Any]:
        info = (self.clinical_types or {}).get(column)
        if info is None:
            return {}
        return {"type": info} if isinstance(info, str) else dict(info)

    def _fit_encoding(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        enc: list[dict[str, Any]] = []
        for col in self.columns_:
            if col not in frame.columns:
                raise KeyError(f"column '{col}' is not in the data (expected e.g. 'clinical/age', 'ct/preop__volume')")
            s = frame[col]
            decl = self._declared(col.split("/", 1)[1]) if col.startswith(f"{CLINICAL}/") else {}
            kind = decl.get("type")
            if kind == "ordinal":
                levels = [str(v) for v in decl.get("levels", [])]
                values = _as_text(s).map({lv: i for i, lv in enumerate(levels)}).astype(float)
                enc.append({"column": col, "kind": "ordinal", "levels": levels, **self._scale(values, col)})
            elif kind == "categorical" or (kind is None and not pd.api.types.is_numeric_dtype(s)):
                text = _as_text(s).fillna("missing")
                counts = text.value_counts(sort=False)
                order = counts.sort_values(ascending=False, kind="mergesort")
                reference = str(order.index[0])
                categories = sorted(str(c) for c in counts.index if c != reference)
                enc.append({"column": col, "kind": "categorical", "reference": reference, "categories": categories})
            else:
                values = pd.to_numeric(s, errors="coerce").astype(float)
                enc.append({"column": col, "kind": "numeric", **self._scale(values, col)})
        return enc

    @staticmethod
    def _scale(values: pd.Series, col: str) -> dict[str, float]:
        if values.notna().sum() == 0:
            raise ValueError(f"column '{col}' has no values in the training patients; leave it out of `columns`")
        median = float(values.median())
        filled = values.fillna(median)
        sd = float(filled.std(ddof=0))
        return {"median": median, "mean": float(filled.mean()), "scale": sd if sd > 0 else 1.0}

    def _design(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        cols: list[np.ndarray] = []
        names: list[str] = []
        n = len(frame)
        for e in self.encoding_:
            s = frame[e["column"]] if e["column"] in frame.columns else pd.Series(np.nan, index=frame.index)
            if e["kind"] == "categorical":
                text = _as_text(s).fillna("missing").to_numpy()
                for c in e["categories"]:
                    cols.append((text == c).astype(float))
                    names.append(f"{e['column']}={c}")
                continue
            if e["kind"] == "ordinal":
                values = _as_text(s).map({lv: i for i, lv in enumerate(e["levels"])}).astype(float)
            else:
                values = pd.to_numeric(s, errors="coerce").astype(float)
            x = values.fillna(e["median"]).to_numpy(dtype=float)
            cols.append((x - e["mean"]) / e["scale"])
            names.append(e["column"])
        x = np.column_stack(cols) if cols else np.zeros((n, 0))
        return x, names

    # -- SurvivalModel ----------------------------------------------------------------------------------------
    def fit(self, data: MultimodalData) -> LinearRiskModel:
        frame = to_frame(data)
        self.columns_ = self.columns if self.columns is not None else [f"{CLINICAL}/{c}" for c in data.clinical]
        if not self.columns_:
            raise ValueError("LinearRiskModel needs at least one column")
        self.encoding_ = self._fit_encoding(frame)
        x, self.feature_names_ = self._design(frame)
        cox = CoxPHSurvivalAnalysis(alpha=self.alpha, ties=self.ties)
        cox.fit(x, data.survival_y())
        self.coef_ = np.asarray(cox.coef_, dtype=float)
        self.baseline_time_ = np.asarray(cox.cum_baseline_hazard_.x, dtype=float)
        self.baseline_cumhaz_ = np.asarray(cox.cum_baseline_hazard_.y, dtype=float)
        self.train_median_risk_ = float(np.median(x @ self.coef_))
        used: dict[str, list[str]] = {}
        for c in self.columns_:
            block, feature = c.split("/", 1)
            used.setdefault(block, []).append(feature)
        full = FeatureManifest.from_data(data, self.clinical_types)
        self.feature_manifest = FeatureManifest(
            clinical={c: full.clinical[c] for c in used.get(CLINICAL, [])},
            modalities={m: tuple(f) for m, f in used.items() if m != CLINICAL},
        )
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("LinearRiskModel is not fitted: call fit(data) or LinearRiskModel.load(directory)")

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        """Linear predictor; the training median for a patient with none of the model's inputs."""
        self._check_fitted()
        frame = to_frame(data)
        x, _ = self._design(frame)
        risk = x @ self.coef_
        cols = [c for c in self.columns_ if c in frame.columns]
        nothing = frame[cols].isna().all(axis=1).to_numpy() if cols else np.ones(len(frame), dtype=bool)
        return np.where(nothing, self.train_median_risk_, risk)

    def cumulative_hazard(self, times: np.ndarray) -> np.ndarray:
        """Breslow baseline cumulative hazard at ``times`` (0 before the first event; flat after the last)."""
        self._check_fitted()
        times = np.asarray(times, dtype=float)
        i = np.searchsorted(self.baseline_time_, times, side="right") - 1
        return np.where(i >= 0, self.baseline_cumhaz_[np.clip(i, 0, None)], 0.0)

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        h0 = self.cumulative_hazard(np.atleast_1d(times))
        return np.exp(-np.exp(self.predict_risk(data))[:, None] * h0[None, :])

    def capabilities(self) -> ModelCapabilities:
        """Survival curves (Breslow baseline), no response, no images, no epoch callback."""
        return ModelCapabilities(survival=True)

    def coefficients(self) -> pd.Series:
        """Log hazard ratio per encoded column (per training standard deviation for numbers)."""
        self._check_fitted()
        return pd.Series(self.coef_, index=self.feature_names_, name="log_hr")

    def describe(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "ties": self.ties, "n_columns": len(getattr(self, "columns_", self.columns or []))}

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (everything, human-readable) into ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "format_version": FORMAT_VERSION,
            "params": {
                "columns": self.columns,
                "clinical_types": self.clinical_types,
                "alpha": self.alpha,
                "ties": self.ties,
            },
            "feature_manifest": self.feature_manifest.to_dict(),
            "columns": self.columns_,
            "encoding": self.encoding_,
            "feature_names": self.feature_names_,
            "coef": self.coef_.tolist(),
            "baseline": {"time": self.baseline_time_.tolist(), "cumulative_hazard": self.baseline_cumhaz_.tolist()},
            "train_median_risk": self.train_median_risk_,
        }
        path = directory / CONFIG_FILE
        path.write_text(json.dumps(cfg, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LinearRiskModel:
        path = Path(directory) / CONFIG_FILE
        cfg = json.loads(path.read_text())
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {cfg.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        model = cls(**cfg["params"])
        model.columns_ = list(cfg["columns"])
        model.encoding_ = cfg["encoding"]
        model.feature_names_ = list(cfg["feature_names"])
        model.coef_ = np.asarray(cfg["coef"], dtype=float)
        model.baseline_time_ = np.asarray(cfg["baseline"]["time"], dtype=float)
        model.baseline_cumhaz_ = np.asarray(cfg["baseline"]["cumulative_hazard"], dtype=float)
        model.train_median_risk_ = float(cfg["train_median_risk"])
        model.feature_manifest = FeatureManifest.from_dict(cfg["feature_manifest"])
        return model

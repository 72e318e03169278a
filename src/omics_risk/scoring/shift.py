"""Distribution shift between a scored cohort and the model's training patients, feature by feature.

A model only knows the feature values it was trained on. A new cohort measured on another scanner, another
sequencing depth or another assay kit can put a feature far outside that range, where the network extrapolates and
the score is unreliable, without anything failing. At log time :func:`training_ranges` stores, for every numeric
input column of the flat scoring frame (``clinical/age``, ``cfdna/postop1__short_long_ratio``), the 1st and 99th
percentiles and the median of the training patients (aggregates only: no patient's value is stored). At scoring
time :class:`ShiftCheck` counts, per column and per patient, values *far* outside that range: below
``p01 - margin * (p99 - p01)`` or above ``p99 + margin * (p99 - p01)`` (``margin = 0.5`` by default, so ordinary
tails do not warn), and :meth:`ShiftReport.messages` names the modality / feature and how many patients.

Missing values are never out of range (missingness is handled by the presence mask, not here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.scoring.frames import CLINICAL, FeatureManifest

__all__ = ["DEFAULT_MARGIN", "QUANTILES", "ShiftCheck", "ShiftReport", "check_frames", "training_ranges"]

#: Percentiles of the training patients that bound the "training range" of a feature.
QUANTILES: tuple[float, float] = (0.01, 0.99)
#: How far beyond the training range (in units of its width) a value must lie to count as out of range.
DEFAULT_MARGIN = 0.5
#: Relative tolerance around a feature that was constant in training.
_CONSTANT_RTOL = 1e-6
_MAX_MESSAGES = 10


def _numeric_columns(manifest: FeatureManifest) -> list[str]:
    cols = [f"{CLINICAL}/{c}" for c, kind in manifest.clinical.items() if kind == "double"]
    for m in manifest.modalities:
        cols.extend(manifest.modality_columns(m))
    return cols


def training_ranges(frame: pd.DataFrame, manifest: FeatureManifest, *,
                    quantiles: tuple[float, float] = QUANTILES) -> dict[str, Any]:
    """Per numeric input column of ``frame`` (the training patients' flat frame): ``[p01, p99, median, n]``.

    Columns with no observed value are left out (nothing to compare with). The result is JSON-serialisable and is
    stored in the logged model's ``scoring.json`` under ``feature_ranges``.
    """
    lo_q, hi_q = quantiles
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    cols = [c for c in _numeric_columns(manifest) if c in frame.columns]
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    n = np.isfinite(values).sum(axis=0)
    keep = n > 0
    cols = [c for c, k in zip(cols, keep, strict=True) if k]
    values = values[:, keep]
    with np.errstate(all="ignore"):
        q = np.nanquantile(values, [lo_q, hi_q, 0.5], axis=0) if cols else np.empty((3, 0))
    columns = {c: [float(q[0, j]), float(q[1, j]), float(q[2, j]), int(n[keep][j])] for j, c in enumerate(cols)}
    return {"quantiles": [lo_q, hi_q], "columns": columns}


@dataclass
class ShiftReport:
    """Out-of-range counts per column over the scored patients (the warnings' content)."""

    n_patients: int
    counts: dict[str, int]  # column -> patients with a value far outside the training range
    observed: dict[str, int]  # column -> patients with a value at all
    ranges: dict[str, list[float]]  # column -> [p01, p99, median, n]
    margin: float = DEFAULT_MARGIN
    examples: dict[str, float] = field(default_factory=dict)  # column -> the most extreme value seen

    @property
    def shifted(self) -> list[str]:
        """Columns with at least one patient out of range, most affected first."""
        return sorted((c for c, k in self.counts.items() if k > 0), key=lambda c: (-self.counts[c], c))

    def by_modality(self) -> dict[str, int]:
        """Number of shifted columns per modality (``clinical`` included)."""
        out: dict[str, int] = {}
        for c in self.shifted:
            out[c.split("/", 1)[0]] = out.get(c.split("/", 1)[0], 0) + 1
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per shifted column: modality, feature, patients out of range, observed, training range."""
        rows = []
        for c in self.shifted:
            lo, hi, med = self.ranges[c][:3]
            mod, feat = c.split("/", 1)
            rows.append({"modality": mod, "feature": feat, "patients_out_of_range": self.counts[c],
                         "patients_observed": self.observed.get(c, 0), "train_p01": lo, "train_p99": hi,
                         "train_median": med, "most_extreme": self.examples.get(c, math.nan)})
        return pd.DataFrame(rows, columns=["modality", "feature", "patients_out_of_range", "patients_observed",
                                           "train_p01", "train_p99", "train_median", "most_extreme"])

    def messages(self, limit: int = _MAX_MESSAGES) -> list[str]:
        """Human-readable warnings: a summary line, then the most affected features."""
        cols = self.shifted
        if not cols:
            return []
        mods = ", ".join(f"{m} ({k})" for m, k in sorted(self.by_modality().items()))
        head = (f"distribution shift: {len(cols)} feature(s) have values far outside the training range "
                f"(beyond the training 1st-99th percentiles by more than {self.margin:g} x their width) in "
                f"{mods}; scores of the patients concerned extrapolate beyond what the model was trained on")
        lines = [head]
        for c in cols[:limit]:
            lo, hi = self.ranges[c][:2]
            worst = self.examples.get(c, math.nan)
            lines.append(f"  {c}: {self.counts[c]} of {self.observed.get(c, 0)} patient(s) out of range "
                         f"(training p01-p99 [{lo:.4g}, {hi:.4g}], most extreme here {worst:.4g})")
        if len(cols) > limit:
            lines.append(f"  ... and {len(cols) - limit} more feature(s)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"n_patients": self.n_patients, "margin": self.margin,
                "features": self.to_frame().to_dict(orient="records")}


class ShiftCheck:
    """Checks flat frames chunk by chunk against the training ranges and accumulates a :class:`ShiftReport`.

    ``update(frame)`` returns the number of out-of-range features per patient of that frame (for the output's
    ``n_out_of_range`` column); :meth:`state` / :meth:`merge_state` carry the accumulated counts across resumed runs.
    """

    def __init__(self, ranges: Mapping[str, Any] | None, margin: float = DEFAULT_MARGIN):
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.ranges: dict[str, list[float]] = {str(k): list(v) for k, v in (ranges or {}).get("columns", {}).items()}
        self.columns = list(self.ranges)
        lo = np.array([v[0] for v in self.ranges.values()], dtype=np.float64)
        hi = np.array([v[1] for v in self.ranges.values()], dtype=np.float64)
        width = hi - lo
        tol = _CONSTANT_RTOL * np.maximum(1.0, np.abs(lo))
        pad = np.where(width > 0, self.margin * width, tol)
        self._low, self._high = lo - pad, hi + pad
        self.counts = np.zeros(len(self.columns), dtype=np.int64)
        self.observed = np.zeros(len(self.columns), dtype=np.int64)
        self.extreme = np.full(len(self.columns), np.nan)
        self.n_patients = 0

    @property
    def enabled(self) -> bool:
        return bool(self.columns)

    def update(self, frame: pd.DataFrame) -> np.ndarray:
        """Count out-of-range values of ``frame``'s rows; return the per-row count of out-of-range columns."""
        n = len(frame)
        self.n_patients += n
        if not self.columns or n == 0:
            return np.zeros(n, dtype=np.int64)
        have = [j for j, c in enumerate(self.columns) if c in frame.columns]
        values = np.full((n, len(self.columns)), np.nan)
        if have:
            block = frame[[self.columns[j] for j in have]].apply(pd.to_numeric, errors="coerce")
            values[:, have] = block.to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            out = finite & ((values < self._low) | (values > self._high))
        self.counts += out.sum(axis=0)
        self.observed += finite.sum(axis=0)
        # the most extreme offending value per column (largest distance from the training median)
        med = np.array([self.ranges[c][2] for c in self.columns])
        dist = np.where(out, np.abs(values - med), -1.0)
        worst = dist.argmax(axis=0)
        hit = out.any(axis=0)
        prev = np.where(np.isfinite(self.extreme), np.abs(self.extreme - med), -1.0)
        cand = values[worst, np.arange(len(self.columns))]
        better = hit & (np.abs(cand - med) > prev)
        self.extreme[better] = cand[better]
        return out.sum(axis=1)

    def state(self) -> dict[str, Any]:
        """JSON-able accumulated counts (stored with each checkpointed chunk)."""
        return {"n_patients": self.n_patients, "counts": self.counts.tolist(), "observed": self.observed.tolist(),
                "extreme": [None if not np.isfinite(x) else float(x) for x in self.extreme]}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """Add the counts of a chunk scored earlier (``state()`` of a check over the same ranges)."""
        if len(state.get("counts", [])) != len(self.columns):
            raise ValueError("shift state does not match these training ranges")
        self.n_patients += int(state["n_patients"])
        self.counts += np.asarray(state["counts"], dtype=np.int64)
        self.observed += np.asarray(state["observed"], dtype=np.int64)
        med = np.array([self.ranges[c][2] for c in self.columns])
        other = np.array([np.nan if x is None else x for x in state["extreme"]], dtype=np.float64)
        prev = np.where(np.isfinite(self.extreme), np.abs(self.extreme - med), -1.0)
        better = np.isfinite(other) & (np.abs(other - med) > prev)
        self.extreme[better] = other[better]

    def report(self) -> ShiftReport:
        return ShiftReport(
            n_patients=self.n_patients,
            counts={c: int(k) for c, k in zip(self.columns, self.counts, strict=True)},
            observed={c: int(k) for c, k in zip(self.columns, self.observed, strict=True)},
            ranges=self.ranges,
            margin=self.margin,
            examples={c: float(x) for c, x in zip(self.columns, self.extreme, strict=True) if np.isfinite(x)},
        )


def check_frames(frames: Iterable[pd.DataFrame], ranges: Mapping[str, Any] | None,
                 margin: float = DEFAULT_MARGIN) -> ShiftReport:
    """:class:`ShiftReport` of one or more flat frames against ``ranges`` (convenience for notebooks and tests)."""
    check = ShiftCheck(ranges, margin)
    for f in frames:
        check.update(f)
    return check.report()

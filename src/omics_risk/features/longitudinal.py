"""Longitudinal features at a prediction time, for any numeric quantity measured repeatedly per patient.

A serial quantity (ctDNA level, cfDNA tumour fraction, a metabolite, tumour volume) says most through its course:
where it started, where it is now, how fast it moves, how far it fell and whether it rose again. These functions
summarise that course **as known at a prediction time**: only draws dated on or before each patient's prediction
day are used, so a draw taken later can change no feature (no look-ahead; see docs/time.md).

Input is a long table (``patient_id``, ``day``, ``value``; :func:`long_values` makes one from the per-sample feature
store ``<modality>.samples.parquet``). Several draws on the same day count as one draw, their mean; NaN values are
ignored. Definitions (``spec`` is a :class:`LongitudinalSpec`; "detected" means ``value >= detection_limit``):

- ``baseline``: the value of the last draw in ``spec.baseline_window`` (days, both ends included); the **series**
  starts at the baseline draw (at the first draw when there is no baseline);
- ``last``, ``days_since_last``: the latest draw and the days from it to the prediction day;
- ``ratio`` = last / baseline (NaN unless baseline > 0), ``log2_ratio`` (NaN unless ratio > 0);
- ``slope``: least-squares slope of value on day over all draws up to the prediction day, per ``slope_per_days``
  days (NaN with fewer than ``min_draws_for_slope`` draws);
- ``nadir``, ``days_since_nadir``: the lowest value of the series and the days since its latest draw at that value;
- ``molecular_response``: last <= ``response_fraction`` x baseline; NaN without a draw after a baseline > 0 (and,
  with a detection limit, a detected baseline);
- ``clearance``: the last draw is below detection after a detected baseline; NaN without a detection limit, a
  detected baseline or a draw after it;
- ``redetection``: the last draw is detected after a draw below detection that followed a detected draw (in the
  series); NaN without a detection limit;
- ``molecular_progression``: the last draw is at least ``progression_factor`` x the nadir, above it and (with a
  detection limit) detected, or a re-detection;
- ``n_draws``: the number of draw days with a value (0 for a patient with none up to the prediction day).

Every feature but ``n_draws`` is NaN without a draw; the whole row is NaN for a patient whose prediction day is NaN
(not at risk at this prediction time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omics_risk.data.timing import sample_features

__all__ = ["FEATURES", "LongitudinalSpec", "long_values", "longitudinal_features", "longitudinal_table"]

#: Feature names, in column order (levels and times, then flags and the count); columns are ``<spec.name>__<feature>``.
FEATURES: tuple[str, ...] = (
    *("baseline", "last", "ratio", "log2_ratio", "slope", "nadir", "days_since_nadir", "days_since_last"),
    *("molecular_response", "clearance", "molecular_progression", "redetection", "n_draws"),
)


@dataclass(frozen=True)
class LongitudinalSpec:
    """Which quantity (``name``, also the feature column read by :func:`long_values`) and how to read its course."""

    name: str
    detection_limit: float | None = None
    response_fraction: float = 0.5
    progression_factor: float = 2.0
    baseline_window: tuple[float, float] = (-math.inf, 0.0)
    min_draws_for_slope: int = 2
    slope_per_days: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(
                "LongitudinalSpec.name must be a non-empty string naming the quantity, e.g. 'ctdna_mean_vaf'"
            )
        if self.detection_limit is not None and not self.detection_limit > 0:
            raise ValueError(f"{self.name}: detection_limit must be > 0 or None, got {self.detection_limit}")
        if not 0 < self.response_fraction < 1:
            raise ValueError(f"{self.name}: response_fraction must be in (0, 1) (0.5 = a 50 % drop)")
        if not self.progression_factor > 1:
            raise ValueError(f"{self.name}: progression_factor must be > 1 (2.0 = a doubling over the nadir)")
        lo, hi = (float(v) for v in self.baseline_window)
        if not lo <= hi or math.isnan(hi):
            raise ValueError(
                f"{self.name}: baseline_window must be (lo, hi) days with lo <= hi, got {self.baseline_window}"
            )
        object.__setattr__(self, "baseline_window", (lo, hi))
        if int(self.min_draws_for_slope) < 2:
            raise ValueError(f"{self.name}: min_draws_for_slope must be >= 2 (a slope needs two draws)")
        if not self.slope_per_days > 0:
            raise ValueError(f"{self.name}: slope_per_days must be > 0 (30.0 = change per 30 days)")

    def columns(self) -> list[str]:
        return [f"{self.name}__{f}" for f in FEATURES]


def _prediction_days(long: pd.DataFrame, prediction_day: pd.Series | float) -> pd.Series:
    """Per-patient prediction day; a scalar applies to every patient of ``long``."""
    if isinstance(prediction_day, pd.Series):
        if prediction_day.index.has_duplicates:
            dup = prediction_day.index[prediction_day.index.duplicated()].unique()[:5]
            raise ValueError(f"prediction_day names patients more than once: {', '.join(map(str, dup))}")
        return pd.to_numeric(prediction_day, errors="raise").astype(float).rename_axis("patient_id")
    patients = pd.Index(pd.unique(long["patient_id"]), name="patient_id").sort_values()
    return pd.Series(float(prediction_day), index=patients)


def _draws(long: pd.DataFrame, pday: pd.Series) -> pd.DataFrame:
    """One row per (patient, day) with a value on or before its prediction day, sorted (O(draws log draws))."""
    missing = {"patient_id", "day", "value"} - set(long.columns)
    if missing:
        raise ValueError(
            f"the long table needs columns patient_id, day, value; missing {', '.join(sorted(missing))} "
            "(long_values() builds it from a per-sample feature table)"
        )
    day = pd.to_numeric(long["day"], errors="coerce").to_numpy(float)
    value = pd.to_numeric(long["value"], errors="coerce").to_numpy(float)
    bad = np.isnan(day) & ~np.isnan(value)
    if bad.any():
        who = pd.unique(long["patient_id"].to_numpy()[bad])[:5]
        raise ValueError(
            f"draws without a day for patient(s) {', '.join(map(str, who))}: give every sample its day "
            "(days from the index date) in samples.csv, or drop those samples"
        )
    ids = pd.Index(pd.unique(long["patient_id"]))
    kinds = pd.api.types.infer_dtype(ids), pd.api.types.infer_dtype(pday.index)
    if len(ids) and len(pday) and kinds[0] != kinds[1] and not ids.isin(pday.index).any():  # e.g. 1 vs "1"
        raise ValueError(
            f"no patient of the long table (e.g. {ids[0]!r}) is in prediction_day (e.g. {pday.index[0]!r}): "
            "index prediction_day by the same patient_id values (same type too)"
        )
    cut = pday.reindex(long["patient_id"].to_numpy()).to_numpy(float)
    keep = ~np.isnan(value) & (day <= cut)  # NaN prediction day: comparison is False, nothing kept
    d = pd.DataFrame({"patient_id": long["patient_id"].to_numpy()[keep], "day": day[keep], "value": value[keep]})
    d = d.groupby(["patient_id", "day"], sort=True, as_index=False)["value"].mean()
    return d


def longitudinal_features(
    long: pd.DataFrame, prediction_day: pd.Series | float, spec: LongitudinalSpec
) -> pd.DataFrame:
    """One row per patient of ``prediction_day`` (index ``patient_id``), columns ``spec.columns()``.

    ``prediction_day``: days per patient (a Series indexed by patient_id; NaN = not at risk -> an all-NaN row) or one
    day for every patient of ``long``. Patients of ``long`` missing from the Series are left out. Cost: one sort of
    the draws (O(draws log draws)), then a fixed number of vectorised groupby passes, each O(draws); no per-patient
    Python loop. See the module docstring for the definitions.
    """
    pday = _prediction_days(long, prediction_day)
    d = _draws(long, pday)
    pid = d["patient_id"]
    g = d.groupby("patient_id", sort=False)
    x = d["day"].to_numpy(float)
    y = d["value"].to_numpy(float)
    n = g["value"].transform("size").to_numpy()
    pos = g.cumcount().to_numpy()
    is_last = pos == n - 1

    lo, hi = spec.baseline_window
    in_window = (x >= lo) & (x <= hi)
    base_pos = pd.Series(np.where(in_window, pos, -1)).groupby(pid).transform("max").to_numpy()
    has_base = base_pos >= 0
    base_val = pd.Series(np.where(pos == base_pos, y, np.nan)).groupby(pid).transform("max").to_numpy()
    in_series = pos >= np.maximum(base_pos, 0)
    after_base = has_base & (n - 1 > base_pos)

    series_y = pd.Series(np.where(in_series, y, np.nan))
    nadir = series_y.groupby(pid).transform("min").to_numpy()
    nadir_day = pd.Series(np.where(in_series & (y == nadir), x, np.nan)).groupby(pid).transform("max").to_numpy()

    # Least squares on centred days: slope = sum(dx * dy) / sum(dx^2).
    dx = x - pd.Series(x).groupby(pid).transform("mean").to_numpy()
    dy = y - pd.Series(y).groupby(pid).transform("mean").to_numpy()
    sxy = pd.Series(dx * dy).groupby(pid).transform("sum").to_numpy()
    sxx = pd.Series(dx * dx).groupby(pid).transform("sum").to_numpy()
    enough = (n >= int(spec.min_draws_for_slope)) & (sxx > 0)
    slope = np.where(enough, sxy / np.where(sxx > 0, sxx, 1.0) * spec.slope_per_days, np.nan)

    base_ok = base_val > 0
    ratio = np.where(has_base & base_ok, y / np.where(base_ok, base_val, 1.0), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        log2_ratio = np.where(ratio > 0, np.log2(np.where(ratio > 0, ratio, 1.0)), np.nan)
    rise = (y >= spec.progression_factor * nadir) & (y > nadir)

    dl = spec.detection_limit
    if dl is None:
        respondable = after_base & base_ok
        clearance = redetection = np.full(len(d), np.nan)
    else:
        detected = y >= dl
        base_detected = has_base & (base_val >= dl)
        respondable = after_base & base_ok & base_detected
        clearance = np.where(after_base & base_detected, (~detected).astype(float), np.nan)
        seen = pd.Series((in_series & detected).astype(int)).groupby(pid).cummax()
        seen_before = seen.groupby(pid).shift(1, fill_value=0).to_numpy() > 0
        cleared_row = in_series & ~detected & seen_before & ~is_last
        cleared_before = pd.Series(cleared_row.astype(int)).groupby(pid).transform("max").to_numpy() > 0
        redetection = (detected & cleared_before).astype(float)
        rise = rise & detected
    response = np.where(respondable, (y <= spec.response_fraction * base_val).astype(float), np.nan)
    progression = (rise | (np.nan_to_num(redetection) > 0)).astype(float)

    p = pday.reindex(pid.to_numpy()).to_numpy(float)
    rows = pd.DataFrame(
        {
            "baseline": np.where(has_base, base_val, np.nan),
            "last": y,
            "ratio": ratio,
            "log2_ratio": log2_ratio,
            "slope": slope,
            "nadir": nadir,
            "days_since_nadir": p - nadir_day,
            "days_since_last": p - x,
            "molecular_response": response,
            "clearance": clearance,
            "molecular_progression": progression,
            "redetection": redetection,
            "n_draws": n.astype(float),
        },
        index=pd.Index(pid.to_numpy(), name="patient_id"),
    )[is_last]
    out = rows.reindex(pday.index)
    out.loc[pday.notna().to_numpy() & out["n_draws"].isna().to_numpy(), "n_draws"] = 0.0
    out.columns = spec.columns()
    out.index.name = "patient_id"
    return out.astype(float)


def long_values(samples_table: pd.DataFrame, feature: str) -> pd.DataFrame:
    """The (patient_id, day, value) long table of one feature of a per-sample feature table.

    ``samples_table`` has the ``<modality>.samples.parquet`` layout: index sample_id, columns patient_id, timepoint,
    day, then the sample's features (no timepoint prefix).
    """
    missing = {"patient_id", "day"} - set(samples_table.columns)
    if missing:
        raise ValueError(
            f"the per-sample feature table needs columns patient_id and day (missing {', '.join(sorted(missing))}); "
            "it is the <modality>.samples.parquet of the feature store"
        )
    if feature not in samples_table.columns:
        have = sample_features(samples_table)
        raise ValueError(
            f"feature {feature!r} is not in the per-sample feature table; it has {len(have)} features, "
            f"e.g. {', '.join(map(str, have[:8]))}"
        )
    value = pd.to_numeric(samples_table[feature], errors="coerce")
    if value.isna().sum() > samples_table[feature].isna().sum():
        raise ValueError(f"feature {feature!r} is not numeric: a longitudinal quantity must be a number per sample")
    return pd.DataFrame(
        {
            "patient_id": samples_table["patient_id"].to_numpy(),
            "day": pd.to_numeric(samples_table["day"], errors="coerce").to_numpy(float),
            "value": value.to_numpy(float),
        }
    )


def longitudinal_table(
    samples_table: pd.DataFrame, prediction_day: pd.Series | float, specs: Sequence[LongitudinalSpec]
) -> pd.DataFrame:
    """Longitudinal features of several quantities of one per-sample table, side by side (one row per patient)."""
    if not specs:
        raise ValueError("longitudinal_table needs at least one LongitudinalSpec")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two LongitudinalSpecs name the same quantity: {names}")
    prediction_day = _prediction_days(samples_table, prediction_day)  # a scalar: every patient of the table
    blocks = [longitudinal_features(long_values(samples_table, s.name), prediction_day, s) for s in specs]
    return pd.concat(blocks, axis=1)

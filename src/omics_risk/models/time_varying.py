"""A time-varying Cox baseline: the hazard at each day follows the latest serial measurements up to that day.

Serial values (ctDNA level, tumour fraction, a metabolite) come as a long table (``patient_id``, ``day``, features).
:func:`start_stop_frame` turns them into counting-process intervals: a patient is at risk from day 0 (or from the
first draw, if later: delayed entry) to the end of follow-up, and each interval carries the values of the draw that
opened it, so the hazard at any day depends only on draws made before it. lifelines' ``CoxTimeVaryingFitter`` fits
the model; :meth:`TimeVaryingCox.predict_risk` scores a patient at a prediction day from the last values at or before
that day, the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxTimeVaryingFitter

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelCapabilities
from omics_risk.models.landmark import ridge_cox_fit
from omics_risk.models.tabular import BaselineModel, describe_sequence, make_tabular_pipeline

__all__ = ["TimeVaryingCox", "last_values", "start_stop_frame"]

ID, DAY = "patient_id", "day"


def _feature_columns(long: pd.DataFrame, features: Sequence[str] | None) -> list[str]:
    missing = [c for c in (ID, DAY) if c not in long.columns]
    if missing:
        raise KeyError(f"the long table of serial measurements needs columns {ID} and {DAY} (days from the index "
                       f"date); missing {', '.join(missing)} (has: {', '.join(map(str, long.columns))})")
    feats = [c for c in long.columns if c not in (ID, DAY)] if features is None else list(features)
    absent = [c for c in feats if c not in long.columns]
    if absent or not feats:
        raise KeyError(f"feature column(s) {', '.join(absent) or '(none)'} are not in the long table "
                       f"(has: {', '.join(map(str, long.columns))})")
    return feats


def _per_draw(long: pd.DataFrame, feats: list[str]) -> pd.DataFrame:
    """One row per (patient, draw day), sorted; draws on the same day merged (last non-missing value per feature)."""
    if long[DAY].isna().any():
        first = long.loc[long[DAY].isna(), ID].iloc[0]
        raise ValueError(f"the long table has draws without a day (first: patient {first}); date every draw")
    return long[[ID, DAY, *feats]].sort_values([ID, DAY], kind="stable").groupby([ID, DAY], sort=True).last()


def start_stop_frame(long: pd.DataFrame, time: Sequence[float] | np.ndarray, event: Sequence[float] | np.ndarray,
                     patients: Sequence[Any], *, features: Sequence[str] | None = None) -> pd.DataFrame:
    """Counting-process rows ``patient_id, start, stop, event, <features>`` of ``patients`` (their follow-up ``time``
    and ``event`` in days from the index date, in the same order).

    Each interval ``[day_k, day_{k+1})`` carries the values measured at ``day_k`` (a value missing at a draw is carried
    forward from an earlier draw, never back from a later one); the last interval ends at the patient's time with its
    event flag. Draws on or after the event or censoring day are dropped; draws before day 0 only set the values at
    day 0 (follow-up starts there). A patient without any draw before the end of follow-up has no rows; the frame's
    ``attrs["no_draws"]`` lists them.
    """
    feats = _feature_columns(long, features)
    pats = pd.Index(list(patients), name=ID)
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    if not (len(pats) == len(time) == len(event)):
        raise ValueError(f"patients, time and event must have one length, got {len(pats)}, {len(time)}, {len(event)}")
    if pats.has_duplicates:
        raise ValueError(f"patients must be unique; repeated: {', '.join(map(str, pats[pats.duplicated()][:5]))}")
    if not np.isfinite(time).all() or (time < 0).any():
        raise ValueError("every patient needs a finite follow-up time >= 0 days; leave out those without follow-up")
    end = pd.Series(time, index=pats)
    draws = _per_draw(long[long[ID].isin(pats)], feats).reset_index()
    draws = draws[draws[DAY].to_numpy() < end.reindex(draws[ID]).to_numpy()].copy()
    draws[feats] = draws.groupby(ID, sort=False)[feats].ffill()  # earlier draws only: rows are sorted by day
    draws["start"] = draws[DAY].clip(lower=0.0)
    draws = draws.drop_duplicates([ID, "start"], keep="last")  # pre-index draws: only the latest sets day 0
    nxt = draws.groupby(ID, sort=False)["start"].shift(-1)
    last = nxt.isna().to_numpy()
    draws["stop"] = np.where(last, end.reindex(draws[ID]).to_numpy(), nxt.to_numpy())
    draws["event"] = np.where(last, pd.Series(event, index=pats).reindex(draws[ID]).to_numpy(), 0.0)
    out = draws[[ID, "start", "stop", "event", *feats]].reset_index(drop=True)
    out.attrs["no_draws"] = [p for p in pats if p not in set(out[ID])]
    return out


def last_values(long: pd.DataFrame, day: float | Sequence[float] | np.ndarray, patients: Sequence[Any], *,
                features: Sequence[str] | None = None) -> pd.DataFrame:
    """Per patient, the latest value of each feature measured at or before its prediction ``day`` (one day for all
    or one per patient); NaN where nothing was measured by then. Nothing after the day is read."""
    feats = _feature_columns(long, features)
    pats = pd.Index(list(patients), name=ID)
    cutoff = pd.Series(np.broadcast_to(np.asarray(day, dtype=float), (len(pats),)), index=pats)
    rows = long[long[ID].isin(pats)]
    rows = rows[rows[DAY].to_numpy() <= cutoff.reindex(rows[ID]).to_numpy()]
    return _per_draw(rows, feats).groupby(level=ID).last().reindex(pats)


class TimeVaryingCox(BaselineModel):
    """Cox model with time-varying covariates (lifelines ``CoxTimeVaryingFitter``, ridge ``penalizer``) on the serial
    measurements of a long table, fitted on :func:`start_stop_frame` intervals with fold-fitted preprocessing (the
    baselines' ``standard`` pipeline: missingness filter, median imputation, scaling, fitted on the training
    intervals). ``fit(data, long=...)`` reads the outcome of ``data`` in days from the index date;
    ``predict_risk(data, long=..., day=...)`` scores each patient from :func:`last_values` at its prediction day
    (default: ``data.prediction_day``, else ``data.landmark``, else day 0), and a patient with no draw by then gets
    the training median. Risk only: the model has no baseline hazard for survival curves.
    """

    name = "time_varying_cox"

    def __init__(self, features: Sequence[str] | None = None, *, penalizer: float = 0.1, max_missing: float = 0.5,
                 modalities: Sequence[str] | None = None, clinical_types: Any = None, seed: int = 0,
                 device: str = "cpu"):
        self.features = features
        self.penalizer = penalizer
        self.max_missing = max_missing
        self.seed = seed
        # accepted for the model contract (ModelContext): the inputs are the long table's features, on the CPU
        self.modalities, self.clinical_types, self.device = modalities, clinical_types, device
        self.task = "survival"

    def fit(self, data: MultimodalData, *, long: pd.DataFrame) -> TimeVaryingCox:  # type: ignore[override]
        if data.time is None or data.event is None:
            raise ValueError(f"{self.name} needs a survival endpoint; '{data.endpoint}' has no time/event")
        with self._timed():
            frame = start_stop_frame(long, data.time, data.event, data.patients, features=self.features)
            if frame["event"].sum() < 2:
                raise ValueError(f"{self.name}: {int(frame['event'].sum())} events among the patients with draws; "
                                 "too few to fit")
            self.features_ = [c for c in frame.columns if c not in (ID, "start", "stop", "event")]
            self.pipeline_ = make_tabular_pipeline("standard", max_missing=self.max_missing).fit(frame[self.features_])
            names = [str(c) for c in self.pipeline_.get_feature_names_out()]
            df = pd.DataFrame(self.pipeline_.transform(frame[self.features_]), columns=names)
            df = df.assign(**{"__id": pd.factorize(frame[ID])[0], "__start": frame["start"].to_numpy(),
                              "__stop": frame["stop"].to_numpy(), "__event": frame["event"].to_numpy()})
            self.ctv_, self.penalizer_ = ridge_cox_fit(
                CoxTimeVaryingFitter, df, self.penalizer, f"{self.name} on {len(df)} intervals x {len(names)} features",
                id_col="__id", event_col="__event", start_col="__start", stop_col="__stop")
            self.coef_ = self.ctv_.params_.copy()
            self.task_ = "survival"
            self.n_train_ = int(frame[ID].nunique())
            start = last_values(long, 0.0, data.patients, features=self.features_)
            seen = start.notna().any(axis=1).to_numpy()
            self.risk_median_ = float(np.median(self._score(start[seen]))) if seen.any() else 0.0
        return self

    def _score(self, values: pd.DataFrame) -> np.ndarray:
        Z = pd.DataFrame(self.pipeline_.transform(values), columns=list(self.coef_.index))
        return np.asarray(self.ctv_.predict_log_partial_hazard(Z), dtype=np.float64).ravel()

    def predict_risk(self, data: MultimodalData, *, long: pd.DataFrame,  # type: ignore[override]
                     day: float | Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Log relative hazard from the last values at or before each patient's prediction day (higher = riskier)."""
        self._check_fitted()
        if day is None:
            day = getattr(data, "prediction_day", None)
            day = getattr(data, "landmark", None) if day is None else day
            day = 0.0 if day is None else day
        values = last_values(long, day, data.patients, features=self.features_)
        seen = values.notna().any(axis=1).to_numpy()
        risk = np.full(len(data), self.risk_median_)
        if seen.any():
            risk[seen] = self._score(values[seen])
        return risk

    def capabilities(self) -> ModelCapabilities:
        return ModelCapabilities()

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "features": describe_sequence(self.features), "penalizer": self.penalizer,
                "max_missing": self.max_missing}

"""Prediction times: when a model predicts, which samples it may use, and who is still at risk then.

A task names its prediction time in ``task.prediction_time`` (:meth:`PredictionTime.from_config`): the index date
(day 0), a fixed day, each patient's sample at a named timepoint, or a list of landmark days. Model inputs then use
only samples taken at or before it (:func:`select_samples`), patients whose event or censoring came at or before it
leave the risk set, and outcome times count from it (:func:`at_risk`). Nothing measured later can reach a model, so
neither can the outcome through it (a sample that exists only for patients who survived to take it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "KINDS",
    "SAMPLE_COLUMNS",
    "PredictionTime",
    "at_risk",
    "prediction_days",
    "sample_features",
    "select_samples",
    "slot_table",
]

#: The kinds of prediction time (``task.prediction_time.at``).
KINDS = ("index", "day", "timepoint", "landmarks")
#: The keys ``task.prediction_time`` may hold.
_KEYS = ("at", "day", "timepoint", "landmarks", "windows")
_KEY = "task.prediction_time"
#: Separates a slot from a feature in the column names of a modality table.
SLOT_SEP = "__"
#: Columns of a per-sample table (``<modality>.samples.parquet``, :func:`select_samples`) that are not features.
SAMPLE_COLUMNS = ("patient_id", "slot", "sample_id", "timepoint", "day")
_EXAMPLES = ("{at: index}, {at: day, day: 90}, {at: timepoint, timepoint: c3d1}, {at: landmarks, landmarks: [0, 90, "
             "180]}; optionally windows: {last: [-30, 0]}")


def _number(value: Any, key: str) -> float:
    """A finite number from the config, or an error naming the key."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_KEY}.{key} must be a number of days, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{_KEY}.{key} must be a finite number of days, got {value!r}")
    return out


def _windows(node: Any) -> dict[str, tuple[float, float]] | None:
    """``windows`` from the config: slot -> (lo, hi) days relative to the prediction time, hi <= 0."""
    if node is None:
        return None
    if not isinstance(node, Mapping) or not node:
        raise ValueError(f"{_KEY}.windows must map slot names to [lo, hi] days relative to the prediction time, e.g. "
                         f"{{last: [-30, 0]}}; got {node!r}")
    out: dict[str, tuple[float, float]] = {}
    for slot, bounds in node.items():
        name = str(slot)
        if not name or SLOT_SEP in name or "/" in name:
            raise ValueError(f"{_KEY}.windows: slot name {name!r} must be non-empty without '{SLOT_SEP}' or '/'")
        if isinstance(bounds, str | bytes) or not isinstance(bounds, Iterable) or len(list(bounds)) != 2:
            raise ValueError(f"{_KEY}.windows.{name} must be [lo, hi] (days relative to the prediction time), "
                             f"got {bounds!r}")
        lo, hi = (_number(b, f"windows.{name}") for b in bounds)
        if lo > hi:
            raise ValueError(f"{_KEY}.windows.{name}: lo {lo:g} > hi {hi:g}; write [lo, hi] with lo <= hi, e.g. "
                             "[-30, 0]")
        if hi > 0:
            raise ValueError(f"{_KEY}.windows.{name}: hi {hi:g} > 0 reaches after the prediction time (look-ahead); "
                             "windows end at or before it, e.g. [-30, 0]")
        out[name] = (lo, hi)
    return out


@dataclass(frozen=True)
class PredictionTime:
    """When a model predicts (see the module doc). ``windows``: slot -> [lo, hi] days relative to the prediction
    time (the latest sample in the window fills the slot); None: slots are the samples' timepoint labels."""

    at: str = "index"
    day: float | None = None  # at == "day"
    timepoint: str | None = None  # at == "timepoint"
    landmarks: tuple[float, ...] = ()  # at == "landmarks"
    windows: dict[str, tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if self.at not in KINDS:
            raise ValueError(f"{_KEY}.at: unknown kind {self.at!r}; write one of {', '.join(KINDS)}, e.g. {_EXAMPLES}")
        if self.at == "day" and self.day is None:
            raise ValueError(f"{_KEY}: at: day needs the day, e.g. {{at: day, day: 90}}")
        if self.at == "timepoint" and not self.timepoint:
            raise ValueError(f"{_KEY}: at: timepoint needs the timepoint label, e.g. "
                             "{at: timepoint, timepoint: c3d1}")
        if self.at == "landmarks":
            if not self.landmarks:
                raise ValueError(f"{_KEY}: at: landmarks needs a list of days, e.g. "
                                 "{at: landmarks, landmarks: [0, 90, 180]}")
            if list(self.landmarks) != sorted(set(self.landmarks)):
                raise ValueError(f"{_KEY}.landmarks must be increasing without repeats, got {list(self.landmarks)}")

    @classmethod
    def from_config(cls, node: Any) -> PredictionTime:
        """The prediction time a task config states (``task.prediction_time``): None -> the index date; a mapping
        with ``at`` (index, day, timepoint, landmarks), its value and optional ``windows``."""
        if node is None:
            return cls()
        if isinstance(node, str):
            if node == "index":
                return cls()
            raise ValueError(f"{_KEY}: {node!r} is not a prediction time; write one of {_EXAMPLES}")
        if not isinstance(node, Mapping):
            raise ValueError(f"{_KEY} must be null or a mapping such as {_EXAMPLES}; got {node!r}")
        unknown = [str(k) for k in node if k not in _KEYS]
        if unknown:
            raise ValueError(f"{_KEY}: unknown key(s) {unknown} (allowed: {', '.join(_KEYS)}); e.g. {_EXAMPLES}")
        at = str(node.get("at", "index"))
        if at not in KINDS:
            raise ValueError(f"{_KEY}.at: unknown kind {at!r}; write one of {', '.join(KINDS)}, e.g. {_EXAMPLES}")
        wrong = [k for k in ("day", "timepoint", "landmarks") if node.get(k) is not None and k != at]
        if wrong:
            raise ValueError(f"{_KEY}: {', '.join(wrong)} given with at: {at}; write at: {wrong[0]} or drop it")
        day = _number(node["day"], "day") if node.get("day") is not None else None
        landmarks: tuple[float, ...] = ()
        if node.get("landmarks") is not None:
            raw = node["landmarks"]
            if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
                raise ValueError(f"{_KEY}.landmarks must be a list of days, e.g. [0, 90, 180]; got {raw!r}")
            landmarks = tuple(_number(v, "landmarks") for v in raw)
        tp = node.get("timepoint")
        return cls(at=at, day=day, timepoint=None if tp is None else str(tp), landmarks=landmarks,
                   windows=_windows(node.get("windows")))

    def to_config(self) -> dict[str, Any]:
        """The ``task.prediction_time`` mapping that :meth:`from_config` reads back to this prediction time (plain
        JSON values; a logged model stores it)."""
        out: dict[str, Any] = {"at": self.at}
        if self.at == "day":
            out["day"] = self.day
        elif self.at == "timepoint":
            out["timepoint"] = self.timepoint
        elif self.at == "landmarks":
            out["landmarks"] = list(self.landmarks)
        if self.windows:
            out["windows"] = {slot: [lo, hi] for slot, (lo, hi) in self.windows.items()}
        return out

    def at_landmark(self, day: float) -> PredictionTime:
        """The single prediction time of one landmark (same windows)."""
        return PredictionTime(at="day", day=float(day), windows=self.windows)

    def describe(self) -> str:
        """Short text for logs, reports and summary.json."""
        if self.at == "day":
            what = f"day {self.day:g}"
        elif self.at == "timepoint":
            what = f"each patient's latest '{self.timepoint}' sample"
        elif self.at == "landmarks":
            what = "landmarks at days " + ", ".join(f"{d:g}" for d in self.landmarks)
        else:
            what = "the index date (day 0)"
        if self.windows:
            what += "; slots " + ", ".join(f"{s} [{lo:g}, {hi:g}]" for s, (lo, hi) in self.windows.items())
        return what


def prediction_days(pt: PredictionTime, samples: pd.DataFrame, patients: Iterable[str]) -> pd.Series:
    """Each patient's prediction day for a single-time kind (NaN: the patient has no such time and is not at risk).

    ``samples``: the cohort's samples.csv rows (``patient_id``, ``timepoint``, ``day``), for ``at: timepoint``.
    """
    index = pd.Index(list(patients), name="patient_id")
    if pt.at == "index":
        return pd.Series(0.0, index=index, name="prediction_day")
    if pt.at == "day":
        return pd.Series(float(pt.day), index=index, name="prediction_day")  # type: ignore[arg-type]
    if pt.at == "timepoint":
        rows = samples[samples["timepoint"].astype(str) == pt.timepoint]
        if rows.empty:
            labels = sorted(samples["timepoint"].astype(str).unique())
            shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
            raise ValueError(f"{_KEY}.timepoint: no sample of the cohort carries timepoint '{pt.timepoint}' "
                             f"(samples.csv has: {shown}); write one of these")
        days = pd.to_numeric(rows["day"], errors="coerce").groupby(rows["patient_id"].astype(str)).max()
        return days.reindex(index).astype(float).rename("prediction_day")
    raise ValueError(f"{_KEY}: at: landmarks has one prediction time per landmark; take them one by one "
                     "(PredictionTime.at_landmark, or load_landmarks for the data sets)")


def at_risk(time: Any, event: Any, day: Any) -> tuple[np.ndarray, np.ndarray]:
    """Who is in the risk set at the prediction ``day`` (per patient), and the outcome time counted from it.

    A patient whose event or censoring came at or before the prediction day (``time <= day``), or who has no
    prediction day (NaN) or no outcome, is not at risk: an event and a censoring at the prediction day both leave.
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float)
    if e.shape != t.shape:
        raise ValueError(f"at_risk: time and event differ in length ({t.shape} vs {e.shape})")
    d = np.broadcast_to(np.asarray(day, dtype=float), t.shape)
    shifted = t - d
    mask = np.isfinite(shifted) & np.isfinite(e) & (shifted > 0)
    return mask, shifted


def sample_features(table: pd.DataFrame) -> list:
    """The feature columns of a per-sample table (everything but :data:`SAMPLE_COLUMNS`), in table order."""
    return [c for c in table.columns if c not in SAMPLE_COLUMNS]


def select_samples(samples_long: pd.DataFrame, day_per_patient: pd.Series,
                   windows: Mapping[str, tuple[float, float]] | None) -> pd.DataFrame:
    """The samples a model may use at each patient's prediction day, assigned to slots.

    ``samples_long``: one row per sample (index ``sample_id``; columns ``patient_id``, ``timepoint``, ``day``, then
    features), e.g. a ``<modality>.samples.parquet`` table. Only samples with ``day <= prediction day`` are kept.
    A slot is the sample's timepoint label (``windows`` None) or each window ``[lo, hi]`` its day falls in, relative
    to the prediction day; the latest sample fills a slot (ties: the later row). Returns one row per (patient, slot):
    columns ``patient_id``, ``slot``, ``sample_id``, ``timepoint``, ``day``, then the features.
    """
    pday = day_per_patient.astype(float).dropna()
    s = samples_long.rename_axis("sample_id").reset_index()
    s["patient_id"] = s["patient_id"].astype(str)
    s["day"] = s["day"].astype(float)
    rel = s["day"].to_numpy(dtype=float) - s["patient_id"].map(pday).to_numpy(dtype=float)
    keep = np.isfinite(rel) & (rel <= 0)
    s = s.loc[keep].assign(_rel=rel[keep])
    if windows is None:
        s = s.assign(slot=s["timepoint"].astype(str))
    else:
        parts = [s[(s["_rel"] >= lo) & (s["_rel"] <= hi)].assign(slot=slot) for slot, (lo, hi) in windows.items()]
        s = pd.concat(parts) if parts else s.iloc[:0].assign(slot="")
    s = s.assign(_row=np.arange(len(s))).sort_values(["patient_id", "slot", "day", "_row"], kind="stable")
    s = s.drop_duplicates(["patient_id", "slot"], keep="last")
    features = sample_features(samples_long)
    return s[["patient_id", "slot", "sample_id", "timepoint", "day", *features]].reset_index(drop=True)


def slot_table(selected: pd.DataFrame, patients: pd.Index) -> pd.DataFrame:
    """Patient x ``<slot>__<feature>`` table of :func:`select_samples`' rows (NaN rows for patients without any;
    columns sorted, all-NaN ones left out)."""
    features = sample_features(selected)
    if selected.empty or not features:
        return pd.DataFrame(index=patients, dtype="float64")
    wide = selected.set_index(["patient_id", "slot"])[features].astype("float64").unstack("slot")
    wide.columns = [f"{slot}{SLOT_SEP}{feat}" for feat, slot in wide.columns]
    wide = wide.dropna(axis=1, how="all")
    return wide.reindex(index=patients, columns=sorted(wide.columns)).astype("float64")

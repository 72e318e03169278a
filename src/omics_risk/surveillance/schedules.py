"""Follow-up schedules: which days each patient gets a CT (and a ctDNA draw), as numpy arrays over patients.

Every schedule answers :meth:`Schedule.plan` with the planned scan days of every patient (``(n, k)`` padded with
``inf``), fixed in advance: a scan before the recurrence is negative and does not change the next one, so a schedule
is a list of days per patient and the simulation (:mod:`.simulate`) only has to find the first scan at or after the
onset. The ctDNA-triggered schedule also plans draws; what a positive draw triggers is simulated there.

Intervals are written in months in the configs (``configs/surveillance/schedule/*.yaml``; a month is 365.25 / 12
days) and held in days here. Every class is built from a ``_target_`` config by :func:`build_schedule`, which
imports only the classes of this module (a config file cannot make the CLI import other code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DAYS_PER_MONTH",
    "CtdnaTriggeredSchedule",
    "FixedSchedule",
    "RiskAdaptedSchedule",
    "Schedule",
    "ScheduleError",
    "StageBasedSchedule",
    "TableSchedule",
    "build_schedule",
    "build_schedules",
    "default_schedule_configs",
    "segment_days",
]

DAYS_PER_MONTH = 365.25 / 12


class ScheduleError(ValueError):
    """A schedule config that cannot work (an unknown class, a negative interval, a table without a day column)."""


def segment_days(segments: Sequence[Mapping[str, float]], horizon: float, start: float = 0.0) -> np.ndarray:
    """Scan days of a piecewise-regular plan: ``[{every_months: 6, until_months: 24}, {every_months: 12}]`` scans
    every 6 months up to month 24, then yearly up to ``horizon`` (days); the last segment's ``until`` defaults to
    the horizon. The first scan is one interval after ``start``."""
    days: list[float] = []
    t = float(start)
    for k, seg in enumerate(segments):
        every = float(seg["every_months"]) * DAYS_PER_MONTH
        if every <= 0:
            raise ScheduleError(f"segment {k + 1}: every_months must be positive, got {seg['every_months']}")
        until = seg.get("until_months")
        stop = min(horizon, float(until) * DAYS_PER_MONTH) if until is not None else horizon
        while t + every <= stop + 1e-6:
            t += every
            days.append(t)
    return np.asarray(days, dtype=float)


def _pad(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Ragged per-patient day lists as ``(n, k)`` padded with ``inf`` (k >= 1)."""
    width = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), width), np.inf)
    for i, r in enumerate(rows):
        out[i, :len(r)] = np.sort(r)
    return out


@dataclass(frozen=True)
class PlanInputs:
    """What a schedule may look at: the patients, their stage group and predicted recurrence-free curve."""

    patient_ids: np.ndarray
    horizon: float
    stage: np.ndarray | None = None  # per patient, str (None / "" = unknown)
    times: np.ndarray | None = None  # grid of the predicted curves (days, increasing, > 0)
    survival: np.ndarray | None = None  # (n, len(times)) predicted recurrence-free probability


class Schedule:
    """Base of the schedules: a name, a family (for the trade-off plot) and the planned scans."""

    name: str
    family: str = "fixed"
    uses_ctdna: bool = False

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        """Planned scan days, ``(n, k)`` padded with ``inf``, each row increasing, all within the horizon."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class FixedSchedule(Schedule):
    """The same scan days for everyone: ``segments`` of regular intervals (``[]`` = no scans: symptoms only)."""

    name: str = "ct_6m"
    segments: list[dict[str, float]] = field(default_factory=lambda: [{"every_months": 6}])
    family: str = "fixed"

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        days = segment_days(self.segments, inputs.horizon)
        return _pad([days] * len(inputs.patient_ids))

    def describe(self) -> str:
        if not self.segments:
            return "no scheduled CT (recurrences found by symptoms only)"
        parts = [f"every {s['every_months']:g} months" + (f" to month {s['until_months']:g}"
                                                          if s.get("until_months") is not None else "")
                 for s in self.segments]
        return "CT " + ", then ".join(parts)


@dataclass
class StageBasedSchedule(Schedule):
    """Segments per pathological stage group (``plans: {IB: [...], IIIA: [...]}``); a stage not listed, or missing,
    gets ``default`` (the patient's row says so)."""

    name: str = "stage_based"
    column: str = "stage"
    plans: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    default: list[dict[str, float]] = field(default_factory=lambda: [{"every_months": 6}])
    family: str = "stage"

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        stage = inputs.stage if inputs.stage is not None else np.full(len(inputs.patient_ids), None)
        cache = {k: segment_days(v, inputs.horizon) for k, v in self.plans.items()}
        fallback = segment_days(self.default, inputs.horizon)
        return _pad([cache.get(str(s), fallback) for s in stage])

    def known(self, stage: np.ndarray | None, n: int) -> np.ndarray:
        """Which patients have a stage the plan lists."""
        if stage is None:
            return np.zeros(n, dtype=bool)
        return np.isin(np.asarray(stage, dtype=object).astype(str), list(self.plans))

    def describe(self) -> str:
        return f"CT by {self.column}: " + "; ".join(
            f"{k}: " + FixedSchedule(segments=v).describe().removeprefix("CT ") for k, v in self.plans.items())


@dataclass
class RiskAdaptedSchedule(Schedule):
    """The next CT when the predicted probability of recurrence since the last negative scan reaches ``threshold``:
    the first day ``t`` with ``(S(last) - S(t)) / S(last) >= threshold`` on the patient's predicted curve ``S``,
    kept between ``min_interval_months`` and ``max_interval_months`` (null: no cap, so a patient whose curve never
    falls that far gets no scan). ``thresholds`` (a list) makes one schedule per value: the trade-off curve."""

    name: str = "risk_adapted"
    threshold: float = 0.05
    thresholds: list[float] | None = None
    min_interval_months: float = 3.0
    max_interval_months: float | None = None
    family: str = "risk_adapted"

    def __post_init__(self) -> None:
        for t in [self.threshold, *(self.thresholds or [])]:
            if not 0 < float(t) < 1:
                raise ScheduleError(f"{self.name}: a threshold is a probability between 0 and 1, got {t}")
        if self.min_interval_months <= 0:
            raise ScheduleError(f"{self.name}: min_interval_months must be positive")

    def expand(self) -> list[RiskAdaptedSchedule]:
        """One schedule per threshold of ``thresholds`` (itself when there is no grid)."""
        if not self.thresholds:
            return [self]
        return [RiskAdaptedSchedule(f"{self.name}_{t:g}", float(t), None, self.min_interval_months,
                                    self.max_interval_months) for t in self.thresholds]

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        if inputs.survival is None or inputs.times is None:
            raise ScheduleError(f"{self.name} needs each patient's predicted survival curve (a model, or "
                                "--risk-from truth on a synthetic cohort)")
        times = np.concatenate([[0.0], np.asarray(inputs.times, dtype=float)])
        surv = np.column_stack([np.ones(len(inputs.survival)), np.asarray(inputs.survival, dtype=float)])
        surv = np.minimum.accumulate(np.clip(surv, 0.0, 1.0), axis=1)  # a curve never rises
        lo = self.min_interval_months * DAYS_PER_MONTH
        hi = self.max_interval_months * DAYS_PER_MONTH if self.max_interval_months is not None else np.inf
        n = len(surv)
        last = np.zeros(n)
        rows: list[list[float]] = [[] for _ in range(n)]
        active = np.ones(n, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            s_last = _interp_rows(last[idx], times, surv[idx])
            target = s_last * (1 - self.threshold)
            nxt = _first_crossing(target, times, surv[idx])
            nxt = np.clip(nxt, last[idx] + lo, last[idx] + hi)
            ok = nxt <= inputs.horizon + 1e-6
            for i, d in zip(idx[ok], nxt[ok], strict=True):
                rows[i].append(float(d))
            last[idx[ok]] = nxt[ok]
            active[idx[~ok]] = False
        return _pad([np.asarray(r) for r in rows])

    def describe(self) -> str:
        cap = f", at most {self.max_interval_months:g} months" if self.max_interval_months is not None else ""
        return (f"CT when the predicted recurrence probability since the last negative scan reaches "
                f"{self.threshold:g} (at least {self.min_interval_months:g} months apart{cap})")


def _interp_rows(x: np.ndarray, times: np.ndarray, surv: np.ndarray) -> np.ndarray:
    """Each row's curve at its own ``x`` (linear between grid days, flat beyond the last)."""
    j = np.clip(np.searchsorted(times, x, side="right") - 1, 0, len(times) - 1)
    j1 = np.minimum(j + 1, len(times) - 1)
    r = np.arange(len(x))
    span = np.where(j1 > j, times[j1] - times[j], 1.0)
    w = np.clip(np.where(j1 > j, (x - times[j]) / span, 0.0), 0, 1)
    return surv[r, j] * (1 - w) + surv[r, j1] * w


def _first_crossing(target: np.ndarray, times: np.ndarray, surv: np.ndarray) -> np.ndarray:
    """First day each row's curve reaches ``target`` or below (linear between grid days); ``inf`` if never."""
    below = surv <= target[:, None]
    hit = below.any(axis=1)
    j = below.argmax(axis=1)
    r = np.arange(len(target))
    jp = np.maximum(j - 1, 0)
    s0, s1 = surv[r, jp], surv[r, j]
    frac = np.where(s0 > s1, (s0 - target) / np.where(s0 > s1, s0 - s1, 1.0), 1.0)
    day = times[jp] + np.clip(frac, 0, 1) * (times[j] - times[jp])
    return np.where(hit, np.where(j == 0, times[0], day), np.inf)


@dataclass
class CtdnaTriggeredSchedule(Schedule):
    """ctDNA draws every ``draw_every_months``; a positive draw brings a CT ``ct_delay_days`` later, repeated every
    ``confirm_every_months`` while CT stays negative; plus an optional sparse CT ``backbone`` (segments). A draw
    after the molecular onset is positive with probability ``sensitivity``; one before it with probability
    ``1 - specificity`` (that CT is negative and draws go on)."""

    name: str = "ctdna_triggered"
    draw_every_months: float = 3.0
    first_draw_months: float | None = None
    sensitivity: float = 1.0
    specificity: float = 1.0
    ct_delay_days: float = 14.0
    confirm_every_months: float = 3.0
    backbone: list[dict[str, float]] = field(default_factory=list)
    family: str = "ctdna"
    uses_ctdna: bool = True

    def __post_init__(self) -> None:
        for nm in ("sensitivity", "specificity"):
            if not 0 <= float(getattr(self, nm)) <= 1:
                raise ScheduleError(f"{self.name}: {nm} must lie in [0, 1], got {getattr(self, nm)}")
        if self.draw_every_months <= 0 or self.confirm_every_months <= 0:
            raise ScheduleError(f"{self.name}: draw_every_months and confirm_every_months must be positive")

    def draw_days(self, horizon: float) -> np.ndarray:
        first = (self.first_draw_months if self.first_draw_months is not None else self.draw_every_months)
        start = (first - self.draw_every_months) * DAYS_PER_MONTH
        return segment_days([{"every_months": self.draw_every_months}], horizon, start=start)

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        """The backbone CTs (the triggered ones depend on the draws: :func:`~.simulate.simulate`)."""
        return FixedSchedule(self.name, list(self.backbone)).plan(inputs)

    def describe(self) -> str:
        bb = FixedSchedule(segments=list(self.backbone)).describe() if self.backbone else "no CT backbone"
        return (f"ctDNA every {self.draw_every_months:g} months (sensitivity {self.sensitivity:g}, specificity "
                f"{self.specificity:g}); CT {self.ct_delay_days:g} days after a positive draw, repeated every "
                f"{self.confirm_every_months:g} months while negative; {bb}")


@dataclass
class TableSchedule(Schedule):
    """A user's own scan days: ``months`` or ``days`` (a list for everyone), or ``path`` to a CSV with a ``day`` or
    ``month`` column and optionally ``patient_id`` (per-patient days; a patient not in it gets ``months``/``days``,
    or no scan)."""

    name: str = "table"
    months: list[float] | None = None
    days: list[float] | None = None
    path: str | None = None
    family: str = "table"

    def _common(self) -> np.ndarray:
        if self.days is not None:
            return np.asarray(self.days, dtype=float)
        if self.months is not None:
            return np.asarray(self.months, dtype=float) * DAYS_PER_MONTH
        return np.zeros(0)

    def _table(self) -> pd.DataFrame | None:
        if self.path is None:
            return None
        p = Path(self.path)
        if not p.is_file():
            raise ScheduleError(f"{self.name}: schedule table {p} does not exist")
        t = pd.read_csv(p)
        if "day" not in t.columns and "month" not in t.columns:
            raise ScheduleError(f"{self.name}: {p} needs a 'day' or a 'month' column (one row per scan)")
        col = "day" if "day" in t.columns else "month"
        vals = pd.to_numeric(t[col], errors="coerce")
        bad = np.flatnonzero(vals.isna() | (vals <= 0))
        if len(bad):
            raise ScheduleError(f"{self.name}: {p} row {bad[0] + 2}, column {col!r}: {t[col].iloc[bad[0]]!r} is not "
                                "a positive number")
        t = t.assign(day=vals * (DAYS_PER_MONTH if col == "month" else 1.0))
        return t

    def plan(self, inputs: PlanInputs) -> np.ndarray:
        t = self._table()
        common = self._common()
        if t is not None and "patient_id" not in t.columns:
            common = t["day"].to_numpy(float)
        per: dict[str, np.ndarray] = {}
        if t is not None and "patient_id" in t.columns:
            per = {str(k): g["day"].to_numpy(float) for k, g in t.groupby(t["patient_id"].astype(str))}
        rows = [per.get(str(p), common) for p in inputs.patient_ids]
        return _pad([np.unique(r[(r > 0) & (r <= inputs.horizon + 1e-6)]) for r in rows])

    def per_patient(self) -> set[str]:
        t = self._table()
        return set(t["patient_id"].astype(str)) if t is not None and "patient_id" in t.columns else set()

    def describe(self) -> str:
        if self.path is not None:
            return f"CT on the days of {self.path}"
        return "CT at months " + ", ".join(f"{d / DAYS_PER_MONTH:g}" for d in self._common())


_CLASSES: dict[str, type[Schedule]] = {c.__name__: c for c in (FixedSchedule, StageBasedSchedule,
                                                                RiskAdaptedSchedule, CtdnaTriggeredSchedule,
                                                                TableSchedule)}


def build_schedule(cfg: Mapping[str, Any], name: str | None = None) -> list[Schedule]:
    """The schedule(s) of one ``_target_`` config (a risk-adapted threshold grid gives one per threshold).

    Only the classes of this module are accepted, by their dotted or bare name.
    """
    cfg = dict(cfg)
    target = str(cfg.pop("_target_", ""))
    cls = _CLASSES.get(target.rsplit(".", 1)[-1]) if target.startswith(("omics_risk.surveillance.schedules.",
                                                                          *_CLASSES)) else None
    if cls is None:
        raise ScheduleError(f"schedule {name or '?'}: _target_ {target!r} is not a schedule; use one of "
                            + ", ".join(f"omics_risk.surveillance.schedules.{c}" for c in _CLASSES))
    if name is not None and "name" not in cfg:
        cfg["name"] = name
    try:
        sched = cls(**cfg)
    except TypeError as exc:
        raise ScheduleError(f"schedule {cfg.get('name', name)}: {exc}") from None
    return sched.expand() if isinstance(sched, RiskAdaptedSchedule) else [sched]


def build_schedules(configs: Mapping[str, Mapping[str, Any]]) -> list[Schedule]:
    """Every schedule of ``{name: config}`` (null entries are skipped: a way to switch one off)."""
    out: list[Schedule] = []
    for name, cfg in configs.items():
        if cfg is None:
            continue
        out += build_schedule(cfg, str(name))
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ScheduleError(f"two schedules are named {dup[0]!r}: give each a name of its own")
    return out


def default_schedule_configs() -> dict[str, dict[str, Any]]:
    """The shipped schedules (the same as ``configs/surveillance/schedule/*.yaml``, which a test keeps in step)."""
    t = "omics_risk.surveillance.schedules."
    return {
        "ct_6m": {"_target_": t + "FixedSchedule", "segments": [{"every_months": 6}]},
        "ct_12m": {"_target_": t + "FixedSchedule", "segments": [{"every_months": 12}]},
        "escalating": {"_target_": t + "FixedSchedule",
                       "segments": [{"every_months": 6, "until_months": 24}, {"every_months": 12}]},
        "symptoms_only": {"_target_": t + "FixedSchedule", "segments": []},
        "stage_based": {"_target_": t + "StageBasedSchedule", "column": "stage",
                        "plans": {"IA": [{"every_months": 12}], "IB": [{"every_months": 12}],
                                  "IIA": [{"every_months": 6, "until_months": 24}, {"every_months": 12}],
                                  "IIB": [{"every_months": 6, "until_months": 24}, {"every_months": 12}],
                                  "IIIA": [{"every_months": 3, "until_months": 24}, {"every_months": 6}],
                                  "IIIB": [{"every_months": 3, "until_months": 24}, {"every_months": 6}]},
                        "default": [{"every_months": 6}]},
        "risk_adapted": {"_target_": t + "RiskAdaptedSchedule",
                         "thresholds": [0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5],
                         "min_interval_months": 3.0, "max_interval_months": None},
        "ctdna_triggered": {"_target_": t + "CtdnaTriggeredSchedule", "draw_every_months": 3.0,
                            "sensitivity": 0.9, "specificity": 0.98, "ct_delay_days": 14.0,
                            "confirm_every_months": 3.0, "backbone": [{"every_months": 12}]},
    }

"""The settings of a surveillance simulation (``configs/surveillance/default.yaml``; ``omics-risk surveil
--config``): one dataclass with the defaults, read from a mapping with a one-line error per wrong key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omics_risk.surveillance.onset import SojournModel, SymptomDelay
from omics_risk.surveillance.schedules import default_schedule_configs

__all__ = ["RISK_SOURCES", "SurveillanceSettings", "TrialSettings"]

#: Where the predicted curves come from: the model given, the generator's truth, or nobody (the cohort's KM).
RISK_SOURCES = ("model", "truth", "marginal")


@dataclass(frozen=True)
class TrialSettings:
    """The non-inferiority trial: ``experimental`` against ``standard`` (schedule names), margins (absolute
    differences in the share of recurrences found in the window), one-sided ``alpha``, ``power``, simulated trials
    per size, and the patients per arm of the power curves (null: the closed-form sizes)."""

    experimental: str = "ctdna_triggered"
    standard: str = "ct_6m"
    margin: float = 0.10
    margins: tuple[float, ...] = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
    alpha: float = 0.025
    power: float = 0.8
    n_sim: int = 4000
    n_per_arm: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SurveillanceSettings:
    """Everything but the cohort and the model (see configs/surveillance/default.yaml for what each means)."""

    horizon_days: float = 1826.0
    window_days: float = 90.0
    grid_days: float = 30.0
    risk_from: str = "model"
    onset_source: str = "auto"
    sojourn: SojournModel = field(default_factory=SojournModel)
    symptoms: SymptomDelay = field(default_factory=SymptomDelay)
    reference: str = "ct_6m"
    stratifiers: tuple[str, ...] = ("stage", "histology")
    lowest_group: str = "low"
    trial: TrialSettings = field(default_factory=TrialSettings)
    bootstrap: int = 500
    alpha: float = 0.05
    seed: int = 0
    schedules: dict[str, Any] = field(default_factory=default_schedule_configs)

    def __post_init__(self) -> None:
        if self.risk_from not in RISK_SOURCES:
            raise ValueError(f"surveillance.risk_from must be one of {', '.join(RISK_SOURCES)}, got "
                             f"{self.risk_from!r}")
        if self.onset_source not in ("auto", "truth", "sojourn"):
            raise ValueError(f"surveillance.onset_source must be auto, truth or sojourn, got {self.onset_source!r}")
        for nm in ("horizon_days", "window_days", "grid_days"):
            if not float(getattr(self, nm)) > 0:
                raise ValueError(f"surveillance.{nm} must be a positive number of days, got {getattr(self, nm)}")
        if int(self.bootstrap) < 0:
            raise ValueError(f"surveillance.bootstrap must be >= 0, got {self.bootstrap}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, **overrides: Any) -> SurveillanceSettings:
        """Settings from a config mapping (unknown keys are refused, naming the closest known one); ``overrides``
        that are not None win."""
        raw = {k: v for k, v in dict(raw or {}).items() if k != "defaults"}
        kw: dict[str, Any] = {}
        nested = {"sojourn": SojournModel, "symptoms": SymptomDelay, "trial": TrialSettings}
        for key, value in raw.items():
            if key not in _FIELDS:
                raise ValueError(_unknown("surveillance", key, _FIELDS))
            if key in nested and value is not None:
                sub = {f.name for f in fields(nested[key])}
                for k in dict(value):
                    if k not in sub:
                        raise ValueError(_unknown(f"surveillance.{key}", k, sub))
                value = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in dict(value).items()}
                kw[key] = nested[key](**value)
            elif key == "schedules":
                kw[key] = {str(k): (dict(v) if v is not None else None) for k, v in dict(value or {}).items()}
            elif key == "stratifiers":
                kw[key] = tuple(value or ())
            else:
                kw[key] = value
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = {f.name for f in fields(SurveillanceSettings)}


def _unknown(where: str, key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {where}.{close[0]}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"unknown setting {where}.{key}{hint}"

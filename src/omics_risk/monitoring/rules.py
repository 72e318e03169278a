"""Alert rules over serial ctDNA draws, as small frozen dataclasses built from ``configs/monitor/rule/*.yaml``.

Every rule shares the detection settings (when a draw is ctDNA-positive, :class:`~omics_risk.features.ctdna.
DetectionRule`), the level it follows and the baseline window; it differs in when a draw fires an alert:

- :class:`RiseRule` (``lucagen``, ``lucagen_confirmed``, ``redetection``): LUCAGEN-style molecular progression, a
  positive draw at ``fold`` x the running nadir (floored at ``lod_floor``) or, with ``redetection``, any positive
  draw after a negative one, optionally confirmed by the next draw (the alert then fires at the confirming draw);
- :class:`FloorRule` (``lod_floor``): a positive on-treatment draw whose level reaches a fixed ``floor`` (MRD:
  anything clearly above the limit of detection after surgery);
- :class:`ModelRiskRule` (``model_risk``): a model's dynamic risk at a draw (``--risk FILE``, e.g. a landmark model
  of docs/time.md scored at each landmark) at or above ``threshold``.

``grid`` names the parameters (and the values) whose operating characteristics the report plots, so that a user
can pick a threshold from a curve; :func:`with_params` is how one point of the grid is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omics_risk.features.ctdna import DetectionRule

__all__ = ["FloorRule", "ModelRiskRule", "RiseRule", "Rule", "grid_points", "rule_from_config", "with_params"]


@dataclass(frozen=True)
class _Base:
    """Settings every rule shares (see the module docstring)."""

    name: str = "rule"
    level: str = "pooled_vaf"
    baseline_max_day: float = 0.0
    response_drop: float = 0.5
    min_alt: int = 3
    lod_vaf: float = 5e-4
    min_detected: int = 2
    strong_factor: float = 5.0
    confirm: bool = False
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < float(self.response_drop) < 1:
            raise ValueError(f"rule {self.name}: response_drop must be in (0, 1), got {self.response_drop}")
        object.__setattr__(self, "grid", {str(k): tuple(v) for k, v in dict(self.grid or {}).items()})
        for key in self.grid:
            if key not in {f.name for f in dataclasses.fields(self)} or key in ("name", "grid"):
                raise ValueError(f"rule {self.name}: grid names '{key}', which is not a setting of the rule")
        self.detection()  # checks the detection settings

    def detection(self) -> DetectionRule:
        return DetectionRule(min_alt=self.min_alt, lod_vaf=self.lod_vaf, min_detected=self.min_detected,
                             strong_factor=self.strong_factor)

    def params(self) -> dict[str, Any]:
        """The settings as plain values (summary.json, MLflow params), without the grid."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "grid"}

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class RiseRule(_Base):
    """Molecular progression: a rise over the nadir by ``fold`` (or re-detection), optionally confirmed."""

    fold: float = 2.0
    redetection: bool = False
    lod_floor: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if float(self.fold) <= 1:
            raise ValueError(f"rule {self.name}: fold must be > 1 (a rise over the nadir), got {self.fold}")

    def describe(self) -> str:
        floor = f"{self.lod_floor:g}" if self.lod_floor is not None else f"the LOD ({self.lod_vaf:g})"
        text = f"a positive draw at >= {self.fold:g}x the running nadir of {self.level} (nadir floored at {floor})"
        if self.redetection:
            text += ", or any positive draw after a negative one (re-detection after clearance)"
        return text + (", confirmed by the next draw" if self.confirm else "")


@dataclass(frozen=True)
class FloorRule(_Base):
    """A positive on-treatment draw whose level reaches ``floor``."""

    floor: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if float(self.floor) <= 0:
            raise ValueError(f"rule {self.name}: floor must be > 0, got {self.floor}")

    def describe(self) -> str:
        text = f"a positive on-treatment draw with {self.level} >= {self.floor:g}"
        return text + (", confirmed by the next draw" if self.confirm else "")


@dataclass(frozen=True)
class ModelRiskRule(_Base):
    """A model's dynamic risk (``--risk``) at or above ``threshold`` at a draw."""

    threshold: float = 0.5

    def describe(self) -> str:
        return f"the model's dynamic risk at a draw >= {self.threshold:g}" + (
            ", confirmed by the next draw" if self.confirm else "")


Rule = RiseRule | FloorRule | ModelRiskRule
_KINDS: dict[str, type] = {"rise": RiseRule, "floor": FloorRule, "model_risk": ModelRiskRule}


def rule_from_config(cfg: Mapping[str, Any]) -> Rule:
    """A rule from a composed ``rule`` config node: ``_target_`` (a class of this module) or ``kind``, plus settings.

    Built here rather than with ``hydra.utils.instantiate`` so that only the classes above can be named (a config
    cannot make the command import arbitrary code) and an unknown setting is one clear line.
    """
    cfg = dict(cfg)
    target = str(cfg.pop("_target_", "") or "")
    kind = str(cfg.pop("kind", "") or "")
    classes = {f"{__name__}.{c.__name__}": c for c in _KINDS.values()}
    if target:
        if target not in classes:
            raise ValueError(f"rule _target_ {target!r} is not a monitoring rule; use one of {', '.join(classes)}")
        cls = classes[target]
    elif kind in _KINDS:
        cls = _KINDS[kind]
    else:
        raise ValueError(f"a rule config needs _target_ (one of {', '.join(classes)}) or kind ({', '.join(_KINDS)})")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"rule {cfg.get('name', cls.__name__)}: unknown setting(s) {', '.join(unknown)}; "
                         f"{cls.__name__} has {', '.join(sorted(known - {'grid'}))}")
    return cls(**{k: _checked(cfg.get("name", cls.__name__), k, v, cls) for k, v in cfg.items()})


def _checked(rule: str, key: str, value: Any, cls: type) -> Any:
    """A setting's value with the type its field's default has (a number, a whole number, true/false); one clear
    line naming the setting otherwise (``--set rule.fold=abc``)."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    kind = type(default)
    if value is None or default is dataclasses.MISSING or kind not in (bool, int, float):
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and not isinstance(value, bool) and (kind is float or number.is_integer()):
            return kind(number)
    what = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
    example = str(default).lower() if kind is bool else default
    raise ValueError(f"rule {rule}: {key} must be {what}, got {value!r} (e.g. --set rule.{key}={example})")


def with_params(rule: Rule, **params: Any) -> Rule:
    """The rule with some settings replaced (one point of its grid)."""
    return dataclasses.replace(rule, **params)


def grid_points(rule: Rule) -> list[dict[str, Any]]:
    """Every combination of the rule's grid values (an empty grid: the rule itself, ``[{}]``)."""
    points: list[dict[str, Any]] = [{}]
    for key, values in rule.grid.items():
        points = [{**p, key: v} for p in points for v in values]
    return points

"""CT preprocessing settings (:class:`CTConfig`, from ``configs/features/ct.yaml``) and the cache-key version.

Kept apart from the MONAI pipelines of :mod:`omics_risk.features.ct`, which re-exports them: the settings are read
and checked wherever a CT-image model is configured, trained or scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["CT_PREPROCESS_VERSION", "CTAugmentConfig", "CTConfig"]

#: Bump when the deterministic preprocessing changes its output, so cached tensors are rebuilt.
CT_PREPROCESS_VERSION = "1"


@dataclass(frozen=True)
class CTAugmentConfig:
    """Training-time augmentations (never applied when ``train=False``)."""

    enabled: bool = True
    flip_prob: float = 0.5  # per axis in flip_axes
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rotate90_prob: float = 0.5  # a random multiple of 90 degrees in the axial plane
    affine_prob: float = 0.3
    rotate_deg: float = 10.0  # +- per axis
    scale: float = 0.05  # +- relative zoom
    shift_prob: float = 0.5
    shift: float = 0.05  # +- intensity offset, in windowed [0, 1] units
    noise_prob: float = 0.3
    noise_std: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))
        for name in ("flip_prob", "rotate90_prob", "affine_prob", "shift_prob", "noise_prob"):
            p = float(getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {p}")
            object.__setattr__(self, name, p)
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"augment.flip_axes must be spatial axes 0, 1, 2, got {list(self.flip_axes)}")


@dataclass(frozen=True)
class CTConfig:
    """CT preprocessing settings (see configs/features/ct.yaml for what each means and values for real CT)."""

    pixdim: tuple[float, float, float] = (2.0, 2.0, 2.0)
    roi_size: tuple[int, int, int] = (32, 32, 32)
    window: tuple[float, float] = (-1000.0, 400.0)
    air_hu: float = -1000.0
    crop_centre: str = "centroid"
    mask_label: int | None = None
    mask_channel: bool = False
    precrop: bool = True
    augment: CTAugmentConfig = field(default_factory=CTAugmentConfig)

    def __post_init__(self) -> None:
        def triple(name: str, cast: type) -> tuple[Any, ...]:
            v = getattr(self, name)
            vals = [v] * 3 if isinstance(v, (int, float)) else list(v)
            if len(vals) != 3 or any(float(x) <= 0 for x in vals):
                raise ValueError(f"{name} must be three positive numbers (x, y, z), got {v!r}")
            return tuple(cast(x) for x in vals)

        object.__setattr__(self, "pixdim", triple("pixdim", float))
        object.__setattr__(self, "roi_size", triple("roi_size", int))
        window = tuple(float(x) for x in self.window)
        if len(window) != 2 or window[0] >= window[1]:
            raise ValueError(f"window must be [low, high] HU with low < high, got {list(self.window)}")
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "air_hu", float(self.air_hu))
        if self.crop_centre not in ("centroid", "bbox"):
            raise ValueError(f"crop_centre must be 'centroid' or 'bbox', got {self.crop_centre!r}")
        if self.mask_label is not None:
            object.__setattr__(self, "mask_label", int(self.mask_label))
        aug = self.augment
        if isinstance(aug, Mapping):
            aug = _from_mapping(CTAugmentConfig, aug, "augment")
        elif isinstance(aug, bool):
            aug = CTAugmentConfig(enabled=aug)
        object.__setattr__(self, "augment", aug)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> CTConfig:
        """From a plain or OmegaConf mapping (``_target_`` and other Hydra keys are ignored)."""
        return _from_mapping(cls, cfg, "ct")

    @classmethod
    def from_yaml(cls, path: str | Path) -> CTConfig:
        return cls.from_mapping(yaml.safe_load(Path(path).read_text()) or {})

    def preprocessing_settings(self) -> dict[str, Any]:
        """What changes the deterministic tensors (not augmentation, not the channel layout): the cache key."""
        out = dataclasses.asdict(self)
        for k in ("augment", "mask_channel"):
            out.pop(k)
        return {**out, "version": CT_PREPROCESS_VERSION, "monai": monai.__version__}


def _from_mapping(cls: type, cfg: Mapping[str, Any], where: str) -> Any:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    items = {str(k): v for k, v in cfg.items() if not str(k).startswith("_")}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - names)
    if unknown:
        raise ValueError(f"unknown {where} setting(s) {unknown}; known: {', '.join(sorted(names))}")
    items = {k: OmegaConf.to_container(v) if isinstance(v, ListConfig | DictConfig) else v for k, v in items.items()}
    return cls(**items)

"""CT image inputs of the fused model: the ``images=`` provider type, a cohort's provider, and image batches.

An ``images=`` provider is a mapping or a callable ``patient_id -> item``, where an item is a tensor / array
``(T, C, X, Y, Z)`` with the timepoints in ``ct_timepoints`` order (an all-NaN timepoint is absent), or
``(C, X, Y, Z)`` with one timepoint; a mapping ``timepoint -> (C, X, Y, Z)``; or None (the patient has no CT).
Kept apart from the network so that batch scoring and external validation build a provider without the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CTImageStore", "ImageProvider", "augment_flips", "fetch_image", "image_batch"]

ImageProvider = Mapping[Any, Any] | Callable[[Any], Any]


class CTImageStore(Mapping):
    """``patient_id -> {timepoint: Tensor(C, X, Y, Z)}`` for a cohort's CT samples (an ``images=`` provider).

    Each sample goes through the deterministic :mod:`omics_risk.features.ct` preprocessing, read from
    :class:`~omics_risk.features.ct.CTTensorCache` when ``cache_dir`` is given, and is kept in memory after the
    first access (``memory=True``). A sample that fails to load is absent for that patient (warned once).
    """

    def __init__(self, cohort: Any, cfg: Any = None, cache_dir: str | Path | None = None, modality: str = "ct",
                 memory: bool = True):
        # lazy: features.ct loads MONAI and SimpleITK, which only CT-image models need
        from omics_risk.features.ct import CTTensorCache, build_ct_transforms, ct_preprocessing

        self.cohort = cohort
        rows = cohort.samples_of(modality)
        self._items: dict[str, dict[str, tuple[Path, Path]]] = {}
        for r in rows.itertuples():
            self._items.setdefault(str(r.patient_id), {})[str(r.timepoint)] = (cohort.path(r.path),
                                                                              cohort.path(r.mask_path))
        self._cache = CTTensorCache(cfg, cache_dir) if cache_dir is not None else None
        self._pre = None if self._cache is not None else ct_preprocessing(self._config(cfg))
        self._post = build_ct_transforms(cfg, train=False, cached=True)
        self._memory: dict[str, dict[str, torch.Tensor]] | None = {} if memory else None

    @staticmethod
    def _config(cfg: Any) -> Any:
        from omics_risk.features.ct import CTConfig  # lazy: MONAI and SimpleITK, as in __init__

        if cfg is None:
            return CTConfig()
        return cfg if isinstance(cfg, CTConfig) else CTConfig.from_mapping(cfg)

    def _load(self, image: Path, mask: Path) -> torch.Tensor:
        raw = self._cache(image, mask) if self._cache is not None else self._pre({"image": str(image),
                                                                                   "mask": str(mask)})
        return self._post({"image": raw["image"], "mask": raw["mask"]})["image"]

    def __getitem__(self, patient_id: Any) -> dict[str, torch.Tensor]:
        pid = str(patient_id)
        if pid not in self._items:
            raise KeyError(patient_id)
        if self._memory is not None and pid in self._memory:
            return self._memory[pid]
        out: dict[str, torch.Tensor] = {}
        for tp, (image, mask) in self._items[pid].items():
            try:
                out[tp] = self._load(image, mask)
            except Exception as exc:  # one bad scan must not stop training; it is reported
                warnings.warn(f"CT of patient {pid} at {tp} ({image}) is left out: {exc}", stacklevel=2)
        if self._memory is not None:
            self._memory[pid] = out
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def fetch_image(provider: ImageProvider, patient: Any) -> Any:
    """The provider's item for ``patient`` (mappings are tried with the id and its string), None when absent."""
    try:
        if isinstance(provider, Mapping):
            return provider[patient] if patient in provider else provider.get(str(patient))
        return provider(patient)
    except KeyError:
        return None


def image_batch(provider: ImageProvider | None, patients: Sequence[Any], timepoints: Sequence[str],
                in_channels: int, shape: Sequence[int] | None,
                on_shape: Callable[[list[int]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, X, Y, Z) float32 scans (zeros where absent) and the (B, T) timepoint mask.

    ``shape``: the crop shape ``(C, X, Y, Z)`` every scan must have (None: the first scan found sets it, and
    ``on_shape`` is told, so that the model remembers it for later batches).
    """
    tps = list(timepoints)
    scans: list[list[torch.Tensor | None]] = []
    for pid in patients:
        item = None if provider is None else fetch_image(provider, pid)
        row: list[torch.Tensor | None] = [None] * len(tps)
        if item is None:
            pass
        elif isinstance(item, Mapping):
            for j, tp in enumerate(tps):
                v = item.get(tp)
                row[j] = None if v is None else torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v)
        else:
            x = item if torch.is_tensor(item) else torch.as_tensor(np.asarray(item))
            if x.dim() == 4 and len(tps) == 1:
                x = x.unsqueeze(0)
            if x.dim() != 5 or x.shape[0] != len(tps):
                raise ValueError(f"CT item of patient {pid} has shape {tuple(x.shape)}; expected (T={len(tps)}, C, "
                                 f"X, Y, Z) with timepoints {tps}, or a mapping timepoint -> (C, X, Y, Z)")
            row = list(x.unbind(0))
        for j, v in enumerate(row):
            if v is None:
                continue
            v = v.float()
            if v.dim() == 3:
                v = v.unsqueeze(0)
            if not bool(torch.isfinite(v).any()):
                row[j] = None
                continue
            if shape is None:
                shape = tuple(int(s) for s in v.shape)
                if shape[0] != int(in_channels):
                    raise ValueError(f"CT crops have {shape[0]} channel(s) but ct_in_channels={in_channels}")
                if on_shape is not None:
                    on_shape(list(shape))
            if tuple(v.shape) != tuple(shape):
                raise ValueError(f"CT of patient {pid} at {tps[j]} has shape {tuple(v.shape)}, expected "
                                 f"{tuple(shape)} (all crops must share roi_size and channels)")
            row[j] = torch.nan_to_num(v, nan=0.0)
        scans.append(row)
    if shape is None:
        shape = (int(in_channels), 1, 1, 1)
    out = torch.zeros(len(patients), len(tps), *shape, dtype=torch.float32)
    mask = torch.zeros(len(patients), len(tps), dtype=torch.bool)
    for i, row in enumerate(scans):
        for j, v in enumerate(row):
            if v is not None:
                out[i, j] = v
                mask[i, j] = True
    return out, mask


def augment_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips along each spatial axis, drawn per patient (same flip for all its timepoints)."""
    x = x.clone()
    for axis in (3, 4, 5):  # x is (B, T, C, X, Y, Z)
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        if bool(flip.any()):
            x[flip] = x[flip].flip(axis)
    return x

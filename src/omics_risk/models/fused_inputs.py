"""What the fused network is fed: modality tables, targets, preprocessed matrices, batches and the network spec.

:class:`FusedInputs` is a mixin of :class:`~omics_risk.models.fused.FusedSurvivalModel` (it reads the model's
settings and fitted preprocessors); training and prediction both build their batches here, so that they see the
same inputs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sksurv.util import Surv

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.images import ImageProvider, augment_flips, image_batch

__all__ = ["FusedInputs"]


class FusedInputs:
    """Mixin: the inputs of the fused network (see the module docstring). Needs the model's settings."""

    # settings and fitted attributes of FusedSurvivalModel read here
    modalities: Sequence[str] | None
    use_clinical: bool
    use_ct_images: bool
    ct_modality: str
    ct_timepoints: Sequence[str]
    ct_in_channels: int
    ct_augment: bool
    heads: Sequence[str]
    response_label: str | None
    preprocessing: Mapping[str, Mapping[str, Any]] | None
    clinical_types: Mapping[str, Any] | None
    k: int | None
    modalities_: list[str]
    preprocessors_: dict[str, Any]
    _seed: Any  # FusedTraining._seed: the seed of the ensemble member being trained

    # ----------------------------------------------------------------------------------------- data access
    def _wanted_modalities(self, data: MultimodalData) -> list[str]:
        mods = list(self.modalities) if self.modalities is not None else list(data.modality_names)
        if self.use_ct_images and self.ct_modality not in mods:
            mods.append(self.ct_modality)  # use_ct_images asks for the CT encoder, listed or not
        unknown = [m for m in mods if m not in data.modalities and not (self.use_ct_images and m == self.ct_modality)]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the data (has: {', '.join(data.modality_names)})")
        mods = [m for m in mods if m != "clinical"]
        if self.use_clinical and data.clinical.shape[1] > 0:
            mods = ["clinical", *mods]
        if not mods:
            raise ValueError("no modality to model: give modalities=[...] or use_clinical=True with clinical columns")
        return mods

    def _is_image(self, modality: str) -> bool:
        return bool(self.use_ct_images) and modality == self.ct_modality

    @staticmethod
    def _table(data: MultimodalData, modality: str) -> tuple[pd.DataFrame, np.ndarray]:
        if modality == "clinical":
            frame = data.clinical
            present = (data.present["clinical"].to_numpy(dtype=bool) if "clinical" in data.present
                       else np.ones(len(data), dtype=bool))
            return frame, present
        if modality not in data.modalities:
            warnings.warn(f"modality '{modality}' is not in the data; every patient is treated as lacking it",
                          stacklevel=3)
            return pd.DataFrame(index=data.patients), np.zeros(len(data), dtype=bool)
        frame = data.modalities[modality]
        if modality in data.present:
            present = data.present[modality].to_numpy(dtype=bool)
        else:
            present = frame.notna().any(axis=1).to_numpy()
        return frame, present & frame.notna().any(axis=1).to_numpy()

    def _preprocessor_settings(self, data: MultimodalData, modality: str) -> dict[str, Any]:
        kind = data.preprocessing_kind(modality)  # the modality registry's kind for its format
        settings: dict[str, Any] = {"kind": kind, "k": self.k}
        if kind == "clinical":
            settings["k"] = None
            settings["clinical_types"] = self.clinical_types
        settings.update(dict((self.preprocessing or {}).get(modality, {})))
        return settings

    def _targets(self, data: MultimodalData) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        needs_survival = any(h in self.heads for h in ("cox", "discrete"))
        if needs_survival:
            if data.time is None or data.event is None:
                raise ValueError(f"heads {list(self.heads)} need a survival endpoint, but '{data.endpoint}' has no "
                                 "time/event; use heads=['binary'] for a binary endpoint")
            out["time"] = np.asarray(data.time, dtype=np.float64)
            out["event"] = np.asarray(data.event, dtype=np.float64)
        if "binary" in self.heads:
            if self.response_label is not None:
                if self.response_label not in data.extra_labels:
                    raise ValueError(f"response_label '{self.response_label}' is not in data.extra_labels "
                                     f"(has: {', '.join(data.extra_labels) or 'none'})")
                out["label"] = np.asarray(data.extra_labels[self.response_label], dtype=np.float64)
            elif data.label is not None:
                out["label"] = np.asarray(data.label, dtype=np.float64)
            else:
                raise ValueError("the binary head needs data.label (binary endpoint) or response_label naming one "
                                 "of data.extra_labels")
        return out

    @staticmethod
    def _screen_target(targets: Mapping[str, np.ndarray]) -> Any:
        if "time" in targets:
            t, e = targets["time"], targets["event"]
            ok = np.isfinite(t) & np.isfinite(e)
            return Surv.from_arrays(np.where(ok, e, 0) > 0.5, np.where(ok, t, np.nanmax(t[ok]) if ok.any() else 1.0))
        return targets.get("label")

    # ----------------------------------------------------------------------------------------- images
    def _image_batch(self, provider: ImageProvider | None, patients: Sequence[Any]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C, X, Y, Z) float32 scans (zeros where absent) and the (B, T) timepoint mask."""

        def remember(shape: list[int]) -> None:
            self.image_shape_ = shape

        return image_batch(provider, patients, self.ct_timepoints, self.ct_in_channels,
                           getattr(self, "image_shape_", None), remember)

    _augment = staticmethod(augment_flips)

    # --------------------------------------------------------------------------------------- tensors
    def _matrices(self, data: MultimodalData) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Preprocessed tabular inputs (modality -> float32 (n, d)) and the (n, M) presence mask."""
        mats: dict[str, np.ndarray] = {}
        mask = np.zeros((len(data), len(self.modalities_)), dtype=bool)
        for j, m in enumerate(self.modalities_):
            if self._is_image(m):
                continue
            frame, present = self._table(data, m)
            mats[m], mask[:, j] = self.preprocessors_[m].transform(frame, present)
        return mats, mask

    def _make_batches(self, mats: Mapping[str, np.ndarray], mask: np.ndarray, targets: Mapping[str, np.ndarray],
                      patients: Sequence[Any], rows: np.ndarray, batch_size: int | None, *, train: bool,
                      provider: ImageProvider | None, epoch: int = 0) -> list[dict[str, Any]]:
        rows = np.asarray(rows)
        if train and batch_size is not None and batch_size < len(rows):
            rng = np.random.default_rng([self._seed(), int(epoch)])
            rows = rows[rng.permutation(len(rows))]
        n_chunks = 1 if batch_size is None else max(1, math.ceil(len(rows) / batch_size))
        generator = torch.Generator().manual_seed(self._seed() * 1_000_003 + int(epoch))
        batches = []
        for chunk in np.array_split(rows, n_chunks):
            if len(chunk) == 0:
                continue
            m = torch.from_numpy(mask[chunk].copy())
            inputs: dict[str, torch.Tensor] = {k: torch.from_numpy(v[chunk]) for k, v in mats.items()}
            img_j = self.modalities_.index(self.ct_modality) if self.ct_modality in self.modalities_ else -1
            if img_j >= 0 and self._is_image(self.ct_modality):
                x, tmask = self._image_batch(provider, [patients[i] for i in chunk])
                if train and self.ct_augment:
                    x = self._augment(x, generator)
                inputs[self.ct_modality] = x
                inputs[f"{self.ct_modality}/present"] = tmask
                m[:, img_j] = tmask.any(dim=1)
            batch: dict[str, Any] = {"inputs": inputs, "mask": m}
            for k, v in targets.items():
                batch[k] = torch.from_numpy(np.asarray(v[chunk]))
            batches.append(batch)
        return batches

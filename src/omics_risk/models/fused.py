"""The fused multimodal survival network as a :class:`~omics_risk.models.base.SurvivalModel`.

``FusedSurvivalModel(...).fit(data)`` does, on the training fold only:

1. an internal split (``validation_fraction``, stratified by event / label) for early stopping;
2. per-modality preprocessing (:class:`~omics_risk.models.preprocessing.ModalityPreprocessor`) fitted on the
   internal training patients that have each modality (clinical through the clinical encoder, metabolomics
   through its pipeline, every other table through median imputation, scaling and optional Cox screening);
3. a network (:func:`~omics_risk.models.multimodal.build_network`): one encoder per modality (tabular MLP, or
   a MONAI 3D ResNet for CT images when ``use_ct_images``), concat or gated-attention fusion with modality
   dropout, and the requested heads (``cox``, ``discrete``, ``binary``);
4. AdamW training (:func:`~omics_risk.models.loop.fit_network`), full batch by default (best for small
   tabular cohorts: the Cox risk set is the whole training set), early stopping and best-weights restore;
5. a Breslow baseline hazard on the whole training fold for ``predict_survival`` with the Cox head.

CT images. With ``use_ct_images=True`` the ``ct`` modality is a CT encoder fed with image tensors, passed as
``images=`` to ``fit`` / ``predict_*`` (or set once with :meth:`FusedSurvivalModel.set_images`). ``images`` is a
mapping or a callable ``patient_id -> item``, where an item is

* a tensor / array ``(T, C, X, Y, Z)`` with the timepoints in ``ct_timepoints`` order (an all-NaN timepoint is
  absent), or ``(C, X, Y, Z)`` when there is one timepoint;
* a mapping ``timepoint -> (C, X, Y, Z)`` tensor (absent timepoints left out or None);
* None (or a missing key / ``KeyError``): the patient has no CT.

Tensors are the :mod:`omics_risk.features.ct` output (float32, windowed to [0, 1], RAS axes);
:class:`CTImageStore` builds such a provider from a cohort with the cached CT preprocessing. With
``use_ct_images=False`` the ``ct`` table (radiomics) is an ordinary tabular modality.

Saved layout (:meth:`FusedSurvivalModel.save`)::

    <directory>/config.json          constructor settings, network spec (input dims), feature manifest, versions
    <directory>/fitted.json          Breslow baseline, discrete-time cuts, training medians, history
    <directory>/weights.pt           network state_dict (loaded with torch.load(weights_only=True))
    <directory>/preprocessing/<modality>.skops   fitted preprocessors (skops, trusted-types allow-list)
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import SurvivalModel
from omics_risk.models.device import seed_everything, select_device
from omics_risk.models.heads import DiscreteTimeLabels, discrete_survival
from omics_risk.models.loop import TrainResult, fit_network, predict_outputs
from omics_risk.models.losses import CoxMomentum, MultiTaskObjective
from omics_risk.models.multimodal import MultimodalSurvivalNet, build_network
from omics_risk.models.preprocessing import ModalityPreprocessor, load_preprocessor, save_preprocessor

__all__ = ["CTImageStore", "FusedSurvivalModel", "ImageProvider", "breslow_baseline"]

ImageProvider = Mapping[Any, Any] | Callable[[Any], Any]

FORMAT = "omics-risk-fused"
FORMAT_VERSION = 1
HEADS = ("cox", "discrete", "binary")


def _plain(value: Any) -> Any:
    """OmegaConf containers, tuples and numpy scalars as plain JSON-able Python values."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def breslow_baseline(log_hz: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow cumulative baseline hazard ``H0`` at the distinct event times (risk set: time >= t)."""
    lh = np.asarray(log_hz, dtype=np.float64)
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64) > 0.5
    ok = np.isfinite(lh) & np.isfinite(t)
    lh, t, e = lh[ok], t[ok], e[ok]
    if not e.any():
        return np.array([0.0]), np.array([0.0])
    w = np.exp(lh - lh.max())
    scale = np.exp(lh.max())
    order = np.argsort(t, kind="stable")
    t_sorted, w_sorted = t[order], w[order]
    at_risk = np.cumsum(w_sorted[::-1])[::-1]  # sum of w over time >= t_sorted[i]
    times = np.unique(t[e])
    first = np.searchsorted(t_sorted, times, side="left")
    deaths = np.array([np.sum(e & (t == u)) for u in times], dtype=np.float64)
    cumhaz = np.cumsum(deaths / (at_risk[first] * scale))
    return times, cumhaz


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU threads (None: leave them)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class CTImageStore(Mapping):
    """``patient_id -> {timepoint: Tensor(C, X, Y, Z)}`` for a cohort's CT samples (an ``images=`` provider).

    Each sample goes through the deterministic :mod:`omics_risk.features.ct` preprocessing, read from
    :class:`~omics_risk.features.ct.CTTensorCache` when ``cache_dir`` is given, and is kept in memory after the
    first access (``memory=True``). A sample that fails to load is absent for that patient (warned once).
    """

    def __init__(self, cohort: Any, cfg: Any = None, cache_dir: str | Path | None = None, modality: str = "ct",
                 memory: bool = True):
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
        from omics_risk.features.ct import CTConfig

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


class FusedSurvivalModel(SurvivalModel):
    """Multimodal encoders -> fusion -> Cox / discrete-time / binary heads, trained end to end (see module doc).

    Args:
        modalities: modality tables of the data to use (None: all); ``"clinical"`` is added when
            ``use_clinical``. The order of the list is the order of the mask columns.
        use_clinical: use the clinical covariates (encoded by the clinical encoder) as a modality.
        hidden, embed_dim, dropout, input_dropout, norm: tabular encoder defaults. ``hidden=()`` (default) makes
            each encoder a linear projection of the screened features: on a few hundred patients a hidden layer
            mostly overfits (the fused model then behaves like a ridge Cox model with modality indicators);
            give e.g. ``hidden=[64]`` for larger cohorts.
        encoders: per-modality overrides of those, e.g. ``{"cfdna": {"hidden": [128], "out_features": 32}}``.
        fusion: ``"concat"`` (default, the most robust on small cohorts) or ``"gated_attention"`` (patient-level
            modality weights for interpretation; more flexible, so it needs more data); ``fusion_dim`` /
            ``fusion_hidden`` / ``fusion_dropout``: attention sizes and dropout.
        modality_dropout: probability of hiding a present modality in a training step (never all of them).
        heads: any of ``"cox"``, ``"discrete"``, ``"binary"`` (trained jointly); ``head_weights`` weighs their
            losses; ``head_hidden`` adds an MLP before each head's linear layer; ``n_intervals`` sets the
            discrete-time grid (cuts at training event-time quantiles).
        response_label: name in ``data.extra_labels`` of the binary target when the endpoint is survival
            (a binary endpoint's ``data.label`` is used otherwise).
        epochs, lr, weight_decay, patience, grad_clip: training (AdamW with early stopping).
        monitor: early-stopping criterion on the internal validation set: ``"cindex"``, ``"loss"``, or ``"auto"``
            (C-index with a survival head, else loss). The validation partial likelihood starts rising when the
            risk *scale* overfits while the ranking still improves, so the C-index stops later and better.
        batch_size: patients per step; None = full batch (tabular) or ``ct_batch_size`` (with CT images).
        validation_fraction: internal validation share of the training fold (stratified by event); 0 trains
            for ``epochs`` without early stopping.
        refit: after early stopping, retrain from scratch on the whole training fold (preprocessing included) for
            the best epoch count, so the validation patients are not lost to the final model.
        n_members: train this many networks with seeds ``seed, seed + 1, ...`` (each with its own early-stopping
            split and initialisation) and average their outputs (:class:`~omics_risk.models.multimodal.EnsembleNet`).
            Members share the preprocessing fitted on the whole training fold, so ``n_members > 1`` needs
            ``refit=True`` or ``validation_fraction=0``.
        cox_momentum_steps: when set, the Cox loss of a mini-batch uses a torchsurv Momentum memory bank of
            this many past batches (small CT batches); ``momentum_rate`` is its EMA rate.
        device, amp, seed: ``"auto"|"cpu"|"cuda"``; AMP on CUDA only unless ``"bf16"``; seed (bit-identical CPU
            runs).
        num_threads: torch CPU threads during fit / predict. None: 1 for tabular-only models (their matrices are
            tiny: extra OpenMP threads only add overhead, up to 100-fold on a busy machine) and torch's own
            setting with CT images (3D convolutions do use the cores).
        k: default cap on features per tabular modality (supervised Cox screening; None: no cap).
        preprocessing: per-modality :class:`ModalityPreprocessor` settings, e.g.
            ``{"cfdna": {"k": 64, "max_correlation": 0.95}, "metabolomics": {"metabolomics": {"max_missing": 0.3}}}``.
            ``kind`` defaults to ``clinical`` / ``metabolomics`` for those modality names, else ``tabular``.
        clinical_types: cohort.yaml ``clinical:`` types (``omics_risk.features.clinical.clinical_types(spec)``);
            None infers them from dtypes.
        use_ct_images: encode ``ct_modality`` from image tensors (see module docstring) instead of its table.
        ct_timepoints, ct_arch, ct_widths, ct_embed_dim, ct_pool, ct_in_channels, ct_norm: the CT encoder.
        ct_augment: random flips along each axis of training crops.
        ct_batch_size: mini-batch size with CT images when ``batch_size`` is None.
        progress: tqdm bar over epochs.
        name: identifier in metric tables.

    Fitted attributes: ``network_``, ``preprocessors_``, ``modalities_``, ``feature_manifest_``, ``history_``
    (per-epoch metrics), ``best_epoch_``, ``baseline_times_`` / ``baseline_cumhaz_`` (Breslow), ``cuts_``.
    """

    def __init__(
        self,
        *,
        modalities: Sequence[str] | None = None,
        use_clinical: bool = True,
        hidden: Sequence[int] = (),
        embed_dim: int = 32,
        dropout: float = 0.2,
        input_dropout: float = 0.0,
        norm: str = "layer",
        encoders: Mapping[str, Mapping[str, Any]] | None = None,
        fusion: str = "concat",
        fusion_dim: int = 32,
        fusion_hidden: int = 32,
        fusion_dropout: float = 0.0,
        modality_dropout: float = 0.1,
        heads: Sequence[str] = ("cox",),
        head_weights: Mapping[str, float] | None = None,
        head_hidden: Sequence[int] = (),
        n_intervals: int = 10,
        response_label: str | None = None,
        epochs: int = 300,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int | None = None,
        patience: int | None = 30,
        validation_fraction: float = 0.2,
        refit: bool = True,
        n_members: int = 1,
        monitor: str = "auto",
        grad_clip: float | None = 5.0,
        cox_momentum_steps: int | None = None,
        momentum_rate: float = 0.999,
        device: str = "auto",
        amp: bool | str = True,
        seed: int = 0,
        num_threads: int | None = None,
        k: int | None = 32,
        preprocessing: Mapping[str, Mapping[str, Any]] | None = None,
        clinical_types: Mapping[str, Any] | None = None,
        use_ct_images: bool = False,
        ct_modality: str = "ct",
        ct_timepoints: Sequence[str] = ("preop", "postop1"),
        ct_arch: str = "resnet10",
        ct_widths: Sequence[int] = (16, 32, 64, 128),
        ct_embed_dim: int = 32,
        ct_pool: str = "mean",
        ct_in_channels: int = 1,
        ct_norm: str = "batch",
        ct_augment: bool = True,
        ct_batch_size: int = 16,
        progress: bool = False,
        name: str = "fused",
    ):
        for key, value in list(locals().items()):
            if key not in ("self", "__class__"):
                setattr(self, key, _plain(value))
        bad = sorted(set(self.heads) - set(HEADS))
        if bad or not self.heads:
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")
        if self.fusion not in ("gated_attention", "concat"):
            raise ValueError(f"fusion must be 'gated_attention' or 'concat', got {self.fusion!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if int(self.n_members) < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")
        if int(self.n_members) > 1 and not self.refit and self.validation_fraction > 0:
            raise ValueError("n_members > 1 needs refit=True or validation_fraction=0: the members must share the "
                             "preprocessing fitted on the whole training fold")
        self.image_provider: ImageProvider | None = None

    # ------------------------------------------------------------------------------------------- settings
    @classmethod
    def _setting_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Constructor settings (plain values)."""
        return {k: getattr(self, k) for k in self._setting_names()}

    def describe(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, Mapping):
                for k, v in value.items():
                    walk(f"{prefix}.{k}", v)
            elif isinstance(value, list):
                flat[prefix] = json.dumps(value)
            else:
                flat[prefix] = value

        for k, v in self.get_params().items():
            walk(k, v)
        if hasattr(self, "best_epoch_"):
            flat["best_epoch"] = self.best_epoch_
        return flat

    def set_images(self, images: ImageProvider | None) -> FusedSurvivalModel:
        """Default CT image provider for later ``predict_*`` calls that pass no ``images``."""
        self.image_provider = images
        return self

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

    def _preprocessor_settings(self, modality: str) -> dict[str, Any]:
        kind = "clinical" if modality == "clinical" else "metabolomics" if modality == "metabolomics" else "tabular"
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

    def _screen_target(self, targets: Mapping[str, np.ndarray]) -> Any:
        if "time" in targets:
            from sksurv.util import Surv

            t, e = targets["time"], targets["event"]
            ok = np.isfinite(t) & np.isfinite(e)
            return Surv.from_arrays(np.where(ok, e, 0) > 0.5, np.where(ok, t, np.nanmax(t[ok]) if ok.any() else 1.0))
        return targets.get("label")

    # ----------------------------------------------------------------------------------------- images
    def _fetch_image(self, provider: ImageProvider, patient: Any) -> Any:
        try:
            if isinstance(provider, Mapping):
                return provider[patient] if patient in provider else provider.get(str(patient))
            return provider(patient)
        except KeyError:
            return None

    def _image_batch(self, provider: ImageProvider | None, patients: Sequence[Any]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C, X, Y, Z) float32 scans (zeros where absent) and the (B, T) timepoint mask."""
        tps = list(self.ct_timepoints)
        shape = getattr(self, "image_shape_", None)
        scans: list[list[torch.Tensor | None]] = []
        for pid in patients:
            item = None if provider is None else self._fetch_image(provider, pid)
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
                    if shape[0] != int(self.ct_in_channels):
                        raise ValueError(f"CT crops have {shape[0]} channel(s) but ct_in_channels="
                                         f"{self.ct_in_channels}")
                    self.image_shape_ = list(shape)
                if tuple(v.shape) != tuple(shape):
                    raise ValueError(f"CT of patient {pid} at {tps[j]} has shape {tuple(v.shape)}, expected "
                                     f"{tuple(shape)} (all crops must share roi_size and channels)")
                row[j] = torch.nan_to_num(v, nan=0.0)
            scans.append(row)
        if shape is None:
            shape = (int(self.ct_in_channels), 1, 1, 1)
        out = torch.zeros(len(patients), len(tps), *shape, dtype=torch.float32)
        mask = torch.zeros(len(patients), len(tps), dtype=torch.bool)
        for i, row in enumerate(scans):
            for j, v in enumerate(row):
                if v is not None:
                    out[i, j] = v
                    mask[i, j] = True
        return out, mask

    @staticmethod
    def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random flips along each spatial axis, drawn per patient (same flip for all its timepoints)."""
        x = x.clone()
        for axis in (3, 4, 5):  # x is (B, T, C, X, Y, Z)
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            if bool(flip.any()):
                x[flip] = x[flip].flip(axis)
        return x

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

    def _network_spec(self, dims: Mapping[str, int]) -> dict[str, Any]:
        mods: dict[str, Any] = {}
        overrides = dict(self.encoders or {})
        for m in self.modalities_:
            if self._is_image(m):
                spec = {"type": "ct", "in_channels": int(self.ct_in_channels), "timepoints": list(self.ct_timepoints),
                        "arch": self.ct_arch, "embed_dim": int(self.ct_embed_dim), "widths": list(self.ct_widths),
                        "pool": self.ct_pool, "norm": self.ct_norm, "dropout": float(self.dropout)}
            else:
                spec = {"type": "tabular", "in_features": int(dims[m]), "hidden": list(self.hidden),
                        "out_features": int(self.embed_dim), "dropout": float(self.dropout),
                        "norm": self.norm, "input_dropout": float(self.input_dropout)}
            spec.update(dict(overrides.get(m, {})))
            mods[m] = spec
        fusion: dict[str, Any] = {"type": self.fusion, "modality_dropout": float(self.modality_dropout)}
        if self.fusion == "gated_attention":
            fusion.update(out_features=int(self.fusion_dim), hidden=int(self.fusion_hidden),
                          dropout=float(self.fusion_dropout))
        heads: dict[str, Any] = {}
        for h in self.heads:
            heads[h] = {"hidden": list(self.head_hidden)}
            if h == "discrete":
                heads[h].update(n_intervals=len(self.cuts_) - 1, cuts=[float(c) for c in self.cuts_])
        return {"modalities": mods, "fusion": fusion, "heads": heads}

    # ------------------------------------------------------------------------------------------------ fit
    def _split(self, targets: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(n)
        if self.validation_fraction <= 0:
            return idx, idx[:0]
        from sklearn.model_selection import train_test_split

        strata = targets["event"] if "event" in targets else targets.get("label")
        strata = None if strata is None else np.where(np.isfinite(strata), strata, -1).astype(int)
        n_val = max(2, round(self.validation_fraction * n))
        if n - n_val < 4:
            raise ValueError(f"{n} training patients are too few for validation_fraction={self.validation_fraction}")
        try:
            tr, va = train_test_split(idx, test_size=n_val, stratify=strata, random_state=self._seed())
        except ValueError:  # a stratum with a single patient
            tr, va = train_test_split(idx, test_size=n_val, random_state=self._seed())
        return np.sort(tr), np.sort(va)

    def fit(self, data: MultimodalData, images: ImageProvider | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FusedSurvivalModel:
        """Train on ``data`` (a training fold).

        ``images`` provides CT tensors when ``use_ct_images`` (module docstring); ``on_epoch(epoch, metrics)`` is
        called after every epoch (e.g. MLflow logging of ``train/loss``, ``val/loss``, ``val/cindex``; the refit
        epochs report ``refit/train/loss`` and continue the epoch count).
        """
        if images is not None:
            self.image_provider = images
        if self.use_ct_images and self.image_provider is None:
            warnings.warn("use_ct_images=True but no images were given: every patient lacks CT in training",
                          stacklevel=2)
        with _torch_threads(self._threads()):
            return self._fit(data, self.image_provider, on_epoch)

    def _fit_member(self, data: MultimodalData, provider: ImageProvider | None,
                    on_epoch: Callable[[int, dict[str, float]], None] | None) -> tuple[Any, ...]:
        """One network: early stopping on an internal split, then (``refit``) retraining on the whole fold."""
        seed_everything(self._seed())
        targets = self._targets(data)
        n = len(data)
        tr, va = self._split(targets, n)
        result, mats, mask, targets_t = self._train(data, targets, tr, va, provider, int(self.epochs),
                                                    self.patience, on_epoch)
        history = list(result.history)
        best_epoch = int(result.best_epoch)
        refit_epochs = 0
        if self.refit and len(va):
            # The internal split chose the number of epochs; now use every training patient for that many.
            offset = len(result.history)

            def refit_epoch(epoch: int, metrics: dict[str, float]) -> None:
                if on_epoch is not None:
                    on_epoch(offset + epoch, {f"refit/{k}": v for k, v in metrics.items()})

            refit_epochs = max(1, best_epoch + 1)
            again, mats, mask, targets_t = self._train(data, targets, np.arange(n), np.arange(0), provider,
                                                       refit_epochs, None, refit_epoch)
            history += [{"epoch": offset + h["epoch"], **{f"refit/{k}": v for k, v in h.items() if k != "epoch"}}
                        for h in again.history]
            result = dataclasses.replace(result, seconds=float(result.seconds) + float(again.seconds))
        return result, mats, mask, targets_t, history, refit_epochs

    def _seed(self) -> int:
        """The seed of the ensemble member being trained (``seed`` itself outside training)."""
        return int(getattr(self, "_member_seed", self.seed))

    def _fit(self, data: MultimodalData, provider: ImageProvider | None,
             on_epoch: Callable[[int, dict[str, float]], None] | None) -> FusedSurvivalModel:
        n_members = int(self.n_members)
        members, best_epochs, history, seconds = [], [], [], 0.0
        try:
            for i in range(n_members):
                self._member_seed = int(self.seed) + i
                prefix = f"member{i}/" if n_members > 1 else ""

                def member_epoch(epoch: int, metrics: dict[str, float], prefix: str = prefix) -> None:
                    if on_epoch is not None:
                        on_epoch(epoch, {f"{prefix}{k}": v for k, v in metrics.items()})

                result, mats, mask, targets_t, member_history, refit_epochs = self._fit_member(
                    data, provider, member_epoch)
                members.append(self.network_)
                best_epochs.append(int(result.best_epoch))
                history += [{"epoch": h["epoch"], **{f"{prefix}{k}": v for k, v in h.items() if k != "epoch"}}
                            for h in member_history]
                seconds += float(result.seconds)
        finally:
            del self._member_seed
        self.history_ = history
        self.member_best_epochs_ = best_epochs
        self.best_epoch_ = int(np.median(best_epochs))
        self.refit_epochs_ = refit_epochs
        self.train_seconds_ = seconds
        if n_members > 1:
            from omics_risk.models.multimodal import EnsembleNet

            self.network_spec_ = {**self.network_spec_, "members": n_members}
            self.network_ = EnsembleNet(members).eval()

        # Baselines on the whole training fold.
        outputs, has_data = self._outputs_for(data, mats, mask, provider)
        risk = outputs["risk"].numpy().astype(np.float64)
        self.train_median_risk_ = float(np.median(risk[has_data])) if has_data.any() else 0.0
        if "response_logit" in outputs:
            logit = outputs["response_logit"].numpy()
            self.train_median_logit_ = float(np.median(logit[has_data])) if has_data.any() else 0.0
        if "log_hz" in outputs:
            lh = outputs["log_hz"].numpy().astype(np.float64)
            self.risk_offset_ = float(np.mean(lh))
            self.baseline_times_, self.baseline_cumhaz_ = breslow_baseline(lh - self.risk_offset_,
                                                                           targets_t["time"], targets_t["event"])
        return self

    def _threads(self) -> int | None:
        if self.num_threads is not None:
            return int(self.num_threads)
        return None if self.use_ct_images else 1

    def _monitor(self) -> str:
        if self.monitor == "auto":
            return "cindex" if any(h in self.heads for h in ("cox", "discrete")) else "loss"
        return self.monitor

    def _train(self, data: MultimodalData, targets: dict[str, np.ndarray], tr: np.ndarray, va: np.ndarray,
               provider: ImageProvider | None, epochs: int, patience: int | None,
               on_epoch: Callable[[int, dict[str, float]], None] | None
               ) -> tuple[TrainResult, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
        """Preprocessing fitted on ``tr``, a fresh network, training with early stopping on ``va`` (if any)."""
        screen_y = self._screen_target(targets)
        self.preprocessors_: dict[str, ModalityPreprocessor] = {}
        kept: list[str] = []
        for m in self._wanted_modalities(data):
            if self._is_image(m):
                kept.append(m)
                continue
            frame, present = self._table(data, m)
            pp = ModalityPreprocessor(**self._preprocessor_settings(m))
            y_tr = None if screen_y is None else screen_y[tr]
            try:
                pp.fit(frame.iloc[tr], y_tr, present[tr])
            except ValueError as exc:
                warnings.warn(f"modality '{m}' is left out of the fused model: {exc}", stacklevel=3)
                continue
            self.preprocessors_[m] = pp
            kept.append(m)
        if not kept:
            raise ValueError("no modality is usable after preprocessing")
        self.modalities_ = kept
        self.feature_manifest_ = {
            m: ({"kind": "ct_images", "timepoints": list(self.ct_timepoints)} if self._is_image(m) else
                {"kind": self.preprocessors_[m].kind, "columns_in": list(self.preprocessors_[m].columns_in_),
                 "features_out": list(self.preprocessors_[m].features_out_)})
            for m in kept
        }

        if "discrete" in self.heads:
            labels = DiscreteTimeLabels(int(self.n_intervals)).fit(targets["time"][tr], targets["event"][tr])
            self.cuts_ = labels.cuts_
            interval, interval_event = labels.transform(targets["time"], targets["event"])
            targets = {**targets, "interval": interval, "interval_event": interval_event}
        else:
            self.cuts_ = None
        targets = {k: (v.astype(np.int64) if k == "interval" else v.astype(np.float32)) for k, v in targets.items()}

        mats, mask = self._matrices(data)
        dims = {m: v.shape[1] for m, v in mats.items()}
        self.network_spec_ = self._network_spec(dims)
        torch.manual_seed(self._seed())
        network = build_network(self.network_spec_)
        self.network_ = network

        has_images = any(self._is_image(m) for m in self.modalities_)
        batch_size = self.batch_size if self.batch_size is not None else (self.ct_batch_size if has_images else None)
        patients = list(data.patients)

        def train_batches(epoch: int) -> list[dict[str, Any]]:
            return self._make_batches(mats, mask, targets, patients, tr, batch_size, train=True,
                                      provider=provider, epoch=epoch)

        val_batches = None
        if len(va):
            eval_bs = batch_size if has_images else None
            fixed_val = None if has_images else self._make_batches(mats, mask, targets, patients, va, eval_bs,
                                                                    train=False, provider=provider)

            def val_batches(epoch: int) -> list[dict[str, Any]]:
                if fixed_val is not None:
                    return fixed_val
                return self._make_batches(mats, mask, targets, patients, va, eval_bs, train=False, provider=provider)

        fixed_train = None if (has_images or batch_size is not None) else train_batches(0)
        momentum = None
        if self.cox_momentum_steps and "cox" in self.heads:
            momentum = CoxMomentum(network, batch_size=int(batch_size or len(tr)), steps=int(self.cox_momentum_steps),
                                   rate=float(self.momentum_rate))
        objective = MultiTaskObjective(self.head_weights, momentum=momentum)
        result = fit_network(
            network,
            fixed_train if fixed_train is not None else train_batches,
            val_batches,
            objective=objective,
            epochs=epochs,
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            patience=patience,
            monitor=self._monitor(),
            device=self.device,
            amp=self.amp,
            seed=self._seed(),
            grad_clip=self.grad_clip,
            on_epoch=on_epoch,
            progress=bool(self.progress),
        )
        network.cpu().eval()
        return result, mats, mask, targets

    # -------------------------------------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(data) or load(directory) first")

    def _outputs_for(self, data: MultimodalData, mats: Mapping[str, np.ndarray] | None = None,
                     mask: np.ndarray | None = None, provider: ImageProvider | None = None
                     ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Network outputs for every patient of ``data`` (eval mode) and whether each patient had any input."""
        if mats is None or mask is None:
            mats, mask = self._matrices(data)
        has_images = any(self._is_image(m) for m in self.modalities_)
        bs = (self.batch_size or self.ct_batch_size) if has_images else 4096
        batches = self._make_batches(mats, mask, {}, list(data.patients), np.arange(len(data)), bs, train=False,
                                     provider=provider)
        dev = select_device(self.device)
        self.network_.to(dev)
        outputs, _ = predict_outputs(self.network_, batches, dev, self.amp)
        self.network_.cpu()
        present = torch.cat([b["mask"] for b in batches]).any(dim=1).numpy()
        return outputs, present

    def _predict(self, data: MultimodalData, images: ImageProvider | None) -> tuple[dict[str, torch.Tensor],
                                                                                   np.ndarray]:
        self._check_fitted()
        provider = images if images is not None else self.image_provider
        if any(self._is_image(m) for m in self.modalities_) and provider is None:
            warnings.warn("this model uses CT images but none were given: every patient is scored without CT",
                          stacklevel=3)
        with _torch_threads(self._threads()):
            return self._outputs_for(data, provider=provider)

    # Post-processing of the network outputs, shared by predict_risk / predict_survival / predict_response and
    # predict_outputs, so that one forward pass gives exactly what the three separate calls give.
    def _risk_from(self, outputs: Mapping[str, torch.Tensor], has_data: np.ndarray) -> np.ndarray:
        risk = outputs["risk"].numpy().astype(np.float64)
        return np.where(has_data & np.isfinite(risk), risk, self.train_median_risk_)

    def _survival_from(self, outputs: Mapping[str, torch.Tensor], has_data: np.ndarray, times: Any) -> np.ndarray:
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if "log_hz" in outputs:
            lh = outputs["log_hz"].numpy().astype(np.float64)
            lh = np.where(has_data & np.isfinite(lh), lh, self.train_median_risk_)
            pos = np.searchsorted(self.baseline_times_, times, side="right") - 1
            h0 = np.where(pos >= 0, self.baseline_cumhaz_[np.clip(pos, 0, None)], 0.0)
            return np.exp(-np.exp(lh - self.risk_offset_)[:, None] * h0[None, :])
        if "hazard_logits" in outputs:
            return discrete_survival(outputs["hazard_logits"], np.asarray(self.cuts_), times)
        raise NotImplementedError("this model has only a binary head: it predicts response, not survival")

    def _response_from(self, outputs: Mapping[str, torch.Tensor], has_data: np.ndarray) -> np.ndarray:
        if "response_logit" not in outputs:
            raise NotImplementedError("this model has no binary head: add 'binary' to heads")
        logit = outputs["response_logit"].numpy().astype(np.float64)
        logit = np.where(has_data, logit, self.train_median_logit_)
        return 1.0 / (1.0 + np.exp(-logit))

    def predict_risk(self, data: MultimodalData, images: ImageProvider | None = None) -> np.ndarray:
        """Cox log relative hazard (higher = riskier; discrete-time cumulative hazard or minus the response logit
        without a Cox head); the training median for patients without any input."""
        return self._risk_from(*self._predict(data, images))

    def predict_survival(self, data: MultimodalData, times: np.ndarray,
                         images: ImageProvider | None = None) -> np.ndarray:
        """Survival probabilities (patients x times, days): Breslow baseline of the Cox head on the training fold,
        or the discrete-time head's curve when there is no Cox head."""
        outputs, has_data = self._predict(data, images)
        return self._survival_from(outputs, has_data, times)

    def predict_response(self, data: MultimodalData, images: ImageProvider | None = None) -> np.ndarray:
        """Probability of response from the binary head (training-median logit for patients without input)."""
        return self._response_from(*self._predict(data, images))

    def predict_outputs(self, data: MultimodalData, times: np.ndarray | None = None,
                        images: ImageProvider | None = None) -> dict[str, np.ndarray]:
        """``risk``, ``survival`` (when ``times`` is given) and ``response`` (when the network has a binary head)
        from one forward pass: with CT images the 3D encoder dominates the cost, so batch scoring calls this instead
        of the three ``predict_*`` methods. Values equal theirs bit for bit.

        Raises NotImplementedError, as ``predict_survival`` does, when ``times`` is given to a binary-only model.
        """
        outputs, has_data = self._predict(data, images)
        out = {"risk": self._risk_from(outputs, has_data)}
        if times is not None:
            out["survival"] = self._survival_from(outputs, has_data, times)
        if "response_logit" in outputs:
            out["response"] = self._response_from(outputs, has_data)
        return out

    def attention(self, data: MultimodalData, images: ImageProvider | None = None, *,
                  per_patient: bool = False) -> pd.Series | pd.DataFrame:
        """Gated-attention weight per modality: the mean over patients with any input (sums to 1), or the patient x
        modality table (``per_patient``; 0 where a modality is absent)."""
        if self.fusion != "gated_attention":
            raise ValueError("attention weights exist only with fusion='gated_attention'")
        outputs, has_data = self._predict(data, images)
        table = pd.DataFrame(outputs["attention"].numpy().astype(np.float64), index=data.patients,
                             columns=list(self.modalities_))
        if per_patient:
            return table
        return table.loc[has_data].mean(axis=0).rename("attention")

    # ------------------------------------------------------------------------------------------ save/load
    def save(self, directory: str | Path) -> Path:
        """Write the fitted model (layout in the module docstring); returns the directory."""
        self._check_fitted()
        import sklearn
        import skops

        import omics_risk

        out = Path(directory)
        (out / "preprocessing").mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "settings": self.get_params(),
            "modalities": list(self.modalities_),
            "network": self.network_spec_,
            "feature_manifest": self.feature_manifest_,
            "image_shape": getattr(self, "image_shape_", None),
            "versions": {"omics_risk": omics_risk.__version__, "torch": torch.__version__,
                         "sklearn": sklearn.__version__, "skops": skops.__version__},
        }
        fitted = {
            "train_median_risk": self.train_median_risk_,
            "train_median_logit": getattr(self, "train_median_logit_", None),
            "risk_offset": getattr(self, "risk_offset_", None),
            "baseline_times": None if not hasattr(self, "baseline_times_") else self.baseline_times_.tolist(),
            "baseline_cumhaz": None if not hasattr(self, "baseline_cumhaz_") else self.baseline_cumhaz_.tolist(),
            "cuts": None if self.cuts_ is None else [float(c) for c in self.cuts_],
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        (out / "config.json").write_text(json.dumps(_plain(config), indent=2))
        (out / "fitted.json").write_text(json.dumps(_plain(fitted), indent=2))
        torch.save(self.network_.state_dict(), out / "weights.pt")
        for m, pp in self.preprocessors_.items():
            save_preprocessor(pp, out / "preprocessing" / f"{m}.skops")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> FusedSurvivalModel:
        """Rebuild a model written by :meth:`save` (no pickle: JSON, ``weights_only`` torch, trusted skops)."""
        root = Path(directory)
        cfg_file = root / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"no config.json in {root}: not a saved FusedSurvivalModel")
        config = json.loads(cfg_file.read_text())
        if config.get("format") != FORMAT or int(config.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{cfg_file} is not a {FORMAT} model of format version <= {FORMAT_VERSION}")
        fitted = json.loads((root / "fitted.json").read_text())
        settings = {k: v for k, v in config["settings"].items() if k in cls._setting_names()}
        model = cls(**settings)
        model.modalities_ = list(config["modalities"])
        model.network_spec_ = config["network"]
        model.feature_manifest_ = config["feature_manifest"]
        if config.get("image_shape"):
            model.image_shape_ = list(config["image_shape"])
        network: MultimodalSurvivalNet = build_network(model.network_spec_)
        state = torch.load(root / "weights.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        network.eval()
        model.network_ = network
        model.preprocessors_ = {}
        for m in model.modalities_:
            if model._is_image(m):
                continue
            pp = load_preprocessor(root / "preprocessing" / f"{m}.skops")
            if list(pp.features_out_) != list(model.feature_manifest_[m]["features_out"]):
                raise ValueError(f"preprocessing of '{m}' in {root} does not match its feature manifest")
            model.preprocessors_[m] = pp
        model.train_median_risk_ = float(fitted["train_median_risk"])
        if fitted.get("train_median_logit") is not None:
            model.train_median_logit_ = float(fitted["train_median_logit"])
        if fitted.get("risk_offset") is not None:
            model.risk_offset_ = float(fitted["risk_offset"])
            model.baseline_times_ = np.asarray(fitted["baseline_times"], dtype=np.float64)
            model.baseline_cumhaz_ = np.asarray(fitted["baseline_cumhaz"], dtype=np.float64)
        model.cuts_ = None if fitted.get("cuts") is None else np.asarray(fitted["cuts"], dtype=np.float64)
        model.best_epoch_ = int(fitted.get("best_epoch", -1))
        model.history_ = list(fitted.get("history", []))
        return model

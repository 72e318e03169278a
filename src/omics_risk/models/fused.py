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

The parts live in focused modules: :mod:`~omics_risk.models.images` (CT image providers and batches),
:mod:`~omics_risk.models.fused_inputs` (tables, targets, batches), :mod:`~omics_risk.models.fused_training` (the
training steps), :mod:`~omics_risk.models.fused_io` (the saved layout); this module keeps the estimator, whose dotted
path saved models name.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import ModelCapabilities, SurvivalModel
from omics_risk.models.device import select_device
from omics_risk.models.fused_inputs import FusedInputs
from omics_risk.models.fused_io import load_fused, save_fused
from omics_risk.models.fused_training import FusedTraining, breslow_baseline, torch_threads
from omics_risk.models.heads import discrete_survival
from omics_risk.models.images import CTImageStore, ImageProvider
from omics_risk.models.loop import predict_outputs
from omics_risk.models.saved import plain

__all__ = ["CTImageStore", "FusedSurvivalModel", "ImageProvider", "breslow_baseline"]

HEADS = ("cox", "discrete", "binary")


class FusedSurvivalModel(FusedTraining, FusedInputs, SurvivalModel):
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
                setattr(self, key, plain(value))
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

    def capabilities(self) -> ModelCapabilities:
        """Survival with a ``cox`` or ``discrete`` head, response with a ``binary`` head, ``images=`` with
        ``use_ct_images``; ``fit`` always takes ``on_epoch=``."""
        heads = set(self.heads)
        return ModelCapabilities(survival=bool({"cox", "discrete"} & heads), response="binary" in heads,
                                 images=bool(self.use_ct_images), epoch_callback=True)

    def set_images(self, images: ImageProvider | None) -> FusedSurvivalModel:
        """Default CT image provider for later ``predict_*`` calls that pass no ``images``."""
        self.image_provider = images
        return self

    # ------------------------------------------------------------------------------------------------ fit
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
        with torch_threads(self._threads()):
            return self._fit(data, self.image_provider, on_epoch)

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
        with torch_threads(self._threads()):
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
        """Write the fitted model (layout in :mod:`omics_risk.models.fused_io`); returns the directory."""
        self._check_fitted()
        return save_fused(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> FusedSurvivalModel:
        """Rebuild a model written by :meth:`save` (no pickle: JSON, ``weights_only`` torch, trusted skops)."""
        return load_fused(cls, directory)

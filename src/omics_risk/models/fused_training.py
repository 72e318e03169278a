"""How the fused model is trained: internal split, network spec, preprocessing per fold, AdamW, ensembles.

:class:`FusedTraining` is a mixin of :class:`~omics_risk.models.fused.FusedSurvivalModel`; ``fit`` (there) calls
``_fit``: for each ensemble member an early-stopping run on an internal split (:func:`~omics_risk.models.loop.
fit_network`), an optional refit on the whole fold, then the Breslow baseline (:func:`breslow_baseline`) for
``predict_survival``. The order of every random draw is that of the single-module model it was split from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.device import seed_everything
from omics_risk.models.heads import DiscreteTimeLabels
from omics_risk.models.images import ImageProvider
from omics_risk.models.loop import TrainResult, fit_network
from omics_risk.models.losses import CoxMomentum, MultiTaskObjective
from omics_risk.models.multimodal import EnsembleNet, build_network
from omics_risk.models.preprocessing import ModalityPreprocessor

__all__ = ["FusedTraining", "breslow_baseline", "torch_threads"]


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
def torch_threads(n: int | None) -> Iterator[None]:
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


class FusedTraining:
    """Mixin: ``_fit`` and its steps (see the module docstring). Needs the model's settings and :class:`FusedInputs`."""

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
             on_epoch: Callable[[int, dict[str, float]], None] | None) -> FusedTraining:
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
            pp = ModalityPreprocessor(**self._preprocessor_settings(data, m))
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

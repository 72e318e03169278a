"""The training loop: AdamW, early stopping on a validation set, best-weights restore, per-epoch callback.

Batches are plain mappings (see :class:`~omics_risk.models.losses.MultiTaskObjective`): ``inputs`` (modality ->
tensor), ``mask`` (patients x modalities, bool) and targets. The loop knows nothing about modalities or heads:
the objective computes the losses, the network computes the outputs.

Validation runs the network over all validation batches and computes the losses **once on the concatenated
outputs**, so the validation Cox loss uses the full validation risk set whatever the batch size (a mean of
per-batch partial likelihoods would depend on how patients fall into batches).
"""

from __future__ import annotations

import copy
import math
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sksurv.metrics import concordance_index_censored
from torch import nn

from omics_risk.models.device import autocast, make_grad_scaler, seed_everything, select_device
from omics_risk.models.losses import MultiTaskObjective
from omics_risk.progress import progress_bar

__all__ = ["Batch", "TrainResult", "batch_to", "concordance", "evaluate", "fit_network", "predict_outputs"]

Batch = Mapping[str, Any]
Batches = Iterable[Batch] | Callable[[int], Iterable[Batch]]
EpochCallback = Callable[[int, dict[str, float]], None]

_TARGET_KEYS = ("time", "event", "interval", "interval_event", "label")


@dataclass
class TrainResult:
    """What :func:`fit_network` did: metrics per epoch, the epoch whose weights were kept, whether it stopped early."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = math.nan
    stopped_early: bool = False
    seconds: float = 0.0


def batch_to(batch: Batch, device: torch.device) -> dict[str, Any]:
    """The batch with every tensor (also inside ``inputs``) on ``device``."""
    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, Mapping):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in batch.items()}


def _cat(values: Sequence[torch.Tensor]) -> torch.Tensor:
    return values[0] if len(values) == 1 else torch.cat(values, dim=0)


@torch.no_grad()
def predict_outputs(model: nn.Module, batches: Iterable[Batch], device: torch.device,
                    amp: Any = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Network outputs (float32, CPU) and targets of ``batches`` in eval mode, concatenated over batches."""
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    targets: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        b = batch_to(batch, device)
        with autocast(device, amp):
            out = model(b["inputs"], b["mask"])
        for k, v in out.items():
            outs.setdefault(k, []).append(v.detach().float().cpu())
        for k in _TARGET_KEYS:
            if k in batch:
                targets.setdefault(k, []).append(torch.as_tensor(batch[k]).cpu())
    return {k: _cat(v) for k, v in outs.items()}, {k: _cat(v) for k, v in targets.items()}


def concordance(risk: torch.Tensor | np.ndarray, event: Any, time: Any) -> float:
    """Harrell's C of ``risk`` (higher = riskier; scikit-survival convention), NaN without a comparable pair."""
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1)
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    ok = np.isfinite(e) & np.isfinite(t) & np.isfinite(r)
    if ok.sum() < 2 or not (e[ok] > 0).any():
        return math.nan
    try:
        return float(concordance_index_censored(e[ok] > 0, t[ok], r[ok])[0])
    except ValueError:  # no comparable pair
        return math.nan


def evaluate(model: nn.Module, batches: Iterable[Batch], objective: MultiTaskObjective, device: torch.device,
             amp: Any = False) -> dict[str, float]:
    """Losses on the concatenated outputs of ``batches`` (full-set Cox risk set) plus Harrell's C of ``risk``."""
    outputs, targets = predict_outputs(model, batches, device, amp)
    if not outputs:
        return {}
    with torch.no_grad():
        losses = objective.losses(outputs, targets)
    metrics = {k: float(v) for k, v in losses.items()}
    if "risk" in outputs and "time" in targets and "event" in targets:
        metrics["cindex"] = concordance(outputs["risk"], targets["event"], targets["time"])
    return metrics


def _batches(source: Batches, epoch: int) -> Iterable[Batch]:
    return source(epoch) if callable(source) else source


def fit_network(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches | None = None,
    *,
    objective: MultiTaskObjective | None = None,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int | None = 20,
    min_delta: float = 1e-4,
    monitor: str = "loss",
    device: str | torch.device = "auto",
    amp: Any = True,
    seed: int | None = 0,
    grad_clip: float | None = 5.0,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place with AdamW; keep the weights of the best validation epoch.

    Args:
        model: a network whose ``forward(inputs, mask)`` returns a dict of outputs (see ``multimodal.py``).
        train_batches: an iterable of batches re-iterated every epoch, or ``epoch -> iterable`` (reshuffling).
        val_batches: validation batches (same forms); None trains for ``epochs`` and keeps the last weights.
        objective: the losses (default: :class:`MultiTaskObjective` with unit weights).
        epochs, lr, weight_decay: AdamW schedule (constant learning rate).
        patience: stop after this many epochs without improvement of the monitored validation metric
            (None: never stop early, still restore the best weights).
        min_delta: smallest change that counts as an improvement.
        monitor: ``"loss"`` (validation loss, lower is better) or ``"cindex"`` (validation Harrell's C of the
            ``risk`` output, higher is better). An epoch whose score is undefined (NaN, e.g. no event among the
            validation patients) neither improves nor counts towards ``patience``; if no epoch has a finite
            score, the last weights are kept.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` (see :func:`~omics_risk.models.device.select_device`).
        amp: autocast setting (CUDA float16 with a GradScaler; CPU float32 unless ``"bf16"``).
        seed: seeds Python, NumPy and torch and enables deterministic algorithms (None leaves RNGs alone).
        grad_clip: max global gradient norm (None: no clipping).
        on_epoch: ``callback(epoch, metrics)`` after every epoch; metrics hold ``train/<loss>``,
            ``val/<loss>``, ``val/cindex``, ``lr``, ``seconds``. The lead logs them to MLflow from here.
        progress: show a tqdm bar over epochs.

    Returns:
        :class:`TrainResult` (history, best epoch and score, early stop flag, wall time).
    """
    if monitor not in ("loss", "cindex"):
        raise ValueError(f"monitor must be 'loss' or 'cindex', got {monitor!r}")
    if seed is not None:
        seed_everything(seed)
    dev = select_device(device)
    model.to(dev)
    objective = objective or MultiTaskObjective()
    if objective.momentum is not None:
        objective.momentum.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scaler = make_grad_scaler(dev, amp)
    sign = 1.0 if monitor == "loss" else -1.0  # minimise sign * metric
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    best = math.inf
    waited = 0
    start = _time.perf_counter()

    bar = progress_bar(range(epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = _time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        for batch in _batches(train_batches, epoch):
            b = batch_to(batch, dev)
            optimiser.zero_grad(set_to_none=True)
            with autocast(dev, amp):
                losses = objective.train_step(model, b)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {float(loss.detach())} at epoch {epoch}; lower lr or check the inputs for "
                    "extreme values"
                )
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimiser)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimiser)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_batches += 1
        if n_batches == 0:
            raise ValueError("train_batches yielded no batch")
        metrics = {f"train/{k}": v / n_batches for k, v in sums.items()}
        if val_batches is not None:
            val = evaluate(model, _batches(val_batches, epoch), objective, dev, amp)
            metrics.update({f"val/{k}": v for k, v in val.items()})
            score = val.get(monitor, math.nan)
            if math.isfinite(score) and sign * score < best - min_delta:
                best = sign * score
                result.best_epoch = epoch
                result.best_score = score
                best_state = copy.deepcopy(model.state_dict())
                waited = 0
            elif math.isfinite(score):
                waited += 1  # an undefined score (e.g. no event in the validation set) cannot judge the epoch
        metrics["lr"] = optimiser.param_groups[0]["lr"]
        metrics["seconds"] = _time.perf_counter() - t0
        result.history.append({"epoch": float(epoch), **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if progress:
            shown = ("train/loss", "val/loss", "val/cindex")
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k in shown})
        if val_batches is not None and patience is not None and waited >= patience:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # no validation, or no finite validation score: the last weights are the result
        result.best_epoch = len(result.history) - 1
    model.eval()
    result.seconds = _time.perf_counter() - start
    return result

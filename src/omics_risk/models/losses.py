"""Survival and response losses: thin, tested wrappers around torchsurv plus the multi-head objective.

* :func:`cox_loss` -- negative Cox partial log-likelihood (torchsurv, Efron ties by default), made safe for the
  cases a training loop meets: a batch with fewer than two patients or without any event has no partial-likelihood
  term at all (with one patient the term is ``log(e^x / e^x) = 0`` whatever ``x``; torchsurv issue #35), so it
  contributes an exact zero that is still attached to the graph (no NaN, no "all samples are censored" error).
  Times are rank-encoded before torchsurv sees them so that a censored patient tied with an event is always in
  that event's risk set (torchsurv's tie-free code path depends on the sort order there).
  ``reduction="mean"`` divides by the number of events, whatever the ties.
* :class:`CoxMomentum` -- torchsurv's :class:`~torchsurv.loss.momentum.Momentum` memory bank around the Cox output
  of a network, for small CT batches; for tabular data full-batch training (the default) needs no bank.
* :func:`discrete_time_nll` -- logistic-hazard (Nnet-survival / pycox ``LogisticHazard``) negative log-likelihood.
* :func:`masked_bce` -- binary cross-entropy where a missing label (NaN) is left out.
* :class:`MultiTaskObjective` -- the weighted sum of the losses of the heads a network has.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchsurv.loss.cox import neg_partial_log_likelihood
from torchsurv.loss.momentum import Momentum

__all__ = [
    "CoxMomentum",
    "MultiTaskObjective",
    "cox_loss",
    "discrete_time_nll",
    "masked_bce",
    "rank_encode_times",
]


def _zero(like: torch.Tensor) -> torch.Tensor:
    """An exact 0 that keeps the graph (``backward`` works and gives zero gradients)."""
    return like.sum() * 0.0


def rank_encode_times(time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Times replaced by ``2 * dense_rank + censored``: same partial likelihood, no sort-order ambiguity.

    The partial likelihood depends on times only through their order. Putting a censored time just after the
    events at the same time keeps the censored patient in their risk set (the usual convention, lifelines and
    R ``survival``), and small integers are exact in float32 whatever the time scale.
    """
    _, rank = torch.unique(time, sorted=True, return_inverse=True)
    return (2 * rank + (~event).long()).to(torch.float32)


def cox_loss(
    log_hz: torch.Tensor,
    event: torch.Tensor,
    time: torch.Tensor,
    *,
    ties: str = "efron",
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood of ``log_hz`` (higher = riskier), via torchsurv.

    Args:
        log_hz: log relative hazard, shape (n,) or (n, 1).
        event: event indicator (bool or 0/1); NaN marks a patient without outcome (left out).
        time: event or censoring time; NaN marks a patient without outcome (left out).
        ties: ``"efron"`` (default, as lifelines) or ``"breslow"``.
        reduction: ``"mean"`` (sum over events / number of events) or ``"sum"``.

    Returns 0 (attached to the graph) when fewer than two patients or no event remain (see module docstring).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    log_hz = log_hz.reshape(-1).float()
    time = time.reshape(-1).to(log_hz.device, torch.float32)
    event = event.reshape(-1).to(log_hz.device)
    keep = torch.isfinite(time)
    if event.is_floating_point():
        keep &= torch.isfinite(event)
        event = torch.nan_to_num(event, nan=0.0)
    event = event.bool()
    if not bool(keep.all()):
        log_hz_k, event, time = log_hz[keep], event[keep], time[keep]
    else:
        log_hz_k = log_hz
    n_events = int(event.sum())
    if log_hz_k.numel() < 2 or n_events == 0:
        return _zero(log_hz)
    if not bool(torch.isfinite(log_hz_k).all()):  # let the caller see a NaN loss (torchsurv would raise instead)
        return log_hz_k.sum() * float("nan")
    # The likelihood is invariant to a common shift; shifting by the (detached) max keeps exp() finite in the
    # Efron branch, which exponentiates log_hz directly.
    shifted = log_hz_k - log_hz_k.detach().max()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Ties in `time` detected")
        total = neg_partial_log_likelihood(
            shifted, event, rank_encode_times(time, event), ties_method=ties, reduction="sum"
        )
    return total / n_events if reduction == "mean" else total


def discrete_time_nll(
    logits: torch.Tensor, interval: torch.Tensor, event: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Logistic-hazard negative log-likelihood (Gensheimer & Narasimhan 2019; pycox ``nll_logistic_hazard``).

    ``logits`` (n, K) are the logits of the conditional hazards ``h_j = P(event in interval j | alive at its
    start)``. A patient with label ``(interval=j, event)`` survived intervals ``0..j-1`` and, when ``event``, had
    the event in interval ``j`` (see :class:`~omics_risk.models.heads.DiscreteTimeLabels`; a censored patient can
    have ``j = K``: survived every interval). A negative ``interval`` marks a patient without outcome (left out).
    ``reduction="mean"`` averages over patients with an outcome.
    """
    logits = logits.float()
    interval = interval.reshape(-1).to(logits.device).long()
    event = event.reshape(-1).to(logits.device)
    event = torch.nan_to_num(event.float(), nan=0.0) > 0.5
    known = interval >= 0
    n = int(known.sum())
    if n == 0:
        return _zero(logits)
    k = logits.shape[1]
    if int(interval.max()) > k:
        raise ValueError(f"interval index {int(interval.max())} is beyond the {k} intervals of the head")
    grid = torch.arange(k, device=logits.device)[None, :]
    survived = (grid < interval[:, None]) & known[:, None]
    died = (grid == interval[:, None]) & event[:, None] & known[:, None]
    weight = (survived | died).float()
    total = F.binary_cross_entropy_with_logits(logits, died.float(), weight=weight, reduction="sum")
    return total / n if reduction == "mean" else total


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, *, pos_weight: float | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over patients with a label; NaN labels (not assessed) are left out (0 if none)."""
    logits = logits.reshape(-1).float()
    labels = labels.reshape(-1).to(logits.device, torch.float32)
    known = torch.isfinite(labels)
    if not bool(known.any()):
        return _zero(logits)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    return F.binary_cross_entropy_with_logits(logits[known], labels[known], pos_weight=pw)


class _CoxView(nn.Module):
    """The Cox output of a multimodal network, as torchsurv's Momentum expects (one tensor per call).

    The full output dictionary of the last call is kept in ``last`` so that the other heads' losses reuse the
    same forward pass.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.last: dict[str, torch.Tensor] | None = None

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        out = self.network(batch["inputs"], batch["mask"])
        self.last = out
        return out["log_hz"].reshape(-1, 1)


class CoxMomentum(nn.Module):
    """torchsurv :class:`~torchsurv.loss.momentum.Momentum` around a network's Cox output (small CT batches).

    The Cox loss of a batch is computed against a memory bank of the last ``steps`` batches' log hazards from an
    exponential-moving-average copy of the network (the *target*), so that a batch of 4 scans still has a risk
    set of ``4 * (steps + 1)`` patients. The *online* network is the network being trained (not a copy), so the
    optimiser, early stopping and prediction all use it. Costs one extra no-grad forward pass per step.
    """

    def __init__(self, network: nn.Module, batch_size: int, steps: int = 8, rate: float = 0.999,
                 ties: str = "efron"):
        super().__init__()
        if steps < 1 or batch_size < 1:
            raise ValueError(f"CoxMomentum needs batch_size >= 1 and steps >= 1, got {batch_size}, {steps}")

        def loss(log_hz: torch.Tensor, event: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
            return cox_loss(log_hz, event, time, ties=ties)

        self.bank = Momentum(backbone=_CoxView(network), loss=loss, batchsize=batch_size, steps=steps, rate=rate)
        self.bank.online = _CoxView(network)  # train the network itself; the target stays an EMA copy

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(Cox loss against the bank, the network's outputs for the batch)."""
        event = batch["event"]
        time = batch["time"]
        # The online queue must hold the current batch only: torchsurv sizes it for equal batches, so a smaller
        # (last) batch would otherwise keep estimates of the previous step, whose graph is already freed.
        self.bank.memory_q.clear()
        loss = self.bank(batch, event.reshape(-1), time.reshape(-1))
        online: _CoxView = self.bank.online  # type: ignore[assignment]
        assert online.last is not None
        return loss, online.last


class MultiTaskObjective:
    """Weighted sum of the head losses a network's outputs allow: ``cox``, ``discrete``, ``binary``.

    Args:
        weights: head name -> weight (heads absent from the outputs are skipped); default 1 for each head.
        ties: Cox ties method.
        momentum: a :class:`CoxMomentum` bound to the network; when set, training steps compute the Cox term
            against its memory bank (validation always uses the plain full-set Cox loss).
        pos_weight: optional positive-class weight of the binary head.

    A batch is a mapping with ``inputs`` (modality -> tensor), ``mask`` (patients x modalities, bool) and the
    targets ``time``, ``event`` (Cox), ``interval``, ``interval_event`` (discrete time), ``label`` (binary).
    """

    output_keys: ClassVar[dict[str, str]] = {"cox": "log_hz", "discrete": "hazard_logits", "binary": "response_logit"}

    def __init__(self, weights: Mapping[str, float] | None = None, *, ties: str = "efron",
                 momentum: CoxMomentum | None = None, pos_weight: float | None = None):
        self.weights = dict(weights or {})
        unknown = sorted(set(self.weights) - set(self.output_keys))
        if unknown:
            raise ValueError(f"unknown head(s) {unknown} in loss weights; known: {', '.join(self.output_keys)}")
        self.ties = ties
        self.momentum = momentum
        self.pos_weight = pos_weight

    def losses(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any],
               cox_term: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each head's loss and their weighted sum under ``"loss"``."""
        parts: dict[str, torch.Tensor] = {}
        if "log_hz" in outputs:
            parts["cox"] = cox_term if cox_term is not None else cox_loss(
                outputs["log_hz"], batch["event"], batch["time"], ties=self.ties)
        if "hazard_logits" in outputs:
            parts["discrete"] = discrete_time_nll(outputs["hazard_logits"], batch["interval"],
                                                  batch["interval_event"])
        if "response_logit" in outputs:
            parts["binary"] = masked_bce(outputs["response_logit"], batch["label"], pos_weight=self.pos_weight)
        if not parts:
            raise ValueError("the network has no head output (log_hz, hazard_logits or response_logit)")
        total = sum(self.weights.get(k, 1.0) * v for k, v in parts.items())
        return {"loss": total, **parts}  # type: ignore[dict-item]

    def train_step(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Forward pass and losses of one training batch."""
        if self.momentum is not None:
            cox_term, outputs = self.momentum(batch)
            return self.losses(outputs, batch, cox_term=cox_term)
        outputs = model(batch["inputs"], batch["mask"])
        return self.losses(outputs, batch)

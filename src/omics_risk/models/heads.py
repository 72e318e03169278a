"""Output heads on the fused embedding, and the discrete-time label transform.

* :class:`CoxHead` -- log relative hazard (higher = riskier), no bias (the partial likelihood ignores a shift).
* :class:`DiscreteTimeHead` -- logistic-hazard logits over ``n_intervals`` time intervals (Nnet-survival /
  pycox ``LogisticHazard``): ``h_j = sigmoid(logit_j)`` is the probability of the event in interval ``j`` given
  survival to its start, and ``S(c_{j+1}) = prod_{l<=j} (1 - h_l)``. :class:`DiscreteTimeLabels` turns
  ``(time, event)`` into ``(interval, event)`` labels with cut points at training event-time quantiles.
* :class:`BinaryHead` -- response logit.

Heads that are trained together (e.g. Cox for PFS plus binary response in SCLC) share the fused embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["BinaryHead", "CoxHead", "DiscreteTimeHead", "DiscreteTimeLabels", "discrete_survival", "quantile_cuts"]


def _mlp(in_features: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    width = int(in_features)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.GELU(), nn.Dropout(dropout)]
        width = int(h)
    if not layers and dropout > 0:
        layers.append(nn.Dropout(dropout))
    return (nn.Sequential(*layers) if layers else nn.Identity()), width


class CoxHead(nn.Module):
    """``fused -> [MLP] -> linear`` log relative hazard, shape (B,)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.trunk, width = _mlp(in_features, hidden, dropout)
        self.out = nn.Linear(width, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(z)).squeeze(-1)


class BinaryHead(nn.Module):
    """``fused -> [MLP] -> linear`` response logit, shape (B,)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.trunk, width = _mlp(in_features, hidden, dropout)
        self.out = nn.Linear(width, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(z)).squeeze(-1)


class DiscreteTimeHead(nn.Module):
    """Logistic-hazard logits (B, n_intervals); ``cuts`` (n_intervals + 1 increasing times from 0) are kept as
    a buffer so that the saved weights carry the time grid they were trained on."""

    def __init__(self, in_features: int, n_intervals: int = 10, cuts: Sequence[float] | None = None,
                 hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        if n_intervals < 1:
            raise ValueError(f"n_intervals must be >= 1, got {n_intervals}")
        self.n_intervals = int(n_intervals)
        grid = (torch.arange(self.n_intervals + 1, dtype=torch.float64) if cuts is None
                else torch.as_tensor(list(cuts), dtype=torch.float64))
        if grid.numel() != self.n_intervals + 1 or bool((grid[1:] <= grid[:-1]).any()):
            raise ValueError(f"cuts must be {self.n_intervals + 1} increasing times, got {grid.tolist()}")
        self.register_buffer("cuts", grid)
        self.trunk, width = _mlp(in_features, hidden, dropout)
        self.out = nn.Linear(width, self.n_intervals)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(z))


def quantile_cuts(time: np.ndarray, event: np.ndarray, n_intervals: int) -> np.ndarray:
    """``n_intervals + 1`` cut points: 0, the event-time quantiles ``1/K .. (K-1)/K``, and the largest time.

    Quantiles of event times put about the same number of events in each interval (pycox's ``"quantiles"``
    scheme); duplicates (heavily tied times) are dropped, so fewer intervals may come back.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64) > 0.5
    ok = np.isfinite(time)
    time, event = time[ok], event[ok]
    if time.size == 0:
        raise ValueError("no finite survival time to place discrete-time cut points")
    t_max = float(time.max())
    ev = time[event]
    inner = np.quantile(ev, np.arange(1, n_intervals) / n_intervals) if ev.size else np.array([])
    cuts = np.unique(np.concatenate([[0.0], inner, [t_max]]))
    cuts = cuts[(cuts >= 0) & (cuts <= t_max)]
    if cuts.size < 2 or cuts[-1] <= 0:
        cuts = np.array([0.0, max(t_max, 1.0)])
    return cuts


class DiscreteTimeLabels:
    """``(time, event) -> (interval, event)`` for the logistic-hazard loss, with cut points learnt in ``fit``.

    Interval ``j`` is ``(c_j, c_{j+1}]``. An event in interval ``j`` gives ``(j, 1)``. A patient censored in
    interval ``j`` survived ``0..j-1``, and also ``j`` when censored in its second half (Gensheimer's
    half-interval rule), giving ``(j, 0)`` or ``(j + 1, 0)``. Events after the last cut are censored there,
    ``(K, 0)``. Missing outcomes (NaN) give ``(-1, 0)``, which the loss leaves out.
    """

    def __init__(self, n_intervals: int = 10):
        self.n_intervals = int(n_intervals)
        self.cuts_: np.ndarray | None = None

    def fit(self, time: np.ndarray, event: np.ndarray) -> DiscreteTimeLabels:
        self.cuts_ = quantile_cuts(time, event, self.n_intervals)
        return self

    @property
    def n_out(self) -> int:
        if self.cuts_ is None:
            raise RuntimeError("DiscreteTimeLabels is not fitted")
        return len(self.cuts_) - 1

    def transform(self, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.cuts_ is None:
            raise RuntimeError("DiscreteTimeLabels is not fitted")
        cuts = self.cuts_
        k = len(cuts) - 1
        time = np.asarray(time, dtype=np.float64)
        event = np.asarray(event, dtype=np.float64)
        known = np.isfinite(time) & np.isfinite(event)
        t = np.where(known, time, 0.0)
        e = known & (event > 0.5)
        j = np.clip(np.searchsorted(cuts, t, side="left") - 1, 0, k - 1)  # t in (c_j, c_{j+1}]
        beyond = t > cuts[-1]
        mid = (cuts[j] + cuts[j + 1]) / 2
        idx = np.where(e, j, j + (t >= mid).astype(np.int64))
        idx = np.where(beyond, k, idx)
        e = e & ~beyond
        idx = np.where(known, idx, -1).astype(np.int64)
        return idx, e.astype(np.float32)


def discrete_survival(hazard_logits: torch.Tensor | np.ndarray, cuts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Survival at ``times`` from logistic-hazard logits: ``S`` at the cuts is ``cumprod(1 - h)``; in between, the
    hazard is constant within each interval (log-linear interpolation); after the last cut ``S`` stays flat."""
    logits = torch.as_tensor(hazard_logits, dtype=torch.float64)
    log_s_step = torch.nn.functional.logsigmoid(-logits).cpu().numpy()  # log(1 - h_j)
    log_s_cuts = np.concatenate([np.zeros((log_s_step.shape[0], 1)), np.cumsum(log_s_step, axis=1)], axis=1)
    times = np.asarray(times, dtype=np.float64)
    cuts = np.asarray(cuts, dtype=np.float64)
    k = len(cuts) - 1
    tt = np.clip(times, 0.0, cuts[-1])
    j = np.clip(np.searchsorted(cuts, tt, side="right") - 1, 0, k - 1)
    frac = (tt - cuts[j]) / (cuts[j + 1] - cuts[j])
    log_s = log_s_cuts[:, j] + frac[None, :] * log_s_step[:, j]
    return np.exp(log_s)

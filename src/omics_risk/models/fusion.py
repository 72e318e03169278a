"""Fusion of per-modality embeddings under a presence mask, with modality dropout.

Inputs are ``{modality: Tensor(B, E_m)}`` and ``mask: Tensor(B, M) bool`` whose columns follow the fusion's
``modalities`` order. An absent modality's embedding is replaced by zeros with ``torch.where`` before anything
else, so the output does not depend on what an encoder produced for it (even NaN). A patient with no modality
at all gets a learned "no data" embedding.

* :class:`ConcatFusion` -- zero-filled embeddings concatenated with the 0/1 presence indicators (MultiSurv-style
  early-intermediate fusion); the head sees exactly which modalities were there.
* :class:`GatedAttentionFusion` -- per-modality projection and sigmoid gate, then gated attention (Ilse et al.
  2018) softmaxed over the *present* modalities only: an absent modality gets weight exactly 0. The fused
  embedding is ``sum_m n_present * a_m * v_m``: with uniform attention it is the plain sum of the modality
  embeddings, so an additive risk does not shrink when another modality is missing. The weights ``a`` are
  returned for interpretation (per-modality contribution plots).

Modality dropout (training only) hides each present modality with probability ``p`` but never all of a patient's
modalities, so the network learns to predict from any subset (MultiSurv).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ConcatFusion", "GatedAttentionFusion", "ModalityDropout", "masked_softmax"]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the ``True`` entries of each row; rows without any are all zero (never NaN)."""
    mask = mask.bool()
    s = scores.masked_fill(~mask, float("-inf"))
    s = torch.where(mask.any(dim=1, keepdim=True), s, torch.zeros_like(s))
    return torch.softmax(s, dim=1) * mask.to(scores.dtype)


class ModalityDropout(nn.Module):
    """Hide each present modality with probability ``p`` in training, always keeping at least one per patient.

    Where the coin flips would hide all of a patient's modalities, the present modality with the largest draw
    stays (a uniformly random one), so a patient with a single modality keeps it. Identity in eval mode.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality dropout must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        if not self.training or self.p == 0.0:
            return mask
        u = torch.rand(mask.shape, device=mask.device)
        kept = mask & (u >= self.p)
        lost_all = mask.any(dim=1) & ~kept.any(dim=1)
        if bool(lost_all.any()):
            rescue = torch.zeros_like(mask)
            rescue.scatter_(1, u.masked_fill(~mask, -1.0).argmax(dim=1, keepdim=True), True)
            kept = kept | (rescue & lost_all[:, None])
        return kept


def _check_names(in_features: Mapping[str, int]) -> list[str]:
    names = [str(m) for m in in_features]
    if not names:
        raise ValueError("fusion needs at least one modality")
    bad = [m for m in names if "." in m or not m]
    if bad:
        raise ValueError(f"modality names must be non-empty and contain no '.', got {bad}")
    return names


def _stack_masked(embeddings: Mapping[str, torch.Tensor], names: list[str], mask: torch.Tensor
                  ) -> list[torch.Tensor]:
    missing = [m for m in names if m not in embeddings]
    if missing:
        raise KeyError(f"no embedding for modality(ies) {missing}")
    if mask.shape[1] != len(names):
        raise ValueError(f"mask has {mask.shape[1]} columns but the fusion has {len(names)} modalities {names}")
    return [torch.where(mask[:, j:j + 1], embeddings[m], torch.zeros_like(embeddings[m]))
            for j, m in enumerate(names)]


class ConcatFusion(nn.Module):
    """Concatenate zero-filled modality embeddings and the presence indicators.

    Args:
        in_features: ``{modality: embedding size}`` in mask-column order.
        modality_dropout: training-time probability of hiding a present modality.
        indicators: append the 0/1 presence mask to the concatenation.

    ``forward`` returns ``(fused (B, out_features), None)``: concatenation has no attention weights.
    """

    def __init__(self, in_features: Mapping[str, int], modality_dropout: float = 0.0, indicators: bool = True):
        super().__init__()
        self.modalities = _check_names(in_features)
        self.in_features = {m: int(in_features[m]) for m in self.modalities}
        self.indicators = bool(indicators)
        self.out_features = sum(self.in_features.values()) + (len(self.modalities) if self.indicators else 0)
        self.dropout = ModalityDropout(modality_dropout)
        self.no_data = nn.Parameter(torch.zeros(self.out_features))

    def forward(self, embeddings: Mapping[str, torch.Tensor], mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = self.dropout(mask.bool())
        parts = _stack_masked(embeddings, self.modalities, mask)
        if self.indicators:
            parts.append(mask.to(parts[0].dtype))
        fused = torch.cat(parts, dim=1)
        fused = torch.where(mask.any(dim=1, keepdim=True), fused, self.no_data.to(fused.dtype).expand_as(fused))
        return fused, None


class GatedAttentionFusion(nn.Module):
    """Gated attention over the present modalities (see module docstring).

    Args:
        in_features: ``{modality: embedding size}`` in mask-column order (sizes may differ).
        out_features: size of the projected modality embeddings and of the fused embedding.
        hidden: width of the attention network.
        modality_dropout: training-time probability of hiding a present modality.
        dropout: dropout on the projected embeddings.

    ``forward`` returns ``(fused (B, out_features), attention (B, M))``; attention rows sum to 1 over the
    present modalities and are 0 elsewhere (all 0 for a patient without data).
    """

    def __init__(self, in_features: Mapping[str, int], out_features: int = 32, hidden: int = 32,
                 modality_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.modalities = _check_names(in_features)
        self.in_features = {m: int(in_features[m]) for m in self.modalities}
        self.out_features = int(out_features)
        self.dropout = ModalityDropout(modality_dropout)
        self.value = nn.ModuleDict({m: nn.Linear(e, self.out_features) for m, e in self.in_features.items()})
        self.gate = nn.ModuleDict({m: nn.Linear(e, 1) for m, e in self.in_features.items()})
        self.embed_dropout = nn.Dropout(dropout)
        self.attn_v = nn.Linear(self.out_features, int(hidden))
        self.attn_u = nn.Linear(self.out_features, int(hidden))
        self.attn_w = nn.Linear(int(hidden), 1, bias=False)
        self.modality_bias = nn.Parameter(torch.zeros(len(self.modalities)))
        self.no_data = nn.Parameter(torch.zeros(self.out_features))
        # Start as the additive model (constant gates 0.5, uniform attention): the data-dependent gating and
        # attention only grow where the data support them, which matters in cohorts of a few hundred patients.
        for layer in (*self.gate.values(), self.attn_w):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, embeddings: Mapping[str, torch.Tensor], mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.dropout(mask.bool())
        parts = _stack_masked(embeddings, self.modalities, mask)
        values = torch.stack(
            [self.value[m](e) * torch.sigmoid(self.gate[m](e)) for m, e in zip(self.modalities, parts, strict=True)],
            dim=1,
        )  # (B, M, D)
        values = self.embed_dropout(values)
        scores = self.attn_w(torch.tanh(self.attn_v(values)) * torch.sigmoid(self.attn_u(values))).squeeze(-1)
        attention = masked_softmax(scores + self.modality_bias.to(scores.dtype), mask)
        n_present = mask.sum(dim=1, keepdim=True).to(values.dtype)
        fused = ((attention * n_present).unsqueeze(-1) * values).sum(dim=1)
        fused = torch.where(mask.any(dim=1, keepdim=True), fused, self.no_data.to(fused.dtype).expand_as(fused))
        return fused, attention

"""The composition root: per-modality encoders -> fusion -> heads, and a builder from a plain-value spec.

:class:`MultimodalSurvivalNet` holds no logic of its own beyond wiring: ``forward(inputs, mask)`` encodes each
modality, fuses under the presence mask and runs every head, returning a dictionary

* ``log_hz`` (B,) -- Cox head, higher = riskier;
* ``hazard_logits`` (B, K) -- discrete-time head;
* ``response_logit`` (B,) -- binary head;
* ``risk`` (B,) -- one "higher = riskier" score: ``log_hz`` if there is a Cox head, else the discrete-time
  cumulative hazard over the grid, else minus the response logit;
* ``attention`` (B, M) -- with gated-attention fusion.

``inputs`` maps modality -> tensor (tabular: (B, F); CT: (B, T, C, X, Y, Z)); an optional ``"<modality>/present"``
entry gives a finer mask for the encoder (CT timepoints, (B, T)). :func:`build_network` makes the whole network
from a JSON-able spec, which the estimator saves next to the weights so that ``load`` rebuilds the same network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omics_risk.models.encoders import CTEncoder, TabularEncoder
from omics_risk.models.fusion import ConcatFusion, GatedAttentionFusion
from omics_risk.models.heads import BinaryHead, CoxHead, DiscreteTimeHead

__all__ = ["HEAD_OUTPUTS", "EnsembleNet", "MultimodalSurvivalNet", "build_network"]

#: head name -> output key
HEAD_OUTPUTS = {"cox": "log_hz", "discrete": "hazard_logits", "binary": "response_logit"}


class MultimodalSurvivalNet(nn.Module):
    """Encoders (one per modality, in mask-column order) -> fusion -> named heads (``cox``/``discrete``/``binary``)."""

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.modalities = [str(m) for m in encoders]
        fusion_order = list(getattr(fusion, "modalities", self.modalities))
        if fusion_order != self.modalities:
            raise ValueError(f"encoder order {self.modalities} differs from the fusion's modalities {fusion_order}")
        unknown = sorted(set(heads) - set(HEAD_OUTPUTS))
        if unknown or not heads:
            raise ValueError(f"heads must be a non-empty subset of {sorted(HEAD_OUTPUTS)}, got {sorted(heads)}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = mask.bool()
        embeddings = {}
        for j, m in enumerate(self.modalities):
            embeddings[m] = self.encoders[m](inputs[m], inputs.get(f"{m}/present", mask[:, j]))
        fused, attention = self.fusion(embeddings, mask)
        out: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            out[HEAD_OUTPUTS[name]] = head(fused)
        if "log_hz" in out:
            out["risk"] = out["log_hz"]
        elif "hazard_logits" in out:
            out["risk"] = F.softplus(out["hazard_logits"].float()).sum(dim=1)  # -log S at the last cut
        else:
            out["risk"] = -out["response_logit"]
        if attention is not None:
            out["attention"] = attention
        return out


class EnsembleNet(nn.Module):
    """Independently trained networks of one architecture; every output is the mean over the members.

    On a few hundred patients one network's early-stopping split and initialisation move its C-index by several
    points; averaging members trained with different seeds and splits removes most of that variance (the risk
    is the mean log relative hazard, i.e. the geometric mean of the members' hazard ratios).
    """

    def __init__(self, members: list[MultimodalSurvivalNet]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.modalities = list(members[0].modalities)

    def forward(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = [member(inputs, mask) for member in self.members]
        return {key: torch.stack([o[key].float() for o in outs]).mean(dim=0) for key in outs[0]}


def _encoder(spec: Mapping[str, Any]) -> nn.Module:
    kind = spec.get("type", "tabular")
    kw = {k: v for k, v in spec.items() if k != "type"}
    if kind == "tabular":
        return TabularEncoder(**kw)
    if kind == "ct":
        return CTEncoder(**kw)
    raise ValueError(f"unknown encoder type {kind!r}; use 'tabular' or 'ct'")


def build_network(spec: Mapping[str, Any]) -> MultimodalSurvivalNet | EnsembleNet:
    """A :class:`MultimodalSurvivalNet` from plain values (an :class:`EnsembleNet` of ``members`` copies when
    the spec has ``"members": n > 1``)::

        {"modalities": {"clinical": {"type": "tabular", "in_features": 12, "hidden": [32], "out_features": 16},
                        "ct": {"type": "ct", "timepoints": ["preop", "postop1"], "embed_dim": 32}},
         "fusion": {"type": "gated_attention" | "concat", ...GatedAttentionFusion / ConcatFusion kwargs},
         "heads": {"cox": {}, "discrete": {"n_intervals": 10, "cuts": [...]}, "binary": {}}}
    """
    spec = copy.deepcopy(dict(spec))
    n_members = int(spec.pop("members", 1))
    if n_members > 1:
        return EnsembleNet([build_network(spec) for _ in range(n_members)])
    encoders = {m: _encoder(s) for m, s in spec["modalities"].items()}
    dims = {m: int(e.out_features) for m, e in encoders.items()}
    fusion_spec = dict(spec.get("fusion", {}))
    kind = fusion_spec.pop("type", "gated_attention")
    if kind == "concat":
        fusion: nn.Module = ConcatFusion(dims, **fusion_spec)
    elif kind == "gated_attention":
        fusion = GatedAttentionFusion(dims, **fusion_spec)
    else:
        raise ValueError(f"unknown fusion type {kind!r}; use 'concat' or 'gated_attention'")
    width = int(fusion.out_features)
    makers = {"cox": CoxHead, "discrete": DiscreteTimeHead, "binary": BinaryHead}
    heads_spec = spec.get("heads", {"cox": {}})
    unknown = sorted(set(heads_spec) - set(makers))
    if unknown:
        raise ValueError(f"unknown head(s) {unknown}; use {sorted(makers)}")
    heads = {name: makers[name](width, **dict(kw or {})) for name, kw in heads_spec.items()}
    return MultimodalSurvivalNet(encoders, fusion, heads)

"""Per-modality encoders: a tabular MLP and a 3D-ResNet CT encoder shared across timepoints.

Every encoder maps its modality's input to a ``(batch, out_features)`` embedding and takes an optional presence
mask; fusion (``fusion.py``) decides what an absent modality contributes, so encoders never need to know.
Constructor arguments are plain values (ints, floats, strings, tuples) so that Hydra can build them from YAML.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["CTEncoder", "TabularEncoder"]

_NORMS = ("layer", "batch", "none")


class TabularEncoder(nn.Module):
    """MLP: ``in_features -> hidden... -> out_features`` with normalisation, GELU and dropout between layers.

    Args:
        in_features: number of preprocessed features of the modality.
        hidden: hidden layer widths (``()`` gives a single linear layer).
        out_features: embedding size.
        dropout: dropout after each hidden activation (and on the input when ``input_dropout``).
        norm: ``"layer"`` (default: independent of batch composition, so full-batch and mini-batch training and
            single-patient scoring behave alike), ``"batch"`` or ``"none"``.
        input_dropout: dropout on the input features (a cheap regulariser for wide omics tables).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (64,), out_features: int = 32,
                 dropout: float = 0.2, norm: str = "layer", input_dropout: float = 0.0):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
        width = self.in_features
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if norm == "layer":
                layers.append(nn.LayerNorm(int(h)))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(int(h)))
            layers += [nn.GELU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, self.out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"TabularEncoder expects {self.in_features} features, got {x.shape[-1]}")
        return self.net(x)


_RESNET_LAYERS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class CTEncoder(nn.Module):
    """A MONAI 3D ResNet (random init, never pretrained weights) applied to each CT timepoint, then pooled.

    Input: ``(B, T, C, X, Y, Z)`` float32 crops, timepoints in ``timepoints`` order (the
    :mod:`omics_risk.features.ct` tensors ``(C, X, Y, Z)`` stacked per patient), or ``(B, C, X, Y, Z)`` for a
    single timepoint. ``present`` is ``(B, T)`` (which timepoints exist) or ``(B,)`` (the whole modality). Only
    present scans go through the ResNet (absent ones cost nothing and cannot leak into batch statistics); the
    same weights serve every timepoint.

    Args:
        in_channels: image channels (1 = CT; 2 with ``mask_channel`` in the CT config).
        timepoints: timepoint labels, e.g. ``("preop", "postop1")``.
        arch: ``"resnet10"`` | ``"resnet18"`` | ``"resnet34"`` (basic blocks).
        embed_dim: output embedding size.
        widths: channels of the four ResNet stages (small defaults fit a CPU).
        pool: ``"mean"`` (masked mean over present timepoints) or ``"concat"`` (per-timepoint embeddings, zero
            when absent, plus presence indicators, projected to ``embed_dim``).
        norm: ResNet normalisation, ``"batch"``, ``"instance"`` or ``"group"`` (4 groups).
        conv1_size, conv1_stride, max_pool: the stem (kernel 7, stride 2, no max-pool: a 32^3 crop
            reaches the last stage at 2^3).
        dropout: dropout on the embedding.
    """

    def __init__(self, in_channels: int = 1, timepoints: Sequence[str] = ("preop", "postop1"),
                 arch: str = "resnet10", embed_dim: int = 32, widths: Sequence[int] = (16, 32, 64, 128),
                 pool: str = "mean", norm: str = "batch", conv1_size: int = 7, conv1_stride: int = 2,
                 max_pool: bool = False, dropout: float = 0.0):
        super().__init__()
        from monai.networks.nets import ResNet  # lazy: MONAI takes seconds to import; only CT-image models need it

        if arch not in _RESNET_LAYERS:
            raise ValueError(f"arch must be one of {sorted(_RESNET_LAYERS)}, got {arch!r}")
        if pool not in ("mean", "concat"):
            raise ValueError(f"pool must be 'mean' or 'concat', got {pool!r}")
        if len(widths) != 4:
            raise ValueError(f"widths must give the 4 ResNet stage widths, got {list(widths)}")
        norms = {"batch": "batch", "instance": ("instance", {"affine": True}), "group": ("group", {"num_groups": 4})}
        if norm not in norms:
            raise ValueError(f"norm must be one of {sorted(norms)}, got {norm!r}")
        self.timepoints = tuple(str(t) for t in timepoints)
        self.pool = pool
        self.out_features = int(embed_dim)
        self.backbone = ResNet(
            block="basic", layers=list(_RESNET_LAYERS[arch]), block_inplanes=[int(w) for w in widths],
            spatial_dims=3, n_input_channels=int(in_channels), conv1_t_size=int(conv1_size),
            conv1_t_stride=int(conv1_stride), no_max_pool=not max_pool, shortcut_type="B",
            feed_forward=False, norm=norms[norm],
        )
        width = int(widths[-1])
        self.project = nn.Sequential(nn.Linear(width, self.out_features), nn.GELU(), nn.Dropout(dropout))
        n_t = len(self.timepoints)
        self.combine = (nn.Linear(n_t * self.out_features + n_t, self.out_features) if pool == "concat"
                        else nn.Identity())

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 5:
            x = x.unsqueeze(1)
        if x.dim() != 6:
            raise ValueError(f"CTEncoder expects (B, T, C, X, Y, Z) or (B, C, X, Y, Z) tensors, got {tuple(x.shape)}")
        b, t = x.shape[:2]
        if t != len(self.timepoints):
            raise ValueError(f"CTEncoder was built for timepoints {self.timepoints}, got {t} timepoint(s)")
        if present is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        else:
            mask = present.to(x.device).bool()
            mask = mask[:, None].expand(b, t) if mask.dim() == 1 else mask
        flat_mask = mask.reshape(-1)
        emb = torch.zeros(b * t, self.out_features, device=x.device, dtype=x.dtype)
        if bool(flat_mask.any()):
            scans = x.reshape(b * t, *x.shape[2:])[flat_mask]
            feats = self.project(self.backbone(scans))
            emb = emb.to(feats.dtype).index_put((flat_mask.nonzero(as_tuple=True)[0],), feats)
        emb = emb.reshape(b, t, self.out_features)
        m = mask.to(emb.dtype).unsqueeze(-1)
        if self.pool == "mean":
            return (emb * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.combine(torch.cat([(emb * m).reshape(b, -1), mask.to(emb.dtype)], dim=1))

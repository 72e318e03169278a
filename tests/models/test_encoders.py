"""Tabular MLP and CT 3D-ResNet encoders: shapes, timepoint masking and pooling."""

from __future__ import annotations

import pytest
import torch

from omics_risk.models.encoders import CTEncoder, TabularEncoder

SMALL = {"widths": (4, 4, 8, 8), "embed_dim": 6}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible float sums (tests/conftest.py)


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_tabular_encoder_shapes(norm):
    enc = TabularEncoder(12, hidden=(16, 8), out_features=5, norm=norm, input_dropout=0.1)
    assert enc(torch.randn(7, 12)).shape == (7, 5)
    assert enc.out_features == 5
    linear = TabularEncoder(12, hidden=(), out_features=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in linear.modules()) == 1
    with pytest.raises(ValueError, match="expects 12 features"):
        enc(torch.randn(7, 11))
    with pytest.raises(ValueError, match="norm must be"):
        TabularEncoder(3, norm="group")


def test_ct_encoder_skips_absent_timepoints_and_pools_the_present_ones():
    torch.manual_seed(0)
    enc = CTEncoder(timepoints=("preop", "postop1"), **SMALL).eval()
    x = torch.rand(3, 2, 1, 16, 16, 16)
    present = torch.tensor([[True, True], [True, False], [False, False]])
    out = enc(x, present)
    assert out.shape == (3, 6)
    # An absent scan never reaches the ResNet: NaN there changes nothing.
    x_nan = x.clone()
    x_nan[1, 1] = float("nan")
    x_nan[2] = float("nan")
    assert torch.equal(enc(x_nan, present), out)
    # Mean pooling: a patient with one scan gets that scan's embedding, with none a zero vector.
    one = CTEncoder(timepoints=("preop",), **SMALL).eval()
    one.load_state_dict(enc.state_dict())
    assert torch.allclose(out[1], one(x[1:2, 0])[0], atol=1e-6)  # (B, C, X, Y, Z) input = one timepoint
    assert torch.equal(out[2], torch.zeros(6))
    both = enc(x[:1], torch.tensor([[True, True]]))
    halves = (one(x[:1, 0]) + one(x[:1, 1])) / 2
    assert torch.allclose(both, halves, atol=1e-6)


def test_ct_encoder_concat_pool_and_errors():
    enc = CTEncoder(timepoints=("a", "b", "c"), pool="concat", norm="instance", **SMALL)
    assert enc(torch.rand(2, 3, 1, 8, 8, 8), torch.tensor([True, False])).shape == (2, 6)
    with pytest.raises(ValueError, match="built for timepoints"):
        enc(torch.rand(2, 2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="arch must be"):
        CTEncoder(arch="resnet1000")
    backbone_params = sum(p.numel() for p in enc.backbone.parameters())
    assert backbone_params < 50_000  # small widths stay CPU-sized

"""Fusion under a presence mask: exact masking maths, "no data" rows and modality dropout."""

from __future__ import annotations

import pytest
import torch

from omics_risk.models.fusion import ConcatFusion, GatedAttentionFusion, ModalityDropout, masked_softmax

DIMS = {"clinical": 3, "cfdna": 4, "ct": 5}
MASK = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [False, False, False]])


def _embeddings(seed: int = 0, batch: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in DIMS.items()}


def _with_absent(emb: dict[str, torch.Tensor], fill: float) -> dict[str, torch.Tensor]:
    out = {m: e.clone() for m, e in emb.items()}
    for j, m in enumerate(DIMS):
        out[m][~MASK[:, j]] = fill
    return out


def _randomised(fusion: GatedAttentionFusion) -> GatedAttentionFusion:
    """Non-zero gate/attention weights (they start at zero: uniform attention), for the masking tests."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return fusion


def test_masked_softmax_is_exact():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 50.0, 3.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True], [True, False, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    e = torch.exp(torch.tensor([1.0, 3.0]))
    assert torch.allclose(w[0], torch.tensor([e[0] / e.sum(), 0.0, e[1] / e.sum()]))
    assert torch.equal(w[0], w[1])  # the absent score does not matter, however large
    assert torch.equal(w[2], torch.zeros(3))  # no modality: all zero, not NaN


def test_gated_attention_ignores_absent_modalities_exactly():
    fusion = _randomised(GatedAttentionFusion(DIMS, out_features=6, hidden=4)).eval()
    emb = _embeddings()
    fused, attn = fusion(emb, MASK)
    assert fused.shape == (4, 6) and attn.shape == (4, 3)
    assert torch.equal(attn[~MASK], torch.zeros(int((~MASK).sum())))  # absent: exactly zero attention
    assert torch.allclose(attn[:3].sum(dim=1), torch.ones(3))
    assert attn[2, 1] == 1.0  # a single present modality takes all the attention
    for fill in (float("nan"), 1e6, -3.0):  # output invariant to what an absent modality's encoder produced
        f2, a2 = fusion(_with_absent(emb, fill), MASK)
        assert torch.equal(f2, fused) and torch.equal(a2, attn)
    # No modality at all: the learned "no data" embedding and zero attention.
    assert torch.equal(fused[3], fusion.no_data.detach())
    assert torch.equal(attn[3], torch.zeros(3))


def test_gated_attention_starts_as_the_sum_of_modality_embeddings():
    """Zero-initialised gates and attention: weights 1/n_present, scaled by n_present -> the plain sum."""
    torch.manual_seed(0)
    fusion = GatedAttentionFusion(DIMS, out_features=6).eval()
    emb = _embeddings()
    fused, attn = fusion(emb, MASK)
    n = MASK.sum(dim=1, keepdim=True).clamp(min=1)
    assert torch.allclose(attn, MASK.float() / n)
    expected = sum(MASK[:, j:j + 1] * 0.5 * fusion.value[m](emb[m]) for j, m in enumerate(DIMS))
    assert torch.allclose(fused[:3], expected[:3], atol=1e-6)


def test_gradients_stay_finite_with_nan_in_absent_inputs():
    fusion = _randomised(GatedAttentionFusion(DIMS, out_features=6))
    emb = {m: e.requires_grad_(True) for m, e in _with_absent(_embeddings(), float("nan")).items()}
    fused, _ = fusion(emb, MASK)
    fused.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)
    assert all(torch.isfinite(e.grad).all() for e in emb.values())


def test_concat_fusion_zero_fills_and_appends_indicators():
    fusion = ConcatFusion(DIMS)
    assert fusion.out_features == 3 + 4 + 5 + 3
    emb = _embeddings()
    fused, attn = fusion(_with_absent(emb, float("nan")), MASK)
    assert attn is None
    assert torch.equal(fused[1, 3:7], torch.zeros(4))  # cfdna absent for patient 1
    assert torch.equal(fused[1, :3], emb["clinical"][1])
    assert torch.equal(fused[:3, -3:], MASK[:3].float())
    assert torch.equal(fused[3], fusion.no_data.detach())
    with pytest.raises(ValueError, match="mask has 2 columns"):
        fusion(emb, MASK[:, :2])


def test_modality_dropout_never_hides_all_and_never_invents():
    torch.manual_seed(0)
    drop = ModalityDropout(0.6).train()
    mask = torch.rand(5000, 4) < 0.7
    mask[:100] = False
    mask[100:200] = torch.tensor([False, True, False, False])  # one modality only: always kept
    out = drop(mask)
    assert not (out & ~mask).any()
    assert torch.equal(out.any(dim=1), mask.any(dim=1))
    assert torch.equal(out[100:200], mask[100:200])
    full = mask.sum(dim=1) == 4
    rate = 1 - out[full].float().mean()
    assert 0.5 < float(rate) < 0.65  # ~p, a little less because one modality is always rescued
    assert torch.equal(drop.eval()(mask), mask)
    with pytest.raises(ValueError):
        ModalityDropout(1.0)


def test_modality_dropout_inside_fusion_only_in_training():
    fusion = GatedAttentionFusion(DIMS, modality_dropout=0.5)
    emb = _embeddings(batch=4)
    torch.manual_seed(3)
    _, a_train = fusion.train()(emb, MASK)
    _, a_eval = fusion.eval()(emb, MASK)
    assert not (a_train[~MASK] != 0).any() and torch.equal((a_eval > 0), MASK)
    assert (a_train > 0).any(dim=1)[:3].all()

"""Heads, the discrete-time label transform and survival curve, and the network builder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omics_risk.models.heads import (
    BinaryHead,
    CoxHead,
    DiscreteTimeHead,
    DiscreteTimeLabels,
    discrete_survival,
    quantile_cuts,
)
from omics_risk.models.multimodal import build_network


def test_heads_shapes_and_cox_has_no_bias():
    z = torch.randn(5, 8)
    cox = CoxHead(8)
    assert cox(z).shape == (5,) and cox.out.bias is None
    assert BinaryHead(8, hidden=(4,))(z).shape == (5,)
    head = DiscreteTimeHead(8, n_intervals=3, cuts=[0.0, 10.0, 20.0, 30.0])
    assert head(z).shape == (5, 3)
    assert head.cuts.tolist() == [0.0, 10.0, 20.0, 30.0] and "cuts" in head.state_dict()
    with pytest.raises(ValueError, match="increasing"):
        DiscreteTimeHead(8, n_intervals=2, cuts=[0.0, 5.0, 5.0])


def test_quantile_cuts_follow_event_times():
    time = np.array([1, 2, 3, 4, 5, 6, 7, 8, 100], dtype=float)
    event = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0])
    cuts = quantile_cuts(time, event, 4)
    assert cuts[0] == 0 and cuts[-1] == 100
    assert np.allclose(cuts[1:-1], np.quantile(time[:8], [0.25, 0.5, 0.75]))
    assert len(quantile_cuts(np.ones(10), np.ones(10), 5)) == 2  # all tied: one interval


def test_label_transform_events_censoring_half_interval_and_unknown():
    lab = DiscreteTimeLabels(3)
    lab.cuts_ = np.array([0.0, 10.0, 20.0, 30.0])
    time = np.array([5.0, 10.0, 12.0, 18.0, 25.0, 40.0, 40.0, np.nan, 0.0])
    event = np.array([1, 1, 0, 0, 1, 1, 0, 1, 1])
    idx, ev = lab.transform(time, event)
    # event in (0,10] -> 0; t=10 is in (0,10] -> 0; censored early in (10,20] -> survived 0 only -> 1;
    # censored late in (10,20] -> survived 0 and 1 -> 2; event in (20,30] -> 2; beyond the grid -> censored at 3.
    assert idx.tolist() == [0, 0, 1, 2, 2, 3, 3, -1, 0]
    assert ev.tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 1]


def test_discrete_survival_is_the_product_of_conditional_survivals():
    logits = torch.tensor([[-1.0, 0.0, 1.0]])
    cuts = np.array([0.0, 10.0, 20.0, 30.0])
    h = torch.sigmoid(logits)[0].numpy()
    s_cuts = np.cumprod(1 - h)
    s = discrete_survival(logits, cuts, np.array([0.0, 10.0, 15.0, 20.0, 30.0, 99.0]))
    assert s[0, 0] == pytest.approx(1.0)
    assert s[0, [1, 3, 4]] == pytest.approx(s_cuts)
    assert s[0, 2] == pytest.approx(s_cuts[0] * (1 - h[1]) ** 0.5)  # constant hazard inside an interval
    assert s[0, 5] == pytest.approx(s_cuts[-1])  # flat after the grid
    assert np.all(np.diff(s[0]) <= 0)


def test_build_network_outputs_and_risk():
    spec = {"modalities": {"a": {"type": "tabular", "in_features": 4, "hidden": [], "out_features": 3},
                           "b": {"type": "tabular", "in_features": 2, "out_features": 3}},
            "fusion": {"type": "gated_attention", "out_features": 5},
            "heads": {"discrete": {"n_intervals": 2, "cuts": [0, 1, 2]}, "binary": {}}}
    net = build_network(spec).eval()
    out = net({"a": torch.randn(6, 4), "b": torch.randn(6, 2)}, torch.ones(6, 2, dtype=torch.bool))
    assert set(out) == {"hazard_logits", "response_logit", "risk", "attention"}
    assert torch.allclose(out["risk"], torch.nn.functional.softplus(out["hazard_logits"]).sum(1))
    cox = build_network({**spec, "heads": {"cox": {}, "binary": {}}}).eval()
    out = cox({"a": torch.randn(6, 4), "b": torch.randn(6, 2)}, torch.ones(6, 2, dtype=torch.bool))
    assert torch.equal(out["risk"], out["log_hz"])
    with pytest.raises(ValueError, match="unknown head"):
        build_network({**spec, "heads": {"weibull": {}}})
    with pytest.raises(ValueError, match="unknown fusion"):
        build_network({**spec, "fusion": {"type": "kronecker"}})

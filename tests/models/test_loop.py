"""The training loop: it learns, stops early, restores the best weights, calls back, and is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omics_risk.models.loop import concordance, evaluate, fit_network
from omics_risk.models.losses import MultiTaskObjective
from omics_risk.models.multimodal import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible float sums (tests/conftest.py)


def _cohort(n: int, seed: int) -> dict:
    """One tabular modality, log hazard = x0 - x1, exponential times, ~30% censoring, as one batch."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    eta = x[:, 0] - x[:, 1]
    t_event = rng.exponential(1.0 / np.exp(eta))
    t_cens = rng.exponential(2.0, n)
    return {
        "inputs": {"omics": torch.from_numpy(x)},
        "mask": torch.ones(n, 1, dtype=torch.bool),
        "time": torch.from_numpy(np.minimum(t_event, t_cens).astype(np.float32)),
        "event": torch.from_numpy((t_event <= t_cens).astype(np.float32)),
    }


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return build_network({"modalities": {"omics": {"type": "tabular", "in_features": 5, "hidden": [8],
                                                   "out_features": 4, "dropout": 0.0}},
                          "fusion": {"type": "concat"}, "heads": {"cox": {}}})


def test_fit_learns_restores_best_weights_and_reports_every_epoch():
    train, val = _cohort(200, 0), _cohort(100, 1)
    seen: list[tuple[int, dict]] = []
    model = _net()
    result = fit_network(model, [train], [val], epochs=60, lr=1e-2, patience=None, device="cpu", seed=0,
                         monitor="loss", on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == list(range(60))
    assert {"train/loss", "train/cox", "val/loss", "val/cindex", "lr", "seconds"} <= set(seen[0][1])
    best = min(range(60), key=lambda e: result.history[e]["val/loss"])
    assert result.best_epoch == best
    after = evaluate(model, [val], MultiTaskObjective(), torch.device("cpu"))
    assert after["loss"] == pytest.approx(result.history[best]["val/loss"], rel=1e-6)  # best weights are back
    assert after["cindex"] > 0.75  # true C of x0 - x1 here is about 0.8
    assert not model.training


def test_early_stopping_waits_patience_epochs_after_the_best():
    train, val = _cohort(200, 0), _cohort(100, 1)
    result = fit_network(_net(), [train], [val], epochs=500, lr=5e-2, patience=5, device="cpu", seed=0,
                         monitor="cindex")
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 1 + 5
    assert result.best_score == pytest.approx(max(h["val/cindex"] for h in result.history))


def test_undefined_validation_cindex_neither_stops_nor_selects():
    train, val = _cohort(100, 0), _cohort(30, 1)
    val["event"] = torch.zeros(30)  # no event: C-index undefined
    result = fit_network(_net(), [train], [val], epochs=6, patience=2, device="cpu", seed=0, monitor="cindex")
    assert not result.stopped_early and result.best_epoch == 5 and math.isnan(result.history[0]["val/cindex"])


def test_same_seed_gives_bit_identical_weights_on_cpu():
    train, val = _cohort(150, 0), _cohort(50, 1)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_network({"modalities": {"omics": {"type": "tabular", "in_features": 5, "hidden": [8],
                                                      "out_features": 4, "dropout": 0.3}},
                             "fusion": {"type": "gated_attention", "modality_dropout": 0.0}, "heads": {"cox": {}}})
        fit_network(net, [train], [val], epochs=15, lr=1e-2, patience=None, device="cpu", seed=7)
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_mini_batches_from_a_callable_and_no_validation_keeps_last_weights():
    data = _cohort(64, 0)
    calls = []

    def batches(epoch: int):
        calls.append(epoch)
        perm = torch.from_numpy(np.random.default_rng(epoch).permutation(64))
        for chunk in perm.split(16):
            yield {"inputs": {"omics": data["inputs"]["omics"][chunk]}, "mask": data["mask"][chunk],
                   "time": data["time"][chunk], "event": data["event"][chunk]}

    result = fit_network(_net(), batches, None, epochs=3, device="cpu", seed=0)
    assert calls == [0, 1, 2] and result.best_epoch == 2 and "val/loss" not in result.history[-1]


def test_non_finite_loss_stops_with_a_clear_error():
    data = _cohort(20, 0)
    data["inputs"]["omics"][0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="training loss"):
        fit_network(_net(), [data], None, epochs=2, device="cpu", seed=0)


def test_concordance_follows_the_sksurv_sign_convention():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 1, 0])
    assert concordance(-time, event, time) == 1.0  # shorter survival, higher risk
    assert concordance(time, event, time) == 0.0
    assert math.isnan(concordance(time, np.zeros(4), time))

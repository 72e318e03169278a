"""Survival losses against lifelines (Cox, Efron ties), hand-computed values, and their degenerate cases."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from omics_risk.models.losses import (
    CoxMomentum,
    MultiTaskObjective,
    cox_loss,
    discrete_time_nll,
    masked_bce,
    rank_encode_times,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible float sums (tests/conftest.py)


def _tied_data(seed: int = 1, n: int = 30) -> pd.DataFrame:
    """Integer times 1..7: many tied events, and censored patients tied with events."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n),
                         "t": rng.integers(1, 8, n).astype(float), "e": rng.integers(0, 2, n)})


def _lifelines(df: pd.DataFrame, beta: np.ndarray | None) -> CoxPHFitter:
    """lifelines' Efron log partial likelihood at its MLE (beta None) or at a fixed coefficient (no Newton step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if beta is None:
            return CoxPHFitter().fit(df, "t", "e")
        return CoxPHFitter().fit(df, "t", "e", fit_options={"max_steps": 0}, initial_point=beta)


@pytest.mark.parametrize("beta", [None, np.array([0.5, -0.3])])
def test_cox_loss_matches_lifelines_efron(beta):
    df = _tied_data()
    assert df.duplicated(["t"]).any() and (df.groupby("t")["e"].nunique() == 2).any()  # both kinds of ties
    cph = _lifelines(df, beta)
    log_hz = torch.tensor(df[["x", "z"]].to_numpy() @ cph.params_.to_numpy())
    got = -cox_loss(log_hz, torch.tensor(df["e"].to_numpy()), torch.tensor(df["t"].to_numpy()), reduction="sum")
    assert float(got) == pytest.approx(cph.log_likelihood_, rel=1e-6, abs=1e-5)
    mean = cox_loss(log_hz, torch.tensor(df["e"].to_numpy()), torch.tensor(df["t"].to_numpy()))
    assert float(mean) == pytest.approx(-cph.log_likelihood_ / df["e"].sum(), rel=1e-6)


def test_cox_loss_censored_tied_with_event_is_order_free():
    """No tied events, but each censored time equals an event time: the patient order must not matter
    (torchsurv's tie-free branch alone gives order-dependent values here)."""
    rng = np.random.default_rng(3)
    n = 40
    t = np.repeat(np.arange(n // 2, dtype=float), 2)
    e = np.tile([1, 0], n // 2)
    x = rng.normal(size=n)
    df = pd.DataFrame({"x": x, "t": t, "e": e})
    cph = _lifelines(df, None)
    lh = torch.tensor(x * cph.params_["x"])
    values = []
    for order in (np.lexsort((e, t)), np.lexsort((-e, t)), rng.permutation(n)):
        values.append(-float(cox_loss(lh[order], torch.tensor(e[order]), torch.tensor(t[order]), reduction="sum")))
    assert values == pytest.approx([cph.log_likelihood_] * 3, rel=1e-6)


def test_rank_encoding_puts_censored_after_events_at_the_same_time():
    t = torch.tensor([5.0, 5.0, 2.0, 9.0])
    e = torch.tensor([False, True, True, False])
    assert rank_encode_times(t, e).tolist() == [3.0, 2.0, 0.0, 5.0]


def test_cox_loss_degenerate_batches_are_zero_without_nan():
    """torchsurv #35: one patient (or no event) has no partial-likelihood term; the loss is an exact, attached 0."""
    for log_hz, event, time in [
        (torch.tensor([0.7]), torch.tensor([1.0]), torch.tensor([10.0])),  # batch of one
        (torch.tensor([0.7, -0.2, 1.3]), torch.zeros(3), torch.tensor([3.0, 5.0, 8.0])),  # no event
        (torch.tensor([]), torch.tensor([]), torch.tensor([])),  # empty
    ]:
        w = log_hz.clone().requires_grad_(True)
        loss = cox_loss(w, event, time)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert w.grad is not None and torch.equal(w.grad, torch.zeros_like(w))


def test_cox_loss_leaves_out_unknown_outcomes_and_survives_huge_scores():
    lh = torch.tensor([0.2, -1.0, 0.5, 3.0])
    ev = torch.tensor([1.0, 0.0, 1.0, float("nan")])
    t = torch.tensor([2.0, 4.0, 6.0, 1.0])
    assert float(cox_loss(lh, ev, t)) == pytest.approx(float(cox_loss(lh[:3], ev[:3], t[:3])))
    big = torch.tensor([400.0, 390.0, 380.0])  # exp() overflows float32 without the shift
    loss = cox_loss(big, torch.tensor([1, 1, 1]), torch.tensor([1.0, 1.0, 2.0]))  # tied events: Efron branch
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(cox_loss(big - 380.0, torch.tensor([1, 1, 1]),
                                                       torch.tensor([1.0, 1.0, 2.0]))), rel=1e-6)


def test_discrete_time_nll_matches_the_likelihood_by_hand():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, -0.5, 0.3], [0.1, 0.2, 0.3]])
    interval = torch.tensor([1, 2, 3])  # event in 1; censored after surviving 0, 1; censored after all 3
    event = torch.tensor([1.0, 0.0, 0.0])
    h = torch.sigmoid(logits)
    by_hand = -(torch.log(1 - h[0, 0]) + torch.log(h[0, 1])
                + torch.log(1 - h[1, 0]) + torch.log(1 - h[1, 1])
                + torch.log(1 - h[2]).sum()) / 3
    assert float(discrete_time_nll(logits, interval, event)) == pytest.approx(float(by_hand), rel=1e-6)
    # A patient without outcome (-1) is left out of both the sum and the mean.
    two = discrete_time_nll(logits[:2], torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    three = discrete_time_nll(logits, torch.tensor([1, 2, -1]), torch.tensor([1.0, 0.0, 0.0]))
    assert float(two) == pytest.approx(float(three))


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([0.3, -1.2, 2.0])
    labels = torch.tensor([1.0, float("nan"), 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], labels[[0, 2]])
    assert float(masked_bce(logits, labels)) == pytest.approx(float(expected))
    w = logits.clone().requires_grad_(True)
    none = masked_bce(w, torch.full((3,), float("nan")))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.equal(w.grad, torch.zeros(3))


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1, bias=False)

    def forward(self, inputs, mask):
        return {"log_hz": self.lin(inputs["x"]).squeeze(-1), "risk": self.lin(inputs["x"]).squeeze(-1)}


def test_cox_momentum_gives_batch_of_one_a_risk_set():
    torch.manual_seed(0)
    net = _TinyNet()
    momentum = CoxMomentum(net, batch_size=1, steps=4)
    assert momentum.bank.online.network is net  # the trained network is the model itself, not a copy
    losses = []
    for i in range(4):
        batch = {"inputs": {"x": torch.randn(1, 3)}, "mask": torch.ones(1, 1, dtype=torch.bool),
                 "event": torch.tensor([1.0]), "time": torch.tensor([10.0 - i])}
        loss, out = momentum(batch)
        assert torch.isfinite(loss) and "log_hz" in out
        losses.append(float(loss.detach()))
        loss.backward()
    assert losses[0] == 0.0  # nothing in the bank yet: the batch-of-one loss is 0
    assert all(v > 0 for v in losses[1:])  # later batches are compared with the bank
    assert net.lin.weight.grad is not None and torch.isfinite(net.lin.weight.grad).all()


def test_multitask_objective_weights_and_heads():
    out = {"log_hz": torch.tensor([0.1, 0.5, -0.2]), "response_logit": torch.tensor([0.0, 1.0, -1.0])}
    batch = {"event": torch.tensor([1.0, 0.0, 1.0]), "time": torch.tensor([3.0, 4.0, 5.0]),
             "label": torch.tensor([1.0, 0.0, float("nan")])}
    parts = MultiTaskObjective({"cox": 2.0, "binary": 0.5}).losses(out, batch)
    assert set(parts) == {"loss", "cox", "binary"}
    assert float(parts["loss"]) == pytest.approx(2.0 * float(parts["cox"]) + 0.5 * float(parts["binary"]))
    with pytest.raises(ValueError, match="unknown head"):
        MultiTaskObjective({"weibull": 1.0})

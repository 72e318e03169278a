"""The one bootstrap engine: its settings (one config entry, old keys), resamples shared by every output, pooling
over CV repeats, and the corrected resampled t-test against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from omics_risk.evaluation.bootstrap import (
    BootstrapSettings,
    bootstrap_indices,
    bootstrap_settings,
    corrected_resampled_t,
    fold_cindex,
    paired_bootstrap_difference,
    paired_comparison,
    pooled_cindex,
)
from omics_risk.evaluation.pooling import within_fold_ranks
from omics_risk.evaluation.splits import repeated_stratified_folds
from omics_risk.evaluation.survival_metrics import harrell_c


def test_corrected_resampled_t_matches_a_hand_computed_value() -> None:
    # 3 repeats x 2 folds; by hand: mean 0.13 / 6, sample variance (ddof 1) 2.68333e-3 / 5 = 5.36667e-4,
    # corrected variance (1/6 + 1/(2-1)) * 5.36667e-4 = 6.26111e-4, se 0.0250222, t = 0.865897, df 5,
    # two-sided p = 0.4261 (t tables: t_{0.975, 5} = 2.570582).
    d = np.array([[0.02, 0.05], [-0.01, 0.03], [0.04, 0.0]])
    est, p = corrected_resampled_t(d, test_train_ratio=1.0, alpha=0.05)
    assert est.value == pytest.approx(0.13 / 6)
    se = np.sqrt((1 / 6 + 1.0) * 2.68333333e-3 / 5)
    assert se == pytest.approx(0.0250222, rel=1e-5)
    assert est.low == pytest.approx(0.13 / 6 - 2.570582 * se, rel=1e-5)
    assert est.high == pytest.approx(0.13 / 6 + 2.570582 * se, rel=1e-5)
    assert p == pytest.approx(0.4261, abs=2e-4) and est.n_boot == 6
    # the naive t-test (no correction) is far more confident: the correction matters
    _, p_naive = corrected_resampled_t(d, test_train_ratio=0.0)
    assert p_naive < p
    # fewer than two differences: no test; identical differences: p 0 (or 1 at zero)
    assert np.isnan(corrected_resampled_t([0.1], 1.0)[1])
    assert corrected_resampled_t([0.1, 0.1, 0.1], 1.0)[1] == 0.0


def test_settings_from_one_entry_and_old_keys() -> None:
    assert bootstrap_settings(OmegaConf.create({"bootstrap": 300, "seed": 4})) == BootstrapSettings(300, 4)
    assert bootstrap_settings({"bootstrap": {"n": 250, "seed": 2}}) == BootstrapSettings(250, 2)
    assert bootstrap_settings({"n_boot": 700, "seed": 1}) == BootstrapSettings(700, 1)  # evaluate.py's old name
    assert bootstrap_settings({"bootstrap": 1000, "n_boot": 50}).n == 50  # given explicitly, the old name wins
    assert bootstrap_settings({}) == BootstrapSettings(1000, 0, "bootstrap")
    assert bootstrap_settings({"headline_p": "corrected_t"}).headline_p == "corrected_t"
    with pytest.raises(ValueError, match=r"evaluation.report.n_boot is gone.*evaluation.bootstrap=200"):
        bootstrap_settings(OmegaConf.create({"bootstrap": 500, "report": {"n_boot": 200}}))
    assert bootstrap_settings({"bootstrap": 500, "report": {"n_boot": None}}).n == 500
    with pytest.raises(ValueError, match="headline_p"):
        bootstrap_settings({"headline_p": "wilcoxon"})


def _cv(n: int = 90, repeats: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    time = np.round(400 * rng.exponential(size=n) / np.exp(x)) + 1
    event = rng.random(n) < 0.7
    folds = np.full((repeats, n), -1)
    for f in repeated_stratified_folds(3, repeats, seed, event=event, time=time):
        folds[f.repeat, f.test] = f.fold
    # fold-specific scales (different fits): ranks within folds make them comparable
    model = np.array([(x + rng.normal(0, 0.8, n)) * (1 + folds[r]) for r in range(repeats)])
    ref = np.array([(0.3 * x + rng.normal(0, 1.0, n)) * (2 + folds[r]) for r in range(repeats)])
    return time, event, model, ref, folds


def test_pooling_over_repeats_resamples_patients_jointly() -> None:
    time, event, model, ref, folds = _cv()
    ranks = np.array([within_fold_ranks(model[r], folds[r]) for r in range(3)])
    rref = np.array([within_fold_ranks(ref[r], folds[r]) for r in range(3)])
    c = pooled_cindex(time, event, model, folds, n_boot=60, seed=7)
    assert c.value == pytest.approx(np.mean([harrell_c(time, event, ranks[r]) for r in range(3)]))
    # by hand: the same patients in every repeat, the mean over repeats of each repeat's difference
    boots = np.array([np.mean([harrell_c(time[i], event[i], ranks[r, i]) - harrell_c(time[i], event[i], rref[r, i])
                               for r in range(3)]) for i in bootstrap_indices(len(time), 60, 7)])
    pc = paired_comparison(time, event, model, ref, folds, n_boot=60, seed=7)
    assert pc.repeats == 3 and pc.difference.n_boot == 60
    assert pc.difference.value == pytest.approx(c.value - np.mean([harrell_c(time, event, rref[r]) for r in range(3)]))
    assert (pc.difference.low, pc.difference.high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])))
    assert pc.p_bootstrap == pytest.approx(min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean())))
    assert pc.cindex.value == pytest.approx(c.value) and (pc.cindex.low, pc.cindex.high) == (c.low, c.high)
    # one repeat: exactly the classic paired bootstrap of the pooled ranks
    one = paired_comparison(time, event, model[0], ref[0], folds[0], n_boot=60, seed=7)
    diff, p = paired_bootstrap_difference(time, event, ranks[0], rref[0], n_boot=60, seed=7)
    assert one.difference == diff and one.p_bootstrap == p and one.repeats == 1
    # the corrected t-test runs on the 9 per-fold differences (test/train = 1/2 for 3 folds)
    d = fold_cindex(time, event, model, folds) - fold_cindex(time, event, ref, folds)
    assert d.shape == (3, 3)
    est, p_t = corrected_resampled_t(d, 0.5)
    assert pc.fold_difference.value == pytest.approx(est.value) and pc.p_corrected_t == pytest.approx(p_t, rel=1e-3)
    assert pc.p == pc.p_bootstrap and pc.row()["p_method"] == "bootstrap"
    t_first = paired_comparison(time, event, model, ref, folds, n_boot=60, seed=7, headline_p="corrected_t")
    assert t_first.p == t_first.p_corrected_t and t_first.row()["p_value"] == t_first.p_corrected_t
    # no folds (a hold-out): no t-test, and the corrected-t headline falls back to the bootstrap p
    hold = paired_comparison(time, event, model[0], ref[0], n_boot=20, headline_p="corrected_t")
    assert np.isnan(hold.p_corrected_t) and hold.p == hold.p_bootstrap and hold.p_method == "bootstrap"


def test_resampled_c_equals_scikit_survival_on_every_resample_with_ties() -> None:
    """The pair-matrix C of a resample is scikit-survival's Harrell's C of that resample (ties in time, in risk,
    events and censorings at the same day, copies of one patient)."""
    from omics_risk.evaluation.bootstrap import _resampled_c

    rng = np.random.default_rng(5)
    n = 70
    time = np.round(rng.exponential(30, n)) + 1  # many tied days
    event = rng.random(n) < 0.6
    risks = np.round(rng.normal(size=(n, 2)), 1)  # tied risks
    idx = bootstrap_indices(n, 200, 9)
    fast = _resampled_c(time, event, risks, idx)
    slow = np.array([np.mean([harrell_c(time[i], event[i], risks[i, j]) for j in range(2)]) for i in idx])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    none = _resampled_c(time, np.zeros(n, bool), risks, idx[:3])  # no event: no comparable pair
    assert np.isnan(none).all()

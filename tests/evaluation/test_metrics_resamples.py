"""The run report's secondary metrics (Uno's C, td-AUC, log-rank p...) take their CIs from the first
``metric_resamples(n_boot)`` (200) of the run's resamples, the same draws; Harrell's C, the paired difference and its
p use all of them (``bootstrap.metric_resamples``, docs/evaluation.md "One bootstrap, one p")."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import (
    METRIC_RESAMPLES,
    bootstrap_indices,
    metric_resamples,
    paired_comparison,
)
from omics_risk.evaluation.horizons import default_tau
from omics_risk.evaluation.metrics import evaluate_survival, uno_c
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.run_report import build_run_report, within_fold_ranks


@pytest.mark.parametrize("n", [7, 120, 5000])
def test_the_first_resamples_of_a_larger_bootstrap_are_the_smaller_bootstrap(n: int) -> None:
    assert metric_resamples(1000) == METRIC_RESAMPLES == 200 and metric_resamples(50) == 50
    np.testing.assert_array_equal(bootstrap_indices(n, 1000, 4)[:200], bootstrap_indices(n, 200, 4))


def _cohort(n: int = 120, seed: int = 0) -> tuple[MultimodalData, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 1000 * (-np.log(rng.uniform(size=n)) / np.exp(x)) ** (1 / 1.5)
    c = rng.uniform(0, 2500, n)
    patients = pd.Index([f"P{i:03d}" for i in range(n)])
    data = MultimodalData(patients=patients, clinical=pd.DataFrame({"age": rng.normal(60, 5, n)}, index=patients),
                          modalities={}, present=pd.DataFrame({"clinical": True}, index=patients),
                          time=np.minimum(t, c), event=(t <= c).astype(float), endpoint="rfs")
    folds = rng.permutation(np.arange(n) % 4)
    risks = {"fused": x + rng.normal(0, 0.5, n), "clinical_cox": x + rng.normal(0, 1.5, n)}
    return data, risks, folds


def test_run_report_secondary_metrics_use_the_first_200_resamples(tmp_path: Path) -> None:
    data, risks, folds = _cohort()
    n_boot = 260
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = build_run_report(risks, data, output_dir=tmp_path, horizons=[365], folds=folds, n_boot=n_boot,
                               seed=3)
    fused = rep.metrics["fused"]
    assert fused["harrell_c"].n_boot == n_boot  # all of them
    assert 0 < fused["uno_c"].n_boot <= 200 and 0 < fused["auc_365d"].n_boot <= 200
    # Uno's C: the percentile CI over the first 200 resamples of the run's 260, training (here: the cohort) fixed
    ranks = within_fold_ranks(risks["fused"], folds)
    t, e = data.time, data.event
    want = evaluate_survival(t, e, ranks, horizons=[365], train_time=t, train_event=e, n_boot=200, seed=3,
                             groups=RiskGroups("median").fit(ranks), exclude=["harrell_c", "calibration_slope"])
    assert (fused["uno_c"].low, fused["uno_c"].high) == (want["uno_c"].low, want["uno_c"].high)
    boots = []  # the same numbers by hand, from the first 200 rows of bootstrap_indices(n, 260, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in bootstrap_indices(len(t), n_boot, 3)[:200]:
            with contextlib.suppress(ValueError):  # a resample without a comparable pair: left out, as the engine
                boots.append(uno_c(t[i], e[i], ranks[i], train_time=t, train_event=e, tau=default_tau(t, t)))
    low, high = np.quantile(boots, [0.025, 0.975])
    assert (fused["uno_c"].low, fused["uno_c"].high) == pytest.approx((low, high), abs=1e-12)
    # the comparison with the reference: every one of the 260 resamples
    pc = paired_comparison(t, e, risks["fused"], risks["clinical_cox"], folds, n_boot=n_boot, seed=3)
    row = rep.comparison.set_index("model").loc["fused"]
    assert (row["delta_c_ci_low"], row["delta_c_ci_high"], row["p_value"]) == (
        pc.difference.low, pc.difference.high, pc.p_bootstrap)
    assert pc.difference.n_boot == n_boot
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "first 200 of them" in html

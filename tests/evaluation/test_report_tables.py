"""p-values are shown as values, never with a CI; the headline comparison table (C, ΔC vs the reference, p) and
its MLflow names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.report import estimates_table
from omics_risk.evaluation.tables import (
    comparison_metrics,
    flat_metrics,
    format_metrics,
    format_p,
    headline_table,
    is_p_value,
    metrics_long,
    metrics_wide,
)


def test_p_values_are_values_without_ci() -> None:
    assert [format_p(p) for p in (0.0, 0.0004, 0.001, 0.0034, 0.5, float("nan"))] == \
        ["<0.001", "<0.001", "0.001", "0.003", "0.500", "–"]
    assert all(is_p_value(n) for n in ("logrank_p", "d_calibration_p", "p_value", "p", "p_vs_clinical_cox"))
    assert not any(is_p_value(n) for n in ("harrell_c", "hr_high_vs_low", "mean_auc", "ibs"))
    ests = {"m": {"harrell_c": Estimate(0.7, 0.6, 0.8, 100), "logrank_p": Estimate(0.0002, 0.0, 0.0001, 100)}}
    long = metrics_long(ests)
    assert metrics_wide(long).loc[0, "logrank_p"] == "<0.001"
    assert "0.000 (0.000" not in format_metrics(long)
    assert estimates_table(ests["m"]).set_index("metric").loc["logrank_p", "estimate (95% CI)"] == "<0.001"
    assert flat_metrics(ests, "") == {"m/harrell_c": 0.7, "m/harrell_c_ci_low": 0.6, "m/harrell_c_ci_high": 0.8,
                                      "m/logrank_p": 0.0002}
    assert set(flat_metrics({"": ests["m"]})) == {"harrell_c", "harrell_c_ci_low", "harrell_c_ci_high", "logrank_p"}


def test_headline_table_and_names() -> None:
    comp = pd.DataFrame([
        {"model": "fused", "harrell_c": 0.712, "harrell_c_ci_low": 0.65, "harrell_c_ci_high": 0.77,
         "delta_c": 0.031, "delta_c_ci_low": -0.012, "delta_c_ci_high": 0.074, "p_value": 0.16},
        {"model": "clinical_cox", "harrell_c": 0.681, "harrell_c_ci_low": 0.62, "harrell_c_ci_high": 0.74,
         "delta_c": np.nan, "delta_c_ci_low": np.nan, "delta_c_ci_high": np.nan, "p_value": np.nan}])
    shown = headline_table(comp, "clinical_cox")
    assert shown.columns.tolist() == ["model", "C-index (95% CI)", "ΔC vs clinical_cox (95% CI)", "p"]
    assert shown.iloc[0].tolist() == ["fused", "0.712 (0.650–0.770)", "+0.031 (-0.012 to +0.074)", "0.160"]
    assert shown.iloc[1].tolist() == ["clinical_cox", "0.681 (0.620–0.740)", "reference", ""]
    assert comparison_metrics(comp.iloc[0].to_dict(), "clinical_cox", prefix="fused/") == {
        "fused/harrell_c": 0.712, "fused/harrell_c_ci_low": 0.65, "fused/harrell_c_ci_high": 0.77,
        "fused/delta_c_vs_clinical_cox": 0.031, "fused/delta_c_vs_clinical_cox_ci_low": -0.012,
        "fused/delta_c_vs_clinical_cox_ci_high": 0.074, "fused/p_vs_clinical_cox": 0.16}
    assert set(comparison_metrics(comp.iloc[1].to_dict(), "clinical_cox")) == {
        "harrell_c", "harrell_c_ci_low", "harrell_c_ci_high"}

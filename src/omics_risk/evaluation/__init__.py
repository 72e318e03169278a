"""Evaluation: metrics with confidence intervals, model comparison, plots and reports.

Sign convention: risk scores are "higher = riskier" throughout (see :mod:`omics_risk.evaluation.metrics`); times are
in days. The metrics and risk groups are re-exported here; plots, reports and comparisons live in their submodules.
"""

from omics_risk.evaluation.metrics import (
    Estimate,
    HorizonError,
    balanced_accuracy,
    bootstrap_metric,
    brier_at,
    calibration_in_the_large,
    calibration_slope,
    calibration_table,
    check_horizons,
    d_calibration,
    default_tau,
    evaluate_response,
    evaluate_survival,
    harrell_c,
    integrated_brier,
    paired_bootstrap_difference,
    response_auc,
    response_brier,
    time_dependent_auc,
    time_grid,
    uno_c,
)
from omics_risk.evaluation.riskgroups import RiskGroups, hazard_ratios, logrank_p

__all__ = [
    "Estimate",
    "HorizonError",
    "RiskGroups",
    "balanced_accuracy",
    "bootstrap_metric",
    "brier_at",
    "calibration_in_the_large",
    "calibration_slope",
    "calibration_table",
    "check_horizons",
    "d_calibration",
    "default_tau",
    "evaluate_response",
    "evaluate_survival",
    "harrell_c",
    "hazard_ratios",
    "integrated_brier",
    "logrank_p",
    "paired_bootstrap_difference",
    "response_auc",
    "response_brier",
    "time_dependent_auc",
    "time_grid",
    "uno_c",
]

"""Experiment tracking: MLflow runs per Hydra job (model and fold runs nested), sweep parent runs, id guard,
pseudonymised per-patient tables (:func:`log_patient_table`) and the store audit (:mod:`omics_risk.tracking.audit`)."""

from omics_risk.tracking.mlflow_utils import (
    IdentifierLeakError,
    assert_no_identifiers,
    end_run_on_failure,
    flatten_params,
    log_config,
    log_patient_table,
    protect_identifiers,
    safe_log_metrics,
    safe_log_params,
    safe_set_tags,
    setup_experiment,
    start_fold_run,
    start_model_run,
    start_run_tree,
    tracking_uri,
)

__all__ = [
    "IdentifierLeakError",
    "assert_no_identifiers",
    "end_run_on_failure",
    "flatten_params",
    "log_config",
    "log_patient_table",
    "protect_identifiers",
    "safe_log_metrics",
    "safe_log_params",
    "safe_set_tags",
    "setup_experiment",
    "start_fold_run",
    "start_model_run",
    "start_run_tree",
    "tracking_uri",
]

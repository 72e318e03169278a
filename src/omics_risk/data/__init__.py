"""Cohort data: the data contract (``contract``), format readers, the validator and synthetic cohorts."""

from omics_risk.data.contract import Cohort, CohortError, CohortSpec, Problem, load_cohort

__all__ = ["Cohort", "CohortError", "CohortSpec", "Problem", "load_cohort"]

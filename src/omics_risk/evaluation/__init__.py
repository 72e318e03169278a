"""Evaluation: metrics with confidence intervals, model comparison, plots and reports."""

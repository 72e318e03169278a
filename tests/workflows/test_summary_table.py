"""The table train.py prints fits 120 columns and says where the full one is; its cells are the summary's numbers."""

from __future__ import annotations

import pandas as pd

from omics_risk.workflows.summary_table import format_summary_table

MODELS = ["fused", "clinical_cox", "coxnet_metabolomics", "rsf_methylation", "late_fusion"]


def _table(response: bool = False, external: bool = False) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(MODELS):
        c = 0.60 + 0.02 * i
        row = {"model": name, "cindex": c + 0.001, "cindex_sd": 0.05, "cindex_pooled": c, "ci_low": c - 0.05,
               "ci_high": c + 0.05, "delta_vs_clinical_cox": None if name == "clinical_cox" else c - 0.62,
               "p": None if name == "clinical_cox" else [0.0004, 0, 0.5, 0.0312, 0.2][i], "fit_seconds": 12.345}
        if response:
            row.update({"response_auc": 0.7, "response_auc_ci_low": 0.6, "response_auc_ci_high": 0.8})
        if external:
            row.update({"external_cindex": 0.65, "external_response_auc": 0.61})
        rows.append(row)
    return pd.DataFrame(rows)


def test_the_printed_table_fits_120_columns_and_names_the_csv() -> None:
    text = format_summary_table(_table(), head="Held-out metrics " + "(a long explanation) " * 10,
                                csv_path="/runs/x/summary.csv")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[-1] == "Full table, every column: /runs/x/summary.csv"
    fused = next(line for line in lines if line.startswith("fused "))
    # pooled C 0.600 [0.550, 0.650]; difference 0.600 - 0.620 = -0.020; p 0.0004 shown as <0.001
    assert "0.600 [0.550, 0.650]" in fused and "-0.020" in fused and "<0.001" in fused and "0.601±0.050" in fused
    cox = next(line for line in lines if line.startswith("clinical_cox "))
    assert cox.split()[-3:-1] == ["-", "-"]  # the reference has no difference and no p
    late = next(line for line in lines if line.startswith("late_fusion "))
    assert "+0.060" in late and "0.200" in late and late.split()[-1] == "12.3"


def test_columns_that_do_not_fit_are_left_out_by_name() -> None:
    text = format_summary_table(_table(response=True, external=True), head="H", csv_path="s.csv")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert "pooled C [95% CI]" in lines[2] and "diff vs clinical_cox" in lines[2] and "response AUC" in lines[2]
    note = lines[-1]
    assert note.startswith("Left out here to fit 120 columns: fit_seconds")
    assert note.endswith("external_response_auc. Full table, every column: s.csv")
    assert "fit_seconds" not in lines[2] and lines[:2] == ["", "H"]

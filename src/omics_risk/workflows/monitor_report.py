"""report.html of ``omics-risk monitor``: one self-contained page (template ``evaluation/templates/monitor.html.j2``,
autoescaped; figures embedded as PNG) with the LUCAGEN table, the swimmer plot, the lead-time distribution,
molecular response vs PFS, ctDNA vs RECIST, the rule's operating characteristics and the trajectories."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from omics_risk.atomic import atomic_write_text
from omics_risk.evaluation.report import html_table, package_version, png_base64, report_environment
from omics_risk.monitoring.grid import GridResult
from omics_risk.monitoring.lucagen import LucagenTable
from omics_risk.monitoring.response import ResponseKM
from omics_risk.monitoring.rules import Rule

__all__ = ["write_monitor_report"]


def _block(title: str, paragraphs: list[str], table: pd.DataFrame | None = None,
           figures: list[tuple[str, Any, str]] = (), digits: int = 3) -> dict[str, Any]:
    return {"title": title, "anchor": re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
            "paragraphs": paragraphs, "table": None if table is None or table.empty else html_table(table, digits),
            "figures": [{"name": n, "data": png_base64(n, f), "caption": c} for n, f, c in figures]}


def write_monitor_report(path: Path, *, summary: Mapping[str, Any], table: LucagenTable, km: ResponseKM | None,
                         recist: pd.DataFrame | None, grid: GridResult | None, figures: Mapping[str, Any],
                         rule: Rule, notes: list[str], swimmer_shown: int) -> Path:
    """Render and write report.html atomically; returns its path."""
    pat = summary["patients"]
    blocks = [
        _block("LUCAGEN table", [
            f"Rule {rule.name}: {rule.describe()}. Patients with a usable draw: {table.n_patients} of "
            f"{pat['total']}. Intervals are 95% percentile bootstrap CIs over patients "
            f"({summary['settings']['bootstrap']} resamples). A progression is an event of the endpoint "
            f"'{summary['endpoint']}'; the alert precedes it when it fires on or before that day. Cycles are "
            "on-treatment draws before progression. Patients without progression are censored at their last "
            "draw; false alerts are alerts of non-progressors over that follow-up.",
        ], table.frame()),
        _block("Swimmer plot", [], None, [("swimmer", figures["swimmer"],
                                            f"{swimmer_shown} of {table.n_patients} monitored patients shown "
                                            "(progressors first, by progression day).")]),
        _block("Lead time", [], None, [("lead_times", figures["lead_times"],
                                        "Progressors with an alert: days from the alert to the progression.")]),
    ]
    if km is not None:
        d = km.to_dict()
        blocks.append(_block("Molecular response vs PFS", [
            f"Landmark at day {km.landmark_day:g}: patients with a positive baseline and no progression or "
            f"censoring by then, grouped by molecular response by that day; PFS counted from the landmark. "
            f"Log-rank p = {d['logrank_p']:.3g}; HR non-responders vs responders "
            f"{d['hr_nonresponder_vs_responder']:.2f} "
            f"(95% CI {d['hr_ci_low']:.2f}-{d['hr_ci_high']:.2f}).",
        ], None, [("km", figures["km_molecular_response"], "Kaplan-Meier with numbers at risk.")]))
    else:
        blocks.append(_block("Molecular response vs PFS", [
            "Not computed: no survival endpoint, or one of the landmark groups (responders, non-responders) is "
            "empty."]))
    if recist is not None:
        blocks.append(_block("ctDNA vs RECIST response", [
            "Best overall response from the RECIST table (+20% over the nadir or a new lesion = progression; "
            "the 5 mm minimum is not applied). Ratios are to the baseline level, among positive baselines."],
            recist))
    if grid is not None:
        oof = grid.out_of_fold
        text = ", ".join(f"{k.replace('_', ' ')} {e.value:.3g} (95% CI {e.low:.3g}-{e.high:.3g})"
                         for k, e in oof.items())
        blocks.append(_block("Operating characteristics", [
            "Each grid point of the rule on the whole cohort (the curve to choose a threshold from). Out of fold: "
            f"the point with the highest sensitivity within {grid.max_false_alerts:g} false alerts per patient-year "
            f"is chosen on the training folds and applied to the held-out fold; held-out results: {text}.",
        ], grid.curve, [("operating_characteristics", figures["operating_characteristics"],
                         "Ringed: the rule as configured.")] if "operating_characteristics" in figures else []))
        if not grid.folds.empty:
            blocks.append(_block("Out-of-fold choices", [], grid.folds))
    blocks.append(_block("Trajectories", [], None, [("trajectories", figures["trajectories"],
                                                     "Level per draw (log scale); filled = ctDNA-positive.")]))
    if notes:
        blocks.append(_block("Notes", notes))
    meta = [("cohort", summary["cohort"]), ("rule", f"{rule.name} ({type(rule).__name__})"),
            ("level", rule.level), ("endpoint", summary["endpoint"] or "–"),
            ("as of day", "–" if summary["as_of_day"] is None else summary["as_of_day"]),
            ("patients", ", ".join(f"{k}: {v}" for k, v in pat.items()))]
    html = report_environment().get_template("monitor.html.j2").render(
        title="Serial ctDNA monitoring", version=package_version(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        meta=[(k, str(v)) for k, v in meta], blocks=blocks)
    atomic_write_text(path, html)
    return path

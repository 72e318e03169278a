"""What an external validation wrote and logged: :class:`ExternalResult`, its ``report.html`` and ``summary.json``,
and the MLflow validation run linked to the model (per-patient scores with keyed pseudonyms, never raw ids).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import Estimate
from omics_risk.evaluation.report import write_html_report
from omics_risk.evaluation.run_report import estimates_json, format_metrics, log_outputs
from omics_risk.evaluation.tables import flat_metrics, format_p, is_p_value
from omics_risk.privacy import Pseudonymiser
from omics_risk.workflows.external_model import ModelRef, TrainingInfo

__all__ = ["VALIDATION_LEVEL", "ExternalResult"]

#: Level tag (``omics_risk.level``) of validation runs.
VALIDATION_LEVEL = "validation"


@dataclass
class ExternalResult:
    """What :func:`validate_external` computed and wrote."""

    model: ModelRef
    cohort: str
    n_patients: int
    n_events: int
    metrics: dict[str, Estimate]
    table: pd.DataFrame  # long metric table
    scores: pd.DataFrame  # one row per patient
    risk_groups: pd.DataFrame | None
    cutoff_source: str
    horizons: list[float]
    output_dir: Path
    paths: dict[str, Path]
    notes: list[str]
    run_id: str | None = None
    #: the model's prediction time and the risk set at it (as training's summary.json); None: every sample used
    prediction_time: dict[str, Any] | None = None

    def to_text(self) -> str:
        head = (f"External validation of {self.model.label} on {self.cohort}: {self.n_patients} patients, "
                f"{self.n_events} events; horizons {', '.join(f'{h:g}' for h in self.horizons) or 'none'} days; "
                f"risk-group cut-offs: {self.cutoff_source}")
        if self.prediction_time is not None:
            head += (f"; predicting at {self.prediction_time['describe']} ({self.prediction_time['n_at_risk']} at "
                     "risk)")
        return format_metrics(self.table, title=head)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "cohort"


def _cutoff_text(source: str) -> str:
    return {"model": "training cut-offs stored with the model",
            "training": "re-derived from the training cohort's risks (the model stores none)",
            "cohort": "FITTED ON THIS COHORT (no training cut-offs available): the group split is not an "
                      "independent validation"}[source]


def _write_report(result: ExternalResult, out: Path, meta: Mapping[str, Any], figures: Mapping[str, Path],
                  captions: Mapping[str, str], rg_table: pd.DataFrame | None, n_boot: int) -> Path:
    table = result.table[["metric", "estimate", "ci_low", "ci_high", "n_boot", "description"]].copy()
    table.loc[[is_p_value(m) for m in table["metric"]], ["ci_low", "ci_high"]] = np.nan  # a p-value has no CI
    sections = {
        "How to read this report": (
            f"The model was applied unchanged to every labelled patient of {result.cohort}. Risk scores follow one "
            "convention: higher = riskier. Intervals are 95% percentile bootstrap CIs over patients "
            f"({n_boot} resamples); IPCW metrics weight by the training cohort's censoring distribution when it is "
            "available (see notes). Risk groups use the cut-offs named above, so their sizes show how the score "
            "distribution shifted between cohorts."),
        "Notes": "\n\n".join(result.notes) if result.notes else "None.",
    }
    if rg_table is not None:
        rows = []
        for r in rg_table.itertuples():
            median = f"{r.km_median:.0f} days" if np.isfinite(r.km_median) else "not reached"
            hr = ("reference" if r.Index == 0 else
                  f"{r.hr:.2f} ({r.hr_low:.2f}-{r.hr_high:.2f})" if np.isfinite(r.hr) else "not estimable")
            rows.append(f"{r.group}: n={r.n}, events={r.events}, Kaplan-Meier median {median}, hazard ratio {hr}")
        sections["Risk groups"] = "\n\n".join(rows)
    return write_html_report(out / "report.html", title=f"External validation: {result.model.label} on "
                             f"{result.cohort}", metrics_table=table, figures=figures, captions=captions,
                             sections=sections, meta=meta)


def _write_summary(result: ExternalResult, out: Path, meta: Mapping[str, Any]) -> Path:
    summary = {
        "model": dataclasses.asdict(result.model), "cohort": result.cohort, "n_patients": result.n_patients,
        "n_events": result.n_events, "horizons": result.horizons, "cutoff_source": result.cutoff_source,
        "metrics": estimates_json(result.metrics), "notes": result.notes, "run_id": result.run_id,
        "risk_groups": None if result.risk_groups is None else json.loads(result.risk_groups.to_json(orient="records")),
        "files": {k: str(v) for k, v in result.paths.items()}, "meta": {k: str(v) for k, v in meta.items()},
    }
    if result.prediction_time is not None:
        summary["prediction_time"] = result.prediction_time
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1))
    return path


def _log_run(result: ExternalResult, client: Any, uri: str, experiment: str, run_name: str | None,
             info: TrainingInfo, data: MultimodalData, params: Mapping[str, Any], long: pd.DataFrame,
             pseudonyms: Pseudonymiser) -> str:
    """The validation run: params, metrics, artifacts (per-patient scores with ``pseudonyms``), tags linking it to
    the model (and the model back to it)."""
    from omics_risk.tracking import mlflow_utils as mu  # lazy: mlflow, loaded only to log a validation run

    ref = result.model
    tags = {mu.LEVEL_TAG: VALIDATION_LEVEL, "model_uri": ref.uri, "cohort": result.cohort,
            "endpoint": data.endpoint, "cutoff_source": result.cutoff_source, **pseudonyms.tags()}
    tags.update({k: v for k, v in {"model_name": ref.name, "model_version": ref.version, "model_alias": ref.alias,
                                   "source_run_id": ref.source_run_id, "training_run_id": info.job_run_id,
                                   "training_cohort": info.cohort}.items() if v})
    name = run_name or f"validate-{ref.name or 'model'}-v{ref.version or 'run'}-{_slug(result.cohort)}"
    flat = flat_metrics({"": result.metrics})  # the names of a training model run (docs/evaluation.md)
    all_params = {"n_patients": result.n_patients, "n_events": result.n_events,
                  "horizons": json.dumps(result.horizons), **params}
    if result.prediction_time is not None:
        all_params["prediction_time"] = result.prediction_time["describe"]
    with mu.start_run_tree(experiment, uri=uri, run_name=name, parent_run_id=None, tags=tags,
                           patient_ids=list(data.patients)) as run:
        mu.safe_log_params(all_params)
        files = {k: v for k, v in result.paths.items() if k != "scores"}  # the local scores.csv has the raw ids
        log_outputs(files, metrics=flat)
        mu.log_patient_table(result.scores, result.paths["scores"].name, pseudonyms=pseudonyms)
        summary = "\n".join(f"- {r.metric}: " + (format_p(r.estimate) if is_p_value(r.metric) else
                                                  f"{r.estimate:.3f} ({r.ci_low:.3f}–{r.ci_high:.3f})")
                            for r in long.itertuples() if np.isfinite(r.estimate))
        mu.safe_set_tags({"mlflow.note.content": f"External validation of {ref.label} on {result.cohort} "
                                                 f"({result.n_patients} patients, {result.n_events} events).\n\n"
                                                 f"{summary}"})
        run_id = run.info.run_id
    if ref.name and ref.version:
        c = result.metrics.get("harrell_c")
        key = f"validation.{_slug(result.cohort)}"
        version_tags = {f"{key}.run_id": run_id, "last_validation_run_id": run_id,
                        f"{key}.n_patients": str(result.n_patients)}
        if c is not None:
            version_tags[f"{key}.harrell_c"] = str(c)
        mu.check_identifiers(version_tags, version_tags.values(), what="model version tag")
        for k, v in version_tags.items():
            client.set_model_version_tag(ref.name, ref.version, k, v)
    return run_id



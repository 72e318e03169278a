"""Logging an evaluation's files and metrics to MLflow through the identifier-guarded helpers of
:mod:`omics_risk.tracking.mlflow_utils` (PNGs under ``plots/``; metrics in batches MLflow accepts), and the run
report of a training job spread over its run tree so that the UI answers "which model is best and by how much":

* each **model run** gets its own metrics without a model prefix (``harrell_c`` + CI, ``uno_c``, ``auc_<h>d``...),
  the paired difference from the reference (``delta_c_vs_<reference>`` + CI, ``p_vs_<reference>``), the same
  three as readable text tags (:data:`~omics_risk.tracking.ui_view.HEADLINE_TAGS`) and its description, and its own
  plots;
* the **job run** gets the one-row-per-model comparison as ``comparison.csv`` / ``comparison.html``, as metrics
  ``<model>/harrell_c`` ... (the names ``evaluate.py mode=compare`` logs on its comparison run) and as its
  description (Markdown table, best C-index first), with the tag ``best model``.

The names are documented in docs/evaluation.md, "Metric names".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.tables import comparison_metrics, flat_metrics, format_p, headline_table
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.ui_view import HEADLINE_TAGS, set_experiment_ui_tags

__all__ = ["NOTE_TAG", "headline_tags", "log_outputs", "log_run_report", "model_run_ids"]

#: The tag MLflow shows as a run's description (Markdown) at the top of its page.
NOTE_TAG = "mlflow.note.content"


def _active_id(run_id: str | None) -> str:
    if run_id is not None:
        return run_id
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("no active MLflow run to log the evaluation to: pass run_id=")
    return active.info.run_id


def log_outputs(paths: Mapping[str, Path], *, run_id: str | None = None, artifact_path: str | None = None,
                metrics: Mapping[str, float] | None = None) -> None:
    """Log files as artifacts (PNGs under ``<artifact_path>/plots``) and metrics, through the identifier-guarded
    helpers, to ``run_id`` or the active run."""
    run_id = _active_id(run_id)
    client = MlflowClient()
    for path in paths.values():
        path = Path(path)
        if not path.is_file():
            continue
        sub = "/".join(p for p in (artifact_path, "plots" if path.suffix == ".png" else None) if p) or None
        client.log_artifact(run_id, str(path), sub)
    if metrics:
        finite = {k: v for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for start in range(0, len(finite), 500):  # MLflow batches are capped at 1000 entries
            chunk = dict(list(finite.items())[start:start + 500])
            mu.safe_log_metrics(chunk, run_id=run_id)


def model_run_ids(job_run_id: str, client: MlflowClient | None = None) -> dict[str, str]:
    """``{model: run id}`` of the model runs nested under a training job run (final-model runs excluded)."""
    client = client or MlflowClient()
    job = client.get_run(job_run_id)
    runs = client.search_runs([job.info.experiment_id], f"tags.mlflow.parentRunId = '{job_run_id}' and "
                              f"tags.`{mu.LEVEL_TAG}` = 'model'", max_results=1000)
    out = {}
    for r in runs:
        model = r.data.tags.get("model", r.info.run_name)
        if not model.endswith("_final"):
            out.setdefault(model, r.info.run_id)
    return out


def headline_tags(row: Mapping[str, float], reference: str | None) -> dict[str, str]:
    """A model's comparison row as the text tags of its run: C-index (95% CI), ΔC vs the reference (95% CI), p."""
    shown = headline_table(pd.DataFrame([dict(row)]), reference).iloc[0].tolist()[1:4]  # the other p stays a metric
    c, d, p = (str(v) for v in shown)
    tags = dict(zip(HEADLINE_TAGS, (c, d, p or "–"), strict=True))
    note = f"**C-index** {c}"
    if reference and d != "reference":
        note += f" · **ΔC vs {reference}** {d}, p {p}"
    elif reference:
        note += " · the reference of the paired comparisons"
    tags[NOTE_TAG] = note + " (pooled out-of-fold predictions; 95% bootstrap CIs)"
    return tags


def _job_note(comparison: pd.DataFrame, reference: str | None) -> str:
    """The job run's description: the best model and the headline table in Markdown, best C-index first."""
    order = comparison.sort_values("harrell_c", ascending=False, na_position="last")
    table = headline_table(order, reference)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    best = _best_text(comparison, reference)
    return (f"**Best model**: {best}\n\n" if best else "") + "\n".join(lines) + (
        "\n\nPooled out-of-fold predictions, 95% bootstrap CIs, p of the paired comparison (evaluation.headline_p); "
        "every metric: evaluation/report.html")


def log_run_report(*, metrics: Mapping[str, Mapping[str, Estimate]], comparison: pd.DataFrame,
                   reference: str | None, paths: Mapping[str, Path], model_plots: Mapping[str, Mapping[str, Path]],
                   run_id: str | None = None, artifact_path: str = "evaluation") -> dict[str, str]:
    """Log a run report (see the module docstring) to the job run ``run_id`` (default: the active run) and its model
    runs; returns ``{model: run id}`` of the model runs written to. Without model runs (a report logged to a plain
    run), each model's metrics go to the job run as ``<model>/<metric>``."""
    run_id = _active_id(run_id)
    client = MlflowClient()
    children = model_run_ids(run_id, client)
    rows = {r["model"]: r for r in comparison.to_dict(orient="records")}
    ref = reference or ""
    job_metrics: dict[str, float] = {}
    for model, ests in metrics.items():
        row = rows.get(model)
        headline = comparison_metrics(row, ref) if row is not None else {}
        if model in children:
            own = {**flat_metrics({"": ests}), **headline}
            files = {name: p for name, p in model_plots.get(model, {}).items()}
            log_outputs(files, run_id=children[model], metrics=own)
            if row is not None:
                mu.safe_set_tags(headline_tags(row, reference), run_id=children[model])
        else:
            job_metrics.update(flat_metrics({model: ests}))
        if row is not None:
            job_metrics.update(comparison_metrics(row, ref, prefix=f"{model}/"))
    log_outputs(paths, run_id=run_id, artifact_path=artifact_path, metrics=job_metrics)
    if reference:
        set_experiment_ui_tags(client, client.get_run(run_id).info.experiment_id, reference)
    best = _best_text(comparison, reference)
    if best:
        mu.safe_set_tags({"best model": best, NOTE_TAG: _job_note(comparison, reference)}, run_id=run_id)
    return {m: children[m] for m in metrics if m in children}


def _best_text(comparison: pd.DataFrame, reference: str | None) -> str:
    """The job run's one-line answer: the model with the highest C-index, its C and ΔC with CIs and p."""
    if comparison.empty or not np.isfinite(comparison["harrell_c"]).any():
        return ""
    top = comparison.loc[comparison["harrell_c"].idxmax()]
    text = f"{top['model']}: C {top['harrell_c']:.3f} ({top['harrell_c_ci_low']:.3f}–{top['harrell_c_ci_high']:.3f})"
    if reference and np.isfinite(top.get("delta_c", np.nan)):
        text += (f", ΔC {top['delta_c']:+.3f} ({top['delta_c_ci_low']:+.3f} to {top['delta_c_ci_high']:+.3f}) vs "
                 f"{reference}, p {format_p(top['p_value'])}")
    return text

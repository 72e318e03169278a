"""How the MLflow UI opens an omics-risk experiment: as a model-training experiment, on a runs table that shows
each model's C-index with its CI and the difference from the reference with its CI and p.

MLflow 3 has two faces, GenAI (traces, an "Overview" tab) and machine learning (the runs table). Which one an
experiment opens on is decided in the browser:

* MLflow UIs up to 3.4 read the experiment tag ``mlflow.experimentKind`` (:data:`EXPERIMENT_KIND_TAG`);
  ``custom_model_development`` is a model-training experiment (the value MLflow's own experiment-type selector sets).
* Later UIs (3.5+, e.g. 3.17) follow a global "workflow type" switch in the side bar, stored in the browser (local
  storage ``mlflow.workflowType``, default GenAI) and overridden by the URL parameter ``workflowType``. Only the
  URL can be set from here: :func:`experiment_url` adds ``workflowType=machine_learning``.

The runs table shows attribute columns only until someone picks metric columns. The UI reads a *shared view* from
an experiment tag ``mlflow.sharedViewState.<key>`` when the URL carries ``viewStateShareKey=<key>`` (the UI's own
"Share" button works that way), so :func:`set_experiment_ui_tags` stores one (:data:`VIEW_KEY`) with the headline
columns, one row per model run and the best C-index first, and :func:`experiment_url` links to it; "Override saved
view" in the banner of a shared view makes it the user's view of the experiment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mlflow.tracking import MlflowClient

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "HEADLINE_TAGS",
    "VIEW_FILTER",
    "VIEW_KEY",
    "VIEW_TAG",
    "experiment_url",
    "headline_columns",
    "set_experiment_ui_tags",
    "view_state",
]

#: Experiment tag MLflow's UI reads to choose between the GenAI and the model-training pages.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for a model-training experiment.
EXPERIMENT_KIND = "custom_model_development"
#: The key of the shared runs-table view stored on every omics-risk experiment.
VIEW_KEY = "omics-risk-models"
#: The experiment tag holding that view (the UI's ``mlflow.sharedViewState.`` prefix + :data:`VIEW_KEY`).
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: Text tags of a model run, readable in the runs table: ``0.712 (0.650–0.770)``, ``+0.031 (-0.012 to +0.074) vs
#: clinical_cox``, ``0.160`` (the numbers are also metrics; docs/evaluation.md, "Metric names"). MLflow allows only
#: letters, digits, ``_-. :/`` and spaces in names, hence no parentheses or Δ.
HEADLINE_TAGS = ("C-index", "delta C vs reference", "p vs reference")


def _column(kind: str, name: str) -> str:
    """A runs-table column key as the UI writes it: ``metrics.`harrell_c```."""
    return f"{kind}.`{name}`"


def headline_columns(reference: str = "clinical_cox") -> list[str]:
    """The runs-table columns of the shared view: the headline text tags (estimates with their CIs), then the numbers
    to sort and chart by (C-index, difference from ``reference``, p; their CIs are in the tags)."""
    numbers = ["harrell_c", f"delta_c_vs_{reference}", f"p_vs_{reference}"]
    return [_column("tags", t) for t in HEADLINE_TAGS] + [_column("metrics", m) for m in numbers]


#: The rows of the shared view: the model runs of training jobs (one per model and job; not fold or job runs).
VIEW_FILTER = "tags.`omics_risk.level` = 'model' and metrics.harrell_c >= 0"


def view_state(reference: str = "clinical_cox") -> dict:
    """The shared view: one row per model run, best C-index first, headline columns wide enough for their text."""
    cols = headline_columns(reference)
    widths = {c: (205 if c.startswith("tags.") else 150) for c in cols}  # the UI applies widths to ordered columns
    return {"searchFilter": VIEW_FILTER, "orderByKey": _column("metrics", "harrell_c"), "orderByAsc": False,
            "selectedColumns": cols, "columnOrder": cols, "columnWidths": widths, "runsHiddenMode": "SHOW_ALL"}


def set_experiment_ui_tags(client: MlflowClient, experiment_id: str, reference: str = "clinical_cox") -> None:
    """Mark the experiment as model training and store the headline runs-table view (idempotent)."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view_state(reference), separators=(",", ":")))


def experiment_url(experiment_id: str, base: str = "http://127.0.0.1:5000", *, view: bool = True,
                   run_id: str | None = None, tabs: Sequence[str] = ()) -> str:
    """The UI address of an experiment's runs table (or of one run) in model-training mode, with the headline view."""
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if view and run_id is None else "")
    path = f"/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs") + "".join(
        f"/{t}" for t in tabs)
    return f"{base.rstrip('/')}/#{path}?{query}"

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
columns, and :func:`experiment_url` links to it; "Save" in the banner of a shared view makes it the user's view.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mlflow.tracking import MlflowClient

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "HEADLINE_TAGS",
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
    """The runs-table columns of the shared view: run attributes, the headline text tags, then the numbers (sortable,
    chartable) of the C-index and of the difference from ``reference``."""
    numbers = ["harrell_c", "harrell_c_ci_low", "harrell_c_ci_high", f"delta_c_vs_{reference}",
               f"delta_c_vs_{reference}_ci_low", f"delta_c_vs_{reference}_ci_high", f"p_vs_{reference}"]
    return ([_column("attributes", "Models")] + [_column("tags", t) for t in HEADLINE_TAGS]
            + [_column("metrics", m) for m in numbers])


def view_state(reference: str = "clinical_cox") -> dict:
    """The shared view: headline columns, widths that fit the text, model runs shown under their job run."""
    cols = headline_columns(reference)
    widths = {c: 190 for c in cols if c.startswith("tags.")}
    return {"selectedColumns": cols, "columnOrder": [], "columnWidths": widths, "runsHiddenMode": "SHOW_ALL"}


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

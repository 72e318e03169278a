"""The model card of a registered model version: its metrics from ``train()``'s flat metrics, written with
:mod:`omics_risk.evaluation.modelcard`, logged to the version's run and set as the version's description."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lifelines import KaplanMeierFitter
from mlflow.tracking import MlflowClient

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.modelcard import write_model_card
from omics_risk.tracking.mlflow_utils import check_identifiers

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITATIONS", "card_metrics", "register_model_card"]

DEFAULT_INTENDED_USE = (
    "Research use: ranking patients of a cohort like the training cohort by their risk of the endpoint, to study "
    "multimodal prognostic signal, to enrich or stratify research studies, and to compare against clinical models. "
    "Scores are relative (higher = riskier); survival probabilities are only as calibrated as the validation shows."
)
DEFAULT_LIMITATIONS = [
    "Internal validation by cross-validation only unless an external validation is listed: performance on other "
    "sites, assays or populations is unknown.",
    "Patients lacking a modality are scored from the modalities they have (presence mask); performance for "
    "patients with few modalities can be lower than the pooled metrics.",
    "Calibration was assessed only at the listed horizons and needs checking (and possibly recalibration) before "
    "absolute probabilities are used in a new cohort.",
    "Feature extraction settings, reference genome and assay platform must match the training cohort's.",
]


def card_metrics(metrics: Mapping[str, float], model: str, *, n_boot: int = 0) -> dict[str, Estimate | float]:
    """The C-index (and response AUC, external C-index) of ``model`` with CIs from ``train()``'s flat metrics
    (``<model>/cindex_pooled``, ``<model>/cindex_ci_low`` ...) as Estimates for :func:`register_model_card`;
    ``n_boot`` is the number of resamples behind those CIs (``evaluation.bootstrap``). The mean C over folds has
    no CI and stays a plain number."""
    out: dict[str, Estimate | float] = {}
    specs = [("harrell_c (pooled out-of-fold)", f"{model}/cindex_pooled", f"{model}/cindex_ci"),
             ("response_auc (pooled out-of-fold)", f"{model}/response_auc", f"{model}/response_auc_ci"),
             ("harrell_c (external)", f"external/{model}/cindex", f"external/{model}/cindex_ci")]
    for label, key, ci in specs:
        if key in metrics:
            out[label] = Estimate(float(metrics[key]), float(metrics.get(f"{ci}_low", np.nan)),
                                  float(metrics.get(f"{ci}_high", np.nan)), int(n_boot))
    if f"{model}/cindex" in metrics:
        out["harrell_c (mean over folds)"] = float(metrics[f"{model}/cindex"])
    return out


def _coverage(data: MultimodalData) -> dict[str, dict[str, float]]:
    present = data.present
    return {str(m): {"n": int(present[m].sum()), "fraction": float(present[m].mean())} for m in present.columns}


def _short_description(card: str, limit: int = 4800) -> str:
    """The registry description: the card up to its "Intended use" section, cut to MLflow's 5000-character field."""
    head = card.split("\n## Out-of-scope uses", 1)[0]
    tail = "\n\n(Full model card: artifact model_card.md of the model's run.)"
    if len(head) + len(tail) > limit:
        head = head[: limit - len(tail) - 4].rsplit("\n", 1)[0] + "\n..."
    return head + tail


def register_model_card(*, registered_model_name: str, version: str | int, data: MultimodalData | Mapping[str, Any],
                        metrics: Mapping[str, Estimate | float], cohort: str, cv: str, task: str = "survival",
                        endpoint: str | None = None, horizons: Sequence[float] | None = None,
                        training: Mapping[str, Any] | None = None, alias: str | None = None,
                        intended_use: str = DEFAULT_INTENDED_USE, limitations: Sequence[str] | None = None,
                        metrics_note: str | None = None, output_dir: str | Path | None = None,
                        tracking_uri: str | None = None, set_description: bool = True) -> Path:
    """Write the model card of a registered model version, log it to the version's run and describe the version.

    Args:
        registered_model_name, version, alias: the registry entry (``log_model``'s ``registered_model_name`` and
            ``ModelInfo.registered_model_version``).
        data: the training patients (cohort size, events and modality coverage are read from it), or the card's
            ``data`` mapping (``n_patients``, ``n_events``, ``modalities``) when the data are not at hand.
        metrics: ``{name: Estimate}``, e.g. :func:`card_metrics` of ``train()``'s metrics or
            ``RunReport.metrics[fused]``; say where they come from with ``metrics_note``.
        cohort: training cohort name (cohort.yaml ``name``).
        cv: the internal validation, e.g. ``"5-fold stratified CV x 1 repeat, patient level"``.
        endpoint: e.g. ``rfs``; ``horizons`` (days) are listed with it.
        training: model class, hyper-parameters, seed, run id... (one row each).
        output_dir: where ``model_card.md`` is written (default: a temporary folder, logged then removed).

    Returns:
        The path of ``model_card.md`` (gone when ``output_dir`` was not given).
    """
    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    mv = client.get_model_version(registered_model_name, str(version))
    if isinstance(data, MultimodalData):
        card_data: dict[str, Any] = {"cohort": cohort, "n_patients": len(data),
                                     "n_events": int(np.nansum(data.event)) if data.event is not None else None,
                                     "modalities": _coverage(data)}
        if data.time is not None:
            card_data["median follow-up (days, reverse KM)"] = _reverse_km_median(data.time, data.event)
    else:
        card_data = {"cohort": cohort, **dict(data)}
    endpoint_details = {"horizons (days)": [float(h) for h in horizons]} if horizons else None
    train_rows = {"cv": cv, **dict(training or {}), "run id": mv.run_id}
    kw = dict(name=registered_model_name, version=str(version), task="binary" if task == "binary" else "survival",
              endpoint=endpoint or (data.endpoint if isinstance(data, MultimodalData) else "") or "–",
              data=card_data, metrics=dict(metrics), intended_use=intended_use,
              limitations=list(limitations or DEFAULT_LIMITATIONS), training=train_rows, alias=alias,
              endpoint_details=endpoint_details, metrics_note=metrics_note or (
                  "Internal validation: 95% percentile bootstrap CIs over patients of pooled out-of-fold "
                  "predictions."))
    with tempfile.TemporaryDirectory(prefix="omics_risk_card_") as tmp:
        path = Path(output_dir or tmp) / "model_card.md"
        write_model_card(path, **kw)
        text = path.read_text(encoding="utf-8")
        check_identifiers(values=[text], what="model card")
        client.log_artifact(mv.run_id, str(path))
        if set_description:
            client.update_model_version(registered_model_name, str(version), description=_short_description(text))
    return path


def _reverse_km_median(time: np.ndarray, event: np.ndarray | None) -> float:
    """Median follow-up by the reverse Kaplan-Meier (censoring as the event)."""
    e = np.zeros(len(time)) if event is None else np.asarray(event, float)
    kmf = KaplanMeierFitter().fit(np.asarray(time, float), 1 - e)
    return float(kmf.median_survival_time_)

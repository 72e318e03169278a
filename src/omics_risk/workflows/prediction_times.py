"""Several prediction times in one ``train.py`` run, reported side by side (``task.prediction_times``).

"Predict the efficacy of first-line treatment" (NCT07026669) is a question asked before treatment; "monitor it
dynamically" asks it again at the first on-treatment draw. The two answers differ in who is asked (patients who
progressed before the on-treatment draw are no longer at risk) and in what the models may use (only samples taken at
or before each prediction time), so each prediction time is its own complete run: its own risk set, folds, baselines,
report and logged model, in ``<output_dir>/<slug>/`` and in its own MLflow run tree (run name ``<run_name>@<slug>``,
tagged ``prediction_time``). This module runs them in the order given and writes the combined ``summary.json``
(``prediction_times``: one entry per prediction time) and ``summary.csv`` (one row per model and prediction time),
and prints the models' C-index and response AUC with their CIs side by side.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.timing import PredictionTime

log = logging.getLogger(__name__)

__all__ = ["SIDE_BY_SIDE_COLUMNS", "prediction_time_of", "prediction_times_of", "run_prediction_times", "slug"]

#: The per-model metrics the side-by-side table carries (those a model has), in this order.
SIDE_BY_SIDE_COLUMNS = ("cindex", "cindex_ci_low", "cindex_ci_high", "cindex_pooled", "response_auc",
                        "response_auc_ci_low", "response_auc_ci_high", "response_n")
_KEY = "task.prediction_times"


def slug(pt: PredictionTime) -> str:
    """A short name for a prediction time, used for its output folder and run name (``index``, ``day90``,
    ``c3d1``)."""
    if pt.at == "index":
        name = "index"
    elif pt.at == "day":
        name = f"day{pt.day:g}".replace("-", "m")
    elif pt.at == "timepoint":
        name = str(pt.timepoint)
    else:
        name = "landmarks"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def prediction_time_of(cfg: DictConfig) -> PredictionTime | None:
    """``task.prediction_time`` (None when unset: every sample is used, as before prediction times existed)."""
    node = cfg.task.get("prediction_time")
    if node is None:
        return None
    return PredictionTime.from_config(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node)
                                      else node)


def prediction_times_of(cfg: DictConfig) -> list[tuple[PredictionTime, dict[str, Any]]] | None:
    """``task.prediction_times`` read and checked: (prediction time, its config) per entry; None when unset."""
    node = cfg.task.get("prediction_times")
    if node is None:
        return None
    raw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{_KEY} must be null or a non-empty list of prediction times, e.g. "
                         "[{at: index}, {at: timepoint, timepoint: c3d1}]; got " + repr(raw))
    out: list[tuple[PredictionTime, dict[str, Any]]] = []
    for i, entry in enumerate(raw):
        try:
            pt = PredictionTime.from_config(entry)
        except ValueError as exc:
            raise ValueError(f"{_KEY}[{i}]: {exc}") from None
        if pt.at == "landmarks":
            raise ValueError(f"{_KEY}[{i}]: landmarks are one dynamic run of their own; set task.prediction_time="
                             "{at: landmarks, ...} instead of listing them here")
        out.append((pt, dict(entry) if isinstance(entry, Mapping) else {"at": "index"}))
    slugs = [slug(pt) for pt, _ in out]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{_KEY}: the same prediction time is listed twice ({', '.join(slugs)})")
    return out


def _sub_config(cfg: DictConfig, node: dict[str, Any], name: str, output_dir: Path) -> DictConfig:
    """The run's config at one prediction time: that prediction time, its own output folder, run name and
    registered model (a pre-treatment and an on-treatment model are two models, not two versions of one)."""
    sub = copy.deepcopy(cfg)
    full = {"at": "index", "day": None, "timepoint": None, "landmarks": None, "windows": None, **node}
    OmegaConf.update(sub, "task.prediction_time", full, merge=False, force_add=True)
    OmegaConf.update(sub, "task.prediction_times", None, merge=False, force_add=True)
    OmegaConf.update(sub, "paths.output_dir", str(output_dir / name), merge=False, force_add=True)
    OmegaConf.update(sub, "run_name", f"{cfg.run_name}@{name}", merge=False, force_add=True)
    if (registered := cfg.tracking.get("registered_model_name")) is not None:
        OmegaConf.update(sub, "tracking.registered_model_name", f"{registered}-{name}", merge=False, force_add=True)
    return sub


def _entry(name: str, pt: PredictionTime, summary: Mapping[str, Any], models: list[str]) -> dict[str, Any]:
    """One prediction time's part of the combined summary: who was at risk, and each model's metrics."""
    metrics = summary.get("metrics", {})
    per_model = {m: {k: metrics[f"{m}/{k}"] for k in SIDE_BY_SIDE_COLUMNS if f"{m}/{k}" in metrics} for m in models}
    return {"slug": name, "prediction_time": summary.get("prediction_time", {"describe": pt.describe()}),
            "output_dir": summary.get("output_dir"), "n_patients": summary.get("n_patients"),
            "n_events": summary.get("n_events"), "response": summary.get("response"), "models": per_model,
            "models_left_out": summary.get("models_left_out", {})}


def _table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"prediction_time": e["slug"], "model": m, **vals} for e in entries for m, vals in e["models"].items()]
    return pd.DataFrame(rows)


def _format(table: pd.DataFrame, entries: list[dict[str, Any]]) -> str:
    """Models down, prediction times across: C-index (mean over folds, with the CI of the pooled out-of-fold C, as
    the run's own table) and, where a model predicts it, the response AUC, each with its 95% CI."""
    bounds = {"cindex": ("cindex_ci_low", "cindex_ci_high"),
              "response_auc": ("response_auc_ci_low", "response_auc_ci_high")}

    def cell(r: pd.Series, key: str) -> str:
        lo, hi = bounds[key]
        if pd.isna(r.get(key)):
            return "-"
        return f"{r[key]:.3f} [{r.get(lo, float('nan')):.3f}, {r.get(hi, float('nan')):.3f}]"

    wide = {}
    for e in entries:
        part = table[table["prediction_time"] == e["slug"]].set_index("model")
        wide[f"C-index @{e['slug']}"] = part.apply(lambda r: cell(r, "cindex"), axis=1)
        if "response_auc" in part and part["response_auc"].notna().any():
            wide[f"response AUC @{e['slug']}"] = part.apply(lambda r: cell(r, "response_auc"), axis=1)
    head = "\n".join(f"  @{e['slug']}: {e['prediction_time'].get('describe')}; {e['n_patients']} patients at risk "
                     f"({e['prediction_time'].get('n_left_out', 0)} left out, "
                     f"{e['prediction_time'].get('n_without_timepoint', 0)} without the timepoint)"
                     + (f", {e['response']['n_labelled']} with a response label" if e.get("response") else "")
                     for e in entries)
    gone = "".join(f"\n  @{e['slug']}: {m} left out ({why})" for e in entries
                   for m, why in e.get("models_left_out", {}).items())
    return ("\nHeld-out metrics at each prediction time (each its own risk set and folds; 95% CIs):\n" + head + "\n"
            + pd.DataFrame(wide).fillna("-").to_string() + gone)


def run_prediction_times(cfg: DictConfig, train_one: Callable[[DictConfig], dict[str, float]]) -> dict[str, float]:
    """Run ``train_one`` once per prediction time of ``task.prediction_times``; write the combined summary.

    Returns the first prediction time's metrics (``optimized_metric`` refers to it) and every prediction time's
    under ``<slug>/<metric>``."""
    pts = prediction_times_of(cfg)
    assert pts is not None, "run_prediction_times needs task.prediction_times"
    if cfg.task.get("prediction_time") is not None:
        log.info("task.prediction_times is set: task.prediction_time (%s) is not used; the run predicts at each "
                 "listed prediction time", OmegaConf.to_container(cfg.task.prediction_time))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for i, (pt, node) in enumerate(pts):
        name = slug(pt)
        log.info("prediction time %d of %d: %s (outputs in %s)", i + 1, len(pts), pt.describe(), output_dir / name)
        sub_metrics = train_one(_sub_config(cfg, node, name, output_dir))
        summary = json.loads((output_dir / name / "summary.json").read_text())
        summary["output_dir"] = name
        models = [r["model"] for r in summary.get("table", [])]
        entries.append(_entry(name, pt, summary, models))
        if i == 0:
            metrics.update(sub_metrics)
        metrics.update({f"{name}/{k}": v for k, v in sub_metrics.items()})
    table = _table(entries)
    combined = {"task": cfg.task.name, "endpoint": cfg.task.endpoint, "response": cfg.task.response,
                "prediction_times": entries, "table": table.to_dict(orient="records"),
                "note": "each prediction time is its own run (risk set, folds, models): compare a model across "
                        "prediction times as two questions, not as a paired test on the same patients"}
    (output_dir / "summary.json").write_text(json.dumps(combined, indent=2, default=float))
    table.to_csv(output_dir / "summary.csv", index=False)
    print(_format(table, entries))
    return metrics

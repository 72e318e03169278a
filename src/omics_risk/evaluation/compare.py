"""Compare the models of training runs: metrics with CIs and paired C-index tests against a reference model.

``python evaluate.py mode=compare experiment_name=omics-risk [reference=clinical_cox] [runs=latest|all|ID,ID]`` runs
:func:`compare_experiment` on the job runs of ``train.py`` in an MLflow experiment. Every job run has one nested run
per model (``omics_risk.level=model``, tag ``model=<name>``), and each model run carries its pooled out-of-fold
predictions as the artifact :data:`OOF_ARTIFACT` (``oof_risk.parquet``, written by :func:`oof_table` and
:func:`log_oof_risks`):

==============  ===================================================================================
column          meaning
==============  ===================================================================================
patient_id      the patient's keyed pseudonym (``p_`` + 16 hex digits, :mod:`omics_risk.privacy`), stable
                across the runs of a project; the raw cohort id only when the run opted in
                (``tracking.raw_ids=true``, tag ``omics_risk.patient_ids=raw``)
repeat          CV repeat (0-based)
fold            test fold of the patient in that repeat
time, event     the outcome (days; 1 = event)
risk            the out-of-fold risk (higher = riskier), as the model of that fold scored it
response_prob   optional: out-of-fold response probability (models with a response head)
label           optional: the response label (NaN = not assessed)
==============  ===================================================================================

For every model: the risks of each CV repeat are ranked within their test fold; Harrell's C (the mean over the
repeats, as ``train()`` pools them; ``repeat=`` picks one repeat instead) gets a percentile bootstrap CI, Uno's C
and the time-dependent AUC at the horizons (of the first repeat) too, and the C-index difference to the reference
model **of the same job** (same folds, same patients; matched by ``patient_id``, i.e. by pseudonym) gets a paired
bootstrap CI and p-value and, with folds, the corrected resampled t-test of the per-fold differences: the one
comparison of :func:`~omics_risk.evaluation.bootstrap.paired_comparison` that ``train()`` reports. Patients are
resampled in the artifact's row order, which is the training data's patient order, so the paired test of a job's
models reproduces the one ``train()`` logged with the same bootstrap (``evaluation.bootstrap``, ``evaluation.seed``).
Model runs without the artifact (runs logged before it existed) fall back to the numbers the training run logged
(pooled C-index with CI; the paired test from the job's ``summary.json``, available only against the training
reference), marked ``source = training metrics``.

The comparison is printed, written as ``comparison.csv`` + forest plot + ``report.html``, and logged as a new run of
the same experiment tagged ``omics_risk.level=comparison`` (never itself compared).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from omics_risk.evaluation.bootstrap import metric_resamples, paired_comparison, pooled_cindex
from omics_risk.evaluation.metric_defs import PRIMARY, headline_metrics, rank_invalid_patterns
from omics_risk.evaluation.metrics import EvaluationError, evaluate_survival
from omics_risk.evaluation.mlflow_log import log_outputs
from omics_risk.evaluation.plots import plot_model_comparison, save_figure
from omics_risk.evaluation.pooling import usable_horizons, within_fold_ranks
from omics_risk.evaluation.report import write_html_report
from omics_risk.evaluation.tables import comparison_metrics, format_p, headline_table
from omics_risk.progress import mlflow_bars_off, progress_bar
from omics_risk.tracking import mlflow_utils as mu

if TYPE_CHECKING:
    from omics_risk.privacy import Pseudonymiser

log = logging.getLogger(__name__)

__all__ = [
    "COMPARISON_LEVEL",
    "OOF_ARTIFACT",
    "CompareResult",
    "ModelRun",
    "compare_experiment",
    "compare_runs",
    "display_table",
    "find_model_runs",
    "log_oof_risks",
    "oof_table",
]

#: The artifact of a model run holding its out-of-fold predictions (see the module docstring).
OOF_ARTIFACT = "oof_risk.parquet"
#: Level tag (``omics_risk.level``) of comparison runs.
COMPARISON_LEVEL = "comparison"


# ------------------------------------------------------------------------------------------------ the artifact
def oof_table(patients: Sequence[Any], time: np.ndarray, event: np.ndarray, risk: np.ndarray, folds: np.ndarray, *,
              response: np.ndarray | None = None, label: np.ndarray | None = None) -> pd.DataFrame:
    """The :data:`OOF_ARTIFACT` table of one model: ``risk`` and ``folds`` are (n,) or (n_repeats, n) as
    ``train()`` holds them (``oof[name]``, ``fold_of``); ``response`` likewise (NaN rows are dropped per repeat)."""
    risk = np.atleast_2d(np.asarray(risk, dtype=float))
    folds = np.atleast_2d(np.asarray(folds))
    n = len(patients)
    if risk.shape[1] != n or folds.shape != risk.shape:
        raise ValueError(f"risk {risk.shape} and folds {folds.shape} must be (n_repeats, {n} patients)")
    resp = None if response is None else np.atleast_2d(np.asarray(response, dtype=float))
    frames = []
    for r in range(risk.shape[0]):
        f = pd.DataFrame({"patient_id": pd.Index(patients).astype(str), "repeat": r, "fold": folds[r].astype(int),
                          "time": np.asarray(time, float), "event": np.asarray(event).astype(int), "risk": risk[r]})
        if resp is not None and np.isfinite(resp[r]).any():
            f["response_prob"] = resp[r]
        if label is not None:
            f["label"] = np.asarray(label, dtype=float)
        frames.append(f[np.isfinite(f["risk"]).to_numpy() & (f["fold"] >= 0).to_numpy()])
    return pd.concat(frames, ignore_index=True)


def log_oof_risks(table: pd.DataFrame, *, pseudonyms: Pseudonymiser | None = None,
                  run_id: str | None = None) -> pd.DataFrame:
    """Log ``table`` (:func:`oof_table`, with the cohort's ids) as :data:`OOF_ARTIFACT` of ``run_id`` or the active
    run, its ``patient_id`` replaced by the project's keyed pseudonyms (``pseudonyms``; default: the key of the
    current tracking store, :meth:`~omics_risk.privacy.Pseudonymiser.for_store`). Returns the logged table."""
    if run_id is None and mlflow.active_run() is None:
        raise RuntimeError("log_oof_risks needs an active MLflow run (the model run) or run_id=")
    need = {"patient_id", "repeat", "fold", "time", "event", "risk"}
    if need - set(table.columns):
        raise ValueError(f"the out-of-fold table lacks columns {sorted(need - set(table.columns))}")
    return mu.log_patient_table(table, OOF_ARTIFACT, pseudonyms=pseudonyms, run_id=run_id)


# ------------------------------------------------------------------------------------------------ finding runs
@dataclass
class ModelRun:
    """One model run of a training job, with its out-of-fold predictions when logged."""

    run_id: str
    model: str
    job_run_id: str
    job_name: str
    start_time: int
    metrics: dict[str, float]
    oof: pd.DataFrame | None = None
    label: str = ""


def _job_runs(client: Any, experiment: str, runs: str | Sequence[str]) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise EvaluationError(f"MLflow experiment '{experiment}' does not exist (tracking URI has: "
                              f"{', '.join(names) or 'none'}); set experiment_name=")
    jobs = client.search_runs([exp.experiment_id], "tags.`omics_risk.level` = 'job' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    if not jobs:
        raise EvaluationError(f"experiment '{experiment}' has no finished training job run (train.py) to compare")
    if isinstance(runs, str) and runs in ("latest", "all"):
        return jobs[:1] if runs == "latest" else jobs
    wanted = [r.strip() for r in (runs.split(",") if isinstance(runs, str) else runs) if str(r).strip()]
    picked = [j for j in jobs if any(j.info.run_id.startswith(w) for w in wanted)]
    missing = [w for w in wanted if not any(j.info.run_id.startswith(w) for j in jobs)]
    if missing:
        raise EvaluationError(f"no finished job run {', '.join(missing)} in experiment '{experiment}'")
    return picked


def _read_oof(client: Any, run_id: str, tmp: Path) -> pd.DataFrame | None:
    if OOF_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with mlflow_bars_off():
        path = client.download_artifacts(run_id, OOF_ARTIFACT, str(tmp))
    frame = pd.read_parquet(path)
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame


def find_model_runs(experiment: str, *, client: Any, runs: str | Sequence[str] = "latest") -> list[ModelRun]:
    """The model runs of the selected job runs (``latest``, ``all`` or run ids / id prefixes), final-model runs
    (``<model>_final``) excluded, newest job first; out-of-fold tables read when logged."""
    jobs = _job_runs(client, experiment, runs)
    out: list[ModelRun] = []
    with tempfile.TemporaryDirectory(prefix="omics_risk_compare_") as tmp:
        for job in jobs:
            children = client.search_runs([job.info.experiment_id],
                                          f"tags.mlflow.parentRunId = '{job.info.run_id}' and "
                                          "tags.`omics_risk.level` = 'model'", max_results=1000,
                                          order_by=["attributes.start_time ASC"])
            for run in children:
                model = run.data.tags.get("model", run.info.run_name)
                if model.endswith("_final"):
                    continue
                d = Path(tmp) / run.info.run_id
                d.mkdir()
                out.append(ModelRun(run_id=run.info.run_id, model=model, job_run_id=job.info.run_id,
                                    job_name=job.info.run_name or job.info.run_id[:8], start_time=job.info.start_time,
                                    metrics=dict(run.data.metrics), oof=_read_oof(client, run.info.run_id, d)))
    if not out:
        raise EvaluationError(f"the selected job runs of '{experiment}' have no model runs")
    several = len({r.job_run_id for r in out}) > 1
    for r in out:
        r.label = f"{r.model} @ {r.job_name} ({r.job_run_id[:6]})" if several else r.model
    return out


def _job_summary(client: Any, job_run_id: str) -> dict[str, Any]:
    """The training job's summary.json (its metrics hold the paired tests against the training reference)."""
    if "summary.json" not in {a.path for a in client.list_artifacts(job_run_id)}:
        return {}
    with tempfile.TemporaryDirectory(prefix="omics_risk_summary_") as tmp, mlflow_bars_off():
        return json.loads(Path(client.download_artifacts(job_run_id, "summary.json", tmp)).read_text())


# ------------------------------------------------------------------------------------------------ comparing
@dataclass
class _OOF:
    """One model run's out-of-fold predictions as arrays: outcome per patient (artifact row order), risks and test
    folds ``(n_repeats, n)`` (folds None when the table has none)."""

    patients: pd.Index
    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray
    folds: np.ndarray | None

    @property
    def first_ranks(self) -> np.ndarray:
        """The first repeat's risks ranked within its test folds (Uno's C, td-AUC)."""
        return within_fold_ranks(self.risk[0], self.folds[0]) if self.folds is not None else self.risk[0]

    def take(self, patients: pd.Index) -> _OOF:
        i = self.patients.get_indexer(patients)
        return _OOF(patients, self.time[i], self.event[i], self.risk[:, i],
                    None if self.folds is None else self.folds[:, i])


def _arrays(oof: pd.DataFrame, repeat: int | None) -> _OOF:
    """The artifact's repeats (all of them, or ``repeat``) as arrays, one row per patient in the artifact's row
    order: the training data's order, which train() bootstrapped in (ids are keyed pseudonyms now, and sorting by
    them would tie the resamples to the project's key); patients missing from a repeat are dropped."""
    reps = sorted(int(r) for r in oof["repeat"].unique()) if "repeat" in oof else [0]
    if repeat is not None:
        if int(repeat) not in reps:
            raise EvaluationError(f"the out-of-fold table has no repeat {repeat} (has {reps})")
        reps = [int(repeat)]
    frames = [(oof[oof["repeat"] == r] if "repeat" in oof else oof).drop_duplicates("patient_id")
              .set_index("patient_id") for r in reps]
    patients = frames[0].index
    for f in frames[1:]:
        patients = patients[patients.isin(f.index)]
    first = frames[0].loc[patients]
    risk = np.vstack([f.loc[patients, "risk"].to_numpy(float) for f in frames])
    folds = (np.vstack([f.loc[patients, "fold"].to_numpy() for f in frames]) if "fold" in first else None)
    return _OOF(patients, first["time"].to_numpy(float), first["event"].to_numpy().astype(bool), risk, folds)


def _row_base(run: ModelRun) -> dict[str, Any]:
    return {"label": run.label, "model": run.model, "job": run.job_name, "job_run_id": run.job_run_id,
            "run_id": run.run_id}


def compare_runs(model_runs: Sequence[ModelRun], *, reference: str = "clinical_cox",
                 horizons: Sequence[float] | None = None, strict_horizons: bool = False, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05, repeat: int | None = None, client: Any = None, n_jobs: int = 1,
                 progress: bool = False, headline_p: str = "bootstrap") -> tuple[pd.DataFrame, list[str]]:
    """The comparison table (one row per model run) and notes; see the module docstring.

    Columns: label, model, job, job_run_id, run_id, source, n, events, repeats_pooled, ``harrell_c`` (+
    ``_ci_low``/``_ci_high``), ``uno_c``, ``auc_<h>d``, ``mean_auc`` (each with CI; from out-of-fold tables only),
    ``delta_c`` (+ CI), ``p_value`` (the headline p, ``headline_p``) and ``p_method``, ``p_bootstrap``,
    ``p_corrected_t``, ``delta_c_fold_mean`` (+ CI) of the comparison with the reference of the same job (NaN for
    the reference itself). ``repeat``: None pools every CV repeat (as ``train()``), an int uses that one only.
    """
    refs = {r.job_run_id: r for r in model_runs if r.model == reference}
    if not refs:
        have = sorted({r.model for r in model_runs})
        raise EvaluationError(f"reference model '{reference}' is not among the compared runs (models: "
                              f"{', '.join(have)}); set reference=")
    latest_ref = max(refs.values(), key=lambda r: r.start_time)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    h_used: np.ndarray | None = None
    bar = progress_bar(total=len(model_runs), desc="bootstrap", unit="model", disable=not progress)
    for i, run in enumerate(model_runs):
        bar.set_description_str(f"bootstrap {run.label or run.model} ({i + 1}/{len(model_runs)})")
        ref = refs.get(run.job_run_id, latest_ref)
        row = _row_base(run)
        if run.oof is not None:
            s = _arrays(run.oof, repeat)
            time, event, score = s.time, s.event, s.first_ranks
            h, dropped = usable_horizons(horizons, time, event, strict=strict_horizons)
            if h_used is None:
                h_used = h
                notes += dropped
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rest = evaluate_survival(time, event, score, horizons=h if len(h) else None, train_time=time,
                                         train_event=event, n_boot=metric_resamples(n_boot), seed=seed,
                                         alpha=alpha,  # the first 200 of the same resamples, as the run report
                                         exclude=[*rank_invalid_patterns(groups=True), PRIMARY], n_jobs=n_jobs,
                                         progress=False)  # ranks are not log hazards; no groups here
            # Harrell's C from the engine of train()'s summary (every repeat; the same resamples)
            est = {PRIMARY: pooled_cindex(time, event, s.risk, s.folds, n_boot=n_boot, seed=seed, alpha=alpha),
                   **rest}
            row.update(source=OOF_ARTIFACT, n=len(time), events=int(event.sum()), repeats_pooled=s.risk.shape[0])
            for k, e in est.items():
                row.update({k: e.value, f"{k}_ci_low": e.low, f"{k}_ci_high": e.high})
            row.update(delta_c=np.nan, delta_c_ci_low=np.nan, delta_c_ci_high=np.nan, p_value=np.nan)
            if run.run_id != ref.run_id:
                if ref.oof is None:
                    notes.append(f"{run.label}: the reference run {ref.run_id[:8]} has no {OOF_ARTIFACT}: no paired "
                                 "test")
                else:
                    r = _arrays(ref.oof, repeat)
                    both = s.patients[s.patients.isin(r.patients)]  # in the model's (the training data's) order
                    if len(both) < len(time):
                        notes.append(f"{run.label}: paired test on the {len(both)} of {len(time)} patients the "
                                     f"reference ({ref.label}) also scored")
                    if r.risk.shape[0] != s.risk.shape[0]:
                        notes.append(f"{run.label}: {s.risk.shape[0]} CV repeats but the reference ({ref.label}) has "
                                     f"{r.risk.shape[0]}: no paired test")
                    elif len(both) >= 10:
                        a, b = s.take(both), r.take(both)
                        pc = paired_comparison(a.time, a.event, a.risk, b.risk, a.folds, n_boot=n_boot, seed=seed,
                                               alpha=alpha, headline_p=headline_p)
                        row.update(pc.row())
                    else:
                        notes.append(f"{run.label}: fewer than 10 patients shared with the reference: no paired test")
        else:
            m = run.metrics
            old = "harrell_c" not in m  # runs logged before the model runs carried harrell_c (cindex_pooled)
            row.update(source="training metrics", n=np.nan, events=np.nan,
                       harrell_c=m.get("cindex_pooled" if old else "harrell_c", np.nan),
                       harrell_c_ci_low=m.get("cindex_ci_low" if old else "harrell_c_ci_low", np.nan),
                       harrell_c_ci_high=m.get("cindex_ci_high" if old else "harrell_c_ci_high", np.nan),
                       delta_c=np.nan, delta_c_ci_low=np.nan, delta_c_ci_high=np.nan, p_value=np.nan)
            if client is not None and run.job_run_id not in summaries:
                summaries[run.job_run_id] = _job_summary(client, run.job_run_id)
            summary = summaries.get(run.job_run_id, {})
            sm = summary.get("metrics", {})
            row.update(n=summary.get("n_patients", np.nan), events=summary.get("n_events", np.nan))
            key = f"{run.model}/delta_vs_{reference}"
            if run.model != reference and key in sm:
                row.update(delta_c=sm[key], delta_c_ci_low=sm.get(f"{key}_ci_low", np.nan),
                           delta_c_ci_high=sm.get(f"{key}_ci_high", np.nan), p_value=sm.get(f"{key}_p", np.nan),
                           p_method="bootstrap", p_bootstrap=sm.get(f"{key}_p", np.nan),
                           p_corrected_t=sm.get(f"{run.model}/p_vs_{reference}_corrected_t", np.nan))
            elif run.model != reference:
                notes.append(f"{run.label}: no {OOF_ARTIFACT} and no training-time test against {reference}")
        rows.append(row)
        bar.update(1)
    bar.close()
    legacy = [r["label"] for r in rows if r["source"] != OOF_ARTIFACT]
    if legacy:
        notes.append(f"{len(legacy)} model run(s) have no {OOF_ARTIFACT} artifact (logged before train() wrote "
                     "it): their C-index and paired test are the ones train() logged (pooled out-of-fold C with "
                     "bootstrap CI; paired test from the job's summary.json), and Uno's C / td-AUC are missing")
    table = pd.DataFrame(rows)
    first = ["label", "model", "job", "job_run_id", "run_id", "source", "n", "events", "repeats_pooled", "harrell_c",
             "harrell_c_ci_low", "harrell_c_ci_high", "delta_c", "delta_c_ci_low", "delta_c_ci_high", "p_value"]
    table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
    table.attrs["horizons"] = [] if h_used is None else [float(x) for x in h_used]
    table.attrs["reference"] = reference
    return table, list(dict.fromkeys(notes))


def _fmt(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:.3f} ({lo:.3f}–{hi:.3f})" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a human-readable table: estimates with CIs as text, one row per model run."""
    out = pd.DataFrame({"model": table["label"], "n": table["n"], "events": table["events"]})
    metric_cols = [c for c in table.columns if f"{c}_ci_low" in table.columns
                   and c not in ("delta_c", "delta_c_fold_mean")]
    for c in metric_cols:
        out[c] = [_fmt(*v) for v in table[[c, f"{c}_ci_low", f"{c}_ci_high"]].to_numpy(float)]
    out[f"delta_c vs {table.attrs.get('reference', 'reference')}"] = [
        _fmt(*v) for v in table[["delta_c", "delta_c_ci_low", "delta_c_ci_high"]].to_numpy(float)]
    out["p"] = [format_p(p) for p in table["p_value"]]
    if "p_corrected_t" in table and np.isfinite(table["p_corrected_t"].to_numpy(float)).any():
        out["p (bootstrap)"] = [format_p(p) for p in table["p_bootstrap"]]
        out["p (corrected t)"] = [format_p(p) for p in table["p_corrected_t"]]
        out["ΔC per fold (corrected t 95% CI)"] = [
            _fmt(*v) for v in table[["delta_c_fold_mean", "delta_c_fold_mean_ci_low",
                                     "delta_c_fold_mean_ci_high"]].to_numpy(float)]
    out["source"] = table["source"]
    return out


@dataclass
class CompareResult:
    """What :func:`compare_experiment` computed and wrote."""

    experiment: str
    reference: str
    table: pd.DataFrame
    notes: list[str]
    output_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None

    def to_text(self, width: int = 120) -> str:
        """The headline comparison (C-index, ΔC vs the reference, p; one row per model run) within ``width``
        columns; Uno's C and td-AUC are in ``comparison_table.csv`` and report.html."""
        shown = headline_table(self.table.assign(label=[_short(x, 40) for x in self.table["label"]]),
                               self.reference, label="label")
        shown.insert(1, "n (events)", [f"{n:.0f} ({e:.0f})" if np.isfinite(n) and np.isfinite(e) else "–"
                                       for n, e in self.table[["n", "events"]].to_numpy(float)])
        head = _wrap(f"Model comparison in experiment '{self.experiment}' against {self.reference}: pooled "
                     "out-of-fold predictions, 95% bootstrap CIs, paired bootstrap test of the C-index difference. "
                     f"All metrics (Uno's C, td-AUC): {self.paths.get('comparison_table', 'comparison_table.csv')}",
                     width)
        notes = "".join("\n" + _wrap(f"  note: {n}", width, indent="        ") for n in self.notes)
        return f"{head}\n{shown.to_string(index=False)}{notes}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _wrap(text: str, width: int, indent: str = "") -> str:
    return textwrap.fill(text, width=width, subsequent_indent=indent, break_on_hyphens=False)


def _metric_key(model: str, job_run_id: str, several: bool) -> str:
    base = f"{model}.{job_run_id[:8]}" if several else model
    return re.sub(r"[^A-Za-z0-9_.\-/ ]+", "_", base)


def _comparison_flat(table: pd.DataFrame, reference: str, several: bool) -> dict[str, float]:
    """The comparison run's metrics, under the names the training job run logs (``<model>/harrell_c`` + CI,
    ``<model>/delta_c_vs_<reference>`` + CI, ``<model>/p_vs_<reference>``), plus the other headline metrics
    (``<model>/uno_c``, ``<model>/mean_auc`` + CI); ``.<job id>`` follows the model when several jobs are compared."""
    flat: dict[str, float] = {}
    for row in table.to_dict(orient="records"):
        key = _metric_key(row["model"], row["job_run_id"], several)
        flat.update(comparison_metrics(row, reference, prefix=f"{key}/"))
        for m in headline_metrics():
            if m != PRIMARY and m in row and np.isfinite(row[m]):
                flat.update({f"{key}/{m}{s}": float(row[f"{m}{s}"]) for s in ("", "_ci_low", "_ci_high")
                             if np.isfinite(row.get(f"{m}{s}", np.nan))})
    return flat


def compare_experiment(experiment: str, *, output_dir: str | Path, reference: str = "clinical_cox",
                       runs: str | Sequence[str] = "latest", horizons: Sequence[float] | None = None,
                       n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, repeat: int | None = None,
                       tracking_uri: str | None = None, log_to_mlflow: bool = True,
                       params: Mapping[str, Any] | None = None, n_jobs: int = 1,
                       progress: bool = False, headline_p: str = "bootstrap") -> CompareResult:
    """Compare the model runs of an experiment's training jobs (see the module docstring).

    Args:
        experiment: the MLflow experiment of the training runs (``tracking.experiment`` of train.py).
        output_dir: where ``comparison.csv``, ``comparison_table.csv`` (text with CIs), ``plots/comparison.png``,
            ``report.html`` and ``summary.json`` go.
        reference: the model every other is tested against (same job's run of it).
        runs: ``latest`` (the newest finished job run), ``all``, or job run ids (prefixes) as a list or
            comma-separated string.
        horizons: td-AUC horizons (days); default: the newest job's ``evaluation.horizons``, those the follow-up
            cannot support left out (explicit horizons must all be supported: :class:`HorizonError`).
        n_boot, seed: the bootstrap (``evaluation.bootstrap``, ``evaluation.seed``); with train.py's settings the
            paired test of a job's models is the one its summary.json, report and model card show.
        repeat: None pools every CV repeat (as ``train()``); an int uses that repeat's predictions only.
        headline_p: the p the tables and the forest plot show (``bootstrap`` or ``corrected_t``).
        n_jobs: processes for the bootstrap of each model's metrics (one metric per process).
    """
    out = Path(output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    uri = mu.tracking_uri(tracking_uri, Path.cwd())
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    model_runs = find_model_runs(experiment, client=client, runs=runs)
    explicit = horizons is not None and len(horizons) > 0
    if not explicit:
        job = client.get_run(model_runs[0].job_run_id)
        try:
            horizons = json.loads(job.data.params.get("evaluation.horizons", "null")) or None
        except ValueError:
            horizons = None
    table, notes = compare_runs(model_runs, reference=reference, horizons=horizons, strict_horizons=explicit,
                                n_boot=n_boot, seed=seed, alpha=alpha, repeat=repeat, client=client,
                                n_jobs=n_jobs, progress=progress, headline_p=headline_p)
    ref_label = next(r.label for r in sorted(model_runs, key=lambda r: -r.start_time) if r.model == reference)
    shown = display_table(table)
    paths = {"comparison": out / "comparison.csv", "comparison_table": out / "comparison_table.csv"}
    table.to_csv(paths["comparison"], index=False)
    shown.to_csv(paths["comparison_table"], index=False)
    forest = table.assign(model=table["label"])
    fig = plot_model_comparison(forest, reference=ref_label, metric=PRIMARY,
                                title=f"C-index vs {reference} ({experiment})")
    paths["plot"] = save_figure(fig, out / "plots" / "comparison.png")
    result = CompareResult(experiment=experiment, reference=reference, table=table, notes=notes, output_dir=out,
                           paths=paths)
    several = len({r.job_run_id for r in model_runs}) > 1
    if log_to_mlflow:
        ids = set()
        for r in model_runs:
            if r.oof is not None:
                ids.update(r.oof["patient_id"].astype(str))
        flat = _comparison_flat(table, reference, several)
        tags = {mu.LEVEL_TAG: COMPARISON_LEVEL, "reference": reference,
                "compared_job_runs": ",".join(dict.fromkeys(r.job_run_id for r in model_runs))}
        with mu.start_run_tree(experiment, uri=uri, run_name=f"compare-vs-{reference}", parent_run_id=None,
                               tags=tags, patient_ids=sorted(ids)) as run:
            mu.safe_log_params({"reference": reference, "runs": runs if isinstance(runs, str) else ",".join(runs),
                                "n_boot": n_boot, "seed": seed, "repeat": "all" if repeat is None else repeat,
                                "headline_p": headline_p,
                                "horizons": json.dumps(table.attrs.get("horizons", [])), **dict(params or {})})
            log_outputs(paths, metrics=flat)
            result.run_id = run.info.run_id
    meta = {"experiment": experiment, "reference": reference, "job runs": ", ".join(
        dict.fromkeys(f"{r.job_name} ({r.job_run_id[:8]})" for r in model_runs)),
        "bootstrap": f"{n_boot} resamples, seed {seed}",
        "CV repeats pooled": "all" if repeat is None else f"repeat {repeat} only",
        "comparison run": result.run_id or "not logged"}
    sections = {"How to read this comparison": (
        "Each model's risks are its pooled out-of-fold predictions (ranked within each test fold, as train() pools "
        "them), so every model is scored on the same patients with the same folds; with several CV repeats, "
        "Harrell's C and the comparison are the mean over the repeats on the same resampled patients (Uno's C and "
        f"td-AUC: the first repeat). delta_c is the model's C-index minus {reference}'s on the same bootstrap "
        "resamples of patients, with a two-sided paired bootstrap p; p_corrected_t is the corrected resampled "
        "t-test (Nadeau & Bengio 2003) of the per-fold differences, which also covers training variability. "
        f"Intervals are 95% percentile bootstrap CIs ({n_boot} resamples"
        + (f"; Uno's C and td-AUC: the first {metric_resamples(n_boot)} of them, as the run report"
           if metric_resamples(n_boot) < n_boot else "") + ")."),
        "Notes": "\n\n".join(notes) if notes else "None."}
    paths["report"] = write_html_report(out / "report.html", title=f"Model comparison: {experiment}",
                                        metrics_table=shown, figures={"comparison": paths["plot"]},
                                        headline=headline_table(table, reference, label="label"),
                                        captions={"comparison": "Harrell's C (95% CI) per model; dashed line: the "
                                                                "reference; p: paired bootstrap vs the reference."},
                                        sections=sections, meta=meta)
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps({"experiment": experiment, "reference": reference, "run_id": result.run_id,
                                            "notes": notes, "table": json.loads(table.to_json(orient="records"))},
                                           indent=1))
    if result.run_id is not None:
        log_outputs({"report": paths["report"], "summary": paths["summary"]}, run_id=result.run_id)
    return result


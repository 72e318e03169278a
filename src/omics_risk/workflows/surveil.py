"""``omics-risk surveil`` / ``evaluate.py mode=surveillance``: simulate follow-up schedules on a cohort and write
what each costs and finds (docs/surveillance.md).

In order: check the inputs (milliseconds, before any model is loaded); read the cohort's ``cohort.yaml`` and
``clinical.csv``; take the recurrence onsets from the generator's truth (synthetic cohorts) or impute them from the
observed recurrence days (:class:`~omics_risk.surveillance.onset.SojournModel`); score each patient's predicted
recurrence-free curve on a dense grid with the registered model (``omics-risk score``'s own code,
:func:`~omics_risk.workflows.scoring.score_cohort`), or take it from the truth or the cohort's Kaplan-Meier curve;
simulate every schedule; summarise with bootstrap CIs; size the non-inferiority trial; and write, atomically,

* ``schedules.csv`` (one row per schedule, each outcome with its CI), ``patients.csv`` (every patient under every
  schedule, with ``status`` / ``reason``), ``strata.csv`` (recurrence by stage, histology and model risk group),
  ``trial.csv`` and ``power.csv`` (the trial), ``summary.json``, ``tradeoff.png``, ``power.png``, ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.atomic import atomic_path, atomic_write_text
from omics_risk.data.spec import CLINICAL_FILE, SPEC_FILE, SurvivalEndpoint, parse_spec
from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.plot_style import figure_png
from omics_risk.models.saved import plain
from omics_risk.progress import progress_bar
from omics_risk.surveillance.onset import (
    TRUTH_ONSET,
    OnsetTable,
    curves_from_truth,
    marginal_curves,
    onsets_from_truth,
)
from omics_risk.surveillance.plots import plot_power, plot_tradeoff
from omics_risk.surveillance.report import Block, render_report
from omics_risk.surveillance.schedules import Schedule, StageBasedSchedule, TableSchedule, build_schedules
from omics_risk.surveillance.settings import SurveillanceSettings
from omics_risk.surveillance.simulate import SurveillanceCohort, simulate_all
from omics_risk.surveillance.summary import (
    METRICS,
    Matched,
    ScheduleStats,
    low_risk_recurrence,
    matched_to,
    schedule_stats,
    summary_table,
)
from omics_risk.surveillance.trial import ArmModel, closed_form_recurrences, margin_table, simulated_power

__all__ = ["SurveilInputError", "SurveilResult", "check_surveil_inputs", "run_surveillance"]

TRUTH_FILE = Path("truth") / "patients.csv"
RISK_GROUPS = ("low", "intermediate", "high")


class SurveilInputError(ValueError):
    """An input that cannot work (no cohort folder, no model for ``risk_from=model``, a schedule name the trial
    asks for that is not simulated): one line naming it and what to do."""


@dataclass
class SurveilResult:
    """What :func:`run_surveillance` computed and wrote."""

    cohort: str
    n_patients: int
    n_usable: int
    n_recurrences: int
    onset_source: str
    risk_from: str
    schedules: pd.DataFrame
    matched: Matched | None
    trial: dict[str, Any]
    paths: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None

    def to_text(self) -> str:
        lines = [f"Surveillance simulation on {self.cohort}: {self.n_usable} of {self.n_patients} patients simulated, "
                 f"{self.n_recurrences} recurrences within the horizon (onsets: {self.onset_source}; predicted "
                 f"curves: {self.risk_from})",
                 f"{'schedule':<26}{'scans/patient':>22}{'median delay (d)':>24}{'found in window':>22}"]
        for r in self.schedules.itertuples():
            lines.append(f"{r.schedule:<26}{_ci(r.scans_per_patient, r.scans_per_patient_ci_low, r.scans_per_patient_ci_high, 2):>22}"  # noqa: E501
                         f"{_ci(r.median_delay_days, r.median_delay_days_ci_low, r.median_delay_days_ci_high, 0):>24}"
                         f"{_ci(r.within_window, r.within_window_ci_low, r.within_window_ci_high, 2):>22}")
        if self.matched is not None:
            m = self.matched
            lines.append(f"risk-adapted at {m.reference}'s {m.scans:.2f} scans/patient: median delay "
                         f"{_est(m.delay, 0)} vs {_est(m.reference_delay, 0)} days "
                         f"(difference {_est(m.difference, 0)}); "
                         f"scans saved at equal delay {_est(m.scans_saved_at_equal_delay, 2)} per patient")
        if self.trial.get("patients_per_arm_closed_form") is not None:
            t = self.trial
            lines.append(f"trial {t['experimental']} vs {t['standard']} (margin {t['margin']:g}): "
                         f"{t['patients_per_arm_closed_form']} patients per arm (closed form), "
                         f"{t['patients_per_arm_simulated']} (simulated); CT scans saved per patient "
                         f"{_est(t['scans_saved_per_patient'], 2)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _ci(v: float, lo: float, hi: float, d: int) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:.{d}f} ({lo:.{d}f}–{hi:.{d}f})" if np.isfinite(lo) else f"{v:.{d}f}"


def _est(e: Estimate, d: int) -> str:
    return _ci(e.value, e.low, e.high, d)


# ------------------------------------------------------------------------------------------------ inputs
def check_surveil_inputs(cohort: str | Path, out: str | Path, settings: SurveillanceSettings,
                         model: str | None) -> None:
    """The checks that need no model and no data, in milliseconds (:class:`SurveilInputError`)."""
    root = Path(cohort)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise SurveilInputError(f"--cohort {root} {what}: a cohort is a folder with {SPEC_FILE} and {CLINICAL_FILE}")
    lacking = [n for n in (SPEC_FILE, CLINICAL_FILE) if not (root / n).is_file()]
    if lacking:
        raise SurveilInputError(f"--cohort {root} has no {' and no '.join(lacking)}: not a cohort folder "
                                "(docs/data_format.md)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SurveilInputError(f"--out {out} is a file: give a folder (created if missing)")
    parent = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SurveilInputError(f"--out {out}: {parent} is not writable")
    if settings.risk_from == "model" and not model:
        raise SurveilInputError("the risk-adapted schedules need each patient's predicted curve: give --model URI "
                                "(models:/NAME@ALIAS, runs:/RUN_ID/model or a model folder), or --risk-from truth "
                                "(synthetic cohorts) / marginal")
    names = [s.name for s in build_schedules(settings.schedules)]
    for what, name in (("reference", settings.reference), ("trial.experimental", settings.trial.experimental),
                       ("trial.standard", settings.trial.standard)):
        if name and name not in names:
            raise SurveilInputError(f"surveillance.{what}={name!r} is not among the schedules simulated "
                                    f"({', '.join(names)})")


def _main_endpoint(spec: Any) -> SurvivalEndpoint:
    surv = {k: e for k, e in spec.endpoints.items() if isinstance(e, SurvivalEndpoint)}
    if not surv:
        raise SurveilInputError(f"{SPEC_FILE} declares no survival endpoint: recurrence times are needed")
    for k in ("rfs", "dfs", "efs", "pfs"):
        if k in surv:
            return surv[k]
    return next(iter(surv.values()))


def _numeric(clinical: pd.DataFrame, col: str) -> pd.Series:
    if col not in clinical.columns:
        raise SurveilInputError(f"{CLINICAL_FILE} has no column {col!r} (named in {SPEC_FILE})")
    return pd.to_numeric(clinical[col], errors="coerce")


def _observed_onsets(clinical: pd.DataFrame, spec: Any, s: SurveillanceSettings, rng: np.random.Generator,
                     notes: list[str]) -> OnsetTable:
    """Onsets imputed from the observed recurrence days (real cohorts; module docstring of .onset)."""
    ep = _main_endpoint(spec)
    dpu = spec.days_per_unit
    t = _numeric(clinical, ep.time) * dpu
    e = _numeric(clinical, ep.event)
    reason = np.full(len(clinical), "", dtype=object)
    bad_t, bad_e = (t.isna() | (t < 0)).to_numpy(), ~e.isin([0, 1]).to_numpy()
    reason[bad_e] = f"{ep.event} is not 0/1"
    reason[bad_t] = f"{ep.time} is missing or negative"
    usable = ~(bad_t | bad_e)
    event = (e == 1).to_numpy() & usable
    # an rfs event on the day of a death is a death without a known recurrence (os columns, when declared)
    os_ep = spec.endpoints.get("os")
    if isinstance(os_ep, SurvivalEndpoint) and os_ep is not ep and os_ep.time in clinical.columns:
        ot, oe = _numeric(clinical, os_ep.time) * dpu, _numeric(clinical, os_ep.event)
        death = event & (oe == 1).to_numpy() & np.isclose(ot.to_numpy(float), t.to_numpy(float))
        if death.any():
            notes.append(f"{int(death.sum())} {ep.time} events fall on the day of death ({os_ep.time}): taken as "
                         "deaths without recurrence")
        event &= ~death
    time = t.to_numpy(float)
    onset = np.where(event, s.sojourn.onset(rng, np.where(event, time, np.inf)), np.inf)
    mol = s.sojourn.molecular(rng, onset)
    end = np.where(usable, time, 0.0)
    alive = np.where(event, np.inf, end)  # a recurrence was followed to its detection
    return OnsetTable(onset, mol, end, alive, usable, reason, "sojourn")


def _curves(s: SurveillanceSettings, model: str | None, cohort: Path, onsets: OnsetTable, patients: pd.Series,
            times: np.ndarray, work: Path, tracking_uri: str | None, progress: bool, notes: list[str]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Predicted curves ``(n, len(times))``, which patients have one and why not, the model's risk groups, and
    where the curves came from."""
    n = len(patients)
    has = np.ones(n, dtype=bool)
    why = np.full(n, "", dtype=object)
    end = np.minimum(onsets.follow_up_end, s.horizon_days)
    if s.risk_from == "marginal":
        ok = onsets.usable
        curves = np.ones((n, len(times)))
        curves[ok] = marginal_curves(onsets.onset[ok], end[ok], times)
        return curves, has, why, None, "the cohort's Kaplan-Meier curve for everyone (no individual information)"
    if s.risk_from == "truth":
        if onsets.risk_truth is None or onsets.source != "truth":
            raise SurveilInputError(f"--risk-from truth needs a synthetic cohort whose {TRUTH_FILE} has true_risk_rfs "
                                    f"and {TRUTH_ONSET} (cohorts of synthetic generator 1.2.0 or later: rewrite it "
                                    "with `omics-risk synth --overwrite`); give --model URI instead")
        ok = onsets.usable & np.isfinite(onsets.risk_truth)
        curves = np.ones((n, len(times)))
        curves[ok] = curves_from_truth(onsets.onset[ok], end[ok], onsets.risk_truth[ok], times)
        has[~ok], why[~ok] = False, "no true risk"
        return curves, has, why, None, "the generator's true risk (Weibull PH fit): the best a model could do"
    # lazy: the scoring stack (torch, MLflow) loads only when a model is used
    import mlflow

    # lazy: as above
    from omics_risk.workflows.scoring import score_cohort

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    out = work / "scores.parquet"
    res = score_cohort(str(model), cohort, out, work_dir=work / "score", horizons=list(times), progress=progress)
    notes += [f"scoring: {w}" for w in res.warnings]
    sc = pd.read_parquet(out)
    cols = [c for c in sc.columns if c.startswith("surv_")]
    if len(cols) != len(times):
        raise SurveilInputError(f"model {model} predicts no survival curve (no surv_<h>d columns): the "
                                "risk-adapted schedules need one; use a model with a survival head")
    sc = sc.assign(patient_id=sc["patient_id"].astype(str)).set_index("patient_id").reindex(patients.astype(str))
    curves = sc[cols].to_numpy(float)
    has = np.isfinite(curves).all(axis=1)
    if "prediction_day" in sc.columns:  # a model predicting at a later day: its curve starts there
        curves = _from_index_date(curves, times, pd.to_numeric(sc["prediction_day"], errors="coerce").to_numpy(float))
        notes.append("the model predicts at each patient's prediction day (prediction_day of the scores): its curve "
                     "is shifted to start there (recurrence-free until then)")
    status = sc["status"].fillna("missing").astype(str).to_numpy() if "status" in sc else np.full(n, "ok")
    reason = sc["reason"].fillna("").astype(str).to_numpy() if "reason" in sc else np.full(n, "")
    why[~has] = [f"not scored ({st}: {r})" if r else f"not scored ({st})" for st, r in zip(status[~has], reason[~has],
                                                                                         strict=True)]
    curves = np.where(np.isfinite(curves), curves, 1.0)
    groups = sc["risk_group"].to_numpy(object) if "risk_group" in sc else None
    if groups is not None and pd.isna(groups).all():
        groups = None
    return curves, has, why, groups, f"model {model}"


def _from_index_date(curves: np.ndarray, times: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Curves predicted from each patient's prediction ``day`` on, re-read on ``times`` counted from the index
    date: ``S(t) = S_pred(t - day)`` (1 before the day; a missing day counts as 0)."""
    grid = np.concatenate([[0.0], times])
    out = np.empty_like(curves)
    d = np.where(np.isfinite(day), np.maximum(day, 0.0), 0.0)
    for i in range(len(curves)):
        out[i] = np.interp(times - d[i], grid, np.concatenate([[1.0], curves[i]]), left=1.0)
    return out


def _groups(curves: np.ndarray, ok: np.ndarray, model_groups: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Risk groups: the model's (training cut-offs) or tertiles of the predicted risk at the horizon."""
    if model_groups is not None:
        return np.asarray([str(g) if isinstance(g, str) else "" for g in model_groups], dtype=object), \
            "the model's risk groups (training cut-offs)"
    risk = 1 - curves[:, -1]
    out = np.full(len(risk), "", dtype=object)
    if ok.sum() >= 3:
        cuts = np.quantile(risk[ok], [1 / 3, 2 / 3])
        out[ok] = np.asarray(RISK_GROUPS, dtype=object)[np.searchsorted(cuts, risk[ok], side="right")]
    return out, "tertiles of the predicted recurrence risk at the horizon in this cohort"


# ------------------------------------------------------------------------------------------------ run
def run_surveillance(cohort: str | Path, out: str | Path, *, settings: SurveillanceSettings | None = None,
                     model: str | None = None, tracking_uri: str | None = None, progress: bool = True,
                     log_to_mlflow: bool = False, experiment: str = "omics-risk-surveillance",
                     params: Mapping[str, Any] | None = None, pseudonyms: Any = None) -> SurveilResult:
    """Simulate every schedule of ``settings`` on ``cohort`` and write the outputs to ``out`` (module docstring)."""
    s = settings or SurveillanceSettings()
    check_surveil_inputs(cohort, out, s, model)
    root, out = Path(cohort), Path(out)
    spec, problems = parse_spec(root / SPEC_FILE)
    if spec is None:
        raise SurveilInputError(f"{root / SPEC_FILE}: " + "; ".join(str(p) for p in problems[:3]))
    clinical = pd.read_csv(root / CLINICAL_FILE, dtype={"patient_id": str})
    if "patient_id" not in clinical.columns:
        raise SurveilInputError(f"{root / CLINICAL_FILE} has no patient_id column")
    patients = clinical["patient_id"].astype(str)
    notes: list[str] = []
    rng = np.random.default_rng(s.seed)
    truth_path = root / TRUTH_FILE
    has_truth = truth_path.is_file() and TRUTH_ONSET in pd.read_csv(truth_path, nrows=0).columns
    if s.onset_source == "truth" and not has_truth:
        raise SurveilInputError(f"surveillance.onset_source=truth needs {truth_path} with {TRUTH_ONSET} (a synthetic "
                                "cohort); use onset_source=sojourn for a real cohort")
    if has_truth and s.onset_source in ("auto", "truth"):
        onsets = onsets_from_truth(patients, pd.read_csv(truth_path, dtype={"patient_id": str}))
        onset_text = ("the generator's true onset days (truth/patients.csv): radiological onset = visible on CT, "
                      "molecular onset = visible in blood; surveillance runs until the horizon or death from other "
                      "causes")
    else:
        onsets = _observed_onsets(clinical, spec, s, rng, notes)
        onset_text = ("IMPUTED: the cohort's recurrence days are detections under its own follow-up, so each onset "
                      "is simulated before it: " + s.sojourn.describe() + ". Patients without a recurrence are "
                      "followed until their last contact.")
    symptom_delay = s.symptoms.draw(rng, len(patients))
    times = np.arange(s.grid_days, s.horizon_days + s.grid_days, s.grid_days)
    with tempfile.TemporaryDirectory(prefix=".surveil-", dir=_work_parent(out)) as tmp:
        curves, has_curve, why, model_groups, risk_text = _curves(s, model, root, onsets, patients, times, Path(tmp),
                                                             tracking_uri, progress, notes)
    usable = onsets.usable & has_curve
    reason = np.where(onsets.reason != "", onsets.reason,
                      np.where(has_curve, "", np.where(why != "", why, "no predicted curve")))
    stage_col = next((sc.column for sc in build_schedules(s.schedules) if isinstance(sc, StageBasedSchedule)),
                     "stage")
    stage = clinical[stage_col].to_numpy(object) if stage_col in clinical.columns else None
    sc = SurveillanceCohort(patients.to_numpy(object), onsets.onset, onsets.molecular,
                            np.minimum(onsets.follow_up_end, s.horizon_days), onsets.alive_until, symptom_delay,
                            float(s.horizon_days), stage, times, curves, usable, reason.astype(object),
                            draw_uniforms_seed=s.seed + 1)
    schedules = build_schedules(s.schedules)
    notes += _schedule_notes(schedules, sc, clinical)
    frames = [simulate_all([sch], sc, window_days=s.window_days)
              for sch in progress_bar(schedules, desc="schedules", unit="schedule", disable=not progress)]
    long = pd.concat(frames, ignore_index=True)
    groups, group_text = _groups(curves, usable, model_groups)
    long["risk_group"] = np.tile(groups, len(schedules))
    stats = schedule_stats(long, {x.name: x.family for x in schedules}, n_boot=int(s.bootstrap), seed=s.seed)
    descriptions = {x.name: x.describe() for x in schedules}
    table = summary_table(stats, descriptions, s.alpha)
    family = [stats[x.name] for x in schedules if x.family == "risk_adapted" and x.name in stats]
    matched = matched_to(family, stats[s.reference], alpha=s.alpha) \
        if len(family) >= 2 and s.reference in stats else None
    recurred = (onsets.onset <= np.minimum(onsets.follow_up_end, s.horizon_days))[usable]
    low = low_risk_recurrence(recurred, groups[usable], s.lowest_group, n_boot=int(s.bootstrap), seed=s.seed,
                              alpha=s.alpha)
    strata = _strata(clinical, usable, recurred, groups, s)
    trial, margins, power = _trial(stats, s, notes)
    result = SurveilResult(str(root), len(patients), int(usable.sum()), int(recurred.sum()), onsets.source,
                           s.risk_from, table, matched, trial, {}, notes)
    texts = {"onset": onset_text, "risk": risk_text, "groups": group_text}
    _write(result, out, long, strata, margins, power, stats, low, texts, s, model)
    if log_to_mlflow:
        result.run_id = _log_run(result, out, long, s, model, tracking_uri, experiment, params or {}, pseudonyms)
    return result


def _work_parent(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


def _schedule_notes(schedules: list[Schedule], c: SurveillanceCohort, clinical: pd.DataFrame) -> list[str]:
    notes = []
    for x in schedules:
        if isinstance(x, StageBasedSchedule):
            if c.stage is None:
                notes.append(f"{x.name}: {CLINICAL_FILE} has no {x.column!r} column: every patient gets the "
                             "default plan")
            else:
                unknown = int((~x.known(c.stage, c.n) & c.usable).sum())
                if unknown:
                    notes.append(f"{x.name}: {unknown} patients have a {x.column} the plan does not list (or none): "
                                 "they get the default plan")
        if isinstance(x, TableSchedule) and x.path is not None and x.per_patient():
            missing = int(sum(p not in x.per_patient() for p in c.patient_ids.astype(str)))
            if missing:
                notes.append(f"{x.name}: {missing} patients are not in {x.path}: they get its common days (or none)")
    return notes


def _strata(clinical: pd.DataFrame, usable: np.ndarray, recurred: np.ndarray, groups: np.ndarray,
            s: SurveillanceSettings) -> pd.DataFrame:
    """Recurrence within the horizon by stage, histology and the model's risk group (the audit's stratifiers)."""
    rows = []
    strat = {c: clinical[c].to_numpy(object) for c in s.stratifiers if c in clinical.columns}
    strat["model risk group"] = groups
    for name, values in strat.items():
        v = np.asarray(["(missing)" if pd.isna(x) or x == "" else str(x) for x in values], dtype=object)[usable]
        for level in sorted(set(v), key=lambda x: (x == "(missing)", RISK_GROUPS.index(x) if x in RISK_GROUPS
                                                   else 9, x)):
            r = low_risk_recurrence(recurred, v, level, n_boot=int(s.bootstrap), seed=s.seed, alpha=s.alpha)
            e, f = r["recurrence_share"], r["share_of_all_recurrences"]
            rows.append({"stratifier": name, "group": level, "n_patients": r["n_patients"],
                         "n_recurrences": r["n_recurrences"], "recurrence_share": e.value,
                         "recurrence_share_ci_low": e.low, "recurrence_share_ci_high": e.high,
                         "share_of_all_recurrences": f.value})
    return pd.DataFrame(rows)


def _paired_diff(a: ScheduleStats, b: ScheduleStats, metric: str, alpha: float) -> Estimate:
    """``a - b`` of a metric with the paired bootstrap CI (same resamples)."""
    d = a.boot[metric] - b.boot[metric]
    d = d[np.isfinite(d)]
    value = a.point[metric] - b.point[metric]
    if len(d) == 0:
        return Estimate(value, float("nan"), float("nan"), 0)
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, float(lo), float(hi), len(d))


def _trial(stats: Mapping[str, ScheduleStats], s: SurveillanceSettings, notes: list[str]
           ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    t = s.trial
    if t.experimental not in stats or t.standard not in stats:
        notes.append("no trial design: the experimental or standard schedule was not simulated")
        return {}, pd.DataFrame(), pd.DataFrame()
    e, st = stats[t.experimental], stats[t.standard]
    p_rec = e.n_recurrences / max(e.n_patients, 1)
    if p_rec == 0:
        notes.append("no trial design: no recurrence within the horizon")
        return {}, pd.DataFrame(), pd.DataFrame()
    exp, std = ArmModel(e.point["within_window"], p_rec), ArmModel(st.point["within_window"], p_rec)
    margins = sorted({*map(float, t.margins), float(t.margin)})
    mt = margin_table(exp, std, margins, alpha=t.alpha, power=t.power, n_sim=t.n_sim, seed=s.seed)
    rec = closed_form_recurrences(exp.p_window, std.p_window, t.margin, alpha=t.alpha, power=t.power)
    row = mt[mt["margin"] == float(t.margin)].iloc[0]
    n_cf = row["patients_per_arm_closed_form"]
    sizes = list(t.n_per_arm) if t.n_per_arm else sorted({int(x) for x in (n_cf / 2, n_cf, 2 * n_cf)
                                                          if math.isfinite(x) and x > 0})
    power = pd.DataFrame([{"margin": m, "patients_per_arm": n,
                           "power": simulated_power(exp, std, n, m, alpha=t.alpha, n_sim=t.n_sim, seed=s.seed)}
                          for n in sizes for m in margins])
    saved = _paired_diff(st, e, "scans_per_patient", s.alpha)
    draws = _paired_diff(e, st, "draws_per_patient", s.alpha)
    trial = {"experimental": t.experimental, "standard": t.standard, "margin": float(t.margin), "alpha": t.alpha,
             "power": t.power, "p_window_experimental": exp.p_window, "p_window_standard": std.p_window,
             "p_recurrence": p_rec,
             "recurrences_per_arm_closed_form": math.ceil(rec) if math.isfinite(rec) else None,
             "patients_per_arm_closed_form": int(n_cf) if math.isfinite(n_cf) else None,
             "patients_per_arm_simulated": (int(row["patients_per_arm_simulated"])
                                            if math.isfinite(row["patients_per_arm_simulated"]) else None),
             "scans_saved_per_patient": saved, "draws_added_per_patient": draws,
             "scans_saved_in_experimental_arm": (saved.value * n_cf) if math.isfinite(n_cf) else None}
    if not math.isfinite(rec):
        notes.append(f"trial: {t.experimental} finds {exp.p_window:.2f} of recurrences in the window against "
                     f"{std.p_window:.2f} for {t.standard}: worse by more than the margin {t.margin:g}, so no size "
                     "shows non-inferiority")
    return trial, mt, power


# ------------------------------------------------------------------------------------------------ outputs
def _estimate_json(v: Any) -> Any:
    """A bootstrap estimate in the summary's form (value, ci_low, ci_high, n_boot); anything else unchanged."""
    if isinstance(v, Estimate):
        return {"value": v.value, "ci_low": v.low, "ci_high": v.high, "n_boot": v.n_boot}
    return v


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _png(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig))
    return path


def _write(r: SurveilResult, out: Path, long: pd.DataFrame, strata: pd.DataFrame, margins: pd.DataFrame,
           power: pd.DataFrame, stats: Mapping[str, ScheduleStats], low: dict[str, Any], texts: Mapping[str, str],
           s: SurveillanceSettings, model: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    p = r.paths
    p["schedules"] = _csv(r.schedules, out / "schedules.csv")
    p["patients"] = _csv(long, out / "patients.csv")
    p["strata"] = _csv(strata, out / "strata.csv")
    if not margins.empty:
        p["trial"] = _csv(margins, out / "trial.csv")
        p["power"] = _csv(power, out / "power.csv")
    tradeoff = plot_tradeoff(stats)
    p["tradeoff"] = _png(tradeoff, out / "tradeoff.png")
    power_fig = plot_power(power) if not power.empty else None
    if power_fig is not None:
        p["power_plot"] = _png(power_fig, out / "power.png")
    summary = {"cohort": r.cohort, "model": model, "n_patients": r.n_patients, "n_simulated": r.n_usable,
               "n_recurrences": r.n_recurrences, "onset_source": r.onset_source, "risk_from": r.risk_from,
               "onsets": texts["onset"], "predicted_curves": texts["risk"], "risk_groups": texts["groups"],
               "schedules": json.loads(r.schedules.to_json(orient="records")),
               "matched": None if r.matched is None else r.matched.as_dict(), "lowest_risk_group": low,
               "trial": r.trial, "settings": s.as_dict(), "notes": r.notes,
               "files": {k: str(v) for k, v in p.items()}}
    p["summary"] = out / "summary.json"
    summary_json = plain(summary, finite=True, custom=_estimate_json)
    atomic_write_text(p["summary"], json.dumps(summary_json, indent=1, default=str))
    p["report"] = out / "report.html"
    atomic_write_text(p["report"], _report(r, strata, margins, stats, low, texts, s, model, tradeoff, power_fig))


def _report(r: SurveilResult, strata: pd.DataFrame, margins: pd.DataFrame, stats: Mapping[str, ScheduleStats],
            low: dict[str, Any], texts: Mapping[str, str], s: SurveillanceSettings, model: str | None,
            tradeoff: Any, power_fig: Any) -> str:
    t = r.schedules
    show = pd.DataFrame({"schedule": t["schedule"], "what": t["description"]})
    for m, label, d in (("scans_per_patient", "CT scans / patient", 2), ("draws_per_patient", "ctDNA draws / patient",
                                                                           1),
                        ("median_delay_days", "median delay (days)", 0), ("mean_delay_days", "mean delay (days)", 0),
                        ("within_window", f"found ≤ {s.window_days:g} days", 2),
                        ("interval_share", "interval recurrences", 2)):
        show[label] = [_ci(v, lo, hi, d) for v, lo, hi in zip(t[m], t[f"{m}_ci_low"], t[f"{m}_ci_high"], strict=True)]
    blocks = [Block("How to read this report", (
        f"Each schedule was simulated on the same {r.n_usable} patients ({r.n_recurrences} recurrences within "
        f"{s.horizon_days:g} days). A CT finds a recurrence at the first scan on or after its radiological onset; "
        f"between scans a recurrence becomes symptomatic after a delay ({s.symptoms.describe()}) and is then an "
        "interval recurrence. The delay is days from onset to detection. 'Found in the window' is the share of "
        f"recurrences found within {s.window_days:g} days of their onset, the proxy for still being eligible for "
        "curative-intent treatment. Intervals are 95% percentile bootstrap CIs over patients (the same resamples for "
        f"every schedule, {s.bootstrap} of them).\n\nOnsets: {texts['onset']}\n\nPredicted curves (risk-adapted "
        f"schedules): {texts['risk']}.")),
        Block("Schedules", "Every schedule, its cost and what it finds.", table=show),
        Block("Trade-off: scans against delay", "", figure=tradeoff,
              caption="Risk-adapted schedules (one per threshold, labelled) as a curve with its 95% CI band; the "
                      "other schedules as points with 95% CIs.")]
    if r.matched is not None:
        m = r.matched
        blocks.append(Block(f"Risk-adapted at the cost of {m.reference}", (
            f"Read off the risk-adapted curve at {m.reference}'s {m.scans:.2f} scans per patient: median delay "
            f"{_est(m.delay, 0)} days against {_est(m.reference_delay, 0)} (difference {_est(m.difference, 0)}; "
            f"negative = found sooner). At {m.reference}'s median delay the risk-adapted schedules need "
            f"{_est(m.scans_saved_at_equal_delay, 2)} fewer scans per patient. CIs: the curve re-read in every "
            "bootstrap resample.")))
    lo = low
    blocks.append(Block("Who needs no follow-up?", (
        f"Of the {lo['n_patients']} patients in the lowest risk group ('{lo['group']}': {texts['groups']}), "
        f"{_est(lo['recurrence_share'], 3)} recur within the horizon; they account for "
        f"{_est(lo['share_of_all_recurrences'], 3)} of all recurrences.")))
    if not strata.empty:
        st = strata.assign(**{"recurrence share (95% CI)": [
            _ci(v, a, b, 3) for v, a, b in zip(strata["recurrence_share"], strata["recurrence_share_ci_low"],
                                               strata["recurrence_share_ci_high"], strict=True)]})
        blocks.append(Block("Stage, histology and model risk group", (
            "Recurrence within the horizon by pathological stage and histology (what a national audit stratifies "
            "by first) beside the model's risk groups: a stratifier whose lowest group rarely recurs is one that "
            "could de-escalate follow-up."),
            table=st[["stratifier", "group", "n_patients", "n_recurrences", "recurrence share (95% CI)",
                      "share_of_all_recurrences"]], digits={"share_of_all_recurrences": 3}))
    if r.trial:
        tr = r.trial
        blocks.append(Block("Trial design: ctDNA-guided vs standard follow-up", (
            f"Non-inferiority of {tr['experimental']} against {tr['standard']} on the share of recurrences found "
            f"within {s.window_days:g} days (simulated: {tr['p_window_experimental']:.3f} vs "
            f"{tr['p_window_standard']:.3f}; {tr['p_recurrence']:.3f} of patients recur within the horizon), "
            f"one-sided alpha {tr['alpha']:g}, power {tr['power']:g}. Closed form (Blackwelder; normal "
            "approximation): recurrences per arm = (z_(1-alpha) + z_(1-beta))^2 (p_e q_e + p_s q_s) / (p_e - p_s + "
            "margin)^2, divided by the recurrence probability for randomised patients; 'simulated' draws whole "
            f"trials of patients from the simulated outcomes ({s.trial.n_sim} per size). At margin "
            f"{tr['margin']:g}: {tr['patients_per_arm_closed_form']} patients per arm (closed form), "
            f"{tr['patients_per_arm_simulated']} (simulated). The ctDNA arm saves "
            f"{_est(tr['scans_saved_per_patient'], 2)} CT scans per patient and adds "
            f"{_est(tr['draws_added_per_patient'], 1)} draws."), table=margins,
            digits={"margin": 2}))
    if power_fig is not None:
        blocks.append(Block("Power over the margin", "", figure=power_fig,
                            caption="Share of simulated trials that show non-inferiority, by margin and size."))
    if r.notes:
        blocks.append(Block("Notes", "\n\n".join(r.notes)))
    meta = {"cohort": r.cohort, "model": model or "–", "predicted curves": r.risk_from, "onsets": r.onset_source,
            "patients": f"{r.n_usable} simulated of {r.n_patients}", "horizon (days)": f"{s.horizon_days:g}",
            "window (days)": f"{s.window_days:g}", "bootstrap": f"{s.bootstrap} resamples, seed {s.seed}"}
    return render_report("Risk-adapted follow-up: simulated surveillance schedules", blocks, meta)


def _log_run(r: SurveilResult, out: Path, long: pd.DataFrame, s: SurveillanceSettings, model: str | None,
             uri: str | None, experiment: str, params: Mapping[str, Any], pseudonyms: Any) -> str:
    """The MLflow run of ``evaluate.py mode=surveillance``: params, one metric per schedule and outcome, the files
    (the per-patient table with keyed pseudonyms when a pseudonymiser is given, else not at all)."""
    # lazy: mlflow loads only to log
    from omics_risk.evaluation.mlflow_log import log_outputs
    from omics_risk.tracking import mlflow_utils as mu  # lazy: as above

    metrics: dict[str, float] = {}
    for row in r.schedules.to_dict(orient="records"):
        for m in METRICS:
            metrics[f"{row['schedule']}.{m}"] = row[m]
    if r.matched is not None:
        metrics["matched.difference_days"] = r.matched.difference.value
        metrics["matched.scans_saved_per_patient"] = r.matched.scans_saved_at_equal_delay.value
    if r.trial.get("patients_per_arm_closed_form") is not None:
        metrics["trial.patients_per_arm_closed_form"] = float(r.trial["patients_per_arm_closed_form"])
        metrics["trial.scans_saved_per_patient"] = r.trial["scans_saved_per_patient"].value
    tags = {mu.LEVEL_TAG: "surveillance", "cohort": r.cohort, "risk_from": r.risk_from, "onsets": r.onset_source}
    if model:
        tags["model_uri"] = model
    with mu.start_run_tree(experiment, uri=uri, run_name=f"surveil-{Path(r.cohort).name}", parent_run_id=None,
                           tags=tags, patient_ids=list(long["patient_id"].unique())) as run:
        mu.safe_log_params({"n_patients": r.n_patients, "n_simulated": r.n_usable, **params})
        files = {k: v for k, v in r.paths.items() if k != "patients"}  # the local table has the raw ids
        log_outputs(files, metrics={k: float(v) for k, v in metrics.items() if v is not None})
        if pseudonyms is not None:
            mu.log_patient_table(long, "patients.csv", pseudonyms=pseudonyms)
        return run.info.run_id

"""``omics-risk monitor``: serial ctDNA draws of a cohort -> per-draw states, per-patient alerts, the LUCAGEN table.

Steps: compose the settings and the rule from Hydra (``configs/monitor/default.yaml`` + ``monitor/rule/NAME``,
``--set key=value`` overrides), read every listed draw (:func:`~omics_risk.monitoring.inputs.serial_draws`),
compute states and alerts (:func:`~omics_risk.monitoring.states.draw_states`), the per-patient table, the LUCAGEN
table, molecular response vs PFS, ctDNA vs RECIST and the rule's grid out of fold, then write

- ``samples.csv``: one row per listed draw (unusable ones with their reason);
- ``patients.csv``: one row per patient of clinical.csv (status and reason for those without a usable draw);
- ``summary.json`` and ``report.html`` (tables, swimmer plot, KM plot, lead-time distribution, trajectories,
  operating-characteristic curve);

into a fresh folder that replaces ``OUT`` only once everything is written (a failed run leaves ``OUT`` as it was).
With ``--model`` (the landmark model of a dynamic ``train.py`` run) every draw also gets the model's dynamic risk
(:mod:`omics_risk.workflows.monitor_model`) and its alert at the ``model_risk`` threshold.
With a tracking URI the summary metrics, rule settings, report and figures go to MLflow (no patient table).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from omics_risk.atomic import atomic_path
from omics_risk.data.contract import load_cohort
from omics_risk.evaluation.plot_style import figure_png
from omics_risk.models.saved import plain
from omics_risk.monitoring.grid import GridResult, rule_grid
from omics_risk.monitoring.inputs import outcomes_of, read_risk, serial_draws, survival_endpoint
from omics_risk.monitoring.lucagen import LucagenTable, lucagen_table
from omics_risk.monitoring.plots import (
    plot_grid_curve,
    plot_lead_times,
    plot_swimmer,
    plot_trajectories,
    swimmer_order,
)
from omics_risk.monitoring.response import ResponseKM, best_overall_response, ctdna_by_recist, response_km
from omics_risk.monitoring.rules import ModelRiskRule, Rule, rule_from_config
from omics_risk.monitoring.states import draw_states, patient_table
from omics_risk.progress import progress_bar
from omics_risk.workflows.monitor_model import DynamicRisk, dynamic_risks, load_landmark_model

__all__ = ["MonitorResult", "compose_monitor_config", "find_config_dir", "monitor_cohort"]

OUTPUT_FILES = ("samples.csv", "patients.csv", "summary.json", "report.html")
_MARKER = "omics-risk monitor"


def find_config_dir(config_dir: str | Path | None = None) -> Path:
    """The configs folder holding ``monitor/default.yaml``: ``config_dir``, ``$OMICS_RISK_CONFIG_DIR``, the
    project's ``configs/`` (source checkout) or ``./configs``."""
    here = Path(__file__).resolve().parents[3] / "configs"
    candidates = [config_dir, os.environ.get("OMICS_RISK_CONFIG_DIR"), here, Path.cwd() / "configs"]
    for c in candidates:
        if c and (Path(c) / "monitor" / "default.yaml").is_file():
            return Path(c).resolve()
    raise FileNotFoundError("cannot find configs/monitor/default.yaml; run from the omics-risk project folder, or "
                            "pass --config-dir DIR / set OMICS_RISK_CONFIG_DIR to the folder holding monitor/")


def compose_monitor_config(rule: str | None = None, overrides: Sequence[str] = (),
                           config_dir: str | Path | None = None) -> DictConfig:
    """The composed settings: ``monitor/default.yaml`` with ``rule=NAME`` and ``key=value`` overrides."""
    root = find_config_dir(config_dir) / "monitor"
    names = sorted(p.stem for p in (root / "rule").glob("*.yaml"))
    if rule is not None and rule not in names:
        raise ValueError(f"unknown rule '{rule}'; choose one of {', '.join(names)} (files in {root / 'rule'})")
    ov = ([f"rule={rule}"] if rule else []) + [str(o) for o in overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            try:
                return compose(config_name="default", overrides=ov)
            except Exception as exc:  # hydra's override grammar / unknown key: one line naming the override
                raise ValueError(f"cannot apply --set {' '.join(ov)}: {str(exc).splitlines()[0]}") from exc
    finally:
        GlobalHydra.instance().clear()


@dataclass
class MonitorResult:
    out: Path
    rule: Rule
    patients: pd.DataFrame
    draws: pd.DataFrame
    table: LucagenTable
    grid: GridResult | None
    km: ResponseKM | None
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        st = self.patients["status"].value_counts()
        lines = [f"monitored {len(self.patients)} patients ({', '.join(f'{k}: {v}' for k, v in st.items())}) "
                 f"with rule {self.rule.name}: {self.rule.describe()}"]
        lines += [f"  {q}: {v}" for q, v in zip(self.table.frame()["quantity"],
                                                 self.table.frame()["this cohort (95% CI)"], strict=True)]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"wrote {', '.join(OUTPUT_FILES)} to {self.out}")
        return "\n".join(lines)


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not a previous monitor output (never remove someone's files)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        summary = out / "summary.json"
        try:
            ours = json.loads(summary.read_text(encoding="utf-8")).get("generator") == _MARKER
        except (OSError, ValueError):
            ours = False
        extra = sorted(p.name for p in out.iterdir() if p.name not in (*OUTPUT_FILES, "figures"))
        if not ours or extra:
            raise FileExistsError(f"--out {out} is not empty and does not hold a previous monitor output; choose a "
                                  "new folder")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out`` (an old output is removed only after the new one is in place)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6g")


def monitor_cohort(cohort_dir: str | Path, out: str | Path, *, rule: str | None = None,
                   overrides: Sequence[str] = (), level: str | None = None, as_of_day: float | None = None,
                   config_dir: str | Path | None = None, tracking_uri: str | None = None,
                   experiment: str = "monitoring", grid: bool = True, report: bool = True,
                   risk: str | Path | None = None, model: str | Path | None = None,
                   features_dir: str | Path | None = None, progress: bool = True) -> MonitorResult:
    """Monitor a cohort's serial draws and write the outputs (see the module docstring). ``model``: the landmark
    model (folder or MLflow URI) scored at every draw, from the cohort's feature store (``features_dir``, default
    ``COHORT/features``)."""
    if risk is not None and model is not None:
        raise ValueError("--model and --risk are mutually exclusive: --model computes the dynamic risk at each draw, "
                         "--risk reads risks computed elsewhere; pass one of them")
    out = Path(out)
    _check_out(out)
    cfg = compose_monitor_config(rule, overrides, config_dir)
    rule_cfg = OmegaConf.to_container(cfg.rule, resolve=True)
    if level is not None:
        rule_cfg["level"] = level
    the_rule = rule_from_config(rule_cfg)
    landmark_model = load_landmark_model(model, tracking_uri) if model is not None else None
    cohort = load_cohort(cohort_dir)
    steps = progress_bar(total=5 if grid and the_rule.grid else 4, desc="monitor", unit="step", disable=not progress)
    try:
        serial = serial_draws(cohort, modality=str(cfg.modality), level=the_rule.level,
                              detection=the_rule.detection())
        steps.update()
        endpoint = survival_endpoint(cohort, cfg.endpoint)
        outcomes = outcomes_of(cohort, endpoint)
        model_risk = read_risk(risk, serial.summaries) if risk is not None else None
        dynamic = None
        if landmark_model is not None:
            listed = serial.draws if as_of_day is None else serial.draws[serial.draws["day"] <= as_of_day]
            mcfg = cfg.get("model") or {}
            dynamic = dynamic_risks(landmark_model, cohort, listed, features_dir=features_dir,
                                    grid_days=mcfg.get("grid_days"), max_days=int(mcfg.get("max_days", 200)),
                                    progress=progress)
            if isinstance(the_rule, ModelRiskRule):  # the rule alerts on the model's risk
                model_risk = dynamic.table["dynamic_risk"].reindex(serial.summaries.index)
        if isinstance(the_rule, ModelRiskRule) and model_risk is None:
            raise ValueError(f"rule {the_rule.name} alerts on a model's dynamic risk: pass --risk FILE "
                             "(sample_id,risk or patient_id,day,risk) or --model URI (a dynamic run's landmark model)")
        status = serial.patients
        if as_of_day is not None:  # the cut also ends what is known of the outcome: censored at the cut
            late = outcomes["time"] > as_of_day
            outcomes = outcomes.assign(event=outcomes["event"].mask(late, 0.0),
                                       time=outcomes["time"].mask(late, float(as_of_day)))
            before = serial.draws[serial.draws["usable"] & (serial.draws["day"] <= as_of_day)]
            none = (status["status"] == "ok") & ~status.index.isin(before["patient_id"])
            status = status.assign(status=status["status"].mask(none, "no_usable_draws"),
                                   reason=status["reason"].mask(none, f"no usable draw on or before day {as_of_day:g} "
                                                                      "(--as-of)"))
        draws = draw_states(serial.summaries, the_rule, as_of_day=as_of_day, risk=model_risk)
        patients = patient_table(draws, outcomes, status)
        threshold = 0.0
        if dynamic is not None:
            threshold = _model_threshold(the_rule, cfg, config_dir)
            patients = _with_model_alert(patients, serial.draws, dynamic, threshold, the_rule.baseline_max_day)
        steps.update()
        n_boot, seed = int(cfg.bootstrap), int(cfg.seed)
        table = lucagen_table(patients, draws, window_days=float(cfg.window_days), n_boot=n_boot, seed=seed)
        km = response_km(patients, float(cfg.response_landmark_day))
        bor = best_overall_response(cohort)
        recist = ctdna_by_recist(patients, draws, bor) if bor is not None else None
        steps.update()
        grid_result = None
        if grid and the_rule.grid:
            grid_result = rule_grid(serial.summaries, the_rule, outcomes, status, as_of_day=as_of_day,
                                    risk=model_risk,
                                    folds=int(cfg.grid.folds), max_false_alerts=float(cfg.grid.max_false_alerts),
                                    n_boot=n_boot, seed=seed)
            steps.update()
        notes = list(serial.notes) + (dynamic.notes if dynamic is not None else [])
        if not (patients["n_usable_draws"] > 0).any():
            first = patients.loc[patients["status"] == "no_usable_draws", "reason"]
            notes.insert(0, "no patient has a usable draw" + (f" (e.g. {first.iloc[0]})" if len(first) else "")
                         + "; see the reasons in patients.csv")
        if endpoint is None:
            notes.append("the cohort has no survival endpoint: lead times, cycles after molecular progression and "
                         "false alerts are not computed")
        censored = int(((patients["endpoint_event"] == 0) & (patients["n_usable_draws"] > 0)).sum())
        notes.append(f"{censored} patient(s) without progression are censored at their last draw (monitoring "
                     "follow-up ends there; false alerts are counted over it)")
        samples = _samples_table(serial.draws, draws, as_of_day, with_risk=risk is not None)
        if dynamic is not None:
            samples = _with_dynamic_risk(samples, dynamic, threshold, as_of_day)
        summary = _summary(cohort_dir, the_rule, cfg, endpoint.name if endpoint else None, as_of_day, risk, patients,
                           table, km, recist, grid_result, notes, serial.unlisted_rows)
        if dynamic is not None:
            summary["model"] = _model_summary(model, landmark_model, dynamic, threshold)
        figures = _figures(patients, draws, the_rule, grid_result, km, cfg) if report else {}
        out.parent.mkdir(parents=True, exist_ok=True)  # the new folder is built beside OUT: os.replace stays local
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            _csv(samples, tmp / "samples.csv")
            _csv(patients.reset_index(), tmp / "patients.csv")
            text = json.dumps(plain(summary, finite=True), indent=2) + "\n"
            (tmp / "summary.json").write_text(text, encoding="utf-8")
            if report:
                # lazy: the report module pulls jinja2; a --no-report run does not need it
                from omics_risk.workflows.monitor_report import write_monitor_report

                write_monitor_report(tmp / "report.html", summary=summary, table=table, km=km, recist=recist,
                                     grid=grid_result, figures=figures, rule=the_rule, notes=notes,
                                     swimmer_shown=min(int(cfg.plots.swimmer_patients), table.n_patients))
            _replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        steps.update()
    finally:
        steps.close()
    result = MonitorResult(out, the_rule, patients, draws, table, grid_result, km, summary, notes)
    if tracking_uri:
        _log_mlflow(result, figures, tracking_uri, experiment)
    return result


def _model_threshold(rule: Rule, cfg: DictConfig, config_dir: str | Path | None) -> float:
    """The dynamic risk at which ``model_alert`` fires: the model_risk rule's threshold (``--set
    rule.threshold=...``) when that is the rule, else ``model.threshold``, else the model_risk rule file's."""
    if isinstance(rule, ModelRiskRule):
        return float(rule.threshold)
    given = (cfg.get("model") or {}).get("threshold")
    if given is not None:
        return float(given)
    return float(compose_monitor_config("model_risk", (), config_dir).rule.threshold)


def _with_dynamic_risk(samples: pd.DataFrame, dynamic: DynamicRisk, threshold: float,
                       as_of_day: float | None) -> pd.DataFrame:
    """samples.csv with ``model_day``, ``dynamic_risk``, ``model_alert`` (the risk at the draw >= threshold) and
    ``model_reason`` (why a draw has no risk, or that it is extrapolated) on every row."""
    t = dynamic.table.reindex(samples["sample_id"])
    # a draw not handed to the model was drawn after --as-of
    reason = t["model_reason"].fillna(f"drawn after day {as_of_day} (--as-of): not scored").to_numpy()
    risk = t["dynamic_risk"].to_numpy(float)
    alert = np.where(np.isfinite(risk), (np.nan_to_num(risk, nan=-np.inf) >= threshold).astype(float), np.nan)
    return samples.assign(model_day=t["model_day"].to_numpy(float), dynamic_risk=risk, model_alert=alert,
                          model_reason=reason)


def _with_model_alert(patients: pd.DataFrame, listed: pd.DataFrame, dynamic: DynamicRisk, threshold: float,
                      baseline_max_day: float) -> pd.DataFrame:
    """patients.csv with ``model_alert_day``: the first on-treatment draw (after ``baseline_max_day``, as the rules
    alert) at which the dynamic risk reached the threshold, and ``n_model_scored``, the draws the model scored (NaN
    / 0 for a patient without)."""
    t = listed[["patient_id", "sample_id", "day"]].join(dynamic.table["dynamic_risk"], on="sample_id")
    t["patient_id"] = t["patient_id"].astype(str)
    hit = t[(t["dynamic_risk"].to_numpy(float) >= threshold) & (t["day"].to_numpy(float) > baseline_max_day)]
    first = hit.groupby("patient_id")["day"].min()
    scored = t[t["dynamic_risk"].notna()].groupby("patient_id").size()
    return patients.assign(model_alert_day=first.reindex(patients.index).to_numpy(float),
                           n_model_scored=scored.reindex(patients.index).fillna(0).astype(int).to_numpy())


def _model_summary(uri: str | Path | None, model: Any, dynamic: DynamicRisk, threshold: float) -> dict[str, Any]:
    """summary.json's ``model``: where it came from, what it predicts and how the draws were scored."""
    t = dynamic.table
    meta = dict(getattr(model, "metadata_", {}) or {})
    return {"uri": str(uri), "threshold": threshold, "grid_days": dynamic.grid_days,
            "horizon_window": float(model.horizon_window_), "training_landmarks": list(model.landmark_range_),
            "metadata": meta, "draws_scored": int(t["dynamic_risk"].notna().sum()),
            "draws_not_scored": int(t["dynamic_risk"].isna().sum()),
            "landmark_days_scored": int(t.loc[t["dynamic_risk"].notna(), "model_day"].nunique())}


def _samples_table(listed: pd.DataFrame, draws: pd.DataFrame, as_of_day: float | None, *,
                   with_risk: bool = True) -> pd.DataFrame:
    """Every listed draw: usable ones with their state and alert, the others (unusable, or after ``--as-of``) with
    their reason."""
    cols = ["patient_id", "sample_id", "day", "level", "positive", "ratio_to_baseline", "fold_over_nadir", "state",
            "rule_fired", "alert"] + (["risk"] if with_risk and "risk" in draws.columns else [])
    d = draws[cols]
    keep = ["patient_id", "sample_id", "day", "state", "reason"]
    unusable = listed[~listed["usable"]].assign(state="unusable")[keep]
    later = listed[listed["usable"] & ~listed["sample_id"].isin(set(draws["sample_id"]))]
    later = later.assign(state="after as-of", reason=f"drawn after day {as_of_day} (--as-of): not read")[keep]
    out = pd.concat([d.assign(reason=""), unusable, later], ignore_index=True)
    return out.sort_values(["patient_id", "day", "sample_id"], kind="stable").reset_index(drop=True)


def _summary(cohort_dir: str | Path, rule: Rule, cfg: DictConfig, endpoint: str | None, as_of_day: float | None,
             risk: str | Path | None, patients: pd.DataFrame, table: LucagenTable, km: ResponseKM | None,
             recist: pd.DataFrame | None, grid: GridResult | None, notes: list[str], unlisted: int) -> dict[str, Any]:
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("rule", None)
    return {
        "generator": _MARKER,
        "cohort": str(Path(cohort_dir).resolve()),
        "rule": {**rule.params(), "kind": type(rule).__name__, "description": rule.describe(),
                 "grid": {k: list(v) for k, v in rule.grid.items()}},
        "settings": settings,
        "endpoint": endpoint,
        "as_of_day": as_of_day,
        "risk_file": str(Path(risk).resolve()) if risk is not None else None,
        "patients": {"total": len(patients), **patients["status"].value_counts().to_dict()},
        "draws": {"usable": int(patients["n_usable_draws"].sum()), "listed": int(patients["n_draws"].sum()),
                  "variant_rows_of_unlisted_draws": unlisted},
        "lucagen": table.to_dict(),
        "molecular_response_vs_pfs": km.to_dict() if km is not None else None,
        "ctdna_vs_recist": recist.to_dict(orient="records") if recist is not None else None,
        "grid": grid.to_dict() if grid is not None else None,
        "censoring": "patients without progression are censored at their last draw (as in monitoring studies)",
        "notes": notes,
    }


def _figures(patients: pd.DataFrame, draws: pd.DataFrame, rule: Rule, grid: GridResult | None,
             km: ResponseKM | None, cfg: DictConfig) -> dict[str, Any]:
    # lazy: the KM plot pulls lifelines' plotting helpers
    from omics_risk.evaluation.plots import plot_km_by_group

    figs: dict[str, Any] = {}
    order = swimmer_order(patients, int(cfg.plots.swimmer_patients))
    figs["swimmer"] = plot_swimmer(patients, draws, order)
    figs["lead_times"] = plot_lead_times(patients)
    p = patients[patients["n_usable_draws"] > 1]
    prog, alert = p["endpoint_event"] == 1, p["alert_day"].notna()
    rank = pd.DataFrame({"r": np.select([prog & alert, prog, alert], [0, 1, 2], 3), "n": -p["n_usable_draws"]},
                        index=p.index).sort_values(["r", "n"], kind="stable")
    pick = rank.index[: int(cfg.plots.trajectory_patients)]  # informative first: progressors with an alert
    figs["trajectories"] = plot_trajectories(draws, patients, pick, rule.lod_vaf)
    if km is not None:
        figs["km_molecular_response"] = plot_km_by_group(
            km.table["time"].to_numpy(float), km.table["event"].to_numpy(float), km.table["group"].to_numpy(),
            order=["responder", "non-responder"], endpoint="pfs", time_unit="months",
            title=f"PFS from day {km.landmark_day:g} by molecular response by then")
        figs["km_molecular_response"].axes[0].set_xlabel(f"Months since day {km.landmark_day:g} (the landmark)")
    if grid is not None and len(grid.curve):
        figs["operating_characteristics"] = plot_grid_curve(grid.curve, list(rule.grid), rule.params())
    return figs


def _log_mlflow(result: MonitorResult, figures: Mapping[str, Any], uri: str, experiment: str) -> None:
    """Rule settings as params, the LUCAGEN numbers as metrics, summary.json, report.html and figures as artifacts
    (no patient table: they name patients)."""
    # lazy: mlflow is only needed when tracking is on
    import mlflow

    from omics_risk.tracking.mlflow_utils import (  # lazy: imports mlflow, as above
        safe_log_metrics,
        safe_log_params,
        setup_experiment,
    )

    setup_experiment(experiment, uri)
    with mlflow.start_run(run_name=f"monitor-{result.rule.name}"):
        mlflow.set_tag("omics_risk.kind", "monitor")
        safe_log_params({f"rule.{k}": v for k, v in result.rule.params().items()})
        metrics = {f"monitor/{k}": v for k, v in result.table.to_dict().items()
                   if isinstance(v, int | float) and np.isfinite(v)}
        if result.km is not None:
            metrics.update({f"monitor/km_{k}": v for k, v in result.km.to_dict().items()
                            if isinstance(v, float) and np.isfinite(v)})
        safe_log_metrics(metrics)
        mlflow.log_artifact(str(result.out / "summary.json"))
        if (result.out / "report.html").is_file():
            mlflow.log_artifact(str(result.out / "report.html"))
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in figures.items():
                (Path(tmp) / f"{name}.png").write_bytes(figure_png(fig))
            if figures:
                mlflow.log_artifacts(tmp, "figures")

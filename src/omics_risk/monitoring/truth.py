"""How a monitoring run compares with a synthetic cohort's truth (``truth/patients.csv``), at the draws taken.

The generator knows each patient's true onset of molecular progression (or relapse), ``molecular_onset_day``:
the first day the tumour fraction is detectable and at least twice its running nadir. A perfect rule on the draws
actually taken would alert at the **first draw on or after that onset**; the truth's share of progressions
preceded by an alert, and its lead time to the observed (radiological) progression day, are computed from that
draw exactly as :mod:`~omics_risk.monitoring.lucagen` computes the rule's, on the same patients and the same
bootstrap resamples. With a draw every day the sampling delay vanishes and the truth's lead time is the true
onset lead time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from omics_risk.data.synthetic import SynthOptions, plan_cohort
from omics_risk.evaluation.bootstrap import Estimate, bootstrap_indices
from omics_risk.features.ctdna import sample_summaries
from omics_risk.monitoring.lucagen import median_estimate, ratio_estimate
from omics_risk.monitoring.rules import RiseRule
from omics_risk.monitoring.states import draw_states, patient_table

__all__ = ["compare_with_truth", "monitor_plan", "read_truth", "truth_at_draws"]


def read_truth(cohort_dir: str | Path) -> pd.DataFrame:
    """truth/patients.csv of a synthetic cohort (index patient_id); a clear error for a cohort without one."""
    path = Path(cohort_dir) / "truth" / "patients.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the truth comparison needs a synthetic cohort "
                                "(omics-risk synth)")
    truth = pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id")
    if "molecular_onset_day" not in truth.columns:
        raise ValueError(f"{path} has no molecular_onset_day column (a cohort from an older generator)")
    return truth


def truth_at_draws(truth: pd.DataFrame, draws: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Per patient of ``patients``: the first draw on or after the true onset, whether it precedes the progression
    day (``preceded``, NaN for non-progressors) and its lead time (``lead_time_days``)."""
    onset = truth["molecular_onset_day"].reindex(draws["patient_id"]).to_numpy(float)
    day = draws["day"].to_numpy(float)
    after = day >= onset  # NaN onset: never
    first = pd.Series(np.where(after, day, np.nan)).groupby(draws["patient_id"].to_numpy()).min()
    out = pd.DataFrame(index=patients.index)
    out["onset_day"] = truth["molecular_onset_day"].reindex(out.index)
    out["alert_day"] = first.reindex(out.index)
    prog = patients["endpoint_event"] == 1
    has = patients["n_usable_draws"] > 0
    pre = prog & (out["alert_day"] <= patients["progression_day"])
    out["preceded"] = np.where(prog & has, pre, np.nan)
    out["lead_time_days"] = (patients["progression_day"] - out["alert_day"]).where(pre)
    return out


def _est(e: Estimate) -> dict[str, float]:
    return {"value": e.value, "ci_low": e.low, "ci_high": e.high}


def compare_with_truth(patients: pd.DataFrame, draws: pd.DataFrame, truth: pd.DataFrame, *, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, dict[str, float | bool]]:
    """The rule's and the truth's share of progressions preceded by an alert and median lead time, each with its
    bootstrap CI (same resamples), and whether each truth value lies inside the rule's CI (``agrees``)."""
    p = patients[patients["n_usable_draws"] > 0]
    tr = truth_at_draws(truth, draws, p)
    idx = bootstrap_indices(len(p), n_boot, seed)
    prog = (p["endpoint_event"] == 1).to_numpy(float)
    out: dict[str, dict[str, float | bool]] = {}
    rule_share = ratio_estimate((p["alert_before_progression"] == 1).to_numpy(float) * prog, prog, idx)
    true_share = ratio_estimate((tr["preceded"] == 1).to_numpy(float) * prog, prog, idx)
    rule_lead = median_estimate(p["lead_time_days"].to_numpy(float), idx)
    true_lead = median_estimate(tr["lead_time_days"].to_numpy(float), idx)
    for name, r, t in (("preceded_share", rule_share, true_share), ("median_lead_days", rule_lead, true_lead)):
        out[name] = {**{f"rule_{k}": v for k, v in _est(r).items()}, **{f"truth_{k}": v for k, v in _est(t).items()},
                     "agrees": bool(r.low <= t.value <= r.high)}
    onset_lead = (p["progression_day"] - tr["onset_day"]).where(tr["preceded"] == 1)
    out["median_onset_lead_days"] = {"truth_value": float(np.nanmedian(onset_lead)) if onset_lead.notna().any()
                                     else float("nan")}
    out["n"] = {"patients": float(len(p)), "progressions": float(prog.sum())}
    return out


def monitor_plan(kind: str, n: int, seed: int, rule: RiseRule,
                 **opts: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Monitor a synthetic cohort's plan in memory (no files written; ``opts``: SynthOptions such as
    ``draw_every``): its per-draw states, per-patient table (every patient, ``no_draws`` for those without a draw)
    and truth, for the truth comparison at sizes where writing the cohort would dominate (tests, bench/)."""
    plan = plan_cohort(kind, n, seed, SynthOptions(**opts))
    summ = sample_summaries(plan.tables["ctdna/variants.csv"], rule.detection())
    ep = plan.endpoints[plan.main_endpoint]
    clin = plan.clinical.set_index("patient_id")
    outcomes = pd.DataFrame({"time": clin[ep["time"]].astype(float), "event": clin[ep["event"]].astype(float)})
    n_draws = summ.groupby("patient_id").size().reindex(clin.index).fillna(0).astype(int)
    status = pd.DataFrame({"status": np.where(n_draws > 0, "ok", "no_draws"), "reason": "", "n_draws": n_draws},
                          index=clin.index)
    draws = draw_states(summ, rule)
    return patient_table(draws, outcomes, status), draws, plan.truth_patients.set_index("patient_id")

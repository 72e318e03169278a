"""The LUCAGEN table: what serial ctDNA monitoring did for a cohort, each number with a bootstrap CI over patients.

Rows (from :func:`~omics_risk.monitoring.states.patient_table` and the per-draw table, patients with a usable draw):

- **detectable ctDNA**: patients with at least one positive draw;
- **progressions preceded by an alert**: progressions (endpoint events) whose alert fired on or before the
  progression day;
- **median lead time** (days from the alert to the progression, among those preceded);
- **cycles after molecular progression**: on-treatment draws from the alert day to before the progression day,
  over all on-treatment draws before it, in progressing patients with a preceding alert;
- **false alerts per patient-year** among non-progressors: alerts over follow-up years (to the last draw);
- **per-visit sensitivity**: draws followed by a progression within ``window_days`` at which the alert is on;
  **per-visit specificity**: draws with no progression within ``window_days`` (and follow-up covering the
  window) at which it is off.

Every CI resamples patients (:func:`~omics_risk.evaluation.bootstrap.bootstrap_indices`, the project's one source
of resamples); ratios are ratios of sums over the resampled patients, so a patient weighs by its draws.
LUCAGEN's published values are given beside ours (:data:`PUBLISHED`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate, bootstrap_indices

__all__ = ["PUBLISHED", "LucagenTable", "lucagen_table", "median_estimate", "ratio_estimate", "visit_labels"]

#: LUCAGEN (advanced NSCLC, ddPCR before every cycle; 132 patients with tracked mutations).
PUBLISHED = {
    "detectable": "88/132",
    "preceded": "66/73 (90%)",
    "median_lead_days": "1.5 months (~46 days)",
    "cycles_after": "119/365 (33%)",
}


@dataclass(frozen=True)
class Count:
    """k of n with the share's bootstrap CI."""

    k: int
    n: int
    share: Estimate

    def text(self) -> str:
        if self.n == 0:
            return "0/0"
        s = self.share
        return f"{self.k}/{self.n} ({100 * s.value:.0f}%, 95% CI {100 * s.low:.0f}-{100 * s.high:.0f}%)"


def _ci(boot: np.ndarray, value: float, alpha: float = 0.05) -> Estimate:
    boot = boot[np.isfinite(boot)]
    if not len(boot) or not np.isfinite(value):
        return Estimate(float(value), float("nan"), float("nan"), len(boot))
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(value), float(low), float(high), len(boot))


def ratio_estimate(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> Estimate:
    """sum(num) / sum(den) with its CI over the patient resamples ``idx`` (n_boot x n)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    value = num.sum() / den.sum() if den.sum() > 0 else float("nan")
    if not len(num):
        return Estimate(value, float("nan"), float("nan"), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return _ci(boot, value)


def median_estimate(values: np.ndarray, idx: np.ndarray) -> Estimate:
    """Median of the finite ``values`` (NaN = not counted) with its CI over the patient resamples ``idx``."""
    v = np.asarray(values, float)
    value = float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")
    if not len(v):
        return Estimate(value, float("nan"), float("nan"), 0)
    resampled = v[idx]
    ok = np.isfinite(resampled).any(axis=1)
    boot = np.full(len(idx), np.nan)
    if ok.any():
        boot[ok] = np.nanmedian(resampled[ok], axis=1)
    return _ci(boot, value)


def visit_labels(draws: pd.DataFrame, patients: pd.DataFrame, window_days: float) -> pd.DataFrame:
    """Per draw before progression: ``case`` (progression within ``window_days`` after it) or ``control`` (none
    within the window and follow-up covering it), or neither; and whether the alert was on at that draw."""
    p = patients.reindex(draws["patient_id"])
    day = draws["day"].to_numpy(float)
    event = p["endpoint_event"].to_numpy(float) == 1
    prog = p["progression_day"].to_numpy(float)
    follow = np.fmax(p["endpoint_time"].to_numpy(float), p["last_draw_day"].to_numpy(float))
    before = ~(event & (day >= prog))
    case = before & event & (prog - day <= window_days)
    control = before & ~case & ((event & (prog - day > window_days)) | (~event & (follow - day >= window_days)))
    return pd.DataFrame({"patient_id": draws["patient_id"].to_numpy(), "case": case, "control": control,
                         "alert": draws["alert"].to_numpy() > 0})


@dataclass(frozen=True)
class LucagenTable:
    """The LUCAGEN table's numbers (see the module docstring)."""

    n_patients: int
    detectable: Count
    preceded: Count
    median_lead_days: Estimate
    cycles_after: Count
    false_alerts: int
    followup_years: float
    false_alerts_per_patient_year: Estimate
    visit_sensitivity: Count
    visit_specificity: Count
    window_days: float

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"n_patients": self.n_patients, "window_days": self.window_days}
        for name in ("detectable", "preceded", "cycles_after", "visit_sensitivity", "visit_specificity"):
            c: Count = getattr(self, name)
            out.update({f"{name}_k": c.k, f"{name}_n": c.n, **c.share.as_dict(name)})
        out.update(self.median_lead_days.as_dict("median_lead_days"))
        out.update({"false_alerts": self.false_alerts, "followup_years": self.followup_years,
                    **self.false_alerts_per_patient_year.as_dict("false_alerts_per_patient_year")})
        return out

    def frame(self) -> pd.DataFrame:
        """The table as shown in report.html: quantity, ours (95% CI) and LUCAGEN's published value."""
        m, fa = self.median_lead_days, self.false_alerts_per_patient_year
        rows = [
            ("Patients with detectable ctDNA", self.detectable.text(), PUBLISHED["detectable"]),
            ("Progressions preceded by an alert", self.preceded.text(), PUBLISHED["preceded"]),
            ("Median lead time, days (alert to progression)",
             f"{m.value:.0f} (95% CI {m.low:.0f}-{m.high:.0f})" if np.isfinite(m.value) else "–",
             PUBLISHED["median_lead_days"]),
            ("Cycles (draws) given after molecular progression", self.cycles_after.text(), PUBLISHED["cycles_after"]),
            ("False alerts per patient-year (non-progressors)",
             (f"{fa.value:.3f} (95% CI {fa.low:.3f}-{fa.high:.3f}); " if np.isfinite(fa.value) else "– ")
             + f"{self.false_alerts} alerts over {self.followup_years:.1f} patient-years", "–"),
            (f"Per-visit sensitivity (progression within {self.window_days:g} days)",
             self.visit_sensitivity.text(), "–"),
            ("Per-visit specificity", self.visit_specificity.text(), "–"),
        ]
        return pd.DataFrame(rows, columns=["quantity", "this cohort (95% CI)", "LUCAGEN (published)"])


def _count(flag: np.ndarray, among: np.ndarray, idx: np.ndarray) -> Count:
    f, a = np.asarray(flag, float) * among, np.asarray(among, float)
    return Count(int(f.sum()), int(a.sum()), ratio_estimate(f, a, idx))


def lucagen_table(patients: pd.DataFrame, draws: pd.DataFrame, *, window_days: float = 90.0, n_boot: int = 1000,
                  seed: int = 0) -> LucagenTable:
    """The LUCAGEN table of a monitored cohort (``patients``: patient_table, ``draws``: draw_states)."""
    p = patients[patients["n_usable_draws"] > 0]
    n = len(p)
    idx = bootstrap_indices(n, n_boot, seed) if n else np.zeros((0, 0), dtype=int)
    prog = (p["endpoint_event"] == 1).to_numpy()
    nonprog = (p["endpoint_event"] == 0).to_numpy() | p["endpoint_event"].isna().to_numpy()
    preceded = (p["alert_before_progression"] == 1).to_numpy()
    cyc = p["cycles"].fillna(0).to_numpy(float) * (prog & preceded)
    cyc_after = p["cycles_after_molecular_progression"].fillna(0).to_numpy(float) * (prog & preceded)
    alerts = (p["alert"] == 1).to_numpy(float) * nonprog
    years = p["followup_years"].fillna(0).to_numpy(float) * nonprog
    labels = visit_labels(draws[draws["patient_id"].isin(p.index)], p, window_days)
    lg = labels.assign(case_alert=labels["case"] & labels["alert"],
                       control_quiet=labels["control"] & ~labels["alert"]).groupby("patient_id")
    per = lg[["case", "case_alert", "control", "control_quiet"]].sum().reindex(p.index).fillna(0)
    return LucagenTable(
        n_patients=n,
        detectable=_count((p["detectable"] == 1).to_numpy(), np.ones(n, bool), idx),
        preceded=_count(preceded, prog, idx),
        median_lead_days=median_estimate(p["lead_time_days"].to_numpy(float), idx),
        cycles_after=Count(int(cyc_after.sum()), int(cyc.sum()), ratio_estimate(cyc_after, cyc, idx)),
        false_alerts=int(alerts.sum()),
        followup_years=float(years.sum()),
        false_alerts_per_patient_year=ratio_estimate(alerts, years, idx),
        visit_sensitivity=Count(int(per["case_alert"].sum()), int(per["case"].sum()),
                                ratio_estimate(per["case_alert"].to_numpy(), per["case"].to_numpy(), idx)),
        visit_specificity=Count(int(per["control_quiet"].sum()), int(per["control"].sum()),
                                ratio_estimate(per["control_quiet"].to_numpy(), per["control"].to_numpy(), idx)),
        window_days=float(window_days),
    )

"""Molecular response against PFS (landmark Kaplan-Meier, log-rank p, Cox HR) and ctDNA against RECIST response.

**Molecular response vs PFS.** Calling a patient a responder by whatever happens later favours those who live
long enough to respond (guarantee-time bias), so the comparison is a landmark analysis: patients with a positive
baseline, an on-treatment draw by ``landmark_day`` and no progression (nor censoring) by then are grouped by
whether they reached molecular response by that day, and PFS is counted from the landmark. The log-rank test and
the Cox hazard ratio (non-responders vs responders) are lifelines'.

**ctDNA vs RECIST.** Each patient's best overall response is read from the RECIST table (``pct_change_baseline``,
``pct_change_nadir``, ``new_lesion``): progression at an assessment is +20 % over the nadir or a new lesion; the
best response before the first progression is CR (-100 %), PR (<= -30 %) or SD, and PD when the first assessment
already progresses (NE: no assessment after baseline). RECIST's 5 mm absolute minimum is not applied (the table
gives percentages).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import read_table

__all__ = ["BOR_ORDER", "ResponseKM", "best_overall_response", "ctdna_by_recist", "response_km"]

BOR_ORDER = ("CR", "PR", "SD", "PD", "NE")


@dataclass
class ResponseKM:
    """The landmark groups (index patient_id: group, time from the landmark, event) and the test."""

    landmark_day: float
    table: pd.DataFrame
    logrank_p: float
    hr: float
    hr_low: float
    hr_high: float

    def to_dict(self) -> dict[str, Any]:
        counts = self.table.groupby("group")["event"].agg(["size", "sum"])
        return {"landmark_day": self.landmark_day, "logrank_p": self.logrank_p,
                "hr_nonresponder_vs_responder": self.hr, "hr_ci_low": self.hr_low, "hr_ci_high": self.hr_high,
                "groups": {str(g): {"patients": int(r["size"]), "events": int(r["sum"])}
                           for g, r in counts.iterrows()}}


def response_km(patients: pd.DataFrame, landmark_day: float) -> ResponseKM | None:
    """The landmark comparison (see the module docstring); None when either group is empty."""
    p = patients
    at_risk = (p["baseline_positive"] == 1) & (p["endpoint_time"] > landmark_day) & p["endpoint_event"].notna()
    at_risk &= p["first_draw_day"].notna()
    p = p[at_risk]
    responder = p["molecular_response_day"] <= landmark_day
    table = pd.DataFrame({"group": np.where(responder, "responder", "non-responder"),
                          "time": p["endpoint_time"] - landmark_day, "event": p["endpoint_event"].astype(int)},
                         index=p.index)
    if table["group"].nunique() < 2:
        return None
    r, nr = table[table["group"] == "responder"], table[table["group"] == "non-responder"]
    p_value = float(logrank_test(r["time"], nr["time"], r["event"], nr["event"]).p_value)
    hr = lo = hi = float("nan")
    if table["event"].sum() > 0:
        x = pd.DataFrame({"nonresponder": (table["group"] == "non-responder").astype(float),
                          "T": table["time"].to_numpy(float), "E": table["event"].to_numpy(float)})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = CoxPHFitter().fit(x, duration_col="T", event_col="E").summary
            hr, lo, hi = (float(s.loc["nonresponder", c]) for c in
                          ("exp(coef)", "exp(coef) lower 95%", "exp(coef) upper 95%"))
        except Exception:  # separation (no event in a group): the KM and log-rank still stand
            pass
    return ResponseKM(float(landmark_day), table, p_value, hr, lo, hi)


def best_overall_response(cohort: Cohort, modality: str = "recist") -> pd.Series | None:
    """Best overall response per patient (index patient_id) from the cohort's RECIST table; None without one."""
    if modality not in cohort.spec.modalities:
        return None
    listed = cohort.samples_of(modality)
    frames = [read_table(cohort.path(str(rel))) for rel in sorted(listed["path"].unique())]
    if not frames:
        return None
    rec = pd.concat(frames)
    need = {"pct_change_baseline", "pct_change_nadir"}
    if not need.issubset(rec.columns):
        return None
    rec = listed.set_index("sample_id")[["patient_id", "day"]].join(rec, how="inner")
    rec["patient_id"] = rec["patient_id"].astype(str)
    rec = rec.sort_values(["patient_id", "day"], kind="stable")
    base_day = rec.groupby("patient_id")["day"].transform("min")
    post = rec[rec["day"] > base_day].copy()
    new = post["new_lesion"].fillna(0) > 0 if "new_lesion" in post else False
    post["pd"] = (post["pct_change_nadir"] >= 20) | new
    g = post.groupby("patient_id")
    first_pd = post["day"].where(post["pd"]).groupby(post["patient_id"]).transform("min")
    before = post[~(post["day"] >= first_pd)]
    best = before.groupby("patient_id")["pct_change_baseline"].min()
    first_is_pd = g["pd"].first()
    bor = pd.Series("NE", index=pd.Index(sorted(rec["patient_id"].unique()), name="patient_id"))
    cat = np.select([best <= -99.9, best <= -30], ["CR", "PR"], "SD")
    bor.loc[best.index] = cat
    bor.loc[first_is_pd.index[first_is_pd.to_numpy(bool)]] = "PD"
    return bor


def ctdna_by_recist(patients: pd.DataFrame, draws: pd.DataFrame, bor: pd.Series) -> pd.DataFrame:
    """Per best overall response: patients, positive baselines, molecular response and clearance (k/n evaluable)
    and the median ratio to baseline at the first on-treatment draw and at the nadir (positive baselines)."""
    p = patients.join(bor.rename("bor"), how="inner")
    on = draws[draws["on_treatment"] > 0]
    first_ratio = on.groupby("patient_id")["ratio_to_baseline"].first()
    min_ratio = on.groupby("patient_id")["ratio_to_baseline"].min()
    p = p.assign(first_ratio=first_ratio.reindex(p.index), min_ratio=min_ratio.reindex(p.index))
    rows = []
    for cat in BOR_ORDER:
        q = p[p["bor"] == cat]
        if q.empty:
            continue
        pos = q[q["baseline_positive"] == 1]
        ev = pos["molecular_response"].notna()
        rows.append({"RECIST best response": cat, "patients": len(q), "baseline ctDNA positive": len(pos),
                     "molecular response": f"{int(pos['molecular_response'].sum())}/{int(ev.sum())}",
                     "clearance": f"{int(pos['clearance'].sum())}/{int(pos['clearance'].notna().sum())}",
                     "median ratio, first on-treatment draw": float(pos["first_ratio"].median()),
                     "median nadir ratio": float(pos["min_ratio"].median())})
    return pd.DataFrame(rows)

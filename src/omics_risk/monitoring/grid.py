"""Operating characteristics of a rule across a grid of its parameters, and the grid choice evaluated out of fold.

For every point of the rule's ``grid`` (e.g. ``fold`` x ``confirm``): the share of progressions preceded by an
alert (sensitivity), the median lead time and the false alerts per patient-year among non-progressors, on the
whole cohort (the curve a user reads a threshold from). Choosing a point on the same patients it is reported on
would flatter it, so the choice is also made out of fold: patients are split into ``folds``; on the training
folds the point with the highest sensitivity whose false-alert rate stays at or below ``max_false_alerts`` (ties:
the longer median lead; none within the budget: the lowest false-alert rate) is chosen, and the held-out fold is
monitored with it. The held-out patients of all folds, each with its own fold's choice, give the out-of-fold
characteristics (with bootstrap CIs over patients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate, bootstrap_indices
from omics_risk.monitoring.lucagen import median_estimate, ratio_estimate
from omics_risk.monitoring.rules import Rule, grid_points, with_params
from omics_risk.monitoring.states import draw_states, patient_table

__all__ = ["GridResult", "characteristics", "rule_grid"]


@dataclass
class GridResult:
    """The curve (one row per grid point), the per-fold choices and the out-of-fold characteristics."""

    curve: pd.DataFrame
    folds: pd.DataFrame
    out_of_fold: dict[str, Estimate]
    max_false_alerts: float

    def to_dict(self) -> dict[str, Any]:
        return {"max_false_alerts_per_patient_year": self.max_false_alerts,
                "curve": self.curve.to_dict(orient="records"),
                "folds": self.folds.to_dict(orient="records"),
                "out_of_fold": {k: {"value": e.value, "ci_low": e.low, "ci_high": e.high}
                                for k, e in self.out_of_fold.items()}}


def _vectors(p: pd.DataFrame) -> dict[str, np.ndarray]:
    prog = (p["endpoint_event"] == 1).to_numpy(float)
    nonprog = 1.0 - prog
    return {"prog": prog, "preceded": (p["alert_before_progression"] == 1).to_numpy(float) * prog,
            "lead": p["lead_time_days"].to_numpy(float),
            "alerts": (p["alert"] == 1).to_numpy(float) * nonprog,
            "years": p["followup_years"].fillna(0).to_numpy(float) * nonprog}


def _point(v: dict[str, np.ndarray], rows: np.ndarray) -> tuple[float, float, float]:
    prog, years = v["prog"][rows].sum(), v["years"][rows].sum()
    sens = v["preceded"][rows].sum() / prog if prog > 0 else np.nan
    lead = v["lead"][rows]
    med = float(np.nanmedian(lead)) if np.isfinite(lead).any() else np.nan
    rate = v["alerts"][rows].sum() / years if years > 0 else np.nan
    return float(sens), med, float(rate)


def characteristics(patients: pd.DataFrame, *, n_boot: int = 0, seed: int = 0) -> dict[str, Estimate]:
    """Sensitivity, median lead time and false alerts per patient-year of one monitored cohort (with CIs)."""
    p = patients[patients["n_usable_draws"] > 0]
    v = _vectors(p)
    idx = bootstrap_indices(len(p), max(n_boot, 1), seed)
    return {"sensitivity": ratio_estimate(v["preceded"], v["prog"], idx),
            "median_lead_days": median_estimate(v["lead"], idx),
            "false_alerts_per_patient_year": ratio_estimate(v["alerts"], v["years"], idx)}


def _choose(stats: list[tuple[float, float, float]], budget: float) -> int:
    """Highest sensitivity within the false-alert budget (ties: longer lead); none within it: fewest alerts."""
    ok = [i for i, (_, _, r) in enumerate(stats) if np.isfinite(r) and r <= budget]
    if ok:
        return max(ok, key=lambda i: (np.nan_to_num(stats[i][0], nan=-1), np.nan_to_num(stats[i][1], nan=-1e9)))
    return min(range(len(stats)), key=lambda i: np.nan_to_num(stats[i][2], nan=np.inf))


def rule_grid(summaries: pd.DataFrame, rule: Rule, outcomes: pd.DataFrame, status: pd.DataFrame, *,
              as_of_day: float | None = None, risk: pd.Series | None = None, folds: int = 5,
              max_false_alerts: float = 0.25, n_boot: int = 500, seed: int = 0) -> GridResult:
    """The rule's grid evaluated on the cohort and out of fold (see the module docstring)."""
    points = grid_points(rule)
    per_point = []
    for params in points:
        r = with_params(rule, **params)
        d = draw_states(summaries, r, as_of_day=as_of_day, risk=risk)
        per_point.append(patient_table(d, outcomes, status))
    ids = per_point[0].index[per_point[0]["n_usable_draws"] > 0]
    vecs = [_vectors(p.loc[ids]) for p in per_point]
    everyone = np.arange(len(ids))
    rows = []
    for params, v in zip(points, vecs, strict=True):
        sens, med, rate = _point(v, everyone)
        rows.append({**{k: (str(x) if isinstance(x, bool) else x) for k, x in params.items()},
                     "sensitivity": sens, "median_lead_days": med, "false_alerts_per_patient_year": rate,
                     "false_alerts": int(v["alerts"].sum())})
    curve = pd.DataFrame(rows)
    k = int(min(max(folds, 2), len(ids))) if len(ids) >= 2 else 0
    fold_rows, chosen = [], np.zeros(len(ids), dtype=int)
    if k:
        assign = np.random.default_rng(seed).permutation(len(ids)) % k
        for f in range(k):
            train, test = everyone[assign != f], everyone[assign == f]
            best = _choose([_point(v, train) for v in vecs], max_false_alerts)
            chosen[test] = best
            sens, med, rate = _point(vecs[best], test)
            fold_rows.append({"fold": f + 1, "n_train": len(train), "n_test": len(test),
                              **{f"chosen_{a}": (str(b) if isinstance(b, bool) else b)
                                 for a, b in points[best].items()},
                              "test_sensitivity": sens, "test_median_lead_days": med,
                              "test_false_alerts_per_patient_year": rate})
    oof = {key: np.array([vecs[c][key][i] for i, c in enumerate(chosen)]) for key in vecs[0]} if len(ids) else {}
    idx = bootstrap_indices(len(ids), n_boot, seed)
    out_of_fold = {} if not len(ids) else {
        "sensitivity": ratio_estimate(oof["preceded"], oof["prog"], idx),
        "median_lead_days": median_estimate(oof["lead"], idx),
        "false_alerts_per_patient_year": ratio_estimate(oof["alerts"], oof["years"], idx)}
    return GridResult(curve, pd.DataFrame(fold_rows), out_of_fold, float(max_false_alerts))

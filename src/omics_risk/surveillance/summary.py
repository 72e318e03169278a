"""Outcomes of each schedule with bootstrap CIs, and the risk-adapted family read off at a fixed schedule's cost.

Patients are resampled with the project's one bootstrap engine (:func:`~omics_risk.evaluation.bootstrap.
bootstrap_indices`): the same resamples for every schedule, so differences between schedules are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omics_risk.evaluation.bootstrap import Estimate, bootstrap_indices

__all__ = ["METRICS", "Matched", "ScheduleStats", "low_risk_recurrence", "matched_to", "schedule_stats",
           "summary_table"]

#: Per-schedule outcomes: name -> what it means (summary.json, schedules.csv, the report).
METRICS = {
    "scans_per_patient": "CT scans per patient up to detection or the end of surveillance",
    "draws_per_patient": "ctDNA draws per patient",
    "median_delay_days": "median days from onset to detection (recurrences found)",
    "mean_delay_days": "mean days from onset to detection (recurrences found)",
    "within_window": "share of recurrences found within the curable window of their onset",
    "interval_share": "share of recurrences found by symptoms before the next scan (interval recurrences)",
    "undetected_share": "share of recurrences not found before death",
}


def _stats(r: np.ndarray, v: np.ndarray, scans: np.ndarray, draws: np.ndarray, win: np.ndarray,
           inter: np.ndarray, found: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of patient index rows ``r`` (``(B, n)``, or ``(1, n)``) as arrays over resamples."""
    rec = np.isfinite(win[r])
    n_rec = rec.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = v[r]
        out = {
            "scans_per_patient": scans[r].mean(axis=1),
            "draws_per_patient": draws[r].mean(axis=1),
            "median_delay_days": _nanmedian(d),
            "mean_delay_days": _nanmean(d),
            "within_window": np.where(rec, win[r], 0).sum(axis=1) / n_rec,
            "interval_share": np.where(rec, inter[r], 0).sum(axis=1) / n_rec,
            "undetected_share": np.where(rec, ~found[r], False).sum(axis=1) / n_rec,
        }
    return out


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Row means ignoring NaN (NaN for an all-NaN row, without the warning)."""
    ok = np.isfinite(x)
    k = ok.sum(axis=1)
    return np.where(k > 0, np.where(ok, x, 0.0).sum(axis=1) / np.maximum(k, 1), np.nan)


def _nanmedian(x: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (NaN for an all-NaN row, without the warning)."""
    ok = np.isfinite(x).any(axis=1)
    out = np.full(len(x), np.nan)
    if ok.any():
        out[ok] = np.nanmedian(x[ok], axis=1)
    return out


@dataclass
class ScheduleStats:
    """One schedule's point estimates and the same metrics in every resample (``boot[name]``: ``(B,)``)."""

    name: str
    family: str
    point: dict[str, float]
    boot: dict[str, np.ndarray]
    n_patients: int
    n_recurrences: int

    def estimate(self, metric: str, alpha: float = 0.05) -> Estimate:
        b = self.boot[metric]
        b = b[np.isfinite(b)]
        if len(b) == 0:
            return Estimate(self.point[metric], float("nan"), float("nan"), 0)
        lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2])
        return Estimate(float(self.point[metric]), float(lo), float(hi), len(b))


def schedule_stats(patients: pd.DataFrame, families: dict[str, str], *, n_boot: int, seed: int
                   ) -> dict[str, ScheduleStats]:
    """:class:`ScheduleStats` of every schedule of the long ``patients`` table (rows with ``status == ok``)."""
    ok = patients[patients["status"] == "ok"]
    out: dict[str, ScheduleStats] = {}
    idx = None
    for name, g in ok.groupby("schedule", sort=False):
        n = len(g)
        if idx is None or idx.shape[1] != n:
            idx = bootstrap_indices(n, n_boot, seed) if n_boot > 0 else np.zeros((0, n), dtype=int)
        arrays = (g["delay_days"].to_numpy(float), g["scans"].to_numpy(float), g["draws"].to_numpy(float),
                  g["within_window"].to_numpy(float), g["interval_recurrence"].to_numpy(float),
                  (g["detected_by"].astype(str) != "none").to_numpy())
        point = {k: float(v[0]) for k, v in _stats(np.arange(n)[None, :], *arrays).items()}
        boot = _stats(idx, *arrays) if len(idx) else {k: np.zeros(0) for k in point}
        out[str(name)] = ScheduleStats(str(name), families.get(str(name), "fixed"), point, boot, n,
                                       int(np.isfinite(arrays[3]).sum()))
    return out


def summary_table(stats: dict[str, ScheduleStats], descriptions: dict[str, str], alpha: float = 0.05
                  ) -> pd.DataFrame:
    """``schedules.csv``: one row per schedule, each metric with its CI."""
    rows = []
    for name, s in stats.items():
        row: dict[str, object] = {"schedule": name, "family": s.family, "description": descriptions.get(name, ""),
                                  "n_patients": s.n_patients, "n_recurrences": s.n_recurrences}
        for m in METRICS:
            e = s.estimate(m, alpha)
            row.update({m: e.value, f"{m}_ci_low": e.low, f"{m}_ci_high": e.high})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Matched:
    """The risk-adapted family at a reference schedule's scan count: its median delay there, and the difference
    (family minus reference; negative = found sooner) with a paired bootstrap CI."""

    reference: str
    scans: float
    delay: Estimate
    difference: Estimate
    reference_delay: Estimate
    scans_saved_at_equal_delay: Estimate

    def as_dict(self) -> dict[str, object]:
        return {"reference": self.reference, "scans": self.scans,
                **self.delay.as_dict("family_median_delay_days"),
                **self.reference_delay.as_dict("reference_median_delay_days"),
                **self.difference.as_dict("difference_days"),
                **self.scans_saved_at_equal_delay.as_dict("scans_saved_per_patient_at_equal_delay")}


def _interp(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """``y`` at ``x == at`` along a family sorted by ``x`` (NaN outside its range)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    o = np.argsort(x[ok])
    xs, ys = x[ok][o], y[ok][o]
    if at < xs[0] or at > xs[-1]:
        return float("nan")
    return float(np.interp(at, xs, ys))


def matched_to(family: Sequence[ScheduleStats], reference: ScheduleStats, metric: str = "median_delay_days",
               alpha: float = 0.05) -> Matched:
    """Read the family's trade-off curve at the reference's scans per patient (delay there), and at its delay
    (scans there), in the point estimate and in every resample."""
    def at(point: bool, b: int | None) -> tuple[float, float, float, float]:
        get = (lambda s, m: s.point[m]) if point else (lambda s, m: s.boot[m][b])
        xs = np.array([get(s, "scans_per_patient") for s in family])
        ys = np.array([get(s, metric) for s in family])
        ref_x, ref_y = get(reference, "scans_per_patient"), get(reference, metric)
        d = _interp(xs, ys, ref_x)
        # scans needed for the reference's delay: the family's delay falls as scans rise
        scans_eq = _interp(ys, xs, ref_y)
        return d, d - ref_y, ref_y, ref_x - scans_eq

    p = at(True, None)
    nb = len(reference.boot[metric])
    boots = np.array([at(False, b) for b in range(nb)]) if nb else np.zeros((0, 4))

    def est(j: int) -> Estimate:
        v = boots[:, j] if len(boots) else np.zeros(0)
        v = v[np.isfinite(v)]
        if len(v) == 0:
            return Estimate(p[j], float("nan"), float("nan"), 0)
        lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
        return Estimate(float(p[j]), float(lo), float(hi), len(v))

    return Matched(reference.name, reference.point["scans_per_patient"], est(0), est(1), est(2), est(3))


def low_risk_recurrence(recurred: np.ndarray, group: np.ndarray, lowest: str, *, n_boot: int, seed: int,
                        alpha: float = 0.05) -> dict[str, object]:
    """The "no follow-up needed" question: the share of the lowest risk group who recur within the horizon, and
    the share of all recurrences that come from that group (patients resampled, as everywhere)."""
    rec = np.asarray(recurred, dtype=float)
    low = np.asarray(group).astype(str) == lowest
    n = len(rec)

    def both(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (rec[r] * low[r]).sum(axis=1) / low[r].sum(axis=1)
            of_all = (rec[r] * low[r]).sum(axis=1) / rec[r].sum(axis=1)
        return share, of_all

    p = both(np.arange(n)[None, :])
    idx = bootstrap_indices(n, n_boot, seed)
    b = both(idx) if n_boot else (np.zeros(0), np.zeros(0))

    def est(j: int) -> Estimate:
        v = b[j][np.isfinite(b[j])]
        lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2]) if len(v) else (np.nan, np.nan)
        return Estimate(float(p[j][0]), float(lo), float(hi), len(v))

    return {"group": lowest, "n_patients": int(low.sum()), "n_recurrences": int((rec * low).sum()),
            "recurrence_share": est(0), "share_of_all_recurrences": est(1)}

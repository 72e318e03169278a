"""What monitoring reads from a cohort: per-draw ctDNA summaries, each patient's status, and the outcomes.

Nothing is dropped silently: a draw listed in samples.csv without rows in its variant table, or whose level
cannot be computed (``pooled_vaf`` needs ``depth``), is kept as an unusable draw with its reason; a patient with no
draw, or none usable, gets a status and a reason; variant-table rows of samples that samples.csv does not list are
counted (``unlisted_rows``), never used.

Real data: ``depth`` may be missing (VAF-only reports; detection then uses the VAF limit of detection), a report
may give one row per draw (e.g. its maximum MAF, tracked as ``max_vaf``) or a per-draw level column of its own
(``--level COLUMN``, constant within a draw), and draws may fall on any day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import read_variant_table
from omics_risk.data.spec import SurvivalEndpoint
from omics_risk.features.ctdna import LEVELS, DetectionRule, sample_summaries

__all__ = ["SerialDraws", "outcomes_of", "read_risk", "serial_draws", "survival_endpoint"]

_TABLE_COLUMNS = {"patient_id", "sample_id", "day", "gene", "variant", "vaf", "depth", "alt_count"}


@dataclass
class SerialDraws:
    """Usable draws (``summaries``, index sample_id), every listed draw with its status, and per-patient status."""

    summaries: pd.DataFrame
    draws: pd.DataFrame  # every draw of samples.csv: patient_id, sample_id, day, usable, reason
    patients: pd.DataFrame  # index patient_id (every patient of clinical.csv): status, reason, n_draws
    notes: list[str] = field(default_factory=list)
    unlisted_rows: int = 0


def _level_column(table: pd.DataFrame, summ: pd.DataFrame, level: str, rel: str) -> pd.Series:
    """A per-draw level the table gives itself (a numeric column, one value per draw)."""
    values = pd.to_numeric(table[level], errors="coerce")
    g = values.groupby(table["sample_id"].to_numpy())
    spread = (g.max() - g.min()).fillna(0)
    if (spread > 0).any():
        bad = spread.index[spread > 0][0]
        raise ValueError(f"{rel}: column '{level}' differs between the rows of sample '{bad}'; a per-draw level "
                         "column must hold one value per draw (or use --level max_vaf / pooled_vaf / mean_vaf)")
    return g.first().reindex(summ.index)


def serial_draws(cohort: Cohort, *, modality: str = "ctdna", level: str = "pooled_vaf",
                 detection: DetectionRule | None = None) -> SerialDraws:
    """Read every variant table of ``modality`` and summarise each listed draw (see the module docstring)."""
    detection = detection or DetectionRule()
    patients = pd.Index(cohort.clinical["patient_id"].astype(str), name="patient_id")
    if modality not in cohort.spec.modalities:
        have = ", ".join(sorted(cohort.spec.modalities)) or "none"
        raise ValueError(f"{cohort.root}/cohort.yaml has no modality '{modality}' (it has {have}); pass "
                         "--modality NAME for the serial ctDNA variant table")
    listed = cohort.samples_of(modality).copy()
    listed["patient_id"] = listed["patient_id"].astype(str)
    notes: list[str] = []
    summaries, reasons = [], {}
    unlisted = 0
    for rel, group in listed.groupby("path", sort=True):
        table = read_variant_table(cohort.path(str(rel)), depth_optional=True)
        keep = table["sample_id"].isin(set(group["sample_id"]))
        unlisted += int((~keep).sum())
        table = table[keep]
        if level not in LEVELS and level not in table.columns:
            extra = sorted(set(table.columns) - _TABLE_COLUMNS)
            raise ValueError(f"{rel}: no column '{level}' for --level; use one of {', '.join(LEVELS)}"
                             + (f" or a per-draw column of the table ({', '.join(extra)})" if extra else ""))
        summ = sample_summaries(table, detection)
        if level not in LEVELS:
            summ[level] = _level_column(table, summ, level, str(rel))
        if table["depth"].isna().any():
            notes.append(f"{rel}: depth unknown for {table.loc[table['depth'].isna(), 'sample_id'].nunique()} "
                         "draw(s); detection there uses the VAF limit of detection")
        for sid in set(group["sample_id"]) - set(summ.index):
            reasons[sid] = f"no rows for this draw in {rel}"
        bad_level = summ.index[summ[level].isna()]
        for sid in bad_level:
            reasons[sid] = (f"{level} cannot be computed for this draw (depth unknown); use --level max_vaf or "
                            "mean_vaf" if level == "pooled_vaf" else f"no {level} for this draw in {rel}")
        clash = summ.index[summ["patient_id"].astype(str).to_numpy()
                           != group.set_index("sample_id")["patient_id"].reindex(summ.index).to_numpy()]
        for sid in clash:
            reasons[sid] = f"{rel} gives this draw to patient '{summ.at[sid, 'patient_id']}', samples.csv to another"
        summaries.append(summ.drop(index=bad_level.union(clash)))
    summ = pd.concat(summaries) if summaries else pd.DataFrame(columns=["patient_id", "day", "positive", level])
    summ["patient_id"] = summ["patient_id"].astype(str)
    summ = summ[summ["patient_id"].isin(set(patients))]
    draws = listed[["patient_id", "sample_id", "day"]].reset_index(drop=True)
    draws["usable"] = draws["sample_id"].isin(set(summ.index))
    draws["reason"] = draws["sample_id"].map(reasons).fillna("")
    draws.loc[~draws["usable"] & (draws["reason"] == ""), "reason"] = "patient not in clinical.csv"
    n_draws = draws.groupby("patient_id").size().reindex(patients).fillna(0).astype(int)
    n_ok = draws[draws["usable"]].groupby("patient_id").size().reindex(patients).fillna(0).astype(int)
    first_reason = draws[~draws["usable"]].groupby("patient_id")["reason"].first().reindex(patients)
    status = pd.DataFrame(index=patients)
    status["n_draws"] = n_draws
    status["status"] = np.where(n_draws == 0, "no_draws", np.where(n_ok == 0, "no_usable_draws", "ok"))
    status["reason"] = np.select(
        [n_draws == 0, n_ok == 0, n_ok < n_draws],
        [f"no {modality} draw in samples.csv",
         "no usable draw: " + first_reason.fillna("").astype(str),
         (n_draws - n_ok).astype(str) + " of " + n_draws.astype(str) + " draws unusable: "
         + first_reason.fillna("").astype(str)],
        "",
    )
    if unlisted:
        notes.append(f"{unlisted} variant-table row(s) belong to draws samples.csv does not list; not used")
    return SerialDraws(summ, draws, status, notes, unlisted)


def survival_endpoint(cohort: Cohort, name: str | None) -> SurvivalEndpoint | None:
    """The radiological endpoint: ``name``, else the cohort's pfs, rfs or first survival endpoint (None if none)."""
    eps = {k: v for k, v in cohort.spec.endpoints.items() if isinstance(v, SurvivalEndpoint)}
    if name is not None:
        if name not in eps:
            raise ValueError(f"{cohort.root}/cohort.yaml has no survival endpoint '{name}' "
                             f"(survival endpoints: {', '.join(eps) or 'none'})")
        return eps[name]
    for pick in ("pfs", "rfs", *eps):
        if pick in eps:
            return eps[pick]
    return None


def outcomes_of(cohort: Cohort, endpoint: SurvivalEndpoint | None) -> pd.DataFrame:
    """index patient_id; ``time`` and ``event`` of the endpoint (NaN where unknown or without an endpoint)."""
    clin = cohort.clinical.assign(patient_id=cohort.clinical["patient_id"].astype(str)).set_index("patient_id")
    if endpoint is None:
        return pd.DataFrame({"time": np.nan, "event": np.nan}, index=clin.index)
    return pd.DataFrame({"time": pd.to_numeric(clin[endpoint.time], errors="coerce"),
                         "event": pd.to_numeric(clin[endpoint.event], errors="coerce")}, index=clin.index)


def read_risk(path: str | Path, summaries: pd.DataFrame) -> pd.Series:
    """A model's dynamic risk at each usable draw (index sample_id), from a CSV of ``sample_id, risk`` or of
    ``patient_id, day, risk`` (the risk computed at that day, e.g. one row per landmark).

    With days, a draw gets the latest risk dated on or before it (never a later one); a draw with none gets NaN
    (no alert from the model there).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--risk {path} does not exist")
    df = pd.read_csv(path, dtype={"patient_id": str, "sample_id": str})
    if "risk" not in df.columns or not ({"sample_id"} <= set(df.columns) or {"patient_id", "day"} <= set(df.columns)):
        raise ValueError(f"{path}: expected columns sample_id,risk or patient_id,day,risk; found "
                         f"{', '.join(map(str, df.columns))}")
    risk = pd.to_numeric(df["risk"], errors="coerce")
    bad = df.index[risk.isna() & df["risk"].notna()]
    if len(bad):
        raise ValueError(f"{path}: line {int(bad[0]) + 2}, column risk: {df.loc[bad[0], 'risk']!r} is not a number")
    df["risk"] = risk
    if "sample_id" in df.columns:
        dup = df["sample_id"].duplicated()
        if dup.any():
            raise ValueError(f"{path}: sample '{df.loc[dup.idxmax(), 'sample_id']}' has two risks")
        return df.set_index("sample_id")["risk"].reindex(summaries.index)
    df["day"] = pd.to_numeric(df["day"], errors="coerce").astype(float)
    if df["day"].isna().any():
        raise ValueError(f"{path}: line {int(df.index[df['day'].isna()][0]) + 2}, column day: not a number")
    left = summaries[["patient_id", "day"]].rename_axis("sample_id").reset_index()
    left["day"] = left["day"].astype(float)
    left["patient_id"] = left["patient_id"].astype(str)
    merged = pd.merge_asof(left.sort_values("day"), df[["patient_id", "day", "risk"]].sort_values("day"),
                           on="day", by="patient_id", direction="backward")
    return merged.set_index("sample_id")["risk"].reindex(summaries.index)

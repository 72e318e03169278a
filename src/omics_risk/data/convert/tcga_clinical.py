"""The clinical side of the TCGA LUSC conversion (:mod:`omics_risk.data.convert.tcga`): the TCGA-CDR table into
clinical.csv columns and endpoints, their cohort.yaml types, and the stage-only Harrell's C that checks them
against the source README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Endpoint name -> (CDR time column, CDR event column). PFI (recurrence or progression) comes first because it
#: is the recurrence endpoint this framework models; Liu et al. 2018 recommend PFI and OS for lung cancer.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "pfi": ("PFI.time", "PFI"),
    "os": ("OS.time", "OS"),
    "dss": ("DSS.time", "DSS"),
    "dfi": ("DFI.time", "DFI"),
}
#: Harrell's C of the collapsed pathologic stage alone, from the source README (the check that the endpoints and
#: the stage mapping were carried over faithfully).
REFERENCE_STAGE_C_INDEX = {"pfi": 0.620, "os": 0.559}

STAGE_LEVELS = ("I", "II", "III", "IV")
STAGE_DETAIL_LEVELS = ("IA", "IB", "IIA", "IIB", "IIIA", "IIIB", "IV")
_STAGE_RE = re.compile(r"^Stage (IV|III|II|I)([A-C]?)$")
#: TCGA writes unknown values as bracketed placeholders: [Not Available], [Unknown], [Discrepancy], ...
_PLACEHOLDER_RE = re.compile(r"^\[.*\]$")


def _endpoint_columns() -> dict[str, tuple[str, str]]:
    return {name: (f"{name}_time", f"{name}_event") for name in ENDPOINTS}


def _numeric(values: pd.Series, what: str) -> pd.Series:
    """Parse numbers strictly: an unparsable cell means the source changed, which must not pass unnoticed."""
    parsed = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & parsed.isna()
    if bad.any():
        raise ValueError(f"{what}: not a number: {sorted(values[bad].unique())[:5]}")
    return _compact(parsed)


def _compact(values: pd.Series) -> pd.Series:
    """Whole numbers as integers (371, not 371.0), so the CSV reads as the days and years it holds."""
    present = values.dropna()
    if len(present) and bool((present == np.round(present)).all()):
        return values.round().astype("Int64")
    return values.astype("float64")


def _stage(raw: pd.Series) -> tuple[pd.Series, pd.Series, list[str]]:
    """AJCC pathologic stage -> (collapsed I-IV, sub-stage IA..IV or empty when unspecified, unrecognised values)."""
    match = raw.str.extract(_STAGE_RE)
    coarse = match[0]
    detail = (match[0] + match[1]).where(match[1].fillna("") != "")
    detail = detail.mask(coarse == "IV", "IV")
    detail = detail.where(detail.isin(STAGE_DETAIL_LEVELS))
    unrecognised = sorted(raw[raw.notna() & coarse.isna()].unique().tolist())
    return coarse, detail, unrecognised


def _clinical(path: Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """The TCGA-CDR table -> clinical.csv columns, plus what was cleaned (clinical and endpoint reports)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False).apply(lambda s: s.str.strip())
    placeholders: dict[str, dict[str, int]] = {}
    for col in raw.columns:
        mask = raw[col].str.match(_PLACEHOLDER_RE)
        if mask.any():
            placeholders[col] = {str(k): int(v) for k, v in raw.loc[mask, col].value_counts().sort_index().items()}
        raw[col] = raw[col].mask(mask | (raw[col] == ""))

    ids = raw["bcr_patient_barcode"]
    if ids.isna().any() or ids.duplicated().any() or not ids.str.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}").all():
        raise ValueError(f"{path.name}: bcr_patient_barcode must be unique 12-character TCGA patient barcodes")

    coarse, detail, unrecognised = _stage(raw["ajcc_pathologic_tumor_stage"])
    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "age": _numeric(raw["age_at_initial_pathologic_diagnosis"], "age_at_initial_pathologic_diagnosis"),
            "sex": raw["gender"].str.lower(),
            "race": raw["race"].str.lower(),
            "stage": coarse,
            "stage_detail": detail,
            "histological_type": raw["histological_type"],
            "diagnosis_year": _numeric(raw["initial_pathologic_dx_year"], "initial_pathologic_dx_year"),
        }
    )

    endpoint_report: dict[str, Any] = {}
    for name, (time_col, event_col) in ENDPOINTS.items():
        time = _numeric(raw[time_col], time_col).astype("float64")
        event = _numeric(raw[event_col], event_col).astype("float64")
        source_events = int((event == 1).sum())
        one_sided = time.isna() ^ event.isna()
        negative = time < 0
        bad_event = event.notna() & ~event.isin([0, 1])
        blank = one_sided | negative | bad_event
        time_only, event_only = ids[one_sided & time.notna()], ids[one_sided & event.notna()]
        time, event = time.mask(blank), event.mask(blank)
        out_time, out_event = _endpoint_columns()[name]
        clinical[out_time] = _compact(time)
        clinical[out_event] = event.astype("Int64")
        endpoint_report[name] = {
            "source_columns": [time_col, event_col],
            "events_in_source": source_events,
            "patients": int(event.notna().sum()),
            "events": int((event == 1).sum()),
            "censored": int((event == 0).sum()),
            "missing": int(event.isna().sum()),
            "zero_times": int((time == 0).sum()),
            "blanked_time_without_event": sorted(time_only.tolist()),
            "blanked_event_without_time": sorted(event_only.tolist()),
            "blanked_negative_time": sorted(ids[negative].tolist()),
            "blanked_event_not_0_1": sorted(ids[bad_event].tolist()),
        }
    clinical = clinical.sort_values("patient_id", kind="stable").reset_index(drop=True)

    clinical_report: dict[str, Any] = {
        "source_file": path.name,
        "patients": len(clinical),
        "placeholders_cleaned": placeholders,
        "stage_counts": {lvl: int((clinical["stage"] == lvl).sum()) for lvl in STAGE_LEVELS},
        "stage_missing": int(clinical["stage"].isna().sum()),
        "stage_unrecognised": unrecognised,
        "stage_detail_unspecified_substage": int((clinical["stage"].notna() & clinical["stage_detail"].isna()).sum()),
        "dropped_source_columns": sorted(
            set(raw.columns)
            - {
                "bcr_patient_barcode",
                "age_at_initial_pathologic_diagnosis",
                "gender",
                "race",
                "ajcc_pathologic_tumor_stage",
                "histological_type",
                "initial_pathologic_dx_year",
                *(c for pair in ENDPOINTS.values() for c in pair),
            }
        ),
    }
    return clinical, clinical_report, endpoint_report


def _clinical_types(clinical: pd.DataFrame) -> dict[str, Any]:
    """The cohort.yaml ``clinical:`` block. A categorical column with a single value carries no information (and
    breaks per-feature scaling), so it stays in clinical.csv untyped: histological_type is constant in LUSC."""
    typed: dict[str, Any] = {
        "age": "numeric",
        "sex": "categorical",
        "race": "categorical",
        "stage": {"type": "ordinal", "levels": list(STAGE_LEVELS)},
        "stage_detail": {"type": "ordinal", "levels": list(STAGE_DETAIL_LEVELS)},
        "histological_type": "categorical",
    }
    return {col: t for col, t in typed.items() if t != "categorical" or clinical[col].nunique() >= 2}


def _harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    """Harrell's C with sksurv's conventions (tied risks count 1/2; an event is comparable with a censoring at the
    same time), so the report can be checked against the README without a survival library. None when no pair is
    comparable (JSON has no NaN)."""
    t, e, r = np.asarray(time, float), np.asarray(event, bool), np.asarray(risk, float)
    comparable = e[:, None] & ((t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :]))
    diff = r[:, None] - r[None, :]
    tied = np.abs(diff) <= 1e-8
    pairs = int(comparable.sum())
    if pairs == 0:
        return None
    concordant = (comparable & (diff > 0) & ~tied).sum() + 0.5 * (comparable & tied).sum()
    return round(float(concordant / pairs), 4)


def _stage_c_index(clinical: pd.DataFrame) -> dict[str, float | None]:
    """Stage-only Harrell's C per survival endpoint (stage I..IV coded 1..4; patients without stage left out)."""
    code = clinical["stage"].map({lvl: i + 1 for i, lvl in enumerate(STAGE_LEVELS)})
    result = {}
    for name, (time_col, event_col) in _endpoint_columns().items():
        keep = code.notna() & clinical[time_col].notna() & clinical[event_col].notna()
        result[name] = _harrell_c(
            clinical.loc[keep, time_col].to_numpy(float),
            clinical.loc[keep, event_col].to_numpy(float),
            code[keep].to_numpy(float),
        )
    return result

"""The clinical side of a TCGA conversion (:mod:`omics_risk.data.convert.tcga`): the TCGA-CDR table into
clinical.csv columns and endpoints, their cohort.yaml types, and the stage-only Harrell's C that checks them
against a project's reference values (:mod:`omics_risk.data.convert.tcga_projects`)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.convert.tcga_projects import LUNG_SUBSTAGES, PROJECTS, TcgaProject, TcgaSources

#: Endpoint name -> (CDR time column, CDR event column). PFI (recurrence or progression) comes first because it
#: is the recurrence endpoint this framework models; Liu et al. 2018 recommend PFI and OS for lung cancer.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "pfi": ("PFI.time", "PFI"),
    "os": ("OS.time", "OS"),
    "dss": ("DSS.time", "DSS"),
    "dfi": ("DFI.time", "DFI"),
}
#: LUSC's Harrell's C of the collapsed pathologic stage alone, from its source README (the check that the endpoints
#: and the stage mapping were carried over faithfully); every project's are in tcga_projects.PROJECTS.
REFERENCE_STAGE_C_INDEX = dict(PROJECTS["LUSC"].stage_c_index)

STAGE_LEVELS = ("I", "II", "III", "IV")
#: LUSC's sub-stages (lung, AJCC 6th/7th edition); a project's are in tcga_projects.PROJECTS (:func:`_stage`).
STAGE_DETAIL_LEVELS = LUNG_SUBSTAGES
#: AJCC / FIGO stage as TCGA-CDR writes it: "Stage IIIB", "Stage IV", "Stage IIIC1" (the digit is not kept).
_STAGE_RE = re.compile(r"^Stage (IV|III|II|I)([A-C]?)\d?$")
#: The candidate stage columns, in order, for a project without its own (tcga_projects.TcgaProject.stage_column).
STAGE_COLUMNS = ("ajcc_pathologic_tumor_stage", "clinical_stage")
#: TCGA writes unknown values as bracketed placeholders: [Not Available], [Unknown], [Discrepancy], ...; a
#: spreadsheet export of the pan-cancer table may hold #N/A.
_PLACEHOLDER_RE = re.compile(r"^(\[.*\]|#N/A)$")
#: The TCGA-CDR columns a conversion reads (besides the stage and the endpoints).
_CLINICAL_SOURCE = {
    "age_at_initial_pathologic_diagnosis": "age",
    "gender": "sex",
    "race": "race",
    "histological_type": "histological_type",
    "initial_pathologic_dx_year": "diagnosis_year",
}


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


def _stage(raw: pd.Series, levels: tuple[str, ...] | None = None
           ) -> tuple[pd.Series, pd.Series, list[str], list[str]]:
    """AJCC / FIGO stage -> (collapsed I-IV, sub-stage or empty, the sub-stage levels in order, unrecognised values).

    With the project's sub-stage ``levels`` (lung: :data:`STAGE_DETAIL_LEVELS`), a stage is its sub-stage when
    that is a level, else its group when the group is one (lung IV: ``IV`` whatever the letter), else empty. Without
    them the levels come from the patients: a stage group in which no patient has a sub-stage is its own level; in
    a group with sub-stages, a patient recorded without one gets an empty sub-stage, because no place in the order
    would be honest.
    """
    match = raw.str.extract(_STAGE_RE)
    coarse = match[0]
    letter = match[1].fillna("")
    lettered = coarse.notna() & (letter != "")
    if levels is not None:
        detail = (coarse + letter).where(lettered)
        detail = detail.where(detail.isin(levels), coarse.where(coarse.isin(levels)))
        found = list(levels)
    else:
        sub_staged = set(coarse[lettered])
        detail = (coarse + letter).where(lettered)
        detail = detail.mask(coarse.notna() & ~lettered & ~coarse.isin(sub_staged), coarse)
        found = [lvl for group in STAGE_LEVELS
                 for lvl in (sorted(set(detail[lettered & (coarse == group)])) if group in sub_staged
                             else [group] if (coarse == group).any() else [])]
    unrecognised = sorted(raw[raw.notna() & coarse.isna()].unique().tolist())
    return coarse, detail, found, unrecognised


def read_cdr(sources: TcgaSources) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The project's TCGA-CDR rows as text (the pan-cancer table filtered by ``type``), with what was read.

    A project table whose ``type`` names another project is refused (a file renamed or copied into the wrong
    folder), and so are missing columns: both are one line naming the file and the fix.
    """
    path, code = sources.cdr, sources.project.code
    sep = "\t" if ".tsv" in path.name.lower() else ","
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
    raw = raw.drop(columns=[c for c in raw.columns if c == "" or c.startswith("Unnamed: ")])  # a spreadsheet's index
    report: dict[str, Any] = {"source_file": path.name}
    if "type" in raw.columns:
        types = raw["type"].str.strip()
        if sources.pancan:
            report["pan_cancer_rows"] = len(raw)
            raw = raw[types == code].reset_index(drop=True)
            if raw.empty:
                found = ", ".join(sorted(set(types) - {""})[:40])
                raise ValueError(f"{path.name} has no rows of type {code} (it has: {found}): pass the --project "
                                 "of one of those, or add the project's own table")
        elif (types != code).any():
            other = sorted(set(types) - {code})
            raise ValueError(f"{path.name} holds rows of type {', '.join(other[:5])}, not only {code}: it is "
                             f"another project's table; rename it to {other[0]}_cdr_endpoints.csv (and pass "
                             f"--project {other[0]}) or replace it with the {code} rows")
    elif sources.pancan:
        raise ValueError(f"{path.name} has no 'type' column: the pan-cancer TCGA-CDR table needs it to pick the "
                         f"{code} rows; add {code}_cdr_endpoints.csv with the {code} rows instead")
    needed = ["bcr_patient_barcode", *_CLINICAL_SOURCE, *(c for pair in ENDPOINTS.values() for c in pair)]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise ValueError(f"{path.name} lacks the TCGA-CDR column(s) {', '.join(missing)}: is it the TCGA-CDR table "
                         "(Liu et al., Cell 2018, Table S1)?")
    return raw, report


def _stage_column(raw: pd.DataFrame, project: TcgaProject) -> str | None:
    """The project's stage column, else the first candidate with a recognisable stage (None: no stage)."""
    if project.stage_column is not None:
        if project.stage_column not in raw.columns:
            raise ValueError(f"the TCGA-CDR table lacks {project.stage_column}, the stage column of "
                             f"{project.code}")
        return project.stage_column
    for col in STAGE_COLUMNS:
        if col in raw.columns and raw[col].str.match(_STAGE_RE, na=False).any():
            return col
    return None


def _clinical(raw: pd.DataFrame, project: TcgaProject, report: dict[str, Any] | None = None
              ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """The project's TCGA-CDR rows (:func:`read_cdr`) -> clinical.csv columns, plus what was cleaned (clinical and
    endpoint reports). Endpoints without any outcome in this project are left out of both, and reported."""
    fname = (report or {}).get("source_file", "the TCGA-CDR table")
    raw = raw.apply(lambda s: s.str.strip())
    placeholders: dict[str, dict[str, int]] = {}
    for col in raw.columns:
        mask = raw[col].str.match(_PLACEHOLDER_RE)
        if mask.any():
            placeholders[col] = {str(k): int(v) for k, v in raw.loc[mask, col].value_counts().sort_index().items()}
        raw[col] = raw[col].mask(mask | (raw[col] == ""))

    ids = raw["bcr_patient_barcode"]
    if ids.isna().any() or ids.duplicated().any() or not ids.str.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}").all():
        raise ValueError(f"{fname}: bcr_patient_barcode must be unique 12-character TCGA patient barcodes")

    stage_col = _stage_column(raw, project)
    no_stage = pd.Series(pd.NA, index=raw.index, dtype=object)
    coarse, detail, detail_levels, unrecognised = _stage(raw[stage_col] if stage_col else no_stage,
                                                         project.stage_detail_levels)
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
    without_outcome: list[str] = []
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
        if event.isna().all():  # nothing to model (e.g. an endpoint TCGA-CDR does not define for this project)
            without_outcome.append(name)
            continue
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
    if not endpoint_report:
        raise ValueError(f"{fname}: no patient of {project.code} has an outcome (OS, PFI, DSS or DFI): nothing to "
                         "model")
    clinical = clinical.sort_values("patient_id", kind="stable").reset_index(drop=True)

    clinical_report: dict[str, Any] = {
        **(report or {}),
        "patients": len(clinical),
        "placeholders_cleaned": placeholders,
        "stage_column": stage_col,
        "stage_counts": {lvl: int((clinical["stage"] == lvl).sum()) for lvl in STAGE_LEVELS},
        "stage_missing": int(clinical["stage"].isna().sum()),
        "stage_unrecognised": unrecognised,
        "stage_detail_levels": detail_levels,
        "stage_detail_unspecified_substage": int((clinical["stage"].notna() & clinical["stage_detail"].isna()).sum()),
        "endpoints_without_outcome": without_outcome,
        "dropped_source_columns": sorted(
            set(raw.columns)
            - {"bcr_patient_barcode", *_CLINICAL_SOURCE, *([stage_col] if stage_col else []),
               *(c for pair in ENDPOINTS.values() for c in pair)}
        ),
    }
    return clinical, clinical_report, endpoint_report


def _clinical_types(clinical: pd.DataFrame, detail_levels: list[str] | None = None) -> dict[str, Any]:
    """The cohort.yaml ``clinical:`` block. A column with fewer than two distinct values carries no information (and
    breaks per-feature scaling), so it stays in clinical.csv untyped: histological_type is constant in LUSC, and a
    project without a stage has none."""
    typed: dict[str, Any] = {
        "age": "numeric",
        "sex": "categorical",
        "race": "categorical",
        "stage": {"type": "ordinal", "levels": list(STAGE_LEVELS)},
        "stage_detail": {"type": "ordinal", "levels": list(STAGE_DETAIL_LEVELS if detail_levels is None
                                                           else detail_levels)},
        "histological_type": "categorical",
    }
    return {col: t for col, t in typed.items() if clinical[col].nunique() >= 2}


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
    """Stage-only Harrell's C per survival endpoint of the cohort (stage I..IV coded 1..4; patients without stage
    left out; None without a comparable pair, e.g. a project without stage)."""
    code = clinical["stage"].map({lvl: i + 1 for i, lvl in enumerate(STAGE_LEVELS)})
    result = {}
    for name, (time_col, event_col) in _endpoint_columns().items():
        if time_col not in clinical:
            continue
        keep = code.notna() & clinical[time_col].notna() & clinical[event_col].notna()
        result[name] = _harrell_c(
            clinical.loc[keep, time_col].to_numpy(float),
            clinical.loc[keep, event_col].to_numpy(float),
            code[keep].to_numpy(float),
        )
    return result

"""A cohort ready to score: read leniently (:func:`prepare_cohort`), then checked against the model (:func:`check_fit`,
and once extracted :func:`check_store`).

Rows that break the data contract are set aside with the reason recorded for their patient instead of failing the
whole cohort; what makes the whole cohort unfit for the model (columns, types, units, a different feature manifest) is
raised together as :class:`CohortMismatchError`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from omics_risk.data.contract import (
    CLINICAL_FILE,
    SAMPLES_FILE,
    SPEC_FILE,
    Cohort,
    CohortError,
    Problem,
    load_cohort,
    read_contract_csv,
)
from omics_risk.data.paths import rebase_cell, rebase_for_view
from omics_risk.scoring.frames import CLINICAL
from omics_risk.scoring.loading import BatchModel

__all__ = ["MAX_MISSING_FEATURES", "CohortMismatchError", "PreparedCohort", "check_fit", "check_store",
           "prepare_cohort"]

#: Settings keys that record library versions, not choices: a difference there is a warning, not an error.
_VERSION_KEYS = frozenset({"pyradiomics", "version", "monai"})
#: A modality may lack this fraction of the model's features at a timepoint (cohort-level QC, e.g. metabolites
#: failing this cohort's blank or QC filters) and be scored with them imputed; more is a feature manifest mismatch.
MAX_MISSING_FEATURES = 0.2


class CohortMismatchError(ValueError):
    """The cohort does not fit the model (missing columns, wrong types or units, a different feature manifest)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the cohort does not fit the model ({len(self.problems)} problem(s)):\n{shown}")


# ------------------------------------------------------------------------------------------------ the cohort
@dataclass
class PreparedCohort:
    """A cohort ready to extract and score, with what was set aside per patient."""

    cohort: Cohort
    root: Path  # the directory extraction reads (the cohort itself, or a repaired view of it)
    source: Path  # the cohort directory as given
    order: list[str]  # every patient to report, in clinical.csv order, then patients only in samples.csv
    #: pid -> [(what it concerns: a modality or ``clinical/<column>``, text)]
    notes: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # pid -> reason (cannot be scored at all)
    missing_columns: set[str] = field(default_factory=set)  # clinical columns absent from the original file
    warnings: list[str] = field(default_factory=list)


def _read_raw(path: Path) -> pd.DataFrame:
    """The table as the contract checks read it, so that their line numbers point at these rows."""
    return read_contract_csv(path)


def prepare_cohort(root: str | Path, view_dir: str | Path) -> PreparedCohort:
    """Load ``root``; when rows break the contract, set them aside (reasons per patient) in a repaired view.

    The view (``view_dir``) holds a corrected cohort.yaml / clinical.csv / samples.csv and symbolic links to every
    other entry of the cohort, so relative data paths resolve unchanged. Those links lead into the source cohort, so
    the view's cohort.yaml lists the source folder (and the source's data roots, made absolute) under ``data_roots``:
    every reader of the view (extraction too) allows exactly what the source allows. A samples.csv row leading outside
    the cohort is set aside like any other broken row. Problems that no row-level repair can fix (cohort.yaml, a
    missing or unreadable table, a missing samples.csv column) raise :class:`CohortError`.
    """
    root = Path(root)
    try:
        cohort = load_cohort(root)
        return PreparedCohort(cohort, root, root, _order(cohort.clinical, cohort.samples, {}))
    except CohortError as exc:
        problems = [p for p in exc.problems if p.severity == "error"]
    structural = [p for p in problems if not _repairable(p)]
    if structural:
        raise CohortError(structural)
    clinical = _read_raw(root / CLINICAL_FILE)
    samples = _read_raw(root / SAMPLES_FILE)
    spec_raw = yaml.safe_load((root / SPEC_FILE).read_text()) or {}
    endpoint_cols = [c for ep in (spec_raw.get("endpoints") or {}).values() if isinstance(ep, Mapping)
                     for c in (ep.get("time"), ep.get("event"), ep.get("column")) if c]
    notes: dict[str, list[tuple[str | None, str]]] = {}
    failed: dict[str, str] = {}
    warn: list[str] = []
    missing_cols: set[str] = set()
    drop_clin: set[int] = set()
    drop_samp: set[int] = set()
    lines_of: dict[str, list[int]] = {}  # patient_id -> its clinical.csv lines, built once (not a rescan per problem)
    for i, pid in zip(clinical.index, clinical["patient_id"].str.strip(), strict=True):
        if isinstance(pid, str):
            lines_of.setdefault(pid, []).append(int(i) + 2)
    for p in problems:
        row = (p.line - 2) if p.line is not None and p.line >= 2 else None
        if p.file == CLINICAL_FILE and row is None:  # a column is missing: add it empty (checked against the model)
            col = str(p.column)
            missing_cols.add(col)
            clinical[col] = np.nan
        elif p.file == CLINICAL_FILE:
            pid = clinical.at[row, "patient_id"] if row in clinical.index else None
            if p.column == "patient_id":
                drop_clin.add(row)
                if isinstance(pid, str) and pid.strip() and len(lines_of.get(pid.strip(), ())) > 1:
                    dup_lines = lines_of[pid.strip()]
                    failed[pid.strip()] = (f"patient_id appears on several lines of clinical.csv "
                                           f"({', '.join(map(str, dup_lines))}): cannot tell which row is this patient")
                    drop_clin.update(i - 2 for i in dup_lines)
                elif isinstance(pid, str) and pid.strip():  # e.g. a control character: reported, never scored
                    failed.setdefault(pid.strip(), f"clinical.csv line {p.line} [patient_id]: {p.message}")
                else:
                    warn.append(f"clinical.csv line {p.line} has no patient_id: that row is left out (no identifier "
                                "to report it under)")
            elif p.column in endpoint_cols:  # outcomes are not read by scoring: clear the row's outcome cells
                for c in endpoint_cols:
                    if c in clinical.columns:
                        clinical.at[row, c] = np.nan
            else:
                if isinstance(pid, str) and p.column in clinical.columns:
                    clinical.at[row, p.column] = np.nan
                    notes.setdefault(pid.strip(), []).append(
                        (f"{CLINICAL}/{p.column}", f"clinical.csv line {p.line} [{p.column}]: {p.message}; read as "
                                                   "missing"))
        else:  # samples.csv row
            drop_samp.add(row)
            pid = samples.at[row, "patient_id"] if row in samples.index else None
            mod = samples.at[row, "modality"] if row in samples.index and "modality" in samples else None
            mod = mod.strip() if isinstance(mod, str) else None
            if isinstance(pid, str) and pid.strip():
                pid = pid.strip()
                if "is not in clinical.csv" in p.message:
                    failed.setdefault(pid, f"not in clinical.csv (only in samples.csv, line {p.line}): no clinical "
                                           "data to score this patient with")
                else:
                    notes.setdefault(pid, []).append((mod, f"samples.csv line {p.line}: {p.message}; sample set "
                                                           "aside"))
            else:
                warn.append(f"samples.csv line {p.line}: {p.message}; that row is left out (no patient_id)")
    clinical = clinical.drop(index=sorted(drop_clin & set(clinical.index)))
    samples = samples.drop(index=sorted(drop_samp & set(samples.index)))
    samples = samples[~samples["patient_id"].str.strip().isin(list(failed))]  # their rows went with them
    view = Path(view_dir)
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    spec_view = rebase_for_view(spec_raw if isinstance(spec_raw, Mapping) else {}, root)
    (view / SPEC_FILE).write_text(yaml.safe_dump(spec_view, sort_keys=False), encoding="utf-8")
    clinical.to_csv(view / CLINICAL_FILE, index=False)
    for col in ("path", "mask_path"):
        if col in samples.columns:
            samples = samples.assign(**{col: samples[col].map(lambda v: rebase_cell(v, root))})
    samples.to_csv(view / SAMPLES_FILE, index=False)
    for entry in root.iterdir():
        if entry.name not in (SPEC_FILE, CLINICAL_FILE, SAMPLES_FILE):
            (view / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    cohort = load_cohort(view)  # anything still wrong is structural: CohortError
    order = _order(_read_raw(root / CLINICAL_FILE), _read_raw(root / SAMPLES_FILE), failed)
    return PreparedCohort(cohort, view, root, order, notes, failed, missing_cols, warn)


def _repairable(p: Problem) -> bool:
    if p.file == CLINICAL_FILE:
        if p.line is not None and p.line >= 2:
            return True
        return p.column is not None and p.column != "patient_id" and "is missing" in p.message
    if p.file == SAMPLES_FILE:
        return p.line is not None and p.line >= 2
    return False


def _order(clinical: pd.DataFrame, samples: pd.DataFrame, failed: Mapping[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for frame in (clinical, samples):
        if "patient_id" in frame:
            for pid in frame["patient_id"].dropna().astype(str).str.strip():
                if pid and (frame is clinical or pid in failed):
                    seen.setdefault(pid, None)
    return list(seen)


# ------------------------------------------------------------------------------------------------ fit checks
def _kind(declared: str | None) -> str | None:
    return {"numeric": "double", "binary": "double", "categorical": "string", "ordinal": "string"}.get(declared or "")


_UNIT_FACTORS = {"weeks": 7.0, "months": 365.25 / 12, "years": 365.25}


def check_fit(bm: BatchModel, prep: PreparedCohort) -> list[str]:
    """Problems that make the cohort unfit for the model (raised together); returns the softer warnings."""
    cohort = prep.cohort
    errors: list[str] = []
    notes: list[str] = []
    # clinical columns and their kinds
    missing = [c for c in bm.manifest.clinical if c in prep.missing_columns or c not in cohort.clinical.columns]
    undeclared = [c for c in bm.manifest.clinical if c not in missing and c not in cohort.spec.clinical]
    if missing:
        errors.append(f"clinical.csv lacks column(s) the model needs: {', '.join(missing)} (add them; empty cells "
                      "are allowed and are imputed)")
    if undeclared:
        want = {c: ("numeric" if bm.manifest.clinical[c] == "double" else "categorical or ordinal") for c in undeclared}
        errors.append("cohort.yaml does not declare clinical column(s) the model needs: "
                      + ", ".join(f"{c} (as {t})" for c, t in want.items()) + "; add them under clinical:")
    trained = (bm.settings.get("cohort") or {}).get("clinical") or {}
    for c, kind in bm.manifest.clinical.items():
        col = cohort.spec.clinical.get(c)
        if col is None or c in missing:
            continue
        if _kind(col.type) != kind:
            errors.append(f"clinical column '{c}' is declared {col.type} here but the model reads it as "
                          f"{'a number' if kind == 'double' else 'text (categories / levels)'}"
                          + (f" ({trained[c]['type']} in training)" if c in trained else ""))
        elif col.type == "ordinal" and c in trained and trained[c].get("levels"):
            extra = [lv for lv in col.levels if lv not in trained[c]["levels"]]
            if extra:
                notes.append(f"clinical column '{c}' has level(s) {extra} the training cohort did not have "
                             f"(training levels: {trained[c]['levels']}): they are scored as unseen")
    # modalities: formats, timepoints, sample days
    profile = bm.settings.get("cohort") or {}
    formats = dict(profile.get("formats") or {})
    for m, info in (bm.settings.get("extraction") or {}).items():
        formats.setdefault(m, info.get("format"))
    days = profile.get("sample_days") or {}
    day_checks: list[tuple[str, str, float, float, str | None]] = []
    pt = bm.prediction_time
    labels = set(cohort.samples["timepoint"].astype(str)) if "timepoint" in cohort.samples else set()
    if pt is not None and pt.at == "timepoint" and not len(cohort.samples):
        notes.append(f"this cohort has no samples (clinical-only): the model predicts at {pt.describe()}, which "
                     "cannot be placed, so every patient is scored at the index date from the clinical data, as "
                     "training does for such a cohort")
    elif pt is not None and pt.at == "timepoint" and pt.timepoint not in labels:
        errors.append(f"the model predicts at {pt.describe()}, but no sample of this cohort has timepoint "
                      f"'{pt.timepoint}' (samples.csv has: {', '.join(sorted(labels)[:20])}): no patient has a "
                      "prediction day; rename the timepoint in samples.csv to the model's")
    for m in bm.stored + bm.images:
        if m not in cohort.modalities:
            notes.append(f"this cohort has no '{m}' sample: every patient is scored without {m}")
            continue
        fmt = getattr(cohort.spec.modality(m), "format", None)
        want = "image" if m in bm.images else formats.get(m)
        if want and fmt != want:
            errors.append(f"modality '{m}' is {fmt} here but {want} for the model: its features cannot be compared")
        tps = bm.timepoints(m)
        rows = cohort.samples_of(m)
        have = sorted(rows["timepoint"].astype(str).unique())
        if pt is not None and pt.windows:  # slots are day windows around the prediction time, not labels
            tps = []
        if tps and not set(tps) & set(have):
            errors.append(f"feature manifest mismatch: the model uses '{m}' at timepoint(s) {', '.join(tps)}, but "
                          f"this cohort's {m} samples are at {', '.join(have)}; rename the timepoints in samples.csv "
                          "to the model's")
        elif tps and set(have) - set(tps):
            notes.append(f"'{m}' samples at timepoint(s) {', '.join(sorted(set(have) - set(tps)))} are not used by "
                         f"the model (it uses {', '.join(tps)})")
        for tp, train_day in (days.get(m) or {}).items():
            sel = rows[rows["timepoint"].astype(str) == tp]
            here = pd.to_numeric(sel["day"], errors="coerce").median() if len(sel) else math.nan
            if np.isfinite(here) and abs(train_day) >= 7 and here != 0:
                ratio = train_day / here
                unit = next((u for u, f in {"days": 1.0, **_UNIT_FACTORS}.items() if abs(ratio / f - 1) < 0.2), None)
                day_checks.append((m, tp, here, train_day, unit))
    # sample days in another unit: every comparable timepoint must agree on it (a schedule may differ; a unit
    # shifts them all by the same factor)
    units = {u for *_, u in day_checks}
    if day_checks and len(units) == 1 and next(iter(units)) in _UNIT_FACTORS:
        unit = next(iter(units))
        shown = "; ".join(f"{m} at {tp}: median {here:g} here, {train:g} in training" for m, tp, here, train, _ in
                          day_checks[:4])
        errors.append(f"samples.csv 'day' must be in days, but these look like {unit} ({shown}); convert them")
    # CT images: the preprocessing must give the crops the network was trained on
    if bm.images:
        from omics_risk.features.ct import CTConfig  # lazy: torch and monai, only for a CT-image model

        if not bm.settings.get("ct"):
            notes.append("the model ships no CT preprocessing settings (logged without ct_config): the default "
                         "CT preprocessing is used")
        cfg = CTConfig.from_mapping(bm.settings["ct"]) if bm.settings.get("ct") else CTConfig()
        trained_shape = getattr(bm.model, "image_shape_", None)
        here = [2 if cfg.mask_channel else 1, *cfg.roi_size]
        if trained_shape is not None and list(trained_shape) != here:
            errors.append(f"CT preprocessing gives crops of shape {here} (channels, x, y, z) but the model was "
                          f"trained on {list(trained_shape)}: log the model with its ct_config")
    # horizons beyond the training follow-up
    last = getattr(bm.model, "baseline_times_", getattr(bm.model, "baseline_time_", None))
    if last is not None and len(last):
        beyond = [h for h in bm.horizons if h > float(np.max(last))]
        if beyond:
            notes.append(f"horizon(s) {', '.join(f'{h:g}' for h in beyond)} days lie beyond the last training event "
                         f"time ({float(np.max(last)):g} days): survival is held constant there")
    if errors:
        raise CohortMismatchError(errors)
    return notes


def check_store(bm: BatchModel, store: Path, extracted: Sequence[str]) -> list[str]:
    """The extracted store must match the model: same extractors (settings hash) and the model's feature names."""
    manifest = json.loads((store / "manifest.json").read_text())
    errors: list[str] = []
    notes: list[str] = []
    trained = bm.settings.get("extraction") or {}
    for m in extracted:
        here = manifest.get("modalities", {}).get(m, {})
        if m in trained:
            want = {e.get("name"): e for e in trained[m].get("extractors", [])}
            got = {e.get("name"): e for e in here.get("extractors", [])}
            if set(want) != set(got):
                errors.append(f"feature manifest mismatch: '{m}' was extracted with {sorted(got)} here but "
                              f"{sorted(want)} for the model")
            for name in set(want) & set(got):
                a, b = want[name], got[name]
                if a.get("settings_hash") == b.get("settings_hash"):
                    continue
                sa, sb = a.get("settings") or {}, b.get("settings") or {}
                diff = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
                if str(a.get("version")) != str(b.get("version")):
                    errors.append(f"feature manifest mismatch: extractor {name} of '{m}' is version "
                                  f"{b.get('version')} here, {a.get('version')} for the model")
                elif set(diff) <= _VERSION_KEYS:
                    notes.append(f"extractor {name} of '{m}' runs with other library versions than in training "
                                 f"({', '.join(f'{k}: {sa.get(k)} -> {sb.get(k)}' for k in diff)})")
                else:
                    errors.append(f"feature manifest mismatch: extractor {name} of '{m}' has other settings than "
                                  f"for the model ({', '.join(diff)}); remove the cohort.yaml "
                                  f"modalities.{m}.extract override or retrain")
        path = store / f"{m}.parquet"
        if not path.is_file() or m not in bm.manifest.modalities:  # a derived input's source is no model input
            continue
        cols = set(pq.read_schema(path).names)
        feats = bm.manifest.modalities[m]
        by_tp: dict[str, list[str]] = {}
        for f in feats:
            by_tp.setdefault(f.split("__", 1)[0] if "__" in f else "", []).append(f)
        for tp, fs in by_tp.items():
            lacking = [f for f in fs if f not in cols]
            if not (tp and lacking and len(lacking) < len(fs)):  # all there, or the timepoint absent altogether
                continue
            shown = ", ".join(lacking[:8]) + (" ..." if len(lacking) > 8 else "")
            if len(lacking) > MAX_MISSING_FEATURES * len(fs):
                errors.append(f"feature manifest mismatch: '{m}' at {tp} lacks {len(lacking)} of the model's "
                              f"{len(fs)} features ({shown}); the extracted features are not the ones it was "
                              "trained on")
            else:
                notes.append(f"'{m}' at {tp} lacks {len(lacking)} of the model's {len(fs)} features ({shown}), e.g. "
                             "features this cohort's QC removed: they are missing for every patient (imputed)")
    if errors:
        raise CohortMismatchError(errors)
    return notes


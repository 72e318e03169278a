"""``clinical.csv`` and ``samples.csv``: read as text and typed by the contract, every bad cell a located
:class:`~omics_risk.data.problems.Problem` (file, line, column), none of the data files opened.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from omics_risk.data.formats import format_names, get_format
from omics_risk.data.paths import Confinement, printable, refusal
from omics_risk.data.problems import CohortError, Problem
from omics_risk.data.readers import first_wide_line
from omics_risk.data.spec import (
    _CONTROL,
    CLINICAL_FILE,
    ID_COLUMNS,
    MAX_YEARS,
    SAMPLES_COLUMNS,
    SAMPLES_FILE,
    SAMPLES_OPTIONAL,
    TIME_UNITS,
    CohortSpec,
    SurvivalEndpoint,
)


def _read_csv(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """Read a contract CSV as strings so that types are checked by us, with file and line, not guessed.

    Two pandas habits would hide a broken file: the C parser cuts a cell at a NUL byte (so such a file is parsed by
    the Python engine, which keeps it for the control-character check), and a repeated column name is silently
    renamed ``name.1`` (so names are taken from the raw header, and a repeated one is an error; the first copy is
    read).
    """
    fname = path.name
    if not path.is_file():
        problems.append(Problem("error", fname, "missing file"))
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem("error", fname, f"cannot be read: {exc}"))
        return None
    engine: Literal["c", "python"] = "python" if b"\x00" in data else "c"
    try:
        header = pd.read_csv(io.BytesIO(data), header=None, nrows=1, dtype=str, na_filter=False,
                             skipinitialspace=True, engine=engine)
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True,
                         engine=engine)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem("error", fname, f"cannot be read as CSV: {exc}"))
        return None
    if not isinstance(df.index, pd.RangeIndex):
        # pandas silently makes the first column the index when the first data line has one field too many.
        problems.append(Problem("error", fname, f"a data line has more fields than the header has column names "
                                f"({len(df.columns)}); remove the extra field or name its column in the header",
                                first_wide_line(data.decode("utf-8-sig", "replace"), ",", len(df.columns))))
        return None
    parsed = [str(c).strip() for c in df.columns]
    raw = [str(c).strip() for c in header.iloc[0]] if len(header) else []
    names = [r or p for r, p in zip(raw, parsed, strict=True)] if len(raw) == len(parsed) else parsed
    positions: dict[str, list[int]] = {}
    for k, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(k)
    for name, where in positions.items():
        if len(where) > 1:
            problems.append(Problem("error", fname, f"column '{printable(name)}' appears {len(where)} times in the "
                                    f"header (columns {', '.join(map(str, where))}); column names must be unique: "
                                    "delete or rename the extra copies (only the first is read)", 1, name))
    df.columns = names
    return df.loc[:, ~df.columns.duplicated(keep="first")]


def read_contract_csv(path: Path) -> pd.DataFrame:
    """A contract CSV exactly as the checks read it (text cells, header names as written, NUL bytes kept).

    For callers that repair rows the checks located (``omics-risk score``): they must see the same rows and columns.
    Raises :class:`CohortError` when the file cannot be read at all.
    """
    problems: list[Problem] = []
    df = _read_csv(Path(path), problems)
    if df is None:
        raise CohortError(problems)
    return df


def _line(index: int) -> int:
    """CSV line of a 0-based data row (header is line 1)."""
    return int(index) + 2


def _duplicates(df: pd.DataFrame, cols: list[str], fname: str, what: str) -> Iterator[Problem]:
    """Every repeat of a key after its first row, naming that first line (one pass: a dict of first rows)."""
    first: dict[tuple[Any, ...], Any] = {}
    for idx, key in zip(df.index, zip(*(df[c] for c in cols), strict=True), strict=True):
        seen = first.setdefault(key, idx)
        if seen != idx:
            desc = ", ".join(f"{c}={printable(str(v))}" for c, v in zip(cols, key, strict=True))
            yield Problem("error", fname, f"duplicate {what} ({desc}); first seen on line {_line(seen)}",
                          _line(idx), cols[-1])


def _control_characters(df: pd.DataFrame, cols: Iterable[str], fname: str) -> Iterator[Problem]:
    """Identifier cells holding a control character (checked before stripping, which would hide some of them)."""
    for c in cols:
        if c not in df.columns:
            continue
        values = df[c]
        for idx in df.index[values.str.contains(_CONTROL, na=False).to_numpy()]:
            value = str(values.at[idx])
            char = printable(_CONTROL.search(value).group())  # type: ignore[union-attr]
            yield Problem("error", fname, f"{c} '{printable(value)}' contains a control character ({char}); "
                          "identifiers must be printable text: remove it (often a stray tab, line break or NUL from "
                          "an export)", _line(idx), c)


def _numbers(df: pd.DataFrame, col: str, fname: str, problems: list[Problem], *, what: str,
             integer: bool = False, minimum: float | None = None, maximum: float | None = None,
             allowed: Iterable[float] | None = None, hint: str = "", minimum_note: str = "",
             maximum_note: str = "") -> pd.Series:
    """Coerce a column to numbers, reporting every unparsable, non-finite or out-of-range cell with its line.

    The checks are vectorised; Python only loops over the bad cells, to word their messages.
    """
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    given = raw.notna().to_numpy()
    v = values.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(v)
        bad = given & ~finite
        if integer:
            bad |= finite & (v != np.round(v))
        if minimum is not None:
            bad |= finite & (v < minimum)
        if maximum is not None:
            bad |= finite & (v > maximum)
    allowed_set = set(allowed) if allowed is not None else None
    if allowed_set is not None:
        bad |= finite & ~np.isin(v, list(allowed_set))
    for pos in np.flatnonzero(bad):
        idx, cell, x = df.index[pos], raw.iloc[pos], v[pos]
        if np.isnan(x):
            msg = f"{what} must be a number, got {cell!r}{hint}"
        elif not np.isfinite(x):
            msg = f"{what} must be a finite number, got {cell!r}{hint}"
        elif integer and x != round(x):
            msg = f"{what} must be a whole number, got {cell!r}{hint}"
        elif minimum is not None and x < minimum:
            msg = f"{what} must be >= {minimum:g}{minimum_note}, got {cell!r}{hint}"
        elif maximum is not None and x > maximum:
            msg = f"{what} must be <= {maximum:g}{maximum_note}, got {cell!r}{hint}"
        else:
            allowed_txt = " or ".join(f"{a:g}" for a in sorted(allowed_set or ()))
            msg = f"{what} must be {allowed_txt}, got {cell!r}{hint}"
        problems.append(Problem("error", fname, msg, _line(idx), col))
    return values


def read_clinical(root: Path, spec: CohortSpec | None) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read ``clinical.csv`` and type its endpoint and declared columns; return the frame and problems."""
    problems: list[Problem] = []
    df = _read_csv(root / CLINICAL_FILE, problems)
    if df is None:
        return None, problems
    f = CLINICAL_FILE
    if "patient_id" not in df.columns:
        problems.append(Problem("error", f, "required column 'patient_id' is missing", 1, "patient_id"))
        return None, problems
    problems.extend(_control_characters(df, ["patient_id"], f))
    df["patient_id"] = df["patient_id"].str.strip()
    for idx in df.index[df["patient_id"].isna()]:
        problems.append(Problem("error", f, "empty patient_id: every patient needs an identifier", _line(idx),
                                "patient_id"))
    problems.extend(_duplicates(df.dropna(subset=["patient_id"]), ["patient_id"], f, "patient_id"))
    if spec is None:
        return df, problems
    # Missing means an empty cell; an unparsable one is already an error and must not also count as missing.
    given = df.notna()
    for ep in spec.endpoints.values():
        for col in ep.columns:
            if col not in df.columns:
                problems.append(Problem("error", f, f"column '{col}' of endpoint '{ep.name}' is missing "
                                        "(rename the column or fix cohort.yaml)", 1, col))
        if isinstance(ep, SurvivalEndpoint):
            if ep.time in df.columns:
                df[ep.time] = _numbers(df, ep.time, f, problems, what=f"{ep.name} time", minimum=0.0,
                                       maximum=spec.horizon, hint=f" ({spec.time_unit} since the index date)",
                                       maximum_note=f" ({spec.max_years:g} years, the horizon set by max_years in "
                                       "cohort.yaml)")
                times = df[ep.time].where(np.isfinite(df[ep.time].astype(float)))
                median = float(times.median()) if times.notna().any() else None
                if median is not None and not 7.0 <= median * spec.days_per_unit <= spec.horizon_days:
                    problems.append(Problem("warning", f, f"median '{ep.time}' is {median:g} "
                                            f"{spec.time_unit}: is time_unit right?", None, ep.time))
            if ep.event in df.columns:
                df[ep.event] = _numbers(df, ep.event, f, problems, what=f"{ep.name} event", allowed=(0.0, 1.0),
                                        hint=" (1 = event, 0 = censored)")
            if ep.time in df.columns and ep.event in df.columns:
                incomplete = given[ep.time] ^ given[ep.event]
                n_missing = int((~given[ep.time] | ~given[ep.event]).sum())
                for idx in df.index[incomplete]:
                    problems.append(Problem("error", f, f"endpoint '{ep.name}' has only one of time/event; give "
                                            "both or leave both empty", _line(idx), ep.time))
                if n_missing:
                    problems.append(Problem("warning", f, f"{n_missing} patient(s) have no '{ep.name}' outcome and "
                                            "are left out of that endpoint only"))
        elif ep.column in df.columns:
            df[ep.column] = _numbers(df, ep.column, f, problems, what=f"{ep.name} outcome", allowed=(0.0, 1.0),
                                     hint=" (1 = responder, 0 = non-responder, empty = not assessed)")
    for col in spec.clinical.values():
        if col.name not in df.columns:
            problems.append(Problem("error", f, f"clinical column '{col.name}' declared in cohort.yaml is missing",
                                    1, col.name))
            continue
        if col.type == "numeric":
            df[col.name] = _numbers(df, col.name, f, problems, what=col.name)
        elif col.type == "binary":
            df[col.name] = _numbers(df, col.name, f, problems, what=col.name, allowed=(0.0, 1.0))
        elif col.type == "ordinal":
            bad = df[col.name].notna() & ~df[col.name].isin(col.levels)
            for idx in df.index[bad]:  # one grouped line in the report, with the distinct values (problems.py)
                problems.append(Problem("error", f, f"'{df.at[idx, col.name]}' is not a level of ordinal column "
                                        f"'{col.name}' (levels: {', '.join(col.levels)}); add the value to its levels "
                                        f"in cohort.yaml (clinical: {{{col.name}: {{type: ordinal, levels: [...]}}}}) "
                                        "or map it to a declared level in clinical.csv (IIA -> II)", _line(idx),
                                        col.name))
    return df, problems


def _confine_samples(df: pd.DataFrame, confinement: Confinement, fname: str) -> Iterator[Problem]:
    """Every path / mask_path cell that resolves outside the cohort folder and its data roots."""
    for col in ("path", "mask_path"):
        values = df[col]
        given = values.notna().to_numpy()
        for idx, value in zip(df.index[given], values[given], strict=True):
            _, why = confinement.check(value)
            if why is not None:
                yield Problem("error", fname, refusal(col, value, why), _line(idx), col)


def read_samples(root: Path, spec: CohortSpec | None, patients: Iterable[str] | None, *,
                 extra_roots: Iterable[str | Path] = ()) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read ``samples.csv``, check its schema and keys; does not open the data files (see validate).

    Every ``path`` / ``mask_path`` must resolve (symbolic links followed) inside the cohort folder, one of the
    spec's ``data_roots`` or ``extra_roots``; this needs the spec, so it is skipped when cohort.yaml is unusable.
    """
    problems: list[Problem] = []
    f = SAMPLES_FILE
    if not (root / f).exists():  # a clinical-only cohort: no sample of any modality, and that is fine
        problems.append(Problem("note", f, "no samples.csv: a clinical-only cohort (models use clinical.csv alone)"))
        return pd.DataFrame({c: pd.Series(dtype=float if c == "day" else object)
                             for c in (*SAMPLES_COLUMNS, "mask_path")}), problems
    df = _read_csv(root / f, problems)
    if df is None:
        return None, problems
    required = [c for c in SAMPLES_COLUMNS if c not in SAMPLES_OPTIONAL]
    missing = [c for c in required if c not in df.columns]
    for c in missing:
        problems.append(Problem("error", f, f"required column '{c}' is missing (columns: {', '.join(required)}; "
                                f"optional: {', '.join(SAMPLES_OPTIONAL)}, mask_path)", 1, c))
    if missing:
        return None, problems
    absent = [c for c in SAMPLES_OPTIONAL if c not in df.columns]
    if absent and len(df):
        problems.append(Problem("note", f, f"no {' or '.join(repr(c) for c in absent)} column: every sample is taken "
                                "at the index date (timepoint 'baseline', day 0), so a prediction time selects them "
                                "all; add the column(s) where samples were taken at different times"))
    for c in absent:
        df[c] = pd.Series(SAMPLES_OPTIONAL[c], index=df.index, dtype=object)
    if "mask_path" not in df.columns:
        df["mask_path"] = pd.NA
    problems.extend(_control_characters(df, ID_COLUMNS, f))
    for c in ("patient_id", "sample_id", "modality", "timepoint", "path", "mask_path"):
        df[c] = df[c].str.strip()
    for c in ("patient_id", "sample_id", "modality", "timepoint", "path"):
        for idx in df.index[df[c].isna()]:
            problems.append(Problem("error", f, f"empty {c}", _line(idx), c))
    max_years = spec.max_years if spec is not None else MAX_YEARS
    horizon = max_years * TIME_UNITS["years"]
    df["day"] = _numbers(df, "day", f, problems, what="day", minimum=-horizon, maximum=horizon,
                         hint=" (days from the index date; negative before it)",
                         minimum_note=f" ({max_years:g} years before the index date, the horizon set by max_years "
                         "in cohort.yaml)",
                         maximum_note=f" ({max_years:g} years after the index date, the horizon set by max_years "
                         "in cohort.yaml)")
    if spec is not None:
        problems.extend(_confine_samples(df, Confinement.of(root, [*spec.data_roots, *extra_roots]), f))
    problems.extend(_duplicates(df.dropna(subset=["sample_id"]), ["sample_id"], f, "sample_id"))
    keyed = df.dropna(subset=["patient_id", "modality", "timepoint"])
    problems.extend(_duplicates(keyed, ["patient_id", "modality", "timepoint"], f, "(patient, modality, timepoint)"))
    if patients is not None:
        known = set(patients)
        for idx in df.index[df["patient_id"].notna() & ~df["patient_id"].isin(known)]:
            pid = printable(df.at[idx, "patient_id"])
            problems.append(Problem("error", f, f"patient '{pid}' is not in clinical.csv (add the patient or remove "
                                    "the sample)", _line(idx), "patient_id"))
    if spec is not None:
        formats = {m: spec.modality(m) for m in df["modality"].dropna().unique()}
        unknown = df["modality"].isin([m for m, ms in formats.items() if ms is None])
        image = df["modality"].isin([m for m, ms in formats.items() if ms is not None and _needs_mask(ms.format)])
        for idx in df.index[(unknown | (image & df["mask_path"].isna())).to_numpy()]:
            mod = df.at[idx, "modality"]
            if formats[mod] is None:
                problems.append(Problem("error", f, f"unknown modality '{printable(mod)}': declare it in cohort.yaml "
                                        f"under 'modalities: {{{mod}: {{format: table}}}}' (formats: "
                                        f"{', '.join(format_names())})", _line(idx), "modality"))
            else:
                sid = printable(str(df.at[idx, "sample_id"]))
                problems.append(Problem("error", f, f"image sample '{sid}' needs a mask_path (the tumour mask on the "
                                        "same grid)", _line(idx), "mask_path"))
    return df, problems


def _needs_mask(fmt: str) -> bool:
    entry = get_format(fmt)
    return entry is not None and entry.needs_mask

"""The cohort data contract: what a cohort directory holds and how it is parsed.

docs/data_format.md is the user-facing description; this module is its executable form. Parsing never
raises on bad content: it returns :class:`Problem` records so that ``omics-risk validate`` can report every
problem at once, and :func:`load_cohort` raises :class:`CohortError` carrying all of them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from omics_risk.data.formats import default_format_of, format_names, get_format
from omics_risk.data.paths import Confinement, PathOutsideCohortError, printable, refusal, unusable_path
from omics_risk.data.readers import first_wide_line

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_MODALITY_FORMATS",
    "FORMATS",
    "MAX_YEARS",
    "SAMPLES_COLUMNS",
    "TIME_UNITS",
    "BinaryEndpoint",
    "ClinicalColumn",
    "Cohort",
    "CohortError",
    "CohortSpec",
    "ModalitySpec",
    "PathOutsideCohortError",
    "Problem",
    "SurvivalEndpoint",
    "load_cohort",
    "parse_spec",
    "read_clinical",
    "read_contract_csv",
    "read_samples",
]

CONTRACT_VERSION = 1
#: Days per unit, so every endpoint can be turned into days for horizons and checks.
TIME_UNITS: dict[str, float] = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12, "years": 365.25}
#: The default horizon (cohort.yaml ``max_years``): an endpoint time beyond it, or a sample day further than it from
#: the index date, is a typo or a wrong unit (``1e308``, a day count in seconds), not follow-up.
MAX_YEARS = 100.0
#: The built-in formats, their default modality names and the shared-file ones, as registered in
#: :mod:`omics_risk.data.formats` at import (a snapshot kept for callers; the contract asks the registry, so a format
#: registered later counts too).
FORMATS = format_names()
_BUILT_IN = [f for f in map(get_format, FORMATS) if f is not None]
DEFAULT_MODALITY_FORMATS: dict[str, str] = {m: f.name for f in _BUILT_IN for m in f.default_modalities}
SHARED_FILE_FORMATS = frozenset(f.name for f in _BUILT_IN if f.shared_file)
SAMPLES_COLUMNS = ("patient_id", "sample_id", "modality", "timepoint", "day", "path")
CLINICAL_TYPES = ("numeric", "categorical", "ordinal", "binary")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: Identifier columns that must hold printable text: a control character (a NUL, a tab, a line break from an export)
#: makes two ids that look the same differ, and a NUL cuts a cell short in most CSV readers.
ID_COLUMNS = ("patient_id", "sample_id", "modality", "timepoint")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CLINICAL_FILE = "clinical.csv"
SAMPLES_FILE = "samples.csv"
SPEC_FILE = "cohort.yaml"


@dataclass(frozen=True)
class Problem:
    """One finding about a cohort, located as precisely as possible.

    ``line`` is the 1-based line of a CSV file (the header is line 1, the first data row line 2), so an
    editor jumps straight to it.
    """

    severity: Literal["error", "warning"]
    file: str
    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f" [{self.column}]"
        return f"{self.severity.upper()}: {where}: {self.message}"


class CohortError(ValueError):
    """A cohort that breaks the contract; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        shown = "\n".join(f"  {p}" for p in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(
            f"cohort breaks the data contract ({len(errors)} error(s)); run `omics-risk validate` for the full "
            f"report:\n{shown}{more}"
        )


@dataclass(frozen=True)
class SurvivalEndpoint:
    name: str
    time: str
    event: str
    type: Literal["survival"] = "survival"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.time, self.event)


@dataclass(frozen=True)
class BinaryEndpoint:
    name: str
    column: str
    type: Literal["binary"] = "binary"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)


Endpoint = SurvivalEndpoint | BinaryEndpoint


@dataclass(frozen=True)
class ClinicalColumn:
    name: str
    type: str
    levels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModalitySpec:
    """A modality name, its file format and format options (e.g. the metabolomics sample sheet)."""

    name: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CohortSpec:
    """The parsed ``cohort.yaml``."""

    name: str
    time_unit: str
    endpoints: dict[str, Endpoint]
    clinical: dict[str, ClinicalColumn]
    modalities: dict[str, ModalitySpec]
    references: dict[str, str]
    contract_version: int = CONTRACT_VERSION
    #: Shared folders outside the cohort that data paths may lead into (cohort.yaml ``data_roots``), resolved.
    data_roots: tuple[Path, ...] = ()
    #: The horizon in years (cohort.yaml ``max_years``) for endpoint times and sample days.
    max_years: float = MAX_YEARS

    def modality(self, name: str) -> ModalitySpec | None:
        """The declared modality, or the default one for a well-known name."""
        if name in self.modalities:
            return self.modalities[name]
        default = default_format_of(name)
        return ModalitySpec(name, default) if default is not None else None

    @property
    def days_per_unit(self) -> float:
        return TIME_UNITS[self.time_unit]

    @property
    def horizon_days(self) -> float:
        """``max_years`` in days: the furthest a sample day may lie from the index date."""
        return self.max_years * TIME_UNITS["years"]

    @property
    def horizon(self) -> float:
        """``max_years`` in ``time_unit``: the longest endpoint time accepted."""
        return self.horizon_days / self.days_per_unit


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 60, 60


def _shown(value: object) -> str:
    """A bounded repr of a YAML value for a message: YAML aliases can nest a 400-byte file into 10^8 elements."""
    return _SHORT_REPR.repr(value)


def _parse_data_roots(raw: Any, root: Path, problems: list[Problem], fname: str) -> list[Path]:
    """The resolved ``data_roots`` folders; each must exist and be a folder (else an error naming the key)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        problems.append(Problem("error", fname, "'data_roots' must be a list of folders, absolute or relative to the "
                                f"cohort folder, e.g. data_roots: [/archive/ct]; got {_shown(raw)}", None,
                                "data_roots"))
        return []
    out: list[Path] = []
    for k, entry in enumerate(raw, start=1):
        where = f"data_roots entry {k} '{printable(entry)}'"
        why = unusable_path(entry) if entry.strip() else "is empty"
        if why is not None:
            problems.append(Problem("error", fname, f"{where} {why}; give the path of an existing folder", None,
                                    "data_roots"))
            continue
        folder = Path(entry) if Path(entry).is_absolute() else root / entry
        try:
            exists, is_dir = folder.exists(), folder.is_dir()
        except OSError as exc:
            exists, is_dir, why = False, False, str(exc)
        if not exists:
            problems.append(Problem("error", fname, f"{where} does not exist ({folder}{'; ' + why if why else ''}): "
                                    "create or mount it, or remove it from data_roots", None, "data_roots"))
        elif not is_dir:
            problems.append(Problem("error", fname, f"{where} is not a folder ({folder}): data_roots lists the "
                                    "folders that hold data files", None, "data_roots"))
        else:
            out.append(Path(os.path.realpath(folder)))
    return out


def _parse_max_years(raw: Any, problems: list[Problem], fname: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        problems.append(Problem("error", fname, "'max_years' must be a positive number of years (the horizon beyond "
                                "which an endpoint time or a sample day is rejected as a typo; default "
                                f"{MAX_YEARS:g}); got {_shown(raw)}", None, "max_years"))
        return MAX_YEARS
    return float(raw)


def parse_spec(path: Path, *, extra_roots: Iterable[str | Path] = ()) -> tuple[CohortSpec | None, list[Problem]]:
    """Parse ``cohort.yaml``; return the spec (None when unusable) and every problem found.

    Paths it names (``references:``, a metabolomics ``sample_sheet`` / ``features``) must stay inside the cohort
    folder, its ``data_roots`` or ``extra_roots`` (folders a caller allows, such as the source of a repaired copy).
    """
    fname = path.name
    problems: list[Problem] = []

    def err(msg: str) -> None:
        problems.append(Problem("error", fname, msg))

    if not path.is_file():
        return None, [Problem("error", fname, f"missing: every cohort directory needs {SPEC_FILE}")]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # PyYAML's constructors also leak ValueError (date 2020-13-45), RecursionError, ...
        return None, [Problem("error", fname, f"not valid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [Problem("error", fname, "must be a YAML mapping with keys name, time_unit, endpoints")]

    known = {"contract_version", "name", "time_unit", "endpoints", "clinical", "modalities", "references",
             "data_roots", "max_years"}
    for key in sorted(set(raw) - known, key=str):  # YAML keys may be numbers, dates, None
        known_txt = ", ".join(sorted(known))
        problems.append(Problem("warning", fname, f"unknown key '{key}' is ignored (known: {known_txt})"))

    version = raw.get("contract_version", CONTRACT_VERSION)
    if version != CONTRACT_VERSION:
        err(f"contract_version {_shown(version)} is not supported by this omics-risk (supports {CONTRACT_VERSION})")

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        err("'name' is required (a non-empty string)")
        name = path.parent.name
    time_unit = raw.get("time_unit")
    if not isinstance(time_unit, str) or time_unit not in TIME_UNITS:
        err(f"'time_unit' must be one of {', '.join(TIME_UNITS)}; got {_shown(time_unit)}")
        time_unit = "days"

    endpoints: dict[str, Endpoint] = {}
    raw_endpoints = raw.get("endpoints")
    if not isinstance(raw_endpoints, dict) or not raw_endpoints:
        err("'endpoints' must map at least one endpoint name to {type: survival, time: COL, event: COL} "
            "or {type: binary, column: COL}")
        raw_endpoints = {}
    for ep_name, ep in raw_endpoints.items():
        if not isinstance(ep_name, str) or not NAME_RE.match(ep_name):
            err(f"endpoint name {ep_name!r} must be a lower-case identifier such as 'rfs'")
            continue
        if not isinstance(ep, dict):
            err(f"endpoint '{ep_name}' must be a mapping with a 'type'")
            continue
        kind = ep.get("type")
        if kind == "survival":
            if not isinstance(ep.get("time"), str) or not isinstance(ep.get("event"), str):
                err(f"survival endpoint '{ep_name}' needs 'time' and 'event' column names")
                continue
            endpoints[ep_name] = SurvivalEndpoint(ep_name, ep["time"], ep["event"])
        elif kind == "binary":
            if not isinstance(ep.get("column"), str):
                err(f"binary endpoint '{ep_name}' needs a 'column' name")
                continue
            endpoints[ep_name] = BinaryEndpoint(ep_name, ep["column"])
        else:
            err(f"endpoint '{ep_name}' has type {_shown(kind)}; use 'survival' or 'binary'")

    clinical: dict[str, ClinicalColumn] = {}
    raw_clinical = raw.get("clinical") or {}
    if not isinstance(raw_clinical, dict):
        err("'clinical' must map column names to a type "
            "(numeric, categorical, binary or {type: ordinal, levels: [...]})")
        raw_clinical = {}
    for col, typ in raw_clinical.items():
        levels: tuple[str, ...] = ()
        if isinstance(typ, dict):
            raw_levels = typ.get("levels") or []
            if not isinstance(raw_levels, list) or any(isinstance(v, list | dict) for v in raw_levels):
                err(f"clinical column '{col}' has levels {_shown(raw_levels)}; give a list such as [IA, IB, IIA]")
                continue
            levels = tuple(str(v) for v in raw_levels)
            typ = typ.get("type")
        if typ not in CLINICAL_TYPES:
            err(f"clinical column '{col}' has type {_shown(typ)}; use one of {', '.join(CLINICAL_TYPES)}")
            continue
        if typ == "ordinal" and len(levels) < 2:
            err(f"ordinal clinical column '{col}' needs 'levels' (at least two, lowest risk first)")
            continue
        clinical[str(col)] = ClinicalColumn(str(col), typ, levels)

    modalities: dict[str, ModalitySpec] = {}
    raw_mods = raw.get("modalities") or {}
    if not isinstance(raw_mods, dict):
        err("'modalities' must map modality names to {format: ...}")
        raw_mods = {}
    for mod, opts in raw_mods.items():
        if not isinstance(mod, str) or not NAME_RE.match(mod):
            err(f"modality name {mod!r} must be a lower-case identifier such as 'rppa'")
            continue
        opts = dict(opts or {}) if isinstance(opts, dict | type(None)) else None
        if opts is None:
            err(f"modality '{mod}' must be a mapping with a 'format'")
            continue
        fmt = opts.pop("format", default_format_of(mod))
        entry = get_format(fmt) if isinstance(fmt, str) else None
        if entry is None:
            err(f"modality '{mod}' has format {_shown(fmt)}; use one of {', '.join(format_names())}")
            continue
        why = entry.options_problem(mod, opts) if entry.options_problem is not None else None
        if why is not None:
            err(why)
            continue
        modalities[mod] = ModalitySpec(mod, fmt, opts)
    references = raw.get("references") or {}
    if not isinstance(references, dict) or not all(isinstance(v, str) for v in references.values()):
        err("'references' must map names (genome_fasta, chrom_sizes, methylation_regions, ...) to paths")
        references = {}
    data_roots = _parse_data_roots(raw.get("data_roots"), path.parent, problems, fname)
    max_years = _parse_max_years(raw.get("max_years", MAX_YEARS), problems, fname)

    # Checked here, not when the file is opened, so that validate and load_cohort both refuse such a cohort.
    confinement = Confinement.of(path.parent, [*data_roots, *extra_roots])
    located = [(f"references.{k}", f"reference {k}", v) for k, v in references.items()]
    located += [(f"modalities.{m}.{key}", f"modality '{m}' {key}", ms.options[key])
                for m, ms in modalities.items() for key in ("sample_sheet", "features")
                if isinstance(ms.options.get(key), str)]
    for key, label, value in located:
        _, why = confinement.check(value)
        if why is not None:
            problems.append(Problem("error", fname, refusal(label, value, why), None, key))

    if any(p.severity == "error" for p in problems) and not endpoints:
        return None, problems
    spec = CohortSpec(str(name), str(time_unit), endpoints, clinical, modalities,
                      {str(k): str(v) for k, v in references.items()}, int(version) if isinstance(version, int) else 1,
                      data_roots=tuple(data_roots), max_years=max_years)
    return spec, problems


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
            for idx in df.index[bad]:
                problems.append(Problem("error", f, f"'{df.at[idx, col.name]}' is not a level of ordinal column "
                                        f"'{col.name}' (levels: {', '.join(col.levels)})", _line(idx), col.name))
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
    df = _read_csv(root / f, problems)
    if df is None:
        return None, problems
    missing = [c for c in SAMPLES_COLUMNS if c not in df.columns]
    for c in missing:
        problems.append(Problem("error", f, f"required column '{c}' is missing (columns: {', '.join(SAMPLES_COLUMNS)}"
                                ", mask_path)", 1, c))
    if missing:
        return None, problems
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


@dataclass
class Cohort:
    """A parsed cohort: spec, clinical table and sample table, with paths resolved against ``root``."""

    root: Path
    spec: CohortSpec
    clinical: pd.DataFrame
    samples: pd.DataFrame
    warnings: list[Problem] = field(default_factory=list)
    #: Folders besides the cohort folder and the spec's data_roots that data paths may lead into.
    extra_roots: tuple[Path, ...] = ()

    @property
    def patients(self) -> list[str]:
        return self.clinical["patient_id"].tolist()

    @property
    def modalities(self) -> list[str]:
        return sorted(self.samples["modality"].unique().tolist())

    @cached_property
    def confinement(self) -> Confinement:
        """The folders this cohort may read from: its own, its data_roots and ``extra_roots``."""
        return Confinement.of(self.root, [*self.spec.data_roots, *self.extra_roots])

    def path(self, relative: str) -> Path:
        """The file a cohort path names, for reading.

        Checked again here although load_cohort already refused such paths: a caller may build a Cohort or edit its
        tables directly, and nothing may read outside the cohort. Raises :class:`PathOutsideCohortError`.
        """
        self.confinement.resolve(str(relative))
        return self.root / relative

    def samples_of(self, modality: str) -> pd.DataFrame:
        return self.samples[self.samples["modality"] == modality]

    def coverage(self) -> pd.DataFrame:
        """Patients with at least one sample, per modality and timepoint (the modality-coverage summary)."""
        n = len(self.clinical)
        rows = []
        for (mod, tp), grp in self.samples.groupby(["modality", "timepoint"], sort=True):
            k = grp["patient_id"].nunique()
            rows.append({"modality": mod, "timepoint": tp, "patients": k, "percent": 100.0 * k / max(n, 1)})
        for mod, grp in self.samples.groupby("modality", sort=True):
            k = grp["patient_id"].nunique()
            rows.append({"modality": mod, "timepoint": "(any)", "patients": k, "percent": 100.0 * k / max(n, 1)})
        none = n - self.samples["patient_id"].nunique()
        rows.append({"modality": "(no samples)", "timepoint": "", "patients": none,
                     "percent": 100.0 * none / max(n, 1)})
        return pd.DataFrame(rows, columns=["modality", "timepoint", "patients", "percent"])


def load_cohort(root: str | Path, *, extra_roots: Iterable[str | Path] = ()) -> Cohort:
    """Parse a cohort's tables (not its data files); raise :class:`CohortError` listing every contract error.

    ``extra_roots``: folders besides the cohort folder and its ``data_roots`` that its paths may lead into (for a
    copy of a cohort whose entries link back to the original).
    """
    root = Path(root)
    extra = tuple(Path(r) for r in extra_roots)
    if not root.is_dir():
        raise CohortError([Problem("error", str(root), "not a directory: a cohort is a folder with cohort.yaml, "
                                   "clinical.csv and samples.csv")])
    spec, problems = parse_spec(root / SPEC_FILE, extra_roots=extra)
    clinical, p = read_clinical(root, spec)
    problems += p
    samples, p = read_samples(root, spec, clinical["patient_id"].dropna() if clinical is not None else None,
                              extra_roots=extra)
    problems += p
    if spec is None or clinical is None or samples is None or any(x.severity == "error" for x in problems):
        raise CohortError(problems)
    return Cohort(root, spec, clinical, samples, [x for x in problems if x.severity == "warning"], extra)

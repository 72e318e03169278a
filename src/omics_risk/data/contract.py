"""The cohort data contract: what a cohort directory holds and how it is parsed.

docs/data_format.md is the user-facing description; this module is its executable form. Parsing never
raises on bad content: it returns :class:`Problem` records so that ``omics-risk validate`` can report every
problem at once, and :func:`load_cohort` raises :class:`CohortError` carrying all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_MODALITY_FORMATS",
    "FORMATS",
    "SAMPLES_COLUMNS",
    "TIME_UNITS",
    "BinaryEndpoint",
    "ClinicalColumn",
    "Cohort",
    "CohortError",
    "CohortSpec",
    "ModalitySpec",
    "Problem",
    "SurvivalEndpoint",
    "load_cohort",
    "parse_spec",
    "read_clinical",
    "read_samples",
]

CONTRACT_VERSION = 1
#: Days per unit, so every endpoint can be turned into days for horizons and checks.
TIME_UNITS: dict[str, float] = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12, "years": 365.25}
FORMATS = ("image", "fragments", "bismark_cov", "variant_table", "metabolomics_matrix", "table", "cn_segments")
DEFAULT_MODALITY_FORMATS: dict[str, str] = {
    "ct": "image",
    "cfdna": "fragments",
    "methylation": "bismark_cov",
    "ctdna": "variant_table",
    "metabolomics": "metabolomics_matrix",
    "cnv": "cn_segments",
}
#: Formats whose samples all live in one shared file, located by ``sample_id``.
SHARED_FILE_FORMATS = frozenset({"variant_table", "metabolomics_matrix", "table", "cn_segments"})
SAMPLES_COLUMNS = ("patient_id", "sample_id", "modality", "timepoint", "day", "path")
CLINICAL_TYPES = ("numeric", "categorical", "ordinal", "binary")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
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

    def modality(self, name: str) -> ModalitySpec | None:
        """The declared modality, or the default one for a well-known name."""
        if name in self.modalities:
            return self.modalities[name]
        if name in DEFAULT_MODALITY_FORMATS:
            return ModalitySpec(name, DEFAULT_MODALITY_FORMATS[name])
        return None

    @property
    def days_per_unit(self) -> float:
        return TIME_UNITS[self.time_unit]


def parse_spec(path: Path) -> tuple[CohortSpec | None, list[Problem]]:
    """Parse ``cohort.yaml``; return the spec (None when unusable) and every problem found."""
    fname = path.name
    problems: list[Problem] = []

    def err(msg: str) -> None:
        problems.append(Problem("error", fname, msg))

    if not path.is_file():
        return None, [Problem("error", fname, f"missing: every cohort directory needs {SPEC_FILE}")]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [Problem("error", fname, f"not valid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [Problem("error", fname, "must be a YAML mapping with keys name, time_unit, endpoints")]

    known = {"contract_version", "name", "time_unit", "endpoints", "clinical", "modalities", "references"}
    for key in sorted(set(raw) - known):
        known_txt = ", ".join(sorted(known))
        problems.append(Problem("warning", fname, f"unknown key '{key}' is ignored (known: {known_txt})"))

    version = raw.get("contract_version", CONTRACT_VERSION)
    if version != CONTRACT_VERSION:
        err(f"contract_version {version!r} is not supported by this omics-risk (supports {CONTRACT_VERSION})")

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        err("'name' is required (a non-empty string)")
        name = path.parent.name
    time_unit = raw.get("time_unit")
    if time_unit not in TIME_UNITS:
        err(f"'time_unit' must be one of {', '.join(TIME_UNITS)}; got {time_unit!r}")
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
            err(f"endpoint '{ep_name}' has type {kind!r}; use 'survival' or 'binary'")

    clinical: dict[str, ClinicalColumn] = {}
    raw_clinical = raw.get("clinical") or {}
    if not isinstance(raw_clinical, dict):
        err("'clinical' must map column names to a type "
            "(numeric, categorical, binary or {type: ordinal, levels: [...]})")
        raw_clinical = {}
    for col, typ in raw_clinical.items():
        levels: tuple[str, ...] = ()
        if isinstance(typ, dict):
            levels = tuple(str(v) for v in (typ.get("levels") or []))
            typ = typ.get("type")
        if typ not in CLINICAL_TYPES:
            err(f"clinical column '{col}' has type {typ!r}; use one of {', '.join(CLINICAL_TYPES)}")
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
        fmt = opts.pop("format", DEFAULT_MODALITY_FORMATS.get(mod))
        if fmt not in FORMATS:
            err(f"modality '{mod}' has format {fmt!r}; use one of {', '.join(FORMATS)}")
            continue
        if fmt == "metabolomics_matrix" and not isinstance(opts.get("sample_sheet"), str):
            err(f"metabolomics modality '{mod}' needs 'sample_sheet: PATH' (sample_id, sample_type, batch, "
                "injection_order)")
            continue
        modalities[mod] = ModalitySpec(mod, fmt, opts)
    references = raw.get("references") or {}
    if not isinstance(references, dict) or not all(isinstance(v, str) for v in references.values()):
        err("'references' must map names (genome_fasta, chrom_sizes, methylation_regions, ...) to paths")
        references = {}

    if any(p.severity == "error" for p in problems) and not endpoints:
        return None, problems
    spec = CohortSpec(str(name), str(time_unit), endpoints, clinical, modalities,
                      {str(k): str(v) for k, v in references.items()}, int(version) if isinstance(version, int) else 1)
    return spec, problems


def _read_csv(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """Read a contract CSV as strings so that types are checked by us, with file and line, not guessed."""
    if not path.is_file():
        problems.append(Problem("error", path.name, "missing file"))
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.append(Problem("error", path.name, f"cannot be read as CSV: {exc}"))
        return None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _line(index: int) -> int:
    """CSV line of a 0-based data row (header is line 1)."""
    return int(index) + 2


def _duplicates(df: pd.DataFrame, cols: list[str], fname: str, what: str) -> Iterator[Problem]:
    dup = df.duplicated(subset=cols, keep="first")
    for idx in df.index[dup]:
        first = df.index[(df[cols] == df.loc[idx, cols]).all(axis=1)][0]
        key = ", ".join(f"{c}={df.at[idx, c]}" for c in cols)
        yield Problem("error", fname, f"duplicate {what} ({key}); first seen on line {_line(first)}",
                      _line(idx), cols[-1])


def _numbers(df: pd.DataFrame, col: str, fname: str, problems: list[Problem], *, what: str,
             integer: bool = False, minimum: float | None = None, allowed: Iterable[float] | None = None,
             hint: str = "") -> pd.Series:
    """Coerce a column to numbers, reporting every unparsable or out-of-range cell with its line."""
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    allowed_set = set(allowed) if allowed is not None else None
    for idx in df.index:
        cell = raw.at[idx]
        if pd.isna(cell):
            continue
        v = values.at[idx]
        if pd.isna(v):
            problems.append(Problem("error", fname, f"{what} must be a number, got {cell!r}{hint}", _line(idx), col))
        elif integer and float(v) != int(v):
            problems.append(Problem("error", fname, f"{what} must be a whole number, got {cell!r}{hint}",
                                    _line(idx), col))
        elif minimum is not None and v < minimum:
            problems.append(Problem("error", fname, f"{what} must be >= {minimum:g}, got {cell!r}{hint}",
                                    _line(idx), col))
        elif allowed_set is not None and float(v) not in allowed_set:
            allowed_txt = " or ".join(f"{a:g}" for a in sorted(allowed_set))
            problems.append(Problem("error", fname, f"{what} must be {allowed_txt}, got {cell!r}{hint}",
                                    _line(idx), col))
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
                                       hint=f" ({spec.time_unit} since the index date)")
                median_days = float(df[ep.time].median()) * spec.days_per_unit if df[ep.time].notna().any() else None
                if median_days is not None and not 7.0 <= median_days <= 100 * 365.25:
                    problems.append(Problem("warning", f, f"median '{ep.time}' is {df[ep.time].median():g} "
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


def read_samples(root: Path, spec: CohortSpec | None,
                 patients: Iterable[str] | None) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read ``samples.csv``, check its schema and keys; does not open the data files (see validate)."""
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
    for c in ("patient_id", "sample_id", "modality", "timepoint", "path", "mask_path"):
        df[c] = df[c].str.strip()
    for c in ("patient_id", "sample_id", "modality", "timepoint", "path"):
        for idx in df.index[df[c].isna()]:
            problems.append(Problem("error", f, f"empty {c}", _line(idx), c))
    df["day"] = _numbers(df, "day", f, problems, what="day",
                         hint=" (days from the index date; negative before it)")
    problems.extend(_duplicates(df.dropna(subset=["sample_id"]), ["sample_id"], f, "sample_id"))
    keyed = df.dropna(subset=["patient_id", "modality", "timepoint"])
    problems.extend(_duplicates(keyed, ["patient_id", "modality", "timepoint"], f, "(patient, modality, timepoint)"))
    if patients is not None:
        known = set(patients)
        for idx in df.index[df["patient_id"].notna() & ~df["patient_id"].isin(known)]:
            problems.append(Problem("error", f, f"patient '{df.at[idx, 'patient_id']}' is not in clinical.csv "
                                    "(add the patient or remove the sample)", _line(idx), "patient_id"))
    if spec is not None:
        for idx in df.index[df["modality"].notna()]:
            mod = df.at[idx, "modality"]
            ms = spec.modality(mod)
            if ms is None:
                problems.append(Problem("error", f, f"unknown modality '{mod}': declare it in cohort.yaml under "
                                        f"'modalities: {{{mod}: {{format: table}}}}' (formats: {', '.join(FORMATS)})",
                                        _line(idx), "modality"))
            elif ms.format == "image" and pd.isna(df.at[idx, "mask_path"]):
                problems.append(Problem("error", f, f"image sample '{df.at[idx, 'sample_id']}' needs a mask_path "
                                        "(the tumour mask on the same grid)", _line(idx), "mask_path"))
    return df, problems


@dataclass
class Cohort:
    """A parsed cohort: spec, clinical table and sample table, with paths resolved against ``root``."""

    root: Path
    spec: CohortSpec
    clinical: pd.DataFrame
    samples: pd.DataFrame
    warnings: list[Problem] = field(default_factory=list)

    @property
    def patients(self) -> list[str]:
        return self.clinical["patient_id"].tolist()

    @property
    def modalities(self) -> list[str]:
        return sorted(self.samples["modality"].unique().tolist())

    def path(self, relative: str) -> Path:
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


def load_cohort(root: str | Path) -> Cohort:
    """Parse a cohort's tables (not its data files); raise :class:`CohortError` listing every contract error."""
    root = Path(root)
    if not root.is_dir():
        raise CohortError([Problem("error", str(root), "not a directory: a cohort is a folder with cohort.yaml, "
                                   "clinical.csv and samples.csv")])
    spec, problems = parse_spec(root / SPEC_FILE)
    clinical, p = read_clinical(root, spec)
    problems += p
    samples, p = read_samples(root, spec, clinical["patient_id"].dropna() if clinical is not None else None)
    problems += p
    if spec is None or clinical is None or samples is None or any(x.severity == "error" for x in problems):
        raise CohortError(problems)
    return Cohort(root, spec, clinical, samples, [x for x in problems if x.severity == "warning"])

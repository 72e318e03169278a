"""``cohort.yaml``: the contract's constants, the parsed spec (:class:`CohortSpec`: endpoints, clinical columns,
modalities and their formats) and :func:`parse_spec`, which reports every problem instead of raising.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from omics_risk.data.formats import default_format_of, format_names, get_format
from omics_risk.data.paths import Confinement, printable, refusal, unusable_path
from omics_risk.data.problems import Problem

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
#: samples.csv columns that may be left out where no time applies (one sample per patient at diagnosis), and what
#: they then mean: every sample taken at the index date, as timepoint ``baseline``.
SAMPLES_OPTIONAL: dict[str, str] = {"timepoint": "baseline", "day": "0"}
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

    def columns_of(self, modality: str) -> dict[str, str]:
        """The modality's column mapping (cohort.yaml ``columns:``, contract name -> the file's header); {} if none."""
        ms = self.modality(modality)
        raw = ms.options.get("columns") if ms is not None else None
        return {str(k): str(v).strip() for k, v in raw.items()} if isinstance(raw, Mapping) else {}

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

"""Which TCGA project a conversion is for, and where its files are: the per-project names and reference values, and
the source folder's files found by the project prefix (Firehose/GDAC file names, the TCGA-CDR endpoints).

A source folder holds, per project ``P`` (any subset of the omics; the clinical table is required)::

    P_cdr_endpoints.csv                 the TCGA-CDR rows of P (or the pan-cancer table TCGA-CDR*.csv / .tsv,
                                        whose rows of ``type == P`` are used)
    P_RPPA_<yyyymmdd>.csv               reverse-phase protein array
    P_miRNASeq_<platform>_<yyyymmdd>.csv.gz   miRNA-seq, one file per platform (GA, HiSeq); all are used
    P_CNV_segments_<yyyymmdd>.csv.gz    SNP6 copy-number segments

Reference values are only those published for a project's files; a project without them is converted the same way,
with one warning saying that nothing could be checked (no number is made up).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = ["PROJECTS", "TcgaProject", "TcgaSources", "find_sources", "tcga_project"]


@dataclass(frozen=True)
class TcgaProject:
    """A TCGA project: its code (the TCGA-CDR ``type``), study name, and what its conversion is checked against.

    ``stage_column``: the TCGA-CDR column holding the stage (None: the first of ``ajcc_pathologic_tumor_stage``,
    ``clinical_stage`` with a recognisable stage for this project's patients). ``stage_detail_levels``: the staging
    system's sub-stages in order (None: those the patients have). ``patients`` and ``stage_c_index``
    (Harrell's C of the collapsed stage I-IV per endpoint) are reference values from ``reference_source``; empty
    where none is on file.
    """

    code: str
    title: str
    stage_column: str | None = None
    stage_detail_levels: tuple[str, ...] | None = None
    patients: int | None = None
    stage_c_index: Mapping[str, float] = field(default_factory=dict)
    reference_source: str | None = None

    @property
    def cohort_name(self) -> str:
        return f"tcga-{self.code.lower()}"

    @property
    def has_reference(self) -> bool:
        return self.patients is not None or bool(self.stage_c_index)


def _project(code: str, title: str, **kwargs: object) -> tuple[str, TcgaProject]:
    return code, TcgaProject(code, title, **kwargs)  # type: ignore[arg-type]


#: Lung sub-stages under the AJCC 6th and 7th editions that TCGA-CDR records (stage IV is not sub-staged).
LUNG_SUBSTAGES = ("IA", "IB", "IIA", "IIB", "IIIA", "IIIB", "IV")

#: The 33 TCGA projects of the Pan-Cancer Clinical Data Resource (its ``type`` column), with their study names.
#: Only LUSC has reference values here: those of ``shared/data/tcga_lusc/README.md`` (Firehose 2016-01-28 files,
#: TCGA-CDR endpoints), which tests/data/test_convert_tcga.py reproduces.
PROJECTS: Mapping[str, TcgaProject] = MappingProxyType(dict([
    _project("ACC", "adrenocortical carcinoma"),
    _project("BLCA", "bladder urothelial carcinoma"),
    _project("BRCA", "breast invasive carcinoma"),
    _project("CESC", "cervical squamous cell carcinoma and endocervical adenocarcinoma"),
    _project("CHOL", "cholangiocarcinoma"),
    _project("COAD", "colon adenocarcinoma"),
    _project("DLBC", "lymphoid neoplasm diffuse large B-cell lymphoma"),
    _project("ESCA", "oesophageal carcinoma"),
    _project("GBM", "glioblastoma multiforme"),
    _project("HNSC", "head and neck squamous cell carcinoma"),
    _project("KICH", "kidney chromophobe"),
    _project("KIRC", "kidney renal clear cell carcinoma"),
    _project("KIRP", "kidney renal papillary cell carcinoma"),
    _project("LAML", "acute myeloid leukaemia"),
    _project("LGG", "brain lower grade glioma"),
    _project("LIHC", "liver hepatocellular carcinoma"),
    _project("LUAD", "lung adenocarcinoma", stage_detail_levels=LUNG_SUBSTAGES),
    _project("LUSC", "lung squamous cell carcinoma", stage_column="ajcc_pathologic_tumor_stage",
             stage_detail_levels=LUNG_SUBSTAGES, patients=504,
             stage_c_index={"pfi": 0.620, "os": 0.559},
             reference_source="shared/data/tcga_lusc/README.md (Firehose 2016-01-28, TCGA-CDR; docs/tcga_lusc.md)"),
    _project("MESO", "mesothelioma"),
    _project("OV", "ovarian serous cystadenocarcinoma"),
    _project("PAAD", "pancreatic adenocarcinoma"),
    _project("PCPG", "pheochromocytoma and paraganglioma"),
    _project("PRAD", "prostate adenocarcinoma"),
    _project("READ", "rectum adenocarcinoma"),
    _project("SARC", "sarcoma"),
    _project("SKCM", "skin cutaneous melanoma"),
    _project("STAD", "stomach adenocarcinoma"),
    _project("TGCT", "testicular germ cell tumours"),
    _project("THCA", "thyroid carcinoma"),
    _project("THYM", "thymoma"),
    _project("UCEC", "uterine corpus endometrial carcinoma"),
    _project("UCS", "uterine carcinosarcoma"),
    _project("UVM", "uveal melanoma"),
]))


def tcga_project(code: str) -> TcgaProject:
    """The project of ``code`` (any case); an unknown code is a one-line error naming the closest known ones."""
    key = str(code).strip().upper()
    if key in PROJECTS:
        return PROJECTS[key]
    close = difflib.get_close_matches(key, list(PROJECTS), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown TCGA project '{code}': {hint}pass one of the TCGA-CDR project codes "
                     f"({', '.join(PROJECTS)})")


# ------------------------------------------------------------------------------------------------ the files

#: Firehose/GDAC omics file names as RTCGA writes them: PROJECT_KIND_DATE.csv[.gz].
_OMICS_RE = re.compile(
    r"^(?P<project>[A-Z]+)_(?P<kind>RPPA|miRNASeq_(?P<platform>[A-Za-z0-9]+)|CNV_segments)_(?P<date>\d{8})"
    r"\.csv(?:\.gz)?$")
_CDR_RE = re.compile(r"^(?P<project>[A-Z]+)_cdr_endpoints\.csv(?:\.gz)?$")
#: The pan-cancer TCGA-CDR table (Liu et al. 2018, Table S1) saved as CSV or TSV: every project, a ``type`` column.
_PANCAN_RE = re.compile(r"^TCGA-CDR.*\.(?:csv|tsv)(?:\.gz)?$", re.IGNORECASE)
_PANCAN_XLSX_RE = re.compile(r"^TCGA-CDR.*\.xlsx?$", re.IGNORECASE)
_KINDS = {"RPPA": "rppa", "CNV_segments": "cnv"}


@dataclass
class TcgaSources:
    """The files of one project in a source folder (None / empty: that modality is absent), and what was noted."""

    project: TcgaProject
    cdr: Path
    pancan: bool  # cdr is the pan-cancer table, filtered by type == project
    rppa: Path | None = None
    mirna: list[Path] = field(default_factory=list)  # one per platform, sorted by name
    cnv: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file read, in a fixed order (clinical, rppa, mirna, cnv)."""
        return [self.cdr, *([self.rppa] if self.rppa else []), *self.mirna, *([self.cnv] if self.cnv else [])]

    @property
    def modalities(self) -> list[str]:
        return [m for m, present in (("rppa", self.rppa), ("mirna", self.mirna), ("cnv", self.cnv)) if present]


def _names(paths: Iterable[Path], limit: int = 6) -> str:
    names = sorted(p.name for p in paths)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def find_sources(src: Path, project: TcgaProject) -> TcgaSources:
    """The files of ``project`` in ``src``, found by their prefix.

    Errors (one line each, naming the files and the fix): no clinical table for the project; only another project's
    omics files; two files of one kind (two dates, or one platform twice). Another project's files next to this
    project's are left alone, with a note; so is the pan-cancer table when the project's own table is there.
    """
    if not src.is_dir():
        raise FileNotFoundError(f"TCGA source folder not found: {src}")
    code = project.code
    files = sorted(p for p in src.iterdir() if p.is_file())
    omics: dict[str, list[tuple[Path, re.Match[str]]]] = {}
    cdr: list[Path] = []
    foreign: list[Path] = []
    for path in files:
        m = _OMICS_RE.match(path.name) or _CDR_RE.match(path.name)
        if m is None:
            continue
        if m["project"] != code:
            foreign.append(path)
        elif m.re is _CDR_RE:
            cdr.append(path)
        else:
            kind = _KINDS.get(m["kind"], "mirna")
            omics.setdefault(kind, []).append((path, m))
    pancan = [p for p in files if _PANCAN_RE.match(p.name)]
    foreign_projects = sorted({p.name.split("_")[0] for p in foreign})

    if foreign and not omics and not cdr:
        raise FileNotFoundError(
            f"{src} holds no {code} files but files of {', '.join(foreign_projects)} ({_names(foreign)}): pass "
            f"--project {foreign_projects[0] if len(foreign_projects) == 1 else 'CODE'} for them, or --src the "
            f"folder of the {code} files")
    notes: list[str] = []
    if cdr:
        chosen, from_pancan = cdr[0], False
        if pancan:
            notes.append(f"{_names(pancan)} (pan-cancer table) not read: {chosen.name} holds the {code} endpoints")
    elif len(pancan) == 1:
        chosen, from_pancan = pancan[0], True
    elif len(pancan) > 1:
        raise FileExistsError(f"{src} holds {len(pancan)} pan-cancer TCGA-CDR tables ({_names(pancan)}): keep one "
                              f"there (or add {code}_cdr_endpoints.csv with the {code} rows)")
    else:
        xlsx = [p for p in files if _PANCAN_XLSX_RE.match(p.name)]
        hint = (f" ({_names(xlsx)} is a spreadsheet: save its TCGA-CDR sheet as CSV next to it)" if xlsx
                else f"; its other files: {_names(foreign)}" if foreign else "")
        raise FileNotFoundError(
            f"{src} has no clinical table for {code}: expected {code}_cdr_endpoints.csv or the pan-cancer "
            f"TCGA-CDR table as TCGA-CDR*.csv / .tsv (its rows of type {code} are used){hint}")

    by_kind: dict[str, list[Path]] = {}
    for kind, found in omics.items():
        per_key: dict[str, list[Path]] = {}
        for path, m in found:
            per_key.setdefault(m["platform"] or kind, []).append(path)
        for key, paths in per_key.items():
            if len(paths) > 1:
                what = f"miRNA {key}" if kind == "mirna" else kind.upper() if kind == "rppa" else "CNV segment"
                raise FileExistsError(f"{src} holds {len(paths)} {code} {what} files ({_names(paths)}): keep one "
                                      "release there (move the others out)")
        by_kind[kind] = sorted(p for paths in per_key.values() for p in paths)
    if foreign:
        notes.append(f"files of {', '.join(foreign_projects)} left alone: {_names(foreign)} (convert them with "
                     f"--project {foreign_projects[0]})")
    expected = {"rppa": f"{code}_RPPA_<date>.csv", "mirna": f"{code}_miRNASeq_<platform>_<date>.csv.gz",
                "cnv": f"{code}_CNV_segments_<date>.csv.gz"}
    missing = [k for k in expected if k not in by_kind]
    if len(missing) == len(expected):
        notes.append(f"no {code} omics file ({', '.join(expected.values())}): a clinical-only cohort")
    elif missing:
        notes.append(f"no {' / '.join(k if k != 'mirna' else 'miRNA' for k in missing)} file for {code} "
                     f"({', '.join(expected[k] for k in missing)}): the cohort has "
                     f"{', '.join(k for k in expected if k in by_kind)} only")
    return TcgaSources(project=project, cdr=chosen, pancan=from_pancan, rppa=(by_kind.get("rppa") or [None])[0],
                       mirna=by_kind.get("mirna", []), cnv=(by_kind.get("cnv") or [None])[0], notes=notes)

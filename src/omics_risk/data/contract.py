"""The cohort data contract: what a cohort directory holds and how it is parsed (:func:`load_cohort`, :class:`Cohort`).

docs/data_format.md is the user-facing description; this module is its executable form. Parsing never
raises on bad content: it returns :class:`Problem` records so that ``omics-risk validate`` can report every
problem at once, and :func:`load_cohort` raises :class:`CohortError` carrying all of them. The parts live in
:mod:`~omics_risk.data.spec` (cohort.yaml), :mod:`~omics_risk.data.contract_tables` (clinical.csv, samples.csv) and
:mod:`~omics_risk.data.problems`; every name is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from omics_risk.data.contract_tables import read_clinical, read_contract_csv, read_samples
from omics_risk.data.paths import Confinement, PathOutsideCohortError
from omics_risk.data.problems import CohortError, Problem
from omics_risk.data.spec import (
    CLINICAL_FILE,
    CLINICAL_TYPES,
    CONTRACT_VERSION,
    DEFAULT_MODALITY_FORMATS,
    FORMATS,
    ID_COLUMNS,
    MAX_YEARS,
    NAME_RE,
    SAMPLES_COLUMNS,
    SAMPLES_FILE,
    SAMPLES_OPTIONAL,
    SHARED_FILE_FORMATS,
    SPEC_FILE,
    TIME_UNITS,
    BinaryEndpoint,
    ClinicalColumn,
    CohortSpec,
    Endpoint,
    ModalitySpec,
    SurvivalEndpoint,
    parse_spec,
)

__all__ = [
    "CLINICAL_FILE",
    "CLINICAL_TYPES",
    "CONTRACT_VERSION",
    "DEFAULT_MODALITY_FORMATS",
    "FORMATS",
    "ID_COLUMNS",
    "MAX_YEARS",
    "NAME_RE",
    "SAMPLES_COLUMNS",
    "SAMPLES_FILE",
    "SAMPLES_OPTIONAL",
    "SHARED_FILE_FORMATS",
    "SPEC_FILE",
    "TIME_UNITS",
    "BinaryEndpoint",
    "ClinicalColumn",
    "Cohort",
    "CohortError",
    "CohortSpec",
    "Endpoint",
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

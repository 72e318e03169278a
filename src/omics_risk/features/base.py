"""The extractor interface: how one modality's raw files become a sample x feature table.

Two kinds of extractor exist because the contract has two kinds of modality format:

- per-sample formats (``image``, ``fragments``, ``bismark_cov``): one file (or folder) per sample, so the
  orchestrator caches, parallelises and isolates failures per sample (:meth:`Extractor.extract_sample`);
- shared-file formats (``variant_table``, ``metabolomics_matrix``, ``table``, ``cn_segments``): one file holds
  every sample, so the extractor reads it once (:meth:`Extractor.extract_shared`) and reports failing samples.
  One sample's bad rows must not fail the others: :mod:`omics_risk.features.shared_files` reads such a file with
  the strict reader and sets aside only the samples its problems belong to.

Extraction here is deterministic and unsupervised per sample. Anything that learns from several patients
(scaling, imputation, drift correction statistics, feature screening) is a scikit-learn transformer in the
modality's module, fitted on training folds only and shipped inside the logged model.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from omics_risk.data.contract import Cohort

__all__ = ["ExtractionResult", "Extractor", "SampleFailure", "settings_hash"]


class SampleFailure(Exception):
    """A sample whose data cannot be turned into features; the reason is recorded for that patient."""


@dataclass
class ExtractionResult:
    """Features of the samples that worked and, for every other sample, why it failed.

    ``notes`` says what a cohort-level step left out that is no sample of samples.csv (a broken QC or blank
    injection of a metabolomics run), so that it is reported (summary, manifest) instead of vanishing.
    """

    features: pd.DataFrame  # index: sample_id; float columns
    failures: dict[str, str] = field(default_factory=dict)  # sample_id -> reason
    notes: list[str] = field(default_factory=list)


def read_cached_result(cfile: Path, *, failures: bool = False) -> dict[str, Any] | None:
    """A cached per-sample result, or None: then it is (re)computed.

    None when the entry is absent or unreadable (a torn write), and for a cached failure unless ``failures``:
    ``extract`` retries failures on every run, since their reasons name that run's paths (score extracts through a
    work-folder view of the cohort) and their cause may have been the machine rather than the file.
    """
    try:
        res = json.loads(cfile.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or not ("features" in res or (failures and "error" in res)):
        return None
    return res


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Stable short hash of extractor settings, part of every cache key and of the provenance manifest."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Extractor(ABC):
    """Base class of modality extractors.

    Subclasses set ``name`` (used in provenance), ``formats`` (the contract formats they read) and ``version``
    (bump it when the output changes so caches are invalidated), keep their settings as constructor arguments,
    and implement ``extract_sample`` or ``extract_shared``.
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    version: ClassVar[str] = "1"
    #: True when ``extract_sample`` is implemented (per-sample files).
    per_sample: ClassVar[bool] = True

    def settings(self) -> dict[str, Any]:
        """Everything that changes the output; hashed into cache keys."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def references(self, cohort: Cohort) -> dict[str, Path]:
        """Cohort-level reference files this extractor reads (hashed into provenance)."""
        return {}

    def side_tables(self, cohort: Cohort, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Per-modality tables written next to the features (e.g. metabolomics QC statistics); default none."""
        return {}

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        """Features of one sample (a row of samples.csv). Raise :class:`SampleFailure` with a reason."""
        raise NotImplementedError(f"{type(self).__name__} reads shared files; use extract_shared")

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        """Features of all ``samples`` of one shared-file modality."""
        raise NotImplementedError(f"{type(self).__name__} reads one file per sample; use extract_sample")

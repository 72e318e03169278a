"""The modality format registry: what a format is, and how formats are registered and looked up.

The built-in formats are registered by :mod:`omics_risk.data.formats` (import names from there); this module is
the registry alone, below the readers, so that a reader may look a format up without an import circle.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLINICAL",
    "PREPROCESSING_KINDS",
    "ModalityFormat",
    "default_extract_config",
    "default_format_of",
    "format_names",
    "get_format",
    "preprocessing_kind",
    "register_format",
    "unregister_format",
]

#: The name of the clinical table among a model's inputs (not a format: clinical.csv is part of the contract).
CLINICAL = "clinical"
#: The fold-fitted preprocessing kinds of :class:`omics_risk.models.preprocessing.ModalityPreprocessor`.
PREPROCESSING_KINDS = ("tabular", "metabolomics", "clinical")


@dataclass(frozen=True)
class ModalityFormat:
    """One modality file format.

    Args:
        name: the format name written in cohort.yaml (a lower-case identifier).
        extensions: file name endings accepted for its files (an ``image`` may also be a DICOM folder).
        reader: reads one file (``reader(path)``); for a shared table, one row per sample with the id in a
            ``sample_id`` column or the index, raising :class:`~omics_risk.data.readers.DataFileError` on a bad file.
        check: validate's check of one file (a :data:`omics_risk.data.file_checks.FileCheck`); default for a shared
            format with a reader: :func:`~omics_risk.data.file_checks.table_check` of the reader (it opens, it holds
            these samples).
        extractors: the default extraction config, a list of Hydra specs (``{"_target_": "pkg.module.Class",
            **settings}``), as ``omics-risk extract --config`` takes them.
        preprocessing: the fold-fitted preprocessing kind of its feature table (one of :data:`PREPROCESSING_KINDS`).
        shared_file: one file holds every sample, located by ``sample_id`` (else one file or folder per sample).
        needs_mask: every sample also needs a ``mask_path`` on the same grid (images).
        default_modalities: modality names that have this format when cohort.yaml does not declare them.
        options_problem: ``options_problem(modality, options)``: what is wrong with a modality's cohort.yaml options
            (None when they are fine).
    """

    name: str
    extensions: tuple[str, ...]
    reader: Callable[..., Any] | None = None
    check: Callable[[Any], Any] | None = None
    extractors: tuple[Mapping[str, Any], ...] = ()
    preprocessing: str = "tabular"
    shared_file: bool = False
    needs_mask: bool = False
    default_modalities: tuple[str, ...] = ()
    options_problem: Callable[[str, Mapping[str, Any]], str | None] | None = None
    description: str = field(default="", compare=False)


_REGISTRY: dict[str, ModalityFormat] = {}


def register_format(fmt: ModalityFormat, *, replace: bool = False) -> ModalityFormat:
    """Add ``fmt`` to the registry (``replace=True`` to redefine a registered name); returns it."""
    if fmt.name in _REGISTRY and not replace:
        raise ValueError(f"format '{fmt.name}' is already registered; pass replace=True to redefine it")
    if fmt.preprocessing not in PREPROCESSING_KINDS:
        raise ValueError(f"format '{fmt.name}': preprocessing must be one of {', '.join(PREPROCESSING_KINDS)}, "
                         f"got {fmt.preprocessing!r}")
    if not fmt.extensions:
        raise ValueError(f"format '{fmt.name}' needs at least one file extension")
    for other in _REGISTRY.values():
        taken = set(fmt.default_modalities) & set(other.default_modalities)
        if other.name != fmt.name and taken:
            raise ValueError(f"format '{fmt.name}': default modality {sorted(taken)[0]!r} already belongs to format "
                             f"'{other.name}'")
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a registered format (a test's or a plug-in's); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def get_format(name: str) -> ModalityFormat | None:
    """The registered format called ``name``, or None."""
    return _REGISTRY.get(name)


def format_names() -> tuple[str, ...]:
    """Every registered format name, built-in ones first, in registration order."""
    return tuple(_REGISTRY)


def default_format_of(modality: str) -> str | None:
    """The format a well-known modality name has when cohort.yaml does not declare it (``ct`` -> ``image``)."""
    for fmt in _REGISTRY.values():
        if modality in fmt.default_modalities:
            return fmt.name
    return None


def default_extract_config() -> dict[str, list[dict[str, Any]]]:
    """``{format: [extractor spec, ...]}`` for every registered format: what ``omics-risk extract`` runs by default.

    A deep copy: callers may edit it (``omics-risk score`` merges a model's recorded settings into it).
    """
    return {name: [copy.deepcopy(dict(spec)) for spec in fmt.extractors] for name, fmt in _REGISTRY.items()
            if fmt.extractors}


def preprocessing_kind(modality: str, fmt: str | None = None) -> str:
    """The fold-fitted preprocessing kind of a model input: ``clinical`` for the clinical table, else its format's.

    ``fmt`` is the modality's format (:attr:`omics_risk.data.multimodal.MultimodalData.formats`); without it the
    default format of a well-known modality name is used, and an unknown one is ``tabular``.
    """
    if modality == CLINICAL:
        return "clinical"
    entry = get_format(fmt) if fmt is not None else None
    if entry is None:
        default = default_format_of(modality)
        entry = get_format(default) if default is not None else None
    return entry.preprocessing if entry is not None else "tabular"

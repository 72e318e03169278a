"""Column mappings: a shared table's header as the file writes it, mapped onto the contract's column names.

Real files rarely use the contract's names: a TCGA / GDC copy-number file says ``Sample, Chromosome, Start, End,
Num_Probes, Segment_Mean``, a proteomics table keys its rows by ``Barcode``. cohort.yaml declares the mapping once,
per modality, as ``columns: {CONTRACT_NAME: FILE_HEADER}`` (``modalities: {cnv: {format: cn_segments, columns:
{sample_id: Sample, chrom: Chromosome}}}``), instead of the files being renamed. Without a mapping, the common
TCGA / GDC and DNAcopy / cBioPortal ``.seg`` headers of a segment table are recognised as they are
(:data:`ALIASES`), and ``validate`` says so in a note.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["ALIASES", "MAPPABLE", "columns_problem", "map_columns", "missing_column_message"]

#: The contract columns a format's ``columns:`` mapping may rename (the table format: only its key column).
MAPPABLE: dict[str, tuple[str, ...]] = {
    "table": ("sample_id",),
    "cn_segments": ("sample_id", "chrom", "start", "end", "segment_mean", "num_probes"),
}
#: Headers recognised without a mapping, per table (as the readers name it), in order of preference:
#: TCGA / GDC segment files (``Sample`` or ``GDC_Aliquot``, ``Chromosome``, ...) and DNAcopy / cBioPortal ``.seg``.
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "copy-number segment table": {
        "sample_id": ("Sample", "GDC_Aliquot", "ID"),
        "chrom": ("Chromosome", "chromosome", "chr"),
        "start": ("Start", "loc.start"),
        "end": ("End", "loc.end"),
        "segment_mean": ("Segment_Mean", "seg.mean"),
        "num_probes": ("Num_Probes", "num.mark"),
    },
}


def columns_problem(fmt: str, modality: str, options: Mapping[str, Any]) -> str | None:
    """What is wrong with a modality's ``columns:`` in cohort.yaml (None when absent or fine)."""
    raw = options.get("columns")
    if raw is None:
        return None
    allowed = MAPPABLE.get(fmt, ())
    example = f"columns: {{{allowed[0]}: YOUR_HEADER}}" if allowed else ""
    if not allowed:
        return f"modality '{modality}': format '{fmt}' has no column mapping; remove 'columns'"
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        return (f"modality '{modality}': 'columns' must map contract column names to the file's headers, e.g. "
                f"{example}")
    unknown = [str(k) for k in raw if k not in allowed]
    if unknown:
        return (f"modality '{modality}': 'columns' names {', '.join(map(repr, unknown))}, which is no column of a "
                f"{fmt} table; the keys are the contract's names ({', '.join(allowed)}), the values the file's "
                f"headers, e.g. {example}")
    values = [str(v).strip() for v in raw.values()]
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        return f"modality '{modality}': 'columns' maps header '{twice[0]}' to two contract columns; map it once"
    return None


def map_columns(df: pd.DataFrame, what: str, declared: Mapping[str, str] | None
                ) -> tuple[pd.DataFrame, dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """``df`` with its mapped headers renamed to the contract's names.

    Returns the frame, ``{contract: header}`` of every renamed column, the part of it that came from
    :data:`ALIASES` (not from cohort.yaml), and ``(column, message)`` problems. A declared header absent from a file
    that already has the contract name (a filtered copy written back by the extractors) is fine.
    """
    renamed: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    header = [str(c) for c in df.columns]
    for contract, source in (declared or {}).items():
        source = str(source).strip()
        if source == contract or source not in header:
            continue
        if contract in header:
            problems.append((source, f"the header has both '{source}' (mapped to {contract} by 'columns:' in "
                             f"cohort.yaml) and '{contract}'; drop one of them or fix the mapping"))
            continue
        renamed[contract] = source
    aliased: dict[str, str] = {}
    for contract, options in ALIASES.get(what, {}).items():
        if contract in header or contract in renamed or contract in (declared or {}):
            continue
        taken = set(renamed.values())
        hit = next((a for a in options if a in header and a not in taken), None)
        if hit is not None:
            renamed[contract] = aliased[contract] = hit
    if renamed:
        df = df.rename(columns={v: k for k, v in renamed.items()})
    return df, renamed, aliased, problems


def missing_column_message(column: str, required: Sequence[str], header: Sequence[str], what: str,
                           declared: Mapping[str, str] | None) -> str:
    """Why ``column`` is missing: what the table needs, what the header has, and how cohort.yaml maps it."""
    found = ", ".join(map(str, header[:12])) + (f", ... ({len(header)} columns)" if len(header) > 12 else "")
    source = (declared or {}).get(column)
    if source is not None:
        return (f"column '{source}', which cohort.yaml maps to '{column}' (columns: {{{column}: {source}}}), is not "
                f"in the header (found: {found}); fix the mapping")
    guess = difflib.get_close_matches(column, [str(h) for h in header], n=1, cutoff=0.5)
    for alias in ALIASES.get(what, {}).get(column, ()):
        if alias.lower() in {str(h).lower() for h in header}:
            guess = [next(str(h) for h in header if str(h).lower() == alias.lower())]
    header_name = guess[0] if guess else "ITS_HEADER"
    return (f"required column '{column}' is missing (a {what} has columns {', '.join(required)}; found: {found}); "
            f"if the file names it differently, map it once in cohort.yaml under the modality: "
            f"columns: {{{column}: {header_name}}}")

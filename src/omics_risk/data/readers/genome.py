"""Reference genome files and chromosome names: FASTA and chrom.sizes names, BED regions, and the naming check
between a fragment file and the chromosomes the fragmentomics binning uses.
"""

from __future__ import annotations

import functools
import gzip
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from omics_risk.data.readers.bismark import _start_not_after_end
from omics_risk.data.readers.common import (
    _GZIP_MAGIC,
    _STRING,
    DataFileError,
    _Column,
    _data_rows,
    _file_bytes,
    _first_line,
    _int_field,
    _Issues,
    _parse_tsv,
    _report_rows,
    _text_field,
)

#: Human autosome names, with or without the ``chr`` prefix: what cfDNA fragmentomics bins by default (its
#: ``chroms="autosomes"``). Defined here, in the data layer, so that validate and the binning share one pattern.
AUTOSOME_RE = re.compile(r"^(chr)?([1-9]|1[0-9]|2[0-2])$")
#: The default chromosome selection of fragmentomics binning.
DEFAULT_BINNED_CHROMS = "autosomes"


#: Bytes read at a time when scanning a FASTA for its names, and the line length beyond which a line is known to be
#: sequence (unwrapped FASTA), not a header: both bound the scan's memory.
_FASTA_CHUNK = 1 << 24
_FASTA_LONG_LINE = 1 << 20


def _fasta_names(path: Path) -> list[str]:
    """Sequence names of a FASTA (first word after '>'): from its ``.fai`` when present, else from one pass over the
    file in 16 MB chunks (plain, gzip or BGZF), so a 3 GB genome costs seconds and bounded memory."""
    fai = path.with_name(path.name + ".fai")
    if fai.is_file():
        return [ln.split("\t", 1)[0] for ln in fai.read_text().splitlines() if ln.strip()]
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == _GZIP_MAGIC else open
    names: list[str] = []
    carry = b"\n"
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(_FASTA_CHUNK):
                data = carry + chunk
                cut = data.rfind(b"\n")
                if cut < 0:  # still inside one long (unwrapped sequence) line: no header can start here
                    carry = b"-"
                    continue
                names += [m.decode("utf-8", "replace") for m in re.findall(rb"\n>(\S*)", data[: cut + 1])]
                carry = data[cut:]
                if len(carry) > _FASTA_LONG_LINE:  # unwrapped sequence: keep only a header's name
                    names += [m.decode("utf-8", "replace") for m in re.findall(rb"^\n>(\S*)", carry[:4096])]
                    carry = b"-"
            names += [m.decode("utf-8", "replace") for m in re.findall(rb"\n>(\S*)", carry + b"\n")]
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises zlib.error on corrupt deflate data
        raise DataFileError(path, f"cannot be read ({exc}); use a plain or bgzip-compressed FASTA") from exc
    return names


@functools.lru_cache(maxsize=16)
def _reference_names(path: str, kind: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    if kind == "chrom_sizes":
        return tuple(read_chrom_sizes(path))
    return tuple(_fasta_names(Path(path)))


def reference_chromosomes(path: str | Path, kind: str) -> list[str]:
    """Chromosome names of a cohort reference (``kind`` ``chrom_sizes`` or ``genome_fasta``), in file order.

    Cached per file version, so the fragment files of a cohort share one read of the reference.
    """
    if kind not in ("chrom_sizes", "genome_fasta"):
        raise ValueError(f"kind must be 'chrom_sizes' or 'genome_fasta', got {kind!r}")
    st = Path(path).stat()
    return list(_reference_names(str(path), kind, st.st_mtime_ns, st.st_size))


def binned_chromosomes(
    present: Sequence[str], reference: Sequence[str] | None, chroms: str | Sequence[str] = DEFAULT_BINNED_CHROMS
) -> list[str]:
    """The chromosomes cfDNA fragmentomics bins: the reference's (else the file's own, ``present``), selected by
    ``chroms`` (``"autosomes"``, ``"all"`` or a list of names), as ``FragmentomicsExtractor`` does."""
    names = list(reference) if reference is not None else list(present)
    if chroms == "all":
        return names
    if chroms == "autosomes":
        return [c for c in names if AUTOSOME_RE.match(c)]
    if isinstance(chroms, str):
        raise ValueError(f"chroms must be 'autosomes', 'all' or a list of names, got {chroms!r}")
    wanted = {str(c) for c in chroms}
    return [c for c in names if c in wanted]


def _some(names: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (", ..." if len(names) > k else "")


def chromosome_naming_problem(
    present: Sequence[str],
    reference: Sequence[str] | None,
    chroms: str | Sequence[str] = DEFAULT_BINNED_CHROMS,
    *,
    reference_label: str = "the reference",
    settings_label: str = "the extractor's chroms setting",
) -> str | None:
    """Why no fragment of a file would be binned: none of its chromosome names (``present``, in file order) is among
    the :func:`binned_chromosomes`. None when at least one is: extra contigs (decoys, alt, unplaced, chrM) are
    normal and simply not binned.

    The message names both spellings and the cure: adding or dropping a ``chr`` prefix when that is what differs,
    else a reference with the file's names (``reference_label`` says how the cohort declared its reference) or
    another chromosome selection (``settings_label`` says where it is set).
    """
    if not present:
        return None
    binned = binned_chromosomes(present, reference, chroms)
    selection = f"chroms={chroms!r}" + (" (the autosomes '1'-'22' or 'chr1'-'chr22')" if chroms == "autosomes" else "")
    if not binned:
        if reference is None:
            return (
                f"none of the chromosomes ({_some(present)}) is one the binning selects with {selection}; rename them, "
                f"or set {settings_label} to the names used"
            )
        return (
            f"the binning has no chromosome: {reference_label} names none that {selection} selects; use a reference "
            f"with the usual names, or set {settings_label}"
        )
    binned_set = set(binned)
    if binned_set & set(present):
        return None
    # Only a reference can be disjoint from the file: without one, the binned names are a subset of the file's.
    if any(f"chr{c}" in binned_set for c in present):
        fix = "add the 'chr' prefix to the file's chromosome names"
    elif any(c.startswith("chr") and c[3:] in binned_set for c in present):
        fix = "drop the 'chr' prefix from the file's chromosome names"
    else:
        fix = "rename the file's chromosomes to the reference's names"
    return (
        f"chromosomes are named {_some(present)} but the binning uses {_some(binned)} (the names in "
        f"{reference_label}), so no fragment would be counted: {fix}, or use a reference with the file's names"
    )


def read_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Read a ``chrom<TAB>size`` file (UCSC ``.chrom.sizes``; extra columns, e.g. a ``.fai``, are ignored)."""
    path = Path(path)
    rows = _data_rows(_file_bytes(path))
    issues = _Issues(path)
    sizes: dict[str, int] = {}
    for i, raw in enumerate(rows.data.split(b"\n")[:-1] if rows.data else []):
        fields = raw.rstrip(b"\r").decode("utf-8", errors="replace").split("\t")
        line = rows.line(i)
        if len(fields) < 2:
            issues.add("expected 'chrom<TAB>size'", line)
            continue
        msg = _int_field(1)(fields[1])
        if msg:
            issues.add(f"size {msg}", line, "size")
        elif fields[0] in sizes:
            issues.add(f"chromosome {fields[0]!r} is listed twice", line, "chrom")
        else:
            sizes[fields[0]] = int(fields[1])
    issues.raise_if_any()
    if not sizes:
        raise DataFileError(path, "no chromosome sizes found")
    return sizes


def read_bed(path: str | Path) -> pd.DataFrame:
    """Read a BED file (3+ columns; ``#``, ``track`` and ``browser`` lines skipped): chrom, start, end [, name ...]."""
    path = Path(path)
    rows = _data_rows(_file_bytes(path), (b"#", b"track", b"browser"))
    if not rows.data:
        return pd.DataFrame({"chrom": pd.Categorical([]), "start": np.zeros(0, np.int64), "end": np.zeros(0, np.int64)})
    ncols = _first_line(rows).count(b"\t") + 1
    if ncols < 3:
        raise DataFileError(
            path, f"has {ncols} tab-separated column(s); BED needs at least chrom, start, end", rows.line(0)
        )
    extra = ["name", "score", "strand"][: max(0, ncols - 3)]
    extra += [f"col{i + 1}" for i in range(3 + len(extra), ncols)]
    columns = [
        _Column("chrom", _STRING, _text_field),
        _Column("start", pa.int64(), _int_field(0)),
        _Column("end", pa.int64(), _int_field(0)),
    ] + [_Column(n, _STRING, lambda s: None) for n in extra]
    table = _parse_tsv(path, rows, columns, "BED", row_checks=[_start_not_after_end])
    start = table.column("start").to_numpy()
    end = table.column("end").to_numpy()
    issues = _Issues(path)
    _report_rows(issues, rows, start < 0, "start", lambda r: f"start must be >= 0, got {start[r]}")
    _report_rows(issues, rows, end < start, "end", lambda r: f"end ({end[r]}) must be >= start ({start[r]})")
    issues.raise_if_any()
    df = table.to_pandas()
    df["chrom"] = df["chrom"].astype("category")
    return df

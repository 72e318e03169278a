"""cfDNA fragments: BED-like fragment files (pyarrow) and paired-end BAM files (pysam) into columnar
:class:`Fragments`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from omics_risk.data.readers.common import (
    _STRING,
    BAM_EXTENSIONS,
    DataFileError,
    _choice_field,
    _Column,
    _data_rows,
    _file_bytes,
    _first_line,
    _int_field,
    _Issues,
    _parse_tsv,
    _report_rows,
    _text_field,
    has_extension,
)


@dataclass(frozen=True)
class Fragments:
    """cfDNA fragments as parallel numpy arrays: 0-based half-open ``[start, end)`` on ``chrom_names[chrom]``.

    ``mapq`` is -1 when the file carries none, ``strand`` is +1 / -1 (0 when unknown).
    """

    chrom: np.ndarray
    chrom_names: list[str]
    start: np.ndarray
    end: np.ndarray
    mapq: np.ndarray
    strand: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start

    def select(self, keep: np.ndarray) -> Fragments:
        """The fragments where the boolean mask (or index array) ``keep`` selects."""
        return Fragments(
            self.chrom[keep], self.chrom_names, self.start[keep], self.end[keep], self.mapq[keep], self.strand[keep]
        )

    def filter(self, *, min_mapq: int = 0, min_length: int | None = None, max_length: int | None = None) -> Fragments:
        """Keep MAPQ >= ``min_mapq`` (fragments without MAPQ are kept) and ``min_length <= length <= max_length``."""
        keep = np.ones(len(self), dtype=bool)
        if min_mapq > 0:
            keep &= (self.mapq >= min_mapq) | (self.mapq < 0)
        if min_length is not None:
            keep &= self.lengths >= min_length
        if max_length is not None:
            keep &= self.lengths <= max_length
        return self if keep.all() else self.select(keep)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "chrom": pd.Categorical.from_codes(self.chrom, categories=self.chrom_names),
                "start": self.start,
                "end": self.end,
                "mapq": self.mapq,
                "strand": self.strand,
            }
        )

    @classmethod
    def empty(cls, chrom_names: Sequence[str] = ()) -> Fragments:
        return cls(
            np.zeros(0, np.int32),
            list(chrom_names),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int16),
            np.zeros(0, np.int8),
        )


_FRAGMENT_LAYOUTS: dict[int, tuple[str, list[_Column]]] = {
    3: (
        "BED3",
        [
            _Column("chrom", _STRING, _text_field),
            _Column("start", pa.int64(), _int_field(0)),
            _Column("end", pa.int64(), _int_field(0)),
        ],
    ),
    4: (
        "BED3+mapq",
        [
            _Column("chrom", _STRING, _text_field),
            _Column("start", pa.int64(), _int_field(0)),
            _Column("end", pa.int64(), _int_field(0)),
            _Column("mapq", pa.int64(), _int_field(0, 255)),
        ],
    ),
    5: (
        "BED3+2 (chrom, start, end, mapq, strand)",
        [
            _Column("chrom", _STRING, _text_field),
            _Column("start", pa.int64(), _int_field(0)),
            _Column("end", pa.int64(), _int_field(0)),
            _Column("mapq", pa.int64(), _int_field(0, 255)),
            _Column("strand", _STRING, _choice_field(("+", "-"))),
        ],
    ),
    6: (
        "BED6 (chrom, start, end, name, score, strand)",
        [
            _Column("chrom", _STRING, _text_field),
            _Column("start", pa.int64(), _int_field(0)),
            _Column("end", pa.int64(), _int_field(0)),
            _Column("name", _STRING, lambda s: None),
            _Column("mapq", pa.int64(), _int_field(0, 32767)),
            _Column("strand", _STRING, _choice_field(("+", "-", "."))),
        ],
    ),
}


def _start_before_end(fields: list[str]) -> tuple[str, str] | None:
    if int(fields[2]) <= int(fields[1]):
        return "end", f"end ({fields[2]}) must be greater than start ({fields[1]}): coordinates are 0-based, half-open"
    return None


def _encode_chrom(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Chromosome names -> int32 codes, numbered in order of first appearance (file order)."""
    enc = pc.dictionary_encode(col).unify_dictionaries().combine_chunks()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return codes, [str(x) for x in enc.dictionary.to_pylist()]


def read_fragments(
    path: str | Path, *, min_mapq: int = 0, min_length: int | None = None, max_length: int | None = None
) -> Fragments:
    """Read a cfDNA fragment file (BED3+2 / BED6, plain, gzip or BGZF) or a paired-end BAM into :class:`Fragments`.

    The whole file is checked (not only the first lines): a bad line anywhere would silently bias features.
    """
    path = Path(path)
    if has_extension(path, BAM_EXTENSIONS):
        return _read_bam_fragments(path, min_mapq=min_mapq, min_length=min_length, max_length=max_length)
    rows = _data_rows(_file_bytes(path))
    if not rows.data:
        return Fragments.empty()
    first = _first_line(rows)
    ncols = first.count(b"\t") + 1
    if ncols not in _FRAGMENT_LAYOUTS:
        raise DataFileError(
            path,
            f"has {ncols} tab-separated column(s); a fragment file has 5 (chrom, start, end, "
            "mapq, strand; BED3+2 as FinaleToolkit writes), or 3 / 4 / 6 (BED6)",
            rows.line(0),
        )
    layout, columns = _FRAGMENT_LAYOUTS[ncols]
    table = _parse_tsv(path, rows, columns, f"fragment ({layout})", row_checks=[_start_before_end])
    start = table.column("start").to_numpy().astype(np.int64, copy=False)
    end = table.column("end").to_numpy().astype(np.int64, copy=False)
    issues = _Issues(path)
    _report_rows(issues, rows, start < 0, "start", lambda r: f"start must be >= 0, got {start[r]}")
    _report_rows(
        issues,
        rows,
        (end <= start) & (start >= 0),
        "end",
        lambda r: f"end ({end[r]}) must be greater than start ({start[r]}): coordinates are 0-based, half-open",
    )
    n = len(start)
    if "mapq" in table.column_names:
        mapq64 = table.column("mapq").to_numpy()
        hi = 255 if ncols < 6 else 32767
        _report_rows(
            issues, rows, (mapq64 < 0) | (mapq64 > hi), "mapq", lambda r: f"mapq must be in 0..{hi}, got {mapq64[r]}"
        )
        mapq = np.clip(mapq64, -1, 32767).astype(np.int16)
    else:
        mapq = np.full(n, -1, dtype=np.int16)
    if "strand" in table.column_names:
        col = table.column("strand")
        plus = pc.equal(col, "+").to_numpy(zero_copy_only=False)
        minus = pc.equal(col, "-").to_numpy(zero_copy_only=False)
        strand = plus.astype(np.int8) - minus.astype(np.int8)
        allowed = ("+", "-") if ncols == 5 else ("+", "-", ".")
        bad = ~(plus | minus) if ncols == 5 else ~(plus | minus | pc.equal(col, ".").to_numpy(zero_copy_only=False))
        _report_rows(
            issues,
            rows,
            bad,
            "strand",
            lambda r: f"strand must be {' or '.join(repr(a) for a in allowed)}, got {col[r].as_py()!r}",
        )
    else:
        strand = np.zeros(n, dtype=np.int8)
    chrom = table.column("chrom")
    codes, names = _encode_chrom(chrom)
    empty = np.asarray([not x for x in names], dtype=bool)
    if empty.any():
        _report_rows(issues, rows, empty[codes], "chrom", lambda r: "chrom must not be empty")
    issues.raise_if_any()
    frags = Fragments(codes, names, start, end, mapq, strand)
    return frags.filter(min_mapq=min_mapq, min_length=min_length, max_length=max_length)


#: SAM flags: required (paired, proper pair, read 1) and rejected (unmapped, mate unmapped, secondary, QC fail,
#: duplicate, supplementary), FinaleToolkit's fragment filters.
_FLAG_REQUIRED = 0x1 | 0x2 | 0x40
_FLAG_REJECTED = 0x4 | 0x8 | 0x100 | 0x200 | 0x400 | 0x800


#: sys.excepthook and sys.unraisablehook are process-wide; validate opens BAMs from several threads.
_PYSAM_HOOKS_LOCK = threading.Lock()


def _open_bam(path: Path) -> Any:
    """``pysam.AlignmentFile`` without the stray traceback pysam prints on stderr when a BAM header is unreadable.

    The half-opened file then fails to close in ``__dealloc__``, and Cython reports that OSError through
    sys.excepthook and sys.unraisablehook ('Exception ignored in ... Traceback ...'), although the ValueError or
    OSError raised here, turned into a DataFileError by the caller, already says what is wrong.
    """
    import pysam  # lazy: heavy, and loaded only for a BAM file

    def is_noise(exc: BaseException | None) -> bool:
        return isinstance(exc, OSError) and "Closing failed" in str(exc)

    with _PYSAM_HOOKS_LOCK:
        excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
        sys.excepthook = lambda t, v, tb: None if is_noise(v) else excepthook(t, v, tb)
        sys.unraisablehook = lambda u: None if is_noise(u.exc_value) else unraisablehook(u)
        try:
            return pysam.AlignmentFile(str(path), "rb", check_sq=False)
        finally:
            sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def _read_bam_fragments(path: Path, *, min_mapq: int, min_length: int | None, max_length: int | None) -> Fragments:
    """Fragments of a paired-end BAM with FinaleToolkit's filters (read 1 of proper pairs, TLEN != 0)."""
    mask = _FLAG_REQUIRED | _FLAG_REJECTED
    ref_ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    mapqs: list[int] = []
    strands: list[int] = []
    try:
        with _open_bam(path) as bam:
            names = list(bam.references)
            for read in bam.fetch(until_eof=True):
                if read.flag & mask != _FLAG_REQUIRED:
                    continue
                mq = read.mapping_quality
                tlen = read.template_length
                if mq < min_mapq or tlen == 0:
                    continue
                if tlen > 0:
                    s = read.reference_start
                    e = s + tlen
                    strands.append(1)
                else:
                    e = read.reference_end
                    s = e + tlen
                    strands.append(-1)
                ref_ids.append(read.reference_id)
                starts.append(s)
                ends.append(e)
                mapqs.append(mq)
    except (OSError, ValueError) as exc:
        raise DataFileError(path, f"cannot be read as a BAM file ({exc}); check it with `samtools quickcheck`") from exc
    except NotImplementedError as exc:  # pysam cannot seek in a gzip stream that is not BGZF
        raise DataFileError(
            path, "is gzip-compressed but not BGZF, as a BAM must be; check it with `samtools quickcheck`"
        ) from exc
    frags = Fragments(
        np.asarray(ref_ids, np.int32),
        names,
        np.asarray(starts, np.int64),
        np.asarray(ends, np.int64),
        np.asarray(mapqs, np.int16),
        np.asarray(strands, np.int8),
    )
    return frags.filter(min_length=min_length, max_length=max_length)

"""Readers for the data files a cohort points to, one per modality format (see docs/data_format.md).

Every reader returns columnar, vectorised data (numpy arrays, pandas frames, SimpleITK images) so that feature
extraction and scoring can reuse it, and raises :class:`DataFileError` on malformed input. The error names the
file, the line and column when they are known, and what to do; ``DataFileError.issues`` lists every problem
found in the file (up to :data:`MAX_ISSUES`), so ``omics-risk validate`` can report all of them at once.

Text formats are parsed with pyarrow (fast path); only when that fails is the file re-scanned line by line to
locate the bad lines, so a valid 100k-line fragment file costs tens of milliseconds.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "BAM_EXTENSIONS",
    "BISMARK_EXTENSIONS",
    "FORMAT_EXTENSIONS",
    "FRAGMENT_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MAX_ISSUES",
    "TABLE_EXTENSIONS",
    "DataFileError",
    "FileIssue",
    "Fragments",
    "MetabolomicsData",
    "check_mask_geometry",
    "format_extension_problem",
    "has_extension",
    "read_bed",
    "read_bismark_cov",
    "read_chrom_sizes",
    "read_cn_segments",
    "read_fragments",
    "read_image",
    "read_metabolomics",
    "read_table",
    "read_variant_table",
]

#: At most this many problems are itemised per file; the rest are counted.
MAX_ISSUES = 20

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
FRAGMENT_EXTENSIONS = (".frag.gz", ".frag.tsv.gz", ".bed.gz", ".tsv.gz", ".frag", ".frag.tsv", ".bed", ".tsv")
BAM_EXTENSIONS = (".bam",)
BISMARK_EXTENSIONS = (".cov", ".cov.gz")
TABLE_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")
#: The file extensions each modality format accepts (an image may also be a DICOM folder).
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_EXTENSIONS,
    "fragments": FRAGMENT_EXTENSIONS + BAM_EXTENSIONS,
    "bismark_cov": BISMARK_EXTENSIONS,
    "variant_table": TABLE_EXTENSIONS,
    "metabolomics_matrix": TABLE_EXTENSIONS,
    "table": TABLE_EXTENSIONS,
    "cn_segments": TABLE_EXTENSIONS,
}

_GZIP_MAGIC = b"\x1f\x8b"
#: The 28-byte empty block bgzip writes last; its absence means the file was cut at a block boundary.
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


# --------------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FileIssue:
    """One problem inside a data file: ``line`` is 1-based (a CSV header is line 1), ``column`` a column name."""

    path: str
    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f" [{self.column}]"
        return f"{where}: {self.message}"


class DataFileError(ValueError):
    """A data file that cannot be used; ``issues`` lists every problem found (the first is ``line``/``column``)."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        line: int | None = None,
        column: str | None = None,
        *,
        issues: Sequence[FileIssue] = (),
    ):
        self.path = str(path)
        self.line = line
        self.column = column
        self.issues: list[FileIssue] = [FileIssue(self.path, message, line, column)]
        self.issues += [i for i in issues if i != self.issues[0]]
        more = f" (and {len(self.issues) - 1} more problem(s) in this file)" if len(self.issues) > 1 else ""
        self.message = message
        super().__init__(f"{self.issues[0]}{more}")

    @classmethod
    def from_issues(cls, issues: Sequence[FileIssue]) -> DataFileError:
        first = issues[0]
        return cls(first.path, first.message, first.line, first.column, issues=issues[1:])


class _Issues:
    """Collects the problems of one file, capped at MAX_ISSUES with a final 'and N more' count."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.items: list[FileIssue] = []
        self.dropped = 0

    def add(self, message: str, line: int | None = None, column: str | None = None, path: str | None = None) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(FileIssue(path or self.path, message, line, column))
        else:
            self.dropped += 1

    def extend(self, other: _Issues) -> None:
        for i in other.items:
            self.add(i.message, i.line, i.column, i.path)
        self.dropped += other.dropped

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda i: (i.path != self.path, i.path, i.line or 0))
        if self.dropped:
            items.append(FileIssue(self.path, f"... and {self.dropped} more problem(s) like these"))
        raise DataFileError.from_issues(items)


def has_extension(path: str | Path, extensions: Iterable[str]) -> bool:
    """Case-insensitive check of a (possibly multi-part, e.g. ``.nii.gz``) extension."""
    name = Path(path).name.lower()
    return any(name.endswith(ext) for ext in extensions)


def format_extension_problem(path: Path, fmt: str) -> str | None:
    """Why ``path`` cannot hold modality format ``fmt`` (judged by name and kind), or None when it can."""
    exts = FORMAT_EXTENSIONS.get(fmt)
    if exts is None:
        return f"unknown format {fmt!r}"
    if path.is_dir():
        if fmt == "image":
            return None
        return f"is a folder, but format '{fmt}' needs a file ({', '.join(exts)})"
    if has_extension(path, exts):
        return None
    extra = " or a folder holding one DICOM series" if fmt == "image" else ""
    return f"has an extension that format '{fmt}' does not read; use {', '.join(exts)}{extra}"


# --------------------------------------------------------------------------------------------------- images


def _itk_reason(exc: BaseException, path: Path | None = None) -> str:
    """The informative part of an ITK exception (they start with a source location and class address)."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), path.name)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [
        ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK") and not re.match(r"^/\S+:\d+:$", ln)
    ]
    reason = " ".join(keep) or text
    reason = re.sub(r"(sitk::ERROR|ITK ERROR): ?(\w+\(0x[0-9a-f]+\): ?)?", "", reason).strip()
    if len(reason) > 240:
        reason = reason[:240].rsplit(" ", 1)[0] + " ..."
    return reason


#: ITK warnings (e.g. GDCM's "No Series were found") go to stderr; they are silenced while scanning folders,
#: under a lock because the switch is global and validate reads from several threads.
_ITK_WARNINGS_LOCK = threading.Lock()


def _check_nifti_complete(path: Path) -> None:
    """ITK silently zero-fills a truncated NIfTI; compare the data bytes present with what the header promises."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types on bad headers
        raise DataFileError(path, f"not a valid NIfTI file ({exc}); re-export the image") from exc
    proxy = img.dataobj
    need = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    if has_extension(path, (".gz",)):
        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    have += len(chunk)
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise DataFileError(
                path, f"truncated or corrupt gzip stream ({exc}); re-export or re-copy the image"
            ) from exc
    else:
        have = path.stat().st_size
    if have < need:
        raise DataFileError(
            path,
            f"truncated image: the header promises {need} bytes but the file holds {have}; "
            "re-export or re-copy the image",
        )


def read_image(path: str | Path) -> Any:
    """Read a CT volume or mask (NIfTI, NRRD, MetaImage, or a folder holding exactly one DICOM series).

    Returns a ``SimpleITK.Image`` in LPS physical space, whichever format it came from.
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        with _ITK_WARNINGS_LOCK:
            shown = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
            try:
                ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            except RuntimeError as exc:
                raise DataFileError(path, f"cannot scan the folder for DICOM series: {_itk_reason(exc, path)}") from exc
            finally:
                sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        if not ids:
            raise DataFileError(
                path,
                "folder holds no DICOM series; point path to a folder of DICOM slices or to "
                f"an image file ({', '.join(IMAGE_EXTENSIONS)})",
            )
        if len(ids) > 1:
            raise DataFileError(
                path,
                f"folder holds {len(ids)} DICOM series ({', '.join(ids)}); put each series in "
                "its own folder and give each its own samples.csv row",
            )
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise DataFileError(path, f"DICOM series cannot be read: {_itk_reason(exc, path)}") from exc
    if not path.exists():
        raise DataFileError(path, "file not found")
    if not has_extension(path, IMAGE_EXTENSIONS):
        raise DataFileError(
            path,
            f"unsupported image format; use one of {', '.join(IMAGE_EXTENSIONS)} or a folder holding one DICOM series",
        )
    if has_extension(path, (".nii", ".nii.gz")):
        _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataFileError(
            path, f"cannot be read as an image ({_itk_reason(exc, path)}); re-export or re-copy it"
        ) from exc


_INTEGER_PIXELS = {
    "8-bit signed integer",
    "8-bit unsigned integer",
    "16-bit signed integer",
    "16-bit unsigned integer",
    "32-bit signed integer",
    "32-bit unsigned integer",
    "64-bit signed integer",
    "64-bit unsigned integer",
}


def check_mask_geometry(image: Any, mask: Any, tol: float = 1e-3) -> list[str]:
    """Why ``mask`` cannot serve as the tumour mask of ``image`` (same grid, integer labels, non-empty); [] if fine.

    ``tol`` is an absolute tolerance in mm for spacing and origin and on direction cosines, loose enough for the
    rounding of DICOM and NIfTI headers.
    """
    import SimpleITK as sitk

    out: list[str] = []
    if image.GetDimension() != mask.GetDimension():
        return [f"mask is {mask.GetDimension()}-D but the image is {image.GetDimension()}-D"]
    if mask.GetNumberOfComponentsPerPixel() != 1:
        out.append(f"mask has {mask.GetNumberOfComponentsPerPixel()} components per voxel; it needs one label")
    if tuple(image.GetSize()) != tuple(mask.GetSize()):
        out.append(f"size differs: mask {tuple(mask.GetSize())} voxels, image {tuple(image.GetSize())}")

    def fmt(v: Sequence[float]) -> str:
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

    for what, a, b in (
        ("spacing", image.GetSpacing(), mask.GetSpacing()),
        ("origin", image.GetOrigin(), mask.GetOrigin()),
        ("direction", image.GetDirection(), mask.GetDirection()),
    ):
        if not np.allclose(a, b, rtol=0.0, atol=tol):
            unit = "" if what == "direction" else " mm"
            out.append(f"{what} differs: mask {fmt(b)}{unit}, image {fmt(a)}{unit}")
    if out:
        return [*out, "resample the mask onto the image grid (nearest neighbour) or export both from the same series"]
    values = sitk.GetArrayViewFromImage(mask)
    integral = mask.GetPixelIDTypeAsString() in _INTEGER_PIXELS
    if not integral and not np.all(np.isfinite(values) & (values == np.round(values))):
        out.append("mask holds non-integer values; a mask holds integer labels (0 = background, > 0 = tumour)")
    elif not np.any(values > 0):
        out.append("mask is empty (no voxel > 0); give the tumour a label > 0")
    return out


# --------------------------------------------------------------------------------------------------- text parsing


def _file_bytes(path: Path) -> bytes:
    """The decompressed content of a plain, gzip or BGZF (multi-member gzip) file."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with pa.input_stream(str(path), compression="gzip") as stream:
            data = stream.read()
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataFileError(
            path, f"truncated or corrupt gzip file ({exc}); re-compress it with bgzip or gzip, or copy it again"
        ) from exc
    with open(path, "rb") as fh:
        head = fh.read(18)
        is_bgzf = len(head) >= 18 and head[3] & 4 and head[12:14] == b"BC"
        if is_bgzf:
            fh.seek(-28, io.SEEK_END)
            if fh.read(28) != _BGZF_EOF:
                raise DataFileError(
                    path,
                    "BGZF file lacks its end-of-file marker, so it is probably truncated; "
                    "copy it again or re-compress it with bgzip",
                )
    return data


@dataclass
class _Rows:
    """Data lines of a headerless text file and the original 1-based line number of each."""

    data: bytes
    first_line: int
    line_numbers: np.ndarray | None  # None: row i is on line first_line + i

    def line(self, row: int) -> int:
        return int(self.line_numbers[row]) if self.line_numbers is not None else self.first_line + int(row)


def _data_rows(data: bytes, comment_prefixes: tuple[bytes, ...] = (b"#",)) -> _Rows:
    """Drop comment and blank lines but remember where each data line was, for error messages."""
    lead = 0
    while data.startswith(comment_prefixes):
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
        lead += 1
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    irregular = (
        data.startswith((b"\n", b"\r\n"))
        or data.find(b"\n\n", 0, end) >= 0
        or data.find(b"\n\r\n", 0, end) >= 0
        or any(data.find(b"\n" + p, 0, end) >= 0 for p in comment_prefixes)
    )
    if not irregular:
        if not end:
            return _Rows(b"", lead + 1, None)
        # A single trailing newline is what pyarrow expects; copy only when the ending differs.
        body = data if end == len(data) - 1 and data[end] == 10 else data[:end] + b"\n"
        return _Rows(body, lead + 1, None)
    lines = data[:end].split(b"\n")
    keep = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(comment_prefixes)]
    kept = b"\n".join(lines[i] for i in keep)
    return _Rows(kept + b"\n" if kept else b"", lead + 1, np.asarray(keep, dtype=np.int64) + lead + 1)


Validator = Callable[[str], str | None]


def _int_field(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(s: str) -> str | None:
        try:
            v = int(s)
        except ValueError:
            return f"must be a whole number, got {s!r}"
        if minimum is not None and v < minimum:
            return f"must be >= {minimum}, got {s!r}"
        if maximum is not None and v > maximum:
            return f"must be <= {maximum}, got {s!r}"
        return None

    return check


def _float_field(minimum: float | None = None, maximum: float | None = None) -> Validator:
    def check(s: str) -> str | None:
        try:
            v = float(s)
        except ValueError:
            return f"must be a number, got {s!r}"
        if not np.isfinite(v):
            return f"must be a finite number, got {s!r}"
        if minimum is not None and v < minimum:
            return f"must be >= {minimum:g}, got {s!r}"
        if maximum is not None and v > maximum:
            return f"must be <= {maximum:g}, got {s!r}"
        return None

    return check


def _text_field(s: str) -> str | None:
    return None if s.strip() else "must not be empty"


def _choice_field(choices: Sequence[str]) -> Validator:
    def check(s: str) -> str | None:
        return None if s in choices else f"must be {' or '.join(repr(c) for c in choices)}, got {s!r}"

    return check


@dataclass(frozen=True)
class _Column:
    name: str
    type: pa.DataType
    check: Validator


def _scan_lines(
    rows: _Rows,
    columns: Sequence[_Column],
    issues: _Issues,
    what: str,
    row_checks: Sequence[Callable[[list[str]], tuple[str, str] | None]] = (),
) -> None:
    """Line-by-line re-scan used only when the fast parse failed: finds every bad line with its column."""
    for i, raw in enumerate(rows.data.split(b"\n")[:-1] if rows.data else []):
        line = rows.line(i)
        try:
            text = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            issues.add("line is not UTF-8 text; is this really a " + what + " file?", line)
            continue
        fields = text.split("\t")
        if len(fields) != len(columns):
            issues.add(
                f"has {len(fields)} tab-separated column(s), expected {len(columns)} "
                f"({', '.join(c.name for c in columns)})",
                line,
            )
            continue
        bad = False
        for col, value in zip(columns, fields, strict=True):
            msg = col.check(value)
            if msg:
                issues.add(f"{col.name} {msg}", line, col.name)
                bad = True
        if not bad:
            for check in row_checks:
                res = check(fields)
                if res:
                    issues.add(res[1], line, res[0])


def _parse_tsv(
    path: Path,
    rows: _Rows,
    columns: Sequence[_Column],
    what: str,
    row_checks: Sequence[Callable[[list[str]], tuple[str, str] | None]] = (),
) -> pa.Table:
    """Parse headerless TSV rows with pyarrow; on failure re-scan to report the bad lines."""
    names = [c.name for c in columns]
    if not rows.data:
        return pa.table({c.name: pa.array([], type=c.type) for c in columns})
    try:
        return pacsv.read_csv(
            io.BytesIO(rows.data),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c.name: c.type for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        issues = _Issues(path)
        _scan_lines(rows, columns, issues, what, row_checks)
        if not issues:
            raise DataFileError(path, f"cannot be parsed as a {what} file: {exc}") from exc
        issues.raise_if_any()
        raise AssertionError("unreachable") from exc


def _report_rows(issues: _Issues, rows: _Rows, bad: np.ndarray, column: str, message: Callable[[int], str]) -> None:
    """Add one issue per offending row (vectorised mask in, capped list out)."""
    for r in np.flatnonzero(bad)[: MAX_ISSUES + 1]:
        issues.add(message(int(r)), rows.line(int(r)), column)
    extra = int(np.count_nonzero(bad)) - (MAX_ISSUES + 1)
    if extra > 0:
        issues.dropped += extra


def _first_line(rows: _Rows) -> bytes:
    nl = rows.data.find(b"\n")
    return rows.data[:nl].rstrip(b"\r") if nl >= 0 else rows.data


# --------------------------------------------------------------------------------------------------- fragments


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


_STRING = pa.string()
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


def _read_bam_fragments(path: Path, *, min_mapq: int, min_length: int | None, max_length: int | None) -> Fragments:
    """Fragments of a paired-end BAM with FinaleToolkit's filters (read 1 of proper pairs, TLEN != 0)."""
    import pysam

    mask = _FLAG_REQUIRED | _FLAG_REJECTED
    ref_ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    mapqs: list[int] = []
    strands: list[int] = []
    try:
        with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
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
    frags = Fragments(
        np.asarray(ref_ids, np.int32),
        names,
        np.asarray(starts, np.int64),
        np.asarray(ends, np.int64),
        np.asarray(mapqs, np.int16),
        np.asarray(strands, np.int8),
    )
    return frags.filter(min_length=min_length, max_length=max_length)


# --------------------------------------------------------------------------------------------------- Bismark


_BISMARK_COLUMNS = [
    _Column("chrom", _STRING, _text_field),
    _Column("start", pa.int64(), _int_field(0)),
    _Column("end", pa.int64(), _int_field(0)),
    _Column("percent", pa.float64(), _float_field(0.0, 100.0)),
    _Column("count_methylated", pa.int64(), _int_field(0)),
    _Column("count_unmethylated", pa.int64(), _int_field(0)),
]


def _start_not_after_end(fields: list[str]) -> tuple[str, str] | None:
    if int(fields[2]) < int(fields[1]):
        return "end", f"end ({fields[2]}) must be >= start ({fields[1]})"
    return None


def read_bismark_cov(path: str | Path) -> pd.DataFrame:
    """Read a Bismark coverage file (``.cov`` / ``.cov.gz``) into a typed frame, checking every line."""
    path = Path(path)
    rows = _data_rows(_file_bytes(path), (b"#", b"track"))
    if rows.data:
        ncols = _first_line(rows).count(b"\t") + 1
        if ncols != 6:
            raise DataFileError(
                path,
                f"has {ncols} tab-separated column(s); a Bismark coverage file has 6 (chrom, "
                "start, end, percent_methylated, count_methylated, count_unmethylated)",
                rows.line(0),
            )
    table = _parse_tsv(path, rows, _BISMARK_COLUMNS, "Bismark coverage", row_checks=[_start_not_after_end])
    cols = {
        c: table.column(c).to_numpy() for c in ("start", "end", "percent", "count_methylated", "count_unmethylated")
    }
    issues = _Issues(path)
    for c in ("start", "count_methylated", "count_unmethylated"):
        v = cols[c]
        _report_rows(issues, rows, v < 0, c, lambda r, v=v, c=c: f"{c} must be >= 0, got {v[r]}")
    pct = cols["percent"]
    _report_rows(
        issues, rows, ~((pct >= 0) & (pct <= 100)), "percent", lambda r: f"percent must be in [0, 100], got {pct[r]}"
    )
    start, end = cols["start"], cols["end"]
    _report_rows(issues, rows, end < start, "end", lambda r: f"end ({end[r]}) must be >= start ({start[r]})")
    issues.raise_if_any()
    return pd.DataFrame(
        {
            "chrom": pd.Categorical(table.column("chrom").to_numpy(zero_copy_only=False)),
            "start": start.astype(np.int64, copy=False),
            "end": end.astype(np.int64, copy=False),
            "percent": pct.astype(np.float64, copy=False),
            "count_methylated": cols["count_methylated"].astype(np.int64, copy=False),
            "count_unmethylated": cols["count_unmethylated"].astype(np.int64, copy=False),
        }
    )


# --------------------------------------------------------------------------------------------------- BED helpers


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


# --------------------------------------------------------------------------------------------------- tables


class _Table:
    """A CSV/Parquet table read as text (CSV) or typed (Parquet), with a way to locate a row for messages.

    CSV rows are located by their line (header = line 1); Parquet has no lines, so messages name the row.
    """

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what
        self.is_parquet = has_extension(path, (".parquet", ".pq"))
        if not path.is_file():
            raise DataFileError(path, "file not found")
        if not self.is_parquet and not has_extension(path, TABLE_EXTENSIONS):
            raise DataFileError(path, f"unsupported table format; use {', '.join(TABLE_EXTENSIONS)}")
        self.df = self._read()
        self.issues = _Issues(path)

    def _read(self) -> pd.DataFrame:
        path = self.path
        if self.is_parquet:
            try:
                df = pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise DataFileError(path, f"cannot be read as Parquet ({exc}); re-export the {self.what}") from exc
            if isinstance(df.index, pd.RangeIndex):
                return df
            # pandas may have stored e.g. sample_id as the index: keep it as a column, so rows are numbered.
            return df.reset_index(drop=all(n is None for n in df.index.names))
        sep = "\t" if has_extension(path, (".tsv", ".tsv.gz")) else ","
        try:
            data = _file_bytes(path)
            header = next(
                csv.reader(io.StringIO(data[: data.find(b"\n") + 1 or None].decode("utf-8-sig")), delimiter=sep), []
            )
            df = pd.read_csv(
                io.BytesIO(data),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
                encoding="utf-8-sig",
            )
        except pd.errors.EmptyDataError as exc:
            raise DataFileError(path, f"is empty; a {self.what} needs a header line") from exc
        except pd.errors.ParserError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise DataFileError(
                path,
                f"cannot be parsed as CSV ({exc}); check the number of fields on that line",
                int(m.group(1)) if m else None,
            ) from exc
        except UnicodeDecodeError as exc:
            raise DataFileError(path, f"is not UTF-8 text ({exc}); save it as UTF-8 CSV") from exc
        header = [h.strip() for h in header]
        dups = sorted({h for h in header if header.count(h) > 1})
        if dups:
            raise DataFileError(path, f"column(s) {', '.join(dups)} appear more than once in the header", 1, dups[0])
        df.columns = [str(c).strip() for c in df.columns]
        return df

    def line(self, idx: int) -> int | None:
        return None if self.is_parquet else int(idx) + 2

    def where(self, idx: int) -> str:
        return f"row {int(idx) + 1}: " if self.is_parquet else ""

    def add(self, idx: int | None, column: str | None, message: str) -> None:
        if idx is None:
            self.issues.add(message, 1 if not self.is_parquet else None, column)
        else:
            self.issues.add(self.where(idx) + message, self.line(idx), column)

    def require(self, columns: Sequence[str]) -> bool:
        missing = [c for c in columns if c not in self.df.columns]
        for c in missing:
            self.add(None, c, f"required column '{c}' is missing (a {self.what} has columns {', '.join(columns)})")
        return not missing

    def text(self, col: str, *, required: bool = True) -> pd.Series:
        s = self.df[col]
        s = s.where(s.isna(), s.astype(str).str.strip()).replace("", np.nan)
        if required:
            for idx in s.index[s.isna()][:MAX_ISSUES]:
                self.add(idx, col, f"empty {col}")
        return s

    def numbers(
        self,
        col: str,
        *,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        required: bool = True,
        above: float | None = None,
        hint: str = "",
    ) -> pd.Series:
        """Vectorised typing of one column; every bad cell is reported with its line and column."""
        raw = self.df[col]
        if raw.dtype == object or pd.api.types.is_string_dtype(raw):
            raw = raw.where(raw.isna(), raw.astype(str).str.strip()).replace("", np.nan)
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        checks: list[tuple[pd.Series, Callable[[Any], str]]] = [
            (raw.notna() & values.isna(), lambda c: f"{col} must be a number, got {c!r}{hint}"),
            (values.notna() & ~np.isfinite(values.fillna(0)), lambda c: f"{col} must be finite, got {c!r}{hint}"),
        ]
        if required:
            checks.append((raw.isna(), lambda c: f"empty {col}{hint}"))
        if integer:
            checks.append(
                (
                    values.notna() & (values != values.round()),
                    lambda c: f"{col} must be a whole number, got {c!r}{hint}",
                )
            )
        if minimum is not None:
            checks.append((values < minimum, lambda c: f"{col} must be >= {minimum:g}, got {c!r}{hint}"))
        if above is not None:
            checks.append((values <= above, lambda c: f"{col} must be > {above:g}, got {c!r}{hint}"))
        if maximum is not None:
            checks.append((values > maximum, lambda c: f"{col} must be <= {maximum:g}, got {c!r}{hint}"))
        claimed = pd.Series(False, index=raw.index)
        for bad, msg in checks:
            bad = bad & ~claimed
            claimed |= bad
            for idx in bad.index[bad.to_numpy()][:MAX_ISSUES]:
                self.add(idx, col, msg(raw.at[idx]))
            self.issues.dropped += max(0, int(bad.sum()) - MAX_ISSUES)
        return values

    def duplicates(self, cols: list[str], what: str) -> None:
        sub = self.df[cols]
        dup = sub.duplicated(keep=False) & sub.notna().all(axis=1)
        if not dup.any():
            return
        first_of: dict[tuple, int] = {}
        for idx in sub.index[dup.to_numpy()]:
            key = tuple(sub.loc[idx])
            if key in first_of:
                first = first_of[key]
                ref = f"row {first + 1}" if self.is_parquet else f"line {first + 2}"
                desc = ", ".join(f"{c}={v}" for c, v in zip(cols, key, strict=True))
                self.add(idx, cols[-1], f"duplicate {what} ({desc}); first seen on {ref}")
            else:
                first_of[key] = idx


def read_variant_table(path: str | Path) -> pd.DataFrame:
    """Read the ctDNA variant table: one row per tracked variant per sample (CSV or Parquet)."""
    t = _Table(Path(path), "ctDNA variant table")
    required = ["patient_id", "sample_id", "day", "gene", "variant", "vaf", "depth"]
    if not t.require(required):
        t.issues.raise_if_any()
    df = t.df.copy()
    for c in ("patient_id", "sample_id", "gene", "variant"):
        df[c] = t.text(c)
    df["day"] = t.numbers("day", hint=" (days from the index date)")
    df["vaf"] = t.numbers("vaf", minimum=0.0, maximum=1.0, hint=" (a fraction in [0, 1]; 1 % is 0.01)")
    depth = t.numbers("depth", integer=True, minimum=0)
    if "alt_count" in df.columns:
        alt = t.numbers("alt_count", integer=True, minimum=0, required=False)
        over = alt.notna() & depth.notna() & (depth >= 0) & (alt > depth)
        for idx in over.index[over.to_numpy()][:MAX_ISSUES]:
            t.add(idx, "alt_count", f"alt_count ({alt[idx]:g}) exceeds depth ({depth[idx]:g})")
        df["alt_count"] = alt
    t.duplicates(["sample_id", "gene", "variant"], "variant of a sample")
    sp = df[["sample_id", "patient_id"]].dropna().drop_duplicates()
    clash = sp["sample_id"].duplicated(keep="first")
    for idx in sp.index[clash.to_numpy()][:MAX_ISSUES]:
        t.add(
            idx,
            "patient_id",
            f"sample '{sp.at[idx, 'sample_id']}' is given to two patients; a sample belongs to one patient",
        )
    t.issues.raise_if_any()
    df["depth"] = depth.astype(np.int64)
    if "alt_count" in df.columns:
        df["alt_count"] = df["alt_count"].astype("Int64")
    return df


@dataclass
class MetabolomicsData:
    """A metabolomics run: ``intensities`` (feature x injection, NaN = below detection), its sample sheet
    (indexed by sample_id) and the optional feature annotation (indexed by feature_id)."""

    intensities: pd.DataFrame
    sheet: pd.DataFrame
    features: pd.DataFrame | None = None

    def injections(self, sample_type: str) -> list[str]:
        """The matrix columns of one sample type ('sample', 'qc' or 'blank'), in injection order."""
        sub = self.sheet[self.sheet["sample_type"] == sample_type]
        return sub.sort_values(["batch", "injection_order"]).index.tolist()


SAMPLE_TYPES = ("sample", "qc", "blank")


def read_metabolomics(
    matrix_path: str | Path, sample_sheet_path: str | Path, features_path: str | Path | None = None
) -> MetabolomicsData:
    """Read a metabolomics intensity matrix with its sample sheet (and optional feature annotation).

    Problems in any of the files are reported together, each naming its own file.
    """
    matrix_path, sample_sheet_path = Path(matrix_path), Path(sample_sheet_path)
    m = _Table(matrix_path, "metabolomics matrix")
    intensities = None
    if len(m.df.columns) == 0 or m.df.columns[0] != "feature_id":
        m.add(
            None,
            m.df.columns[0] if len(m.df.columns) else None,
            "the first column must be 'feature_id' (then one column per injection, named by sample_id)",
        )
    else:
        fid = m.text("feature_id")
        m.duplicates(["feature_id"], "feature_id")
        values = {
            c: m.numbers(
                c,
                required=False,
                above=0.0,
                hint=" (raw intensity > 0; leave the cell empty below the detection limit)",
            )
            for c in m.df.columns[1:]
        }
        intensities = pd.DataFrame(values, columns=list(m.df.columns[1:]))
        intensities.index = pd.Index(fid, name="feature_id")
        intensities.columns.name = "sample_id"

    s = _Table(sample_sheet_path, "metabolomics sample sheet")
    sheet = None
    if s.require(["sample_id", "sample_type", "batch", "injection_order"]):
        sheet = s.df.copy()
        sheet["sample_id"] = s.text("sample_id")
        sheet["batch"] = s.text("batch")
        stype = s.text("sample_type")
        bad = stype.notna() & ~stype.isin(SAMPLE_TYPES)
        for idx in stype.index[bad.to_numpy()][:MAX_ISSUES]:
            s.add(idx, "sample_type", f"sample_type must be one of {', '.join(SAMPLE_TYPES)}, got {stype[idx]!r}")
        sheet["sample_type"] = stype
        sheet["injection_order"] = s.numbers("injection_order", integer=True, minimum=0)
        s.duplicates(["sample_id"], "sample_id")
        s.duplicates(["batch", "injection_order"], "injection_order within a batch")
        if intensities is not None:
            in_sheet = set(sheet["sample_id"].dropna())
            for c in intensities.columns:
                if c not in in_sheet:
                    m.add(
                        None,
                        c,
                        f"matrix column '{c}' has no row in the sample sheet {sample_sheet_path.name}; "
                        "add one (sample_type sample, qc or blank) or drop the column",
                    )
            in_matrix = sheet["sample_id"].notna() & ~sheet["sample_id"].isin(set(intensities.columns))
            for idx in sheet.index[in_matrix.to_numpy()][:MAX_ISSUES]:
                s.add(
                    idx,
                    "sample_id",
                    f"sample '{sheet.at[idx, 'sample_id']}' has no column in the matrix "
                    f"{matrix_path.name}; remove the row or add the column",
                )

    features = None
    f = None
    if features_path is not None:
        f = _Table(Path(features_path), "metabolomics feature annotation")
        if f.require(["feature_id"]):
            f.df["feature_id"] = f.text("feature_id")
            f.duplicates(["feature_id"], "feature_id")
            features = f.df.set_index("feature_id")
    issues = _Issues(matrix_path)
    for t in (m, s, f):
        if t is not None:
            issues.extend(t.issues)
    issues.raise_if_any()
    assert intensities is not None and sheet is not None
    sheet = sheet.set_index("sample_id")
    sheet["injection_order"] = sheet["injection_order"].astype(np.int64)
    return MetabolomicsData(intensities, sheet, features)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a precomputed sample x feature table: ``sample_id`` then numeric features (empty = missing)."""
    t = _Table(Path(path), "feature table")
    if not t.require(["sample_id"]):
        t.issues.raise_if_any()
    sid = t.text("sample_id")
    t.duplicates(["sample_id"], "sample_id")
    features = [c for c in t.df.columns if c != "sample_id"]
    if not features:
        t.add(None, None, "no feature columns: a table has sample_id and then one numeric column per feature")
    values = {c: t.numbers(c, required=False, hint=" (leave the cell empty for a missing value)") for c in features}
    t.issues.raise_if_any()
    out = pd.DataFrame(values, columns=features)
    out.index = pd.Index(sid, name="sample_id")
    return out


def read_cn_segments(path: str | Path) -> pd.DataFrame:
    """Read copy-number segments (``sample_id, chrom, start, end, segment_mean`` [, ``num_probes``]), as GDC writes."""
    t = _Table(Path(path), "copy-number segment table")
    required = ["sample_id", "chrom", "start", "end", "segment_mean"]
    if not t.require(required):
        t.issues.raise_if_any()
    df = t.df.copy()
    df["sample_id"] = t.text("sample_id")
    df["chrom"] = t.text("chrom")
    start = t.numbers("start", integer=True, minimum=0)
    end = t.numbers("end", integer=True, minimum=0)
    bad = start.notna() & end.notna() & (end < start)
    for idx in bad.index[bad.to_numpy()][:MAX_ISSUES]:
        t.add(idx, "end", f"end ({end[idx]:g}) must be >= start ({start[idx]:g})")
    df["segment_mean"] = t.numbers("segment_mean", hint=" (log2 copy ratio)")
    if "num_probes" in df.columns:
        df["num_probes"] = t.numbers("num_probes", integer=True, minimum=0, required=False).astype("Int64")
    t.issues.raise_if_any()
    df["start"] = start.astype(np.int64)
    df["end"] = end.astype(np.int64)
    df["chrom"] = df["chrom"].astype("category")
    return df

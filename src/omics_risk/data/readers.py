"""Readers for the data files a cohort points to, one per modality format (see docs/data_format.md).

Every reader returns columnar, vectorised data (numpy arrays, pandas frames, SimpleITK images) so that feature
extraction and scoring can reuse it, and raises :class:`DataFileError` on malformed input. The error names the
file, the line and column when they are known, and what to do; ``DataFileError.issues`` lists every problem
found in the file (up to :data:`MAX_ISSUES`), so ``omics-risk validate`` can report all of them at once.

Text formats are parsed with pyarrow (fast path); only when that fails is the file re-scanned line by line to
locate the bad lines, so a valid 100k-line fragment file costs tens of milliseconds. Images are judged from their
headers before any voxel is read (:func:`read_image_header`, :func:`check_image_header`), so a corrupt header
declaring a gigantic grid costs milliseconds, not the memory it claims.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import os
import re
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from omics_risk.data.registry import get_format

__all__ = [
    "AUTOSOME_RE",
    "BAM_EXTENSIONS",
    "BISMARK_EXTENSIONS",
    "BISMARK_PERCENT_TOLERANCE",
    "DEFAULT_BINNED_CHROMS",
    "FRAGMENT_EXTENSIONS",
    "GRID_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "MAX_DICOM_FILES",
    "MAX_IMAGE_VOXELS",
    "MAX_IMAGE_VOXELS_ENV",
    "MAX_ISSUES",
    "TABLE_EXTENSIONS",
    "DataFileError",
    "FileIssue",
    "Fragments",
    "ImageHeader",
    "MetabolomicsData",
    "binned_chromosomes",
    "check_image_header",
    "check_mask_geometry",
    "check_mask_header",
    "check_mask_labels",
    "chromosome_naming_problem",
    "first_wide_line",
    "format_extension_problem",
    "has_extension",
    "image_voxel_limit",
    "read_bed",
    "read_bismark_cov",
    "read_chrom_sizes",
    "read_cn_segments",
    "read_fragments",
    "read_image",
    "read_image_header",
    "read_image_voxels",
    "read_metabolomics",
    "read_table",
    "read_variant_table",
    "reference_chromosomes",
]

#: At most this many problems are itemised per file; the rest are counted.
MAX_ISSUES = 20

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
FRAGMENT_EXTENSIONS = (".frag.gz", ".frag.tsv.gz", ".bed.gz", ".tsv.gz", ".frag", ".frag.tsv", ".bed", ".tsv")
BAM_EXTENSIONS = (".bam",)
BISMARK_EXTENSIONS = (".cov", ".cov.gz")
TABLE_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")
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
    """Why ``path`` cannot hold modality format ``fmt`` (judged by name and kind), or None when it can.

    The extensions are the registered format's (:mod:`omics_risk.data.formats`); a format whose samples need a mask
    (an image) may also be a folder (a DICOM series).
    """
    entry = get_format(fmt)
    if entry is None:
        return f"unknown format {fmt!r}"
    exts = entry.extensions
    if path.is_dir():
        if entry.needs_mask:
            return None
        return f"is a folder, but format '{fmt}' needs a file ({', '.join(exts)})"
    if has_extension(path, exts):
        return None
    extra = " or a folder holding one DICOM series" if entry.needs_mask else ""
    return f"has an extension that format '{fmt}' does not read; use {', '.join(exts)}{extra}"


# --------------------------------------------------------------------------------------------------- images


#: The largest image (voxel count) read by default: 512 x 512 x 2048. A chest CT is 512 x 512 with 100-700
#: slices, a thin-slice (0.5-0.625 mm) chest-abdomen-pelvis scan up to ~1,500, and a 1024 x 1024 high-resolution
#: scan of the chest up to ~500 slices, so real scans fit with room to spare; at the limit the volume is 1 GiB as
#: int16 and 2 GiB as the float32 copy radiomics makes, what a 16 GB workstation still holds for a few parallel
#: workers. A header declaring more (1024^3 is twice the limit) is refused before any voxel is read. Override with
#: the ``max_voxels`` argument or the environment variable :data:`MAX_IMAGE_VOXELS_ENV`.
MAX_IMAGE_VOXELS = 512 * 512 * 2048
#: Environment variable overriding :data:`MAX_IMAGE_VOXELS` for validate and every extractor (a whole number).
MAX_IMAGE_VOXELS_ENV = "OMICS_RISK_MAX_IMAGE_VOXELS"
#: Largest deviation of a direction matrix from orthonormal (``|D^T D - I|``), and of two grids' spacing / origin
#: (mm) and direction cosines: loose enough for the 6-decimal rounding of DICOM and the float32 of NIfTI headers.
GRID_TOLERANCE = 1e-3


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
    reason = re.sub(r"\S*\.(cxx|hxx|h):\d+:\s*", "", reason)
    reason = re.sub(r"(sitk::ERROR|ITK ERROR): ?(\w+\(0x[0-9a-f]+\): ?)?", "", reason).strip()
    if len(reason) > 240:
        reason = reason[:240].rsplit(" ", 1)[0] + " ..."
    return reason


#: ITK warnings (e.g. GDCM's "No Series were found") go to stderr; they are silenced while scanning folders,
#: under a lock because the switch is global and validate reads from several threads.
_ITK_WARNINGS_LOCK = threading.Lock()


def image_voxel_limit(max_voxels: int | None = None) -> int:
    """The largest voxel count to read: ``max_voxels`` if given, else :data:`MAX_IMAGE_VOXELS_ENV`, else the default.

    Read at each call (not at import), so a changed environment applies to the next image.
    """
    if max_voxels is not None:
        if int(max_voxels) <= 0:
            raise ValueError(f"max_voxels must be > 0, got {max_voxels}")
        return int(max_voxels)
    raw = os.environ.get(MAX_IMAGE_VOXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_VOXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"environment variable {MAX_IMAGE_VOXELS_ENV}={raw!r} must be a whole number of voxels > 0 "
            f"(default {MAX_IMAGE_VOXELS}); fix or unset it"
        )
    return value


@dataclass(frozen=True)
class ImageHeader:
    """The grid of an image as its header declares it, read without a single voxel (:func:`read_image_header`).

    ``spacing`` and ``origin`` are in mm, ``direction`` is the row-major direction matrix (LPS, as ITK). For NIfTI,
    ``size`` and ``spacing`` hold the raw ``dim`` / ``pixdim`` fields where ITK would silently replace a zero,
    negative or non-finite value, so that :func:`check_image_header` sees what the file really says. ``files`` are
    the slices of a DICOM series (in ITK's order), else the file itself; ``data_bytes`` is what a NIfTI header
    promises (offset + voxels), None for other formats.
    """

    path: str
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_type: str
    components: int = 1
    files: tuple[str, ...] = ()
    data_bytes: int | None = None

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def n_voxels(self) -> int:
        return math.prod(self.size)

    @classmethod
    def of(cls, image: Any, path: str = "") -> ImageHeader:
        """The header of an image already in memory (a ``SimpleITK.Image``)."""
        return cls(
            path,
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(s) for s in image.GetOrigin()),
            tuple(float(s) for s in image.GetDirection()),
            image.GetPixelIDTypeAsString(),
            int(image.GetNumberOfComponentsPerPixel()),
        )


#: The most files a DICOM series folder may hold. Every file is pre-checked (:func:`_check_dicom_slice`) before
#: GDCM scans the folder, so the cap bounds that check: 4096 is twice the slices of the largest 512 x 512 series the
#: default voxel limit admits (2048), so a real series always fits; a folder with more is refused before any file is
#: opened. Split such a series, or put each series in its own folder.
MAX_DICOM_FILES = 4096
#: pydicom reads element values up to this size while pre-checking a slice; longer ones (pixel data) are skipped by
#: seeking, so the check reads the header only, whatever lengths a damaged file declares.
_DICOM_DEFER_BYTES = 4096
_DICOM_BITS = (1, 8, 16, 32, 64)
#: pydicom warns (UserWarning) on every odd value of a damaged slice; the slice is judged and named here instead, so
#: those warnings are silenced while it is read, under a lock because the warning filters are process-wide.
_PYDICOM_WARNINGS_LOCK = threading.Lock()
_NO_DICOM_SERIES = (
    f"folder holds no DICOM series; point path to a folder of DICOM slices or to an image file "
    f"({', '.join(IMAGE_EXTENSIONS)})"
)
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _dicom_elements_past_end(ds: Any, size: int) -> str | None:
    """The first element (file meta or data set) whose declared length runs past the end of the file, described."""
    for group in (getattr(ds, "file_meta", None), ds):
        if group is None:
            continue
        for tag in list(group.keys()):
            el = group.get_item(tag, keep_deferred=True)
            tell, length = getattr(el, "value_tell", None), getattr(el, "length", None)
            if tell is None or length is None or length == _UNDEFINED_LENGTH:
                continue
            if tell + length > size:
                return (
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length:,} bytes at offset {tell:,} but "
                    f"the file ends at {size:,} bytes"
                )
    return None


def _dicom_int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    """A whole-number attribute (Rows, BitsAllocated, ...) or None when it is absent, multi-valued or not a number."""
    if keyword not in ds:
        return default
    try:
        value = ds[keyword].value
    except Exception:  # pydicom raises many types on a damaged value
        return None
    if isinstance(value, (bytes, str)):
        value = value.strip() if isinstance(value, str) else value
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _NotDicom(DataFileError):
    """A file of a DICOM folder that is not DICOM at all (no 'DICM' marker, and not readable as a slice without)."""


def _check_dicom_slice(path: Path, folder: Path) -> tuple[int, int, int]:
    """Check one file of a DICOM folder from its header alone; its grid as ITK orders it (columns, rows, frames).

    GDCM's folder scan trusts every length a file declares: one damaged 1.4 KB slice made it allocate about 3 GB.
    So each file is read here first, with pydicom and without its pixel data (values over
    :data:`_DICOM_DEFER_BYTES` are skipped, not read), and refused unless it is a DICOM image whose every element
    lies inside the file, whose grid (Rows, Columns, NumberOfFrames, SamplesPerPixel, BitsAllocated) is plausible,
    and whose uncompressed pixel data holds exactly the bytes that grid needs. Raises :class:`DataFileError`
    naming the slice (:class:`_NotDicom` when it has no 'DICM' marker: DICOM without one must pass every check).
    """
    with open(path, "rb") as fh:
        fh.seek(128)
        marked = fh.read(4) == b"DICM"
    try:
        with _PYDICOM_WARNINGS_LOCK, warnings.catch_warnings(action="ignore"):
            return _check_dicom_header(path, folder)
    except DataFileError as exc:
        if marked:
            raise
        raise _NotDicom(
            path,
            f"not a DICOM file (no 'DICM' marker at byte 128, and {exc.issues[0].message.split(';')[0]}); a DICOM "
            f"series folder must hold only the slices of one series: move it out of {folder.name}/",
        ) from exc


def _check_dicom_header(path: Path, folder: Path) -> tuple[int, int, int]:
    """The checks of :func:`_check_dicom_slice`, on a file read with pydicom (``force``: a marker is not required)."""
    import pydicom

    fix = f"remove or replace that file (re-export or re-copy the series), or move it out of {folder.name}/"
    size = path.stat().st_size
    try:
        ds = pydicom.dcmread(path, defer_size=_DICOM_DEFER_BYTES, force=True)
        past_end = _dicom_elements_past_end(ds, size)
    except Exception as exc:  # pydicom raises many types (and warnings) on a damaged file
        raise DataFileError(path, f"DICOM slice cannot be parsed ({type(exc).__name__}: {exc}); {fix}") from exc
    if past_end is not None:
        raise DataFileError(path, f"damaged or truncated DICOM slice: {past_end}; {fix}")
    grid = {k: _dicom_int(ds, k) for k in ("Rows", "Columns", "BitsAllocated")}
    grid["SamplesPerPixel"] = _dicom_int(ds, "SamplesPerPixel", 1)
    grid["NumberOfFrames"] = _dicom_int(ds, "NumberOfFrames", 1)
    pixels = ds.get_item(_PIXEL_DATA, keep_deferred=True) if _PIXEL_DATA in ds else None
    if pixels is None:
        raise DataFileError(path, f"DICOM file holds no pixel data (not an image slice); {fix}")
    bad = [k for k, v in grid.items() if v is None]
    if bad:
        raise DataFileError(path, f"DICOM slice lacks a valid {', '.join(bad)} (one whole number each); {fix}")
    rows, cols, bits = int(grid["Rows"] or 0), int(grid["Columns"] or 0), int(grid["BitsAllocated"] or 0)
    samples, frames = int(grid["SamplesPerPixel"] or 0), int(grid["NumberOfFrames"] or 0)
    absurd = []
    if not (1 <= rows <= 65535 and 1 <= cols <= 65535):
        absurd.append(f"Rows x Columns = {rows} x {cols} (each 1 to 65535)")
    if bits not in _DICOM_BITS:
        absurd.append(f"BitsAllocated = {bits} (one of {', '.join(map(str, _DICOM_BITS))})")
    if samples not in (1, 3, 4):
        absurd.append(f"SamplesPerPixel = {samples} (1, 3 or 4)")
    if frames < 1:
        absurd.append(f"NumberOfFrames = {frames} (at least 1)")
    if absurd:
        raise DataFileError(path, f"DICOM slice declares an impossible grid: {'; '.join(absurd)}; {fix}")
    voxels = rows * cols * frames
    length = int(getattr(pixels, "length", 0) or 0)
    if length != _UNDEFINED_LENGTH:  # native (uncompressed) pixel data: its length is fixed by the grid
        need = (voxels * samples * bits + 7) // 8
        if length not in (need, need + (need & 1)):  # odd lengths are padded to even
            raise DataFileError(
                path,
                f"DICOM slice pixel data holds {length:,} bytes but its header declares {rows} x {cols} x {frames} "
                f"voxels of {samples} x {bits} bits = {need:,} bytes; {fix}",
            )
    return cols, rows, frames


def _check_dicom_folder(path: Path, max_voxels: int | None) -> None:
    """Pre-check every file of a DICOM folder (:func:`_check_dicom_slice`) and the voxel limit, before GDCM sees it.

    Cost is bounded by :data:`MAX_DICOM_FILES` files, each read up to its pixel data.
    """
    try:
        limit = image_voxel_limit(max_voxels)
    except ValueError as exc:  # a malformed OMICS_RISK_MAX_IMAGE_VOXELS: name it rather than crash the caller
        raise DataFileError(path, f"cannot check the image size: {exc}") from exc
    files: list[Path] = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir():
                continue  # GDCM scans the folder itself, not its subfolders
            files.append(Path(entry.path))
            if len(files) > MAX_DICOM_FILES:
                raise DataFileError(
                    path,
                    f"folder holds more than {MAX_DICOM_FILES} files; a DICOM series folder may hold at most "
                    f"{MAX_DICOM_FILES} slices and nothing else: split it or move the other files out",
                )
    grids: list[tuple[int, int, int]] = []
    strangers: list[_NotDicom] = []
    for file in sorted(files):
        try:
            grids.append(_check_dicom_slice(file, path))
        except _NotDicom as exc:
            strangers.append(exc)
    if not grids:  # nothing DICOM here: said without handing GDCM files it would have to guess at
        raise DataFileError(
            path, _NO_DICOM_SERIES + (f" ({Path(strangers[0].issues[0].path).name} is not DICOM)" if strangers else "")
        )
    if strangers:
        raise strangers[0]
    total = sum(c * r * f for c, r, f in grids)
    if total > limit:
        planes = {(c, r) for c, r, _ in grids}
        dims = f"{grids[0][0]} x {grids[0][1]} x {sum(f for *_, f in grids)}" if len(planes) == 1 else "its slices"
        raise DataFileError(path, _too_many_voxels(dims, total, limit))


def _dicom_series_files(path: Path, max_voxels: int | None = None) -> list[str]:
    """The slices of the one DICOM series in folder ``path``, sorted by ITK/GDCM along the slice normal.

    Every file is pre-checked first (:func:`_check_dicom_folder`): GDCM only ever scans files that are consistent.
    """
    import SimpleITK as sitk

    _check_dicom_folder(path, max_voxels)

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
        raise DataFileError(path, _NO_DICOM_SERIES)
    if len(ids) > 1:
        raise DataFileError(
            path,
            f"folder holds {len(ids)} DICOM series ({', '.join(ids)}); put each series in "
            "its own folder and give each its own samples.csv row",
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))


def _file_info(path: Path, shown_as: Path) -> Any:
    """An ``ImageFileReader`` that has read the header of one file (ITK reads no voxel for this)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataFileError(
            shown_as, f"cannot be read as an image ({_itk_reason(exc, path)}); re-export or re-copy it"
        ) from exc
    return reader


#: teem, ITK's NRRD reader, copies a header line it cannot parse into a fixed-size (about 1 KB) error buffer: a
#: longer line crashes the whole process (a segfault, not an exception). Such lines are refused before ITK reads
#: the file. Comments, ``content:`` and ``key:=value`` lines are never echoed into that buffer, so any length is fine.
_NRRD_MAX_LINE = 512


def _check_nrrd_header(path: Path) -> None:
    """Refuse NRRD header lines long enough to crash ITK's reader (see :data:`_NRRD_MAX_LINE`)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    for number, line in enumerate(head.split(b"\n"), 1):
        line = line.rstrip(b"\r")
        if not line:
            return  # the blank line that ends the header
        kv, field = line.find(b":="), line.find(b": ")
        if len(line) <= _NRRD_MAX_LINE or line.startswith((b"#", b"content:")) or (kv >= 0 and not 0 <= field < kv):
            continue
        raise DataFileError(
            path,
            f"NRRD header line of {len(line)} bytes: ITK's NRRD reader cannot take header lines over "
            f"{_NRRD_MAX_LINE} bytes (comments, content and key:=value lines aside); fix or re-export the image",
            number,
        )


#: MetaIO, ITK's MetaImage reader, sizes its per-axis arrays for at most 10 dimensions and writes past them when a
#: header's NDims is negative or larger, and passes an ElementDataFile pattern to printf and divides by its step:
#: 'NDims = -1', 'NDims = 1e3', '... = x%s.raw 1 3 1' or a step of 0 crash the process (SIGSEGV, SIGFPE) instead of
#: raising. Such headers are refused before ITK reads them. (MetaIO accepts '=' or ':' and reads numbers like atof.)
_METAIMAGE_FIELD = re.compile(rb"^[ \t]*(NDims|ElementDataFile)[ \t]*[=:][ \t]*([^\r\n]*)", re.M)
_METAIMAGE_NUMBER = re.compile(rb"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_METAIMAGE_PATTERN = re.compile(rb"[^%\s]*%0?[0-9]*d[^%\s]*\s+-?[0-9]+\s+-?[0-9]+\s+-?[1-9][0-9]*\s*")


def _check_metaimage_header(path: Path) -> None:
    """Refuse MetaImage headers that would crash ITK's reader (see :data:`_METAIMAGE_FIELD`)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    for m in _METAIMAGE_FIELD.finditer(head):
        key, value = m.group(1), m.group(2).strip()
        line = head.count(b"\n", 0, m.start()) + 1
        if key == b"NDims":
            number = _METAIMAGE_NUMBER.match(value)
            if number is not None and not 1 <= float(number.group()) < 11:
                raise DataFileError(
                    path, f"MetaImage header declares NDims = {number.group().decode()}; use 1 to 10 (a CT has 3)", line
                )
            continue
        if b"%" in value and not _METAIMAGE_PATTERN.fullmatch(value):
            raise DataFileError(
                path,
                f"MetaImage ElementDataFile {value[:80].decode('utf-8', 'replace')!r} is not a file name, LOCAL, LIST "
                "or a slice pattern such as 'slice%03d.raw 1 100 1' (one %d, a non-zero step); fix or re-export",
                line,
            )
        return  # the image data (or its file list) follows ElementDataFile: the header ends here


_METAIMAGE_ANY_FIELD = re.compile(rb"^[ \t]*(\w+)[ \t]*[=:][ \t]*([^\r\n]*)(?:\r?\n|$)", re.M)


def _metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """The header fields of a MetaImage (up to ElementDataFile, which ends it) and the offset where its data starts."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    fields: dict[str, str] = {}
    for m in _METAIMAGE_ANY_FIELD.finditer(head):
        fields[m.group(1).decode("ascii", "replace")] = m.group(2).strip().decode("utf-8", "replace")
        if m.group(1) == b"ElementDataFile":
            return fields, m.end()
    return fields, len(head)


def _check_metaimage_data(path: Path, header: ImageHeader) -> None:
    """Refuse MetaImage voxel data that ITK would misread: too few bytes, or a compressed stream that is not one.

    MetaIO reports both only on stderr: a truncated file becomes a misleading "No such file or directory", and
    ``CompressedData = True`` over raw bytes ("Uncompress failed") is returned as an image of garbage voxels. Runs
    after :func:`check_image_header`, so the bytes it needs are bounded by the voxel limit; compressed data is
    inflated in 4 MB steps and never held whole.
    """
    fields, offset = _metaimage_fields(path)
    source = fields.get("ElementDataFile", "")
    if source == "LOCAL":
        data = path
    elif source and " " not in source and source not in ("LIST",) and "%" not in source:
        data, offset = path.parent / source, 0
    else:
        return  # a slice list or pattern: ITK reads and checks each file itself
    if "HeaderSize" in fields or not data.is_file():
        return  # a skipped header (or a missing data file, which ITK names correctly)
    bits = re.search(r"(\d+)-bit", header.pixel_type)
    need = header.n_voxels * header.components * (int(bits.group(1)) // 8 if bits else 1)
    have = data.stat().st_size - offset
    shown = data.name if data != path else "the file"
    if fields.get("CompressedData", "F")[:1] not in ("T", "t", "1"):  # as MetaIO reads it
        if have < need:
            raise DataFileError(
                path,
                f"truncated image: the header declares {need:,} bytes of voxel data but {shown} holds {max(have, 0):,} "
                "after the header; re-export or re-copy the image",
            )
        return
    declared = fields.get("CompressedDataSize", "")
    if declared.isdigit() and have < int(declared):
        raise DataFileError(
            path,
            f"truncated image: the header declares CompressedDataSize = {declared} but {shown} holds "
            f"{max(have, 0):,} bytes after the header; re-export or re-copy the image",
        )
    inflater, out = zlib.decompressobj(zlib.MAX_WBITS | 32), 0  # zlib or gzip, as MetaIO accepts
    try:
        with open(data, "rb") as fh:
            fh.seek(offset)
            while out < need and (chunk := fh.read(1 << 22)):
                while chunk and out < need:
                    out += len(inflater.decompress(chunk, 1 << 22))
                    chunk = inflater.unconsumed_tail
                if inflater.eof:
                    break
    except zlib.error as exc:
        raise DataFileError(
            path,
            f"the header declares CompressedData = True but the voxel data is not a valid zlib stream ({exc}); "
            "fix CompressedData or re-export the image",
        ) from exc
    if out < need:
        raise DataFileError(
            path,
            f"truncated image: the compressed voxel data inflates to {out:,} bytes but the header declares {need:,}; "
            "re-export or re-copy the image",
        )


def _nifti_header(path: Path) -> Any:
    """The raw NIfTI-1/2 header (nibabel, no fixes applied); a .nii.gz is decompressed only as far as the header."""
    import nibabel as nib

    opener = gzip.open if has_extension(path, (".gz",)) else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(540)
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises zlib.error on corrupt deflate data
        raise DataFileError(path, f"truncated or corrupt gzip stream ({exc}); re-export or re-copy the image") from exc
    size_le, size_be = (int.from_bytes(raw[:4], order) if len(raw) >= 4 else 0 for order in ("little", "big"))
    klass = nib.Nifti2Header if 540 in (size_le, size_be) else nib.Nifti1Header
    try:
        return klass.from_fileobj(io.BytesIO(raw), check=False)
    except Exception as exc:  # nibabel raises many types on bad headers
        raise DataFileError(path, f"not a valid NIfTI file ({exc}); re-export the image") from exc


def read_image_header(path: str | Path, *, max_voxels: int | None = None) -> ImageHeader:
    """The grid of a CT volume or mask (any :func:`read_image` format) from its header alone: no voxel is read.

    A DICOM series' grid comes from its first and last slice headers, as ITK's series reader computes it (slice
    spacing = distance between them / (slices - 1)). Raises :class:`DataFileError` when the header is unreadable.
    A DICOM folder's slices are pre-checked one by one (:func:`_check_dicom_slice`), and their voxels summed against
    ``max_voxels`` (default :func:`image_voxel_limit`), before GDCM scans the folder.
    """
    path = Path(path)
    if path.is_dir():
        files = _dicom_series_files(path, max_voxels)
        first = _file_info(Path(files[0]), path)
        size = [int(s) for s in first.GetSize()]
        spacing = [float(s) for s in first.GetSpacing()]
        if len(files) > 1:
            last = _file_info(Path(files[-1]), path)
            size[-1] = len(files)
            gap = float(np.linalg.norm(np.subtract(last.GetOrigin(), first.GetOrigin())))
            spacing[-1] = gap / (len(files) - 1) if gap > 0 else 1.0  # ITK falls back to 1 for coincident slices
        return ImageHeader(
            str(path),
            tuple(size),
            tuple(spacing),
            tuple(float(v) for v in first.GetOrigin()),
            tuple(float(v) for v in first.GetDirection()),
            _pixel_name(first),
            int(first.GetNumberOfComponents()),
            tuple(files),
        )
    if not path.exists():
        raise DataFileError(path, "file not found")
    if not has_extension(path, IMAGE_EXTENSIONS):
        raise DataFileError(
            path,
            f"unsupported image format; use one of {', '.join(IMAGE_EXTENSIONS)} or a folder holding one DICOM series",
        )
    nifti = _nifti_header(path) if has_extension(path, (".nii", ".nii.gz")) else None
    if has_extension(path, (".nrrd", ".nhdr")):
        _check_nrrd_header(path)
    elif has_extension(path, (".mha", ".mhd")):
        _check_metaimage_header(path)
    info = _file_info(path, path)
    size = tuple(int(s) for s in info.GetSize())
    spacing = tuple(float(s) for s in info.GetSpacing())
    data_bytes = None
    if nifti is not None:
        shape = tuple(int(n) for n in nifti.get_data_shape())
        pixdim = [float(v) for v in nifti["pixdim"][1 : 1 + len(spacing)]]
        if 0 in shape:  # ITK reads dim = 0 as 1
            size = shape
        spacing = tuple(p if not (math.isfinite(p) and p > 0) else s for p, s in zip(pixdim, spacing, strict=False))
        data_bytes = int(nifti.get_data_offset()) + math.prod(shape) * np.dtype(nifti.get_data_dtype()).itemsize
    return ImageHeader(
        str(path),
        size,
        spacing,
        tuple(float(v) for v in info.GetOrigin()),
        tuple(float(v) for v in info.GetDirection()),
        _pixel_name(info),
        int(info.GetNumberOfComponents()),
        (str(path),),
        data_bytes,
    )


def _pixel_name(reader: Any) -> str:
    import SimpleITK as sitk

    return str(sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


def _too_many_voxels(dims: str, n_voxels: int, limit: int) -> str:
    """The message for a grid over the voxel limit (one wording for every format, DICOM folders included)."""
    return (
        f"the header declares {dims} = {n_voxels:,} voxels, more than the limit of {limit:,}; no voxel was read. A "
        "corrupt header needs a re-export; a real scan that large needs cropping or resampling, or a higher limit "
        f"(environment variable {MAX_IMAGE_VOXELS_ENV})"
    )


def check_image_header(header: ImageHeader, max_voxels: int | None = None) -> list[str]:
    """Why the grid a header declares is unusable (empty axis, too many voxels, bad spacing or direction); [] if fine.

    ``max_voxels`` defaults to :func:`image_voxel_limit`. Costs nothing: it runs before any voxel is read, so a
    corrupt header declaring 1024^3 voxels is refused in milliseconds instead of filling the memory.
    """
    limit = image_voxel_limit(max_voxels)
    out: list[str] = []
    dims = " x ".join(str(s) for s in header.size)
    if any(s < 1 for s in header.size):
        out.append(f"the header declares an empty grid ({dims} voxels); re-export the image")
    elif header.n_voxels > limit:
        out.append(_too_many_voxels(dims, header.n_voxels, limit))
    spacing = np.asarray(header.spacing, dtype=float)
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        out.append(
            f"voxel spacing {_fmt(header.spacing)} mm must be finite and > 0 on every axis; fix the header "
            "(pixdim / ElementSpacing / PixelSpacing) or re-export the image"
        )
    d = len(header.size)
    direction = np.asarray(header.direction, dtype=float)
    if direction.size != d * d or not np.all(np.isfinite(direction)):
        out.append(f"direction {_fmt(header.direction)} is not a finite {d} x {d} matrix; re-export the image")
    else:
        m = direction.reshape(d, d)
        if np.abs(m.T @ m - np.eye(d)).max() > GRID_TOLERANCE:
            out.append(
                f"direction cosines {_fmt(header.direction)} are not orthonormal (axes skewed or scaled); "
                "re-export the image with a valid orientation"
            )
    return out


def check_mask_header(image: ImageHeader, mask: ImageHeader, tol: float = GRID_TOLERANCE) -> list[str]:
    """Why ``mask`` is not on the grid of ``image`` (dimension, size, spacing, origin, direction, one component).

    Headers only, so a mask exported on another grid is found without reading either volume. ``tol`` is the
    absolute tolerance in mm for spacing and origin and on direction cosines.
    """
    if image.dimension != mask.dimension:
        return [f"mask is {mask.dimension}-D but the image is {image.dimension}-D"]
    out: list[str] = []
    if mask.components != 1:
        out.append(f"mask has {mask.components} components per voxel; it needs one label")
    if tuple(image.size) != tuple(mask.size):
        out.append(f"size differs: mask {tuple(mask.size)} voxels, image {tuple(image.size)}")
    for what, a, b in (
        ("spacing", image.spacing, mask.spacing),
        ("origin", image.origin, mask.origin),
        ("direction", image.direction, mask.direction),
    ):
        if not np.allclose(a, b, rtol=0.0, atol=tol):
            unit = "" if what == "direction" else " mm"
            out.append(f"{what} differs: mask {_fmt(b)}{unit}, image {_fmt(a)}{unit}")
    if out:
        return [*out, "resample the mask onto the image grid (nearest neighbour) or export both from the same series"]
    return out


def _check_nifti_complete(path: Path, need: int) -> None:
    """ITK silently zero-fills a truncated NIfTI; compare the data bytes present with the ``need`` the header promises.

    Only called once the header has passed :func:`check_image_header`, so the bytes counted are bounded by the
    voxel limit: a .nii.gz is decompressed in 4 MB chunks and never held whole.
    """
    if has_extension(path, (".gz",)):
        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while have < need and (chunk := fh.read(1 << 22)):
                    have += len(chunk)
        except (EOFError, OSError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: corrupt deflate data
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


def read_image_voxels(header: ImageHeader) -> Any:
    """The voxels of an image whose header was read (and checked) with :func:`read_image_header`."""
    import SimpleITK as sitk

    path = Path(header.path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(list(header.files))
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise DataFileError(path, f"DICOM series cannot be read: {_itk_reason(exc, path)}") from exc
    if header.data_bytes is not None:
        _check_nifti_complete(path, header.data_bytes)
    elif has_extension(path, (".mha", ".mhd")):
        _check_metaimage_data(path, header)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataFileError(
            path, f"cannot be read as an image ({_itk_reason(exc, path)}); re-export or re-copy it"
        ) from exc


def read_image(path: str | Path, *, max_voxels: int | None = None) -> Any:
    """Read a CT volume or mask (NIfTI, NRRD, MetaImage, or a folder holding exactly one DICOM series).

    Returns a ``SimpleITK.Image`` in LPS physical space, whichever format it came from. The header is read and
    checked first (:func:`check_image_header`: at most ``max_voxels`` voxels, default :func:`image_voxel_limit`;
    positive spacing; orthonormal direction), so a corrupt header fails in milliseconds without reading voxels.
    """
    path = Path(path)
    header = read_image_header(path, max_voxels=max_voxels)
    try:
        why = check_image_header(header, max_voxels)
    except ValueError as exc:  # a malformed OMICS_RISK_MAX_IMAGE_VOXELS: name it rather than crash the extractor
        raise DataFileError(path, f"cannot check the image size: {exc}") from exc
    if why:
        raise DataFileError(path, "; ".join(why))
    return read_image_voxels(header)


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


def check_mask_labels(mask: Any) -> list[str]:
    """Why the voxels of ``mask`` are not a tumour mask (non-integer labels, or no voxel > 0); [] if fine."""
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(mask)
    integral = mask.GetPixelIDTypeAsString() in _INTEGER_PIXELS
    if not integral and not np.all(np.isfinite(values) & (values == np.round(values))):
        return ["mask holds non-integer values; a mask holds integer labels (0 = background, > 0 = tumour)"]
    if not np.any(values > 0):
        return ["mask is empty (no voxel > 0); give the tumour a label > 0"]
    return []


def check_mask_geometry(image: Any, mask: Any, tol: float = GRID_TOLERANCE) -> list[str]:
    """Why ``mask`` cannot serve as the tumour mask of ``image`` (same grid, integer labels, non-empty); [] if fine.

    ``tol`` is an absolute tolerance in mm for spacing and origin and on direction cosines, loose enough for the
    rounding of DICOM and NIfTI headers. The grid is compared first (:func:`check_mask_header`); the labels are
    looked at only when it agrees.
    """
    out = check_mask_header(ImageHeader.of(image), ImageHeader.of(mask), tol)
    return out or check_mask_labels(mask)


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

#: What pyarrow's int64 and float64 conversions accept (ASCII digits; no '+' or '_' in integers, unlike Python's
#: int() and float()), so that the line re-scan finds, with its line, every value the fast parse refused.
_INT_RE = re.compile(r" *-?[0-9]+ *")
_FLOAT_RE = re.compile(r" *[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)? *|(?i: *[-+]?(?:inf|infinity|nan) *)")


def _int_field(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(s: str) -> str | None:
        if not _INT_RE.fullmatch(s):
            return f"must be a whole number, got {s!r}"
        v = int(s)
        if not -(2**63) <= v < 2**63:
            return f"is out of range (a 64-bit whole number), got {s!r}"
        if minimum is not None and v < minimum:
            return f"must be >= {minimum}, got {s!r}"
        if maximum is not None and v > maximum:
            return f"must be <= {maximum}, got {s!r}"
        return None

    return check


def _float_field(minimum: float | None = None, maximum: float | None = None) -> Validator:
    def check(s: str) -> str | None:
        if not _FLOAT_RE.fullmatch(s):
            return f"must be a number, got {s!r}"
        v = float(s)
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
                null_values=[],  # by default "", NA, null, nan ... become nulls: NaN floats, garbage once cast to int
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


#: sys.excepthook and sys.unraisablehook are process-wide; validate opens BAMs from several threads.
_PYSAM_HOOKS_LOCK = threading.Lock()


def _open_bam(path: Path) -> Any:
    """``pysam.AlignmentFile`` without the stray traceback pysam prints on stderr when a BAM header is unreadable.

    The half-opened file then fails to close in ``__dealloc__``, and Cython reports that OSError through
    sys.excepthook and sys.unraisablehook ('Exception ignored in ... Traceback ...'), although the ValueError or
    OSError raised here, turned into a DataFileError by the caller, already says what is wrong.
    """
    import pysam

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


# --------------------------------------------------------------------------------------------------- chromosome names


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


#: Largest difference, in percentage points, between percent_methylated and 100 x count_methylated / coverage before
#: a line is reported as contradicting its counts. Bismark prints the exact ratio (Perl, 15 significant digits);
#: files whose percent was rounded to an integer are off by at most 0.5 and those whose percent was truncated to one
#: (MethylDackel, PileOMeth-style ``printf %d``) by less than 1, so 1 accepts every producer. The mistakes it is
#: for are far above: swapped count columns are off by |100 - 2p|, a fraction (0-1) written instead of a percent by
#: ~p. A further 1e-6 absorbs float formatting.
BISMARK_PERCENT_TOLERANCE = 1.0


def read_bismark_cov(path: str | Path, *, notes: list[FileIssue] | None = None) -> pd.DataFrame:
    """Read a Bismark coverage file (``.cov`` / ``.cov.gz``) into a typed frame, checking every line.

    Besides the format, each line's percent_methylated must agree with its counts (within
    :data:`BISMARK_PERCENT_TOLERANCE`): a disagreement means swapped or shifted columns, which would silently
    invert the methylation features. Lines with no read at all (both counts 0) are harmless to the features but
    are not what Bismark writes; they are listed in ``notes`` when given (``validate`` shows them as warnings).
    """
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
    meth, unmeth = cols["count_methylated"], cols["count_unmethylated"]
    total = meth + unmeth
    counted = (meth >= 0) & (unmeth >= 0)
    expected = np.divide(100.0 * meth, total, out=np.zeros(len(total)), where=total > 0)
    contradicts = (
        counted & (total > 0) & (pct >= 0) & (pct <= 100) & (np.abs(pct - expected) > BISMARK_PERCENT_TOLERANCE + 1e-6)
    )
    _report_rows(
        issues,
        rows,
        contradicts,
        "percent",
        lambda r: (
            f"percent_methylated {pct[r]:g} contradicts the counts: 100 x {meth[r]} / ({meth[r]} + {unmeth[r]}) "
            f"= {expected[r]:.4g}; check the column order (chrom, start, end, percent_methylated, count_methylated, "
            "count_unmethylated)"
        ),
    )
    issues.raise_if_any()
    if notes is not None:
        empty = _Issues(path)
        _report_rows(
            empty,
            rows,
            counted & (total == 0),
            "count_methylated",
            lambda r: (
                "no read covers this CpG (count_methylated and count_unmethylated are 0); the line adds "
                "nothing to the features, and Bismark writes no such line: was the file made by another tool?"
            ),
        )
        notes += empty.items
        if empty.dropped:
            notes.append(FileIssue(str(path), f"... and {empty.dropped} more line(s) without reads"))
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


def first_wide_line(text: str, sep: str, width: int) -> int | None:
    """The line of the first CSV record with more than ``width`` fields (None when the csv module cannot tell).

    pandas reports such a record by its record count (wrong after a quoted line break) or, on the first data line,
    not at all: it silently makes the first column the index.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    try:
        for row in reader:
            if len(row) > width:
                return reader.line_num
    except csv.Error:
        return None
    return None


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
            first = re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0]  # pandas also ends lines at a lone \r
            header = next(csv.reader([first.decode("utf-8-sig")], delimiter=sep), [])
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
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
            if not m:
                raise DataFileError(path, f"cannot be parsed as CSV ({str(exc).strip()})") from exc
            # pandas numbers records, not lines (a quoted line break or a lone \r shifts them): ask the csv module.
            text = data.decode("utf-8-sig", "replace")
            line = first_wide_line(text, sep, int(m.group(1)))
            if line is None and int(m.group(2)) <= len(re.split(r"\r\n|\r|\n", text.rstrip("\r\n"))):
                line = int(m.group(2))
            raise DataFileError(
                path,
                f"cannot be parsed as CSV: a line has {m.group(3)} fields where {m.group(1)} are expected; check the "
                "number of fields (and the quotes) on that line",
                line,
            ) from exc
        except UnicodeDecodeError as exc:
            raise DataFileError(path, f"is not UTF-8 text ({exc}); save it as UTF-8 CSV") from exc
        except csv.Error as exc:
            raise DataFileError(path, f"the header line cannot be parsed as CSV ({exc})", 1) from exc
        if not isinstance(df.index, pd.RangeIndex):
            # pandas silently makes the first column the index when the first data line has one field too many.
            raise DataFileError(
                path,
                f"a data line has more fields than the header has column names ({len(df.columns)}); remove the "
                "extra field or name its column in the header",
                first_wide_line(data.decode("utf-8-sig"), sep, len(df.columns)),
            )
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
            # Read as float64: beyond 2^53 whole numbers are no longer exact, beyond 2^63 int64 wraps to negative.
            checks.append((values.abs() > 2.0**53, lambda c: f"{col} is too large for a whole number, got {c!r}{hint}"))
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
        df["num_probes"] = t.numbers("num_probes", integer=True, minimum=0, required=False)
    t.issues.raise_if_any()
    if "num_probes" in df.columns:  # cast only once every value is known to be a whole number
        df["num_probes"] = df["num_probes"].astype("Int64")
    df["start"] = start.astype(np.int64)
    df["end"] = end.astype(np.int64)
    df["chrom"] = df["chrom"].astype("category")
    return df

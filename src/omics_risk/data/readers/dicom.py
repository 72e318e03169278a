"""DICOM series folders: each slice's header is checked with pydicom before SimpleITK reads the series, so a
folder of junk or a truncated slice is a located error, not a crash.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

from omics_risk.data.readers.common import IMAGE_EXTENSIONS, DataFileError
from omics_risk.data.readers.image_base import _ITK_WARNINGS_LOCK, _itk_reason, _too_many_voxels, image_voxel_limit

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
    import pydicom  # lazy: the CLI's validate imports the readers; pydicom loads only for a DICOM folder

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
    import SimpleITK as sitk  # lazy: heavy, and the CLI's validate imports the readers

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
    import SimpleITK as sitk  # lazy: heavy, and the CLI's validate imports the readers

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

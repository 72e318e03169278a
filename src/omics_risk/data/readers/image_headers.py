"""Image headers (NIfTI, NRRD, MetaImage, DICOM): :func:`read_image_header` reads the grid a file declares
without reading a voxel, after checking the header bytes the ITK readers would trust.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from omics_risk.data.readers.common import IMAGE_EXTENSIONS, DataFileError, has_extension
from omics_risk.data.readers.dicom import _dicom_series_files, _file_info
from omics_risk.data.readers.image_base import ImageHeader, _pixel_name

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
    import nibabel as nib  # lazy: loaded only for a NIfTI header

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

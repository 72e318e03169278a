"""Image voxels and masks: the grid checks on headers, reading the voxels, and the mask checks.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from omics_risk.data.readers.common import DataFileError, has_extension
from omics_risk.data.readers.image_base import (
    GRID_TOLERANCE,
    ImageHeader,
    _fmt,
    _itk_reason,
    _too_many_voxels,
    image_voxel_limit,
)
from omics_risk.data.readers.image_headers import _check_metaimage_data, read_image_header


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
    import SimpleITK as sitk  # lazy: heavy, and the CLI's validate imports the readers

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
    import SimpleITK as sitk  # lazy: heavy, and the CLI's validate imports the readers

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

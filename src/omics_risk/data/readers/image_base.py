"""What every image reader shares: the voxel limit, :class:`ImageHeader` (a grid judged before any voxel is read)
and ITK's error messages turned into reasons.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _pixel_name(reader: Any) -> str:
    import SimpleITK as sitk  # lazy: heavy, and the CLI's validate imports the readers

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

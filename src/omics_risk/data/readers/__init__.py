"""Readers for the data files a cohort points to, one module per format family (see docs/data_format.md).

Every reader returns columnar, vectorised data (numpy arrays, pandas frames, SimpleITK images) so that feature
extraction and scoring can reuse it, and raises :class:`DataFileError` on malformed input. The error names the
file, the line and column when they are known, and what to do; ``DataFileError.issues`` lists every problem
found in the file (up to :data:`MAX_ISSUES`), so ``omics-risk validate`` can report all of them at once.

Text formats are parsed with pyarrow (fast path); only when that fails is the file re-scanned line by line to
locate the bad lines, so a valid 100k-line fragment file costs tens of milliseconds. Images are judged from their
headers before any voxel is read (:func:`read_image_header`, :func:`check_image_header`), so a corrupt header
declaring a gigantic grid costs milliseconds, not the memory it claims.

This package re-exports every reader, so ``from omics_risk.data.readers import read_table`` works as before the
split; a monkeypatch must target the submodule that uses the patched name (e.g. ``readers.genome._FASTA_CHUNK``).
"""

from __future__ import annotations

from omics_risk.data.readers.bismark import BISMARK_PERCENT_TOLERANCE, read_bismark_cov
from omics_risk.data.readers.columns import MAPPABLE, columns_problem
from omics_risk.data.readers.common import (
    BAM_EXTENSIONS,
    BISMARK_EXTENSIONS,
    FRAGMENT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MAX_ISSUES,
    TABLE_EXTENSIONS,
    DataFileError,
    FileIssue,
    format_extension_problem,
    has_extension,
)
from omics_risk.data.readers.dicom import MAX_DICOM_FILES
from omics_risk.data.readers.fragments import Fragments, read_fragments
from omics_risk.data.readers.genome import (
    AUTOSOME_RE,
    DEFAULT_BINNED_CHROMS,
    binned_chromosomes,
    chromosome_naming_problem,
    read_bed,
    read_chrom_sizes,
    reference_chromosomes,
)
from omics_risk.data.readers.image_base import (
    GRID_TOLERANCE,
    MAX_IMAGE_VOXELS,
    MAX_IMAGE_VOXELS_ENV,
    ImageHeader,
    image_voxel_limit,
)
from omics_risk.data.readers.image_headers import read_image_header
from omics_risk.data.readers.images import (
    check_image_header,
    check_mask_geometry,
    check_mask_header,
    check_mask_labels,
    read_image,
    read_image_voxels,
)
from omics_risk.data.readers.tables import (
    MetabolomicsData,
    first_wide_line,
    read_cn_segments,
    read_metabolomics,
    read_table,
    read_variant_table,
)

__all__ = [
    "AUTOSOME_RE",
    "BAM_EXTENSIONS",
    "BISMARK_EXTENSIONS",
    "BISMARK_PERCENT_TOLERANCE",
    "DEFAULT_BINNED_CHROMS",
    "FRAGMENT_EXTENSIONS",
    "GRID_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "MAPPABLE",
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
    "columns_problem",
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

"""A corpus of broken cohorts for ``omics-risk validate``.

Each builder takes a fresh copy of the tiny valid cohort (tests/conftest.py), breaks exactly one thing in it and
returns the problems ``validate`` must report: file, line, column and a message substring. The test asserts that
these, and no other errors, are reported. Builders touch disjoint parts of the cohort, so several can be applied
to one cohort to check that every problem is reported at once.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_BGZF_MAGIC = b"\x1f\x8b\x08\x04"


@dataclass(frozen=True)
class Expected:
    """A problem that validate must report (``contains`` is a substring of its message)."""

    file: str
    line: int | None
    column: str | None
    contains: str
    severity: str = "error"


Builder = Callable[[Path], list[Expected]]


# --------------------------------------------------------------------------------------------------- helpers


def read_rows(path: Path) -> list[list[str]]:
    """A CSV as a list of rows (header first), so that row k is on line k + 1."""
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())


def find_line(path: Path, **match: str) -> int:
    """1-based line of the first CSV row whose named columns equal the given values."""
    rows = read_rows(path)
    header = rows[0]
    for k, row in enumerate(rows[1:], start=2):
        if all(row[header.index(c)] == v for c, v in match.items()):
            return k
    raise KeyError(f"no row {match} in {path}")


def set_cell(path: Path, line: int, column: str, value: str) -> None:
    rows = read_rows(path)
    rows[line - 1][rows[0].index(column)] = value
    write_rows(path, rows)


def sample_line(root: Path, sample_id: str) -> int:
    return find_line(root / "samples.csv", sample_id=sample_id)


def sample_path(root: Path, sample_id: str) -> str:
    rows = read_rows(root / "samples.csv")
    return rows[sample_line(root, sample_id) - 1][rows[0].index("path")]


def edit_text_lines(path: Path, edit: Callable[[list[str]], None]) -> None:
    """Edit the lines of a plain, gzip or BGZF text file in place, keeping its compression."""
    import pysam

    raw = path.read_bytes()
    compressed = raw[:2] == b"\x1f\x8b"
    text = gzip.decompress(raw).decode() if compressed else raw.decode()
    lines = text.splitlines()
    edit(lines)
    new = "\n".join(lines) + "\n"
    if raw[:4] == _BGZF_MAGIC:
        plain = path.with_name(path.name + ".plain")
        plain.write_text(new)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    elif compressed:
        path.write_bytes(gzip.compress(new.encode()))
    else:
        path.write_text(new)


def set_field(line_no: int, field: int, value: str) -> Callable[[list[str]], None]:
    """An edit setting tab-separated field ``field`` of file line ``line_no`` (1-based)."""

    def edit(lines: list[str]) -> None:
        parts = lines[line_no - 1].split("\t")
        parts[field] = value
        lines[line_no - 1] = "\t".join(parts)

    return edit


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# --------------------------------------------------------------------------------------------------- tables


def missing_cohort_yaml(root: Path) -> list[Expected]:
    (root / "cohort.yaml").unlink()
    return [Expected("cohort.yaml", None, None, "missing")]


def bad_time_unit(root: Path) -> list[Expected]:
    p = root / "cohort.yaml"
    p.write_text(p.read_text().replace("time_unit: months", "time_unit: fortnights"))
    return [Expected("cohort.yaml", None, None, "'time_unit' must be one of")]


def endpoint_column_missing(root: Path) -> list[Expected]:
    p = root / "clinical.csv"
    rows = read_rows(p)
    k = rows[0].index("rfs_event")
    write_rows(p, [r[:k] + r[k + 1 :] for r in rows])
    return [Expected("clinical.csv", 1, "rfs_event", "column 'rfs_event' of endpoint 'rfs' is missing")]


def duplicate_patient_id(root: Path) -> list[Expected]:
    p = root / "clinical.csv"
    rows = read_rows(p)
    rows.append(list(rows[2]))  # P02 again, on line 8
    write_rows(p, rows)
    return [Expected("clinical.csv", 8, "patient_id", "duplicate patient_id (patient_id=P02); first seen on line 3")]


def negative_time(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 3, "rfs_time", "-3")
    return [Expected("clinical.csv", 3, "rfs_time", "must be >= 0")]


def event_two(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 5, "rfs_event", "2")
    return [Expected("clinical.csv", 5, "rfs_event", "must be 0 or 1")]


def non_numeric_time(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 6, "rfs_time", "eight")
    return [Expected("clinical.csv", 6, "rfs_time", "must be a number, got 'eight'")]


def ordinal_not_in_levels(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 2, "stage", "IV")
    return [Expected("clinical.csv", 2, "stage", "'IV' is not a level of ordinal column 'stage'")]


def duplicate_sample_id(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, "sample_id", "P01-methylation-postop1")
    return [Expected("samples.csv", line, "sample_id", "duplicate sample_id")]


def sample_of_unknown_patient(root: Path) -> list[Expected]:
    line = sample_line(root, "P04-methylation-postop1")
    set_cell(root / "samples.csv", line, "patient_id", "P99")
    return [Expected("samples.csv", line, "patient_id", "patient 'P99' is not in clinical.csv")]


def unknown_modality(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, "modality", "proteomics")
    return [Expected("samples.csv", line, "modality", "unknown modality 'proteomics'")]


def duplicate_patient_modality_timepoint(root: Path) -> list[Expected]:
    line = sample_line(root, "P01-cfdna-postop1")
    set_cell(root / "samples.csv", line, "timepoint", "preop")
    return [Expected("samples.csv", line, "timepoint", "duplicate (patient, modality, timepoint)")]


# --------------------------------------------------------------------------------------------------- paths


def missing_data_file(root: Path) -> list[Expected]:
    sid = "P02-cfdna-postop1"
    rel = sample_path(root, sid)
    (root / rel).unlink()
    return [Expected("samples.csv", sample_line(root, sid), "path", f"file not found: {rel}")]


def empty_mask_path(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-ct-preop")
    set_cell(root / "samples.csv", line, "mask_path", "")
    return [Expected("samples.csv", line, "mask_path", "needs a mask_path")]


def missing_mask_file(root: Path) -> list[Expected]:
    (root / "ct" / "P04_preop_mask.mha").unlink()
    return [
        Expected(
            "samples.csv", sample_line(root, "P04-ct-preop"), "mask_path", "mask file not found: ct/P04_preop_mask.mha"
        )
    ]


def wrong_extension(root: Path) -> list[Expected]:
    sid = "P04-methylation-postop1"
    line = sample_line(root, sid)
    (root / "methylation" / "P04_postop1.cov").rename(root / "methylation" / "P04_postop1.txt")
    set_cell(root / "samples.csv", line, "path", "methylation/P04_postop1.txt")
    return [Expected("samples.csv", line, "path", "extension that format 'bismark_cov' does not read")]


def missing_reference(root: Path) -> list[Expected]:
    (root / "reference" / "genome.chrom.sizes").unlink()
    return [Expected("cohort.yaml", None, "references.chrom_sizes", "reference file not found")]


def metabolomics_not_declared(root: Path) -> list[Expected]:
    p = root / "cohort.yaml"
    text = p.read_text()
    block = text[text.index("  metabolomics:\n") : text.index("  rppa:")]
    p.write_text(text.replace(block, ""))
    return [Expected("cohort.yaml", None, "modalities.metabolomics.sample_sheet", "needs its sample sheet")]


def metabolomics_sheet_not_given(root: Path) -> list[Expected]:
    p = root / "cohort.yaml"
    p.write_text(p.read_text().replace("    sample_sheet: metabolomics/sample_sheet.csv\n", ""))
    return [Expected("cohort.yaml", None, None, "metabolomics modality 'metabolomics' needs 'sample_sheet: PATH'")]


def missing_sample_sheet(root: Path) -> list[Expected]:
    (root / "metabolomics" / "sample_sheet.csv").unlink()
    return [Expected("cohort.yaml", None, "modalities.metabolomics.sample_sheet", "sample_sheet file not found")]


# --------------------------------------------------------------------------------------------------- images


def mask_geometry_mismatch(root: Path) -> list[Expected]:
    import SimpleITK as sitk

    p = root / "ct" / "P01_preop_mask.nii.gz"
    mask = sitk.ReadImage(str(p))
    mask.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(mask, str(p))
    return [Expected("ct/P01_preop_mask.nii.gz", None, None, "spacing differs")]


def empty_mask(root: Path) -> list[Expected]:
    import SimpleITK as sitk

    p = root / "ct" / "P02_preop_mask.nrrd"
    mask = sitk.ReadImage(str(p))
    sitk.WriteImage(mask * 0, str(p))
    return [Expected("ct/P02_preop_mask.nrrd", None, None, "mask is empty")]


def truncated_nifti(root: Path) -> list[Expected]:
    truncate(root / "ct" / "P01_preop.nii.gz", 0.6)
    return [Expected("ct/P01_preop.nii.gz", None, None, "truncated")]


def truncated_nrrd(root: Path) -> list[Expected]:
    truncate(root / "ct" / "P02_preop.nrrd", 0.6)
    return [Expected("ct/P02_preop.nrrd", None, None, "cannot be read as an image")]


def dicom_folder_without_series(root: Path) -> list[Expected]:
    folder = root / "ct" / "P03_preop_dicom"
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "README.txt").write_text("slices were not exported\n")
    return [Expected("ct/P03_preop_dicom", None, None, "holds no DICOM series")]


# --------------------------------------------------------------------------------------------------- cfDNA, methylation


def fragment_start_after_end(root: Path) -> list[Expected]:
    p = root / "cfdna" / "P01_preop.frag.gz"  # BGZF; line 1 is a comment
    edit_text_lines(p, set_field(4, 2, "5"))
    return [Expected("cfdna/P01_preop.frag.gz", 4, "end", "must be greater than start")]


def fragment_bad_strand(root: Path) -> list[Expected]:
    p = root / "cfdna" / "P01_postop1.frag.gz"  # plain gzip
    edit_text_lines(p, set_field(10, 4, "*"))
    return [Expected("cfdna/P01_postop1.frag.gz", 10, "strand", "strand must be '+' or '-', got '*'")]


def fragment_wrong_column_count(root: Path) -> list[Expected]:
    p = root / "cfdna" / "P02_postop1.frag.tsv.gz"

    def drop_strand(lines: list[str]) -> None:
        lines[20] = lines[20].rsplit("\t", 1)[0]

    edit_text_lines(p, drop_strand)
    return [Expected("cfdna/P02_postop1.frag.tsv.gz", 21, None, "has 4 tab-separated column(s), expected 5")]


def corrupt_gzip(root: Path) -> list[Expected]:
    truncate(root / "cfdna" / "P02_postop1.frag.tsv.gz", 0.5)
    return [Expected("cfdna/P02_postop1.frag.tsv.gz", None, None, "truncated or corrupt gzip")]


def corrupt_bam(root: Path) -> list[Expected]:
    (root / "cfdna" / "P03_postop1.bam").write_bytes(b"this is not a BAM file\n" * 10)
    return [Expected("cfdna/P03_postop1.bam", None, None, "cannot be read as a BAM file")]


def bismark_negative_count(root: Path) -> list[Expected]:
    edit_text_lines(root / "methylation" / "P02_postop1.cov.gz", set_field(5, 4, "-3"))
    return [Expected("methylation/P02_postop1.cov.gz", 5, "count_methylated", "count_methylated must be >= 0")]


def bismark_percent_above_100(root: Path) -> list[Expected]:
    edit_text_lines(root / "methylation" / "P04_postop1.cov", set_field(7, 3, "140.0"))
    return [Expected("methylation/P04_postop1.cov", 7, "percent", "percent must be in [0, 100]")]


# --------------------------------------------------------------------------------------------------- shared tables


def ctdna_vaf_above_one(root: Path) -> list[Expected]:
    set_cell(root / "ctdna" / "variants.csv", 4, "vaf", "1.2")
    return [Expected("ctdna/variants.csv", 4, "vaf", "vaf must be <= 1")]


def ctdna_patient_disagrees(root: Path) -> list[Expected]:
    p = root / "ctdna" / "variants.csv"
    first = find_line(p, sample_id="P03-ctdna-postop1")
    for line in range(first, first + 3):
        set_cell(p, line, "patient_id", "P05")
    return [Expected("ctdna/variants.csv", first, "patient_id", "belongs to patient 'P05' here but to 'P03'")]


def ctdna_day_disagrees(root: Path) -> list[Expected]:
    p = root / "ctdna" / "variants.csv"
    first = find_line(p, sample_id="P04-ctdna-postop1")
    set_cell(p, first + 1, "day", "99")
    return [Expected("ctdna/variants.csv", first + 1, "day", "has day 99 here but 29 in samples.csv")]


def ctdna_sample_missing(root: Path) -> list[Expected]:
    p = root / "ctdna" / "variants.csv"
    rows = read_rows(p)
    write_rows(p, [r for r in rows if r[1] != "P05-ctdna-postop1"])
    return [
        Expected("samples.csv", sample_line(root, "P05-ctdna-postop1"), "sample_id", "is not in ctdna/variants.csv")
    ]


def metabolomics_column_without_sheet_row(root: Path) -> list[Expected]:
    p = root / "metabolomics" / "sample_sheet.csv"
    write_rows(p, [r for r in read_rows(p) if r[0] != "QC02"])
    return [Expected("metabolomics/matrix.csv", 1, "QC02", "has no row in the sample sheet")]


def metabolomics_duplicate_injection_order(root: Path) -> list[Expected]:
    p = root / "metabolomics" / "sample_sheet.csv"
    line = find_line(p, sample_id="QC02")
    set_cell(p, line, "injection_order", "1")
    return [
        Expected("metabolomics/sample_sheet.csv", line, "injection_order", "duplicate injection_order within a batch")
    ]


def metabolomics_zero_intensity(root: Path) -> list[Expected]:
    set_cell(root / "metabolomics" / "matrix.csv", 6, "P02-metabolomics-preop", "0")
    return [Expected("metabolomics/matrix.csv", 6, "P02-metabolomics-preop", "must be > 0")]


def metabolomics_qc_listed_as_sample(root: Path) -> list[Expected]:
    p = root / "metabolomics" / "sample_sheet.csv"
    set_cell(p, find_line(p, sample_id="P03-metabolomics-preop"), "sample_type", "qc")
    return [
        Expected(
            "samples.csv",
            sample_line(root, "P03-metabolomics-preop"),
            "sample_id",
            "is a 'qc' injection in the sample sheet",
        )
    ]


def table_non_numeric_cell(root: Path) -> list[Expected]:
    set_cell(root / "rppa" / "rppa.csv", 3, "EGFR_pY1068", "high")
    return [Expected("rppa/rppa.csv", 3, "EGFR_pY1068", "EGFR_pY1068 must be a number, got 'high'")]


def table_orphan_sample(root: Path) -> list[Expected]:
    p = root / "rppa" / "rppa.csv"
    rows = read_rows(p)
    rows.append(["P04-rppa-preop", "0.1", "0.2", "0.3"])
    write_rows(p, rows)
    return [
        Expected(
            "rppa/rppa.csv", len(rows), "sample_id", "has no samples.csv row with modality 'rppa'", severity="warning"
        )
    ]


def metabolomics_orphan_injection(root: Path) -> list[Expected]:
    matrix, sheet = root / "metabolomics" / "matrix.csv", root / "metabolomics" / "sample_sheet.csv"
    rows = read_rows(matrix)
    write_rows(matrix, [[*r, "S-extra" if k == 0 else "1234.5"] for k, r in enumerate(rows)])
    rows = read_rows(sheet)
    write_rows(sheet, [*rows, ["S-extra", "sample", "B1", "99"]])
    return [
        Expected(
            "metabolomics/matrix.csv",
            1,
            "S-extra",
            "has no samples.csv row with modality 'metabolomics'",
            severity="warning",
        )
    ]


def cn_segment_end_before_start(root: Path) -> list[Expected]:
    set_cell(root / "cnv" / "segments.csv", 3, "end", "10")
    return [Expected("cnv/segments.csv", 3, "end", "end (10) must be >= start (9001)")]


def reference_not_fasta(root: Path) -> list[Expected]:
    (root / "reference" / "genome.fa").write_text("ACGT\n")
    return [Expected("reference/genome.fa", 1, None, "does not start with '>'")]


# --------------------------------------------------------------------------------------------------- confinement


def _outside_copy(root: Path, rel: str) -> Path:
    """A copy of a cohort file in a folder next to the cohort (outside it)."""
    out = root.parent / "elsewhere" / Path(rel).name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / rel, out)
    return out


def path_climbs_out(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-cfdna-postop1")
    set_cell(root / "samples.csv", line, "path", "../../../../etc/passwd")
    return [Expected("samples.csv", line, "path", "path '../../../../etc/passwd' leads outside the cohort folder, to ")]


def absolute_path_outside(root: Path) -> list[Expected]:
    sid = "P01-methylation-postop1"
    outside = _outside_copy(root, sample_path(root, sid))
    line = sample_line(root, sid)
    set_cell(root / "samples.csv", line, "path", str(outside))
    return [Expected("samples.csv", line, "path", f"path '{outside}' is an absolute path outside the cohort folder")]


def symlink_leaves_cohort(root: Path) -> list[Expected]:
    sid = "P01-cfdna-postop1"
    rel = sample_path(root, sid)
    outside = _outside_copy(root, rel)
    (root / rel).unlink()
    (root / rel).symlink_to(outside)
    return [
        Expected(
            "samples.csv",
            sample_line(root, sid),
            "path",
            f"path '{rel}' is a symbolic link (or lies under one) that leads outside the cohort folder, to {outside}",
        )
    ]


def mask_path_climbs_out(root: Path) -> list[Expected]:
    line = sample_line(root, "P04-ct-preop")
    outside = _outside_copy(root, "ct/P04_preop_mask.mha")
    set_cell(root / "samples.csv", line, "mask_path", "../elsewhere/" + outside.name)
    return [Expected("samples.csv", line, "mask_path", "mask_path '../elsewhere/P04_preop_mask.mha' leads outside")]


def nul_byte_in_path(root: Path) -> list[Expected]:
    line = sample_line(root, "P04-methylation-postop1")
    set_cell(root / "samples.csv", line, "path", "methylation/P04\x00.cov")
    return [
        Expected("samples.csv", line, "path", "path 'methylation/P04\\x00.cov' contains a NUL byte (\\x00); fix it")
    ]


def name_too_long(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, "path", "methylation/" + "x" * 300 + ".cov.gz")
    return [Expected("samples.csv", line, "path", "has a name of 307 bytes, more than the 255 a file system allows")]


def data_root_missing(root: Path) -> list[Expected]:
    p = root / "cohort.yaml"
    p.write_text(p.read_text() + "data_roots: [../archive_not_mounted]\n")
    return [
        Expected("cohort.yaml", None, "data_roots", "data_roots entry 1 '../archive_not_mounted' does not exist")
    ]


def reference_outside(root: Path) -> list[Expected]:
    _outside_copy(root, "reference/genome.fa")
    p = root / "cohort.yaml"
    p.write_text(p.read_text().replace("genome_fasta: reference/genome.fa", "genome_fasta: ../elsewhere/genome.fa"))
    return [
        Expected(
            "cohort.yaml",
            None,
            "references.genome_fasta",
            "reference genome_fasta '../elsewhere/genome.fa' leads outside the cohort folder",
        )
    ]


def sample_sheet_outside(root: Path) -> list[Expected]:
    outside = _outside_copy(root, "metabolomics/sample_sheet.csv")
    p = root / "cohort.yaml"
    p.write_text(p.read_text().replace("sample_sheet: metabolomics/sample_sheet.csv", f"sample_sheet: {outside}"))
    return [
        Expected(
            "cohort.yaml",
            None,
            "modalities.metabolomics.sample_sheet",
            f"modality 'metabolomics' sample_sheet '{outside}' is an absolute path outside the cohort folder",
        )
    ]


# --------------------------------------------------------------------------------------------------- bounds, ids


def duplicate_clinical_column(root: Path) -> list[Expected]:
    p = root / "clinical.csv"
    rows = read_rows(p)
    k = rows[0].index("rfs_time")
    write_rows(p, [[*r, r[k]] for r in rows])  # the same column again, last
    return [Expected("clinical.csv", 1, "rfs_time", "column 'rfs_time' appears 2 times in the header (columns 6, 9)")]


def duplicate_samples_column(root: Path) -> list[Expected]:
    p = root / "samples.csv"
    rows = read_rows(p)
    write_rows(p, [[*r, r[rows[0].index("day")]] for r in rows])
    return [Expected("samples.csv", 1, "day", "column 'day' appears 2 times in the header (columns 5, 8)")]


def infinite_time(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 4, "rfs_time", "inf")
    return [Expected("clinical.csv", 4, "rfs_time", "rfs time must be a finite number, got 'inf'")]


def absurd_time(root: Path) -> list[Expected]:
    set_cell(root / "clinical.csv", 2, "rfs_time", "1e308")
    return [
        Expected(
            "clinical.csv",
            2,
            "rfs_time",
            "rfs time must be <= 1200 (100 years, the horizon set by max_years in cohort.yaml), got '1e308'",
        )
    ]


def infinite_day(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, "day", "inf")
    return [Expected("samples.csv", line, "day", "day must be a finite number, got 'inf'")]


def absurd_day(root: Path) -> list[Expected]:
    line = sample_line(root, "P01-cfdna-preop")
    set_cell(root / "samples.csv", line, "day", "-1e9")
    return [
        Expected(
            "samples.csv",
            line,
            "day",
            "day must be >= -36525 (100 years before the index date, the horizon set by max_years in cohort.yaml), "
            "got '-1e9'",
        )
    ]


def nul_in_patient_id(root: Path) -> list[Expected]:
    p = root / "clinical.csv"  # P06 has no samples, so nothing else refers to it
    p.write_text(p.read_text().replace("\nP06,", "\nP0\x006,"))
    return [Expected("clinical.csv", 7, "patient_id", "patient_id 'P0\\x006' contains a control character (\\x00)")]


def control_character_in_sample_id(root: Path) -> list[Expected]:
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, "sample_id", "P02-methylation\x07-postop1")
    return [
        Expected(
            "samples.csv",
            line,
            "sample_id",
            "sample_id 'P02-methylation\\x07-postop1' contains a control character (\\x07); identifiers must be "
            "printable text",
        )
    ]


#: Every builder, by name (the parametrised test ids).
BROKEN: dict[str, Builder] = {
    f.__name__: f
    for f in [
        missing_cohort_yaml,
        bad_time_unit,
        endpoint_column_missing,
        duplicate_patient_id,
        negative_time,
        event_two,
        non_numeric_time,
        ordinal_not_in_levels,
        duplicate_sample_id,
        sample_of_unknown_patient,
        unknown_modality,
        duplicate_patient_modality_timepoint,
        missing_data_file,
        empty_mask_path,
        missing_mask_file,
        wrong_extension,
        missing_reference,
        metabolomics_not_declared,
        metabolomics_sheet_not_given,
        missing_sample_sheet,
        mask_geometry_mismatch,
        empty_mask,
        truncated_nifti,
        truncated_nrrd,
        dicom_folder_without_series,
        fragment_start_after_end,
        fragment_bad_strand,
        fragment_wrong_column_count,
        corrupt_gzip,
        corrupt_bam,
        bismark_negative_count,
        bismark_percent_above_100,
        ctdna_vaf_above_one,
        ctdna_patient_disagrees,
        ctdna_day_disagrees,
        ctdna_sample_missing,
        metabolomics_column_without_sheet_row,
        metabolomics_duplicate_injection_order,
        metabolomics_zero_intensity,
        metabolomics_qc_listed_as_sample,
        metabolomics_orphan_injection,
        table_non_numeric_cell,
        table_orphan_sample,
        cn_segment_end_before_start,
        reference_not_fasta,
        path_climbs_out,
        absolute_path_outside,
        symlink_leaves_cohort,
        mask_path_climbs_out,
        nul_byte_in_path,
        name_too_long,
        data_root_missing,
        reference_outside,
        sample_sheet_outside,
        duplicate_clinical_column,
        duplicate_samples_column,
        infinite_time,
        absurd_time,
        infinite_day,
        absurd_day,
        nul_in_patient_id,
        control_character_in_sample_id,
    ]
}

#: Builders that touch disjoint files, applied together to check that every problem is reported at once.
COMBINED = [
    negative_time,
    ordinal_not_in_levels,
    unknown_modality,
    missing_data_file,
    mask_geometry_mismatch,
    truncated_nrrd,
    fragment_bad_strand,
    bismark_percent_above_100,
    ctdna_vaf_above_one,
    metabolomics_zero_intensity,
    table_non_numeric_cell,
    reference_not_fasta,
]


# --------------------------------------------------------------------------------------------------- header-first
# images, Bismark counts, chromosome names (hardening: checks bounded by the header, nothing caught only by extract)


def write_huge_nifti(path: Path, shape: tuple[int, int, int] = (1024, 1024, 1024)) -> None:
    """A real, complete .nii.gz whose header declares ``shape`` int16 voxels (2 GiB for 1024^3), all zero.

    The body is 16 MiB gzip members of zeros repeated (concatenated members are one valid gzip stream), so the file
    is ~2 MB and is written in a fraction of a second, yet every byte the header promises is there.
    """
    import nibabel as nib
    import numpy as np

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_zooms((0.75, 0.8, 2.5))
    affine = np.diag([0.75, 0.8, 2.5, 1.0])
    hdr.set_qform(affine, 1)
    hdr.set_sform(affine, 1)
    buf = io.BytesIO()
    hdr.write_to(buf)
    head = buf.getvalue().ljust(int(hdr.get_data_offset()), b"\0")
    need = int(np.prod(shape)) * 2
    chunk = 1 << 24
    member = gzip.compress(b"\0" * chunk, 9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(head))
        for _ in range(need // chunk):
            fh.write(member)
        fh.write(gzip.compress(b"\0" * (need % chunk)))


def image_header_declares_huge_grid(root: Path) -> list[Expected]:
    write_huge_nifti(root / "ct" / "P01_preop.nii.gz")
    return [
        Expected("ct/P01_preop.nii.gz", None, None, "the header declares 1024 x 1024 x 1024 = 1,073,741,824 voxels")
    ]


def mask_spacing_zero(root: Path) -> list[Expected]:
    p = root / "ct" / "P04_preop_mask.mha"
    p.write_bytes(
        p.read_bytes().replace(b"ElementSpacing = 0.75 0.80000000000000004 2.5", b"ElementSpacing = 0.75 0 2.5")
    )
    return [Expected("ct/P04_preop_mask.mha", None, None, "voxel spacing (0.75, 0, 2.5) mm must be finite and > 0")]


def nifti_mask_spacing_nan(root: Path) -> list[Expected]:
    import struct

    p = root / "ct" / "P03_preop_mask.nii.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    struct.pack_into("<f", raw, 76 + 4 * 2, float("nan"))  # pixdim[2]: ITK would silently read it as 1
    p.write_bytes(gzip.compress(bytes(raw)))
    return [Expected("ct/P03_preop_mask.nii.gz", None, None, "voxel spacing (0.75, nan, 2.5) mm must be finite")]


def image_direction_not_orthonormal(root: Path) -> list[Expected]:
    p = root / "ct" / "P04_preop.mha"
    p.write_bytes(
        p.read_bytes().replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0.5 1 0 0 0 1")
    )
    return [
        Expected("ct/P04_preop.mha", None, None, "direction cosines (1, 0.5, 0, 0, 1, 0, 0, 0, 1) are not orthonormal")
    ]


def bismark_counts_swapped(root: Path) -> list[Expected]:
    p = root / "methylation" / "P01_postop1.cov.gz"  # line 3: 79.1667 % of 19 methylated + 5 unmethylated

    def swap(lines: list[str]) -> None:
        f = lines[2].split("\t")
        f[4], f[5] = f[5], f[4]
        lines[2] = "\t".join(f)

    edit_text_lines(p, swap)
    return [
        Expected(
            "methylation/P01_postop1.cov.gz",
            3,
            "percent",
            "percent_methylated 79.1667 contradicts the counts: 100 x 5 / (5 + 19) = 20.83",
        )
    ]


def bismark_line_without_reads(root: Path) -> list[Expected]:
    p = root / "methylation" / "P04_postop1.cov"
    for field, value in ((3, "0"), (4, "0"), (5, "0")):
        edit_text_lines(p, set_field(12, field, value))
    return [
        Expected("methylation/P04_postop1.cov", 12, "count_methylated", "no read covers this CpG", severity="warning")
    ]


def fragment_chroms_without_chr(root: Path) -> list[Expected]:
    def strip_chr(lines: list[str]) -> None:
        lines[:] = [ln.removeprefix("chr") for ln in lines]

    edit_text_lines(root / "cfdna" / "P01_preop.frag.gz", strip_chr)
    return [
        Expected(
            "cfdna/P01_preop.frag.gz",
            None,
            None,
            "chromosomes are named '1', '2' but the binning uses 'chr1', 'chr2' (the names in "
            "references.chrom_sizes, reference/genome.chrom.sizes), so no fragment would be counted: add the 'chr' "
            "prefix",
        )
    ]


def bam_chroms_without_chr(root: Path) -> list[Expected]:
    import pysam

    p = root / "cfdna" / "P03_postop1.bam"
    with pysam.AlignmentFile(str(p), "rb") as bam:
        header = bam.header.to_dict()
        reads = [r.to_dict() for r in bam.fetch(until_eof=True)]
    header["SQ"] = [{**sq, "SN": sq["SN"].removeprefix("chr")} for sq in header["SQ"]]
    with pysam.AlignmentFile(str(p), "wb", header=header) as out:
        for r in reads:
            for key in ("ref_name", "next_ref_name"):
                r[key] = r[key].removeprefix("chr")
            out.write(pysam.AlignedSegment.from_dict(r, out.header))
    pysam.index(str(p))
    return [Expected("cfdna/P03_postop1.bam", None, None, "chromosomes are named '1', '2' but the binning uses 'chr1'")]


BROKEN.update(
    {
        f.__name__: f
        for f in [
            image_header_declares_huge_grid,
            mask_spacing_zero,
            nifti_mask_spacing_nan,
            image_direction_not_orthonormal,
            bismark_counts_swapped,
            bismark_line_without_reads,
            fragment_chroms_without_chr,
            bam_chroms_without_chr,
        ]
    }
)

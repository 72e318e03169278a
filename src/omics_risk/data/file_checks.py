"""What ``omics-risk validate`` does with one data file: open it with its reader and say what is wrong with it.

Each modality format's check (its entry in :mod:`omics_risk.data.formats`) is a function of a :class:`FileJob`
returning a :class:`FileResult`: the problems found and, for a shared file, the samples it holds (with their lines)
so that validate can match them against samples.csv. Checks run in worker threads and see no cohort.yaml: what
they need from it travels in ``FileJob.settings``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from omics_risk.data import readers
from omics_risk.data.readers import DataFileError, FileIssue
from omics_risk.data.registry import ModalityFormat

__all__ = [
    "REFERENCE_CHECKS",
    "FileCheck",
    "FileJob",
    "FileResult",
    "check_of",
    "open_bed",
    "open_bismark",
    "open_chrom_sizes",
    "open_cn_segments",
    "open_fasta",
    "open_fragments",
    "open_image",
    "open_metabolomics",
    "open_table",
    "open_variant_table",
    "table_check",
]


@dataclass(frozen=True)
class FileJob:
    """One data file (or a shared file with its companions) to open in a worker thread.

    ``settings`` carries the cohort-level knowledge an opener needs (see ``validate._job_settings``): the image voxel
    limit, the reference whose chromosomes fragment files are binned on, a shared table's column mapping.
    """

    kind: str
    path: str
    extra: tuple[str | None, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class FileResult:
    issues: list[FileIssue] = field(default_factory=list)
    warnings: list[FileIssue] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: What was read in a documented way the user may want to know (the TCGA headers of a segment file).
    notes: list[FileIssue] = field(default_factory=list)


#: A format's validator check: one data file in, its problems (and for a shared file, its samples) out.
FileCheck = Callable[[FileJob], FileResult]


def _sample_lines(df: pd.DataFrame, col: str, line_of: Callable[[int], int | None]) -> dict[str, int | None]:
    """First file line of each sample id in a shared table."""
    sid = df[col].dropna().astype(str)
    first = ~sid.duplicated(keep="first")
    return {s: line_of(i) for i, s in zip(sid.index[first.to_numpy()], sid[first], strict=True)}


def _csv_line(path: str) -> Callable[[int], int | None]:
    parquet = readers.has_extension(path, (".parquet", ".pq"))
    return (lambda i: None) if parquet else (lambda i: int(i) + 2)


def open_image(job: FileJob) -> FileResult:
    """Image and mask, header first: size, voxel limit, spacing, orientation and the mask's grid are judged from the
    headers; voxels are read (completeness, mask labels) only when all of that passes, so a corrupt header
    declaring 1024^3 voxels costs milliseconds, not gigabytes."""
    res = FileResult()
    mask_path = job.extra[0] if job.extra else None
    limit = job.settings.get("max_image_voxels")
    headers: dict[str, readers.ImageHeader] = {}
    for role, path in (("image", job.path), ("mask", mask_path)):
        if path is None:
            continue
        try:
            header = readers.read_image_header(path, max_voxels=limit)
        except DataFileError as exc:
            res.issues += exc.issues
            continue
        why = readers.check_image_header(header, limit)
        if why:
            res.issues.append(FileIssue(path, "; ".join(why)))
        else:
            headers[role] = header
    if res.issues:
        return res
    if "mask" in headers:
        why = readers.check_mask_header(headers["image"], headers["mask"])
        if why:
            res.issues.append(_mask_issue(cast(str, mask_path), why))
            return res
    images: dict[str, Any] = {}
    for role, header in headers.items():
        try:
            images[role] = readers.read_image_voxels(header)
        except DataFileError as exc:
            res.issues += exc.issues
    if "mask" in images:
        why = readers.check_mask_labels(images["mask"])
        if why:
            res.issues.append(_mask_issue(cast(str, mask_path), why))
    return res


def _mask_issue(mask_path: str, why: list[str]) -> FileIssue:
    return FileIssue(mask_path, f"is not a usable mask for its image {{image}}: {'; '.join(why)}")


def _chromosome_issue(job: FileJob, present: Sequence[str]) -> FileIssue | None:
    """A fragment file none of whose chromosome names the fragmentomics binning knows (``1`` against ``chr1``).

    Caught here rather than by ``extract``, where every sample would fail one by one. A reference that cannot be
    read is skipped: its own check reports it.
    """
    chroms = job.settings.get("chroms", readers.DEFAULT_BINNED_CHROMS)
    if chroms is None:
        return None
    ref = job.settings.get("reference")  # (path, kind, how cohort.yaml names it) or None
    reference = None
    if ref is not None:
        try:
            reference = readers.reference_chromosomes(ref[0], ref[1])
        except (DataFileError, OSError):
            return None
    why = readers.chromosome_naming_problem(
        present,
        reference,
        chroms,
        reference_label=ref[2] if ref is not None else "the reference",
        settings_label=f"modalities.{job.settings.get('modality', '?')}.extract.chroms in cohort.yaml",
    )
    return FileIssue(job.path, why) if why else None


def open_fragments(job: FileJob) -> FileResult:
    res = FileResult()
    frags = readers.read_fragments(job.path)
    if not len(frags):
        res.warnings.append(
            FileIssue(
                job.path, "holds no fragments (after the read filters); the sample's cfDNA features will be missing"
            )
        )
    issue = _chromosome_issue(job, frags.chrom_names)  # a BAM's names are its header's, even without fragments
    if issue is not None:
        res.issues.append(issue)
    return res


def open_bismark(job: FileJob) -> FileResult:
    res = FileResult()
    notes: list[FileIssue] = []
    cov = readers.read_bismark_cov(job.path, notes=notes)
    res.warnings += notes
    if not len(cov):
        res.warnings.append(
            FileIssue(job.path, "holds no CpG lines; the sample's methylation features will be missing")
        )
    return res


def open_variant_table(job: FileJob) -> FileResult:
    df = readers.read_variant_table(job.path)
    line_of = _csv_line(job.path)
    per_sample: dict[str, tuple[int | None, str, dict[float, int | None]]] = {}
    for i, sid, pid, day in zip(df.index, df["sample_id"], df["patient_id"], df["day"], strict=True):
        entry = per_sample.setdefault(str(sid), (line_of(i), str(pid), {}))
        entry[2].setdefault(float(day), line_of(i))
    return FileResult(info={"samples": {k: v[0] for k, v in per_sample.items()}, "variant_samples": per_sample})


def table_check(reader: Callable[[str], pd.DataFrame]) -> FileCheck:
    """The check of a shared sample table read by ``reader``: it opens, and it holds these samples (with lines).

    ``reader(path)`` returns one row per sample, the id in a ``sample_id`` column or in the index (as
    :func:`~omics_risk.data.readers.read_table`), and raises :class:`~omics_risk.data.readers.DataFileError` saying
    what is wrong with the file. A new tabular format's registry entry gets this check by default.
    """

    def check(job: FileJob) -> FileResult:
        columns = job.settings.get("columns")  # cohort.yaml's mapping; only formats that accept one get it
        df = reader(job.path, columns=columns) if columns else reader(job.path)
        aliases = dict(df.attrs.get("column_aliases") or {})
        if "sample_id" not in df.columns:
            df = df.reset_index()
        header_line = _csv_line(job.path)(-1)  # the header: line 1 of a CSV, None for Parquet
        names = ", ".join(f"{v} -> {k}" for k, v in aliases.items())
        note = (f"read through the usual TCGA / GDC segment headers ({names}); nothing to do (or declare them under "
                "the modality's columns: in cohort.yaml)")
        notes = [FileIssue(job.path, note, header_line)] if aliases else []
        return FileResult(info={"samples": _sample_lines(df, "sample_id", _csv_line(job.path))}, notes=notes)

    return check


def open_table(job: FileJob) -> FileResult:
    return table_check(readers.read_table)(job)


def open_cn_segments(job: FileJob) -> FileResult:
    return table_check(readers.read_cn_segments)(job)


def open_metabolomics(job: FileJob) -> FileResult:
    sheet_path, features_path = job.extra
    data = readers.read_metabolomics(job.path, cast(str, sheet_path), features_path)
    header_line = None if readers.has_extension(job.path, (".parquet", ".pq")) else 1
    return FileResult(
        info={
            "samples": dict.fromkeys(map(str, data.intensities.columns), header_line),
            "sample_type": data.sheet["sample_type"].astype(str).to_dict(),
        }
    )


def open_fasta(job: FileJob) -> FileResult:
    path = Path(job.path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises zlib.error on corrupt deflate data
        raise DataFileError(path, f"cannot be read ({exc}); use a plain or bgzip-compressed FASTA") from exc
    if head != b">":
        raise DataFileError(path, "is not a FASTA file: it does not start with '>'", 1)
    return FileResult()


def open_chrom_sizes(job: FileJob) -> FileResult:
    readers.read_chrom_sizes(job.path)
    return FileResult()


def open_bed(job: FileJob) -> FileResult:
    readers.read_bed(job.path)
    return FileResult()


#: Checks of the cohort-level reference files of cohort.yaml (``references:``), by the kind validate gives them.
REFERENCE_CHECKS: dict[str, FileCheck] = {"genome_fasta": open_fasta, "chrom_sizes": open_chrom_sizes, "bed": open_bed}


def check_of(fmt: ModalityFormat) -> FileCheck | None:
    """The check validate runs on each file of ``fmt``: its own, else for a shared format with a reader
    :func:`table_check` of that reader; None when its files are only checked to exist with the right extension."""
    if fmt.check is not None:
        return cast(FileCheck, fmt.check)
    if fmt.shared_file and fmt.reader is not None:
        return table_check(fmt.reader)
    return None
